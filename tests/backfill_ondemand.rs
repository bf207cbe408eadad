//! On-demand backfill (`logtide backfill --source S --table T`) while the source streams,
//! against a real PostgreSQL and MariaDB: consistency with concurrent writes, resume after
//! kill -9 without starting over, and clear refusals.

use crate::common::port::free_port;

use crate::common::mariadb::MariaServer;
use crate::common::pg::{PgServer, PASSWORD, PASSWORD_ENV};
use crate::common::run::{
    assert_cursors_increase, consumer_state, consumer_text_rows, kill9, logs, run_killed_after,
    run_to_end, spawn_run, wait_marker, wait_until, Workdir,
};
use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

/// `[admin]` on a port of its own, so a CLI never reaches another test's service.
fn admin_toml() -> String {
    format!("\n[admin]\nlisten = \"127.0.0.1:{}\"\n", free_port())
}

/// Waits until the running service reports its source streaming (`GET /ready` is 200):
/// from then on every commit is captured.
fn wait_ready(w: &Workdir) {
    use std::io::{Read, Write};
    let cfg = std::fs::read_to_string(w.config()).expect("config");
    let listen = cfg
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("admin listen in config")
        .to_owned();
    let ready = || -> Option<bool> {
        let mut s = std::net::TcpStream::connect(&listen).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        Some(raw.starts_with("HTTP/1.1 200"))
    };
    assert!(
        wait_until(WAIT, || ready() == Some(true)),
        "the source never became ready\n{}",
        logs(w)
    );
}

fn backfill_cli(
    w: &Workdir,
    source: &str,
    table: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let config = w.config();
    let config = config.to_str().expect("utf8 path");
    let mut args = vec![
        "backfill", "--config", config, "--source", source, "--table", table,
    ];
    args.extend_from_slice(extra);
    run_to_end(&args, env)
}

fn text_of(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_backfill_while_streaming_converges_with_concurrent_writes() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text, n int); INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, 30000) g; CREATE TABLE mark (id int PRIMARY KEY)").await;
    let w = Workdir::new();
    let name = format!("odp_{}", std::process::id());
    w.write_config(&format!(
        "{}backfill = \"never\"\nbackfill_chunk_rows = 500\nstatus_interval = \"1s\"\n{}",
        db.server.source_toml(db.name(), &name),
        admin_toml()
    ));
    let mut child = spawn_run(&w, &[], &env());
    // Streaming (no initial backfill): a marker row arrives.
    wait_ready(&w);
    db.exec("INSERT INTO mark VALUES (1)").await;
    wait_marker(&w, "mark", 1, WAIT);
    assert!(
        w.events().iter().all(|e| e["op"] != "r"),
        "backfill = never read rows"
    );

    // Request the backfill and write concurrently until it is done.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let cli = {
        let config = w.config();
        let name = name.clone();
        std::thread::spawn(move || {
            let out = run_to_end(
                &[
                    "backfill",
                    "--config",
                    config.to_str().expect("utf8"),
                    "--source",
                    &name,
                    "--table",
                    "t",
                    "--wait",
                ],
                &env(),
            );
            let _ = done_tx.send(());
            out
        })
    };
    let writer = db.connect().await;
    let mut round = 0;
    while round < 300 && (round < 20 || done_rx.try_recv().is_err()) {
        let base = 100_000 + round * 10;
        writer
            .batch_execute(&format!(
                "INSERT INTO t SELECT g, 'new', {round} FROM generate_series({base}, {base} + 9) g;
                 UPDATE t SET n = n + 1, v = 'upd' WHERE id % 89 = {m};
                 DELETE FROM t WHERE id % 211 = {m};
                 UPDATE t SET id = id + 1000000 WHERE id = {round} * 97 + 5",
                m = round % 89
            ))
            .await
            .expect("writes");
        round += 1;
    }
    let out = cli.join().expect("cli thread");
    assert!(out.status.success(), "{}\n{}", text_of(&out), logs(&w));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backfill of public.t done"),
        "{}",
        text_of(&out)
    );
    db.exec("INSERT INTO mark VALUES (2)").await;
    let ev = wait_marker(&w, "mark", 2, WAIT);
    kill9(&mut child);
    eprintln!("write rounds: {round}");

    let reads = ev.iter().filter(|e| e["op"] == "r").count();
    assert!(reads > 0, "no backfill rows\n{}", logs(&w));
    assert_cursors_increase(&ev);
    let want = db.json_state("t", "id").await;
    let got = consumer_state(&ev, "public.t");
    assert_eq!(got.len(), want.len(), "row count differs\n{}", logs(&w));
    assert!(
        got == want,
        "consumer state differs from the table\n{}",
        logs(&w)
    );
    // Every original row no writer touched came as an `r` event.
    let read_ids: BTreeSet<i64> = ev
        .iter()
        .filter(|e| e["op"] == "r")
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect();
    let untouched = db
        .text_rows("SELECT id FROM t WHERE id <= 30000 AND v <> 'upd'")
        .await;
    for r in untouched {
        let id: i64 = r[0].as_deref().expect("id").parse().expect("int");
        assert!(read_ids.contains(&id), "row {id} was never backfilled");
    }
}

