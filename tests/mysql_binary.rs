//! Through the `logtide` binary: kill -9 in the middle of a MariaDB stream, restart, and
//! every row arrives (at least once, a replayed change with the same cursor and content).

use crate::common::mariadb::MariaServer;
use crate::common::run::{kill9, logs, spawn_run, wait_until, Workdir};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const ROWS: i64 = 20_000;

fn ids(events: &[serde_json::Value]) -> BTreeSet<i64> {
    events
        .iter()
        .filter(|e| e["op"] == "c")
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect()
}

#[test]
fn kill9_then_restart_loses_nothing() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE k (id INT PRIMARY KEY, v VARCHAR(40))");
    let w = Workdir::new();
    w.write_config(&format!(
        "{}backfill = \"never\"\n",
        server.source_toml("maria", &db)
    ));
    let mut child = spawn_run(&w, &[], &[]);
    // The fresh source checkpoints its start position; wait until it is streaming.
    assert!(
        wait_until(Duration::from_secs(60), || logs(&w)
            .contains("mysql binlog stream started")),
        "source did not start:\n{}",
        logs(&w)
    );
    // 200 transactions of 100 rows, written while logtide streams.
    let mut sql = String::new();
    for t in 0..ROWS / 100 {
        sql.push_str(&format!(
            "INSERT INTO k SELECT seq, CONCAT('row ', seq) FROM seq_{}_to_{};",
            t * 100 + 1,
            t * 100 + 100
        ));
    }
    server.sql(&db, &sql);
    assert!(
        wait_until(Duration::from_secs(60), || !w.events().is_empty()),
        "no events:\n{}",
        logs(&w)
    );
    kill9(&mut child);
    let before_kill = ids(&w.events()).len();
    server.sql(&db, "INSERT INTO k VALUES (1000000, 'after the kill')");

    let mut child = spawn_run(&w, &[], &[]);
    let ok = wait_until(Duration::from_secs(120), || {
        ids(&w.events()).len() as i64 == ROWS + 1
    });
    kill9(&mut child);
    let events = w.events();
    let got = ids(&events);
    assert!(
        ok,
        "have {} of {} ids after restart:\n{}",
        got.len(),
        ROWS + 1,
        logs(&w)
    );
    assert!((1..=ROWS).all(|i| got.contains(&i)) && got.contains(&1_000_000));
    // A change delivered twice has the same cursor and the same content.
    let mut by_cursor: BTreeMap<String, &serde_json::Value> = BTreeMap::new();
    for e in &events {
        let c = e["source"]["cursor"].as_str().expect("cursor").to_owned();
        if let Some(prev) = by_cursor.insert(c, e) {
            assert_eq!(prev["after"], e["after"]);
        }
    }
    eprintln!(
        "delivered {} lines for {} rows ({} before the kill)",
        events.len(),
        ROWS + 1,
        before_kill
    );
}
