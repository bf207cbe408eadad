//! The PostgreSQL source through the library API (`source::postgres::run`,
//! `ReplConnection`), against the harness's servers: what the pipeline receives (order,
//! filters, unchanged TOAST, streamed transactions with savepoints, boundaries), the slot
//! confirmed only up to the last checkpoint, backpressure past `wal_sender_timeout`, and
//! authentication of the replication connection (SCRAM with a non-ASCII password, md5,
//! clear text). These were `#[ignore]`d live tests in `src/source/postgres/mod.rs` that
//! needed a hand-started server. Each test has a private server with the settings it needs.

use crate::common::pg::{self, PgServer, TestDb};
use logtide::config::{Config, PostgresSourceConfig, Secret, SourceConfig};
use logtide::event::{ChangeEvent, Connector, Op, SourceInfo};
use logtide::position::{Lsn, Position};
use logtide::source::postgres::conn::ReplConnection;
use logtide::source::postgres::{run, PgError};
use logtide::source::{ErrorClass, SourceContext, SourceMessage};
use logtide::value::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

fn text(s: &str) -> Option<Value> {
    Some(Value::Text(s.into()))
}

/// A config with one PostgreSQL source on `db` (the harness's SCRAM user, slot = the
/// database name) plus `extra` source lines.
fn parse(db: &TestDb<'_>, name: &str, extra: &str) -> (SourceConfig, PostgresSourceConfig) {
    let toml = format!(
        "{}slot = \"{}\"\nstatus_interval = \"1s\"\n{extra}\n[[sinks]]\nkind = \"stdout\"\n",
        db.server.source_toml(db.name(), name),
        db.name()
    );
    let cfg = Config::parse(&toml, std::path::Path::new("t.toml")).expect("config");
    let source = cfg.sources[0].clone();
    let SourceConfig::Postgres(pg) = source.clone() else {
        panic!("postgres")
    };
    (source, pg)
}

struct Running {
    rx: mpsc::Receiver<SourceMessage>,
    ck_tx: watch::Sender<Option<Position>>,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), PgError>>,
}

