//! The HTTP webhook sink against a local receiver: order, retries (429 + Retry-After, 500,
//! timeouts, connection refused), dead letters, signature, auth, routing.

use crate::common::receiver::{free_port, wait_for, Receiver, Reply, Request, Script};
use crate::sink_util::{cursors, dedup, events, insert, json_cursors, table};
use hmac::{Hmac, KeyInit, Mac};
use logtide::config::HttpSinkConfig;
use logtide::ops::dead_letters::resend;
use logtide::sink::dead_letter::read_dead_letters;
use logtide::sink::http::HttpSink;
use logtide::sink::Sink;
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(url: &str, extra: &str) -> HttpSinkConfig {
    let text = format!(
        "name = \"hook\"\nurl = \"{url}\"\nretry = {{ max_retries = 8, initial_backoff = \"20ms\", max_backoff = \"2s\" }}\n{extra}"
    );
    toml::from_str(&text).expect("valid http sink config")
}

fn ok() -> Script {
    Arc::new(|_r: &Request, _n| Reply::ok())
}

/// The `after.id` values of a request's events.
fn ids(r: &Request) -> Vec<i64> {
    r.items()
        .iter()
        .filter_map(|j| j["after"]["id"].as_i64())
        .collect()
}

#[tokio::test]
async fn delivers_in_order_signed_with_auth_and_idempotency_key() {
    crate::common::set_env("SINK_HTTP_TEST_TOKEN", "tok-123");
    crate::common::set_env("SINK_HTTP_TEST_SECRET", "s3cret");
    let rx = Receiver::start(ok()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        &rx.url("/hook"),
        &format!(
            "batch = {{ max_events = 10 }}\nsigning_secret_env = \"SINK_HTTP_TEST_SECRET\"\nauth = {{ kind = \"bearer\", token_env = \"SINK_HTTP_TEST_TOKEN\" }}\nheaders = {{ \"X-Team\" = \"data\" }}\ndead_letter_path = \"{}\"",
            dir.path().join("dl.jsonl").display()
        ),
    );
    let mut sink = HttpSink::build(&cfg).await.expect("build");
    let evs = events(1, 25);
    sink.deliver(&evs).await.expect("deliver");

    let reqs = rx.accepted();
    assert_eq!(reqs.len(), 3, "25 events in chunks of 10");
    assert_eq!(json_cursors(&rx.accepted_items()), cursors(&evs));
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hook");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), Some("Bearer tok-123"));
        assert_eq!(r.header("x-team"), Some("data"));
        // Idempotency key: first and last cursor of the request.
        let items = json_cursors(&r.items());
        let key = format!("{}..{}", items[0], items[items.len() - 1]);
        assert_eq!(r.header("idempotency-key"), Some(key.as_str()));
        // Signature: HMAC-SHA256(secret, timestamp + "." + body), as a receiver checks it.
        let ts = r.header("x-logtide-timestamp").expect("timestamp header");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        assert!((now - ts.parse::<i64>().expect("unix seconds")).abs() < 300);
        let sig = r.header("x-logtide-signature").expect("signature header");
        let hex = sig.strip_prefix("v1=").expect("v1= prefix");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&r.body);
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, want, "signature verifies");
    }
    assert!(!dir.path().join("dl.jsonl").exists(), "no dead letters");
}

#[tokio::test]
async fn retries_429_with_retry_after_and_500_without_losing_or_duplicating() {
    let script: Script = Arc::new(|_r: &Request, n| match n {
        0 => Reply::too_many(1),
        1 => Reply::status(500),
        2 => Reply::status(503),
        _ => Reply::ok(),
    });
    let rx = Receiver::start(script).await;
    let mut sink = HttpSink::build(&config(&rx.url("/"), "format = \"ndjson\""))
        .await
        .expect("build");
    let evs = events(1, 40);
    let t0 = Instant::now();
    sink.deliver(&evs).await.expect("deliver");
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 honoured, took {:?}",
        t0.elapsed()
    );
    assert_eq!(rx.requests().len(), 4);
    assert_eq!(
        rx.accepted()[0].header("content-type"),
        Some("application/x-ndjson")
    );
    // Failed attempts were not accepted, so the receiver holds each event exactly once.
    assert_eq!(json_cursors(&rx.accepted_items()), cursors(&evs));
}

