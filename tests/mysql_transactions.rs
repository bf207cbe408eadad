//! Transactions, row images and MariaDB types exactly as the server logs them (issue 13),
//! against a private MariaDB: savepoints mixed with MyISAM writes (rows since a
//! `ROLLBACK TO` never delivered), nested savepoints, XA commit / rollback / one phase, a
//! restart while an XA transaction is prepared (nothing lost, its rows delivered at
//! XA COMMIT only, spilled to disk when large), the key of MINIMAL-image updates,
//! COMPRESSED columns in captured and uncaptured tables, UUID / INET4 / INET6 in the
//! stream and the backfill.

use crate::common::mariadb::{checkpoint, source_config, MariaServer, Stream};
use crate::common::run::{consumer_text_rows, kill9, spawn_run, wait_marker, Workdir};
use logtide::event::ChangeEvent;
use logtide::position::{MysqlPosition, Position};
use logtide::source::SourceMessage;
use logtide::value::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn json(events: &[ChangeEvent]) -> Vec<serde_json::Value> {
    events.iter().map(|e| e.to_json(0)).collect()
}

fn id_of(e: &ChangeEvent) -> Option<i64> {
    let img = e.after.as_ref().or(e.before.as_ref())?;
    match img.first()?.as_ref()? {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn mpos(p: &Position) -> &MysqlPosition {
    match p {
        Position::Mysql(m) => m,
        other => panic!("not a mysql position: {other:?}"),
    }
}

/// Every id any event of `table` carried (in before or after).
fn ids_seen(events: &[ChangeEvent], table: &str) -> BTreeSet<i64> {
    events
        .iter()
        .filter(|e| e.table.name == table)
        .filter_map(id_of)
        .collect()
}

fn assert_positions_increase(events: &[ChangeEvent]) {
    for w in events.windows(2) {
        assert!(
            mpos(&w[0].position) < mpos(&w[1].position),
            "positions out of order: {:?} then {:?}",
            w[0].position,
            w[1].position
        );
    }
}

#[test]
fn savepoints_with_myisam_writes_deliver_exactly_what_stayed() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB;
         CREATE TABLE my (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=MyISAM;
         INSERT INTO t VALUES (1, 'one')",
    );
    let start = server.binlog_position();
    // The MyISAM writes make the server log SAVEPOINT / ROLLBACK TO inside the group
    // (with InnoDB only it cuts the rows out of the binlog itself).
    server.sql(
        &db,
        "BEGIN;
         UPDATE t SET v = 'before savepoint' WHERE id = 1;
         INSERT INTO my VALUES (1, 'm1');
         SAVEPOINT s1;
         INSERT INTO t VALUES (2, 'rolled back to savepoint');
         INSERT INTO my VALUES (2, 'myisam keeps it');
         UPDATE t SET v = 'undone' WHERE id = 1;
         SAVEPOINT `s 2`;
         INSERT INTO t VALUES (5, 'undone too');
         ROLLBACK TO s1;
         INSERT INTO t VALUES (3, 'after rollback to');
         RELEASE SAVEPOINT s1;
         COMMIT;",
    );
    // Nested savepoints, a name reused, more rows after a savepoint than the reader
    // streams through unheld (1024), and a whole rollback.
    server.sql(
        &db,
        "BEGIN;
         INSERT INTO t VALUES (20, 'kept');
         INSERT INTO my VALUES (20, 'm');
         SAVEPOINT a;
         INSERT INTO t VALUES (21, 'undone');
         SAVEPOINT b;
         INSERT INTO t VALUES (22, 'undone');
         ROLLBACK TO b;
         INSERT INTO t VALUES (23, 'undone with a');
         INSERT INTO t SELECT seq, 'bulk undone' FROM seq_1000_to_3999;
         ROLLBACK TO SAVEPOINT a;
         INSERT INTO t VALUES (24, 'after a');
         SAVEPOINT a;
         UPDATE t SET v = 'undone' WHERE id = 24;
         ROLLBACK TO a;
         INSERT INTO t SELECT seq, 'bulk kept' FROM seq_5000_to_6499;
         COMMIT;
         BEGIN;
         INSERT INTO t VALUES (30, 'rolled back');
         INSERT INTO my VALUES (30, 'myisam keeps it');
         SAVEPOINT c;
         INSERT INTO t VALUES (31, 'rolled back');
         ROLLBACK;
         BEGIN;
         INSERT INTO t VALUES (40, 'innodb only');
         SAVEPOINT d;
         INSERT INTO t VALUES (41, 'undone');
         ROLLBACK TO d;
         COMMIT;",
    );
    let end = server.binlog_position();
    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        256,
    );
    let events = Stream::changes(stream.until(&end, WAIT));
    stream.stop();

    let seen = ids_seen(&events, "t");
    for undone in [2, 5, 21, 22, 23, 30, 31, 41, 1000, 3999] {
        assert!(!seen.contains(&undone), "undone row {undone} was delivered");
    }
    assert!(
        !json(&events)
            .iter()
            .any(|e| e["after"]["v"] == "undone" || e["after"]["v"] == "undone too"),
        "an undone update was delivered"
    );
    assert_positions_increase(&events);
    let j = json(&events);
    let mut want = server.rows_by_key(&db, "SELECT id, v FROM t");
    want.remove("1"); // written before the start, updated in the stream
    let mut got = consumer_text_rows(&j, &format!("{db}.t"), &["id", "v"]);
    assert_eq!(
        got.remove("1"),
        Some(vec![Some("before savepoint".to_string())])
    );
    assert_eq!(got, want, "InnoDB table rebuilt from the events");
    let got_my = consumer_text_rows(&j, &format!("{db}.my"), &["id", "v"]);
    assert_eq!(
        got_my,
        server.rows_by_key(&db, "SELECT id, v FROM my"),
        "MyISAM rows are not undone by ROLLBACK TO (and are delivered)"
    );
}

