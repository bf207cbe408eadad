//! MySQL 8.0 / 8.4 / 9.x on real server bytes: logtide runs unchanged against the MySQL
//! protocol test server (`tests/common/mysql_proto`), which answers its statements per
//! flavour and streams binary log files written by real MySQL servers
//! (`../shared/fixtures/mysql-binlogs`). End to end: `logtide run` → file sink.

use crate::common::mysql_proto::auth::{AuthStats, NATIVE};
use crate::common::mysql_proto::binlog::Fixture;
use crate::common::mysql_proto::flavour::Flavour;
use crate::common::mysql_proto::{Dump, ProtoServer, PASSWORD, PASSWORD_ENV};
use crate::common::run::{logs, run_to_end, spawn_run, wait_exit, Workdir};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const ENUM_SET: &str = "mysql-enum-string-set.000001";
/// The server uuid of the GTIDs in [`ENUM_SET`].
const ENUM_SET_UUID: &str = "93e95066-a2f4-11ec-9b69-9657f0ae95e2";

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

/// A workdir whose config has one source `my` on `server` capturing `filter`.
fn workdir(server: &ProtoServer, filter: &str) -> Workdir {
    let w = Workdir::new();
    w.write_config(&format!(
        "{}\n[pipeline]\nreconnect_initial_backoff = \"100ms\"\n\n[admin]\nenabled = false\n",
        server.source_toml("my", &format!("tables = {{ include = [\"{filter}\"] }}"))
    ));
    w
}

/// `logtide run --max-events n` to its end; the events.
fn run_n(w: &Workdir, n: usize) -> Vec<Value> {
    let mut child = spawn_run(w, &["--max-events", &n.to_string()], &env());
    let st = wait_exit(&mut child, WAIT);
    assert!(st.success(), "logtide failed ({st}): {}", logs(w));
    w.events()
}

/// `logtide run --until <end of the fixture's last transaction>`; the events.
fn run_whole_file(server: &ProtoServer, filter: &str) -> (Workdir, Vec<Value>) {
    let fx = server.fixture();
    let end = fx
        .events
        .iter()
        .filter(|e| e.type_code == 16 || e.type_code == 2)
        .map(|e| e.log_pos)
        .max()
        .expect("a commit in the fixture");
    let w = workdir(server, filter);
    let until = format!("binlog.000001:{end}");
    let mut child = spawn_run(&w, &["--until", &until], &env());
    let st = wait_exit(&mut child, WAIT);
    assert!(st.success(), "logtide failed ({st}): {}", logs(&w));
    let ev = w.events();
    (w, ev)
}

fn run_events(server: &ProtoServer, filter: &str, n: usize) -> (Workdir, Vec<Value>) {
    let w = workdir(server, filter);
    let ev = run_n(&w, n);
    (w, ev)
}

fn count(c: &std::sync::atomic::AtomicUsize) -> usize {
    AuthStats::get(c)
}

fn digits(n: usize) -> String {
    "0123456789".repeat(n / 10) + &"0123456789"[..n % 10]
}

