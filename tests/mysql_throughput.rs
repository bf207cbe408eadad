//! The MySQL source alone (no pipeline, no sink): how fast `run()` decodes a binlog range
//! into `SourceMessage`s. Not a timed test: run it in release and read the figures,
//! `cargo test --release --test main -- mysql_throughput:: --ignored --nocapture`.

use crate::common::mariadb::{checkpoint, source_config, MariaServer, Stream};
use logtide::source::SourceMessage;
use std::time::{Duration, Instant};

fn measure(server: &MariaServer, db: &str, workload: &str, expected: usize) {
    let start = server.binlog_position();
    server.sql(db, workload);
    let end = server.binlog_position();
    let mut stream = Stream::start(
        source_config(server, db, ""),
        Some(checkpoint(&start.0, start.1)),
        16384,
    );
    let t = Instant::now();
    let msgs = stream.until(&end, Duration::from_secs(600));
    let took = t.elapsed();
    stream.stop();
    let n = msgs
        .iter()
        .filter(|m| matches!(m, SourceMessage::Change(_)))
        .count();
    assert_eq!(n, expected);
    eprintln!(
        "{n} row changes in {took:?}: {:.0} events/s (includes connect and validation)",
        n as f64 / took.as_secs_f64()
    );
}

#[test]
#[ignore = "throughput figures, run in release by hand"]
fn source_only_throughput() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id BIGINT PRIMARY KEY, a INT, b VARCHAR(100), c DOUBLE, d DATETIME(6), e VARCHAR(40))",
    );
    let mut bulk = String::new();
    for i in 0..200 {
        bulk.push_str(&format!(
            "INSERT INTO t SELECT seq, seq % 1000, REPEAT('x', 90), seq * 1.5, '2024-01-01 00:00:00.123456', MD5(seq) FROM seq_{}_to_{};",
            i * 1000 + 1,
            i * 1000 + 1000
        ));
    }
    let t = Instant::now();
    let mut idle = Stream::start(source_config(server, &db, ""), None, 16);
    assert!(idle.next(Duration::from_secs(60)).is_some());
    eprintln!(
        "startup (connect, validation, dump) until the first checkpoint: {:?}",
        t.elapsed()
    );
    idle.stop();
    eprint!("bulk (1k-row transactions): ");
    measure(server, &db, &bulk, 200_000);
    eprint!("one transaction updating every row: ");
    measure(server, &db, "UPDATE t SET a = a + 1", 200_000);
    let single: String = (1..=20_000)
        .map(|i| {
            format!(
                "INSERT INTO t VALUES ({}, 1, 'y', 1.5, '2024-01-01', 'z');",
                1_000_000 + i
            )
        })
        .collect();
    eprint!("single-row transactions: ");
    measure(server, &db, &single, 20_000);
}
