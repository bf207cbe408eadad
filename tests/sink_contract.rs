//! The one contract every sink keeps, run against each of them (file, http, segment, nats)
//! through the real pipeline and checkpoint store:
//!
//! 1. order kept: what the receiver holds is the stream, in order;
//! 2. nothing acknowledged on failure: while the sink cannot deliver, the pipeline fails
//!    without moving the checkpoint;
//! 3. transient failures retried: a sink that recovers delivers everything, then the
//!    checkpoint moves.
//!
//! stdout is left out (a pipe cannot be failed or read back from inside the test). The file
//! sink has no way to make its disk fail from a test without privileges, so it runs step 1
//! and the checkpoint check only.

use crate::common::receiver::{Receiver, Reply, Request};
use crate::sink_util::{cursors, dedup, events, NatsServer};
use logtide::checkpoint::CheckpointStore;
use logtide::config::SinkConfig;
use logtide::event::ChangeEvent;
use logtide::pipeline::{Bounds, Pipeline, RetryPolicy};
use logtide::position::{Lsn, PgPosition, Position};
use logtide::sink::AnySink;
use logtide::source::SourceMessage;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const RETRY: &str =
    "retry = { max_retries = 3, initial_backoff = \"20ms\", max_backoff = \"100ms\" }";

/// One sink under test and the means to read what it delivered and to break it.
enum Harness {
    File {
        path: PathBuf,
    },
    /// http or segment: a receiver whose next `fail` requests answer 503 (-1: all).
    Http {
        rx: Receiver,
        fail: Arc<AtomicI64>,
        segment: bool,
    },
    Nats {
        server: NatsServer,
    },
}

impl Harness {
    async fn new(kind: &str, dir: &std::path::Path) -> (Harness, SinkConfig) {
        let dl = dir.join("dl.jsonl");
        match kind {
            "file" => {
                let path = dir.join("out.jsonl");
                let cfg = format!(
                    "kind = \"file\"\nname = \"c\"\npath = \"{}\"",
                    path.display()
                );
                (Harness::File { path }, toml::from_str(&cfg).expect("cfg"))
            }
            "http" | "segment" => {
                let fail = Arc::new(AtomicI64::new(0));
                let f = fail.clone();
                let rx = Receiver::start(Arc::new(move |_r: &Request, _| {
                    let n = f.load(Ordering::SeqCst);
                    if n == 0 {
                        return Reply::ok();
                    }
                    if n > 0 {
                        f.fetch_sub(1, Ordering::SeqCst);
                    }
                    Reply::status(503)
                }))
                .await;
                let cfg = if kind == "http" {
                    format!(
                        "kind = \"http\"\nname = \"c\"\nurl = \"{}\"\n{RETRY}\ndead_letter_path = \"{}\"\nbatch = {{ max_events = 2 }}",
                        rx.url("/"),
                        dl.display()
                    )
                } else {
                    crate::common::set_env("SINK_CONTRACT_WRITE_KEY", "k");
                    format!(
                        "kind = \"segment\"\nname = \"c\"\nendpoint = \"{}\"\nwrite_key_env = \"SINK_CONTRACT_WRITE_KEY\"\n{RETRY}\ndead_letter_path = \"{}\"\nbatch = {{ max_events = 2 }}\n[[mappings]]\ntable = \"public.users\"\ncall = \"identify\"\nuser_id_column = \"id\"",
                        rx.url("/v1/batch"),
                        dl.display()
                    )
                };
                (
                    Harness::Http {
                        rx,
                        fail,
                        segment: kind == "segment",
                    },
                    toml::from_str(&cfg).expect("cfg"),
                )
            }
            "nats" => {
                let server = NatsServer::start(&dir.join("nats")).await;
                let cfg = format!(
                    "kind = \"nats\"\nname = \"c\"\nurl = \"{}\"\nack_timeout = \"1s\"\nretry = {{ max_retries = 8, initial_backoff = \"100ms\", max_backoff = \"1s\" }}\ndead_letter_path = \"{}\"\nbatch = {{ max_events = 2 }}\nstream = {{ name = \"CONTRACT\" }}",
                    server.url(),
                    dl.display()
                );
                (Harness::Nats { server }, toml::from_str(&cfg).expect("cfg"))
            }
            other => panic!("no harness for {other}"),
        }
    }

    /// Cursors the receiver holds, in arrival order.
    async fn delivered(&self) -> Vec<String> {
        match self {
            Harness::File { path } => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(|l| {
                    let j: serde_json::Value = serde_json::from_str(l).expect("json line");
                    j["source"]["cursor"].as_str().expect("cursor").to_owned()
                })
                .collect(),
            Harness::Http { rx, segment, .. } => rx
                .accepted_items()
                .iter()
                .map(|j| {
                    if *segment {
                        j["messageId"]
                            .as_str()
                            .and_then(|m| m.strip_prefix("logtide-app-"))
                            .expect("messageId")
                            .to_owned()
                    } else {
                        j["source"]["cursor"].as_str().expect("cursor").to_owned()
                    }
                })
                .collect(),
            Harness::Nats { server } => {
                let client = async_nats::connect(server.url()).await.expect("connect");
                let js = async_nats::jetstream::new(client);
                let mut s = js.get_stream("CONTRACT").await.expect("stream");
                let n = s.info().await.expect("info").state.messages;
                let mut out = Vec::new();
                for seq in 1..=n {
                    let m = s.get_raw_message(seq).await.expect("message");
                    let j: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
                    out.push(j["source"]["cursor"].as_str().expect("cursor").to_owned());
                }
                out
            }
        }
    }

