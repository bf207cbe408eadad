//! Query mode (`kind = "query"`) through the logtide binary against the private PostgreSQL:
//! integer and timestamp cursors (ties at the boundary), paging, the per-run cap, kill -9
//! between runs, and bind parameters.

use crate::common::pg::{PgServer, TestDb, PASSWORD, PASSWORD_ENV, USER};
use crate::common::run::{kill9, logs, sigterm, spawn_run, wait_exit, wait_until, Workdir};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

fn source_name(tag: &str) -> String {
    format!("q{tag}_{}", std::process::id())
}

/// A `kind = "query"` source on `db`; `extra` holds query, cursor_column, ... as TOML.
fn query_toml(db: &TestDb<'_>, name: &str, extra: &str) -> String {
    format!(
        "[[sources]]\nkind = \"query\"\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nuser = \"{USER}\"\n\
         password_env = \"{PASSWORD_ENV}\"\ndatabase = \"{}\"\nsslmode = \"disable\"\n{extra}\n",
        db.server.host(),
        db.server.port(),
        db.name()
    )
}

fn ids(ev: &[serde_json::Value]) -> Vec<i64> {
    ev.iter()
        .map(|e| e["after"]["id"].as_i64().expect("id"))
        .collect()
}

/// Waits until the log shows a run starting after the pipeline checkpointed sequence `seq`.
fn wait_checkpointed(w: &Workdir, seq: u64) {
    let ok = wait_until(WAIT, || {
        logs(w).lines().any(|l| {
            l.contains("query run starting")
                && l.split("checkpointed_seq=")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n >= seq)
        })
    });
    assert!(ok, "checkpoint {seq} never reached\n{}", logs(w));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_cursor_pages_and_picks_up_new_rows() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE items (id int PRIMARY KEY, name text, qty numeric, ok bool)")
        .await;
    db.exec(
        "INSERT INTO items SELECT g, 'n' || g, g * 1.5, g % 2 = 0 FROM generate_series(1, 5) g",
    )
    .await;
    let w = Workdir::new();
    let name = source_name("int");
    w.write_config(&query_toml(
        &db,
        &name,
        "query = \"SELECT id, name, qty, ok FROM items WHERE id > {{cursor}}\"\n\
         cursor_column = \"id\"\nkey_columns = [\"id\"]\ntable = \"public.items\"\n\
         batch_size = 2\ninterval = \"200ms\"\ninitial_cursor = \"0\"\n",
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(5, WAIT);
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5], "{}", logs(&w));
    assert_eq!(ev[1]["after"]["name"], "n2");
    assert_eq!(ev[1]["after"]["ok"], true);
    assert!(!ev[1]["after"]["qty"].is_null(), "{ev:#?}");
    for e in &ev {
        assert_eq!(e["op"], "r");
        assert_eq!(e["source"]["connector"], "query");
        assert_eq!(e["source"]["name"], name.as_str());
        assert_eq!(e["source"]["db"], db.name());
        assert_eq!(e["source"]["schema"], "public");
        assert_eq!(e["source"]["table"], "items");
        assert_eq!(e["key"], json!({"id": e["after"]["id"]}));
    }
    let cursors: Vec<&str> = ev
        .iter()
        .map(|e| e["source"]["cursor"].as_str().expect("cursor"))
        .collect();
    assert!(cursors.windows(2).all(|c| c[0] < c[1]), "{cursors:?}");
    db.exec("INSERT INTO items VALUES (6, 'n6', 0, false), (7, NULL, NULL, NULL)")
        .await;
    let ev = w.wait_events(7, WAIT);
    kill9(&mut child);
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5, 6, 7], "{}", logs(&w));
    assert_eq!(
        ev[6]["after"],
        json!({"id": 7, "name": null, "qty": null, "ok": null})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_cursor_with_ties_delivers_each_row_once() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE ev (id int PRIMARY KEY, at timestamptz NOT NULL, v text)")
        .await;
    // Three rows share the first timestamp, three the second.
    db.exec(
        "INSERT INTO ev VALUES \
         (1, '2024-01-01 10:00:00+00', 'a'), (2, '2024-01-01 10:00:00+00', 'b'), \
         (3, '2024-01-01 10:00:00+00', 'c'), (4, '2024-01-01 11:00:00.5+00', 'd'), \
         (5, '2024-01-01 11:00:00.5+00', 'e'), (6, '2024-01-01 11:00:00.5+00', 'f')",
    )
    .await;
    let w = Workdir::new();
    let name = source_name("ts");
    // `>=` on the timestamp and batches of 2: batches end inside runs of equal values.
    w.write_config(&query_toml(
        &db,
        &name,
        "query = \"SELECT id, at, v FROM ev WHERE at >= {{cursor}}\"\n\
         cursor_column = \"at\"\nkey_columns = [\"id\"]\ntable = \"public.ev\"\n\
         batch_size = 2\ninterval = \"200ms\"\ninitial_cursor = \"1970-01-01\"\n",
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(6, WAIT);
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5, 6], "{}", logs(&w));
    // Timestamps look like the stream's (UTC).
    let at = ev[3]["after"]["at"].as_str().expect("at");
    assert!(
        at.starts_with("2024-01-01T11:00:00.5") && at.ends_with('Z'),
        "{at}"
    );
    // Late rows at the boundary value, and one after it.
    db.exec(
        "INSERT INTO ev VALUES (7, '2024-01-01 11:00:00.5+00', 'g'), \
         (8, '2024-01-01 11:00:00.5+00', 'h'), (9, '2024-01-01 12:00:00+00', 'i')",
    )
    .await;
    let ev = w.wait_events(9, WAIT);
    // Several more runs pass: nothing is delivered twice.
    wait_checkpointed(&w, 9);
    crate::common::run::wait_query_runs(&w, 3);
    kill9(&mut child);
    let ev2 = w.events();
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5, 6, 7, 8, 9], "{}", logs(&w));
    assert_eq!(ids(&ev2), ids(&ev), "{}", logs(&w));
}

