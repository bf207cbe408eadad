//! PostgreSQL streaming through the logtide binary: order, cursors, filters, TOAST, schema
//! changes and value encoding, against the private server the harness starts.

use crate::common::pg::{PgServer, TestDb, PASSWORD, PASSWORD_ENV};
use crate::common::run::{assert_cursors_increase, kill9, logs, spawn_run, wait_until, Workdir};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

/// Starts logtide on `db` with extra source TOML and waits until it streams from its slot
/// (a walsender holds it, so the initial backfill is over and changes committed from now on
/// arrive as stream events).
fn start(w: &Workdir, db: &TestDb<'_>, source: &str, extra: &str) -> std::process::Child {
    let toml = format!("{}{extra}", db.server.source_toml(db.name(), source));
    w.write_config(&toml);
    let child = spawn_run(w, &[], &env());
    let slot = format!("logtide_{source}");
    let ok = wait_until(WAIT, || db.server.slot_streaming(&slot));
    assert!(ok, "slot {slot} never became active\n{}", logs(w));
    child
}

fn source_name(tag: &str) -> String {
    format!("st{tag}_{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arrive_in_commit_order_with_increasing_cursors() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE items (id int PRIMARY KEY, name text, qty int)")
        .await;
    let w = Workdir::new();
    let mut child = start(&w, &db, &source_name("order"), "");
    db.exec("INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2)")
        .await;
    db.exec("BEGIN; UPDATE items SET qty = 10 WHERE id = 1; DELETE FROM items WHERE id = 2; INSERT INTO items VALUES (3, 'c', 3); COMMIT").await;
    db.exec("UPDATE items SET id = 4 WHERE id = 3").await;
    db.exec("TRUNCATE items").await;
    let ev = w.wait_events(7, WAIT);
    kill9(&mut child);
    let ops: Vec<&str> = ev.iter().map(|e| e["op"].as_str().expect("op")).collect();
    assert_eq!(ops, ["c", "c", "u", "d", "c", "u", "t"], "{ev:#?}");
    assert_cursors_increase(&ev);
    assert_eq!(ev[0]["after"], json!({"id": 1, "name": "a", "qty": 1}));
    assert_eq!(ev[0]["key"], json!({"id": 1}));
    assert_eq!(ev[2]["after"]["qty"], 10);
    assert_eq!(
        ev[3]["before"],
        json!({"id": 2}),
        "default replica identity sends the key of a delete"
    );
    assert_eq!(ev[3]["after"], serde_json::Value::Null);
    // A key change carries the old key in `before`.
    assert_eq!(ev[5]["before"], json!({"id": 3}));
    assert_eq!(ev[5]["key"], json!({"id": 4}));
    // Events of one transaction share the commit LSN and txid.
    assert_eq!(ev[2]["source"]["lsn"], ev[4]["source"]["lsn"]);
    assert_eq!(ev[2]["source"]["txid"], ev[3]["source"]["txid"]);
    assert_ne!(ev[0]["source"]["txid"], ev[2]["source"]["txid"]);
    for e in &ev {
        assert_eq!(e["source"]["connector"], "postgres");
        assert_eq!(e["source"]["db"], db.name());
        assert_eq!(e["source"]["table"], "items");
        assert!(e["source"]["ts_ms"].as_i64().expect("commit ts") > 1_600_000_000_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_drop_tables_and_columns() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE users (id int PRIMARY KEY, email text, password_hash text); CREATE TABLE audit_log (id int PRIMARY KEY, msg text); CREATE TABLE orders (id int PRIMARY KEY, total numeric)").await;
    let w = Workdir::new();
    let extra = "tables = { include = [\"public.*\"], exclude = [\"public.audit_*\"] }\n[sources.columns]\n\"public.users\" = { exclude = [\"password_hash\"] }\n";
    let mut child = start(&w, &db, &source_name("filter"), extra);
    db.exec("INSERT INTO audit_log VALUES (1, 'x'); INSERT INTO users VALUES (1, 'a@x.io', 'secret'); INSERT INTO orders VALUES (1, 9.99); UPDATE users SET password_hash = 'new' WHERE id = 1").await;
    let ev = w.wait_events(3, WAIT);
    // Give a late, wrongly delivered audit event a chance to show up: wait for a marker.
    db.exec("INSERT INTO orders VALUES (2, 1)").await;
    let ev2 = w.wait_events(4, WAIT);
    kill9(&mut child);
    assert!(
        ev2.iter().all(|e| e["source"]["table"] != "audit_log"),
        "{ev2:#?}"
    );
    assert_eq!(
        ev[0]["after"],
        json!({"id": 1, "email": "a@x.io"}),
        "{ev2:#?}\n{}",
        logs(&w)
    );
    let text = std::fs::read_to_string(w.out()).expect("out");
    assert!(
        !text.contains("password_hash") && !text.contains("secret"),
        "{text}"
    );
    assert_eq!(ev[1]["after"]["total"], "9.99");
    assert_eq!(ev2.len(), 4, "{ev2:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluding_a_key_column_is_an_error() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE users (id int PRIMARY KEY, email text)")
        .await;
    let w = Workdir::new();
    let toml = format!(
        "{}backfill = \"never\"\n[sources.columns]\n\"public.users\" = {{ exclude = [\"id\"] }}\n",
        db.server.source_toml(db.name(), &source_name("keyex"))
    );
    w.write_config(&toml);
    let mut child = spawn_run(&w, &[], &env());
    let slot = format!("logtide_{}", source_name("keyex"));
    // Not "the slot exists": a slot still being created shows there before its consistent
    // point, and a row committed then is not streamed (seen once in CI under load: no exit).
    assert!(wait_until(WAIT, || db.server.slot_streaming(&slot)));
    db.exec("INSERT INTO users VALUES (1, 'a')").await;
    let mut status = None;
    let exited = wait_until(WAIT, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(exited, "logtide did not exit\n{}", logs(&w));
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{}", logs(&w));
    let log = logs(&w);
    assert!(
        log.contains("key column") && log.contains("\"id\""),
        "{log}"
    );
    assert!(w.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_is_absent_not_null() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE docs (id int PRIMARY KEY, title text, body text); CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text); ALTER TABLE docs_full REPLICA IDENTITY FULL").await;
    let w = Workdir::new();
    let mut child = start(&w, &db, &source_name("toast"), "");
    // ~64 KB of incompressible text is stored out of line (TOAST).
    let big = "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 2000) g";
    db.exec(&format!(
        "INSERT INTO docs VALUES (1, 't', ({big})); INSERT INTO docs_full VALUES (1, 't', ({big}))"
    ))
    .await;
    db.exec(
        "UPDATE docs SET title = 'u' WHERE id = 1; UPDATE docs_full SET title = 'u' WHERE id = 1",
    )
    .await;
    let ev = w.wait_events(4, WAIT);
    kill9(&mut child);
    let body = db.text_rows("SELECT body FROM docs").await[0][0]
        .clone()
        .expect("body");
    assert_eq!(ev[0]["after"]["body"], body.as_str());
    let upd = ev
        .iter()
        .find(|e| e["op"] == "u" && e["source"]["table"] == "docs")
        .expect("docs update");
    assert_eq!(upd["after"]["title"], "u");
    assert!(
        upd["after"].get("body").is_none(),
        "unchanged TOAST must be absent: {upd}"
    );
    assert_eq!(upd["unchanged"], json!(["body"]));
    let full = ev
        .iter()
        .find(|e| e["op"] == "u" && e["source"]["table"] == "docs_full")
        .expect("full update");
    assert_eq!(
        full["before"]["body"],
        body.as_str(),
        "REPLICA IDENTITY FULL carries the old value"
    );
    assert_eq!(full["before"]["title"], "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_mid_stream_keep_names_right() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE s (id int PRIMARY KEY, a int, b text)")
        .await;
    let w = Workdir::new();
    let mut child = start(&w, &db, &source_name("ddl"), "");
    db.exec("INSERT INTO s VALUES (1, 1, 'x')").await;
    db.exec(
        "ALTER TABLE s ADD COLUMN c boolean DEFAULT true; INSERT INTO s VALUES (2, 2, 'y', false)",
    )
    .await;
    db.exec("ALTER TABLE s RENAME COLUMN b TO bee; INSERT INTO s VALUES (3, 3, 'z', true)")
        .await;
    db.exec("ALTER TABLE s DROP COLUMN a; INSERT INTO s VALUES (4, 'w', NULL)")
        .await;
    db.exec("ALTER TABLE s ALTER COLUMN bee TYPE int USING length(bee); INSERT INTO s VALUES (5, 42, true)").await;
    let ev = w.wait_events(5, WAIT);
    kill9(&mut child);
    assert_eq!(ev[0]["after"], json!({"id": 1, "a": 1, "b": "x"}));
    assert_eq!(
        ev[1]["after"],
        json!({"id": 2, "a": 2, "b": "y", "c": false})
    );
    assert_eq!(
        ev[2]["after"],
        json!({"id": 3, "a": 3, "bee": "z", "c": true})
    );
    assert_eq!(ev[3]["after"], json!({"id": 4, "bee": "w", "c": null}));
    assert_eq!(ev[4]["after"], json!({"id": 5, "bee": 42, "c": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_primary_key() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE nokey (a int, b text); CREATE TABLE uniq (a int NOT NULL, b text); CREATE UNIQUE INDEX uniq_a ON uniq (a); ALTER TABLE uniq REPLICA IDENTITY USING INDEX uniq_a; CREATE TABLE fullid (a int, b text); ALTER TABLE fullid REPLICA IDENTITY FULL").await;
    let w = Workdir::new();
    let mut child = start(&w, &db, &source_name("nokey"), "");
    db.exec("INSERT INTO nokey VALUES (1, 'x'); INSERT INTO uniq VALUES (1, 'x'); UPDATE uniq SET b = 'y'; INSERT INTO fullid VALUES (1, 'x'); DELETE FROM fullid").await;
    let ev = w.wait_events(5, WAIT);
    kill9(&mut child);
    assert_eq!(
        ev[0]["key"],
        serde_json::Value::Null,
        "no primary key and no identity index: key is null"
    );
    assert_eq!(
        ev[1]["key"],
        json!({"a": 1}),
        "replica identity index columns form the key"
    );
    assert_eq!(ev[2]["key"], json!({"a": 1}));
    assert_eq!(ev[4]["op"], "d");
    assert_eq!(
        ev[4]["before"],
        json!({"a": 1, "b": "x"}),
        "REPLICA IDENTITY FULL sends the whole old row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_encoded_losslessly() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TYPE mood AS ENUM ('sad', 'happy'); CREATE DOMAIN posint AS int CHECK (VALUE > 0);
        CREATE TABLE v (id int PRIMARY KEY, b bool, i2 int2, i8 int8, n numeric, nn numeric, f4 float4, f8 float8, fi float8,
        t text, vc varchar(5), bp char(3), by bytea, u uuid, j json, jb jsonb, d date, tm time, ttz timetz, ts timestamp,
        tstz timestamptz, iv interval, arr int[], arr2 text[][], m mood, dom posint, inet_v inet)").await;
    let w = Workdir::new();
    let mut child = start(&w, &db, &source_name("values"), "");
    db.exec("SET TIME ZONE 'Asia/Kolkata'; INSERT INTO v VALUES (1, true, -32768, 9223372036854775807, 12345678901234567890.000000001, 'NaN', 1.1, 0.1, '-Infinity',
        E'tab\\there \"q\" é😀', 'abc', 'ab', '\\x00ff10', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{\"a\": [1, 2.5]}', '{\"b\": null}',
        '2024-02-29', '23:59:59.999999', '10:00:00+05:30', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+05:30',
        '1 year 2 mons 3 days 04:05:06.5', ARRAY[1, NULL, 3], ARRAY[['a', 'b'], ['c', NULL]], 'happy', 7, '10.0.0.1/8')").await;
    let ev = w.wait_events(1, WAIT);
    kill9(&mut child);
    let a = &ev[0]["after"];
    let expect = json!({
        "id": 1, "b": true, "i2": -32768, "i8": 9223372036854775807i64, "n": "12345678901234567890.000000001", "nn": "NaN",
        "f4": 1.1, "f8": 0.1, "fi": "-Infinity", "t": "tab\there \"q\" é😀", "vc": "abc", "bp": "ab ", "by": "AP8Q",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "j": {"a": [1, 2.5]}, "jb": {"b": null}, "d": "2024-02-29",
        "tm": "23:59:59.999999", "ttz": "10:00:00+05:30", "ts": "2024-01-02T03:04:05.123456",
        "tstz": "2024-01-01T21:34:05.123456Z", "iv": "P1Y2M3DT4H5M6.5S", "arr": [1, null, 3],
        "arr2": [["a", "b"], ["c", null]], "m": "happy", "dom": 7, "inet_v": "10.0.0.1/8"
    });
    for (k, v) in expect.as_object().expect("object") {
        assert_eq!(&a[k], v, "column {k}: {a}");
    }
}