/// Collects messages until `done` holds for the change events so far; panics on timeout.
fn collect_until(
    stream: &mut Stream,
    mut done: impl FnMut(&[ChangeEvent]) -> bool,
) -> (Vec<ChangeEvent>, Vec<MysqlPosition>) {
    let deadline = Instant::now() + WAIT;
    let (mut events, mut boundaries) = (Vec::new(), Vec::new());
    while !done(&events) {
        assert!(
            Instant::now() < deadline,
            "timed out; got {} events",
            events.len()
        );
        match stream.next(Duration::from_millis(200)) {
            Some(SourceMessage::Change(e)) => events.push(e),
            Some(SourceMessage::Boundary(p)) => boundaries.push(mpos(&p).clone()),
            Some(SourceMessage::Chunk(_)) => panic!("a source sends no chunks"),
            None => {}
        }
    }
    (events, boundaries)
}

#[test]
fn xa_rows_wait_for_the_decision_and_survive_a_restart() {
    // A private server: the test compares checkpoints with binlog positions it read, so no
    // other test's transaction may land between such a position and its next statement.
    let server = &MariaServer::builder().start();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(500)) ENGINE=InnoDB",
    );
    let start = server.binlog_position();
    server.sql(
        &db,
        "XA START 'x1'; INSERT INTO t VALUES (10, 'xa committed'); XA END 'x1'; XA PREPARE 'x1';
         XA COMMIT 'x1';
         XA START 'x2', 'b', 3; INSERT INTO t VALUES (11, 'xa rolled back'); XA END 'x2', 'b', 3;
         XA PREPARE 'x2', 'b', 3; XA ROLLBACK 'x2', 'b', 3;
         XA START 'x3'; INSERT INTO t VALUES (12, 'one phase'); XA END 'x3';
         XA COMMIT 'x3' ONE PHASE;",
    );
    let end = server.binlog_position();
    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        256,
    );
    let events = Stream::changes(stream.until(&end, WAIT));
    let ids: Vec<i64> = events.iter().filter_map(id_of).collect();
    assert_eq!(
        ids,
        vec![10, 12],
        "XA ROLLBACK after PREPARE delivers nothing"
    );

    // Prepared and left undecided (the sessions end; the server keeps them): a big one
    // (more than the 8 MiB the reader holds in memory) to commit, one to roll back.
    let before_prepare = server.binlog_position();
    server.sql(
        &db,
        "XA START 'big'; INSERT INTO t SELECT seq, REPEAT('p', 400) FROM seq_100_to_30099;
         XA END 'big'; XA PREPARE 'big'",
    );
    server.sql(
        &db,
        "XA START 'gone'; INSERT INTO t VALUES (60, 'never'); XA END 'gone'; XA PREPARE 'gone'",
    );
    server.sql(&db, "INSERT INTO t VALUES (50, 'after the prepares')");
    let (events, boundaries) =
        collect_until(&mut stream, |e| e.iter().any(|e| id_of(e) == Some(50)));
    assert_eq!(
        events.iter().filter_map(id_of).collect::<Vec<_>>(),
        vec![50],
        "prepared rows are not delivered before XA COMMIT"
    );
    // Checkpoints stay at or before the first undecided prepare.
    let floor = checkpoint(&before_prepare.0, before_prepare.1);
    let last = boundaries
        .last()
        .cloned()
        .unwrap_or_else(|| mpos(&floor).clone());
    assert!(
        &last <= mpos(&floor),
        "a checkpoint ({last:?}) moved past the undecided XA PREPARE at {floor:?}"
    );
    stream.stop();

    // Restart from the last checkpoint; decide the prepared transactions.
    let resume = Position::Mysql(last.clone());
    let mut stream = Stream::start(source_config(server, &db, ""), Some(resume), 256);
    server.sql(
        &db,
        "XA COMMIT 'big'; XA ROLLBACK 'gone'; INSERT INTO t VALUES (70, 'end')",
    );
    let end = server.binlog_position();
    let events = Stream::changes(stream.until(&end, WAIT));
    stream.stop();
    let big: Vec<i64> = events
        .iter()
        .filter_map(id_of)
        .filter(|i| (100..30100).contains(i))
        .collect();
    assert_eq!(
        big.len(),
        30_000,
        "the committed XA transaction, exactly once"
    );
    assert_eq!(big.iter().copied().collect::<BTreeSet<_>>().len(), 30_000);
    let seen = ids_seen(&events, "t");
    assert!(
        !seen.contains(&60),
        "XA ROLLBACK after a restart delivers nothing"
    );
    assert!(seen.contains(&50) && seen.contains(&70));
    assert_positions_increase(&events);
    assert!(events.iter().filter(|e| id_of(e) == Some(100)).all(|e| e
        .after
        .as_ref()
        .expect("after")[1]
        == Some(Value::Text("p".repeat(400)))));
}