/// The rows of `mysql-enum-string-set.000001`: `t(f1 CHAR(128), f2 VARCHAR(300),
/// f3 ENUM('var1','variant2','foo'), f4 SET('one','two','three','four'), f5 TEXT)`, one
/// insert, one update of it, one delete, each its own GTID transaction.
fn assert_enum_set_rows(ev: &[Value]) {
    assert_eq!(ev.len(), 3, "{ev:#?}");
    let ops: Vec<&str> = ev.iter().map(|e| e["op"].as_str().unwrap_or("")).collect();
    assert_eq!(ops, ["c", "u", "d"]);
    let first = &ev[0]["after"];
    assert_eq!(first["f1"], json!(digits(100)));
    let f2 = first["f2"].as_str().expect("f2 text");
    // 298 characters as stored (length prefix 0x012A at file offset 1211).
    let fx = Fixture::load(ENUM_SET);
    assert_eq!(f2.as_bytes(), &fx.bytes[1213..1213 + 298]);
    assert_eq!(first["f3"], json!("var1"));
    assert_eq!(first["f4"], json!(["one", "three"]));
    assert_eq!(first["f5"], json!("0123456789"));
    assert_eq!(
        ev[1]["before"], ev[0]["after"],
        "the update's before image is the insert"
    );
    let second = &ev[1]["after"];
    assert_eq!(second["f1"], json!("field1"));
    assert_eq!(second["f2"], json!("field_2"));
    assert_eq!(second["f3"], json!("variant2"));
    assert_eq!(second["f4"], json!(["two", "four"]));
    assert_eq!(second["f5"], json!(f2));
    assert_eq!(
        ev[2]["before"], ev[1]["after"],
        "the delete removes the updated row"
    );
    for (e, gno) in ev.iter().zip([3, 4, 5]) {
        assert_eq!(e["source"]["gtid"], json!(format!("{ENUM_SET_UUID}:{gno}")));
        assert_eq!(e["source"]["file"], json!("binlog.000001"));
        assert_eq!(e["key"], Value::Null, "the table has no primary key");
    }
    let pos: Vec<u64> = ev
        .iter()
        .map(|e| e["source"]["pos"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        pos,
        [791, 1560, 2659],
        "each event at its GTID event's offset"
    );
}

#[test]
fn enum_string_set_fixture_end_to_end_on_80() {
    let server = ProtoServer::builder(Flavour::Mysql80, ENUM_SET).start();
    let (_w, ev) = run_events(&server, "mysql.*", 3);
    assert_enum_set_rows(&ev);
    assert!(server.unknown().is_empty(), "{:?}", server.unknown());
}

/// A run that ends (here at `--max-events`) ends its dump connection on the server with
/// `KILL CONNECTION <its id>` from the metadata connection: MySQL keeps a dump thread until
/// a write to the gone client fails, and a restart with the same server id waits for the
/// server to kill it.
#[test]
fn a_finished_run_kills_its_own_dump_connection() {
    for flavour in [Flavour::Mysql80, Flavour::Mysql9] {
        let server = ProtoServer::builder(flavour, ENUM_SET).start();
        let (_w, ev) = run_events(&server, "mysql.*", 3);
        assert_enum_set_rows(&ev);
        let dumps = server.dump_ids();
        assert_eq!(dumps.len(), 1, "{flavour:?}: one dump connection");
        assert_eq!(
            server.killed(),
            dumps,
            "{flavour:?}: the dump connection was ended"
        );
        assert!(
            server.unknown().is_empty(),
            "{flavour:?}: {:?}",
            server.unknown()
        );
    }
}

/// A fresh start reads the binlog end with the statement the server has: `SHOW MASTER
/// STATUS` on 8.0, `SHOW BINARY LOG STATUS` on 8.4 and 9.x (where the old one is gone).
#[test]
fn fresh_start_on_every_flavour_reads_the_binlog_end_it_has() {
    for flavour in [Flavour::Mysql80, Flavour::Mysql84, Flavour::Mysql9] {
        let server = ProtoServer::builder(flavour, ENUM_SET).start();
        let (_w, ev) = run_events(&server, "mysql.*", 3);
        assert_enum_set_rows(&ev);
        assert!(
            server.unknown().is_empty(),
            "{flavour:?}: {:?}",
            server.unknown()
        );
        let q = server.queries();
        let status: Vec<&String> = q.iter().filter(|s| s.contains("STATUS")).collect();
        if flavour == Flavour::Mysql80 {
            assert!(q.iter().any(|s| s == "SHOW MASTER STATUS"), "{q:?}");
        } else {
            assert!(
                !q.iter().any(|s| s == "SHOW MASTER STATUS"),
                "{flavour:?}: {q:?}"
            );
            assert!(
                status.iter().all(|s| *s == "SHOW BINARY LOG STATUS"),
                "{status:?}"
            );
        }
        assert_eq!(
            server.dumps(),
            [Dump::Position {
                file: "binlog.000001".into(),
                pos: server.fixture().head_end()
            }],
            "{flavour:?}"
        );
    }
}

/// `logtide check` on 8.4 / 9.x: settings, grants and lag read without the removed
/// statement.
#[test]
fn check_passes_on_84_and_9() {
    for flavour in [Flavour::Mysql84, Flavour::Mysql9] {
        let server = ProtoServer::builder(flavour, ENUM_SET).start();
        let w = workdir(&server, "mysql.*");
        let cfg = w.config();
        let out = run_to_end(&["check", "--config", cfg.to_str().expect("path")], &env());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{flavour:?}: {text}");
        assert!(
            !server.queries().iter().any(|s| s == "SHOW MASTER STATUS"),
            "{:?}",
            server.queries()
        );
    }
}

/// `caching_sha2_password` without a cached entry: full authentication with the RSA
/// public-key exchange on a plain TCP connection, for every connection of a run.
#[test]
fn caching_sha2_full_authentication_with_rsa_over_plain_tcp() {
    let server = ProtoServer::builder(Flavour::Mysql84, ENUM_SET).start();
    let (_w, ev) = run_events(&server, "mysql.*", 3);
    assert_eq!(ev.len(), 3);
    let st = server.stats();
    assert!(count(&st.full_rsa) >= 1, "{st:?}");
    assert_eq!(count(&st.refused), 0, "{st:?}");
    assert_eq!(count(&st.native), 0, "{st:?}");
}

/// `caching_sha2_password` full authentication over TLS (`ssl_mode = "verify_identity"`
/// against the test CA): the password goes inside TLS, no RSA exchange; every connection of
/// the run is TLS; a second run finds the user cached and takes the fast path, still over
/// TLS.
#[test]
fn caching_sha2_full_authentication_over_tls() {
    let server = ProtoServer::builder(Flavour::Mysql84, ENUM_SET)
        .tls()
        .start();
    let tls_run = || {
        let w = Workdir::new();
        let source = server
            .source_toml(
                "my",
                &format!(
                    "ssl_ca = \"{}\"\ntables = {{ include = [\"mysql.*\"] }}",
                    server.ca().display()
                ),
            )
            .replace("ssl_mode = \"disabled\"", "ssl_mode = \"verify_identity\"");
        w.write_config(&format!("{source}\n[admin]\nenabled = false\n"));
        run_n(&w, 3)
    };
    assert_enum_set_rows(&tls_run());
    let st = server.stats();
    assert!(count(&st.full_tls) >= 1, "{st:?}");
    assert_eq!(count(&st.full_rsa), 0, "no RSA exchange inside TLS: {st:?}");
    assert_eq!(count(&st.refused), 0, "{st:?}");
    let logins = count(&st.full_tls) + count(&st.fast);
    assert_eq!(count(&st.tls), logins, "every login over TLS: {st:?}");
    let full = count(&st.full_tls);
    assert_enum_set_rows(&tls_run());
    assert_eq!(
        count(&st.full_tls),
        full,
        "a cached user: fast path: {st:?}"
    );
    assert!(count(&st.fast) >= 2, "{st:?}");
    assert_eq!(
        count(&st.tls),
        count(&st.full_tls) + count(&st.fast),
        "{st:?}"
    );
    assert_eq!(count(&st.scramble_bad), 0, "{st:?}");
}

/// `caching_sha2_password` fast path: once a user authenticated fully, later connections
/// prove the password with the scramble alone (no RSA exchange). The logins a run starts
/// together before any finished (the binlog reader's and the lag check's) each need the
/// full exchange, as on a real server; a second run finds the user cached and never does.
#[test]
fn caching_sha2_fast_path_after_the_first_login() {
    let server = ProtoServer::builder(Flavour::Mysql80, ENUM_SET).start();
    let (_w, ev) = run_events(&server, "mysql.*", 3);
    assert_eq!(ev.len(), 3);
    let st = server.stats();
    assert_eq!(
        count(&st.scramble_bad),
        0,
        "logtide's scramble is wrong: {st:?}"
    );
    let first_full = count(&st.full_rsa);
    assert!(first_full >= 1, "{st:?}");
    assert!(count(&st.fast) >= 1, "{st:?}");
    let fast_before = count(&st.fast);
    let (_w, ev) = run_events(&server, "mysql.*", 3);
    assert_eq!(ev.len(), 3);
    assert_eq!(
        count(&st.full_rsa),
        first_full,
        "a cached user needs no RSA exchange: {st:?}"
    );
    assert!(count(&st.fast) >= fast_before + 2, "{st:?}");
    assert_eq!(count(&st.scramble_bad), 0, "{st:?}");
    assert_eq!(count(&st.refused), 0, "{st:?}");
}

/// `mysql_native_password`: announced by the server, and reached by an authentication
/// method switch from the default `caching_sha2_password`.
#[test]
fn native_password_directly_and_after_a_plugin_switch() {
    for default in [NATIVE, crate::common::mysql_proto::auth::CACHING_SHA2] {
        let server = ProtoServer::builder(Flavour::Mysql80, ENUM_SET)
            .account_plugin(NATIVE)
            .default_plugin(default)
            .start();
        let (_w, ev) = run_events(&server, "mysql.*", 3);
        assert_enum_set_rows(&ev);
        let st = server.stats();
        assert!(count(&st.native) >= 2, "{default}: {st:?}");
        assert_eq!(
            count(&st.full_rsa) + count(&st.fast) + count(&st.refused),
            0,
            "{st:?}"
        );
    }
}

/// A wrong password is refused with the user named, and exits 3 (permanent).
#[test]
fn wrong_password_is_a_permanent_error() {
    let server = ProtoServer::builder(Flavour::Mysql9, ENUM_SET).start();
    let w = workdir(&server, "mysql.*");
    let mut child = spawn_run(&w, &["--max-events", "3"], &[(PASSWORD_ENV, "not-it")]);
    let st = wait_exit(&mut child, WAIT);
    assert_eq!(st.code(), Some(3), "{}", logs(&w));
    assert!(logs(&w).contains("logtide"), "{}", logs(&w));
    assert!(count(&server.stats().refused) >= 1);
}

/// The dump connection drops in the middle of the second transaction (at its rows event):
/// logtide reconnects, resumes from its checkpoint after the first transaction, and
/// delivers every change once, with the cursors of an undisturbed run.
#[test]
fn disconnect_mid_transaction_resumes_from_the_checkpoint() {
    let fx = Fixture::load(ENUM_SET);
    let update_rows = fx
        .events
        .iter()
        .find(|e| e.type_code == 31)
        .expect("update rows event")
        .offset;
    let clean = ProtoServer::builder(Flavour::Mysql84, ENUM_SET).start();
    let (_w, want) = run_events(&clean, "mysql.*", 3);
    let server = ProtoServer::builder(Flavour::Mysql84, ENUM_SET)
        .drop_at(update_rows)
        .start();
    let w = workdir(&server, "mysql.*");
    // No --max-events: its count starts again with the reconnected source (seen here), so
    // the run is stopped once the three changes are out.
    let mut child = spawn_run(&w, &[], &env());
    w.wait_events(3, WAIT);
    crate::common::run::sigterm(&child);
    let st = wait_exit(&mut child, WAIT);
    assert!(st.success(), "{}", logs(&w));
    let ev = w.events();
    assert_eq!(server.dropped(), 1);
    assert_enum_set_rows(&ev);
    let cursors =
        |v: &[Value]| -> Vec<Value> { v.iter().map(|e| e["source"]["cursor"].clone()).collect() };
    assert_eq!(cursors(&ev), cursors(&want), "{}", logs(&w));
    let dumps = server.dumps();
    assert_eq!(dumps.len(), 2, "{dumps:?}");
    // The second dump starts after the first transaction's XID (its checkpoint).
    assert_eq!(
        dumps[1],
        Dump::Position {
            file: "binlog.000001".into(),
            pos: 1560
        }
    );
}

/// `logtide replay --from uuid:3` on MySQL: `COM_BINLOG_DUMP_GTID` with the executed set
/// `uuid:1-3`; the server sends the transactions after it (the update and the delete).
#[test]
fn replay_from_a_gtid_set() {
    let server = ProtoServer::builder(Flavour::Mysql84, ENUM_SET).start();
    let (w, first) = run_events(&server, "mysql.*", 3);
    assert_eq!(first.len(), 3);
    std::fs::remove_file(w.out()).expect("clear output");
    let cfg = w.config();
    let from = format!("{ENUM_SET_UUID}:3");
    let out = run_to_end(
        &[
            "replay",
            "--config",
            cfg.to_str().expect("path"),
            "--source",
            "my",
            "--from",
            &from,
            "--max-events",
            "2",
        ],
        &env(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = w.events();
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(ev[0]["op"], "u");
    assert_eq!(ev[1]["op"], "d");
    assert_eq!(ev[0]["source"]["cursor"], first[1]["source"]["cursor"]);
    assert_eq!(ev[1]["source"]["cursor"], first[2]["source"]["cursor"]);
    match server.dumps().last() {
        Some(Dump::Gtid { set }) => {
            assert_eq!(set.0.len(), 1);
            assert_eq!(
                crate::common::mysql_proto::binlog::uuid_text(&set.0[0].0),
                ENUM_SET_UUID
            );
            assert_eq!(set.0[0].1, [(1, 4)], "uuid:1-3 (end exclusive)");
        }
        other => panic!("expected a GTID dump, got {other:?}"),
    }
}

/// `transaction_compression.000001` (MySQL 8.0.32, `binlog_transaction_compression=ON`):
/// the transaction's BEGIN, table map, rows and XID are inside one zstd
/// TRANSACTION_PAYLOAD event after its ANONYMOUS_GTID. The row `test.tb1 (1)` comes out at
/// the GTID's offset (197), ordinal 1, and the checkpoint after it is the payload's end
/// (431). The table map is MINIMAL (no names): the column comes from information_schema.
#[test]
fn compressed_transaction_payload_end_to_end() {
    let server = ProtoServer::builder(Flavour::Mysql80, "transaction_compression.000001")
        .variable("binlog_row_metadata", "MINIMAL")
        .variable("binlog_transaction_compression", "ON")
        .table("test", "tb1", &[("c1", "int")], &[])
        .start();
    let (w, ev) = run_events(&server, "test.*", 1);
    assert_eq!(ev.len(), 1, "{}", logs(&w));
    assert_eq!(ev[0]["op"], "c");
    assert_eq!(ev[0]["after"], json!({"c1": 1}));
    assert_eq!(ev[0]["source"]["table"], "tb1");
    assert_eq!(ev[0]["source"]["pos"], 197);
    assert_eq!(
        ev[0]["source"]["cursor"],
        "0000000001:00000000000000C5:0000000000000001"
    );
    assert!(server.unknown().is_empty(), "{:?}", server.unknown());
}

/// A drop right at the payload event: the resumed dump starts again at the transaction's
/// start (the checkpoint before it), and the row is delivered once.
#[test]
fn disconnect_at_the_payload_resumes_before_the_transaction() {
    let server = ProtoServer::builder(Flavour::Mysql84, "transaction_compression.000001")
        .variable("binlog_row_metadata", "MINIMAL")
        .variable("binlog_transaction_compression", "ON")
        .table("test", "tb1", &[("c1", "int")], &[])
        .drop_at(274)
        .start();
    let w = workdir(&server, "test.*");
    let mut child = spawn_run(&w, &[], &env());
    w.wait_events(1, WAIT);
    crate::common::run::sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    let ev = w.events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(server.dropped(), 1);
    assert_eq!(ev[0]["after"], json!({"c1": 1}));
    let dumps = server.dumps();
    assert_eq!(dumps.len(), 2, "{dumps:?}");
    assert_eq!(
        dumps[1],
        Dump::Position {
            file: "binlog.000001".into(),
            pos: 197
        },
        "resumed at the transaction's GTID, before the payload"
    );
}

/// `vector.binlog` (MySQL 9.0.1): `dtb.foo(id SERIAL, vector_column VECTOR(3))` and
/// `dtb.bar(id SERIAL, vector_column VECTOR(2), foo TEXT, vector_column2 VECTOR(4))`,
/// created twice (the database is dropped in between). VECTOR (type 242) comes out as a
/// JSON array of the stored float32s; each expected value is read from the file's own
/// rows-event bytes (independently of logtide's decoder).
#[test]
fn vector_columns_as_float_arrays() {
    let server = ProtoServer::builder(Flavour::Mysql9, "vector.binlog").start();
    let (w, ev) = run_whole_file(&server, "dtb.*");
    assert!(server.unknown().is_empty(), "{:?}", server.unknown());
    let got: Vec<(String, String, Value, Value)> = ev
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or("").to_owned(),
                e["source"]["table"].as_str().unwrap_or("").to_owned(),
                e["before"].clone(),
                e["after"].clone(),
            )
        })
        .collect();
    let row = |op: &str, t: &str, before: Value, after: Value| {
        (op.to_owned(), t.to_owned(), before, after)
    };
    let inserts = vec![
        row(
            "c",
            "foo",
            Value::Null,
            json!({"id": 1, "vector_column": [1.1, 2.2, 3.3]}),
        ),
        row(
            "c",
            "foo",
            Value::Null,
            json!({"id": 2, "vector_column": [1, -1, 0]}),
        ),
        row(
            "c",
            "bar",
            Value::Null,
            json!({"id": 1, "vector_column": [1.1, 2.2], "foo": null, "vector_column2": [1.1, 2.2, 3.3, 4.4]}),
        ),
        row(
            "c",
            "bar",
            Value::Null,
            json!({"id": 2, "vector_column": [1.01, -1.01], "foo": "bar", "vector_column2": [42, 43, 44, 45]}),
        ),
    ];
    // The database is dropped and created again, the same rows inserted again; then a
    // delete and an insert in one transaction.
    let mut want = inserts.clone();
    want.extend(inserts.clone());
    want.push(row("d", "bar", inserts[3].3.clone(), Value::Null));
    want.push(row(
        "c",
        "bar",
        Value::Null,
        json!({"id": 3, "vector_column": [2.01, -2.01], "foo": null, "vector_column2": [42.1, 43.2, 44.3, 45.4]}),
    ));
    assert_eq!(got, want, "{}", logs(&w));
    assert_eq!(ev[9]["key"], json!({"id": 3}));
}

