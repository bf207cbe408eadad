//! Every MySQL/MariaDB column type round-trips exactly through the binlog source: each
//! decoded value is compared with the server's own `SELECT` output for the same row, with
//! `binlog_row_metadata=FULL` (names from the table map) and `MINIMAL` (names, members and
//! key from information_schema). Also a 20 MB row (packets split at 16 MB).

use crate::common::mariadb::{checkpoint, source_config, MariaServer, Stream};
use logtide::event::{ChangeEvent, Op};
use logtide::value::Value;
use std::time::Duration;

const TABLE: &str = "CREATE TABLE all_types (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  y YEAR, d DECIMAL(20,6), d2 DECIMAL(65,30), f FLOAT, db DOUBLE, bt BIT(10),
  dt DATE, t0 TIME, t3 TIME(3), t6 TIME(6), dt0 DATETIME, dt3 DATETIME(3), dt6 DATETIME(6),
  ts0 TIMESTAMP NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL,
  c CHAR(10), vc VARCHAR(300), tx TEXT, lvc VARCHAR(50) CHARACTER SET latin1,
  ltx TEXT CHARACTER SET latin1, lch CHAR(5) CHARACTER SET latin1,
  bn BINARY(4), vb VARBINARY(20), bl BLOB,
  e ENUM('red','green','blue'), s SET('a','b','c','d'), j JSON, g GEOMETRY
) CHARACTER SET utf8mb4";

/// Columns whose SELECT is wrapped so the client prints them as text.
fn select_expr(col: &str) -> String {
    match col {
        "bn" | "vb" | "bl" | "g" => format!("HEX(`{col}`)"),
        "bt" => format!("`{col}` + 0"),
        _ => format!("`{col}`"),
    }
}

const COLUMNS: &[&str] = &[
    "id", "ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu", "y", "d", "d2", "f", "db",
    "bt", "dt", "t0", "t3", "t6", "dt0", "dt3", "dt6", "ts0", "ts6", "c", "vc", "tx", "lvc", "ltx",
    "lch", "bn", "vb", "bl", "e", "s", "j", "g",
];

const ROWS: &str = "SET SESSION sql_mode = ''; SET time_zone = '+00:00';
INSERT INTO all_types VALUES (1,
  -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 18446744073709551615,
  2155, -12345678901234.567891, 12345678901234567890123456789012345.123456789012345678901234567890,
  1.1, 3.141592653589793, b'1000000001',
  '2024-02-29', '-838:59:59', '-12:34:56.789', '-00:00:01.500000',
  '0000-00-00 00:00:00', '1000-01-01 00:00:00.001', '2024-02-29 23:59:59.999999',
  '1970-01-01 00:00:01', '2038-01-19 03:14:07.999999',
  'ab', 'héllo wörld 😀 ✓', REPEAT('é', 300), 'café € ÿ', 'Grüße ‰ Œ', 'ñ',
  X'01', X'FF00FE80', X'00FFC328',
  'green', 'a,d', '{\"a\": [1, 2.5, \"x\"], \"b\": null}', ST_GeomFromText('POINT(1 2)', 4326));
INSERT INTO all_types (id) VALUES (2);
INSERT INTO all_types VALUES (3,
  127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
  0, 0.000001, -0.000000000000000000000000000001, -0.0, -1.5e300, b'0',
  '0000-00-00', '838:59:59', '00:00:00.001', '23:59:59.999999',
  '9999-12-31 23:59:59', '2000-01-01 00:00:00.000', '1000-01-01 00:00:00.000000',
  '2001-02-03 04:05:06', '1970-01-01 00:00:01.000001',
  '', '', '', '', '', '',
  X'', X'', X'',
  'red', '', '[]', ST_GeomFromText('LINESTRING(0 0, 1 1, 2 5)'));
UPDATE all_types SET vc = 'changed', biu = 1 WHERE id = 1;
DELETE FROM all_types WHERE id = 2;";

/// Renders a decoded value the way the server's SELECT (with [`select_expr`]) prints it.
fn render(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Decimal(s) | Value::Text(s) | Value::Date(s) | Value::Time(s) | Value::Json(s) => {
            s.clone()
        }
        Value::Timestamp(s) => s.replacen('T', " ", 1),
        Value::TimestampTz(s) => s.trim_end_matches('Z').replacen('T', " ", 1),
        Value::Bytes(b) => b.iter().map(|x| format!("{x:02X}")).collect(),
        Value::Set(v) => v.join(","),
        Value::Float(f) => format!("{f}"),
        other => format!("{other:?}"),
    })
}

