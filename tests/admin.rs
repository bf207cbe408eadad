//! The admin endpoint of `logtide run` against a real PostgreSQL: Prometheus metrics that
//! match what was delivered, `/health` and `/ready` across a database outage, pause and
//! resume, and the WAL-retention warning.

use crate::common::port::free_port;

use crate::common::pg::{PgServer, TestDb, PASSWORD, PASSWORD_ENV};
use crate::common::run::{
    apply_events, assert_cursors_increase, kill9, logs, spawn_run, wait_until, Workdir,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

/// Writes the config: the source, a file sink, and `[admin]` on `port` with `admin_extra`.
fn config(w: &Workdir, db: &TestDb<'_>, name: &str, port: u16, admin_extra: &str) {
    let text = format!(
        "{}status_interval = \"1s\"\n\n[admin]\nlisten = \"127.0.0.1:{port}\"\nwal_check_interval = \"1s\"\n{admin_extra}\n",
        db.server.source_toml(db.name(), name)
    );
    w.write_config(&text);
}

/// One HTTP request; `None` when nothing answers (not listening yet, or gone).
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn status_of(port: u16, path: &str) -> Option<u16> {
    http(port, "GET", path).map(|(s, _)| s)
}

/// One sample of the text exposition: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (the subset logtide writes, strictly: a malformed
/// line fails the test).
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels {line:?}"));
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(
                        chars.next(),
                        Some('"'),
                        "label value must be quoted: {line:?}"
                    );
                    let mut val = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => val.push('\n'),
                                Some(c) => val.push(c),
                                None => panic!("bad escape in {line:?}"),
                            },
                            Some('"') => break,
                            Some(c) => val.push(c),
                            None => panic!("unterminated label in {line:?}"),
                        }
                    }
                    labels.insert(key, val);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn scrape(port: u16) -> Vec<Sample> {
    let (status, body) = http(port, "GET", "/metrics").expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    parse_metrics(&body)
}

