//! Binlog streaming behaviour against a private MariaDB: schema changes mid-stream,
//! TRUNCATE, rotation, rollback, positions and resume, column filters, shutdown latency,
//! and the startup errors (STATEMENT format, missing privilege, wrong password).

use crate::common::mariadb::{checkpoint, source_config, wait_until, MariaServer, Stream, USER};
use logtide::event::{ChangeEvent, Op};
use logtide::position::{MysqlPosition, Position};
use logtide::source::mysql::MysqlError;
use logtide::source::{ErrorClass, SourceMessage};
use logtide::value::Value;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn pos(e: &ChangeEvent) -> &MysqlPosition {
    match &e.position {
        Position::Mysql(p) => p,
        other => panic!("not a mysql position: {other:?}"),
    }
}

fn cols(e: &ChangeEvent) -> Vec<&str> {
    e.table.columns.iter().map(String::as_str).collect()
}

/// A source config for `db` logging in as `user` (created afresh, with `grants` on
/// everything and a password of its own, set in its own environment variable).
fn own_user(
    server: &MariaServer,
    db: &str,
    user: &str,
    grants: &str,
) -> logtide::config::MysqlSourceConfig {
    let password = format!("{user}-secret");
    server.sql(
        "",
        &format!(
            "CREATE OR REPLACE USER '{user}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{password}'); \
             GRANT {grants} ON *.* TO '{user}'@'%'"
        ),
    );
    let env = format!("LOGTIDE_TEST_{}_PW", user.to_ascii_uppercase());
    crate::common::set_env(&env, &password);
    let mut cfg = source_config(server, db, "");
    cfg.user = user.into();
    cfg.password_env = Some(env);
    cfg
}

#[test]
fn ddl_mid_stream_keeps_names_right_and_truncate_is_one_event() {
    ddl_suite(MariaServer::get());
}

#[test]
fn ddl_mid_stream_with_minimal_metadata() {
    let server = MariaServer::builder().row_metadata("MINIMAL").start();
    ddl_suite(&server);
}

fn ddl_suite(server: &MariaServer) {
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10), b INT)",
    );
    let start = server.binlog_position();
    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        64,
    );
    let step = |stream: &mut Stream, sql: &str| -> Vec<SourceMessage> {
        server.sql(&db, sql);
        let end = server.binlog_position();
        stream.until(&end, WAIT)
    };
    let e = Stream::changes(step(&mut stream, "INSERT INTO t VALUES (1, 'x', 10)"));
    assert_eq!(cols(&e[0]), ["id", "a", "b"]);
    // Streaming live: each DDL is seen before the rows that follow it.
    step(&mut stream, "ALTER TABLE t ADD COLUMN c DATE");
    let e = Stream::changes(step(
        &mut stream,
        "INSERT INTO t VALUES (2, 'y', 20, '2024-01-01')",
    ));
    assert_eq!(cols(&e[0]), ["id", "a", "b", "c"]);
    assert_eq!(
        e[0].after.as_ref().expect("after")[3],
        Some(Value::Date("2024-01-01".into()))
    );
    step(&mut stream, "ALTER TABLE t DROP COLUMN a");
    let e = Stream::changes(step(&mut stream, "INSERT INTO t VALUES (3, 30, NULL)"));
    assert_eq!(cols(&e[0]), ["id", "b", "c"]);
    step(&mut stream, "ALTER TABLE t RENAME COLUMN b TO bb");
    let e = Stream::changes(step(&mut stream, "UPDATE t SET bb = 31 WHERE id = 3"));
    assert_eq!(cols(&e[0]), ["id", "bb", "c"]);
    assert_eq!(e[0].after.as_ref().expect("after")[1], Some(Value::Int(31)));
    let msgs = step(&mut stream, "TRUNCATE TABLE t");
    let e = Stream::changes(msgs);
    assert_eq!(e.len(), 1, "one truncate event");
    assert_eq!(e[0].op, Op::Truncate);
    assert_eq!(e[0].table.name, "t");
    assert_eq!(pos(&e[0]).ordinal, 1);
    let e = Stream::changes(step(
        &mut stream,
        "RENAME TABLE t TO t2; INSERT INTO t2 VALUES (4, 40, NULL)",
    ));
    assert_eq!(e[0].table.name, "t2");
    assert_eq!(cols(&e[0]), ["id", "bb", "c"]);
    stream.stop();
}