fn check_row(
    ev_row: &[Option<Value>],
    columns: &[String],
    expected: &[Option<String>],
    what: &str,
) {
    assert_eq!(columns.len(), COLUMNS.len(), "{what}: columns {columns:?}");
    for (i, col) in columns.iter().enumerate() {
        assert_eq!(col, COLUMNS[i], "{what}: column names");
        let got = ev_row[i]
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: column {col} absent"));
        let want = &expected[i];
        match (col.as_str(), got, want) {
            (_, Value::Null, None) => {}
            ("f" | "db", Value::Float(f), Some(w)) => {
                let w: f64 = w
                    .parse()
                    .unwrap_or_else(|_| panic!("{what}: {col} select {w}"));
                assert_eq!(*f, w, "{what}: column {col}");
            }
            ("y", Value::Int(y), Some(w)) => {
                assert_eq!(Some(*y), w.parse::<i64>().ok(), "{what}: column y");
            }
            ("j", Value::Json(j), Some(w)) => {
                let a: serde_json::Value = serde_json::from_str(j).expect("event json");
                let b: serde_json::Value = serde_json::from_str(w).expect("select json");
                assert_eq!(a, b, "{what}: column j");
            }
            _ => assert_eq!(
                render(got).as_ref(),
                want.as_ref(),
                "{what}: column {col} = {got:?}"
            ),
        }
    }
}

fn expected_rows(server: &MariaServer, db: &str) -> Vec<Vec<Option<String>>> {
    let list: Vec<String> = COLUMNS.iter().map(|c| select_expr(c)).collect();
    server.select(
        db,
        &format!(
            "SET time_zone = '+00:00'; SELECT {} FROM all_types ORDER BY id",
            list.join(", ")
        ),
    )
}

fn type_suite(server: &MariaServer) {
    let db = server.fresh_db();
    server.sql(&db, TABLE);
    let start = server.binlog_position();
    server.sql(&db, ROWS);
    let end = server.binlog_position();
    let expected = expected_rows(server, &db);
    assert_eq!(expected.len(), 2, "rows 1 and 3 remain");

    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        64,
    );
    let msgs = stream.until(&end, Duration::from_secs(60));
    let events: Vec<ChangeEvent> = Stream::changes(msgs);
    let ops: Vec<Op> = events.iter().map(|e| e.op).collect();
    assert_eq!(
        ops,
        vec![Op::Create, Op::Create, Op::Create, Op::Update, Op::Delete]
    );
    let cols = &events[0].table.columns;
    assert_eq!(events[0].table.key, vec![0], "primary key");
    assert_eq!(events[0].table.db, db);
    assert_eq!(events[0].table.name, "all_types");

    // Row 3 as inserted equals its SELECT now.
    check_row(
        events[2].after.as_ref().expect("after"),
        cols,
        &expected[1],
        "row 3",
    );
    // Row 1: the update's after image is the current row.
    check_row(
        events[3].after.as_ref().expect("after"),
        cols,
        &expected[0],
        "row 1 after update",
    );
    // The insert of row 1 differs from it only in the updated columns.
    let mut before = expected[0].clone();
    before[COLUMNS.iter().position(|c| *c == "vc").expect("vc")] = Some("héllo wörld 😀 ✓".into());
    before[COLUMNS.iter().position(|c| *c == "biu").expect("biu")] =
        Some("18446744073709551615".into());
    check_row(
        events[0].after.as_ref().expect("after"),
        cols,
        &before,
        "row 1 insert",
    );
    check_row(
        events[3].before.as_ref().expect("before"),
        cols,
        &before,
        "row 1 before update",
    );
    // Row 2: all NULL; its delete carries the before image.
    let row2 = events[1].after.as_ref().expect("after");
    assert_eq!(row2[0], Some(Value::Int(2)));
    assert!(
        row2[1..].iter().all(|v| *v == Some(Value::Null)),
        "{row2:?}"
    );
    assert_eq!(
        events[4].before.as_ref().expect("before")[0],
        Some(Value::Int(2))
    );

    // Spot checks of the exact forms.
    let r1 = events[0].after.as_ref().expect("after");
    let col = |n: &str| COLUMNS.iter().position(|c| *c == n).expect("column");
    assert_eq!(r1[col("biu")], Some(Value::UInt(u64::MAX)));
    assert_eq!(r1[col("t6")], Some(Value::Time("-00:00:01.500000".into())));
    assert_eq!(
        r1[col("dt6")],
        Some(Value::Timestamp("2024-02-29T23:59:59.999999".into()))
    );
    assert_eq!(
        r1[col("ts6")],
        Some(Value::TimestampTz("2038-01-19T03:14:07.999999Z".into()))
    );
    assert_eq!(r1[col("lvc")], Some(Value::Text("café € ÿ".into())));
    assert_eq!(r1[col("bn")], Some(Value::Bytes(vec![1, 0, 0, 0])));
    assert_eq!(r1[col("vb")], Some(Value::Bytes(vec![0xFF, 0, 0xFE, 0x80])));
    assert_eq!(r1[col("e")], Some(Value::Text("green".into())));
    assert_eq!(r1[col("s")], Some(Value::Set(vec!["a".into(), "d".into()])));
    assert_eq!(r1[col("bt")], Some(Value::UInt(513)));
    assert_eq!(
        r1[col("dt0")],
        Some(Value::Timestamp("0000-00-00T00:00:00".into()))
    );
    assert!(
        matches!(r1[col("j")], Some(Value::Json(_))),
        "MariaDB JSON is JSON: {:?}",
        r1[col("j")]
    );
    // Positions: one transaction per statement (autocommit), ordinal 1 each.
    for e in &events {
        let logtide::position::Position::Mysql(p) = &e.position else {
            panic!("mysql position")
        };
        assert_eq!(p.ordinal, 1);
        assert!(p.gtid.is_some(), "MariaDB GTID");
        assert!(e.commit_ts_ms.is_some());
    }
    stream.stop();
}

