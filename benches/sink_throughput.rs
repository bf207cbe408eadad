//! Sink throughput: the same generated change events (default 1,000,000, delivered in
//! pipeline-sized batches of 4096) into the file sink (fsync per batch), the HTTP sink
//! against a local receiver that only counts, and the NATS JetStream sink (private
//! `nats-server -js`, file storage), in one run. Prints events/s and the ratio to the file
//! sink. Generation of the events is inside the timed loop for every sink alike. Also prints
//! the CPU time per event of this process (generation, encoding, the sink's client side,
//! and for http the receiver) and, for the private nats-server, of the server: on a small
//! machine the NATS figure is bounded by their sum.
//!
//! Ends with `RESULT|...` lines (see scripts/bench_lib.sh) for scripts/bench.sh's summary:
//! each network sink against the file sink as its reference, one run each, so min, median
//! and max are the same figure; no RSS (one process runs every sink).
//!
//! `cargo bench --bench sink_throughput -- [events] [nats-url]`
//! (without a URL a private nats-server is started on a free port; `BENCH_BATCH` sets the
//! batch size, default 4096).

#[path = "../tests/common/port.rs"]
pub mod port;
#[path = "../tests/common/receiver.rs"]
mod receiver;
#[path = "../tests/sink_util/mod.rs"]
mod sink_util;
/// The two test helpers above find free ports at `crate::common::port`, as in the test binary.
mod common {
    pub use super::port;
}

use logtide::config::SinkConfig;
use logtide::event::ChangeEvent;
use logtide::sink::{AnySink, Sink};
use std::sync::Arc;
use std::time::Instant;

/// Pipeline-sized batches, as `pipeline.max_batch_events` defaults to.
fn batch_size() -> usize {
    std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

/// One sink's figures: events/s, and CPU µs per event of this process when known.
struct Figures {
    rate: f64,
    cpu_us: Option<f64>,
}

impl Figures {
    /// A `RESULT|...` line: `workload`, `tool`, the rate as min, median and max.
    fn result(&self, workload: &str, tool: &str) -> String {
        let cpu = self.cpu_us.map_or("-".into(), |c| format!("{c:.2}"));
        let r = format!("{:.0}", self.rate);
        format!("RESULT|{workload}|{tool}|{r}|{r}|{r}|-|{cpu}")
    }
}

/// CPU seconds (user + system) used so far by process `pid` ("self" for this one).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split(' ').skip(11);
    let ticks: f64 = f.next()?.parse::<f64>().ok()? + f.next()?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux architecture this runs on.
    Some(ticks / 100.0)
}

fn batch(t: &Arc<logtide::event::TableSchema>, start: usize, n: usize) -> Vec<ChangeEvent> {
    (start..start + n)
        .map(|i| sink_util::insert(t, 0x1_0000 + i as u64 * 16, 1, i as i64))
        .collect()
}

async fn run(
    label: &str,
    cfg: &SinkConfig,
    total: usize,
    server_pid: Option<u32>,
) -> Result<Figures, Box<dyn std::error::Error>> {
    let mut sink = AnySink::build(cfg).await?;
    let t = sink_util::table("users");
    let size = batch_size();
    let server = server_pid.map(|p| p.to_string());
    let cpu0 = (cpu_secs("self"), server.as_deref().and_then(cpu_secs));
    let t0 = Instant::now();
    let mut done = 0;
    while done < total {
        let n = size.min(total - done);
        let b = batch(&t, done, n);
        sink.deliver(&b).await?;
        done += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    let per_event = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a) * 1e6 / total as f64),
        _ => None,
    };
    let show = |v: Option<f64>| v.map_or("    -".into(), |v| format!("{v:>5.2}"));
    let cpu_us = per_event(cpu0.0, cpu_secs("self"));
    println!(
        "{label:<34} {total} events in {secs:>7.2}s = {rate:>10.0} events/s   cpu us/event: this process {}, nats-server {}",
        show(cpu_us),
        show(per_event(cpu0.1, server.as_deref().and_then(cpu_secs))),
    );
    Ok(Figures { rate, cpu_us })
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
        let file = run("file (fsync per batch)", &file_cfg, total, None).await?;

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
        let http = run("http (ndjson, counting receiver)", &http_cfg, total, None).await?;
        assert_eq!(rx.counted(), total as u64, "receiver counted every event");

        let (server, url) = match nats_url {
            Some(u) => (None, u),
            None => {
                let s = sink_util::NatsServer::start(&dir.path().join("nats")).await;
                let u = s.url();
                (Some(s), u)
            }
        };
        let pid = server.as_ref().and_then(sink_util::NatsServer::pid);
        let nats_cfg: SinkConfig = toml::from_str(&format!(
            "kind = \"nats\"\nname = \"nats\"\nurl = \"{url}\"\nsubject = \"bench.{{table}}\"\nstream = {{ name = \"BENCH{}\", subjects = [\"bench.>\"] }}",
            std::process::id()
        ))?;
        let nats = run("nats jetstream (file storage)", &nats_cfg, total, pid).await?;
        // The same into a memory-storage stream: shows how much is the server's disk.
        let mem_cfg: SinkConfig = toml::from_str(&format!(
            "kind = \"nats\"\nname = \"natsmem\"\nurl = \"{url}\"\nsubject = \"benchmem.{{table}}\"\nstream = {{ name = \"BENCHMEM{}\", subjects = [\"benchmem.>\"], storage = \"memory\" }}",
            std::process::id()
        ))?;
        let mem = run("nats jetstream (memory storage)", &mem_cfg, total, pid).await?;

        println!("ratio http/file = {:.2}", http.rate / file.rate);
        println!("ratio nats/file = {:.2}", nats.rate / file.rate);
        println!("ratio nats(memory)/file = {:.2}", mem.rate / file.rate);
        for (what, f) in [
            ("http (NDJSON, counting receiver)", &http),
            ("nats JetStream (file storage)", &nats),
            ("nats JetStream (memory storage)", &mem),
        ] {
            let workload = format!("Sink {what} vs file sink, {total} generated events");
            println!("{}", f.result(&workload, "logtide"));
            println!("{}", file.result(&workload, "file sink"));
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