#[test]
fn minimal_row_image_update_keys_come_from_before() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), n INT); INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2)",
    );
    let start = server.binlog_position();
    server.sql(
        &db,
        "SET SESSION binlog_row_image = 'MINIMAL';
         UPDATE t SET v = 'changed' WHERE id = 1;
         UPDATE t SET id = 3 WHERE id = 2;
         DELETE FROM t WHERE id = 1",
    );
    let end = server.binlog_position();
    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        64,
    );
    let events = Stream::changes(stream.until(&end, WAIT));
    stream.stop();
    let j = json(&events);
    assert_eq!(j.len(), 3);
    assert_eq!(j[0]["op"], "u");
    assert_eq!(j[0]["before"], serde_json::json!({"id": 1}));
    assert_eq!(j[0]["after"], serde_json::json!({"v": "changed"}));
    assert_eq!(j[0]["key"], serde_json::json!({"id": 1}), "key from before");
    assert_eq!(
        j[1]["key"],
        serde_json::json!({"id": 3}),
        "a changed key: the new one"
    );
    assert_eq!(j[2]["op"], "d");
    assert_eq!(j[2]["key"], serde_json::json!({"id": 1}));
}

#[test]
fn compressed_columns_decoded_when_captured_and_harmless_elsewhere() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    let other = server.fresh_db();
    server.sql(
        &other,
        "CREATE TABLE elsewhere (id INT PRIMARY KEY, c BLOB COMPRESSED, d VARCHAR(300) COMPRESSED)",
    );
    server.sql(
        &db,
        "CREATE TABLE c (id INT PRIMARY KEY, d VARCHAR(200) COMPRESSED, e BLOB COMPRESSED,
                         f TEXT COMPRESSED, g VARCHAR(2000) CHARACTER SET utf8mb4 COMPRESSED)",
    );
    let start = server.binlog_position();
    server.sql(
        &other,
        "INSERT INTO elsewhere VALUES (1, REPEAT('z', 5000), 'q')",
    );
    server.sql(
        &db,
        "INSERT INTO c VALUES (1, REPEAT('x', 150), REPEAT('y', 300), 'short', REPEAT('é', 1500));
         INSERT INTO c VALUES (2, '', '', NULL, 'ü');
         UPDATE c SET e = REPEAT(x'00ff', 20000) WHERE id = 2",
    );
    let end = server.binlog_position();
    let mut stream = Stream::start(
        source_config(server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        64,
    );
    let events = Stream::changes(stream.until(&end, WAIT));
    stream.stop();
    assert_eq!(events.len(), 3, "only the captured table: {events:?}");
    let a = events[0].after.as_ref().expect("after");
    assert_eq!(a[1], Some(Value::Text("x".repeat(150))));
    assert_eq!(a[2], Some(Value::Bytes(vec![b'y'; 300])));
    assert_eq!(a[3], Some(Value::Text("short".into())));
    assert_eq!(a[4], Some(Value::Text("é".repeat(1500))));
    let b = events[1].after.as_ref().expect("after");
    assert_eq!(b[1], Some(Value::Text(String::new())));
    assert_eq!(b[3], Some(Value::Null));
    assert_eq!(b[4], Some(Value::Text("ü".into())));
    let u = events[2].after.as_ref().expect("after");
    assert_eq!(u[2], Some(Value::Bytes([0u8, 0xff].repeat(20000))));
}