#[test]
fn every_type_round_trips_with_full_metadata() {
    type_suite(MariaServer::get());
}

#[test]
fn every_type_round_trips_with_minimal_metadata() {
    let server = MariaServer::builder().row_metadata("MINIMAL").start();
    type_suite(&server);
}

#[test]
fn every_type_round_trips_without_metadata() {
    let server = MariaServer::builder().row_metadata("NO_LOG").start();
    type_suite(&server);
}

#[test]
fn twenty_megabyte_row_is_reassembled() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB, t LONGTEXT)",
    );
    let start = server.binlog_position();
    server.sql(&db, "INSERT INTO big VALUES (1, REPEAT('ab', 10485760), REPEAT('é', 100)); INSERT INTO big VALUES (2, 'x', 'y')");
    let end = server.binlog_position();
    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        16,
    );
    let events = Stream::changes(stream.until(&end, Duration::from_secs(120)));
    assert_eq!(events.len(), 2);
    let row = events[0].after.as_ref().expect("after");
    let Some(Value::Bytes(b)) = &row[1] else {
        panic!("bytes: {:?}", row[1].as_ref().map(|_| "other"))
    };
    assert_eq!(b.len(), 20 * 1024 * 1024);
    assert!(b.chunks(2).all(|c| c == b"ab"));
    assert_eq!(row[2], Some(Value::Text("é".repeat(100))));
    assert_eq!(
        events[1].after.as_ref().expect("after")[1],
        Some(Value::Bytes(b"x".to_vec()))
    );
    stream.stop();
}

#[test]
fn signedness_after_year_and_enum_columns() {
    // The table map's signedness bits cover numeric columns only: a YEAR, ENUM or CHAR
    // column in between must not shift them.
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE sg (y YEAR, e ENUM('x'), c CHAR(2), a INT UNSIGNED, b INT, u BIGINT UNSIGNED, PRIMARY KEY (b))");
    let start = server.binlog_position();
    server.sql(
        &db,
        "INSERT INTO sg VALUES (2000, 'x', 'c', 4294967295, -1, 18446744073709551615)",
    );
    let end = server.binlog_position();
    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        16,
    );
    let events = Stream::changes(stream.until(&end, Duration::from_secs(60)));
    assert_eq!(
        events[0].after,
        Some(vec![
            Some(Value::Int(2000)),
            Some(Value::Text("x".into())),
            Some(Value::Text("c".into())),
            Some(Value::UInt(4294967295)),
            Some(Value::Int(-1)),
            Some(Value::UInt(u64::MAX)),
        ])
    );
    assert_eq!(events[0].table.key, vec![4]);
    stream.stop();
}
