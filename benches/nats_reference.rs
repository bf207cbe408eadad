//! NATS JetStream physical limit: a bare async-nats publisher that sends exactly what
//! logtide's nats sink sends, the way it sends it, with nothing else in the process. The
//! end-to-end figure of `scripts/bench_nats.sh` is compared against this one.
//!
//! Same as the sink ([`logtide::sink::nats`]):
//! * payloads: the event JSON lines of a file logtide's file sink wrote for the same binlog
//!   range (read into memory before the clock starts), one message per line;
//! * subject: the one given (the script renders logtide's template for its single table);
//! * `Nats-Msg-Id`: `<source>:<cursor>` from the event's `source`, made header-safe and
//!   bounded as the sink does;
//! * acks: messages go in batches of `BENCH_BATCH` (default 4096, the pipeline's
//!   `max_batch_events`), each cut into chunks of the sink's default `batch.max_events`; at
//!   most [`NATS_ACK_WINDOW`] acks are outstanding (oldest awaited first) and every ack of a
//!   batch has arrived and said "stored" before the next batch starts — where logtide would
//!   checkpoint;
//! * the JetStream context: the same ack timeout, in-flight limit and backpressure.
//!
//! Subcommands (the script calls the built binary directly):
//! * `reset <url> <stream> <subjects,...> <file|memory>`: delete the stream if it exists and
//!   create it empty (a stream that kept the previous run's `Nats-Msg-Id`s would ack the
//!   next run's messages as duplicates without storing them);
//! * `publish <url> <events.jsonl> <subject>`: the timed publish; prints a human line and
//!   `REF <messages> <seconds> <cpu seconds>` (the publish phase only: connected, payloads
//!   loaded, stream created);
//! * `count <url> <stream>`: prints the number of messages the stream stores.

use async_nats::jetstream::{self, context::PublishAckFuture, stream::StorageType};
use logtide::sink::batch::header_safe;
use logtide::sink::nats::{MSG_ID_MAX, NATS_ACK_WINDOW, NATS_DEFAULTS};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The sink's default `ack_timeout`.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// One message as the sink would build it.
struct Msg {
    payload: bytes::Bytes,
    id: String,
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split(' ').skip(11);
    let ticks: f64 = f.next()?.parse::<f64>().ok()? + f.next()?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux architecture this runs on.
    Some(ticks / 100.0)
}

fn batch_size() -> Result<usize, BoxError> {
    match std::env::var("BENCH_BATCH") {
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("BENCH_BATCH={v:?}: set a positive number of messages").into()),
        },
        Err(_) => Ok(4096),
    }
}

/// The messages of an events file, one per non-empty line.
fn load(path: &str) -> Result<Vec<Msg>, BoxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the events file {path}: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{path}:{}: not an event JSON line: {e}", n + 1))?;
        let field = |k: &str| {
            v["source"][k].as_str().map(str::to_owned).ok_or_else(|| {
                format!(
                    "{path}:{}: the event has no source.{k}: write the file with logtide's file sink",
                    n + 1
                )
            })
        };
        let id = format!(
            "{}:{}",
            header_safe(&field("name")?),
            header_safe(&field("cursor")?)
        );
        out.push(Msg {
            payload: bytes::Bytes::copy_from_slice(line.as_bytes()),
            id: logtide::identity::bounded_id(&id, MSG_ID_MAX).into_owned(),
        });
    }
    Ok(out)
}

async fn connect(url: &str) -> Result<(async_nats::Client, jetstream::Context), BoxError> {
    let opts = async_nats::ConnectOptions::new()
        .name("logtide-bench-reference")
        .request_timeout(Some(ACK_TIMEOUT));
    let client = async_nats::connect_with_options(url, opts)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    let js = jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .max_ack_inflight(NATS_ACK_WINDOW * 4)
        .ack_timeout(ACK_TIMEOUT)
        .backpressure_on_inflight(true)
        .build(client.clone());
    Ok((client, js))
}

/// Publishes `msgs` in one chunk: at most `NATS_ACK_WINDOW` acks outstanding, every ack
/// awaited before returning.
async fn chunk(js: &jetstream::Context, subject: &str, msgs: &[Msg]) -> Result<(), BoxError> {
    let window = NATS_ACK_WINDOW.min(msgs.len()).max(1);
    let mut pending: VecDeque<PublishAckFuture> = VecDeque::with_capacity(window);
    for m in msgs {
        if pending.len() >= window {
            if let Some(ack) = pending.pop_front() {
                ack.await?;
            }
        }
        let msg = jetstream::message::PublishMessage::build()
            .payload(m.payload.clone())
            .message_id(m.id.as_str());
        pending.push_back(js.send_publish(subject.to_owned(), msg).await?);
    }
    while let Some(ack) = pending.pop_front() {
        ack.await?;
    }
    Ok(())
}

async fn publish(url: &str, path: &str, subject: &str) -> Result<(), BoxError> {
    let msgs = load(path)?;
    let batch = batch_size()?;
    let (_client, js) = connect(url).await?;
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    for b in msgs.chunks(batch) {
        for c in b.chunks(NATS_DEFAULTS.0) {
            chunk(&js, subject, c).await?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_secs()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let n = msgs.len();
    let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
    println!(
        "bare async-nats publisher: {n} messages ({:.0} B average) to {subject} in {secs:.2}s = {:.0} msg/s, {:.2} cpu us/msg",
        bytes as f64 / n.max(1) as f64,
        n as f64 / secs,
        cpu * 1e6 / n.max(1) as f64
    );
    println!("REF {n} {secs:.6} {cpu:.6}");
    Ok(())
}

async fn reset(url: &str, stream: &str, subjects: &str, storage: &str) -> Result<(), BoxError> {
    let storage = match storage {
        "file" => StorageType::File,
        "memory" => StorageType::Memory,
        _ => return Err(format!("storage {storage:?}: use file or memory").into()),
    };
    let (_client, js) = connect(url).await?;
    if js.get_stream(stream).await.is_ok() {
        js.delete_stream(stream)
            .await
            .map_err(|e| format!("cannot delete stream {stream}: {e}"))?;
    }
    js.create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: subjects.split(',').map(str::to_owned).collect(),
        storage,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create stream {stream} (is the server running with -js?): {e}"))?;
    Ok(())
}

async fn count(url: &str, stream: &str) -> Result<(), BoxError> {
    let (_client, js) = connect(url).await?;
    let s = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("no stream {stream}: {e}"))?;
    let info = s
        .get_info()
        .await
        .map_err(|e| format!("no info for stream {stream}: {e}"))?;
    println!("{}", info.state.messages);
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match (arg(0), arg(1), arg(2), arg(3), arg(4)) {
            (Some("reset"), Some(url), Some(stream), Some(subjects), Some(storage)) => {
                reset(url, stream, subjects, storage).await
            }
            (Some("publish"), Some(url), Some(path), Some(subject), None) => {
                publish(url, path, subject).await
            }
            (Some("count"), Some(url), Some(stream), None, None) => count(url, stream).await,
            _ => Err("usage: nats_reference reset <url> <stream> <subjects,...> <file|memory> | publish <url> <events.jsonl> <subject> | count <url> <stream>".into()),
        }
    })
}