/// `binlog_transaction_with_GTID_TAG.000001` (MySQL 9.6.0): the transaction's GTID is a
/// tagged one (GTID_TAGGED_LOG_EVENT), `source.gtid` is `uuid:tag:gno`. The table map has
/// no names (MINIMAL) and the file no DDL: information_schema (scripted) names the columns.
#[test]
fn tagged_gtid_in_source() {
    let server = ProtoServer::builder(Flavour::Mysql9, "binlog_transaction_with_GTID_TAG.000001")
        .variable("binlog_row_metadata", "MINIMAL")
        .table(
            "test",
            "orders",
            &[("id", "int"), ("qty", "int"), ("amount", "decimal(10,2)")],
            &[],
        )
        .start();
    let (w, ev) = run_events(&server, "test.*", 1);
    assert_eq!(ev.len(), 1, "{}", logs(&w));
    assert_eq!(
        ev[0]["after"],
        json!({"id": 3, "qty": 100, "amount": "250.00"})
    );
    assert_eq!(
        ev[0]["source"]["gtid"],
        "55778904-0299-11f1-b1b8-4ef0c4956feb:mytag:3"
    );
}

/// `logtide run` until it exits; (exit code, logs).
fn run_to_failure(server: &ProtoServer, filter: &str) -> (Option<i32>, String) {
    let w = workdir(server, filter);
    let mut child = spawn_run(&w, &[], &env());
    let st = wait_exit(&mut child, WAIT);
    (st.code(), logs(&w))
}

