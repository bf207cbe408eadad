//! The JetStream sink against a private `nats-server -js`: messages stored once when a batch
//! is delivered twice (Nats-Msg-Id), in order, on the templated subject; a stopped server
//! delays delivery but loses nothing; a batch counts as delivered only when every ack
//! arrived (also across the pipelining window), and one refused ack is noticed.

use crate::sink_util::{cursors, events, NatsServer};
use async_nats::jetstream;
use logtide::config::NatsSinkConfig;
use logtide::sink::nats::NatsSink;
use logtide::sink::Sink;
use std::time::Duration;

fn config(url: &str, stream: &str) -> NatsSinkConfig {
    let text = format!(
        "name = \"bus\"\nurl = \"{url}\"\nstream = {{ name = \"{stream}\", subjects = [\"logtide.>\"], duplicate_window = \"5m\" }}\nbatch = {{ max_events = 16 }}\nack_timeout = \"2s\"\nretry = {{ max_retries = 60, initial_backoff = \"50ms\", max_backoff = \"500ms\" }}"
    );
    toml::from_str(&text).expect("valid nats sink config")
}

/// Every message of `stream`: (subject, msg id, cursor), by sequence.
async fn stored(url: &str, stream: &str) -> Vec<(String, String, String)> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("stream");
    let n = s.info().await.expect("info").state.messages;
    let mut out = Vec::new();
    for seq in 1..=n {
        let m = s.get_raw_message(seq).await.expect("message");
        let json: serde_json::Value = serde_json::from_slice(&m.payload).expect("event json");
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((
            m.subject.to_string(),
            id,
            json["source"]["cursor"]
                .as_str()
                .expect("cursor")
                .to_owned(),
        ));
    }
    out
}

#[tokio::test]
async fn replayed_batch_is_stored_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path()).await;
    let mut sink = NatsSink::build(&config(&server.url(), "CDC1"))
        .await
        .expect("build");
    let evs = events(1, 50);
    sink.deliver(&evs).await.expect("first delivery");
    // A replay (restart from an older checkpoint) delivers the same events again.
    sink.deliver(&evs).await.expect("replay");
    sink.deliver(&evs[10..20]).await.expect("partial replay");

    let msgs = stored(&server.url(), "CDC1").await;
    assert_eq!(msgs.len(), 50, "each event stored once");
    assert_eq!(
        msgs.iter().map(|m| m.2.clone()).collect::<Vec<_>>(),
        cursors(&evs)
    );
    for (subject, _id, _cursor) in &msgs {
        assert_eq!(subject, "logtide.app.public.users");
    }
}

#[tokio::test]
async fn stopped_server_delays_but_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = NatsServer::start(dir.path()).await;
    let url = server.url();
    let mut sink = NatsSink::build(&config(&url, "CDC2")).await.expect("build");
    let first = events(1, 20);
    sink.deliver(&first).await.expect("deliver while up");

    server.kill();
    let second = events(21, 40);
    let expect: Vec<String> = cursors(&first)
        .into_iter()
        .chain(cursors(&second))
        .collect();
    let delivery = tokio::spawn(async move {
        let r = sink.deliver(&second).await;
        (sink, r)
    });
    // While the server is down nothing is acknowledged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!delivery.is_finished(), "delivery must wait for the server");
    server.restart().await;
    let (_sink, r) = tokio::time::timeout(Duration::from_secs(60), delivery)
        .await
        .expect("delivery completes after the restart")
        .expect("task");
    r.expect("deliver");

    let msgs = stored(&url, "CDC2").await;
    assert_eq!(
        msgs.iter().map(|m| m.2.clone()).collect::<Vec<_>>(),
        expect,
        "nothing lost, nothing twice, in order"
    );
}

#[tokio::test]
async fn missing_stream_stops_the_sink_with_what_to_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path()).await;
    let text = format!(
        "name = \"bus\"\nurl = \"{}\"\nsubject = \"nowhere.{{table}}\"\nretry = {{ max_retries = 2, initial_backoff = \"10ms\" }}",
        server.url()
    );
    let cfg: NatsSinkConfig = toml::from_str(&text).expect("config");
    let mut sink = NatsSink::build(&cfg).await.expect("build");
    let err = sink.deliver(&events(1, 2)).await.expect_err("must fail");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("nowhere.users"), "{err}");
}