/// The value of the one sample with this name and these labels (others may exist).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn ids(events: &[serde_json::Value]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e["op"] == "c")
        .map(|e| e["after"]["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_what_was_delivered() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let name = format!("metrics_{}", std::process::id());
    let port = free_port();
    config(&w, &db, &name, port, "");
    let mut child = spawn_run(&w, &[], &env());
    assert!(
        wait_until(WAIT, || status_of(port, "/ready") == Some(200)),
        "never ready\n{}",
        logs(&w)
    );
    assert_eq!(status_of(port, "/health"), Some(200));
    db.insert_ids("t", 0, 250, 10, 1).await;
    db.exec("UPDATE t SET v = 'x' WHERE id < 7").await;
    w.wait_events(257, WAIT);
    let table = [("source", name.as_str()), ("table", "public.t")];
    let mut m = Vec::new();
    assert!(
        wait_until(WAIT, || {
            m = scrape(port);
            value(
                &m,
                "logtide_events_total",
                &[table[0], table[1], ("op", "c")],
            ) == Some(250.0)
                && value(
                    &m,
                    "logtide_events_total",
                    &[table[0], table[1], ("op", "u")],
                ) == Some(7.0)
                && value(&m, "logtide_lag_bytes", &[table[0]]).is_some()
                && value(&m, "logtide_slot_retained_bytes", &[table[0]]).is_some()
        }),
        "metrics never matched the 250 inserts and 7 updates:\n{m:#?}\n{}",
        logs(&w)
    );
    // Exactly what the sink got.
    assert_eq!(ids(&w.events()).len(), 250);
    let lag = value(&m, "logtide_lag_seconds", &[table[0]]).expect("lag_seconds");
    assert!((0.0..60.0).contains(&lag), "lag {lag}");
    assert_eq!(value(&m, "logtide_source_paused", &[table[0]]), Some(0.0));
    assert_eq!(value(&m, "logtide_source_up", &[table[0]]), Some(1.0));
    assert!(value(&m, "logtide_checkpoint_timestamp_seconds", &[table[0]]).is_some());
    // The histogram of the file sink: cumulative buckets, +Inf = _count > 0.
    let sink = [("sink", "out")];
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter(|s| {
            s.name == "logtide_batch_seconds_bucket"
                && s.labels.get("sink").map(String::as_str) == Some("out")
        })
        .map(|s| {
            let le = s.labels.get("le").expect("le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le number")
            };
            (le, s.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() >= 2, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets not cumulative: {buckets:?}"
    );
    let count = value(&m, "logtide_batch_seconds_count", &sink).expect("_count");
    assert!(count > 0.0);
    assert_eq!(
        buckets.last().map(|b| (b.0, b.1)),
        Some((f64::INFINITY, count))
    );
    assert!(value(&m, "logtide_batch_seconds_sum", &sink).expect("_sum") >= 0.0);
    // Other routes and bad input.
    let (s, body) = http(port, "GET", "/sources").expect("/sources");
    assert_eq!(s, 200);
    let j: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(j[0]["name"], name.as_str());
    assert_eq!(j[0]["state"], "streaming");
    assert_eq!(j[0]["paused"], false);
    assert!(j[0]["cursor"].as_str().is_some(), "{j}");
    assert_eq!(
        http(port, "POST", "/sources/nope/pause").map(|r| r.0),
        Some(404)
    );
    assert_eq!(status_of(port, "/nope"), Some(404));
    let mut raw = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    raw.write_all(b"\x00\xff garbage\r\n\r\n").expect("write");
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert_eq!(status_of(port, "/health"), Some(200), "still serving");
    kill9(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_a_database_outage_and_nothing_is_lost() {
    let server = PgServer::start_with(&[]);
    let db = server.fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let port = free_port();
    config(&w, &db, "outage", port, "");
    let mut child = spawn_run(&w, &[], &env());
    assert!(
        wait_until(WAIT, || status_of(port, "/ready") == Some(200)),
        "never ready\n{}",
        logs(&w)
    );
    db.insert_ids("t", 0, 100, 10, 1).await;
    w.wait_events(100, WAIT);
    server.stop();
    assert!(
        wait_until(WAIT, || status_of(port, "/ready") == Some(503)),
        "/ready stayed 200 with the database down\n{}",
        logs(&w)
    );
    // A transient outage is not a failure of the process.
    assert_eq!(status_of(port, "/health"), Some(200));
    let (_, body) = http(port, "GET", "/sources").expect("/sources");
    let j: serde_json::Value = serde_json::from_str(&body).expect("json");
    let state = j[0]["state"].as_str().expect("state").to_owned();
    assert!(state == "reconnecting" || state == "connecting", "{j}");
    server.start();
    assert!(
        wait_until(WAIT, || status_of(port, "/ready") == Some(200)),
        "/ready did not come back after the restart\n{}",
        logs(&w)
    );
    db.insert_ids("t", 100, 200, 10, 1).await;
    assert!(
        wait_until(WAIT, || ids(&w.events())
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 200),
        "{}",
        logs(&w)
    );
    let m = scrape(port);
    assert!(
        value(
            &m,
            "logtide_errors_total",
            &[("source", "outage"), ("kind", "source_transient")]
        )
        .is_some_and(|v| v >= 1.0),
        "{m:#?}"
    );
    kill9(&mut child);
    // The consumer's copy equals the table.
    let c = db.connect().await;
    let table: BTreeMap<i64, String> = c
        .query("SELECT id::bigint, v FROM t", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(table.len(), 200);
    let copy: BTreeMap<i64, String> = apply_events(&w.events())["public.t"]
        .values()
        .map(|row| {
            (
                row["id"].as_i64().expect("id"),
                row["v"].as_str().expect("v").to_owned(),
            )
        })
        .collect();
    assert_eq!(copy, table);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_rows_back_and_resume_delivers_them_in_order() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let name = format!("pause_{}", std::process::id());
    let port = free_port();
    config(&w, &db, &name, port, "");
    let mut child = spawn_run(&w, &[], &env());
    // Ready includes a running backfill; this test pauses the stream, so it waits until the
    // (empty) backfill handed over.
    assert!(
        wait_until(WAIT, || http(port, "GET", &format!("/sources/{name}"))
            .is_some_and(|(s, body)| s == 200 && body.contains("streaming"))),
        "never streaming\n{}",
        logs(&w)
    );
    db.insert_ids("t", 0, 50, 10, 1).await;
    w.wait_events(50, WAIT);
    let (s, body) = http(port, "POST", &format!("/sources/{name}/pause")).expect("pause");
    assert_eq!(s, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(j["paused"], true);
    assert_eq!(
        value(&scrape(port), "logtide_source_paused", &[("source", &name)]),
        Some(1.0)
    );
    db.insert_ids("t", 50, 300, 10, 1).await;
    // The walsender has sent everything written to logtide...
    let target = db.server.psql("postgres", "SELECT pg_current_wal_lsn()");
    let slot = format!("logtide_{name}");
    assert!(
        wait_until(WAIT, || {
            db.server.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
                 WHERE s.slot_name = '{slot}' AND r.sent_lsn >= '{target}'"
            )
        ) == "1"
        }),
        "the server never sent the paused rows\n{}",
        logs(&w)
    );
    // ...and none of it reaches the sink while paused.
    assert!(
        !wait_until(Duration::from_secs(3), || w.events().len() > 50),
        "rows were delivered while paused: {}",
        w.events().len()
    );
    assert_eq!(
        status_of(port, "/ready"),
        Some(200),
        "a paused source stays ready"
    );
    let (s, _) = http(port, "POST", &format!("/sources/{name}/resume")).expect("resume");
    assert_eq!(s, 200);
    let events = w.wait_events(300, WAIT);
    assert_eq!(
        ids(&events),
        (0..300).collect::<Vec<i64>>(),
        "all rows, in order"
    );
    assert_cursors_increase(&events);
    assert_eq!(
        value(&scrape(port), "logtide_source_paused", &[("source", &name)]),
        Some(0.0)
    );
    kill9(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_retention_warning_names_the_slot() {
    // A private server: no WAL from other tests moves the numbers.
    let server = PgServer::start_with(&[]);
    let db = server.fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let port = free_port();
    config(&w, &db, "walwarn", port, "wal_retention_warn_mb = 2\n");
    let mut child = spawn_run(&w, &[], &env());
    assert!(
        wait_until(WAIT, || status_of(port, "/ready") == Some(200)),
        "never ready\n{}",
        logs(&w)
    );
    // A check ran on the fresh slot and found it under the threshold: no warning yet.
    assert!(
        wait_until(WAIT, || logs(&w).contains("wal retention checked")),
        "{}",
        logs(&w)
    );
    assert!(!logs(&w).contains("retains"), "{}", logs(&w));
    let (s, _) = http(port, "POST", "/sources/walwarn/pause").expect("pause");
    assert_eq!(s, 200);
    // ~6 MB of WAL the paused source cannot confirm.
    db.insert_ids("t", 0, 3000, 500, 40).await;
    assert!(
        wait_until(WAIT, || {
            let l = logs(&w);
            l.lines().any(|line| {
                line.contains("WARN") && line.contains("replication slot logtide_walwarn retains")
            })
        }),
        "no WAL-retention warning\n{}",
        logs(&w)
    );
    let retained = value(
        &scrape(port),
        "logtide_slot_retained_bytes",
        &[("source", "walwarn")],
    )
    .expect("retained");
    assert!(retained > 2.0 * 1024.0 * 1024.0, "{retained}");
    // Resumed, everything arrives and the checkpoint moves on.
    http(port, "POST", "/sources/walwarn/resume").expect("resume");
    w.wait_events(3000, WAIT);
    kill9(&mut child);
}