#[tokio::test]
async fn rejected_events_become_dead_letters_and_the_stream_goes_on() {
    // The receiver rejects any request holding event 7 or 13 with 400.
    let script: Script = Arc::new(|r: &Request, _| {
        if ids(r).iter().any(|i| *i == 7 || *i == 13) {
            Reply::Status(400, vec![], "{\"error\":\"bad row\"}".into())
        } else {
            Reply::ok()
        }
    });
    let rx = Receiver::start(script).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("dl.jsonl");
    let cfg = config(
        &rx.url("/"),
        &format!(
            "batch = {{ max_events = 8 }}\ndead_letter_path = \"{}\"",
            dl.display()
        ),
    );
    let mut sink = HttpSink::build(&cfg).await.expect("build");
    let evs = events(1, 20);
    sink.deliver(&evs)
        .await
        .expect("accepted despite two bad events");

    let want: Vec<String> = evs
        .iter()
        .filter(|e| {
            let c = e.position.cursor();
            c != evs[6].position.cursor() && c != evs[12].position.cursor()
        })
        .map(|e| e.position.cursor())
        .collect();
    let got = json_cursors(&rx.accepted_items());
    assert_eq!(got, want, "every other event once, in order");
    let letters = read_dead_letters(&dl).expect("dead letters");
    assert_eq!(
        letters.iter().map(|l| l.cursor.clone()).collect::<Vec<_>>(),
        vec![evs[6].position.cursor(), evs[12].position.cursor()]
    );
    for l in &letters {
        assert_eq!(l.sink, "hook");
        assert_eq!(l.kind, "http");
        assert!(l.error.contains("400"), "{}", l.error);
        assert_eq!(
            l.event["source"]["cursor"].as_str(),
            Some(l.cursor.as_str())
        );
    }

    // Re-sending them to a receiver that now takes them empties the list.
    let rx2 = Receiver::start(ok()).await;
    let cfg2 = logtide::config::SinkConfig::Http(config(&rx2.url("/"), ""));
    let report = resend(&cfg2, &letters).await.expect("resend");
    assert_eq!(report.sent, 2);
    assert!(report.rejected.is_empty());
    assert_eq!(
        json_cursors(&rx2.accepted_items()),
        vec![evs[6].position.cursor(), evs[12].position.cursor()]
    );
}

#[tokio::test]
async fn stop_policy_fails_the_batch_instead() {
    let script: Script = Arc::new(|r: &Request, _| {
        if ids(r).contains(&3) {
            Reply::status(422)
        } else {
            Reply::ok()
        }
    });
    let rx = Receiver::start(script).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("dl.jsonl");
    let cfg = config(
        &rx.url("/"),
        &format!(
            "on_permanent_failure = \"stop\"\ndead_letter_path = \"{}\"",
            dl.display()
        ),
    );
    let mut sink = HttpSink::build(&cfg).await.expect("build");
    let err = sink.deliver(&events(1, 5)).await.expect_err("must fail");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("stop"), "{err}");
    assert!(!dl.exists());
}

#[tokio::test]
async fn slow_receiver_times_out_and_is_retried() {
    let script: Script = Arc::new(|_r: &Request, n| {
        if n == 0 {
            Reply::Delay(Duration::from_secs(3), Box::new(Reply::ok()))
        } else {
            Reply::ok()
        }
    });
    let rx = Receiver::start(script).await;
    let mut sink = HttpSink::build(&config(&rx.url("/"), "timeout = \"300ms\""))
        .await
        .expect("build");
    let evs = events(1, 10);
    let t0 = Instant::now();
    sink.deliver(&evs).await.expect("deliver");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "did not wait for the slow answer"
    );
    assert!(rx.requests().len() >= 2);
    // The timed-out request may still have been taken (a retry may repeat), but nothing is
    // lost and the de-duplicated order is the stream order.
    let got = json_cursors(&rx.accepted_items());
    assert_eq!(dedup(&got), cursors(&evs));
}