#[test]
fn uuid_and_inet_are_text_in_stream_and_backfill_alike() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE n (id INT PRIMARY KEY, u UUID, a INET4, b INET6);
         CREATE TABLE k (u UUID PRIMARY KEY, v INT);
         INSERT INTO n VALUES
           (1, '123e4567-e89b-12d3-a456-426614174000', '192.168.1.10', '::1'),
           (2, '123e4567-e89b-72d3-0456-426614174000', '10.0.0.0', '2001:db8::ff00:42:0'),
           (3, NULL, '0.0.0.0', '::ffff:1.2.3.4'),
           (4, '00000000-0000-0000-0000-000000000000', NULL, '::');
         INSERT INTO k VALUES ('123e4567-e89b-12d3-a456-426614174000', 1),
           ('ffffffff-e89b-12d3-a456-426614174000', 2), ('00000000-0000-7000-8000-000000000001', 3)",
    );
    let w = Workdir::new();
    w.write_config(&format!(
        "{}backfill_chunk_rows = 2\n",
        server.source_toml("uuids", &db)
    ));
    let mut child = spawn_run(&w, &[], &[]);
    // The backfill is done (7 rows read) before the same values go through the binlog
    // again (ids + 100).
    w.wait_events(7, WAIT);
    server.sql(
        &db,
        "INSERT INTO n SELECT id + 100, u, a, b FROM n;
         INSERT INTO n VALUES (-1, NULL, NULL, NULL)",
    );
    let ev = wait_marker(&w, "n", -1, WAIT);
    kill9(&mut child);
    let rows = consumer_text_rows(&ev, &format!("{db}.n"), &["id", "u", "a", "b"]);
    let read = |id: i64| rows.get(&id.to_string()).cloned().expect("row");
    let text = |s: &str| Some(s.to_string());
    assert_eq!(
        read(1),
        vec![
            text("123e4567-e89b-12d3-a456-426614174000"),
            text("192.168.1.10"),
            text("::1")
        ]
    );
    for id in 1..=4 {
        assert_eq!(
            read(id),
            read(id + 100),
            "backfill and stream differ for id {id}"
        );
    }
    let want = server.rows_by_key(&db, "SELECT id, u, a, b FROM n");
    assert_eq!(rows, want, "values as the server prints them");
    let keys = consumer_text_rows(&ev, &format!("{db}.k"), &["u", "v"]);
    assert_eq!(keys, server.rows_by_key(&db, "SELECT u, v FROM k"));
    let ops: BTreeSet<&str> = ev.iter().filter_map(|e| e["op"].as_str()).collect();
    assert!(ops.contains("r") && ops.contains("c"), "{ops:?}");
}

