//! Initial backfill against a private MariaDB, through the `logtide` binary: consistency
//! with concurrent writes, composite / binary keys and tables without a key, every row
//! exactly once, and backfilled values identical to streamed ones.

use crate::common::mariadb::MariaServer;
use crate::common::run::{
    assert_cursors_increase, consumer_text_rows, kill9, logs, run_killed_after, spawn_run,
    wait_marker, wait_until, Workdir,
};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn config(server: &MariaServer, name: &str, db: &str, chunk: usize) -> String {
    format!(
        "{}backfill_chunk_rows = {chunk}\n",
        server.source_toml(name, db)
    )
}

#[test]
fn backfill_with_concurrent_writes_converges_to_the_table() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), n INT);
         INSERT INTO t SELECT seq, MD5(seq), 0 FROM seq_1_to_20000",
    );
    let w = Workdir::new();
    w.write_config(&config(server, "bfc", &db, 500));
    let mut child = spawn_run(&w, &[], &[]);
    // Concurrent inserts, updates (also of the key) and deletes while the backfill runs.
    w.wait_events(1, WAIT);
    for round in 0..30 {
        let base = 100_000 + round * 100;
        server.sql(
            &db,
            &format!(
                "INSERT INTO t SELECT seq, 'new', {round} FROM seq_{base}_to_{};
                 UPDATE t SET n = n + 1, v = 'upd' WHERE id % 97 = {round};
                 DELETE FROM t WHERE id % 101 = {round};
                 UPDATE t SET id = id + 1000000 WHERE id = {round} * 600 + 7",
                base + 49
            ),
        );
    }
    let delivered_during_writes = w.events().len();
    eprintln!("backfill events delivered when the writes ended: {delivered_during_writes}");
    server.sql(&db, "INSERT INTO t VALUES (-1, 'marker', 0)");
    let ev = wait_marker(&w, "t", -1, WAIT);
    kill9(&mut child);
    let reads = ev.iter().filter(|e| e["op"] == "r").count();
    // Deletes of rows not read yet (about 30% of the table) shrink the backfill.
    assert!(reads >= 12_000, "backfill rows missing: {reads}");
    let want = server.rows_by_key(&db, "SELECT id, v, n FROM t");
    let got = consumer_text_rows(&ev, &format!("{db}.t"), &["id", "v", "n"]);
    assert_eq!(got.len(), want.len(), "row count differs\n{}", logs(&w));
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

