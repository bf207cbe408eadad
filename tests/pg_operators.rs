//! PostgreSQL as operators run it (issue 12), through the logtide binary against the
//! private server of the harness (`LOGTIDE_PG_VERSION=<major>` picks another major, see
//! scripts/pg_matrix.sh): a slot dropped while logtide is stopped, partitioned tables, a
//! table added to the include list (logtide's publication and a user's), JSON null vs SQL
//! NULL, keys of tables without a primary key, filter entries that name nothing, and
//! `verify-full` in query mode.

use crate::common::pg::{PgServer, TestDb, PASSWORD, PASSWORD_ENV};
use crate::common::run::{
    apply_events, kill9, logs, run_to_end, sigterm, spawn_run, wait_exit, wait_until, Workdir,
};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

fn source_name(tag: &str) -> String {
    format!("op{tag}_{}", std::process::id())
}

fn slot_active(db: &TestDb<'_>, slot: &str) -> bool {
    db.server.slot_streaming(slot)
}

/// Writes the config and starts logtide; waits until it streams from its slot (the
/// initial backfill is then over).
fn start(w: &Workdir, db: &TestDb<'_>, source: &str, extra: &str) -> std::process::Child {
    w.write_config(&format!(
        "{}{extra}",
        db.server.source_toml(db.name(), source)
    ));
    let child = spawn_run(w, &[], &env());
    let slot = format!("logtide_{source}");
    let ok = wait_until(WAIT, || slot_active(db, &slot));
    assert!(ok, "slot {slot} never became active\n{}", logs(w));
    child
}

/// SIGTERM and a clean exit (the last checkpoint stored and confirmed).
fn stop(child: &mut std::process::Child, w: &Workdir) {
    sigterm(child);
    let st = wait_exit(child, WAIT);
    assert!(st.success(), "logtide stopped with {st:?}\n{}", logs(w));
}

/// `logtide <cmd> -c <config>` → (exit code, stdout + stderr).
fn cli(w: &Workdir, args: &[&str]) -> (i32, String) {
    let cfg = w.config();
    let mut all = args.to_vec();
    all.extend(["-c", cfg.to_str().expect("utf-8 path")]);
    let out = run_to_end(&all, &env());
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs logtide, which must refuse to start: exit code 3 within the timeout.
fn refused(w: &Workdir) -> String {
    let mut child = spawn_run(w, &[], &env());
    let st = wait_exit(&mut child, WAIT);
    assert_eq!(st.code(), Some(3), "expected a refusal\n{}", logs(w));
    logs(w)
}

fn events_of<'a>(ev: &'a [serde_json::Value], table: &str) -> Vec<&'a serde_json::Value> {
    ev.iter()
        .filter(|e| e["source"]["table"] == table)
        .collect()
}