/// The events as JSON without the delivery time, for comparing two runs.
fn stable_json(events: &[ChangeEvent]) -> Vec<serde_json::Value> {
    json(events)
}

/// Runs the schema workload of items 3 and 4: DDL right after DML, a name swap, a column
/// added and dropped again, a JSON column; returns the start position.
fn schema_workload(server: &MariaServer, db: &str) -> (String, u64) {
    let start = server.binlog_position();
    server.sql(
        db,
        "CREATE TABLE p (id INT PRIMARY KEY, first_name VARCHAR(20), last_name VARCHAR(20), doc JSON);
         INSERT INTO p VALUES (1, 'Ann', 'Lee', '[]');
         ALTER TABLE p CHANGE first_name last_name VARCHAR(20), CHANGE last_name first_name VARCHAR(20);
         INSERT INTO p VALUES (2, 'Lee2', 'Ann2', '{\"a\": null}');",
    );
    start
}

fn schema_workload_2(server: &MariaServer, db: &str) {
    server.sql(
        db,
        "ALTER TABLE p ADD COLUMN extra INT AFTER id;
         INSERT INTO p (id, last_name, first_name, doc, extra) VALUES (3, 'x', 'y', '[1]', 7);
         ALTER TABLE p DROP COLUMN extra, RENAME COLUMN doc TO body;
         UPDATE p SET body = '[2]' WHERE id = 3;",
    );
}

fn check_schema_events(events: &[ChangeEvent]) {
    let j = json(events);
    assert_eq!(j.len(), 4, "{j:#?}");
    assert_eq!(
        j[0]["after"],
        serde_json::json!({"id": 1, "first_name": "Ann", "last_name": "Lee", "doc": []})
    );
    assert_eq!(
        j[1]["after"],
        serde_json::json!({"id": 2, "last_name": "Lee2", "first_name": "Ann2", "doc": {"a": null}})
    );
    assert_eq!(
        j[2]["after"],
        serde_json::json!({"id": 3, "extra": 7, "last_name": "x", "first_name": "y", "doc": [1]})
    );
    assert_eq!(j[3]["after"]["body"], serde_json::json!([2]));
    assert_eq!(j[3]["key"], serde_json::json!({"id": 3}));
}

