//! The Segment-spec sink against a local receiver: valid calls per type, required fields as
//! the Customer.io seed lists them, rows lacking them dead-lettered, basic auth with the
//! write key, messageId from the cursor.

use crate::common::receiver::{Receiver, Reply, Request};
use logtide::config::SegmentSinkConfig;
use logtide::event::{ChangeEvent, Connector, Op, SourceInfo, TableSchema};
use logtide::position::{Lsn, PgPosition, Position};
use logtide::sink::dead_letter::read_dead_letters;
use logtide::sink::segment::SegmentSink;
use logtide::sink::Sink;
use logtide::value::Value;
use serde_json::Value as Json;
use std::sync::Arc;

fn t(name: &str, cols: &[&str]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        source: Arc::new(SourceInfo {
            connector: Connector::Postgres,
            name: "app".into(),
        }),
        db: "shop".into(),
        schema: "public".into(),
        name: name.into(),
        columns: cols.iter().map(|c| c.to_string()).collect(),
        key: vec![0],
        encoded: Default::default(),
    })
}

fn ev(t: &Arc<TableSchema>, op: Op, ord: u64, row: Vec<Value>) -> ChangeEvent {
    let row: Vec<Option<Value>> = row.into_iter().map(Some).collect();
    let (before, after) = if op == Op::Delete {
        (Some(row), None)
    } else {
        (None, Some(row))
    };
    ChangeEvent {
        op,
        table: t.clone(),
        before,
        after,
        position: Position::Postgres(PgPosition {
            lsn: Lsn(0x5000),
            ordinal: ord,
        }),
        txid: Some(9),
        commit_ts_ms: Some(1_700_000_000_000),
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

const MAPPINGS: &str = r#"
[[mappings]]
table = "public.users"
call = "identify"
user_id_column = "id"
anonymous_id_column = "anon"
rename = { email_address = "email" }
on_delete = "track"
delete_event = "User Deleted"

[[mappings]]
table = "public.orders"
call = "track"
user_id_column = "user_id"
event = "Order Placed"
timestamp_column = "placed_at"
fields = ["total"]

[[mappings]]
table = "public.companies"
call = "group"
group_id_column = "id"
user_id_column = "owner"

[[mappings]]
table = "public.pages"
call = "page"
user_id_column = "user_id"
name_column = "title"

[[mappings]]
table = "public.screens"
call = "screen"
user_id_column = "user_id"
name_column = "screen"

[[mappings]]
table = "public.merges"
call = "alias"
user_id_column = "user_id"
previous_id_column = "old_id"
"#;

fn config(endpoint: &str, dl: &std::path::Path) -> SegmentSinkConfig {
    let text = format!(
        "name = \"cio\"\nendpoint = \"{endpoint}\"\nwrite_key_env = \"SINK_SEGMENT_TEST_KEY\"\ndead_letter_path = \"{}\"\nretry = {{ max_retries = 3, initial_backoff = \"10ms\" }}\n{MAPPINGS}",
        dl.display()
    );
    toml::from_str(&text).expect("valid segment config")
}

/// Checks a call against the seed's required fields; returns its type.
/// A Segment sink posting to `rx`, with its dead-letter file in a temporary directory
/// (kept alive by the returned guard).
async fn segment_sink(rx: &Receiver) -> (tempfile::TempDir, std::path::PathBuf, SegmentSink) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("dl.jsonl");
    let sink = SegmentSink::build(&config(&rx.url("/v1/batch"), &dl))
        .await
        .expect("build");
    (dir, dl, sink)
}

fn assert_valid(call: &Json) -> String {
    let ty = call["type"].as_str().expect("type").to_owned();
    let has = |k: &str| call[k].as_str().is_some_and(|s| !s.is_empty());
    match ty.as_str() {
        "identify" => assert!(has("userId") || has("anonymousId"), "{call}"),
        "track" => assert!(
            has("event") && (has("userId") || has("anonymousId")),
            "{call}"
        ),
        "group" => assert!(has("groupId"), "{call}"),
        "page" | "screen" => assert!(has("name") && has("userId"), "{call}"),
        "alias" => assert!(has("previousId") && has("userId"), "{call}"),
        other => panic!("unexpected call type {other}"),
    }
    assert!(has("messageId"), "{call}");
    ty
}

#[tokio::test]
async fn maps_every_call_type_and_dead_letters_rows_lacking_required_fields() {
    crate::common::set_env("SINK_SEGMENT_TEST_KEY", "wk_live_123");
    let rx = Receiver::start(Arc::new(|_r: &Request, _| Reply::ok())).await;
    let (_dir, dl, mut sink) = segment_sink(&rx).await;

    let users = t("users", &["id", "anon", "email_address", "plan"]);
    let orders = t("orders", &["id", "user_id", "total", "placed_at"]);
    let companies = t("companies", &["id", "owner", "name"]);
    let pages = t("pages", &["id", "user_id", "title"]);
    let screens = t("screens", &["id", "user_id", "screen"]);
    let merges = t("merges", &["id", "user_id", "old_id"]);
    let other = t("unmapped", &["id"]);
    let batch = vec![
        // 1 identify by userId, 2 identify by anonymousId only, 3 identify with neither (bad)
        ev(
            &users,
            Op::Create,
            1,
            vec![Value::Int(1), Value::Null, text("a@x.io"), text("pro")],
        ),
        ev(
            &users,
            Op::Update,
            2,
            vec![Value::Null, text("anon-9"), text("b@x.io"), text("free")],
        ),
        ev(
            &users,
            Op::Create,
            3,
            vec![Value::Null, Value::Null, text("c@x.io"), text("free")],
        ),
        // 4 track, 5 track without user (bad)
        ev(
            &orders,
            Op::Create,
            4,
            vec![
                Value::Int(10),
                Value::Int(1),
                Value::Decimal("9.50".into()),
                Value::Timestamp("2024-05-01T10:00:00".into()),
            ],
        ),
        ev(
            &orders,
            Op::Create,
            5,
            vec![
                Value::Int(11),
                Value::Null,
                Value::Decimal("1.00".into()),
                Value::Null,
            ],
        ),
        // 6 group, 7 group without id (bad)
        ev(
            &companies,
            Op::Create,
            6,
            vec![Value::Int(77), Value::Int(1), text("ACME")],
        ),
        ev(
            &companies,
            Op::Create,
            7,
            vec![Value::Null, Value::Int(1), text("Nameless")],
        ),
        // 8 page, 9 page without name (bad)
        ev(
            &pages,
            Op::Create,
            8,
            vec![Value::Int(1), Value::Int(1), text("Home")],
        ),
        ev(
            &pages,
            Op::Create,
            9,
            vec![Value::Int(2), Value::Int(1), Value::Null],
        ),
        // 10 screen, 11 screen without user (bad)
        ev(
            &screens,
            Op::Create,
            10,
            vec![Value::Int(1), Value::Int(1), text("Settings")],
        ),
        ev(
            &screens,
            Op::Create,
            11,
            vec![Value::Int(2), Value::Null, text("Settings")],
        ),
        // 12 alias, 13 alias without previousId (bad)
        ev(
            &merges,
            Op::Create,
            12,
            vec![Value::Int(1), Value::Int(1), text("anon-9")],
        ),
        ev(
            &merges,
            Op::Create,
            13,
            vec![Value::Int(2), Value::Int(1), text("")],
        ),
        // 14 delete of a user → track "User Deleted"; 15 unmapped table → skipped
        ev(
            &users,
            Op::Delete,
            14,
            vec![Value::Int(1), Value::Null, text("a@x.io"), text("pro")],
        ),
        ev(&other, Op::Create, 15, vec![Value::Int(1)]),
    ];
    sink.deliver(&batch).await.expect("deliver");

    let reqs = rx.accepted();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/batch");
    // Basic auth: write key as user name, empty password ("wk_live_123:").
    assert_eq!(r.header("authorization"), Some("Basic d2tfbGl2ZV8xMjM6"));
    let body: Json = serde_json::from_slice(&r.body).expect("json body");
    assert!(body["sentAt"].as_str().is_some());
    let calls = body["batch"].as_array().expect("batch array").clone();
    let types: Vec<String> = calls.iter().map(assert_valid).collect();
    assert_eq!(
        types,
        ["identify", "identify", "track", "group", "page", "screen", "alias", "track"]
    );
    // Spot checks of the mapping.
    assert_eq!(calls[0]["userId"], "1");
    assert_eq!(
        calls[0]["traits"],
        serde_json::json!({"email": "a@x.io", "plan": "pro"})
    );
    assert_eq!(
        calls[0]["messageId"],
        format!("logtide-app-{}", batch[0].position.cursor())
    );
    assert_eq!(calls[1]["anonymousId"], "anon-9");
    assert_eq!(calls[2]["event"], "Order Placed");
    assert_eq!(calls[2]["properties"], serde_json::json!({"total": "9.50"}));
    assert_eq!(calls[2]["timestamp"], "2024-05-01T10:00:00Z");
    assert_eq!(calls[3]["groupId"], "77");
    assert_eq!(calls[3]["userId"], "1");
    assert_eq!(calls[4]["name"], "Home");
    assert_eq!(calls[6]["previousId"], "anon-9");
    assert_eq!(calls[7]["event"], "User Deleted");

    // Exactly the rows lacking required fields are dead letters, with the reason.
    let letters = read_dead_letters(&dl).expect("dead letters");
    let bad: Vec<String> = [2, 4, 6, 8, 10, 12]
        .iter()
        .map(|&i| batch[i].position.cursor())
        .collect();
    assert_eq!(
        letters.iter().map(|l| l.cursor.clone()).collect::<Vec<_>>(),
        bad
    );
    let reasons: Vec<&str> = letters.iter().map(|l| l.error.as_str()).collect();
    assert!(
        reasons[0].contains("userId or anonymousId"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("userId or anonymousId"),
        "{}",
        reasons[1]
    );
    assert!(reasons[2].contains("groupId"), "{}", reasons[2]);
    assert!(reasons[3].contains("name"), "{}", reasons[3]);
    assert!(reasons[4].contains("userId"), "{}", reasons[4]);
    assert!(reasons[5].contains("previousId"), "{}", reasons[5]);
    assert!(letters
        .iter()
        .all(|l| l.kind == "segment" && l.event["op"].is_string()));
}

#[tokio::test]
async fn rejected_call_is_isolated_and_dead_lettered() {
    crate::common::set_env("SINK_SEGMENT_TEST_KEY", "wk_live_123");
    // The endpoint rejects any batch holding user 5.
    let rx = Receiver::start(Arc::new(|r: &Request, _| {
        if r.items().iter().any(|c| c["userId"] == "5") {
            Reply::status(400)
        } else {
            Reply::ok()
        }
    }))
    .await;
    let (_dir, dl, mut sink) = segment_sink(&rx).await;
    let users = t("users", &["id", "anon", "email_address", "plan"]);
    let batch: Vec<ChangeEvent> = (1..=9)
        .map(|i| {
            ev(
                &users,
                Op::Create,
                i,
                vec![Value::Int(i as i64), Value::Null, text("e"), text("p")],
            )
        })
        .collect();
    sink.deliver(&batch).await.expect("deliver");
    let ids: Vec<String> = rx
        .accepted_items()
        .iter()
        .map(|c| c["userId"].as_str().expect("userId").to_owned())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "6", "7", "8", "9"]);
    let letters = read_dead_letters(&dl).expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].cursor, batch[4].position.cursor());
    // The dead letter holds the change event, not the call.
    assert_eq!(letters[0].event["after"]["id"], 5);
}