#[test]
fn rotation_positions_rollback_and_resume() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE r (id INT PRIMARY KEY, v VARCHAR(20))");
    let start = server.binlog_position();
    server.sql(
        &db,
        "BEGIN; INSERT INTO r VALUES (1,'a'),(2,'b'); INSERT INTO r VALUES (3,'c'); COMMIT",
    );
    server.sql(
        &db,
        "BEGIN; INSERT INTO r VALUES (100,'rolled back'); ROLLBACK",
    );
    server.sql(&db, "FLUSH BINARY LOGS");
    server.sql(&db, "INSERT INTO r VALUES (4,'d')");
    let end = server.binlog_position();
    assert_ne!(end.0, start.0, "rotated");

    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        64,
    );
    let msgs = stream.until(&end, WAIT);
    stream.stop();
    let boundaries: Vec<Position> = msgs
        .iter()
        .filter_map(|m| match m {
            SourceMessage::Boundary(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let events = Stream::changes(msgs);
    let ids: Vec<Value> = events
        .iter()
        .map(|e| e.after.as_ref().expect("after")[0].clone().expect("id"))
        .collect();
    assert_eq!(
        ids,
        vec![Value::Int(1), Value::Int(2), Value::Int(3), Value::Int(4)],
        "rollback emits nothing"
    );
    // One transaction: same start offset, ordinals 1..3; the next file after rotation.
    let (p1, p2, p3, p4) = (
        pos(&events[0]),
        pos(&events[1]),
        pos(&events[2]),
        pos(&events[3]),
    );
    assert_eq!((p1.pos, p1.ordinal), (p2.pos, 1));
    assert_eq!((p2.ordinal, p3.ordinal, p3.pos), (2, 3, p1.pos));
    assert_eq!(p1.file, start.0);
    assert_eq!(p4.file, end.0);
    assert_eq!(p4.ordinal, 1);
    let cursors: Vec<String> = events.iter().map(|e| e.position.cursor()).collect();
    let mut sorted = cursors.clone();
    sorted.sort();
    assert_eq!(cursors, sorted, "cursors sort in stream order");
    // Every boundary is a checkpoint and separates the transactions.
    assert!(boundaries.iter().all(Position::is_checkpoint));
    // Other tests share the server: their transactions add boundaries of their own, so the
    // one that matters is the first after this test's first transaction.
    let first_boundary = boundaries
        .iter()
        .find(|b| events[2].position < **b)
        .expect("a boundary after the first transaction")
        .clone();
    assert!(first_boundary < events[3].position, "{first_boundary:?}");

    // Resume from the checkpoint after the first transaction: only row 4 again, same cursor.
    let mut again = Stream::start(source_config(server, &db, ""), Some(first_boundary), 64);
    let e = Stream::changes(again.until(&end, WAIT));
    again.stop();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].position.cursor(), cursors[3]);

    // Resume from an event position inside the first transaction: the rest of it.
    let mut mid = Stream::start(
        source_config(server, &db, ""),
        Some(events[1].position.clone()),
        64,
    );
    let e = Stream::changes(mid.until(&end, WAIT));
    mid.stop();
    let got: Vec<String> = e.iter().map(|e| e.position.cursor()).collect();
    assert_eq!(got, cursors[2..].to_vec());
}

#[test]
fn filtered_rows_still_count_and_excluded_columns_never_leave() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE keep_me (id INT PRIMARY KEY, secret VARCHAR(10), v INT); CREATE TABLE skip_me (id INT PRIMARY KEY)",
    );
    let start = server.binlog_position();
    server.sql(
        &db,
        "BEGIN; INSERT INTO skip_me VALUES (1),(2); INSERT INTO keep_me VALUES (1, 's', 5); COMMIT",
    );
    let end = server.binlog_position();
    let extra = format!("columns = {{ \"{db}.keep_me\" = {{ exclude = [\"secret\"] }} }}\n");
    let mut cfg = source_config(server, &db, &extra);
    cfg.tables.include = vec![format!("{db}.keep_*")];
    let mut stream = Stream::start(cfg, Some(checkpoint(&start.0, start.1)), 64);
    let e = Stream::changes(stream.until(&end, WAIT));
    stream.stop();
    assert_eq!(e.len(), 1);
    assert_eq!(pos(&e[0]).ordinal, 3, "the two filtered rows count");
    assert_eq!(cols(&e[0]), ["id", "v"]);
    assert_eq!(
        e[0].after,
        Some(vec![Some(Value::Int(1)), Some(Value::Int(5))])
    );
}