/// Item 4: with MINIMAL metadata the names come from the schema history as of each row,
/// across a restart (the history is stored with the checkpoints) and in a replay.
#[test]
fn schema_history_minimal_metadata_restart_and_replay() {
    let server = MariaServer::builder().row_metadata("MINIMAL").start();
    let db = server.fresh_db();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = logtide::checkpoint::CheckpointStore::open(dir.path()).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // Live from before the table exists.
    let start = server.binlog_position();
    let mut stream = Stream::start_with_store(
        source_config(&server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        64,
        Some(store.clone()),
    );
    schema_workload(&server, &db);
    let mid = server.binlog_position();
    let msgs = stream.until(&mid, WAIT);
    stream.stop();
    let last = msgs
        .iter()
        .rev()
        .find_map(|m| match m {
            SourceMessage::Boundary(p) => Some(p.clone()),
            _ => None,
        })
        .expect("a boundary");
    rt.block_on(store.save("src", &last)).expect("checkpoint");
    let mut events = Stream::changes(msgs);
    // Stopped; the table changes twice more meanwhile, then a restart from the checkpoint
    // reads the insert of the dropped column with the schema as of its position.
    schema_workload_2(&server, &db);
    let end = server.binlog_position();
    let mut stream = Stream::start_with_store(
        source_config(&server, &db, ""),
        Some(last),
        64,
        Some(store.clone()),
    );
    events.extend(Stream::changes(stream.until(&end, WAIT)));
    stream.stop();
    check_schema_events(&events);
    // A replay of the whole range (history from the store) gives the same events.
    let mut stream = Stream::start_with_store(
        source_config(&server, &db, ""),
        Some(checkpoint(&start.0, start.1)),
        64,
        Some(store),
    );
    let replay = Stream::changes(stream.until(&end, WAIT));
    stream.stop();
    assert_eq!(
        stable_json(&replay),
        stable_json(&events),
        "replay differs from live"
    );
}

/// Item 3: a JSON column is JSON in every event, also when the stream lags behind an
/// ADD/DROP COLUMN (FULL metadata; the table existed before the start).
#[test]
fn schema_history_json_is_json_whatever_the_current_table() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE j (id INT PRIMARY KEY, c_json JSON)");
    let start = server.binlog_position();
    server.sql(
        &db,
        "INSERT INTO j VALUES (1, '[]');
         ALTER TABLE j ADD COLUMN x INT;
         INSERT INTO j VALUES (2, '[]', 5);
         ALTER TABLE j DROP COLUMN x;
         INSERT INTO j VALUES (3, 'null');
         ALTER TABLE j ADD COLUMN y INT FIRST;",
    );
    let end = server.binlog_position();
    let run = || {
        let mut stream = Stream::start(
            source_config(server, &db, ""),
            Some(checkpoint(&start.0, start.1)),
            64,
        );
        let e = Stream::changes(stream.until(&end, WAIT));
        stream.stop();
        e
    };
    let events = run();
    let j = json(&events);
    assert_eq!(j.len(), 3);
    assert_eq!(j[0]["after"], serde_json::json!({"id": 1, "c_json": []}));
    assert_eq!(
        j[1]["after"],
        serde_json::json!({"id": 2, "c_json": [], "x": 5})
    );
    assert_eq!(
        j[2]["after"],
        serde_json::json!({"id": 3, "c_json": {"$json": null}})
    );
    assert_eq!(stable_json(&run()), j, "a second run differs");
}

/// The seeded scenario (short form): savepoints with and without MyISAM writes, XA commit
/// and rollback, DDL right after DML, rotation; read live while it runs, then replayed
/// over the same binlog range: identical events, and the table rebuilt from them equals
/// the database.
#[test]
fn seeded_scenario_live_equals_replay_equals_database() {
    seeded_scenario(MariaServer::get(), 0x5eed_1313);
}

/// The same scenario with `binlog_row_metadata = MINIMAL` (names from the schema history
/// across the DDL) on a private server.
#[test]
fn seeded_scenario_with_minimal_metadata() {
    let server = MariaServer::builder().row_metadata("MINIMAL").start();
    seeded_scenario(&server, 0x0dd_5eed);
}