#[test]
fn composite_and_binary_keys_and_tables_without_a_key() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE c (a INT, b VARCHAR(20), v INT, PRIMARY KEY (a, b));
         INSERT INTO c SELECT seq % 7, CONCAT('k', seq DIV 7), seq FROM seq_1_to_3000;
         INSERT INTO c VALUES (0, 'it''s', -1), (0, 'back\\\\slash', -2), (0, 'Äpfel', -3), (0, 'a', -4), (0, 'B', -5);
         CREATE TABLE bk (k VARBINARY(8) PRIMARY KEY, v INT);
         INSERT INTO bk SELECT UNHEX(LPAD(HEX(seq * 7919 % 100003), 8, '0')), seq FROM seq_1_to_1000;
         INSERT INTO bk VALUES (X'00', -1), (X'FF27', -2);
         CREATE TABLE nk (x INT, y VARCHAR(5));
         INSERT INTO nk SELECT seq, 'y' FROM seq_1_to_1500",
    );
    let w = Workdir::new();
    w.write_config(&config(server, "bfck", &db, 400));
    let mut child = spawn_run(&w, &[], &[]);
    let total = 3005 + 1002 + 1500;
    w.wait_events(total, WAIT);
    // A streamed marker after the backfill: everything before it has arrived, so the
    // backfill events can be counted exactly (no row twice).
    server.sql(
        &db,
        "CREATE TABLE mark (id INT PRIMARY KEY); INSERT INTO mark VALUES (1)",
    );
    let all = wait_marker(&w, "mark", 1, WAIT);
    kill9(&mut child);
    let ev: Vec<serde_json::Value> = all.into_iter().filter(|e| e["op"] == "r").collect();
    assert_eq!(ev.len(), total, "more events than rows");
    let c: Vec<&serde_json::Value> = ev.iter().filter(|e| e["source"]["table"] == "c").collect();
    assert_eq!(c.len(), 3005);
    let keys: BTreeSet<String> = c.iter().map(|e| e["key"].to_string()).collect();
    assert_eq!(keys.len(), 3005, "each composite key exactly once");
    assert!(c
        .iter()
        .all(|e| e["key"].as_object().is_some_and(|k| k.len() == 2)));
    let vs: BTreeSet<i64> = c
        .iter()
        .map(|e| e["after"]["v"].as_i64().expect("v"))
        .collect();
    assert!(vs.contains(&-2) && vs.contains(&-3) && vs.contains(&-5));
    let bk: Vec<&serde_json::Value> = ev.iter().filter(|e| e["source"]["table"] == "bk").collect();
    let bvs: BTreeSet<i64> = bk
        .iter()
        .map(|e| e["after"]["v"].as_i64().expect("v"))
        .collect();
    assert_eq!(bk.len(), 1002);
    assert_eq!(bvs.len(), 1002, "each binary key exactly once");
    let nk: Vec<&serde_json::Value> = ev.iter().filter(|e| e["source"]["table"] == "nk").collect();
    assert_eq!(nk.len(), 1500);
    assert!(nk.iter().all(|e| e["key"].is_null() && e["op"] == "r"));
    assert!(
        logs(&w).contains("no primary key"),
        "a warning names the keyless table"
    );
    // Cursors name rows: one per row. They follow the byte order of the key, which for
    // the text keys of `c` is not the collation's read order; integer, binary and keyless
    // rows come in cursor order, and the tables in the order of their names.
    let cursors: BTreeSet<&str> = ev
        .iter()
        .map(|e| e["source"]["cursor"].as_str().expect("cursor"))
        .collect();
    assert_eq!(cursors.len(), ev.len(), "one cursor per row");
    let ordered: Vec<serde_json::Value> = ev
        .iter()
        .filter(|e| e["source"]["table"] != "c")
        .cloned()
        .collect();
    assert_cursors_increase(&ordered);
}

#[test]
fn every_row_exactly_once_and_the_run_is_not_repeated() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id BIGINT UNSIGNED PRIMARY KEY, v VARCHAR(40));
         INSERT INTO t SELECT seq, CONCAT('row ', seq) FROM seq_1_to_20000;
         INSERT INTO t VALUES (18446744073709551615, 'max'), (18446744073709551614, 'max-1')",
    );
    let w = Workdir::new();
    w.write_config(&config(server, "bfx", &db, 1500));
    let mut child = spawn_run(&w, &[], &[]);
    w.wait_events(20_002, WAIT);
    // A streamed marker: everything before it has arrived.
    server.sql(&db, "INSERT INTO t VALUES (1000000000, 'marker')");
    let all = wait_marker(&w, "t", 1_000_000_000, WAIT);
    kill9(&mut child);
    assert_eq!(
        all.len(),
        20_003,
        "exactly one event per row, then the marker"
    );
    let ev: Vec<serde_json::Value> = all.into_iter().filter(|e| e["op"] == "r").collect();
    assert_eq!(ev.len(), 20_002, "exactly one event per row");
    let ids: BTreeSet<String> = ev.iter().map(|e| e["after"]["id"].to_string()).collect();
    assert_eq!(ids.len(), 20_002, "every row once");
    assert!(ids.contains("18446744073709551615"));
    assert_cursors_increase(&ev);
    // A finished backfill is not repeated: the restart only streams.
    let mut child = spawn_run(&w, &[], &[]);
    server.sql(&db, "INSERT INTO t VALUES (0, 'marker')");
    assert!(
        wait_until(WAIT, || w
            .events()
            .iter()
            .any(|e| e["op"] == "c" && e["after"]["id"] == 0)),
        "marker never arrived\n{}",
        logs(&w)
    );
    kill9(&mut child);
    let ev = w.events();
    assert_eq!(ev.iter().filter(|e| e["op"] == "r").count(), 20_002);
    assert_eq!(ev.len(), 20_004, "{}", logs(&w));
}

