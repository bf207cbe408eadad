//! Commit-to-file latency: inserts single rows at a fixed rate into a table a running
//! `logtide` streams to a JSONL file, and measures, per row, the time from the INSERT's
//! commit returning to the client until the row's event is in the file.
//!
//! logtide appends a batch and then fdatasyncs it before the next batch, so the time the line
//! becomes visible is a lower bound of "fsynced" by one fdatasync (~0.1–1 ms here); the
//! report says so.
//!
//!   cargo bench --bench pg_latency -- <conninfo> <table> <jsonl file> [rows=200] [rate=20]

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 3 {
        eprintln!("usage: pg_latency <conninfo> <table> <jsonl file> [rows] [rate]");
        std::process::exit(2);
    }
    let rows: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let rate: f64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(20.0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&args[0], tokio_postgres::NoTls).await?;
        let conn_task = tokio::spawn(conn);
        let path = std::path::PathBuf::from(&args[2]);
        let mut file = std::fs::OpenOptions::new().read(true).open(&path)?;
        let mut offset = file.metadata()?.len();
        let mut lat = Vec::with_capacity(rows);
        let period = Duration::from_secs_f64(1.0 / rate);
        let sql = format!("INSERT INTO {} (id, note) VALUES ($1, 'latency probe')", args[1]);
        let stmt = client.prepare(&sql).await?;
        let base: i64 = std::process::id() as i64 * 1_000_000;
        let mut buf = Vec::new();
        for i in 0..rows {
            let next = Instant::now() + period;
            let id = base + i as i64;
            client.execute(&stmt, &[&id]).await?;
            let committed = Instant::now();
            let needle = format!("\"id\":{id}");
            let deadline = committed + Duration::from_secs(5);
            loop {
                let len = file.metadata()?.len();
                if len > offset {
                    file.seek(SeekFrom::Start(offset))?;
                    buf.clear();
                    file.read_to_end(&mut buf)?;
                    if let Some(nl) = buf.iter().rposition(|&b| b == b'\n') {
                        offset += nl as u64 + 1;
                        if String::from_utf8_lossy(&buf[..=nl]).contains(&needle) {
                            lat.push(committed.elapsed());
                            break;
                        }
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("row {id} did not arrive within 5 s").into());
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            tokio::time::sleep_until(next.into()).await;
        }
        drop(client);
        let _ = conn_task.await;
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "latency commit->line visible in file ({} rows at {}/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lat.len(),
            rate,
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            pct(1.0).as_secs_f64() * 1e3
        );
        Ok(())
    })
}