/// Starts `run` with a channel of `capacity` messages.
fn start(source: &SourceConfig, pg: PostgresSourceConfig, name: &str, capacity: usize) -> Running {
    let (tx, rx) = mpsc::channel(capacity);
    let (ck_tx, ck_rx) = watch::channel(None);
    let cancel = CancellationToken::new();
    let ctx = SourceContext {
        tx,
        checkpointed: ck_rx,
        resume_from: None,
        filter: Arc::new(source.filter()),
        cancel: cancel.clone(),
        report: Default::default(),
        store: None,
    };
    let info = Arc::new(SourceInfo {
        connector: Connector::Postgres,
        name: name.into(),
    });
    let handle = tokio::spawn(async move { run(&pg, &pg.endpoint(), info, ctx).await });
    Running {
        rx,
        ck_tx,
        cancel,
        handle,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_in_order_with_filters_toast_savepoints_and_confirms_the_checkpoint() {
    // Large transactions are streamed to the client while still open (protocol v2+) once
    // they pass the walsender's logical_decoding_work_mem: a private server with a small
    // one makes the 3000-row transactions take that path.
    let server = PgServer::start_with(&[("logical_decoding_work_mem", "64kB")]);
    let db = server.fresh_db();
    db.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v text, doc text, secret text);
         ALTER TABLE t ALTER COLUMN doc SET STORAGE EXTERNAL;
         CREATE TABLE nopk (a int, b text);
         CREATE TABLE skipped (a int PRIMARY KEY);",
    )
    .await;
    let (source, pg) = parse(
        &db,
        "live",
        "tables = { exclude = [\"public.skipped\"] }\ncolumns = { \"public.t\" = { exclude = [\"secret\"] } }",
    );
    let mut r = start(&source, pg, "live", 64);

    // Streaming has started once the first keepalive turned into an idle Boundary (a slot
    // row alone is visible before the slot is consistent).
    let first = tokio::time::timeout(Duration::from_secs(20), r.rx.recv())
        .await
        .expect("streaming starts");
    let Some(SourceMessage::Boundary(first)) = first else {
        panic!("expected an idle boundary first")
    };
    r.ck_tx.send_replace(Some(first));
    let big: String = (0..400).map(|i| format!("{i:08x}")).collect();
    // One call per transaction: statements before a BEGIN in one simple query join it.
    let workload = [
        format!("INSERT INTO t VALUES (1, 'a', '{big}', 's1'), (2, 'b', NULL, 's2')"),
        "UPDATE t SET v = 'a2' WHERE id = 1".to_owned(),
        "INSERT INTO skipped VALUES (1)".to_owned(),
        "INSERT INTO nopk VALUES (7, 'x')".to_owned(),
        "DELETE FROM t WHERE id = 2".to_owned(),
        "TRUNCATE nopk".to_owned(),
        "BEGIN; INSERT INTO t SELECT g, 'big', NULL, NULL FROM generate_series(100, 5099) g; ROLLBACK".to_owned(),
        "BEGIN; INSERT INTO t SELECT g, 'keep', NULL, NULL FROM generate_series(100, 3099) g; \
         SAVEPOINT s; INSERT INTO t SELECT g, 'drop', NULL, NULL FROM generate_series(10000, 12999) g; \
         ROLLBACK TO s; INSERT INTO t VALUES (99, 'last', NULL, NULL); COMMIT"
            .to_owned(),
        "INSERT INTO t VALUES (3, 'end', NULL, NULL)".to_owned(),
    ];
    for w in &workload {
        db.exec(w).await;
    }

    let mut events: Vec<ChangeEvent> = Vec::new();
    let mut boundaries = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while events.len() < 3008 {
        let Ok(m) = tokio::time::timeout_at(deadline, r.rx.recv()).await else {
            let mut by: std::collections::BTreeMap<(u64, &str, String), usize> = Default::default();
            for e in &events {
                *by.entry((e.txid.unwrap_or(0), e.op.code(), e.table.name.clone()))
                    .or_default() += 1;
            }
            panic!("timed out after {} events: {by:?}", events.len());
        };
        match m.expect("open") {
            SourceMessage::Change(e) => events.push(e),
            SourceMessage::Boundary(p) => {
                boundaries += 1;
                r.ck_tx.send_replace(Some(p));
            }
            SourceMessage::Chunk(_) => panic!("a source sends no chunks"),
        }
    }
    let ops: Vec<(Op, String)> = events
        .iter()
        .take(7)
        .map(|e| (e.op, e.table.name.clone()))
        .collect();
    assert_eq!(
        ops,
        vec![
            (Op::Create, "t".into()),
            (Op::Create, "t".into()),
            (Op::Update, "t".into()),
            (Op::Create, "nopk".into()),
            (Op::Delete, "t".into()),
            (Op::Truncate, "nopk".into()),
            (Op::Create, "t".into()),
        ]
    );
    // Excluded column gone; unchanged TOAST absent, not null.
    assert_eq!(events[0].table.columns, vec!["id", "v", "doc"]);
    assert_eq!(events[2].after.as_ref().expect("after")[2], None);
    assert_eq!(events[2].unchanged(), vec!["doc"]);
    // nopk has no key.
    assert!(events[3].table.key.is_empty());
    // Streamed transaction with a rolled-back savepoint: 3000 + 1 rows, in order.
    let streamed: Vec<&ChangeEvent> = events.iter().skip(6).take(3001).collect();
    assert!(streamed
        .iter()
        .all(|e| e.after.as_ref().expect("after")[1] != text("drop")));
    assert_eq!(
        streamed
            .last()
            .expect("last")
            .after
            .as_ref()
            .expect("after")[1],
        text("last")
    );
    assert_eq!(events[3007].after.as_ref().expect("after")[1], text("end"));
    let cursors: Vec<String> = events.iter().map(|e| e.position.cursor()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "cursors increase");
    assert!(boundaries >= 6, "boundaries {boundaries}");

    r.cancel.cancel();
    r.handle.await.expect("join").expect("clean stop");
    // The slot is confirmed up to the last checkpoint, not further.
    let Some(Position::Postgres(last_ck)) = r.ck_tx.borrow().clone() else {
        panic!("a checkpoint")
    };
    let rows = db
        .text_rows(&format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{}'",
            db.name()
        ))
        .await;
    let confirmed: Lsn = rows[0][0].as_deref().expect("lsn").parse().expect("lsn");
    assert_eq!(confirmed, last_ck.lsn);
}

