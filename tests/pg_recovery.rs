//! Crash and restart behaviour against a real PostgreSQL: kill -9 of logtide, SIGTERM, a
//! database restart under a running logtide, and clear errors for bad credentials and server
//! settings.

use crate::common::pg::{PgServer, TestDb, PASSWORD, PASSWORD_ENV, PLAIN_PASSWORD, PLAIN_USER};
use crate::common::run::{
    apply_events, kill9, logs, run_to_end, sigterm, spawn_run, wait_exit, wait_until, Workdir,
};
use logtide::position::Lsn;
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

fn streaming(db: &TestDb<'_>, slot: &str) -> bool {
    db.server.slot_streaming(slot)
}

fn ids(events: &[serde_json::Value]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e["op"] == "c")
        .map(|e| e["after"]["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_restart_loses_nothing() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let name = format!("kill_{}", std::process::id());
    w.write_config(&db.server.source_toml(db.name(), &name));
    let mut child = spawn_run(&w, &[], &env());
    assert!(
        wait_until(WAIT, || streaming(&db, &format!("logtide_{name}"))),
        "{}",
        logs(&w)
    );
    db.insert_ids("t", 0, 3000, 10, 1).await;
    // Kill while events are flowing.
    w.wait_events(500, WAIT);
    kill9(&mut child);
    let status = run_to_end(
        &["status", "--config", w.config().to_str().expect("path")],
        &[],
    );
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let ck_cursor = status
        .split("cursor ")
        .nth(1)
        .and_then(|s| s.lines().next())
        .map(|s| s.trim().to_owned())
        .expect("a stored checkpoint");
    let before_restart = w.events();
    db.insert_ids("t", 3000, 4000, 10, 1).await;
    let mut child = spawn_run(&w, &[], &env());
    let ev = w.wait_events(4000, WAIT);
    // Wait until everything arrived (duplicates make the count larger than 4000).
    assert!(
        wait_until(WAIT, || {
            let got: BTreeSet<i64> = ids(&w.events()).into_iter().collect();
            got.len() == 4000
        }),
        "missing ids after restart\n{}",
        logs(&w)
    );
    kill9(&mut child);
    let all = w.events();
    let got: BTreeSet<i64> = ids(&all).into_iter().collect();
    assert_eq!(got, (0..4000).collect::<BTreeSet<i64>>());
    // Only events after the checkpoint were delivered twice, with the same cursor.
    let mut seen = BTreeSet::new();
    for e in &all {
        let c = e["source"]["cursor"].as_str().expect("cursor").to_owned();
        if !seen.insert(c.clone()) {
            assert!(
                c > ck_cursor,
                "event at/before the checkpoint {ck_cursor} redelivered: {e}"
            );
        }
    }
    assert!(all.len() >= ev.len() && before_restart.len() <= all.len());
    let state = apply_events(&all);
    assert_eq!(state["public.t"].len(), 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_with_checkpoint() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let name = format!("term_{}", std::process::id());
    let slot = format!("logtide_{name}");
    w.write_config(&format!(
        "{}status_interval = \"1s\"\n",
        db.server.source_toml(db.name(), &name)
    ));
    let mut child = spawn_run(&w, &[], &env());
    assert!(wait_until(WAIT, || streaming(&db, &slot)), "{}", logs(&w));
    db.insert_ids("t", 0, 200, 10, 1).await;
    let events = w.wait_events(200, WAIT);
    // The LSN of the last delivered event (a cursor starts with its commit LSN in hex).
    let last_lsn = events
        .last()
        .and_then(|e| e["source"]["cursor"].as_str())
        .and_then(|c| u64::from_str_radix(c.get(..16)?, 16).ok())
        .map(Lsn)
        .expect("cursor");
    let confirmed = || -> Lsn {
        db.server
            .psql(
                "postgres",
                &format!(
                    "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ),
            )
            .parse()
            .expect("lsn")
    };
    // Stop only once those events are checkpointed and confirmed (a SIGTERM between the
    // sink's write and the checkpoint would leave the final status one batch behind).
    assert!(
        wait_until(WAIT, || confirmed() >= last_lsn),
        "slot never confirmed {last_lsn}\n{}",
        logs(&w)
    );
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", logs(&w));
    // The stored checkpoint covers every delivered event; a restart delivers nothing again.
    let out = run_to_end(
        &["status", "--config", w.config().to_str().expect("path")],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ck = text
        .split("cursor ")
        .nth(1)
        .and_then(|s| s.lines().next())
        .map(|s| s.trim().to_owned())
        .expect("checkpoint");
    let last = w
        .events()
        .last()
        .map(|e| e["source"]["cursor"].as_str().expect("cursor").to_owned())
        .expect("events");
    assert!(
        ck > last,
        "checkpoint {ck} must be past the last event {last}"
    );
    // The final status confirmed what was stored when the source stopped: every delivered
    // event's WAL may be released, and never more than the stored checkpoint. (Not always
    // the checkpoint itself: the pipeline may store one more idle boundary after the source
    // sent its final status, which the next run confirms.)
    let stored: Lsn = text
        .split("position ")
        .nth(1)
        .and_then(|s| s.split('#').next())
        .expect("stored position")
        .parse()
        .expect("lsn");
    let confirmed = confirmed();
    assert!(
        last_lsn <= confirmed && confirmed <= stored,
        "last event {last_lsn}, slot confirmed {confirmed}, stored {stored}\n{text}"
    );
    db.insert_ids("t", 200, 210, 10, 1).await;
    let mut child = spawn_run(&w, &[], &env());
    w.wait_events(210, WAIT);
    kill9(&mut child);
    assert_eq!(w.events().len(), 210, "no duplicates after a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_database_restart() {
    let server = PgServer::start_with(&[]);
    let db = server.fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    w.write_config(&server.source_toml(db.name(), "restart"));
    let mut child = spawn_run(&w, &[], &env());
    assert!(
        wait_until(WAIT, || streaming(&db, "logtide_restart")),
        "{}",
        logs(&w)
    );
    db.insert_ids("t", 0, 100, 10, 1).await;
    w.wait_events(100, WAIT);
    server.kill9();
    server.start();
    db.insert_ids("t", 100, 300, 10, 1).await;
    server.restart();
    db.insert_ids("t", 300, 400, 10, 1).await;
    assert!(
        wait_until(WAIT, || ids(&w.events())
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len()
            == 400),
        "{}",
        logs(&w)
    );
    kill9(&mut child);
    assert!(
        logs(&w).contains("reconnecting"),
        "expected a reconnect in the logs"
    );
}

fn expect_failure(w: &Workdir, env: &[(&str, &str)], needles: &[&str]) {
    let out = run_to_end(
        &["run", "--config", w.config().to_str().expect("path")],
        env,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_clear_error_without_the_password() {
    let db = PgServer::get().fresh_db();
    let w = Workdir::new();
    w.write_config(
        &db.server
            .source_toml(db.name(), &format!("pw_{}", std::process::id())),
    );
    expect_failure(&w, &[(PASSWORD_ENV, "not-the-password-xyz")], &["password"]);
    let out = run_to_end(
        &["run", "--config", w.config().to_str().expect("path")],
        &[(PASSWORD_ENV, "not-the-password-xyz")],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not-the-password-xyz"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_replication_privilege_is_a_clear_error() {
    let db = PgServer::get().fresh_db();
    let w = Workdir::new();
    let toml = db
        .server
        .source_toml(db.name(), &format!("priv_{}", std::process::id()))
        .replace("user = \"logtide\"", &format!("user = \"{PLAIN_USER}\""));
    w.write_config(&toml);
    expect_failure(&w, &[(PASSWORD_ENV, PLAIN_PASSWORD)], &["REPLICATION"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica_is_a_clear_error() {
    let server = PgServer::start_with(&[("wal_level", "replica")]);
    let db = server.fresh_db();
    let w = Workdir::new();
    w.write_config(&server.source_toml(db.name(), "wal"));
    expect_failure(&w, &env(), &["wal_level", "logical"]);
}

/// A small tmpfs mounted for one test (the file sink's disk running full); unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: std::path::PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir)
    }
    fn grow(&self, size: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(st.success(), "remount {}", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A config with one source on `db` and a file sink writing `out`, state in `state`; starts
/// `logtide run` and waits until its slot streams.
fn start_on(
    db: &TestDb<'_>,
    w: &Workdir,
    name: &str,
    state: &std::path::Path,
    out: &std::path::Path,
) -> std::process::Child {
    std::fs::write(
        w.config(),
        format!(
            "[state]\npath = {state:?}\n\n{}\n[admin]\nenabled = false\n\n[[sinks]]\nkind = \"file\"\nname = \"out\"\npath = {out:?}\n",
            db.server.source_toml(db.name(), name),
        ),
    )
    .expect("write config");
    let child = spawn_run(w, &[], &env());
    assert!(
        wait_until(WAIT, || streaming(db, &format!("logtide_{name}"))),
        "{}",
        logs(w)
    );
    child
}

/// The file sink's disk runs full while rows stream: the write fails, the partial batch is
/// cut away, the pipeline retries saying why ("No space left on device"), the checkpoint
/// does not move past what the file holds, and nothing exits. Once the disk has room again
/// every row arrives, each line whole, and a clean stop exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_disk_full_retries_and_loses_nothing() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let disk = SmallDisk::mount(w.path().join("disk"), "64k");
    let out = disk.0.join("out.jsonl");
    let name = format!("full_{}", std::process::id());
    let mut child = start_on(&db, &w, &name, &w.state(), &out);
    // ~400 bytes per event: 1,000 rows are several times the disk.
    db.insert_ids("t", 0, 1000, 50, 3).await;
    assert!(
        wait_until(WAIT, || logs(&w).contains("No space left on device")),
        "no retry naming the full disk\n{}",
        logs(&w)
    );
    assert!(
        logs(&w).contains("delivery failed, retrying"),
        "{}",
        logs(&w)
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "exited: {}",
        logs(&w)
    );
    let held = crate::common::run::read_jsonl(&out).len();
    assert!(held < 1000, "the disk held every row ({held})");
    disk.grow("16m");
    assert!(
        wait_until(WAIT, || {
            let got: BTreeSet<i64> = ids(&crate::common::run::read_jsonl(&out))
                .into_iter()
                .collect();
            got.len() == 1000
        }),
        "rows missing after the disk had room again\n{}",
        logs(&w)
    );
    sigterm(&child);
    let st = wait_exit(&mut child, WAIT);
    assert!(st.success(), "{st}: {}", logs(&w));
    // Every line is whole JSON (read_jsonl panics on a torn one) and every id is there.
    let all = crate::common::run::read_jsonl(&out);
    let got: BTreeSet<i64> = ids(&all).into_iter().collect();
    assert_eq!(got, (0..1000).collect::<BTreeSet<i64>>());
    let text = std::fs::read_to_string(&out).expect("read output");
    assert!(text.ends_with('\n'), "a torn last line");
}

/// The state directory's disk runs full while rows stream. sled mostly rewrites space it
/// already holds, so checkpoints may still be stored; when a write does fail, logtide must
/// stop with exit 1 naming the full disk, never go on or exit 0. Either way nothing is lost:
/// after a kill -9 and freeing the disk, a restart delivers every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_disk_full_loses_nothing() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    let disk = SmallDisk::mount(w.path().join("statedisk"), "8m");
    let state = disk.0.join("state");
    let name = format!("sfull_{}", std::process::id());
    let mut child = start_on(&db, &w, &name, &state, &w.out());
    db.insert_ids("t", 0, 100, 10, 1).await;
    w.wait_events(100, WAIT);
    // Fill what is left of the disk.
    let filler = disk.0.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    db.insert_ids("t", 100, 2000, 10, 1).await;
    let mut st = None;
    let settled = wait_until(WAIT, || {
        st = child.try_wait().expect("try_wait");
        st.is_some()
            || ids(&w.events())
                .into_iter()
                .collect::<BTreeSet<i64>>()
                .len()
                == 2000
    });
    let l = logs(&w);
    assert!(settled, "neither delivered nor stopped\n{l}");
    match st {
        Some(st) => {
            assert_eq!(st.code(), Some(1), "{l}");
            assert!(l.contains("No space left on device"), "{l}");
        }
        None => kill9(&mut child),
    }
    std::fs::remove_file(&filler).expect("free the disk");
    let streams_before = logs(&w).matches("starting replication").count();
    let mut child = spawn_run(&w, &[], &env());
    assert!(
        wait_until(WAIT, || {
            let got: BTreeSet<i64> = ids(&w.events()).into_iter().collect();
            got.len() == 2000
        }),
        "rows missing after the restart\n{}",
        logs(&w)
    );
    // The first run may have delivered every row already: the restart is stopped once it
    // streams, not while it is still starting (a SIGTERM before the handler is installed
    // ends a process by the signal, which is not what this test is about).
    assert!(
        wait_until(WAIT, || logs(&w).matches("starting replication").count()
            > streams_before),
        "the restart did not start streaming\n{}",
        logs(&w)
    );
    sigterm(&child);
    let st = wait_exit(&mut child, WAIT);
    assert!(st.success(), "{st}: {}", logs(&w));
}