/// A late commit (a long transaction, a clock that jumped back): a row whose cursor is
/// below the highest value already read, but within `lookback`, is read by a later run; the
/// rows already delivered are not sent again; a row further back than `lookback` is missed,
/// as docs/query-mode.md says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_row_within_lookback_is_read() {
    let db = PgServer::get().fresh_db();
    db.exec(
        "CREATE TABLE ev (id int PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO ev VALUES (1, '2024-01-01 10:00:00+00'), (2, '2024-01-01 10:00:10+00')",
    )
    .await;
    let w = Workdir::new();
    let name = source_name("lb");
    w.write_config(&query_toml(
        &db,
        &name,
        "query = \"SELECT id, at FROM ev WHERE at >= {{cursor}}\"\n\
         cursor_column = \"at\"\nkey_columns = [\"id\"]\ntable = \"public.ev\"\n\
         interval = \"200ms\"\nlookback = \"5s\"\ninitial_cursor = \"1970-01-01\"\n",
    ));
    let mut child = spawn_run(&w, &[], &env());
    w.wait_events(2, WAIT);
    wait_checkpointed(&w, 2);
    // Committed now with cursor values below the mark (10:00:10): 3 s back, and 20 s back.
    db.exec("INSERT INTO ev VALUES (3, '2024-01-01 10:00:07+00'), (4, '2024-01-01 09:59:50+00')")
        .await;
    let ev = w.wait_events(3, WAIT);
    crate::common::run::wait_query_runs(&w, 3);
    kill9(&mut child);
    let all = w.events();
    assert_eq!(ids(&ev), [1, 2, 3], "{}", logs(&w));
    assert_eq!(
        ids(&all),
        [1, 2, 3],
        "row 4 is further back than lookback: {}",
        logs(&w)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rows_per_run_caps_a_run_and_restart_resumes() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE big (id int PRIMARY KEY, v text)")
        .await;
    db.exec("INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 10) g")
        .await;
    let w = Workdir::new();
    let name = source_name("cap");
    // One run an hour: only the first run happens while the process lives.
    w.write_config(&query_toml(
        &db,
        &name,
        "query = \"SELECT id, v FROM big WHERE id > {{cursor}}\"\n\
         cursor_column = \"id\"\nkey_columns = [\"id\"]\ntable = \"public.big\"\n\
         batch_size = 3\nmax_rows_per_run = 4\ninterval = \"1h\"\ninitial_cursor = \"0\"\n",
    ));
    let child = spawn_run(&w, &[], &env());
    w.wait_events(4, WAIT);
    assert!(
        wait_until(WAIT, || logs(&w).contains("query run finished")),
        "{}",
        logs(&w)
    );
    let mut child = child;
    sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    assert_eq!(ids(&w.events()), [1, 2, 3, 4], "{}", logs(&w));
    assert!(logs(&w).contains("max_rows_per_run"));
    // The next start runs at once and continues after the stored cursor.
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(8, WAIT);
    assert!(
        wait_until(WAIT, || logs(&w).matches("query run finished").count() >= 2),
        "{}",
        logs(&w)
    );
    sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5, 6, 7, 8], "{}", logs(&w));
    assert_eq!(ids(&w.events()), [1, 2, 3, 4, 5, 6, 7, 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_runs_continues_from_the_stored_cursor() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE k (id bigint PRIMARY KEY, v text)")
        .await;
    db.exec("INSERT INTO k SELECT g, 'v' || g FROM generate_series(1, 5) g")
        .await;
    let w = Workdir::new();
    let name = source_name("kill");
    w.write_config(&query_toml(
        &db,
        &name,
        "query = \"SELECT id, v FROM k WHERE id > {{cursor}}\"\n\
         cursor_column = \"id\"\nkey_columns = [\"id\"]\ntable = \"public.k\"\n\
         batch_size = 2\ninterval = \"200ms\"\ninitial_cursor = \"0\"\n",
    ));
    let mut child = spawn_run(&w, &[], &env());
    w.wait_events(5, WAIT);
    // 5 rows and the completed run are checkpointed before the next run starts.
    wait_checkpointed(&w, 6);
    kill9(&mut child);
    db.exec("INSERT INTO k SELECT g, 'v' || g FROM generate_series(6, 8) g")
        .await;
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(8, WAIT);
    wait_checkpointed(&w, 10);
    kill9(&mut child);
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5, 6, 7, 8], "{}", logs(&w));
    assert_eq!(ids(&w.events()), [1, 2, 3, 4, 5, 6, 7, 8], "{}", logs(&w));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_values_are_bind_parameters() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE names (name text PRIMARY KEY, n int)")
        .await;
    db.exec(
        "INSERT INTO names VALUES ('a', 1), ('it''s', 2), ('it''s a', 3), ('o''neil', 4), ('z', 5)",
    )
    .await;
    let w = Workdir::new();
    let name = source_name("quote");
    // The initial cursor and the paging cursors all contain quotes; batches of one row make
    // every delivered value a bound parameter of the next SELECT.
    w.write_config(&query_toml(
        &db,
        &name,
        "query = \"SELECT name, n FROM names WHERE name > {{cursor}} AND {{last_sync_time}} >= 0\"\n\
         cursor_column = \"name\"\ntable = \"public.names\"\n\
         batch_size = 1\ninterval = \"200ms\"\ninitial_cursor = \"it's\"\n",
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(3, WAIT);
    let names: Vec<&str> = ev
        .iter()
        .map(|e| e["after"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["it's a", "o'neil", "z"], "{}", logs(&w));
    assert_eq!(ev[0]["key"], serde_json::Value::Null);
    // The next run binds {{cursor}} = 'z'; {{last_sync_time}} is now the first run's start.
    db.exec("INSERT INTO names VALUES ('zz''top', 6), ('b', 7)")
        .await;
    let ev = w.wait_events(4, WAIT);
    assert_eq!(ev[3]["after"]["name"], "zz'top", "{}", logs(&w));
    assert!(logs(&w)
        .lines()
        .any(|l| l.contains("query run starting") && !l.contains("sync=0")));
    kill9(&mut child);
    assert_eq!(w.events().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_would_overlap_is_skipped_and_logged() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE slow (id int PRIMARY KEY, v text)")
        .await;
    db.exec("INSERT INTO slow SELECT g, 'v' || g FROM generate_series(1, 4) g")
        .await;
    let w = Workdir::new();
    let name = source_name("slow");
    // Every SELECT takes 0.5 s, the interval is 200 ms: each next run is due while the
    // previous one still runs.
    w.write_config(&query_toml(
        &db,
        &name,
        "query = \"WITH s AS (SELECT pg_sleep(0.5)) SELECT id, v FROM slow, s WHERE id > {{cursor}}\"\n\
         cursor_column = \"id\"\nkey_columns = [\"id\"]\ntable = \"public.slow\"\n\
         batch_size = 2\ninterval = \"200ms\"\ninitial_cursor = \"0\"\n",
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(4, WAIT);
    assert!(
        wait_until(WAIT, || logs(&w).contains("skipped the overlapping run")),
        "{}",
        logs(&w)
    );
    db.exec("INSERT INTO slow VALUES (5, 'v5')").await;
    let ev2 = w.wait_events(5, WAIT);
    kill9(&mut child);
    assert_eq!(ids(&ev), [1, 2, 3, 4], "{}", logs(&w));
    assert_eq!(ids(&ev2), [1, 2, 3, 4, 5], "{}", logs(&w));
    assert_eq!(ids(&w.events()), [1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_with_a_null_cursor_are_not_read_and_do_not_stop_the_source() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE nc (id int PRIMARY KEY, c int)").await;
    db.exec("INSERT INTO nc VALUES (1, 10), (2, NULL), (3, 20)")
        .await;
    let w = Workdir::new();
    let name = source_name("nullc");
    w.write_config(&query_toml(
        &db,
        &name,
        "query = \"SELECT id, c FROM nc WHERE c > {{cursor}} OR c IS NULL\"\n\
         cursor_column = \"c\"\nkey_columns = [\"id\"]\ntable = \"public.nc\"\n\
         batch_size = 5\ninterval = \"200ms\"\ninitial_cursor = \"0\"\n",
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(2, WAIT);
    assert_eq!(ids(&ev), [1, 3], "{}", logs(&w));
    // A NULL cursor delivered last would have stopped every later run from reading.
    db.exec("INSERT INTO nc VALUES (4, 30)").await;
    let ev = w.wait_events(3, WAIT);
    kill9(&mut child);
    assert_eq!(ids(&ev), [1, 3, 4], "{}", logs(&w));
    assert_eq!(ids(&w.events()), [1, 3, 4], "{}", logs(&w));
}