// ------------------------------------------------------------------ 1. dropped slot

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_dropped_while_stopped_refuses_to_start() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let name = source_name("dropped");
    let slot = format!("logtide_{name}");
    let mut child = start(&w, &db, &name, "");
    db.exec("INSERT INTO t VALUES (1, 'streamed')").await;
    w.wait_events(1, WAIT);
    stop(&mut child, &w);
    // A DBA drops the slot while logtide is stopped; rows are written meanwhile.
    assert!(wait_until(WAIT, || !slot_active(&db, &slot)));
    db.psql(&format!("SELECT pg_drop_replication_slot('{slot}')"));
    db.exec("INSERT INTO t VALUES (2, 'in the gap')").await;

    let (code, out) = cli(&w, &["check"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains(&slot) && l.contains("dropped")),
        "{out}"
    );
    let (code, out) = cli(&w, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("FAIL: slot") && out.contains(&slot), "{out}");

    let log = refused(&w);
    assert!(
        log.contains("does not exist, but position") && log.contains("logtide reset"),
        "{log}"
    );
    assert_eq!(
        db.server.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'")
        ),
        "0",
        "the slot must not be recreated silently"
    );
    assert_eq!(w.events().len(), 1, "nothing streamed after the refusal");

    // The way out the message names: reset, then the initial backfill copies the table.
    let (code, out) = cli(&w, &["reset", "--source", &name, "--yes"]);
    assert_eq!(code, 0, "{out}");
    let mut child = start(&w, &db, &name, "");
    let ev = w.wait_events(3, WAIT);
    kill9(&mut child);
    let backfilled: Vec<&serde_json::Value> = ev[1..].iter().collect();
    assert!(
        backfilled.iter().all(|e| e["op"] == "r")
            && backfilled.iter().any(|e| e["after"]["v"] == "in the gap"),
        "{ev:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_invalidated_while_stopped_refuses_to_start() {
    // Slots may keep at most 1 MB of WAL: a few segment switches while logtide is stopped
    // and a checkpoint invalidate its slot (wal_status = 'lost').
    let server = PgServer::builder()
        .setting("max_slot_wal_keep_size", "1MB")
        .setting("wal_keep_size", "0")
        .start();
    let db = server.fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let name = source_name("lost");
    let slot = format!("logtide_{name}");
    let mut child = start(&w, &db, &name, "");
    db.exec("INSERT INTO t VALUES (1, 'x')").await;
    w.wait_events(1, WAIT);
    stop(&mut child, &w);
    assert!(wait_until(WAIT, || !slot_active(&db, &slot)));
    let lost = wait_until(WAIT, || {
        db.psql(
            "INSERT INTO t SELECT coalesce(max(id), 0) + 1, 'more' FROM t; SELECT pg_switch_wal();",
        );
        db.psql("CHECKPOINT");
        server.psql(
            "postgres",
            &format!("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        ) == "lost"
    });
    assert!(
        lost,
        "the server did not invalidate the slot
{}",
        server.log()
    );
    let log = refused(&w);
    assert!(
        log.contains("was invalidated by the server") && log.contains("logtide reset"),
        "{log}"
    );
    let (code, out) = cli(&w, &["check"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("invalidated")),
        "{out}"
    );
    let (_, out) = cli(&w, &["status"]);
    assert!(
        out.contains("FAIL: slot") && out.contains("invalidated"),
        "{out}"
    );
}

// ------------------------------------------------------------------ 2. partitions

async fn partitioned_schema(db: &TestDb<'_>) {
    db.exec(
        "CREATE TABLE meas (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE meas_eu PARTITION OF meas FOR VALUES IN ('eu');
         CREATE TABLE meas_us PARTITION OF meas FOR VALUES IN ('us');
         INSERT INTO meas VALUES (1, 'eu', 10), (2, 'us', 20);",
    )
    .await;
}

/// The rows of `meas` as the consumer should have them, keyed like the events.
async fn meas_state(
    db: &TestDb<'_>,
) -> std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>> {
    db.text_rows(
        "SELECT json_build_object('id', id, 'region', region)::text, row_to_json(x)::text FROM meas x",
    )
    .await
    .into_iter()
    .map(|r| {
        let k: serde_json::Value = serde_json::from_str(r[0].as_deref().expect("key")).expect("json");
        let v: serde_json::Value = serde_json::from_str(r[1].as_deref().expect("row")).expect("json");
        (k.to_string(), v.as_object().expect("object").clone())
    })
    .collect()
}

/// Streams `meas` (backfill, insert, a cross-partition update, an in-place update) and
/// checks that every event is named `meas`, the parent is backfilled once, and the rebuilt
/// table equals the database.
async fn partitions_arrive_as_the_root(db: &TestDb<'_>, tag: &str, extra: &str) {
    let w = Workdir::new();
    let mut child = start(&w, db, &source_name(tag), extra);
    db.exec("INSERT INTO meas VALUES (3, 'us', 30)").await;
    db.exec("UPDATE meas SET region = 'us' WHERE id = 1").await;
    db.exec("UPDATE meas SET v = v + 1 WHERE id = 2").await;
    db.exec("INSERT INTO meas VALUES (99, 'eu', 0)").await;
    let ev = crate::common::run::wait_marker(&w, "meas", 99, WAIT);
    kill9(&mut child);
    assert!(
        ev.iter().all(|e| e["source"]["table"] == "meas"),
        "{tag}: events must carry the partitioned table's name: {ev:#?}"
    );
    let backfilled: Vec<&serde_json::Value> = ev.iter().filter(|e| e["op"] == "r").collect();
    assert_eq!(
        backfilled.len(),
        2,
        "{tag}: parent backfilled once: {ev:#?}"
    );
    // The cross-partition update: the old row goes, the moved row comes (PostgreSQL decodes
    // a row movement as a delete and an insert).
    assert!(
        ev.iter()
            .any(|e| e["op"] == "d" && e["key"] == json!({"id": 1, "region": "eu"})),
        "{tag}: {ev:#?}"
    );
    let state = apply_events(&ev);
    assert_eq!(state["public.meas"], meas_state(db).await, "{tag}: {ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_table_is_captured_as_its_root() {
    let server = PgServer::get();
    // logtide's own publication (exact include → FOR TABLE, publish_via_partition_root).
    let db = server.fresh_db();
    partitioned_schema(&db).await;
    partitions_arrive_as_the_root(
        &db,
        "part_own",
        "tables = { include = [\"public.meas\"] }\n",
    )
    .await;
    let via_root = db.psql(&format!(
        "SELECT pubviaroot FROM pg_publication WHERE pubname = 'logtide_{}'",
        source_name("part_own")
    ));
    assert_eq!(via_root, "t");

    // A user's publication without publish_via_partition_root publishes the partitions:
    // logtide maps them to the root.
    let db = server.fresh_db();
    partitioned_schema(&db).await;
    db.exec("CREATE PUBLICATION userpub FOR TABLE meas").await;
    partitions_arrive_as_the_root(
        &db,
        "part_user",
        "publication = \"userpub\"\ntables = { include = [\"public.*\"] }\n",
    )
    .await;
    assert_eq!(
        db.psql("SELECT pubviaroot FROM pg_publication WHERE pubname = 'userpub'"),
        "f",
        "a user's publication is never changed"
    );
}

// ------------------------------------------------------------------ 3. include list grows

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_added_to_the_include_list() {
    let db = PgServer::get().fresh_db();
    db.exec(
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO b VALUES (1, 'old b 1'), (2, 'old b 2');",
    )
    .await;
    let name = source_name("grow");
    let publication = format!("logtide_{name}");
    let w = Workdir::new();
    let mut child = start(&w, &db, &name, "tables = { include = [\"public.a\"] }\n");
    db.exec("INSERT INTO a VALUES (1, 'a1')").await;
    w.wait_events(1, WAIT);
    stop(&mut child, &w);
    db.exec("INSERT INTO b VALUES (3, 'b while stopped')").await;

    // logtide's publication follows the filter: b is added and backfilled, then streamed.
    let mut child = start(
        &w,
        &db,
        &name,
        "tables = { include = [\"public.a\", \"public.b\"] }\n",
    );
    db.exec("INSERT INTO b VALUES (4, 'b streamed')").await;
    let ok = wait_until(WAIT, || {
        let ev = w.events();
        let b = events_of(&ev, "b");
        b.iter().any(|e| e["after"]["id"] == 4) && b.iter().filter(|e| e["op"] == "r").count() >= 3
    });
    let ev = w.events();
    kill9(&mut child);
    assert!(
        ok,
        "b was not backfilled and streamed: {ev:#?}\n{}",
        logs(&w)
    );
    let state = apply_events(&ev);
    let ids: Vec<i64> = state["public.b"]
        .values()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4], "{ev:#?}");
    assert_eq!(
        db.psql(&format!(
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = '{publication}'"
        )),
        "a,b"
    );
    assert!(
        logs(&w).contains("publication changed to follow the filter"),
        "{}",
        logs(&w)
    );

    // A user's publication that lacks b: refused, with the statement to run.
    let db2 = PgServer::get().fresh_db();
    db2.exec(
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         CREATE PUBLICATION mine FOR TABLE a;",
    )
    .await;
    let w2 = Workdir::new();
    w2.write_config(&format!(
        "{}publication = \"mine\"\ntables = {{ include = [\"public.a\", \"public.b\"] }}\n",
        db2.server.source_toml(db2.name(), &source_name("userpub"))
    ));
    let log = refused(&w2);
    assert!(
        log.contains("ALTER PUBLICATION \\\"mine\\\" ADD TABLE \\\"public\\\".\\\"b\\\"")
            || log.contains("ALTER PUBLICATION \"mine\" ADD TABLE \"public\".\"b\""),
        "{log}"
    );
    let (code, out) = cli(&w2, &["check"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("cannot serve the filter")),
        "{out}"
    );
    assert_eq!(
        db2.psql("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'mine'"),
        "1",
        "a user's publication is never changed"
    );
}

// ------------------------------------------------------------------ 4. JSON null

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_null_and_sql_null_stay_apart() {
    let db = PgServer::get().fresh_db();
    db.exec(
        "CREATE TABLE j (id int PRIMARY KEY, jb jsonb, js json, arr jsonb[]);
         INSERT INTO j VALUES (1, 'null', 'null', ARRAY['null'::jsonb, NULL, '{\"a\":null}']),
                              (2, NULL, NULL, NULL);",
    )
    .await;
    let w = Workdir::new();
    let mut child = start(&w, &db, &source_name("jnull"), "");
    db.exec(
        "INSERT INTO j VALUES (3, 'null', 'null', ARRAY['null'::jsonb, NULL, '{\"a\":null}']),
                              (4, NULL, NULL, NULL);",
    )
    .await;
    let ev = w.wait_events(4, WAIT);
    kill9(&mut child);
    let by_id = |id: i64| {
        ev.iter()
            .find(|e| e["after"]["id"] == id)
            .unwrap_or_else(|| panic!("no event for {id}: {ev:#?}"))
    };
    for (id, op) in [(1, "r"), (3, "c")] {
        let e = by_id(id);
        assert_eq!(e["op"], op);
        assert_eq!(e["after"]["jb"], json!({"$json": null}), "{e}");
        assert_eq!(e["after"]["js"], json!({"$json": null}), "{e}");
        assert_eq!(
            e["after"]["arr"],
            json!([{"$json": null}, null, {"a": null}]),
            "{e}"
        );
    }
    for (id, op) in [(2, "r"), (4, "c")] {
        let e = by_id(id);
        assert_eq!(e["op"], op);
        assert_eq!(e["after"]["jb"], serde_json::Value::Null, "{e}");
        assert_eq!(e["after"]["js"], serde_json::Value::Null, "{e}");
        assert_eq!(e["after"]["arr"], serde_json::Value::Null, "{e}");
    }
}

// ------------------------------------------------------------------ 5. keys without PK

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_without_primary_key_are_the_same_in_stream_and_backfill() {
    let db = PgServer::get().fresh_db();
    db.exec(
        "CREATE TABLE full_nopk (a int, b text); ALTER TABLE full_nopk REPLICA IDENTITY FULL;
         CREATE TABLE idx (a int NOT NULL, b text); CREATE UNIQUE INDEX idx_a ON idx (a);
         ALTER TABLE idx REPLICA IDENTITY USING INDEX idx_a;
         INSERT INTO full_nopk VALUES (1, 'x'); INSERT INTO idx VALUES (1, 'x');",
    )
    .await;
    let w = Workdir::new();
    let mut child = start(&w, &db, &source_name("keys"), "");
    db.exec(
        "INSERT INTO full_nopk VALUES (2, 'y'); UPDATE full_nopk SET b = 'z' WHERE a = 1;
         INSERT INTO idx VALUES (2, 'y'); UPDATE idx SET b = 'q' WHERE a = 1;",
    )
    .await;
    let ev = w.wait_events(6, WAIT);
    kill9(&mut child);
    let full = events_of(&ev, "full_nopk");
    let ops: Vec<&str> = full.iter().map(|e| e["op"].as_str().expect("op")).collect();
    assert_eq!(ops, ["r", "c", "u"], "{ev:#?}");
    assert!(
        full.iter().all(|e| e["key"].is_null()),
        "REPLICA IDENTITY FULL without a primary key: key is null in backfill and stream: {full:#?}"
    );
    assert_eq!(
        full[2]["before"],
        json!({"a": 1, "b": "x"}),
        "the old row is still in `before`"
    );
    let idx = events_of(&ev, "idx");
    let keys: Vec<(&str, serde_json::Value)> = idx
        .iter()
        .map(|e| (e["op"].as_str().expect("op"), e["key"].clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("r", json!({"a": 1})),
            ("c", json!({"a": 2})),
            ("u", json!({"a": 1}))
        ],
        "replica identity index columns in both paths"
    );
}

// ------------------------------------------------------------------ generated columns

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_are_the_same_in_backfill_and_stream() {
    let db = PgServer::get().fresh_db();
    db.exec(
        "CREATE TABLE g (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED);
         INSERT INTO g (id, a) VALUES (1, 5);",
    )
    .await;
    let w = Workdir::new();
    let mut child = start(&w, &db, &source_name("gen"), "");
    db.exec("INSERT INTO g (id, a) VALUES (2, 7)").await;
    let ev = w.wait_events(2, WAIT);
    kill9(&mut child);
    assert_eq!(
        (ev[0]["op"].as_str(), ev[1]["op"].as_str()),
        (Some("r"), Some("c"))
    );
    if db.server.version() >= 18 {
        // publish_generated_columns = stored: the value is in both paths.
        assert_eq!(
            ev[0]["after"],
            json!({"id": 1, "a": 5, "twice": 10}),
            "{ev:#?}"
        );
        assert_eq!(
            ev[1]["after"],
            json!({"id": 2, "a": 7, "twice": 14}),
            "{ev:#?}"
        );
    } else {
        // pgoutput cannot send it: absent from both paths alike.
        assert_eq!(ev[0]["after"], json!({"id": 1, "a": 5}), "{ev:#?}");
        assert_eq!(ev[1]["after"], json!({"id": 2, "a": 7}), "{ev:#?}");
    }
}

// ------------------------------------------------------------------ 6. filter typos

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_entries_that_match_nothing_are_refused() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE users (id int PRIMARY KEY, email text, password_hash text); INSERT INTO users VALUES (1, 'a@x.io', 'secret')").await;
    let w = Workdir::new();
    w.write_config(&format!(
        "{}tables = {{ include = [\"public.users\"], exclude = [\"public.audit\"] }}\n\
         [sources.columns]\n\"public.users\" = {{ exclude = [\"pasword_hash\"] }}\n",
        db.server.source_toml(db.name(), &source_name("typo"))
    ));
    let log = refused(&w);
    assert!(
        log.contains("pasword_hash") && log.contains("public.audit"),
        "{log}"
    );
    let text = std::fs::read_to_string(w.out()).unwrap_or_default();
    assert!(!text.contains("secret"), "nothing leaked: {text}");
    let (code, out) = cli(&w, &["check"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("pasword_hash")),
        "{out}"
    );
    // Fixed: it runs, and the column stays out.
    w.write_config(&format!(
        "{}tables = {{ include = [\"public.users\"] }}\n\
         [sources.columns]\n\"public.users\" = {{ exclude = [\"password_hash\"] }}\n",
        db.server.source_toml(db.name(), &source_name("typo"))
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(1, WAIT);
    kill9(&mut child);
    assert_eq!(ev[0]["after"], json!({"id": 1, "email": "a@x.io"}));
}

// ------------------------------------------------------------------ 7. verify-full (query mode)

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is needed for this test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for `localhost` only (DNS SAN), signed by it.
fn make_certs(d: &Path) {
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=logtide-operators-ca",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_mode_verify_full_checks_the_host_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_certs(d);
    let read = |n: &str| std::fs::read(d.join(n)).expect("read cert");
    let server = PgServer::builder()
        .setting("ssl", "on")
        .setting("ssl_cert_file", "server.crt")
        .setting("ssl_key_file", "server.key")
        .data_file("server.crt", &read("server.crt"), 0o644)
        .data_file("server.key", &read("server.key"), 0o600)
        .start();
    let db = server.fresh_db();
    db.exec("CREATE TABLE q (id int PRIMARY KEY, v text); INSERT INTO q VALUES (1, 'one')")
        .await;
    let ca = d.join("ca.crt");
    let query_source = |host: &str, root: Option<&Path>| {
        let mut t = format!(
            "[[sources]]\nkind = \"query\"\nname = \"{}\"\nhost = \"{host}\"\nport = {}\n\
             user = \"{}\"\npassword_env = \"{PASSWORD_ENV}\"\ndatabase = \"{}\"\n\
             sslmode = \"verify-full\"\nquery = \"SELECT id, v FROM q WHERE id > {{{{cursor}}}}\"\n\
             cursor_column = \"id\"\ninitial_cursor = \"0\"\ntable = \"public.q\"\ninterval = \"1s\"\n\
             connect_timeout = \"5s\"\n",
            source_name("qtls"),
            server.port(),
            crate::common::pg::USER,
            db.name()
        );
        if let Some(r) = root {
            t.push_str(&format!("sslrootcert = \"{}\"\n", r.display()));
        }
        t
    };
    let w = Workdir::new();
    // The certificate names localhost, not 127.0.0.1: refused although the CA is right.
    w.write_config(&query_source("127.0.0.1", Some(&ca)));
    let (code, out) = cli(&w, &["check"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.to_lowercase().contains("certificate"),
        "the failure names the certificate: {out}"
    );
    assert!(!out.contains(PASSWORD), "no secret in output: {out}");
    // Without the CA (Mozilla roots only) the test CA is unknown: refused too.
    w.write_config(&query_source("localhost", None));
    let (code, out) = cli(&w, &["check"]);
    assert_eq!(code, 3, "{out}");
    // The right name and CA: verified, and rows arrive.
    w.write_config(&query_source("localhost", Some(&ca)));
    let (code, out) = cli(&w, &["check"]);
    assert_eq!(code, 0, "{out}");
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(1, WAIT);
    kill9(&mut child);
    assert_eq!(ev[0]["after"]["v"], "one");
    // A CA file with a mode that does not verify is a config error, not a silent downgrade.
    w.write_config(&query_source("localhost", Some(&ca)).replace("verify-full", "require"));
    let (code, out) = cli(&w, &["check"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("sslrootcert"), "{out}");
}

/// `sslmode = prefer` against a server without TLS goes on in plain text (libpq's rule), but
/// says so in `check` and in the logs of `run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falling_back_to_plain_text_is_not_silent() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let w = Workdir::new();
    let name = source_name("prefer");
    let toml = db
        .server
        .source_toml(db.name(), &name)
        .replace("sslmode = \"disable\"", "sslmode = \"prefer\"");
    assert!(toml.contains("prefer"), "{toml}");
    w.write_config(&toml);
    let (code, out) = cli(&w, &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("warn") && l.contains("unencrypted connection")),
        "{out}"
    );
    let mut child = spawn_run(&w, &[], &env());
    let slot = format!("logtide_{name}");
    assert!(wait_until(WAIT, || slot_active(&db, &slot)), "{}", logs(&w));
    kill9(&mut child);
    let log = logs(&w);
    assert!(
        log.contains("the replication connection is unencrypted")
            && log.contains("the SQL connection is unencrypted"),
        "{log}"
    );
}

// ------------------------------------------------------------------ seeded scenario

/// xorshift64*: a reproducible random sequence (the seed is printed; `LOGTIDE_SEED=<n>`
/// replays it).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// A JSON column as the consumer decodes it (README "JSON null"): `null` is SQL NULL,
/// `{"$json": v}` is the document `v`, anything else is the document itself.
fn decode_json(v: &serde_json::Value) -> Option<serde_json::Value> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::Object(m) if m.len() == 1 && m.contains_key("$json") => {
            m.get("$json").cloned()
        }
        other => Some(other.clone()),
    }
}

