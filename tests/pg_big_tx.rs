//! A transaction of 1,000,000 rows streams through with bounded memory: the server streams
//! it before commit (pgoutput protocol 2), logtide spills it to disk and delivers it at the
//! commit; peak RSS of the logtide process stays under the bound.

use crate::common::pg::{PgServer, PASSWORD, PASSWORD_ENV};
use crate::common::run::{kill9, logs, spawn_run, wait_until, Workdir};
use std::time::Duration;

const ROWS: usize = 1_000_000;
const RSS_LIMIT_KB: u64 = 128 * 1024;

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn line_count(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_streams_with_bounded_memory() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE big (id int PRIMARY KEY, v text)")
        .await;
    let w = Workdir::new();
    let name = format!("big_{}", std::process::id());
    w.write_config(&format!(
        "{}backfill = \"never\"\n",
        db.server.source_toml(db.name(), &name)
    ));
    let mut child = spawn_run(&w, &[], &[(PASSWORD_ENV, PASSWORD)]);
    let slot = format!("logtide_{name}");
    assert!(wait_until(Duration::from_secs(60), || db
        .server
        .slot_streaming(&slot)));
    db.exec(&format!(
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    let ok = wait_until(Duration::from_secs(300), || line_count(&w.out()) >= ROWS);
    let rss = peak_rss_kb(child.id());
    kill9(&mut child);
    assert!(
        ok,
        "only {} of {ROWS} events\n{}",
        line_count(&w.out()),
        logs(&w)
    );
    assert_eq!(line_count(&w.out()), ROWS);
    assert!(rss > 0, "could not read the peak RSS");
    assert!(
        rss < RSS_LIMIT_KB,
        "peak RSS {rss} kB over the {RSS_LIMIT_KB} kB bound"
    );
    eprintln!("1M-row transaction: peak RSS {} MB", rss / 1024);
}