#[test]
fn cancel_stops_an_idle_source_within_a_heartbeat() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    let mut stream = Stream::start(source_config(server, &db, ""), None, 4);
    // A fresh source checkpoints its starting point at once, then only heartbeats arrive.
    let first = stream.next(WAIT);
    assert!(
        matches!(&first, Some(SourceMessage::Boundary(p)) if p.is_checkpoint()),
        "{first:?}"
    );
    // (Other tests share the server: their transactions may move the idle checkpoint.)
    let _ = stream.next(Duration::from_millis(1500));
    let took = stream.stop();
    assert!(
        took < Duration::from_millis(2500),
        "stopped after {took:?} (heartbeat 1s)"
    );
}

/// A stopped source ends its binlog dump on the server. Left alone, the server's dump
/// thread lives until a heartbeat fails to send (here up to 30 s), and the next start with
/// the same server id waits while the server kills it (100 ms per start, measured).
#[test]
fn a_stopped_source_leaves_no_dump_thread_on_the_server() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    // A user of its own: other tests' dumps on the shared server are not counted.
    let mut cfg = own_user(
        server,
        &db,
        "dumpend",
        "REPLICATION SLAVE, BINLOG MONITOR, SELECT",
    );
    let dumps = || {
        server
            .sql(
                "",
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE USER = 'dumpend' AND COMMAND LIKE 'Binlog Dump%'",
            )
            .trim()
            .to_owned()
    };
    cfg.heartbeat = Duration::from_secs(30);
    for round in 0..2 {
        let mut stream = Stream::start(cfg.clone(), None, 4);
        let first = stream.next(WAIT);
        assert!(
            matches!(&first, Some(SourceMessage::Boundary(p)) if p.is_checkpoint()),
            "{first:?}"
        );
        assert!(
            wait_until(WAIT, || dumps() == "1"),
            "round {round}: one dump thread while streaming, found {}",
            dumps()
        );
        stream.stop();
        assert!(
            wait_until(Duration::from_secs(5), || dumps() == "0"),
            "round {round}: the stopped source left {} dump thread(s) on the server",
            dumps()
        );
    }
}

#[test]
fn backpressure_blocks_and_cancel_still_stops() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE bp (id INT PRIMARY KEY)");
    let start = server.binlog_position();
    server.sql(&db, "INSERT INTO bp SELECT seq FROM seq_1_to_5000");
    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        2,
    );
    // Nobody reads: the reader blocks on the full channel; cancel must still end it.
    assert!(stream.next(WAIT).is_some());
    let took = stream.stop();
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
}