#[test]
fn mysql_backfill_while_streaming_converges_with_concurrent_writes() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), n INT);
         INSERT INTO t SELECT seq, MD5(seq), 0 FROM seq_1_to_20000;
         CREATE TABLE mark (id INT PRIMARY KEY)",
    );
    let w = Workdir::new();
    w.write_config(&format!(
        "{}backfill = \"never\"\nbackfill_chunk_rows = 500\n{}",
        server.source_toml("odm", &db),
        admin_toml()
    ));
    let mut child = spawn_run(&w, &[], &[]);
    wait_ready(&w);
    server.sql(&db, "INSERT INTO mark VALUES (1)");
    wait_marker(&w, "mark", 1, WAIT);
    let table = format!("{db}.t");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let cli = {
        let config = w.config();
        let table = table.clone();
        std::thread::spawn(move || {
            let out = run_to_end(
                &[
                    "backfill",
                    "--config",
                    config.to_str().expect("utf8"),
                    "--source",
                    "odm",
                    "--table",
                    &table,
                    "--wait",
                ],
                &[],
            );
            let _ = done_tx.send(());
            out
        })
    };
    let mut round = 0;
    while round < 300 && (round < 20 || done_rx.try_recv().is_err()) {
        let base = 100_000 + round * 10;
        server.sql(
            &db,
            &format!(
                "INSERT INTO t SELECT seq, 'new', {round} FROM seq_{base}_to_{};
                 UPDATE t SET n = n + 1, v = 'upd' WHERE id % 89 = {m};
                 DELETE FROM t WHERE id % 211 = {m};
                 UPDATE t SET id = id + 1000000 WHERE id = {round} * 97 + 5",
                base + 9,
                m = round % 89
            ),
        );
        round += 1;
    }
    let out = cli.join().expect("cli thread");
    assert!(out.status.success(), "{}\n{}", text_of(&out), logs(&w));
    server.sql(&db, "INSERT INTO mark VALUES (2)");
    let ev = wait_marker(&w, "mark", 2, WAIT);
    kill9(&mut child);
    eprintln!("write rounds: {round}");
    assert!(
        ev.iter().any(|e| e["op"] == "r"),
        "no backfill rows\n{}",
        logs(&w)
    );
    assert_cursors_increase(&ev);
    let want = server.rows_by_key(&db, "SELECT id, v, n FROM t");
    let got = consumer_text_rows(&ev, &table, &["id", "v", "n"]);
    assert_eq!(got.len(), want.len(), "row count differs\n{}", logs(&w));
    assert!(
        got == want,
        "consumer state differs from the table\n{}",
        logs(&w)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stored_request_resumes_after_kill9_without_starting_over() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g").await;
    let w = Workdir::new();
    let name = format!("odk_{}", std::process::id());
    w.write_config(&format!(
        "{}backfill = \"never\"\nbackfill_chunk_rows = 1000\nstatus_interval = \"1s\"\n{}",
        db.server.source_toml(db.name(), &name),
        admin_toml()
    ));
    // No service runs: the request is stored for the next start.
    let out = backfill_cli(&w, &name, "public.t", &[], &env());
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stored"),
        "{}",
        text_of(&out)
    );
    let again = backfill_cli(&w, &name, "t", &[], &env());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already stored"),
        "{}",
        text_of(&again)
    );

    // Killed after 3,500 rows: in the middle of the fourth chunk.
    let first = run_killed_after(&w, &env(), 3500);
    assert!(first.len() < 20000, "the whole table went before the kill");
    let mut child = spawn_run(&w, &[], &env());
    let mut ev = Vec::new();
    let ok = wait_until(WAIT, || {
        ev = w.events();
        ev.iter()
            .filter(|e| e["op"] == "r")
            .filter_map(|e| e["after"]["id"].as_i64())
            .collect::<BTreeSet<_>>()
            .len()
            == 20000
    });
    assert!(
        ok,
        "the backfill did not finish after the restart\n{}",
        logs(&w)
    );
    db.exec("INSERT INTO t VALUES (-1, 'marker')").await;
    let ev = wait_marker(&w, "t", -1, WAIT);
    kill9(&mut child);
    let reads = ev.iter().filter(|e| e["op"] == "r").count();
    // Resumed after the last accepted chunk: at most the chunk in flight is read twice.
    assert!(
        reads < 20000 + 2 * 1000,
        "{reads} rows read: the backfill started over\n{}",
        logs(&w)
    );
    let want = db.json_state("t", "id").await;
    assert!(
        consumer_state(&ev, "public.t") == want,
        "consumer state differs\n{}",
        logs(&w)
    );
    assert!(
        logs(&w).contains("resuming on-demand backfill"),
        "{}",
        logs(&w)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_uncaptured_and_keyless_tables() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY); CREATE TABLE nokey (v text)").await;
    let w = Workdir::new();
    let name = format!("odr_{}", std::process::id());
    w.write_config(&format!(
        "{}tables = {{ include = [\"public.t\", \"public.nokey\"] }}\n{}",
        db.server.source_toml(db.name(), &name),
        admin_toml()
    ));
    let out = backfill_cli(&w, &name, "public.other", &[], &env());
    assert_eq!(out.status.code(), Some(3), "{}", text_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not captured"),
        "{}",
        text_of(&out)
    );
    let out = backfill_cli(&w, &name, "nokey", &[], &env());
    assert_eq!(out.status.code(), Some(3), "{}", text_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no primary key"),
        "{}",
        text_of(&out)
    );
    let out = backfill_cli(&w, "nope", "t", &[], &env());
    assert_eq!(out.status.code(), Some(2), "{}", text_of(&out));
    // Nothing was stored for the refused tables.
    assert!(
        !w.state().exists() || {
            let st = run_to_end(
                &["status", "--config", w.config().to_str().expect("utf8")],
                &env(),
            );
            !String::from_utf8_lossy(&st.stdout).contains("#ondemand")
        }
    );
}