/// Partition moves, in-place updates and deletes, JSON nulls, kills, clean restarts, a table
/// added to the include list, and a slot dropped while stopped (refused, reset, re-backfill:
/// the consumer starts over from the new backfill) — then the tables rebuilt from the
/// events must equal the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_scenario_rebuilds_the_tables() {
    let seed: u64 = std::env::var("LOGTIDE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    eprintln!("seeded scenario: LOGTIDE_SEED={seed}");
    let mut rng = Rng(seed);
    let db = PgServer::get().fresh_db();
    partitioned_schema(&db).await;
    db.exec(
        "CREATE TABLE meas_ap PARTITION OF meas FOR VALUES IN ('ap');
         CREATE TABLE docs (id int PRIMARY KEY, jb jsonb);
         CREATE TABLE extra (id int PRIMARY KEY, v text);
         INSERT INTO docs VALUES (1, 'null'), (2, NULL), (3, '{\"a\": null}');
         INSERT INTO extra VALUES (1, 'before');",
    )
    .await;
    let name = source_name("scenario");
    let slot = format!("logtide_{name}");
    let w = Workdir::new();
    let config = |extra_table: bool| {
        if extra_table {
            "tables = { include = [\"public.meas\", \"public.docs\", \"public.extra\"] }\n"
        } else {
            "tables = { include = [\"public.meas\", \"public.docs\"] }\n"
        }
    };
    let mut with_extra = false;
    let mut epoch = 0;
    let mut next_id = 100;
    let regions = ["eu", "us", "ap"];
    let docs_values = [
        "'null'",
        "NULL",
        "'{\"a\": null}'",
        "'[null, 1]'",
        "'\"s\"'",
    ];
    let mut child = start(&w, &db, &name, config(with_extra));
    for round in 0..8 {
        let mut sql = String::new();
        for _ in 0..5 + rng.below(15) {
            let id = 1 + rng.below(next_id as u64) as i64;
            let region = regions[rng.below(3) as usize];
            match rng.below(7) {
                0 | 1 => {
                    next_id += 1;
                    sql.push_str(&format!(
                        "INSERT INTO meas VALUES ({next_id}, '{region}', {});",
                        rng.below(100)
                    ));
                }
                2 => sql.push_str(&format!("UPDATE meas SET region = '{region}' WHERE id = {id};")),
                3 => sql.push_str(&format!("UPDATE meas SET v = v + 1 WHERE id = {id};")),
                4 => sql.push_str(&format!("DELETE FROM meas WHERE id = {id};")),
                5 => sql.push_str(&format!(
                    "INSERT INTO docs VALUES ({}, {}) ON CONFLICT (id) DO UPDATE SET jb = EXCLUDED.jb;",
                    1 + rng.below(8),
                    docs_values[rng.below(docs_values.len() as u64) as usize]
                )),
                _ => sql.push_str(&format!(
                    "INSERT INTO extra VALUES ({id}, 'r{round}') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v;"
                )),
            }
            if rng.below(3) == 0 {
                db.exec(&format!("BEGIN; {sql} COMMIT")).await;
                sql.clear();
            }
        }
        if !sql.is_empty() {
            db.exec(&format!("BEGIN; {sql} COMMIT")).await;
        }
        let action = rng.below(5);
        eprintln!("seed {seed} round {round}: action {action}");
        match action {
            0 => {
                kill9(&mut child);
                child = start(&w, &db, &name, config(with_extra));
            }
            1 => {
                stop(&mut child, &w);
                child = start(&w, &db, &name, config(with_extra));
            }
            2 if !with_extra => {
                stop(&mut child, &w);
                db.exec(&format!(
                    "INSERT INTO extra VALUES ({}, 'while stopped') ON CONFLICT DO NOTHING",
                    1000 + round
                ))
                .await;
                with_extra = true;
                child = start(&w, &db, &name, config(with_extra));
            }
            3 => {
                stop(&mut child, &w);
                assert!(wait_until(WAIT, || !slot_active(&db, &slot)));
                db.psql(&format!("SELECT pg_drop_replication_slot('{slot}')"));
                next_id += 1;
                db.exec(&format!("INSERT INTO meas VALUES ({next_id}, 'eu', 0); UPDATE docs SET jb = 'null' WHERE id = 2")).await;
                let log = refused(&w);
                assert!(
                    log.contains("does not exist, but position"),
                    "seed {seed}: {log}"
                );
                let (code, out) = cli(&w, &["reset", "--source", &name, "--yes"]);
                assert_eq!(code, 0, "{out}");
                // The consumer starts over from the new backfill.
                epoch += 1;
                std::fs::rename(w.out(), w.path().join(format!("epoch-{epoch}.jsonl")))
                    .expect("rotate the output");
                child = start(&w, &db, &name, config(with_extra));
            }
            _ => {}
        }
    }
    // Everything committed so far has arrived once the marker has.
    db.exec("INSERT INTO docs VALUES (1000000, '{}')").await;
    let ev = crate::common::run::wait_marker(&w, "docs", 1_000_000, WAIT);
    // The on-demand backfill of `extra` runs beside the stream: wait for it to finish.
    if with_extra {
        let want = db.text_rows("SELECT count(*) FROM extra").await[0][0]
            .clone()
            .expect("count");
        let ok = wait_until(WAIT, || {
            apply_events(&w.events())
                .get("public.extra")
                .is_some_and(|t| t.len().to_string() == want)
        });
        assert!(ok, "seed {seed}: extra never converged\n{}", logs(&w));
    }
    let ev = if with_extra { w.events() } else { ev };
    kill9(&mut child);
    let state = apply_events(&ev);
    assert_eq!(
        state.get("public.meas").cloned().unwrap_or_default(),
        meas_state(&db).await,
        "seed {seed}: meas differs"
    );
    let docs: std::collections::BTreeMap<i64, Option<serde_json::Value>> = state
        .get("public.docs")
        .cloned()
        .unwrap_or_default()
        .values()
        .map(|r| (r["id"].as_i64().expect("id"), decode_json(&r["jb"])))
        .collect();
    let want: std::collections::BTreeMap<i64, Option<serde_json::Value>> = db
        .text_rows("SELECT id, jb::text FROM docs")
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].as_deref().expect("id").parse().expect("int"),
                r[1].as_deref()
                    .map(|t| serde_json::from_str(t).expect("jsonb text")),
            )
        })
        .collect();
    assert_eq!(docs, want, "seed {seed}: docs differ");
    if with_extra {
        let got: std::collections::BTreeMap<i64, String> = state["public.extra"]
            .values()
            .map(|r| {
                (
                    r["id"].as_i64().expect("id"),
                    r["v"].as_str().expect("v").to_owned(),
                )
            })
            .collect();
        let want: std::collections::BTreeMap<i64, String> = db
            .text_rows("SELECT id, v FROM extra")
            .await
            .into_iter()
            .map(|r| {
                (
                    r[0].as_deref().expect("id").parse().expect("int"),
                    r[1].clone().expect("v"),
                )
            })
            .collect();
        assert_eq!(got, want, "seed {seed}: extra differs");
    } else {
        assert!(
            !state.contains_key("public.extra"),
            "seed {seed}: extra is not captured"
        );
    }
}