/// Truncated files (`binlog_truncated_event.000001`: 10 bytes after the magic;
/// `binlog_truncated_prev_gtid_event.000001`: a FORMAT_DESCRIPTION, then 9 bytes of the
/// next event): a typed error and exit 3, never a panic — both when the server reports
/// the truncation (error 1236, what MySQL does) and when the torn bytes arrive as an event.
#[test]
fn truncated_files_are_a_typed_error() {
    for f in [
        "binlog_truncated_event.000001",
        "binlog_truncated_prev_gtid_event.000001",
    ] {
        let server = ProtoServer::builder(Flavour::Mysql80, f).start();
        assert!(server.fixture().truncated);
        let (code, l) = run_to_failure(&server, "*.*");
        assert_eq!(code, Some(3), "{f}: {l}");
        assert!(
            l.contains("error 1236") && l.contains("truncated"),
            "{f}: {l}"
        );
        assert!(!l.contains("panicked"), "{l}");

        let server = ProtoServer::builder(Flavour::Mysql80, f)
            .send_torn_tail()
            .start();
        let (code, l) = run_to_failure(&server, "*.*");
        assert_eq!(code, Some(3), "{f}: {l}");
        assert!(l.contains("malformed binlog event"), "{f}: {l}");
        assert!(!l.contains("panicked"), "{l}");
    }
}

