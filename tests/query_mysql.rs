//! Query mode over the MySQL wire protocol (`kind = "query"`, `protocol = "mysql"`) through
//! the logtide binary against the private MariaDB: integer cursors beyond 2^53, DATETIME(6)
//! and TIMESTAMP cursors with ties at the boundary, values with quotes, backslashes and SQL
//! in a string cursor (bound, never spliced), the per-run cap, an overlapping run, and
//! kill -9 between runs.

use crate::common::mariadb::{MariaServer, PASSWORD, PASSWORD_ENV, USER};
use crate::common::run::{kill9, logs, sigterm, spawn_run, wait_exit, wait_until, Workdir};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

fn source_name(tag: &str) -> String {
    format!("m{tag}_{}", std::process::id())
}

/// A MySQL-protocol query source on `db`; `extra` holds query, cursor_column, ... as TOML.
fn query_toml(db: &str, name: &str, extra: &str) -> String {
    format!(
        "[[sources]]\nkind = \"query\"\nprotocol = \"mysql\"\nname = \"{name}\"\nhost = \"127.0.0.1\"\n\
         port = {}\nuser = \"{USER}\"\npassword_env = \"{PASSWORD_ENV}\"\ndatabase = \"{db}\"\n\
         sslmode = \"disable\"\n{extra}\n",
        MariaServer::get().port()
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

#[test]
fn integer_cursor_pages_exactly_beyond_2_pow_53() {
    let srv = MariaServer::get();
    let db = srv.fresh_db();
    srv.sql(
        &db,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(20), qty DECIMAL(10,2), ok BOOL);\
         INSERT INTO items VALUES (1, 'n1', 1.5, 0), (2, 'n2', 3.0, 1), (3, 'n3', 4.5, 0), \
         (4, 'n4', 6.0, 1), (5, 'n5', 7.5, 0), (9007199254740992, 'big', 0, 1)",
    );
    let w = Workdir::new();
    let name = source_name("int");
    // Batches of 2 page by `id > last`; 2^53 and 2^53 + 1 are the same double, so a cursor
    // bound as a string (compared as a double) would lose the second.
    w.write_config(&query_toml(
        &db,
        &name,
        &format!(
            "query = \"SELECT id, name, qty, ok FROM items WHERE id > {{{{cursor}}}}\"\n\
             cursor_column = \"id\"\nkey_columns = [\"id\"]\ntable = \"{db}.items\"\n\
             batch_size = 2\ninterval = \"200ms\"\ninitial_cursor = \"0\"\n"
        ),
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(6, WAIT);
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5, 9007199254740992], "{}", logs(&w));
    assert_eq!(ev[1]["after"]["name"], "n2");
    assert_eq!(ev[1]["after"]["ok"], 1);
    assert_eq!(ev[1]["after"]["qty"], "3.00");
    for e in &ev {
        assert_eq!(e["op"], "r");
        assert_eq!(e["source"]["connector"], "query");
        assert_eq!(e["source"]["name"], name.as_str());
        assert_eq!(e["source"]["schema"], db.as_str());
        assert_eq!(e["source"]["table"], "items");
        assert_eq!(e["key"], json!({"id": e["after"]["id"]}));
    }
    let cursors: Vec<&str> = ev
        .iter()
        .map(|e| e["source"]["cursor"].as_str().expect("cursor"))
        .collect();
    assert!(cursors.windows(2).all(|c| c[0] < c[1]), "{cursors:?}");
    srv.sql(
        &db,
        "INSERT INTO items VALUES (9007199254740993, 'big1', NULL, NULL), (6, 'late', 1, 1)",
    );
    let ev = w.wait_events(7, WAIT);
    crate::common::run::wait_query_runs(&w, 3);
    kill9(&mut child);
    // Id 6 is below the cursor: query mode sees only rows past it.
    assert_eq!(
        ids(&ev),
        [1, 2, 3, 4, 5, 9007199254740992, 9007199254740993],
        "{}",
        logs(&w)
    );
    assert_eq!(
        ev[6]["after"],
        json!({"id": 9007199254740993i64, "name": "big1", "qty": null, "ok": null})
    );
    assert_eq!(w.events().len(), 7, "{}", logs(&w));
}

#[test]
fn datetime_cursor_with_ties_delivers_each_row_once() {
    let srv = MariaServer::get();
    let db = srv.fresh_db();
    // Three rows share the first timestamp, three the second.
    srv.sql(
        &db,
        "SET time_zone = '+00:00';\
         CREATE TABLE ev (id INT PRIMARY KEY, at DATETIME(6) NOT NULL, ts TIMESTAMP(3) NULL, v TEXT);\
         INSERT INTO ev VALUES \
         (1, '2024-01-01 10:00:00', '2024-01-01 10:00:00.250', 'a'), \
         (2, '2024-01-01 10:00:00', NULL, 'b'), (3, '2024-01-01 10:00:00', NULL, 'c'), \
         (4, '2024-01-01 11:00:00.5', NULL, 'd'), (5, '2024-01-01 11:00:00.5', NULL, 'e'), \
         (6, '2024-01-01 11:00:00.5', NULL, 'f')",
    );
    let w = Workdir::new();
    let name = source_name("ts");
    // `>=` on the timestamp and batches of 2: batches end inside runs of equal values.
    w.write_config(&query_toml(
        &db,
        &name,
        &format!(
            "query = \"SELECT id, at, ts, v FROM ev WHERE at >= {{{{cursor}}}}\"\n\
             cursor_column = \"at\"\nkey_columns = [\"id\"]\ntable = \"{db}.ev\"\n\
             batch_size = 2\ninterval = \"200ms\"\ninitial_cursor = \"1970-01-01\"\n"
        ),
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(6, WAIT);
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5, 6], "{}", logs(&w));
    assert_eq!(ev[3]["after"]["at"], "2024-01-01T11:00:00.500000");
    // TIMESTAMP values are read in the UTC session.
    assert_eq!(ev[0]["after"]["ts"], "2024-01-01T10:00:00.250Z");
    // Late rows at the boundary value (below and above the last key), and one after it.
    srv.sql(
        &db,
        "INSERT INTO ev VALUES (7, '2024-01-01 11:00:00.5', NULL, 'g'), \
         (8, '2024-01-01 11:00:00.5', NULL, 'h'), (9, '2024-01-01 12:00:00', NULL, 'i')",
    );
    let ev = w.wait_events(9, WAIT);
    // Several more runs pass: nothing is delivered twice.
    wait_checkpointed(&w, 9);
    crate::common::run::wait_query_runs(&w, 3);
    kill9(&mut child);
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5, 6, 7, 8, 9], "{}", logs(&w));
    assert_eq!(ids(&w.events()), ids(&ev), "{}", logs(&w));
}