/// An event whose JSON cannot be read back for mapping (a JSON column nested deeper than
/// serde_json's 128 levels) is a mapping failure with its reason, not skipped as if its
/// table were not mapped.
#[tokio::test]
async fn an_event_too_deep_to_map_is_dead_lettered_not_skipped() {
    crate::common::set_env("SINK_SEGMENT_TEST_KEY", "wk_live_123");
    let rx = Receiver::start(Arc::new(|_r: &Request, _| Reply::ok())).await;
    let (_dir, dl, mut sink) = segment_sink(&rx).await;
    let users = t("users", &["id", "anon", "email_address", "plan"]);
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let batch = vec![
        ev(
            &users,
            Op::Create,
            1,
            vec![Value::Int(1), Value::Null, text("a@x.io"), text("pro")],
        ),
        ev(
            &users,
            Op::Create,
            2,
            vec![
                Value::Int(2),
                Value::Null,
                text("b@x.io"),
                Value::Json(deep),
            ],
        ),
    ];
    sink.deliver(&batch).await.expect("deliver");
    let reqs = rx.accepted();
    assert_eq!(reqs.len(), 1);
    let body: Json = serde_json::from_slice(&reqs[0].body).expect("json body");
    let calls = body["batch"].as_array().expect("batch array");
    assert_eq!(calls.len(), 1, "only the readable event is sent");
    assert_eq!(calls[0]["userId"], "1");
    let letters = std::fs::read_to_string(&dl).expect("the dead-letter file exists");
    assert_eq!(letters.lines().count(), 1, "{letters}");
    assert!(letters.contains(&batch[1].position.cursor()), "{letters}");
    assert!(
        letters.contains("cannot be read back") && letters.contains("public.users"),
        "{letters}"
    );
}