/// `mysql_type_bit.000001` (MySQL 8.0.26): `foo(a BIT(3), b TEXT, c BIT(8))`, one row.
/// BIT values are the stored bits as an integer.
#[test]
fn bit_fixture() {
    let server = ProtoServer::builder(Flavour::Mysql80, "mysql_type_bit.000001").start();
    let (_w, ev) = run_whole_file(&server, "mysql.*");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["after"], json!({"a": 4, "b": "foo", "c": 32}));
    assert_eq!(
        ev[0]["source"]["gtid"],
        "fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a:3"
    );
}

/// `bug32407.001` (MySQL 5.7.1, no GTIDs, MyISAM): `t1 (a int)`, one rows event with two
/// rows `(1)`, `(1)`: two events with ordinals 1 and 2 of the same transaction.
#[test]
fn mysql57_fixture_two_rows_in_one_event() {
    let server = ProtoServer::builder(Flavour::Mysql80, "bug32407.001").start();
    let (_w, ev) = run_whole_file(&server, "test.*");
    assert_eq!(ev.len(), 2, "{ev:?}");
    for (e, ord) in ev.iter().zip(["0000000000000001", "0000000000000002"]) {
        assert_eq!(e["after"], json!({"a": 1}));
        assert_eq!(e["source"]["gtid"], Value::Null);
        assert!(
            e["source"]["cursor"]
                .as_str()
                .is_some_and(|c| c.ends_with(ord)),
            "{e}"
        );
    }
}