#[test]
fn backfilled_values_equal_streamed_values() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    let values = "1, 200, -9000000000, 1234.50, 1.1, 2.25, b'1010101010', '2024-02-29', '-12:34:56.789', \
                  '2024-01-02 03:04:05.123456', '2023-11-14 22:13:20.500', 'ab', 'it''s \\\\ ü', 'long text', \
                  X'0102', X'00FF', X'DEADBEEF', 'm2', 'x,z', '{\"a\": [1, 2]}', 2024, NULL";
    server.sql(
        &db,
        &format!(
            "CREATE TABLE v (id INT PRIMARY KEY, ti TINYINT UNSIGNED, bi BIGINT, de DECIMAL(10,2), fl FLOAT, \
             do DOUBLE, bt BIT(10), da DATE, tm TIME(3), dt DATETIME(6), ts TIMESTAMP(3) NULL, ch CHAR(5), \
             vc VARCHAR(20), tx TEXT, bn BINARY(4), vb VARBINARY(10), bl BLOB, en ENUM('m1','m2'), \
             st SET('x','y','z'), js JSON, yr YEAR, nu INT NULL);
             SET time_zone = '+00:00'; INSERT INTO v VALUES ({values})"
        ),
    );
    let w = Workdir::new();
    w.write_config(&config(server, "bfv", &db, 10));
    let mut child = spawn_run(&w, &[], &[]);
    w.wait_events(1, WAIT);
    let second = values.replacen('1', "2", 1);
    server.sql(
        &db,
        &format!("SET time_zone = '+00:00'; INSERT INTO v VALUES ({second})"),
    );
    let ev = wait_marker(&w, "v", 2, WAIT);
    kill9(&mut child);
    let r = ev.iter().find(|e| e["op"] == "r").expect("backfilled row");
    let c = ev.iter().find(|e| e["op"] == "c").expect("streamed row");
    let mut a = r["after"].as_object().expect("after").clone();
    let mut b = c["after"].as_object().expect("after").clone();
    assert_eq!(a.remove("id"), Some(serde_json::json!(1)));
    assert_eq!(b.remove("id"), Some(serde_json::json!(2)));
    assert_eq!(a, b, "backfilled vs streamed values");
    assert_eq!(r["source"]["schema"], c["source"]["schema"]);
    assert_eq!(r["source"]["db"], c["source"]["db"]);
}

/// Columns a DBA adds that `SELECT *` or the table map treat specially: INVISIBLE (left
/// out of `SELECT *`), VIRTUAL and PERSISTENT generated columns, COMPRESSED text. A
/// backfilled row and a streamed row carry the same columns with the same values, and
/// every one of them is there.
#[test]
fn invisible_generated_and_compressed_columns_backfilled_as_streamed() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE g (id INT PRIMARY KEY, v VARCHAR(20), iv INT INVISIBLE DEFAULT 7, \
         gv INT AS (id * 2) VIRTUAL, gs INT AS (id * 3) PERSISTENT, cz TEXT COMPRESSED);
         INSERT INTO g (id, v, iv, cz) VALUES (1, 'a', 11, REPEAT('z', 300))",
    );
    let w = Workdir::new();
    w.write_config(&config(server, "bfg", &db, 10));
    let mut child = spawn_run(&w, &[], &[]);
    w.wait_events(1, WAIT);
    server.sql(
        &db,
        "INSERT INTO g (id, v, iv, cz) VALUES (2, 'a', 11, REPEAT('z', 300))",
    );
    let ev = wait_marker(&w, "g", 2, WAIT);
    kill9(&mut child);
    let r = ev.iter().find(|e| e["op"] == "r").expect("backfilled row");
    let c = ev.iter().find(|e| e["op"] == "c").expect("streamed row");
    let mut a = r["after"].as_object().expect("after").clone();
    let mut b = c["after"].as_object().expect("after").clone();
    assert_eq!(a.get("iv"), Some(&serde_json::json!(11)), "{r}");
    assert_eq!(a.get("gs"), Some(&serde_json::json!(3)), "{r}");
    assert_eq!(b.get("gs"), Some(&serde_json::json!(6)), "{c}");
    assert_eq!(
        a.get("cz"),
        Some(&serde_json::json!("z".repeat(300))),
        "{r}"
    );
    for (row, m) in [(1, &mut a), (2, &mut b)] {
        assert_eq!(m.remove("id"), Some(serde_json::json!(row)));
        m.remove("gs");
        m.remove("gv");
    }
    assert_eq!(a, b, "backfilled vs streamed values\n{r}\n{c}");
    // MariaDB logs a VIRTUAL column's value in a FULL row image; the backfill selects it.
    assert_eq!(
        (r["after"].get("gv"), c["after"].get("gv")),
        (Some(&serde_json::json!(2)), Some(&serde_json::json!(4))),
        "a VIRTUAL column differs between backfill and stream\n{r}\n{c}"
    );
}