#[test]
fn statement_format_is_a_clear_permanent_error() {
    let server = MariaServer::builder().binlog_format("STATEMENT").start();
    let db = server.fresh_db();
    let err = Stream::start(source_config(&server, &db, ""), None, 4).error(WAIT);
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            MysqlError::Setting {
                setting: "binlog_format",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("ROW") && msg.contains("STATEMENT"), "{msg}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[test]
fn missing_privilege_and_wrong_password_are_clear_errors() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    let cfg = own_user(server, &db, "noslave", "BINLOG MONITOR, SELECT");
    let err = Stream::start(cfg, None, 4).error(WAIT);
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            MysqlError::Privilege {
                missing: "REPLICATION SLAVE",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("GRANT REPLICATION SLAVE ON *.*"), "{msg}");
    assert_eq!(err.class(), ErrorClass::Permanent);

    crate::common::set_env("LOGTIDE_TEST_WRONG_PW", "wrong-password-xyz");
    let mut cfg = source_config(server, &db, "");
    cfg.password_env = Some("LOGTIDE_TEST_WRONG_PW".into());
    let err = Stream::start(cfg, None, 4).error(WAIT);
    let msg = err.to_string();
    assert!(matches!(err, MysqlError::Auth { code: 1045, .. }), "{msg}");
    assert!(
        msg.contains(USER) && !msg.contains("wrong-password-xyz"),
        "{msg}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[test]
fn purged_binlog_is_a_permanent_error_that_says_what_to_do() {
    let server = MariaServer::builder().start();
    let db = server.fresh_db();
    let old = server.binlog_position();
    // MariaDB keeps a binlog until its binlog checkpoint has passed (InnoDB flushed), and
    // PURGE silently skips such files: retry until the old file is really gone.
    let deadline = Instant::now() + WAIT;
    loop {
        server.sql(&db, "FLUSH BINARY LOGS");
        let now = server.binlog_position();
        server.sql("", &format!("PURGE BINARY LOGS TO '{}'", now.0));
        if !server.sql("", "SHOW BINARY LOGS").contains(&old.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "binlog {} was never purged",
            old.0
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = Stream::start(
        source_config(&server, &db, ""),
        Some(checkpoint(&old.0, old.1)),
        4,
    )
    .error(WAIT);
    let msg = err.to_string();
    assert!(matches!(err, MysqlError::BinlogPurged { .. }), "{msg}");
    assert!(msg.contains("purged") && msg.contains("backfill"), "{msg}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[test]
fn server_restart_is_a_transient_error() {
    let server = MariaServer::builder().start();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE k (id INT PRIMARY KEY)");
    let start = server.binlog_position();
    server.sql(&db, "INSERT INTO k VALUES (1)");
    let end = server.binlog_position();
    let mut stream = Stream::start(
        source_config(&server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        16,
    );
    let msgs = stream.until(&end, WAIT);
    let last = msgs.iter().rev().find_map(|m| match m {
        SourceMessage::Boundary(p) => Some(p.clone()),
        _ => None,
    });
    server.kill9();
    let err = stream.error(WAIT);
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    // Restart and resume from the last boundary: the next change, nothing repeated.
    server.start();
    server.sql(&db, "INSERT INTO k VALUES (2)");
    let end = server.binlog_position();
    let mut again = Stream::start(source_config(&server, &db, ""), last, 16);
    let e = Stream::changes(again.until(&end, WAIT));
    again.stop();
    let ids: Vec<Value> = e
        .iter()
        .map(|e| e.after.as_ref().expect("after")[0].clone().expect("id"))
        .collect();
    assert_eq!(ids, vec![Value::Int(2)]);
}

#[test]
fn compressed_events_stop_the_source_naming_the_setting() {
    let server = MariaServer::builder().start();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE z (id INT PRIMARY KEY, v TEXT)");
    // A fresh source checkpoints its start once validation passed.
    let mut stream = Stream::start(source_config(&server, &db, ""), None, 16);
    assert!(stream.next(WAIT).is_some());
    // Turned on after startup validation (which refuses it): the compressed events
    // themselves stop the source (MariaDB compresses events over log_bin_compress_min_len).
    server.sql(
        "",
        "SET GLOBAL log_bin_compress = ON; SET GLOBAL log_bin_compress_min_len = 10",
    );
    server.sql(&db, "INSERT INTO z VALUES (1, REPEAT('compress me ', 100))");
    let err = stream.error(WAIT);
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            MysqlError::UnsupportedEvent {
                setting: "log_bin_compress=OFF",
                ..
            }
        ),
        "{msg}"
    );
    // And a restart is refused at validation, naming the setting.
    let err = Stream::start(source_config(&server, &db, ""), None, 16).error(WAIT);
    assert!(
        matches!(
            err,
            MysqlError::Setting {
                setting: "log_bin_compress",
                ..
            }
        ),
        "{err}"
    );
    assert!(msg.contains("log_bin_compress"), "{msg}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[test]
fn a_statement_logged_change_to_a_captured_table_stops_the_source() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE cap (id INT PRIMARY KEY); CREATE TABLE other (id INT PRIMARY KEY)",
    );
    let start = server.binlog_position();
    server.sql(&db, "SET SESSION binlog_format = 'STATEMENT'; INSERT INTO other VALUES (1); INSERT INTO cap VALUES (1)");
    let mut cfg = source_config(server, &db, "");
    cfg.tables.include = vec![format!("{db}.cap")];
    let err = Stream::start(cfg, Some(checkpoint(&start.0, start.1)), 16).error(WAIT);
    let msg = err.to_string();
    // The change to `other` (not captured) is skipped; the one to `cap` stops the source.
    assert!(
        matches!(&err, MysqlError::StatementEvent { statement, .. } if statement == "INSERT"),
        "{msg}"
    );
    assert!(msg.contains("binlog_format=ROW"), "{msg}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}
