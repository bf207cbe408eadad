//! The text-format decoder against a real server's output: user types resolved through
//! pg_type, and values whose decoded form can be checked against the server itself
//! (timestamptz in another TimeZone vs UTC, intervals vs IntervalStyle iso_8601).
//! (End-to-end round-trips through replication are in `pg_stream` and `pg_source`.)

use crate::common::pg::PgServer;
use logtide::source::postgres::types::{decode_text, PgType, TypeCache};
use logtide::value::Value;
use std::sync::Arc;

fn decode_rows(types: &[PgType], rows: &[Vec<Option<String>>]) -> Vec<Vec<Value>> {
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(types)
                .map(|(v, t)| match v {
                    None => Value::Null,
                    Some(s) => decode_text(t, s.as_bytes())
                        .unwrap_or_else(|e| panic!("{s:?} as {t:?}: {e}")),
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn user_types_resolve_through_pg_type() {
    let db = PgServer::get().fresh_db();
    db.exec(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN posint AS int CHECK (VALUE > 0);
         CREATE DOMAIN moods AS mood[];
         CREATE DOMAIN posint2 AS posint;
         CREATE TYPE pair AS (a int, b text);
         CREATE TABLE t (m mood, ms mood[], p posint, ps posint[], d moods, p2 posint2,
                         c pair, cs pair[], r int4range, ip inet, ips inet[]);
         INSERT INTO t VALUES ('happy', '{sad,NULL,happy}', 7, '{1,2}', '{happy}', 3,
                               '(1,\"x y\")', ARRAY['(1,a)'::pair, NULL], '[1,5)',
                               '10.0.0.1', '{10.0.0.1,::1}');",
    )
    .await;
    let sql = "SELECT * FROM t";
    let oids = db.column_oids(sql).await;
    let mut cache = TypeCache::new();
    cache
        .resolve(db.client().await, &oids)
        .await
        .expect("resolve");
    let arr = |t: PgType| PgType::Array {
        elem: Arc::new(t),
        delim: b',',
    };
    let types: Vec<PgType> = oids.iter().map(|o| cache.get(*o)).collect();
    assert_eq!(
        types,
        vec![
            PgType::Enum,
            arr(PgType::Enum),
            PgType::Int,
            arr(PgType::Int),
            arr(PgType::Enum),
            PgType::Int,
            PgType::Other,
            arr(PgType::Other),
            PgType::Other,
            PgType::Other,
            arr(PgType::Other),
        ]
    );
    let rows = db.text_rows(sql).await;
    let t = |s: &str| Value::Text(s.into());
    assert_eq!(
        decode_rows(&types, &rows),
        vec![vec![
            t("happy"),
            Value::Array(vec![t("sad"), Value::Null, t("happy")]),
            Value::Int(7),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Array(vec![t("happy")]),
            Value::Int(3),
            t("(1,\"x y\")"),
            Value::Array(vec![t("(1,a)"), Value::Null]),
            t("[1,5)"),
            t("10.0.0.1"),
            Value::Array(vec![t("10.0.0.1"), t("::1")]),
        ]]
    );
    // Resolving known OIDs again changes nothing.
    let before: Vec<PgType> = oids.iter().map(|o| cache.get(*o)).collect();
    cache
        .resolve(db.client().await, &oids)
        .await
        .expect("resolve again");
    assert_eq!(
        oids.iter().map(|o| cache.get(*o)).collect::<Vec<_>>(),
        before
    );
    assert_eq!(cache.get(0xFFFF_FFF0), PgType::Other);
}

/// Values whose text does not depend on session settings: decoded form is the text.
#[tokio::test]
async fn builtin_types_decode_the_servers_output() {
    let db = PgServer::get().fresh_db();
    let sql = "SELECT true, (-32768)::int2, 2147483647::int4, (-9223372036854775808)::int8,
                      4294967295::oid, 123.4500::numeric, 'NaN'::numeric, '-Infinity'::numeric,
                      1.1::float4, 0.1::float8, 'NaN'::float4, '-Infinity'::float8,
                      'héllo'::text, 'ab '::char(4), 'x'::varchar, 'n'::name, 'c'::\"char\",
                      '\\x00ff'::bytea, 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid,
                      '{\"a\": [1, 2.50]}'::json, '{\"a\": [1, 2.50]}'::jsonb,
                      '2024-02-29'::date, 'infinity'::date, '0044-03-15 BC'::date,
                      '24:00:00'::time, '04:05:06.789'::time, '04:05:06+05:30'::timetz,
                      '2024-01-02 03:04:05.000001'::timestamp, '-infinity'::timestamp,
                      '{{1,NULL},{3,4}}'::int[], '[2:3]={5,6}'::int[],
                      ARRAY['a b', 'q\"x', 'b\\s', NULL, '']::text[], ARRAY['\\x01'::bytea]";
    let oids = db.column_oids(sql).await;
    let cache = TypeCache::new();
    let types: Vec<PgType> = oids.iter().map(|o| cache.get(*o)).collect();
    let rows = db.text_rows(sql).await;
    let got = decode_rows(&types, &rows).remove(0);
    let t = |s: &str| Value::Text(s.into());
    let want = vec![
        Value::Bool(true),
        Value::Int(-32768),
        Value::Int(2147483647),
        Value::Int(i64::MIN),
        Value::Int(4294967295),
        Value::Decimal("123.4500".into()),
        Value::Decimal("NaN".into()),
        Value::Decimal("-Infinity".into()),
        Value::Float(1.1),
        Value::Float(0.1),
        Value::Float(f64::NAN),
        Value::Float(f64::NEG_INFINITY),
        t("héllo"),
        t("ab  "),
        t("x"),
        t("n"),
        t("c"),
        Value::Bytes(vec![0, 255]),
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        Value::Json("{\"a\": [1, 2.50]}".into()),
        Value::Json("{\"a\": [1, 2.50]}".into()),
        Value::Date("2024-02-29".into()),
        Value::Date("infinity".into()),
        Value::Date("-0043-03-15".into()),
        Value::Time("24:00:00".into()),
        Value::Time("04:05:06.789".into()),
        Value::Time("04:05:06+05:30".into()),
        Value::Timestamp("2024-01-02T03:04:05.000001".into()),
        Value::Timestamp("-infinity".into()),
        Value::Array(vec![
            Value::Array(vec![Value::Int(1), Value::Null]),
            Value::Array(vec![Value::Int(3), Value::Int(4)]),
        ]),
        Value::Array(vec![Value::Int(5), Value::Int(6)]),
        Value::Array(vec![t("a b"), t("q\"x"), t("b\\s"), Value::Null, t("")]),
        Value::Array(vec![Value::Bytes(vec![1])]),
    ];
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let same = match (g, w) {
            (Value::Float(a), Value::Float(b)) if a.is_nan() => b.is_nan(),
            _ => g == w,
        };
        assert!(same, "column {i}: got {g:?}, want {w:?}");
    }
    // float4 keeps its printed decimal in JSON.
    let mut out = Vec::new();
    got[8].write_json(&mut out).expect("json");
    assert_eq!(out, b"1.1");
    // jsonb is emitted as its own (normalised) text.
    let jsonb = db
        .text_rows("SELECT '{\"a\": [1, 2.50]}'::jsonb")
        .await
        .remove(0)
        .remove(0);
    assert_eq!(jsonb.as_deref(), Some("{\"a\": [1, 2.50]}"));
}

/// timestamptz printed in other time zones decodes to the same UTC instant as printed in
/// UTC; intervals in the default style decode to what the server prints in iso_8601.
#[tokio::test]
async fn timestamptz_and_interval_match_the_server() {
    let db = PgServer::get().fresh_db();
    db.exec(
        "CREATE TABLE v (ts timestamptz, iv interval);
         INSERT INTO v VALUES
           ('2024-01-02 03:04:05.123456+00', '1 year 2 mons 3 days 04:05:06.5'),
           ('2024-12-31 23:30:00-02', '-1 days +02:00:00'),
           ('1900-03-01 00:00:00+00', '-1 years -2 mons +3 days -04:05:06'),
           ('0044-03-15 12:00:00+00 BC', '1 day -00:00:01'),
           ('294276-12-31 23:59:59.999999+00', '0'),
           ('infinity', '-00:00:00.000001'),
           ('2000-02-29 00:00:00.5+00', '100:00:00'),
           (NULL, NULL);",
    )
    .await;
    let client = db.client().await;
    let select = "SELECT ts, iv FROM v ORDER BY ctid";
    client
        .batch_execute("SET TimeZone = 'UTC'; SET IntervalStyle = postgres")
        .await
        .expect("set");
    let utc = db.text_rows(select).await;
    client
        .batch_execute("SET IntervalStyle = iso_8601")
        .await
        .expect("set");
    let iso = db.text_rows(select).await;
    let types = [PgType::TimestampTz, PgType::Interval];
    let want = decode_rows(&types, &utc);
    for (zone, style) in [
        ("Asia/Kolkata", "postgres"),
        ("America/St_Johns", "postgres_verbose"),
        ("Europe/Amsterdam", "iso_8601"),
        ("Pacific/Chatham", "postgres"),
    ] {
        client
            .batch_execute(&format!(
                "SET TimeZone = '{zone}'; SET IntervalStyle = {style}"
            ))
            .await
            .expect("set");
        let rows = db.text_rows(select).await;
        assert_eq!(
            decode_rows(&types, &rows),
            want,
            "TimeZone {zone}, IntervalStyle {style}"
        );
    }
    for (w, i) in want.iter().zip(&iso) {
        match (&w[1], &i[1]) {
            (Value::Interval(got), Some(server)) => assert_eq!(got, server),
            (Value::Null, None) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        want[0][0],
        Value::TimestampTz("2024-01-02T03:04:05.123456Z".into())
    );
    assert_eq!(
        want[1][0],
        Value::TimestampTz("2025-01-01T01:30:00Z".into())
    );
    assert_eq!(
        want[3][0],
        Value::TimestampTz("-0043-03-15T12:00:00Z".into())
    );
    assert_eq!(want[5][0], Value::TimestampTz("infinity".into()));
}
