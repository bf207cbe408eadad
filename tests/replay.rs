//! `logtide replay`: re-delivery from an event's cursor or a binlog position on MariaDB,
//! and the refusals (purged binlog, a PostgreSQL position before the slot's confirmed one)
//! that leave the stored position untouched.

use crate::common::mariadb::MariaServer;
use crate::common::pg::{PgServer, PASSWORD, PASSWORD_ENV};
use crate::common::run::{logs, run_to_end, sigterm, spawn_run, wait_exit, wait_until, Workdir};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn cursor(e: &serde_json::Value) -> String {
    e["source"]["cursor"].as_str().expect("cursor").to_owned()
}

/// The stored position of `source`, from `logtide status` (opening the store in the test
/// process would hold its lock for a moment after the handle is dropped).
fn stored_position(w: &Workdir, source: &str) -> Option<String> {
    let out = run_to_end(
        &["status", "--config", w.config().to_str().expect("path")],
        &[],
    );
    assert!(out.status.success(), "status failed: {out:?}");
    let prefix = format!("{source}\tposition ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

/// Runs `logtide replay --config <w> --source <source> --from <from> [extra]` to the end.
fn replay(w: &Workdir, source: &str, from: &str, extra: &[&str]) -> std::process::Output {
    let cfg = w.config();
    let mut args = vec![
        "replay",
        "--config",
        cfg.to_str().expect("path"),
        "--source",
        source,
        "--from",
        from,
    ];
    args.extend_from_slice(extra);
    run_to_end(&args, &[(PASSWORD_ENV, PASSWORD)])
}

/// A MariaDB source named `maria` on a fresh database that streamed three 10-row
/// transactions and stopped cleanly: its workdir and the 30 events.
fn maria_thirty() -> (Workdir, Vec<serde_json::Value>) {
    let server = MariaServer::get();
    let db = server.fresh_db();
    let w = Workdir::new();
    w.write_config(&format!(
        "{}backfill = \"never\"\n",
        server.source_toml("maria", &db)
    ));
    let ev = stream_thirty(server, &db, &w);
    (w, ev)
}

/// Streams three 10-row transactions and stops cleanly; returns the 30 events.
fn stream_thirty(server: &MariaServer, db: &str, w: &Workdir) -> Vec<serde_json::Value> {
    server.sql(db, "CREATE TABLE r (id INT PRIMARY KEY, v VARCHAR(20))");
    let mut child = spawn_run(w, &[], &[]);
    assert!(
        wait_until(WAIT, || logs(w).contains("mysql binlog stream started")),
        "source did not start:\n{}",
        logs(w)
    );
    for t in 0..3 {
        server.sql(
            db,
            &format!(
                "INSERT INTO r SELECT seq, CONCAT('v', seq) FROM seq_{}_to_{}",
                t * 10 + 1,
                t * 10 + 10
            ),
        );
    }
    let ev = w.wait_events(30, WAIT);
    sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success(), "{}", logs(w));
    ev
}

#[test]
fn mysql_replay_from_an_event_cursor_redelivers_from_that_event() {
    let (w, first) = maria_thirty();
    assert_eq!(first.len(), 30);
    let stored = stored_position(&w, "maria");
    assert!(stored.is_some());

    // From the 13th event (3rd row of the second transaction): 18 events again.
    let from = cursor(&first[12]);
    let out = replay(&w, "maria", &from, &["--max-events", "18"]);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = w.events();
    assert_eq!(all.len(), 48, "expected 18 replayed events");
    let again = &all[30..];
    for (a, b) in again.iter().zip(&first[12..]) {
        assert_eq!(cursor(a), cursor(b), "replayed cursors match the originals");
        assert_eq!(a["after"], b["after"]);
    }
    // The run ended at the same transaction boundary as before.
    assert_eq!(stored_position(&w, "maria"), stored);

    // A binlog that is not on the server: refused, position untouched.
    let out = replay(&w, "maria", "mysql-bin.999999:4", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("mysql-bin.999999 is not on the server"),
        "{err}"
    );
    assert_eq!(stored_position(&w, "maria"), stored);

    // A bad position: a usage error.
    let out = replay(&w, "maria", "yesterday", &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn mysql_replay_from_a_gtid_until_a_gtid() {
    let (w, first) = maria_thirty();
    let gtid = |i: usize| {
        first[i]["source"]["gtid"]
            .as_str()
            .expect("gtid")
            .to_owned()
    };
    // Three transactions, three GTIDs of one domain.
    assert_ne!(gtid(0), gtid(10));
    assert_ne!(gtid(10), gtid(20));
    // After the first transaction's GTID, up to and including the second's: exactly the
    // second transaction, and the run ends by itself.
    let out = replay(&w, "maria", &gtid(0), &["--until", &gtid(10)]);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = w.events();
    let again = &all[30..];
    assert_eq!(again.len(), 10, "only the second transaction: {again:?}");
    for (a, b) in again.iter().zip(&first[10..20]) {
        assert_eq!(cursor(a), cursor(b));
        assert_eq!(a["after"], b["after"]);
    }
    // The stored position is the second transaction's end: a plain run continues with the
    // third.
    let mut child = spawn_run(&w, &[], &[]);
    let all = w.wait_events(50, WAIT);
    sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success());
    for (a, b) in all[40..].iter().zip(&first[20..30]) {
        assert_eq!(cursor(a), cursor(b));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replay_before_the_confirmed_position_is_refused() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE p (id int PRIMARY KEY)").await;
    let w = Workdir::new();
    let name = format!("rp_{}", std::process::id());
    w.write_config(&db.server.source_toml(db.name(), &name));
    let env = [(PASSWORD_ENV, PASSWORD)];
    let mut child = spawn_run(&w, &[], &env);
    // Wait until logtide's walsender holds the slot, then write.
    let slot = format!("logtide_{name}");
    assert!(
        wait_until(WAIT, || db.server.slot_streaming(&slot)),
        "slot never streamed:\n{}",
        logs(&w)
    );
    db.exec("INSERT INTO p SELECT generate_series(1, 5)").await;
    w.wait_events(5, WAIT);
    sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success());
    let stored = stored_position(&w, &name);
    assert!(stored.is_some());

    let out = replay(&w, &name, "0/1", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("never moves back"), "{err}");
    assert_eq!(
        stored_position(&w, &name),
        stored,
        "a refused replay leaves the position alone"
    );
    assert_eq!(w.events().len(), 5);
}