/// `minimal_row_metadata.000001` (MySQL 8.0.40, `binlog_row_metadata=MINIMAL` and a
/// MINIMAL row image): `noria.t1`, five columns, of which the insert sends three. No DDL
/// in the file, so information_schema (scripted: the names are ours, the types the table
/// map's) names them; the columns not sent are listed in `unchanged`, never invented.
#[test]
fn minimal_row_metadata_and_image() {
    let server = ProtoServer::builder(Flavour::Mysql80, "minimal_row_metadata.000001")
        .variable("binlog_row_metadata", "MINIMAL")
        .variable("binlog_row_image", "MINIMAL")
        .table(
            "noria",
            "t1",
            &[
                ("id", "int"),
                ("b", "text"),
                ("c", "char(8)"),
                ("d", "int"),
                ("e", "int unsigned"),
            ],
            &["id"],
        )
        .start();
    let (w, ev) = run_whole_file(&server, "noria.*");
    assert_eq!(ev.len(), 1, "{}", logs(&w));
    // e is unsigned in the table map's signedness bits: 0xC088F9D3.
    assert_eq!(
        ev[0]["after"],
        json!({"id": 1, "c": "a", "e": 3_230_202_323u64})
    );
    assert_eq!(ev[0]["unchanged"], json!(["b", "d"]));
    assert_eq!(ev[0]["key"], json!({"id": 1}));
}