/// Savepoints (with a MyISAM table), XA commit/rollback, DDL between and right after DML,
/// rotation; halfway the live source is stopped as a crash leaves it (its checkpoint a few
/// transactions behind what it read) and resumed from that checkpoint. The events kept
/// before the checkpoint plus those after the resume must equal a replay of the whole
/// range, and rebuild the tables as the database has them.
fn seeded_scenario(server: &MariaServer, mut seed: u64) {
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB;
         CREATE TABLE my (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=MyISAM",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = logtide::checkpoint::CheckpointStore::open(dir.path()).expect("store");
    let start = server.binlog_position();
    let start_live = |from: Position| {
        Stream::start_with_store(
            source_config(server, &db, ""),
            Some(from),
            1024,
            Some(store.clone()),
        )
    };
    let mut live = start_live(checkpoint(&start.0, start.1));
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut kept: Vec<SourceMessage> = Vec::new();
    let mut next_id = 1;
    for round in 0..40 {
        if round == 20 {
            // The crash: what was read up to here, checkpointed only up to a boundary in
            // the middle of it; the rest is read again after the resume.
            let mid = server.binlog_position();
            let read = live.until(&mid, WAIT);
            live.stop();
            let boundaries: Vec<usize> = read
                .iter()
                .enumerate()
                .filter(|(_, m)| matches!(m, SourceMessage::Boundary(_)))
                .map(|(i, _)| i)
                .collect();
            let cut = boundaries[boundaries.len() / 2];
            let SourceMessage::Boundary(ck) = &read[cut] else {
                unreachable!()
            };
            let ck = ck.clone();
            kept.extend(read.into_iter().take(cut + 1));
            live = start_live(ck);
        }
        let a = next_id;
        next_id += 3;
        let sql = match rnd(6) {
            0 => format!(
                "BEGIN; INSERT INTO t VALUES ({a}, 'kept'); INSERT INTO my VALUES ({a}, 'm');
                 SAVEPOINT s; INSERT INTO t VALUES ({}, 'undone'); UPDATE t SET v = 'undone' WHERE id = {a};
                 ROLLBACK TO s; INSERT INTO t VALUES ({}, 'after'); COMMIT",
                a + 1,
                a + 2
            ),
            1 => format!(
                "BEGIN; INSERT INTO t VALUES ({a}, 'innodb'); SAVEPOINT s;
                 INSERT INTO t VALUES ({}, 'undone'); ROLLBACK TO s; COMMIT",
                a + 1
            ),
            2 => format!(
                "XA START 'r{round}'; INSERT INTO t VALUES ({a}, 'xa'); XA END 'r{round}';
                 XA PREPARE 'r{round}'; XA {} 'r{round}'",
                if rnd(2) == 0 { "COMMIT" } else { "ROLLBACK" }
            ),
            3 => format!(
                "INSERT INTO t VALUES ({a}, 'ddl next'); ALTER TABLE t ADD COLUMN extra INT;
                 UPDATE t SET extra = 1, v = 'with extra' WHERE id = {a}; ALTER TABLE t DROP COLUMN extra"
            ),
            4 => format!(
                "INSERT INTO t VALUES ({a}, 'rotate'); FLUSH BINARY LOGS;
                 DELETE FROM t WHERE id = {}",
                rnd(a.max(1)) + 1
            ),
            _ => format!(
                "INSERT INTO t VALUES ({a}, 'plain'); UPDATE t SET v = 'upd {round}' WHERE id % 7 = {}",
                rnd(7)
            ),
        };
        server.sql(&db, &sql);
    }
    let end = server.binlog_position();
    kept.extend(live.until(&end, WAIT));
    live.stop();
    let live_events = Stream::changes(kept);
    let mut replay = start_live(checkpoint(&start.0, start.1));
    let replay_events = Stream::changes(replay.until(&end, WAIT));
    replay.stop();
    assert!(!live_events.is_empty());
    assert_eq!(
        json(&replay_events),
        json(&live_events),
        "replay differs from live (with its crash and resume)"
    );
    assert_positions_increase(&live_events);
    let j = json(&live_events);
    assert!(
        !j.iter().any(|e| e["after"]["v"] == "undone"),
        "an undone row was delivered"
    );
    assert_eq!(
        consumer_text_rows(&j, &format!("{db}.t"), &["id", "v"]),
        server.rows_by_key(&db, "SELECT id, v FROM t"),
        "InnoDB table rebuilt from the events"
    );
    assert_eq!(
        consumer_text_rows(&j, &format!("{db}.my"), &["id", "v"]),
        server.rows_by_key(&db, "SELECT id, v FROM my")
    );
}