/// Backpressure: a consumer that stalls for longer than `wal_sender_timeout` must not get
/// the replication connection killed (status updates go out while blocked). A private
/// server with `wal_sender_timeout = 3s`; the consumer stalls 8 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stalled_past_wal_sender_timeout_keeps_the_connection() {
    let server = PgServer::start_with(&[("wal_sender_timeout", "3s")]);
    let db = server.fresh_db();
    db.exec("CREATE TABLE b (id int PRIMARY KEY, v text)").await;
    let (source, pg) = parse(&db, "bp", "");
    let mut r = start(&source, pg, "bp", 1);
    tokio::time::timeout(Duration::from_secs(20), r.rx.recv())
        .await
        .expect("streaming starts");
    for i in 0..20 {
        db.exec(&format!(
            "INSERT INTO b SELECT g, repeat('v', 200) FROM generate_series({}, {}) g",
            i * 100,
            i * 100 + 99
        ))
        .await;
    }
    // Stall well past wal_sender_timeout while the source is blocked on the channel. This
    // sleep is the behaviour under test (a consumer that does not read), not a wait.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        !r.handle.is_finished(),
        "source stopped while blocked: {:?}",
        r.handle.await
    );
    let mut got = 0;
    while got < 2000 {
        match tokio::time::timeout(Duration::from_secs(30), r.rx.recv())
            .await
            .expect("in time")
            .expect("open")
        {
            SourceMessage::Change(_) => got += 1,
            SourceMessage::Boundary(p) => {
                r.ck_tx.send_replace(Some(p));
            }
            SourceMessage::Chunk(_) => panic!("a source sends no chunks"),
        }
    }
    r.cancel.cancel();
    r.handle.await.expect("join").expect("clean stop");
    assert!(
        !server
            .log()
            .contains("terminating walsender process due to replication timeout"),
        "{}",
        server.log()
    );
}

/// Authentication on the replication connection: SCRAM-SHA-256 with a non-ASCII password
/// (SASLprep), md5 and clear text, on a private server whose pg_hba.conf asks for each; a
/// wrong password is a permanent error that names `password_env` and does not echo it; a
/// missing password says to set `password_env`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_connection_authenticates_with_scram_md5_and_clear_text() {
    let hba = "local all all trust\nlocal replication all trust\n\
               host all lt_md5 127.0.0.1/32 md5\nhost replication lt_md5 127.0.0.1/32 md5\n\
               host all lt_clear 127.0.0.1/32 password\nhost replication lt_clear 127.0.0.1/32 password\n\
               host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n";
    let server = PgServer::builder()
        .data_file("pg_hba.conf", hba.as_bytes(), 0o600)
        .start();
    server.psql(
        "postgres",
        "CREATE ROLE lt_scram REPLICATION LOGIN PASSWORD 'sëcret1';\
         CREATE ROLE lt_clear REPLICATION LOGIN PASSWORD 'secret3';\
         SET password_encryption = 'md5';\
         CREATE ROLE lt_md5 REPLICATION LOGIN PASSWORD 'secret2';",
    );
    let port = server.port();
    let cfg = |user: &str| {
        let toml = format!(
            "[[sources]]\nkind = \"postgres\"\nname = \"a\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             user = \"{user}\"\ndatabase = \"postgres\"\nsslmode = \"disable\"\n\
             [[sinks]]\nkind = \"stdout\"\n"
        );
        let c = Config::parse(&toml, std::path::Path::new("t.toml")).expect("config");
        match c.sources.into_iter().next() {
            Some(SourceConfig::Postgres(p)) => p,
            _ => panic!("postgres"),
        }
    };
    for (user, pw) in [
        ("lt_scram", "sëcret1"),
        ("lt_md5", "secret2"),
        ("lt_clear", "secret3"),
    ] {
        let mut c = ReplConnection::connect(
            &cfg(user),
            &cfg(user).endpoint(),
            Some(&Secret::new(pw.into())),
        )
        .await
        .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert!(c.server_version >= 100000);
        let id = c.identify_system().await.expect("identify");
        assert_eq!(id.dbname.as_deref(), Some("postgres"));
    }
    let wrong = ReplConnection::connect(
        &cfg("lt_scram"),
        &cfg("lt_scram").endpoint(),
        Some(&Secret::new("nope".into())),
    )
    .await
    .err()
    .expect("wrong password fails");
    let msg = wrong.to_string();
    assert!(
        msg.contains("28P01") && msg.contains("password_env") && !msg.contains("nope"),
        "{msg}"
    );
    assert_eq!(PgError::Conn(wrong).class(), ErrorClass::Permanent);
    let missing = ReplConnection::connect(&cfg("lt_md5"), &cfg("lt_md5").endpoint(), None)
        .await
        .err()
        .expect("needs a password");
    assert!(missing.to_string().contains("password_env"), "{missing}");
    // The harness's own roles still work on this server (its hba lines were kept).
    assert!(server
        .connect_as("postgres", pg::USER, pg::PASSWORD)
        .await
        .is_ok());
}