#[tokio::test]
async fn connection_refused_is_retried_until_the_receiver_is_up() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let mut sink = HttpSink::build(&config(&url, "")).await.expect("build");
    let evs = events(1, 12);
    let expect = cursors(&evs);
    let delivery = tokio::spawn(async move { sink.deliver(&evs).await });
    // Let a few attempts fail with "connection refused" first.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !delivery.is_finished(),
        "nothing acknowledged while refused"
    );
    let rx = Receiver::start_on(port, ok(), false).await;
    tokio::time::timeout(Duration::from_secs(20), delivery)
        .await
        .expect("delivery completes")
        .expect("task")
        .expect("deliver");
    assert_eq!(json_cursors(&rx.accepted_items()), expect);
}

#[tokio::test]
async fn gives_up_after_max_retries_without_acknowledging() {
    let rx = Receiver::start(Arc::new(|_r: &Request, _| Reply::status(502))).await;
    let text = format!(
        "name = \"hook\"\nurl = \"{}\"\nretry = {{ max_retries = 2, initial_backoff = \"10ms\", max_backoff = \"20ms\" }}",
        rx.url("/")
    );
    let cfg: HttpSinkConfig = toml::from_str(&text).expect("config");
    let mut sink = HttpSink::build(&cfg).await.expect("build");
    let err = sink.deliver(&events(1, 3)).await.expect_err("must fail");
    assert!(err.to_string().contains("gave up after 2 retries"), "{err}");
    assert_eq!(rx.requests().len(), 3);
    assert!(rx.accepted().is_empty());
}

#[tokio::test]
async fn bad_credentials_stop_the_sink_without_dead_letters() {
    crate::common::set_env("SINK_HTTP_TEST_PW", "hunter2");
    let rx = Receiver::start(Arc::new(|_r: &Request, _| Reply::status(401))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("dl.jsonl");
    let cfg = config(
        &rx.url("/"),
        &format!(
            "auth = {{ kind = \"basic\", username = \"u\", password_env = \"SINK_HTTP_TEST_PW\" }}\ndead_letter_path = \"{}\"",
            dl.display()
        ),
    );
    let mut sink = HttpSink::build(&cfg).await.expect("build");
    let err = sink.deliver(&events(1, 3)).await.expect_err("must fail");
    let msg = format!("{err} {err:?}");
    assert!(msg.contains("credentials"), "{msg}");
    assert!(!msg.contains("hunter2"), "secret leaked: {msg}");
    assert_eq!(rx.requests().len(), 1, "no retries, no bisection");
    assert!(!dl.exists());
}

#[tokio::test]
async fn missing_secret_env_is_named_at_build() {
    let cfg = config(
        "http://127.0.0.1:9/",
        "auth = { kind = \"bearer\", token_env = \"SINK_HTTP_TEST_UNSET_VAR\" }",
    );
    let err = HttpSink::build(&cfg).await.err().expect("fails");
    assert!(
        err.to_string().contains("SINK_HTTP_TEST_UNSET_VAR"),
        "{err}"
    );
}

#[tokio::test]
async fn table_route_filters_events() {
    let rx = Receiver::start(ok()).await;
    let cfg = config(
        &rx.url("/"),
        "tables = { include = [\"public.*\"], exclude = [\"public.audit\"] }",
    );
    let mut sink = HttpSink::build(&cfg).await.expect("build");
    let users = table("users");
    let audit = table("audit");
    let evs = vec![
        insert(&users, 0x10, 1, 1),
        insert(&audit, 0x10, 2, 2),
        insert(&users, 0x10, 3, 3),
    ];
    sink.deliver(&evs).await.expect("deliver");
    assert_eq!(
        json_cursors(&rx.accepted_items()),
        vec![evs[0].position.cursor(), evs[2].position.cursor()]
    );
    // A batch with nothing for this sink sends nothing.
    sink.deliver(&evs[1..2]).await.expect("deliver");
    wait_for("no extra request", Duration::from_millis(100), || {
        rx.requests().len() == 1
    })
    .await;
}