/// `json.binlog.000001` (MySQL 8.0.22): `t(id INT PRIMARY KEY AUTO_INCREMENT, json_col
/// JSON, name VARCHAR(100) AS (json_col->>'$.name'), age INT AS (json_col->'$.age'))`
/// (virtual generated columns are in the row image); four inserts, a full update, then a
/// PARTIAL_UPDATE_ROWS event (`binlog_row_value_options=PARTIAL_JSON`), decoded to the end.
///
/// The file logs no DML text (only `BEGIN`), so the expected rows are read from its bytes:
/// the partial event (offset 3750) was written with `binlog_row_image=MINIMAL`: before
/// images hold only `id` (columns bitmap 0x01), after images json_col, name and age
/// (0x0e). Each after image starts with value_options 1 and partial bits 0x01, and
/// json_col is the diff `REPLACE $.age` with an int16 (asserted below at its file offset)
/// equal to the new `age`: the update set `$.age` to age + 1. The old document is not in
/// the before image, so json_col cannot be rebuilt: absent from `after`, listed in
/// `unchanged`, one warning naming the column and the setting.
#[test]
fn json_fixture_with_the_partial_update() {
    let server = ProtoServer::builder(Flavour::Mysql80, "json.binlog.000001")
        .variable("binlog_row_metadata", "MINIMAL")
        .variable("binlog_row_image", "MINIMAL")
        .variable("binlog_row_value_options", "PARTIAL_JSON")
        .table(
            "mysql",
            "t",
            &[
                ("id", "int"),
                ("json_col", "json"),
                ("name", "varchar(100)"),
                ("age", "int"),
            ],
            &["id"],
        )
        .start();
    let (w, ev) = run_whole_file(&server, "mysql.*");
    let l = logs(&w);
    assert!(server.unknown().is_empty(), "{:?}", server.unknown());
    assert_eq!(ev.len(), 18, "{l}");
    let people = [
        ("Joe", 24, "xxxxxxxxxx"),
        ("Sue", 32, "yyyyyyyyyy"),
        ("Pete", 40, "zzzzzzzzzz"),
    ];
    for (i, e) in ev[..12].iter().enumerate() {
        let (name, age) = (people[i % 3].0, people[i % 3].1);
        let data = people[i % 3].2;
        let id = i % 6 + 1;
        let (op, age) = if i < 6 { ("c", age) } else { ("u", age + 1) };
        assert_eq!(e["op"], op, "{e}");
        let doc = json!({"name": name, "age": age, "data": data});
        assert_eq!(
            e["after"],
            json!({"id": id, "json_col": doc, "name": name, "age": age}),
            "generated columns follow json_col: {e}"
        );
        assert_eq!(e["key"], json!({"id": id}));
        if op == "u" {
            assert_eq!(e["before"], ev[i - 6]["after"]);
        }
    }
    // The partial event's rows: `00 <id>` before, then `01 01 00 0b000000 00 05 "$.age"
    // 03 05 <int16 age>` json_col, name, age. Each row's diff value, in the file itself:
    let fx = server.fixture();
    let partial = fx
        .events
        .iter()
        .find(|e| e.type_code == 39)
        .expect("the partial update event");
    assert_eq!(partial.offset, 3750);
    let mut at = partial.offset + 19 + 13;
    for (i, e) in ev[12..].iter().enumerate() {
        let (name, age) = (people[i % 3].0, people[i % 3].1 + 2);
        let row = &fx.bytes[at..];
        assert_eq!(&row[1..5], &(i as u32 + 1).to_le_bytes(), "id of row {i}");
        assert_eq!(&row[5..8], &[1, 1, 0], "value_options, partial bits, nulls");
        assert_eq!(&row[12..19], b"\x00\x05$.age", "REPLACE $.age");
        assert_eq!(&row[19..22], &[3, 5, age as u8], "int16 {age}");
        at += 22 + 1 + 2 + name.len() + 4;
        assert_eq!(e["op"], "u", "{e}");
        assert_eq!(e["before"], json!({"id": i + 1}));
        assert_eq!(e["after"], json!({"name": name, "age": age}), "{e}");
        assert_eq!(e["unchanged"], json!(["id", "json_col"]), "{e}");
        assert_eq!(e["key"], json!({"id": i + 1}));
        assert_eq!(e["source"]["pos"], 3527, "at the transaction's GTID event");
    }
    assert_eq!(at, 3980 - 4, "every row of the event read");
    let warned: Vec<&str> = l
        .lines()
        .filter(|x| x.contains("partial JSON update without the old document"))
        .collect();
    assert_eq!(warned.len(), 1, "{l}");
    assert!(
        warned[0].contains("mysql.t")
            && warned[0].contains("json_col")
            && warned[0].contains("binlog_row_image=FULL"),
        "{l}"
    );
}