#[test]
fn kill9_mid_backfill_resumes_from_the_last_chunk() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200));
         INSERT INTO t SELECT seq, REPEAT(MD5(seq), 4) FROM seq_1_to_20000",
    );
    let w = Workdir::new();
    let chunk = 200;
    w.write_config(&config(server, "bfk", &db, chunk));
    // Stopped mid-backfill deterministically: the output goes through a FIFO the test
    // stops reading after 3,000 lines.
    let first = run_killed_after(&w, &[], 3_000).len();
    assert!(
        first < 20_000,
        "the first run was not stopped mid-backfill ({first} rows)"
    );
    let mut child = spawn_run(&w, &[], &[]);
    server.sql(&db, "INSERT INTO t VALUES (-1, 'marker')");
    let ev = wait_marker(&w, "t", -1, WAIT);
    kill9(&mut child);
    let reads: Vec<i64> = ev
        .iter()
        .filter(|e| e["op"] == "r")
        .map(|e| e["after"]["id"].as_i64().expect("id"))
        .collect();
    let distinct: BTreeSet<i64> = reads.iter().copied().collect();
    assert_eq!(distinct.len(), 20_000, "every row backfilled");
    let reread = reads.len() - distinct.len();
    // Only the chunks delivered but not yet recorded at the kill are read again.
    assert!(
        reread <= 2 * chunk,
        "re-read {reread} rows: the backfill restarted from zero?\n{}",
        logs(&w)
    );
    assert!(logs(&w).contains("resuming interrupted backfill"));
}

/// Odd identifiers (a backtick, a dot, a space, upper case and non-ASCII in the table name; a
/// dot, a space and a double quote in column names) through the exact-name table filter, a
/// column filter, the backfill and the stream, with a key update and a delete: the table a
/// consumer rebuilds equals the database's, and the excluded column never appears.
#[test]
fn odd_identifiers_through_filter_backfill_and_stream() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    // MariaDB identifiers are utf8mb3: no emoji, but other non-ASCII characters.
    let table = "Odd `Tab`.le ✓é";
    let sql_table = "`Odd ``Tab``.le ✓é`";
    server.sql(
        &db,
        &format!(
            "CREATE TABLE {sql_table} (`Id` INT PRIMARY KEY, `we ird.col` VARCHAR(20), `q\"uote` INT);
             INSERT INTO {sql_table} VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)"
        ),
    );
    let qualified = format!("{db}.{table}");
    let source = server.source_toml("odd", &db).replace(
        &format!("tables = {{ include = [\"{db}.*\"] }}"),
        &format!("tables = {{ include = [{qualified:?}] }}"),
    );
    let w = Workdir::new();
    w.write_config(&format!(
        "{source}columns = {{ {qualified:?} = {{ exclude = [\"q\\\"uote\"] }} }}\n"
    ));
    let mut child = spawn_run(&w, &[], &[]);
    w.wait_events(3, WAIT);
    server.sql(
        &db,
        &format!(
            "INSERT INTO {sql_table} VALUES (4, 'd', 4);
             UPDATE {sql_table} SET `Id` = 20, `we ird.col` = 'b2' WHERE `Id` = 2;
             DELETE FROM {sql_table} WHERE `Id` = 3"
        ),
    );
    let want = server.rows_by_key(&db, &format!("SELECT `Id`, `we ird.col` FROM {sql_table}"));
    let mut got = Default::default();
    let ok = wait_until(WAIT, || {
        got = consumer_text_rows(&w.events(), &qualified, &["Id", "we ird.col"]);
        got == want
    });
    kill9(&mut child);
    assert!(ok, "rebuilt {got:?}\nwant {want:?}\n{}", logs(&w));
    let ev = w.events();
    assert!(ev.iter().all(|e| e["source"]["table"] == table), "{ev:?}");
    assert!(
        ev.iter()
            .all(|e| e["after"].get("q\"uote").is_none() && e["before"].get("q\"uote").is_none()),
        "the excluded column leaked: {ev:?}"
    );
}
