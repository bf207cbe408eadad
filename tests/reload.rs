//! Config reload on SIGHUP and `paused = true|false`: a running source is paused and
//! resumed by editing the file (nothing delivered while paused, everything after), an
//! invalid file is rejected while the old config keeps running, other changes are named as
//! needing a restart, a source configured paused starts paused; and `logtide_lag_bytes` of
//! a MySQL source grows while it is paused and returns to 0 after it caught up.

use crate::common::port::free_port;

use crate::common::mariadb::MariaServer;
use crate::common::pg::{PgServer, TestDb, PASSWORD, PASSWORD_ENV};
use crate::common::run::{kill9, logs, sigterm, spawn_run, wait_exit, wait_until, Workdir};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// A running `logtide` that is killed when the test ends, also on a failed assertion.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        (PASSWORD_ENV, PASSWORD),
        (
            crate::common::mariadb::PASSWORD_ENV,
            crate::common::mariadb::PASSWORD,
        ),
    ]
}

/// One HTTP request to the admin endpoint; `None` when nothing answers.
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

/// `GET /sources/<name>` as JSON.
fn source_status(port: u16, name: &str) -> Option<serde_json::Value> {
    let (s, body) = http(port, "GET", &format!("/sources/{name}"))?;
    (s == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn is_paused(port: u16, name: &str) -> bool {
    source_status(port, name).is_some_and(|j| j["paused"] == true)
}

/// `logtide_lag_bytes{source="<name>"}` from `/metrics`.
fn lag_bytes(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http(port, "GET", "/metrics")?;
    let prefix = format!("logtide_lag_bytes{{source=\"{name}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn sighup(child: &Child) {
    let st = Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status()
        .expect("kill -HUP");
    assert!(st.success());
}

/// Writes the config: `source` (a `[[sources]]` table) with `extra` lines, and `[admin]`.
fn write(w: &Workdir, source: &str, extra: &str, port: u16) {
    w.write_config(&format!(
        "{source}{extra}\n\n[admin]\nlisten = \"127.0.0.1:{port}\"\nwal_check_interval = \"1s\"\n"
    ));
}

fn ids(w: &Workdir) -> Vec<i64> {
    w.events()
        .iter()
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect()
}

/// Waits until the walsender of `name`'s slot has sent everything written so far (the
/// rows reached logtide, so only the pause can hold them back).
fn wait_sent(db: &TestDb<'_>, name: &str, w: &Workdir) {
    let target = db.server.psql("postgres", "SELECT pg_current_wal_lsn()");
    let q = format!(
        "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
         WHERE s.slot_name = 'logtide_{name}' AND r.sent_lsn >= '{target}'"
    );
    assert!(
        wait_until(WAIT, || db.server.psql("postgres", &q) == "1"),
        "the server never sent the rows\n{}",
        logs(w)
    );
}

/// Asserts that `name` holds back what was sent: after the marker ([`wait_sent`]) a WAL
/// check reports bytes behind, and the sink still has only `n` events.
fn assert_held(port: u16, name: &str, w: &Workdir, n: usize) {
    assert!(
        wait_until(WAIT, || lag_bytes(port, name).is_some_and(|b| b > 0.0)),
        "lag_bytes never grew while paused\n{}",
        logs(w)
    );
    assert!(is_paused(port, name));
    assert_eq!(w.events().len(), n, "rows were delivered while paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_pauses_and_resumes_a_running_source() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let name = "hup";
    let port = free_port();
    let src = db.server.source_toml(db.name(), name);
    write(&w, &src, "status_interval = \"1s\"\npaused = false\n", port);
    let mut child = Running(spawn_run(&w, &[], &env()));
    assert!(
        wait_until(WAIT, || http(port, "GET", "/ready")
            .is_some_and(|(s, _)| s == 200)),
        "never ready\n{}",
        logs(&w)
    );
    db.insert_ids("t", 0, 5, 1, 1).await;
    let first = w.wait_events(5, WAIT);
    // Delivery is at-least-once: rows delivered but not yet checkpointed come again after
    // the restart below. Pause once the checkpoint covers them, so the count is exact.
    let last = first[4]["source"]["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    assert!(
        wait_until(WAIT, || source_status(port, name)
            .and_then(|j| j["checkpoint_cursor"].as_str().map(str::to_owned))
            .is_some_and(|c| c >= last)),
        "the checkpoint never covered {last}\n{}",
        logs(&w)
    );

    write(&w, &src, "status_interval = \"1s\"\npaused = true\n", port);
    sighup(&child);
    assert!(
        wait_until(WAIT, || is_paused(port, name)),
        "SIGHUP did not pause\n{}",
        logs(&w)
    );
    db.insert_ids("t", 5, 50, 5, 1).await;
    wait_sent(&db, name, &w);
    assert_held(port, name, &w, 5);

    // An invalid file is refused; the source stays paused, the service runs on.
    w.write_config("[[sources]]\nkind = \"postgres\"\nname = \"hup\"\npaused = \"maybe\"\n");
    sighup(&child);
    assert!(
        wait_until(WAIT, || logs(&w).contains("the changed config is invalid")),
        "no error for the invalid config\n{}",
        logs(&w)
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "logtide stopped"
    );
    assert!(is_paused(port, name));
    assert_eq!(w.events().len(), 5);

    // Resume, with another change that needs a restart.
    write(&w, &src, "status_interval = \"2s\"\npaused = false\n", port);
    sighup(&child);
    let events = w.wait_events(50, WAIT);
    assert_eq!(ids(&w), (0..50).collect::<Vec<i64>>(), "all rows, in order");
    assert_eq!(events.len(), 50);
    assert!(!is_paused(port, name));
    let log = logs(&w);
    assert!(
        log.contains("restart to apply") && log.contains("sources.hup"),
        "{log}"
    );
    kill9(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_configured_paused_starts_paused() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let name = "startpaused";
    let port = free_port();
    let src = db.server.source_toml(db.name(), name);
    // Streaming only (a paused initial backfill waits before it starts streaming), so the
    // walsender's progress can serve as the marker.
    write(
        &w,
        &src,
        "status_interval = \"1s\"\npaused = true\nbackfill = \"never\"\n",
        port,
    );
    let mut child = Running(spawn_run(&w, &[], &env()));
    let slot = format!("logtide_{name}");
    assert!(
        wait_until(WAIT, || db.server.slot_streaming(&slot)),
        "never streamed\n{}",
        logs(&w)
    );
    assert!(is_paused(port, name), "{}", logs(&w));
    db.insert_ids("t", 0, 20, 5, 1).await;
    wait_sent(&db, name, &w);
    // lag_bytes needs a checkpoint: a source that never delivered has none, so check the
    // pause via the sink after the marker.
    assert_eq!(w.events().len(), 0, "rows were delivered while paused");
    assert!(is_paused(port, name));
    let (s, _) = http(port, "POST", &format!("/sources/{name}/resume")).expect("resume");
    assert_eq!(s, 200);
    w.wait_events(20, WAIT);
    assert_eq!(ids(&w), (0..20).collect::<Vec<i64>>());
    sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lag_bytes_grow_while_paused_and_return_to_zero() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
    server.sql(&db, "INSERT INTO t VALUES (0, 'x')");
    let w = Workdir::new();
    let name = "mylag";
    let port = free_port();
    let src = server.source_toml(name, &db);
    write(&w, &src, "paused = false\n", port);
    let mut child = Running(spawn_run(&w, &[], &env()));
    assert!(
        wait_until(WAIT, || http(port, "GET", "/ready")
            .is_some_and(|(s, _)| s == 200)),
        "never ready\n{}",
        logs(&w)
    );
    // Row 0 comes from the initial backfill, row 1 from the binlog stream.
    w.wait_events(1, WAIT);
    server.sql(&db, "INSERT INTO t VALUES (1, 'x')");
    w.wait_events(2, WAIT);
    let next = 2;
    assert!(
        wait_until(WAIT, || lag_bytes(port, name) == Some(0.0)),
        "lag_bytes never 0 when caught up: {:?}\n{}",
        lag_bytes(port, name),
        logs(&w)
    );

    write(&w, &src, "paused = true\n", port);
    sighup(&child);
    assert!(wait_until(WAIT, || is_paused(port, name)), "{}", logs(&w));
    for id in next..next + 20 {
        server.sql(&db, &format!("INSERT INTO t VALUES ({id}, 'y')"));
    }
    assert_held(port, name, &w, next);

    write(&w, &src, "paused = false\n", port);
    sighup(&child);
    w.wait_events(next + 20, WAIT);
    assert!(
        wait_until(WAIT, || lag_bytes(port, name) == Some(0.0)),
        "lag_bytes did not return to 0: {:?}\n{}",
        lag_bytes(port, name),
        logs(&w)
    );
    assert_eq!(ids(&w), (0..next as i64 + 20).collect::<Vec<i64>>());
    kill9(&mut child);
}