#[tokio::test]
async fn batch_is_accepted_only_when_every_ack_arrived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path()).await;
    // One chunk larger than the ack window: publishing waits on the oldest acks midway.
    let n = logtide::sink::nats::NATS_ACK_WINDOW + 1904;
    let text = format!(
        "name = \"bus\"\nurl = \"{}\"\nstream = {{ name = \"CDC4\", subjects = [\"logtide.>\"] }}\nbatch = {{ max_events = {n} }}",
        server.url()
    );
    let cfg: NatsSinkConfig = toml::from_str(&text).expect("config");
    let mut sink = NatsSink::build(&cfg).await.expect("build");
    let evs = events(1, n);
    sink.deliver(&evs).await.expect("deliver");
    // Right when deliver returns, the stream holds every message, in order.
    let msgs = stored(&server.url(), "CDC4").await;
    assert_eq!(
        msgs.iter().map(|m| m.2.clone()).collect::<Vec<_>>(),
        cursors(&evs)
    );
}

#[tokio::test]
async fn one_refused_ack_in_the_middle_is_noticed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path()).await;
    // The stream refuses messages over 1 KiB: event 6 is padded past that, so its ack
    // (in the middle of the batch) is an error.
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    js.create_stream(jetstream::stream::Config {
        name: "CDC5".into(),
        subjects: vec!["logtide.>".into()],
        max_message_size: 1024,
        ..Default::default()
    })
    .await
    .expect("create stream");
    let dl = dir.path().join("dl.jsonl");
    let text = format!(
        "name = \"bus\"\nurl = \"{}\"\nbatch = {{ max_events = 16 }}\nretry = {{ max_retries = 2, initial_backoff = \"10ms\" }}\ndead_letter_path = {dl:?}",
        server.url()
    );
    let cfg: NatsSinkConfig = toml::from_str(&text).expect("config");
    let mut sink = NatsSink::build(&cfg).await.expect("build");
    let mut evs = events(1, 10);
    if let Some(after) = evs[5].after.as_mut() {
        after[2] = Some(logtide::value::Value::Text("x".repeat(2000)));
    }
    sink.deliver(&evs)
        .await
        .expect("accepted with one dead letter");
    // Exactly the refused message is a dead letter: every ack was looked at.
    let letters = logtide::sink::dead_letter::read_dead_letters(&dl).expect("dead letters");
    assert_eq!(
        letters.iter().map(|l| l.cursor.clone()).collect::<Vec<_>>(),
        vec![evs[5].position.cursor()]
    );
    let mut want = cursors(&evs);
    want.remove(5);
    assert_eq!(
        stored(&server.url(), "CDC5")
            .await
            .iter()
            .map(|m| m.2.clone())
            .collect::<Vec<_>>(),
        want
    );

    // With on_permanent_failure = "stop" the same refusal fails the batch.
    let cfg: NatsSinkConfig =
        toml::from_str(&format!("{text}\non_permanent_failure = \"stop\"")).expect("config");
    let mut sink = NatsSink::build(&cfg).await.expect("build");
    let err = sink
        .deliver(&evs[5..6])
        .await
        .expect_err("must not be accepted");
    assert!(!err.is_transient());
    assert!(err.to_string().contains(&evs[5].position.cursor()), "{err}");
}

#[tokio::test]
async fn full_stream_is_retried_then_stops_without_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path()).await;
    // The stream takes 5 messages, then refuses new ones (discard = new).
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    js.create_stream(jetstream::stream::Config {
        name: "CDC6".into(),
        subjects: vec!["logtide.>".into()],
        max_messages: 5,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .expect("create stream");
    let dl = dir.path().join("dl.jsonl");
    let text = format!(
        "name = \"bus\"\nurl = \"{}\"\nbatch = {{ max_events = 16 }}\nretry = {{ max_retries = 2, initial_backoff = \"10ms\" }}\ndead_letter_path = {dl:?}",
        server.url()
    );
    let cfg: NatsSinkConfig = toml::from_str(&text).expect("config");
    let mut sink = NatsSink::build(&cfg).await.expect("build");
    let evs = events(1, 10);
    let err = sink
        .deliver(&evs)
        .await
        .expect_err("a full stream is not a bad event");
    assert!(!err.is_transient());
    assert!(
        crate_chain(&err).contains("max_msgs"),
        "says what to fix: {}",
        crate_chain(&err)
    );
    assert!(!dl.exists(), "no event dead-lettered for a full stream");
}

fn crate_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
