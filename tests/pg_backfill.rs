//! Initial backfill against a real PostgreSQL: consistency with concurrent writes, resume
//! after kill -9, composite keys, tables without a key, and a read-only user.

use crate::common::pg::{PgServer, PASSWORD, PASSWORD_ENV};
use crate::common::run::{
    consumer_state, kill9, logs, run_killed_after, spawn_run, wait_until, Workdir,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

/// Waits until an event for `marker_id` in table `t` arrived (everything before it did too).
fn wait_marker(w: &Workdir, id: i64) -> Vec<serde_json::Value> {
    let mut ev = Vec::new();
    let ok = wait_until(WAIT, || {
        ev = w.events();
        ev.iter().any(|e| e["op"] == "c" && e["after"]["id"] == id)
    });
    assert!(ok, "marker {id} never arrived\n{}", logs(w));
    ev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_with_concurrent_writes_converges_to_the_table() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text, n int); INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, 100000) g").await;
    let w = Workdir::new();
    let name = format!("bfc_{}", std::process::id());
    w.write_config(&format!(
        "{}backfill_chunk_rows = 5000\n",
        db.server.source_toml(db.name(), &name)
    ));
    let mut child = spawn_run(&w, &[], &env());
    // The writes start once the backfill delivers, so they overlap with it.
    w.wait_events(1, WAIT);
    // Concurrent inserts, updates (also of the key) and deletes while the backfill runs.
    let writer = db.connect().await;
    for round in 0..40 {
        let base = 200_000 + round * 100;
        writer
            .batch_execute(&format!(
                "INSERT INTO t SELECT g, 'new', {round} FROM generate_series({base}, {base} + 49) g;
                 UPDATE t SET n = n + 1, v = 'upd' WHERE id % 97 = {round};
                 DELETE FROM t WHERE id % 101 = {round};
                 UPDATE t SET id = id + 1000000 WHERE id = {round} * 2000 + 7"
            ))
            .await
            .expect("write");
    }
    writer
        .batch_execute("INSERT INTO t VALUES (-1, 'marker', 0)")
        .await
        .expect("marker");
    let ev = wait_marker(&w, -1);
    kill9(&mut child);
    // Rows of the original 100,000 that no writer touched can only reach the
    // consumer through the backfill (how many survive depends on how far the
    // backfill got before the deletes, so compare with the table, not a constant).
    let untouched: std::collections::BTreeSet<i64> = db
        .connect()
        .await
        .query(
            "SELECT id::int8 FROM t WHERE id BETWEEN 1 AND 100000 AND n = 0",
            &[],
        )
        .await
        .expect("untouched rows")
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect();
    let read: std::collections::BTreeSet<i64> = ev
        .iter()
        .filter(|e| e["op"] == "r")
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect();
    assert!(
        untouched.len() > 20_000,
        "writers touched too much: {}",
        untouched.len()
    );
    let missing: Vec<_> = untouched.difference(&read).take(10).collect();
    assert!(missing.is_empty(), "backfill rows missing: {missing:?}");
    let want = db.json_state("t", "id").await;
    let got = consumer_state(&ev, "public.t");
    assert_eq!(got.len(), want.len(), "row count differs");
    assert!(
        got == want,
        "consumer state differs from the table\n{}",
        logs(&w)
    );
    // Backfill events sort before the stream's.
    let last_r = ev.iter().rposition(|e| e["op"] == "r").expect("r");
    let first_stream = ev.iter().position(|e| e["op"] != "r").expect("stream");
    assert!(last_r < first_stream);
    assert!(
        ev[last_r]["source"]["cursor"].as_str() < ev[first_stream]["source"]["cursor"].as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_backfill_resumes_from_the_last_chunk() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 100000) g").await;
    let w = Workdir::new();
    let name = format!("bfk_{}", std::process::id());
    let chunk = 2000;
    w.write_config(&format!(
        "{}backfill_chunk_rows = {chunk}\n",
        db.server.source_toml(db.name(), &name)
    ));
    // The first run is stopped mid-backfill deterministically (however fast it is): its
    // output goes through a FIFO the test stops reading after 30,000 lines.
    let first = run_killed_after(&w, &env(), 30_000).len();
    assert!(
        first < 100_000,
        "the first run was not stopped mid-backfill ({first} rows)"
    );
    let mut child = spawn_run(&w, &[], &env());
    db.exec("INSERT INTO t VALUES (-1, 'marker')").await;
    let ev = wait_marker(&w, -1);
    kill9(&mut child);
    let reads: Vec<i64> = ev
        .iter()
        .filter(|e| e["op"] == "r")
        .map(|e| e["after"]["id"].as_i64().expect("id"))
        .collect();
    let distinct: std::collections::BTreeSet<i64> = reads.iter().copied().collect();
    assert_eq!(distinct.len(), 100_000, "every row backfilled");
    let reread = reads.len() - distinct.len();
    // Only the chunks delivered but not yet recorded at the kill are read again.
    assert!(
        reread <= 2 * chunk,
        "re-read {reread} rows: the backfill restarted from zero?\n{}",
        logs(&w)
    );
    assert!(logs(&w).contains("resuming interrupted backfill"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_and_tables_without_a_key() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE c (a int, b text, v int, PRIMARY KEY (a, b));
             INSERT INTO c SELECT g % 7, 'k' || (g / 7), g FROM generate_series(1, 3000) g;
             CREATE TABLE nk (x int, y text); INSERT INTO nk SELECT g, 'y' FROM generate_series(1, 1500) g").await;
    let w = Workdir::new();
    let name = format!("bfck_{}", std::process::id());
    w.write_config(&format!(
        "{}backfill_chunk_rows = 400\n",
        db.server.source_toml(db.name(), &name)
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(4500, WAIT);
    kill9(&mut child);
    let c: Vec<&serde_json::Value> = ev.iter().filter(|e| e["source"]["table"] == "c").collect();
    assert_eq!(c.len(), 3000);
    let keys: std::collections::BTreeSet<String> = c.iter().map(|e| e["key"].to_string()).collect();
    assert_eq!(keys.len(), 3000, "each composite key exactly once");
    assert!(c
        .iter()
        .all(|e| e["key"].as_object().is_some_and(|k| k.len() == 2)));
    let nk: Vec<&serde_json::Value> = ev.iter().filter(|e| e["source"]["table"] == "nk").collect();
    assert_eq!(nk.len(), 1500);
    assert!(nk.iter().all(|e| e["key"].is_null() && e["op"] == "r"));
    assert!(
        logs(&w).contains("no primary key"),
        "a warning names the keyless table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_user_backfills_and_streams() {
    let db = PgServer::get().fresh_db();
    let ro = format!("bfro_{}", std::process::id());
    db.exec(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 500) g;
         CREATE ROLE {ro} LOGIN REPLICATION PASSWORD 'ro-pw'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ro};
         CREATE PUBLICATION pub_{ro} FOR TABLE t"
    ))
    .await;
    let w = Workdir::new();
    let toml = db
        .server
        .source_toml(db.name(), &ro)
        .replace("user = \"logtide\"", &format!("user = \"{ro}\""))
        .replace(
            &format!("password_env = \"{PASSWORD_ENV}\""),
            "password_env = \"RO_PW\"",
        );
    w.write_config(&format!(
        "{toml}publication = \"pub_{ro}\"\ncreate_publication = false\n"
    ));
    let mut child = spawn_run(&w, &[], &[("RO_PW", "ro-pw")]);
    w.wait_events(500, WAIT);
    db.exec("INSERT INTO t VALUES (-1, 'marker')").await;
    let ev = wait_marker(&w, -1);
    kill9(&mut child);
    assert_eq!(ev.iter().filter(|e| e["op"] == "r").count(), 500);
    // The user cannot write: logtide wrote nothing to the source.
    let can_write = db
        .text_rows(&format!(
            "SELECT has_table_privilege('{ro}', 't', 'INSERT')"
        ))
        .await;
    assert_eq!(can_write[0][0].as_deref(), Some("f"));
}

/// Odd identifiers (a schema and a table with a dot, a space, a double quote, upper case
/// and an emoji; columns with a dot, a space and a quote) through the exact-name table
/// filter, a column filter, the backfill and the stream, with a key update and a delete:
/// the table a consumer rebuilds equals the database's, and the excluded column never
/// appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_identifiers_through_filter_backfill_and_stream() {
    let db = PgServer::get().fresh_db();
    let (schema, table) = ("Odd.Sch ema", "Tab \"le\" 😀");
    let sql_table = "\"Odd.Sch ema\".\"Tab \"\"le\"\" 😀\"";
    db.exec(&format!(
        "CREATE SCHEMA \"Odd.Sch ema\";
         CREATE TABLE {sql_table} (\"Id\" int PRIMARY KEY, \"we ird.col\" text, \"q'uote\" int);
         INSERT INTO {sql_table} VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)"
    ))
    .await;
    let qualified = format!("{schema}.{table}");
    let w = Workdir::new();
    let name = format!("odd_{}", std::process::id());
    w.write_config(&format!(
        "{}tables = {{ include = [{qualified:?}] }}\ncolumns = {{ {qualified:?} = {{ exclude = [\"q'uote\"] }} }}\n",
        db.server.source_toml(db.name(), &name)
    ));
    let mut child = spawn_run(&w, &[], &env());
    assert!(
        wait_until(Duration::from_secs(30), || w.events().len() >= 3),
        "the backfill delivered {} rows\n{}",
        w.events().len(),
        logs(&w)
    );
    db.exec(&format!(
        "INSERT INTO {sql_table} VALUES (4, 'd', 4);
         UPDATE {sql_table} SET \"Id\" = 20, \"we ird.col\" = 'b2' WHERE \"Id\" = 2;
         DELETE FROM {sql_table} WHERE \"Id\" = 3"
    ))
    .await;
    let want: std::collections::BTreeMap<String, serde_json::Value> = db
        .connect()
        .await
        .query(
            &format!("SELECT \"Id\", \"we ird.col\" FROM {sql_table}"),
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| {
            let id: i32 = r.get(0);
            let v: String = r.get(1);
            (
                serde_json::json!({ "Id": id }).to_string(),
                serde_json::json!({ "Id": id, "we ird.col": v }),
            )
        })
        .collect();
    let mut got = Default::default();
    let ok = wait_until(WAIT, || {
        got = consumer_state(&w.events(), &qualified);
        got == want
    });
    kill9(&mut child);
    assert!(ok, "rebuilt {got:?}\nwant {want:?}\n{}", logs(&w));
    let ev = w.events();
    assert!(
        ev.iter()
            .all(|e| e["source"]["schema"] == schema && e["source"]["table"] == table),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .all(|e| e["after"].get("q'uote").is_none() && e["before"].get("q'uote").is_none()),
        "the excluded column leaked: {ev:?}"
    );
}