    /// Makes every delivery fail until [`Harness::heal`]; false if this sink cannot be
    /// failed from a test.
    fn break_it(&mut self) -> bool {
        match self {
            Harness::File { .. } => false,
            Harness::Http { fail, .. } => {
                fail.store(-1, Ordering::SeqCst);
                true
            }
            Harness::Nats { server } => {
                server.kill();
                true
            }
        }
    }

    async fn heal(&mut self) {
        match self {
            Harness::File { .. } => {}
            Harness::Http { fail, .. } => fail.store(0, Ordering::SeqCst),
            Harness::Nats { server } => server.restart().await,
        }
    }

    /// Fails the next couple of requests only (http/segment); nats: a short outage.
    async fn flap(&mut self) -> bool {
        match self {
            Harness::File { .. } => false,
            Harness::Http { fail, .. } => {
                fail.store(2, Ordering::SeqCst);
                true
            }
            Harness::Nats { server } => {
                server.kill();
                true
            }
        }
    }
}

fn boundary(after: &[ChangeEvent]) -> Position {
    let Some(Position::Postgres(p)) = after.last().map(|e| e.position.clone()) else {
        panic!("postgres events")
    };
    Position::Postgres(PgPosition::checkpoint(Lsn(p.lsn.0 + 8)))
}

/// Runs one pipeline over `events` (+ a boundary after them) with `sink`; returns the sink
/// back and whether the pipeline succeeded.
async fn run(store: &CheckpointStore, sink: AnySink, evs: &[ChangeEvent]) -> (AnySink, bool) {
    let (tx, rx) = mpsc::channel(256);
    let (wtx, _wrx) = watch::channel(store.load("app").expect("load"));
    let mut p = Pipeline {
        source: "app".into(),
        rx,
        sinks: vec![sink],
        store: store.clone(),
        checkpointed: wtx,
        bounds: Bounds::default(),
        max_batch_events: 5,
        retry: RetryPolicy {
            max_retries: Some(1),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        },
        cancel: CancellationToken::new(),
        status: logtide::status::SourceStatus::detached("app"),
        ondemand: None,
    };
    for e in evs {
        tx.send(SourceMessage::Change(e.clone()))
            .await
            .expect("send");
    }
    tx.send(SourceMessage::Boundary(boundary(evs)))
        .await
        .expect("send");
    drop(tx);
    let ok = p.run().await.is_ok();
    (p.sinks.pop().expect("sink back"), ok)
}

async fn contract(kind: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = CheckpointStore::open(&dir.path().join("state")).expect("store");
    let (mut h, cfg) = Harness::new(kind, dir.path()).await;
    let sink = AnySink::build(&cfg).await.expect("build sink");

    // 1. Order kept, checkpoint after acceptance.
    let a = events(1, 12);
    let (sink, ok) = run(&store, sink, &a).await;
    assert!(ok, "{kind}: healthy delivery");
    assert_eq!(h.delivered().await, cursors(&a), "{kind}: order kept");
    assert_eq!(store.load("app").expect("load"), Some(boundary(&a)));

    // 2. Nothing acknowledged while the sink cannot deliver.
    let b = events(13, 6);
    let sink = if h.break_it() {
        let (sink, ok) = run(&store, sink, &b).await;
        assert!(!ok, "{kind}: the pipeline must fail, not skip");
        assert_eq!(
            store.load("app").expect("load"),
            Some(boundary(&a)),
            "{kind}: checkpoint did not move"
        );
        h.heal().await;
        sink
    } else {
        eprintln!("{kind}: failure injection not possible, step 2 skipped");
        sink
    };

    // 3. Transient failures are retried: the batch (re-)delivered after a short outage.
    let flapped = h.flap().await;
    let sink_run = {
        let store = store.clone();
        let b = b.clone();
        tokio::spawn(async move { run(&store, sink, &b).await })
    };
    if flapped {
        if let Harness::Nats { .. } = h {
            tokio::time::sleep(Duration::from_millis(200)).await;
            h.heal().await;
        }
    }
    let (_sink, ok) = tokio::time::timeout(Duration::from_secs(60), sink_run)
        .await
        .expect("delivery finishes")
        .expect("task");
    assert!(ok, "{kind}: recovered delivery");
    assert_eq!(store.load("app").expect("load"), Some(boundary(&b)));
    let all: Vec<String> = cursors(&a).into_iter().chain(cursors(&b)).collect();
    // A retry may repeat events (at-least-once); de-duplicated by cursor they are the
    // stream, in order.
    assert_eq!(
        dedup(&h.delivered().await),
        all,
        "{kind}: nothing lost, order kept"
    );
}

#[tokio::test]
async fn file_sink_keeps_the_contract() {
    Box::pin(contract("file")).await;
}

#[tokio::test]
async fn http_sink_keeps_the_contract() {
    Box::pin(contract("http")).await;
}

#[tokio::test]
async fn segment_sink_keeps_the_contract() {
    Box::pin(contract("segment")).await;
}

#[tokio::test]
async fn nats_sink_keeps_the_contract() {
    Box::pin(contract("nats")).await;
}