/// `mariadb-bin.000001` (MariaDB 10.5.15, served by the protocol test server as MariaDB:
/// native password, `SHOW MASTER STATUS`, `@mariadb_slave_capability`): two transactions,
/// each a MariaDB GTID, an ANNOTATE_ROWS with the statement, a table map with full
/// metadata and a v1 WRITE_ROWS; the file's head is a GTID_LIST and a BINLOG_CHECKPOINT.
///
/// Expected rows from the statements and the table map: `toddy_test.outbox(id, topic,
/// event_type ENUM('BLOB','JSON','PROTOBUF'), event BLOB, created TIMESTAMP)` (names,
/// enum members, the key `id` and the character sets — utf8mb4 for topic, binary for event
/// — are in the table map's metadata); each transaction runs `insert into outbox (topic,
/// event_type, event) values ('foo', 'JSON', '{"foo":1}')`. `id` (AUTO_INCREMENT) is not in
/// the statement: 62 and 63 as stored. `created` is the column default, the statement's
/// time: the ANNOTATE_ROWS event's header timestamp. `event` is binary: base64.
#[test]
fn mariadb_105_fixture_end_to_end() {
    let server = ProtoServer::builder(Flavour::Mariadb105, "mariadb-bin.000001").start();
    let fx = server.fixture();
    assert_eq!(fx.version, "10.5.15-MariaDB-1:10.5.15+maria~focal-log");
    let (w, ev) = run_whole_file(&server, "toddy_test.*");
    let l = logs(&w);
    assert!(server.unknown().is_empty(), "{:?}", server.unknown());
    assert!(
        server
            .queries()
            .iter()
            .any(|q| q == "SET @mariadb_slave_capability = 4"),
        "{:?}",
        server.queries()
    );
    assert_eq!(
        server.dumps(),
        [Dump::Position {
            file: "binlog.000001".into(),
            pos: 330
        }],
        "a first start dumps from the end SHOW MASTER STATUS gives, after the file's head"
    );
    let annotate: Vec<(String, u32)> = fx
        .events
        .iter()
        .filter(|e| e.type_code == 160)
        .map(|e| {
            let raw = fx.raw(e);
            let text = String::from_utf8_lossy(&raw[19..raw.len() - 4]).into_owned();
            (text, u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
        })
        .collect();
    assert_eq!(annotate.len(), 2);
    // The header timestamps, 1650493084 and 1650493195 seconds since the epoch, in UTC.
    let created = ["2022-04-20T22:18:04Z", "2022-04-20T22:19:55Z"];
    assert_eq!(annotate[0].1, 1_650_493_084);
    assert_eq!(annotate[1].1, 1_650_493_195);
    assert_eq!(ev.len(), 2, "{l}");
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(
            annotate[i].0,
            r#"insert into outbox (topic, event_type, event) values ('foo', 'JSON', '{"foo":1}')"#
        );
        let id = 62 + i;
        assert_eq!(e["op"], "c", "{e}");
        assert_eq!(
            e["after"],
            json!({
                "id": id,
                "topic": "foo",
                "event_type": "JSON",
                "event": "eyJmb28iOjF9",
                "created": created[i],
            }),
            "{e}"
        );
        assert_eq!(e["key"], json!({"id": id}));
        assert_eq!(e["source"]["db"], "toddy_test");
        assert_eq!(e["source"]["table"], "outbox");
        assert_eq!(
            e["source"]["gtid"],
            format!("0-1-{}", i + 1),
            "domain-server-seq"
        );
        assert_eq!(e["source"]["pos"], [330, 702][i], "at the GTID event");
        assert_eq!(e["source"]["file"], "binlog.000001");
    }
}

/// docker/compose.yaml's MySQL 8.4 service and its init script set up the server the 8.4
/// flavour script describes: the same binlog settings and the same grants.
#[test]
fn compose_matches_the_flavour_script() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("docker/compose.yaml")).expect("compose");
    let service = compose
        .split("\n  mysql:\n")
        .nth(1)
        .and_then(|s| s.split("\n  nats:").next())
        .expect("mysql service");
    assert!(service.contains("image: mysql:8.4"), "{service}");
    let vars = Flavour::Mysql84.variables();
    for line in service
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("- --"))
    {
        let flag = line.trim_start_matches("- --");
        let (name, value) = flag.split_once('=').unwrap_or((flag, "ON"));
        let name = name.replace('-', "_");
        let (name, value) = match name.as_str() {
            // --log-bin=<basename> switches binary logging on.
            "log_bin" => ("log_bin".to_owned(), "ON"),
            _ => (name, value),
        };
        assert_eq!(
            vars.get(&name).map(String::as_str),
            Some(value),
            "compose sets {name}={value}; the 8.4 flavour script says {:?}",
            vars.get(&name)
        );
    }
    let init = std::fs::read_to_string(root.join("docker/init/mysql.sql")).expect("init sql");
    let grant = init
        .lines()
        .find(|l| l.starts_with("GRANT"))
        .expect("a GRANT in init/mysql.sql");
    let privs = |g: &str| -> Vec<String> {
        let mut p: Vec<String> = g
            .trim_start_matches("GRANT ")
            .split(" ON ")
            .next()
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect();
        p.sort();
        p
    };
    assert_eq!(privs(grant), privs(&Flavour::Mysql84.grants("logtide")[0]));
    assert!(
        init.contains("IDENTIFIED WITH caching_sha2_password"),
        "{init}"
    );
}