#[test]
fn string_cursor_values_are_bound_not_spliced() {
    let srv = MariaServer::get();
    let db = srv.fresh_db();
    // A collation other than the server's default for utf8mb4: the bound values must take
    // the column's collation to be comparable at all.
    srv.sql(
        &db,
        "CREATE TABLE names (name VARCHAR(64) COLLATE utf8mb4_unicode_ci PRIMARY KEY, n INT);\
         INSERT INTO names VALUES ('a', 1), ('it''s', 2), ('it''s a', 3), ('o''neil', 4), \
         ('x\\\\y\"q', 5), ('y''; DROP TABLE names; --', 6), ('z', 7)",
    );
    let w = Workdir::new();
    let name = source_name("quote");
    // The initial cursor and every paging value contain quotes, a backslash or SQL; batches
    // of one row make every delivered value a bound value of the next SELECT.
    w.write_config(&query_toml(
        &db,
        &name,
        &format!(
            "query = \"SELECT name, n FROM names WHERE name > {{{{cursor}}}} AND {{{{last_sync_time}}}} >= 0\"\n\
             cursor_column = \"name\"\ntable = \"{db}.names\"\n\
             batch_size = 1\ninterval = \"200ms\"\ninitial_cursor = \"it's\"\n"
        ),
    ));
    let expected: Vec<String> = srv
        .select(
            &db,
            "SELECT name FROM names WHERE name > 'it''s' ORDER BY name",
        )
        .into_iter()
        .map(|r| r[0].clone().expect("name"))
        .collect();
    assert_eq!(expected.len(), 5, "{expected:?}");
    let mut child = spawn_run(&w, &[], &env());
    assert!(wait_until(WAIT, || w.events().len() >= 5), "{}", logs(&w));
    let ev = w.events();
    let names: Vec<&str> = ev
        .iter()
        .map(|e| e["after"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, expected, "{}", logs(&w));
    assert!(names.contains(&"x\\y\"q") && names.contains(&"y'; DROP TABLE names; --"));
    assert_eq!(ev[0]["key"], serde_json::Value::Null);
    // The next run binds {{cursor}} = 'z'; {{last_sync_time}} is now the first run's start.
    srv.sql(&db, "INSERT INTO names VALUES ('zz''top', 8), ('b', 9)");
    let ev = w.wait_events(6, WAIT);
    assert_eq!(ev[5]["after"]["name"], "zz'top", "{}", logs(&w));
    assert!(logs(&w)
        .lines()
        .any(|l| l.contains("query run starting") && !l.contains("sync=0")));
    crate::common::run::wait_query_runs(&w, 2);
    kill9(&mut child);
    assert_eq!(w.events().len(), 6);
    // The table is still there, with every row.
    assert_eq!(srv.sql(&db, "SELECT COUNT(*) FROM names").trim(), "9");
}

#[test]
fn max_rows_per_run_caps_a_run_and_restart_resumes() {
    let srv = MariaServer::get();
    let db = srv.fresh_db();
    srv.sql(
        &db,
        "CREATE TABLE big (id INT PRIMARY KEY, v TEXT);\
         INSERT INTO big SELECT seq, CONCAT('v', seq) FROM seq_1_to_10",
    );
    let w = Workdir::new();
    let name = source_name("cap");
    // One run an hour: only the first run happens while the process lives.
    w.write_config(&query_toml(
        &db,
        &name,
        &format!(
            "query = \"SELECT id, v FROM big WHERE id > {{{{cursor}}}}\"\n\
             cursor_column = \"id\"\nkey_columns = [\"id\"]\ntable = \"{db}.big\"\n\
             batch_size = 3\nmax_rows_per_run = 4\ninterval = \"1h\"\ninitial_cursor = \"0\"\n"
        ),
    ));
    let mut child = spawn_run(&w, &[], &env());
    w.wait_events(4, WAIT);
    assert!(
        wait_until(WAIT, || logs(&w).contains("query run finished")),
        "{}",
        logs(&w)
    );
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

#[test]
fn a_run_that_would_overlap_is_skipped_and_logged() {
    let srv = MariaServer::get();
    let db = srv.fresh_db();
    srv.sql(
        &db,
        "CREATE TABLE slow (id INT PRIMARY KEY, v TEXT);\
         INSERT INTO slow VALUES (1, 'v1'), (2, 'v2'), (3, 'v3'), (4, 'v4')",
    );
    let w = Workdir::new();
    let name = source_name("slow");
    // Every SELECT takes at least 0.5 s, the interval is 200 ms: each next run is due while
    // the previous one still runs.
    w.write_config(&query_toml(
        &db,
        &name,
        &format!(
            "query = \"SELECT id, v FROM slow, (SELECT SLEEP(0.5) AS s) z WHERE id > {{{{cursor}}}}\"\n\
             cursor_column = \"id\"\nkey_columns = [\"id\"]\ntable = \"{db}.slow\"\n\
             batch_size = 2\ninterval = \"200ms\"\ninitial_cursor = \"0\"\n"
        ),
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(4, WAIT);
    assert!(
        wait_until(WAIT, || logs(&w).contains("skipped the overlapping run")),
        "{}",
        logs(&w)
    );
    srv.sql(&db, "INSERT INTO slow VALUES (5, 'v5')");
    let ev2 = w.wait_events(5, WAIT);
    // A stop during a slow query ends promptly (the query's socket is shut down).
    sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    assert_eq!(ids(&ev), [1, 2, 3, 4], "{}", logs(&w));
    assert_eq!(ids(&ev2), [1, 2, 3, 4, 5], "{}", logs(&w));
    assert_eq!(ids(&w.events()), [1, 2, 3, 4, 5]);
}

#[test]
fn kill9_between_runs_continues_from_the_stored_timestamp_cursor() {
    let srv = MariaServer::get();
    let db = srv.fresh_db();
    srv.sql(
        &db,
        "SET time_zone = '+00:00';\
         CREATE TABLE k (id BIGINT PRIMARY KEY, at TIMESTAMP(3) NOT NULL, v TEXT);\
         INSERT INTO k VALUES (1, '2024-05-01 00:00:01', 'v1'), (2, '2024-05-01 00:00:01', 'v2'), \
         (3, '2024-05-01 00:00:02', 'v3'), (4, '2024-05-01 00:00:02', 'v4'), \
         (5, '2024-05-01 00:00:02', 'v5')",
    );
    let w = Workdir::new();
    let name = source_name("kill");
    w.write_config(&query_toml(
        &db,
        &name,
        &format!(
            "query = \"SELECT id, at, v FROM k WHERE at >= {{{{cursor}}}}\"\n\
             cursor_column = \"at\"\nkey_columns = [\"id\"]\ntable = \"{db}.k\"\n\
             batch_size = 2\ninterval = \"200ms\"\ninitial_cursor = \"1970-01-01 00:00:01\"\n"
        ),
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(5, WAIT);
    assert_eq!(ev[0]["after"]["at"], "2024-05-01T00:00:01.000Z");
    // 5 rows and the completed run are checkpointed before the next run starts.
    wait_checkpointed(&w, 6);
    kill9(&mut child);
    // A late row at the stored boundary value and two after it.
    srv.sql(
        &db,
        "SET time_zone = '+00:00';\
         INSERT INTO k VALUES (6, '2024-05-01 00:00:02', 'v6'), (7, '2024-05-01 00:00:03', 'v7'), \
         (8, '2024-05-01 00:00:03', 'v8')",
    );
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(8, WAIT);
    wait_checkpointed(&w, 10);
    kill9(&mut child);
    assert_eq!(ids(&ev), [1, 2, 3, 4, 5, 6, 7, 8], "{}", logs(&w));
    assert_eq!(ids(&w.events()), [1, 2, 3, 4, 5, 6, 7, 8], "{}", logs(&w));
}

#[test]
fn null_cursors_are_skipped_and_null_keys_break_ties_exactly() {
    let srv = MariaServer::get();
    let db = srv.fresh_db();
    // MySQL sorts NULL first: a NULL key is the smallest key at its cursor value, a NULL
    // cursor is never read.
    srv.sql(
        &db,
        "CREATE TABLE n (id INT PRIMARY KEY, c INT NULL, k INT NULL);\
         INSERT INTO n VALUES (1, NULL, 5), (2, 10, NULL), (3, 10, 1), (4, 10, 2), (5, 20, NULL)",
    );
    let w = Workdir::new();
    let name = source_name("null");
    // Batches of one: every row's (cursor, key) is the tie-break of the next page.
    w.write_config(&query_toml(
        &db,
        &name,
        &format!(
            "query = \"SELECT id, c, k FROM n WHERE c >= {{{{cursor}}}}\"\n\
             cursor_column = \"c\"\nkey_columns = [\"k\"]\ntable = \"{db}.n\"\n\
             batch_size = 1\ninterval = \"200ms\"\ninitial_cursor = \"0\"\n"
        ),
    ));
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(4, WAIT);
    assert_eq!(ids(&ev), [2, 3, 4, 5], "{}", logs(&w));
    srv.sql(&db, "INSERT INTO n VALUES (6, 20, 7), (7, NULL, NULL)");
    let ev = w.wait_events(5, WAIT);
    crate::common::run::wait_query_runs(&w, 3);
    kill9(&mut child);
    assert_eq!(ids(&ev), [2, 3, 4, 5, 6], "{}", logs(&w));
    assert_eq!(ids(&w.events()), [2, 3, 4, 5, 6], "{}", logs(&w));
}
