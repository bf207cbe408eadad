//! Sink throughput: the same generated change events (default 1,000,000, delivered in
//! pipeline-sized batches of 4096) into the file sink (fsync per batch), the HTTP sink
//! against a local receiver that only counts, and the NATS JetStream sink (private
//! `nats-server -js`, file storage), in one run. Prints events/s and the ratio to the file
//! sink. Generation of the events is inside the timed loop for every sink alike.
//!
//! `cargo bench --bench sink_throughput -- [events] [nats-url]`
//! (without a URL a private nats-server is started on a free port).

#[path = "../tests/common/receiver.rs"]
mod receiver;
#[path = "../tests/sink_util/mod.rs"]
mod sink_util;

use logtide::config::SinkConfig;
use logtide::event::ChangeEvent;
use logtide::sink::{AnySink, Sink};
use std::sync::Arc;
use std::time::Instant;

const BATCH: usize = 4096;

fn batch(t: &Arc<logtide::event::TableSchema>, start: usize, n: usize) -> Vec<ChangeEvent> {
    (start..start + n)
        .map(|i| sink_util::insert(t, 0x1_0000 + i as u64 * 16, 1, i as i64))
        .collect()
}

async fn run(
    label: &str,
    cfg: &SinkConfig,
    total: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut sink = AnySink::build(cfg).await?;
    let t = sink_util::table("users");
    let t0 = Instant::now();
    let mut done = 0;
    while done < total {
        let n = BATCH.min(total - done);
        let b = batch(&t, done, n);
        sink.deliver(&b).await?;
        done += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    println!("{label:<34} {total} events in {secs:>7.2}s = {rate:>10.0} events/s");
    Ok(rate)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let total: usize = args
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let nats_url = args.get(1).cloned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let file_cfg: SinkConfig = toml::from_str(&format!(
            "kind = \"file\"\nname = \"file\"\npath = \"{}\"",
            dir.path().join("out.jsonl").display()
        ))?;
        let file = run("file (fsync per batch)", &file_cfg, total).await?;

        let rx = receiver::Receiver::start_on(
            0,
            Arc::new(|_r: &receiver::Request, _| receiver::Reply::ok()),
            true,
        )
        .await;
        let http_cfg: SinkConfig = toml::from_str(&format!(
            "kind = \"http\"\nname = \"http\"\nurl = \"{}\"\nformat = \"ndjson\"",
            rx.url("/")
        ))?;
        let http = run("http (ndjson, counting receiver)", &http_cfg, total).await?;
        assert_eq!(rx.counted(), total as u64, "receiver counted every event");

        let (_server, url) = match nats_url {
            Some(u) => (None, u),
            None => {
                let s = sink_util::NatsServer::start(&dir.path().join("nats")).await;
                let u = s.url();
                (Some(s), u)
            }
        };
        let nats_cfg: SinkConfig = toml::from_str(&format!(
            "kind = \"nats\"\nname = \"nats\"\nurl = \"{url}\"\nsubject = \"bench.{{table}}\"\nstream = {{ name = \"BENCH{}\", subjects = [\"bench.>\"] }}",
            std::process::id()
        ))?;
        let nats = run("nats jetstream (file storage)", &nats_cfg, total).await?;
        // The same into a memory-storage stream: shows how much is the server's disk.
        let mem_cfg: SinkConfig = toml::from_str(&format!(
            "kind = \"nats\"\nname = \"natsmem\"\nurl = \"{url}\"\nsubject = \"benchmem.{{table}}\"\nstream = {{ name = \"BENCHMEM{}\", subjects = [\"benchmem.>\"], storage = \"memory\" }}",
            std::process::id()
        ))?;
        let mem = run("nats jetstream (memory storage)", &mem_cfg, total).await?;

        println!("ratio http/file = {:.2}", http / file);
        println!("ratio nats/file = {:.2}", nats / file);
        println!("ratio nats(memory)/file = {:.2}", mem / file);
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
