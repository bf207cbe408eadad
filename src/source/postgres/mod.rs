//! PostgreSQL logical replication source (pgoutput).
//!
//! Owns the whole PostgreSQL side: startup validation and objects (`setup.rs`), the
//! replication connection (`conn.rs`, TLS in `tls.rs`), the pgoutput decoder
//! (`pgoutput.rs`), value decoding (`types.rs`), spilling streamed transactions
//! (`spill.rs`), and this module's loop that turns the stream into [`SourceMessage`]s and
//! confirms what the pipeline has checkpointed. Does not own retries (the service calls
//! [`run`] again after a [`ErrorClass::Transient`] error) or the checkpoint store.
//!
//! # Positions
//!
//! An event's position is (commit LSN of its transaction, ordinal), the commit LSN taken
//! from Begin (`final_lsn`) or Stream Commit. The ordinal counts every row change message
//! of the transaction (Insert, Update, Delete, and each relation of a Truncate) from 1,
//! *including* changes the filter drops, so a cursor does not depend on the filter. After
//! each Commit the source sends `Boundary(checkpoint(end_lsn))`.
//!
//! # Keys
//!
//! `TableSchema::key` holds the primary-key columns (looked up in `pg_index` when a
//! Relation message arrives, by column name in the current catalog). Without a primary
//! key it holds the replica identity columns pgoutput flags: the index of REPLICA IDENTITY
//! USING INDEX, or every column under REPLICA IDENTITY FULL. With neither (REPLICA
//! IDENTITY NOTHING, or DEFAULT without a primary key) it is empty and the event's `key`
//! is `null`.
//!
//! # Row images
//!
//! An unchanged TOAST value (`u`) is an absent cell (`None`), never NULL. Under REPLICA
//! IDENTITY FULL the old row carries the value, and it is copied into `after`. A `K` old
//! tuple (the key changed under DEFAULT / USING INDEX) holds only the identity columns;
//! the others are absent in `before`.
//!
//! # Confirming and keepalives
//!
//! Standby status updates go out every `status_interval` and at once when the server asks
//! (keepalive `replyRequested`): write = last WAL received, flush = apply = the LSN of the
//! last stored checkpoint (`ctx.checkpointed`), never newer. While the channel to the
//! pipeline is full the reader stops reading (backpressure) but still sends status updates
//! on the timer, so `wal_sender_timeout` does not fire. When idle (no open transaction,
//! no streamed transaction pending, and everything sent is checkpointed) a keepalive's
//! `walEnd` becomes a `Boundary`, at most once per status interval, so an idle or
//! filtered-out workload does not pin WAL. See shared/docs/protocol-notes.md.
//!
//! # Dead connections
//!
//! A server that stops answering without closing the connection (a network partition) is
//! detected within [`dead_after`] = max(3 × `status_interval`, 10 s): a status update
//! sent after a quiet status interval asks the server for a reply (`replyRequested`), and
//! a connection on which nothing arrived for that long fails with [`PgError::Silent`]
//! (transient: the service reconnects from the checkpoint). TCP keepalive and a TCP user
//! timeout on every socket end connections whose peer vanished. The server may not have
//! noticed yet (its `wal_sender_timeout`, 60 s by default): its walsender still holds the
//! slot. The reconnect ends exactly that walsender — the one of our silent connection,
//! known by its process id — instead of waiting for the server's timeout (`stale.rs`).

pub mod conn;
mod decoder;
pub mod frame;
pub mod pgoutput;
pub mod publication;
pub mod retention;
pub mod setup;
pub mod spill;
mod stale;
pub mod tls;
pub mod tuple;
pub mod types;

use crate::config::{ConfigError, PostgresSourceConfig};
use crate::event::SourceInfo;
use crate::filter::KeyColumnExcluded;
use crate::position::{Lsn, PgPosition, Position};
use crate::source::{ErrorClass, SourceContext, SourceMessage};
use conn::{ConnError, CopyMessage, FrameWriter, ReplConnection, StartOptions};
use decoder::Decoder;
use pgoutput::PgOutputError;
use setup::SetupError;
use spill::SpillError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinSet;
use tokio::time::Instant;
use types::TypeError;

/// Longest wait between status updates while blocked on a full channel (well inside the
/// default 60 s `wal_sender_timeout`, whatever `status_interval` says).
const MAX_BLOCKED_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// A PostgreSQL source failure. [`PgError::class`] says whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL source configuration")]
    Config(#[source] ConfigError),
    #[error("the resume position {0} is not a PostgreSQL position (was the checkpoint store shared with another source?)")]
    WrongPosition(Position),
    #[error("replication connection failed")]
    Conn(#[source] ConnError),
    #[error("PostgreSQL setup failed")]
    Setup(#[source] SetupError),
    #[error("cannot decode the replication stream at {lsn}")]
    Decode {
        lsn: Lsn,
        #[source]
        source: PgOutputError,
    },
    #[error("cannot decode column {column:?} of {table} at {lsn}")]
    Value {
        table: String,
        column: String,
        lsn: Lsn,
        #[source]
        source: TypeError,
    },
    #[error("cannot resolve the column types of {table}")]
    Types {
        table: String,
        #[source]
        source: TypeError,
    },
    #[error("table filter rejected the schema of a captured table")]
    Filter(#[source] KeyColumnExcluded),
    #[error("cannot spill a streamed transaction")]
    Spill(#[source] SpillError),
    #[error("a change for relation oid {oid} arrived before its Relation message (at {lsn})")]
    UnknownRelation { oid: u32, lsn: Lsn },
    #[error("a row of {table} has {got} columns but its Relation message announced {expected} (at {lsn})")]
    ColumnCount {
        table: String,
        got: usize,
        expected: usize,
        lsn: Lsn,
    },
    #[error(
        "column {column:?} of {table} arrived in binary format, which logtide does not request"
    )]
    Binary { table: String, column: String },
    #[error("replication protocol violation at {lsn}: {problem}")]
    Protocol { lsn: Lsn, problem: &'static str },
    #[error("the server ended the replication stream")]
    StreamEnded,
    #[error("nothing received on the replication connection for {0:?}, not even an answer to a status update that asked for one: the server or the network stopped answering (reconnecting)")]
    Silent(Duration),
    #[error("the pipeline closed the source channel")]
    ChannelClosed,
    /// Internal: shutdown was requested while blocked; [`run`] returns `Ok(())` instead.
    #[error("cancelled")]
    Cancelled,
}

impl PgError {
    /// Transient: connection loss, server restart, resource shortage — retry with backoff
    /// from the checkpoint. Permanent: configuration, privileges, server settings,
    /// undecodable data — stop and say what to fix.
    pub fn class(&self) -> ErrorClass {
        let transient = match self {
            PgError::Conn(e) => e.is_transient(),
            PgError::Setup(e) => e.is_transient(),
            PgError::Types {
                source: TypeError::Resolve { source },
                ..
            } => source
                .code()
                .is_none_or(|c| conn::sqlstate_is_transient(c.code())),
            PgError::StreamEnded
            | PgError::Silent(_)
            | PgError::ChannelClosed
            | PgError::Cancelled => true,
            _ => false,
        };
        if transient {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        }
    }
}

impl From<ConnError> for PgError {
    fn from(e: ConnError) -> Self {
        PgError::Conn(e)
    }
}

impl From<SetupError> for PgError {
    fn from(e: SetupError) -> Self {
        PgError::Setup(e)
    }
}

impl From<SpillError> for PgError {
    fn from(e: SpillError) -> Self {
        PgError::Spill(e)
    }
}

/// Streams changes from the slot until `ctx.cancel` (then returns `Ok(())`) or an error.
///
/// On start: validates the server (`wal_level`, REPLICATION), creates the publication and
/// the slot when missing, starts replication at the `ctx.resume_from` checkpoint's LSN (or
/// at the slot's confirmed position) and skips every event `<=` that checkpoint.
pub async fn run(
    cfg: &PostgresSourceConfig,
    info: Arc<SourceInfo>,
    ctx: SourceContext,
) -> Result<(), PgError> {
    let cancel = ctx.cancel.clone();
    let mut tasks = JoinSet::new();
    // Only the setup races the cancel token: once streaming, the loop itself stops on
    // cancel so the last checkpoint is confirmed and the stream ends with CopyDone.
    let started = tokio::select! {
        biased;
        _ = cancel.cancelled() => Ok(None),
        r = Box::pin(start(cfg, &info, &ctx, &mut tasks)) => r.map(Some),
    };
    let result = match started {
        Ok(Some((repl, client, resume))) => {
            ctx.report.streaming();
            Box::pin(stream(cfg, info, &ctx, repl, client, resume)).await
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    tasks.abort_all();
    match result {
        Err(PgError::Cancelled) => Ok(()),
        Err(PgError::ChannelClosed) if cancel.is_cancelled() => Ok(()),
        other => other,
    }
}

/// Validates the server, creates what is missing and starts replication.
async fn start(
    cfg: &PostgresSourceConfig,
    info: &SourceInfo,
    ctx: &SourceContext,
    tasks: &mut JoinSet<()>,
) -> Result<(ReplConnection, tokio_postgres::Client, Option<PgPosition>), PgError> {
    let password = cfg.password().map_err(PgError::Config)?;
    let resume = match &ctx.resume_from {
        None => None,
        Some(Position::Postgres(p)) => Some(*p),
        Some(other) => return Err(PgError::WrongPosition(other.clone())),
    };

    let (client, connection) = tls::connect_sql(cfg).await.map_err(SetupError::Connect)?;
    tasks.spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %crate::service::ErrorChain(&error), "postgres sql connection ended");
        }
    });
    setup::validate(&client, cfg).await?;
    if cfg.sslmode == crate::config::SslMode::Prefer {
        setup::warn_if_plaintext(&client).await;
    }
    let slot = cfg.slot_name();
    // Before anything is changed: a slot that vanished under a stored position means lost
    // changes, the PostgreSQL twin of a purged binlog.
    let state = setup::slot_state(&client, cfg).await?;
    match (&state, resume) {
        (setup::SlotState::Missing, Some(p)) => {
            return Err(SetupError::SlotDropped {
                slot,
                source_name: info.name.clone(),
                stored: Position::Postgres(p).to_string(),
            }
            .into())
        }
        (setup::SlotState::Lost { reason, restart }, _) => {
            return Err(SetupError::SlotInvalidated {
                slot,
                source_name: info.name.clone(),
                reason: reason.clone(),
                restart: restart.clone(),
            }
            .into())
        }
        _ => {}
    }
    let ensured = setup::ensure_publication(&client, cfg).await?;
    if resume.is_some() && !ensured.added.is_empty() {
        // Streamed from now on; their existing rows per the `backfill` settings.
        let settings = crate::config::SourceConfig::Postgres(cfg.clone()).backfill();
        for table in &ensured.added {
            if settings.mode_for(table) == crate::config::BackfillMode::Initial {
                tracing::warn!(source = %info.name, %table, "table added to the publication: queueing its backfill");
                ctx.report.request_backfill(table.clone());
            } else {
                tracing::warn!(source = %info.name, %table, "table added to the publication: its changes stream from now on; existing rows are not backfilled (backfill = never)");
            }
        }
    }

    let mut repl = ReplConnection::connect(cfg, password.as_ref()).await?;
    let system = repl.identify_system().await?;
    tracing::info!(
        source = %info.name,
        system_id = %system.system_id,
        timeline = system.timeline,
        server_lsn = %system.xlog_pos,
        server_version = repl.server_version,
        "connected for replication"
    );
    if state == setup::SlotState::Missing {
        match repl.create_slot(&slot, false).await {
            Ok(s) => {
                tracing::info!(slot = %s.slot_name, consistent_point = %s.consistent_point, "created replication slot")
            }
            // Created concurrently: use it.
            Err(ConnError::Server(e)) if e.code == "42710" => {}
            Err(e) => return Err(e.into()),
        }
    }
    stale::end_if_still_active(&client, &slot).await;
    let start = resume.map(|p| p.lsn).unwrap_or_default();
    let opts = StartOptions::for_server(repl.server_version, slot, cfg.publication_name(), start);
    tracing::info!(slot = %opts.slot, publication = %opts.publication, start = %start, proto_version = opts.proto_version, "starting replication");
    repl.start_replication(&opts).await?;
    Ok((repl, client, resume))
}

/// Streams until cancelled or an error; on cancel confirms the last checkpoint and ends
/// the stream cleanly.
async fn stream(
    cfg: &PostgresSourceConfig,
    info: Arc<SourceInfo>,
    ctx: &SourceContext,
    mut repl: ReplConnection,
    client: tokio_postgres::Client,
    resume: Option<PgPosition>,
) -> Result<(), PgError> {
    let spill_dir = std::env::temp_dir().join("logtide-spill");
    let mut decoder = Decoder::new(cfg, info, ctx.filter.clone(), client, resume, spill_dir);
    let mut status = Status::new(cfg.status_interval);
    let result = stream_loop(&mut repl, &mut decoder, &mut status, ctx).await;
    if let (Err(PgError::Silent(_)), Some(pid)) = (&result, repl.backend_pid) {
        stale::remember(&cfg.slot_name(), pid);
    }
    match result {
        Ok(()) | Err(PgError::Cancelled) => {
            // Confirm what is stored, then end the stream cleanly.
            let flush = checkpointed_lsn(ctx);
            let shutdown = async {
                repl.writer
                    .send_status(status.received.max(flush), flush, false)
                    .await?;
                repl.shutdown().await
            };
            match tokio::time::timeout(Duration::from_secs(5), shutdown).await {
                Ok(Ok(())) => tracing::debug!(flush = %flush, "replication stopped"),
                Ok(Err(error)) => tracing::debug!(%error, "replication shutdown was not clean"),
                Err(_) => tracing::debug!("replication shutdown timed out"),
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The LSN of the last stored checkpoint, 0/0 (ignored by the server) when none.
pub(super) fn checkpointed_lsn(ctx: &SourceContext) -> Lsn {
    match &*ctx.checkpointed.borrow() {
        Some(Position::Postgres(p)) => p.lsn,
        _ => Lsn(0),
    }
}

/// Standby status bookkeeping.
pub(super) struct Status {
    /// Highest WAL location received (XLogData or keepalive `walEnd`).
    received: Lsn,
    interval: Duration,
    next_due: Instant,
}

impl Status {
    fn new(interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(10));
        Status {
            received: Lsn(0),
            interval,
            next_due: Instant::now() + interval,
        }
    }

    async fn send(
        &mut self,
        writer: &mut FrameWriter,
        ctx: &SourceContext,
        reply: bool,
    ) -> Result<(), PgError> {
        let flush = checkpointed_lsn(ctx);
        writer
            .send_status(self.received.max(flush), flush, reply)
            .await?;
        self.next_due = Instant::now() + self.interval;
        tracing::trace!(write = %self.received, flush = %flush, "sent standby status update");
        Ok(())
    }
}

/// What the decoder needs to send: the channel, and the writer for status updates while
/// it waits on the channel.
pub(super) struct Out<'a> {
    pub(super) ctx: &'a SourceContext,
    writer: &'a mut FrameWriter,
    status: &'a mut Status,
}

impl Out<'_> {
    pub(super) async fn send(&mut self, msg: SourceMessage) -> Result<(), PgError> {
        let msg = match self.ctx.tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(PgError::ChannelClosed),
            Err(TrySendError::Full(msg)) => msg,
        };
        // Backpressure: stop reading, keep the walsender informed.
        let blocked_interval = self.status.interval.min(MAX_BLOCKED_STATUS_INTERVAL);
        loop {
            let due = self.status.next_due.min(Instant::now() + blocked_interval);
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return Err(PgError::Cancelled),
                permit = self.ctx.tx.reserve() => {
                    let permit = permit.map_err(|_| PgError::ChannelClosed)?;
                    permit.send(msg);
                    return Ok(());
                }
                _ = tokio::time::sleep_until(due) => {
                    self.status.send(self.writer, self.ctx, false).await?;
                }
            }
        }
    }
}

async fn stream_loop(
    repl: &mut ReplConnection,
    decoder: &mut Decoder<'_>,
    status: &mut Status,
    ctx: &SourceContext,
) -> Result<(), PgError> {
    let reader = &mut repl.reader;
    let mut out = Out {
        ctx,
        writer: &mut repl.writer,
        status,
    };
    let mut since_clock_check = 0u32;
    // Dead-connection detection: the last time anything arrived (or a send blocked on the
    // pipeline ended). A status update asks for a reply once the server was quiet for a
    // status interval; silence for `dead_after` means the server or the network is gone.
    let dead_after = dead_after(out.status.interval);
    let mut last_traffic = Instant::now();
    loop {
        while let Some((tag, body)) = reader.buffered_frame()? {
            match conn::parse_copy_frame(tag, body)? {
                None => {}
                Some(CopyMessage::XLogData {
                    wal_start,
                    wal_end,
                    data,
                    ..
                }) => {
                    out.status.received = out.status.received.max(Lsn(wal_end.max(wal_start)));
                    decoder.handle(data, Lsn(wal_start), &mut out).await?;
                }
                Some(CopyMessage::Keepalive {
                    wal_end,
                    reply_requested,
                    ..
                }) => {
                    out.status.received = out.status.received.max(Lsn(wal_end));
                    decoder.on_keepalive(Lsn(wal_end), &mut out).await?;
                    if reply_requested {
                        out.status.send(out.writer, ctx, false).await?;
                    }
                }
                Some(CopyMessage::CopyDone) => return Err(PgError::StreamEnded),
            }
            // Waiting on a full channel while handling it is not silence either.
            last_traffic = Instant::now();
            since_clock_check += 1;
            if since_clock_check >= 256 {
                since_clock_check = 0;
                if Instant::now() >= out.status.next_due {
                    out.status.send(out.writer, ctx, false).await?;
                }
            }
        }
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(out.status.next_due) => {
                let quiet = last_traffic.elapsed();
                if quiet >= dead_after {
                    return Err(PgError::Silent(quiet));
                }
                let reply = quiet >= out.status.interval;
                out.status.send(out.writer, ctx, reply).await?;
            }
            r = reader.read_more() => {
                r?;
                last_traffic = Instant::now();
            }
        }
    }
}

/// How long the replication connection may stay silent before it counts as dead: three
/// status intervals, at least 10 s (each status update after a quiet interval asks the
/// server for a reply).
pub fn dead_after(status_interval: Duration) -> Duration {
    (status_interval * 3).max(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeEvent, Op};
    use crate::filter::KeyColumnExcluded;
    use crate::value::Value;

    fn text(s: &str) -> Option<Value> {
        Some(Value::Text(s.into()))
    }

    #[test]
    fn error_classes() {
        assert_eq!(PgError::StreamEnded.class(), ErrorClass::Transient);
        assert_eq!(
            PgError::Conn(ConnError::Closed).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            PgError::Setup(SetupError::WalLevel("replica".into())).class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            PgError::Filter(KeyColumnExcluded {
                table: "t".into(),
                column: "id".into()
            })
            .class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            PgError::Decode {
                lsn: Lsn(1),
                source: PgOutputError::Empty
            }
            .class(),
            ErrorClass::Permanent
        );
    }

    /// Against a real server: `LOGTIDE_TEST_PG_PORT=55417 cargo test --lib
    /// source::postgres::tests::live -- --ignored` (trust auth as `postgres` on 127.0.0.1,
    /// wal_level=logical; a small logical_decoding_work_mem exercises streaming).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a PostgreSQL server (LOGTIDE_TEST_PG_PORT)"]
    async fn live() {
        use crate::config::{Config, SourceConfig};
        use tokio::sync::{mpsc, watch};
        use tokio_util::sync::CancellationToken;

        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("logtide=debug"))
            .with_test_writer()
            .try_init();
        let port: u16 = std::env::var("LOGTIDE_TEST_PG_PORT")
            .expect("port")
            .parse()
            .expect("port number");
        let db = format!("lt_live_{}", std::process::id());
        let admin_conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        let (admin, c) = tokio_postgres::connect(&admin_conn, tokio_postgres::NoTls)
            .await
            .expect("admin");
        let admin_task = tokio::spawn(c);
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create db");
        let (sql, c) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname={db}"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("db conn");
        let sql_task = tokio::spawn(c);
        sql.batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text, doc text, secret text);
             ALTER TABLE t ALTER COLUMN doc SET STORAGE EXTERNAL;
             CREATE TABLE nopk (a int, b text);
             CREATE TABLE skipped (a int PRIMARY KEY);",
        )
        .await
        .expect("schema");

        let toml = format!(
            "[[sources]]\nkind = \"postgres\"\nname = \"live\"\nport = {port}\nuser = \"postgres\"\ndatabase = \"{db}\"\n\
             sslmode = \"disable\"\nslot = \"{db}\"\nstatus_interval = \"1s\"\n\
             tables = {{ exclude = [\"public.skipped\"] }}\ncolumns = {{ \"public.t\" = {{ exclude = [\"secret\"] }} }}\n\
             [[sinks]]\nkind = \"stdout\"\n"
        );
        let cfg = Config::parse(&toml, std::path::Path::new("live.toml")).expect("config");
        let source = cfg.sources[0].clone();
        let SourceConfig::Postgres(pg) = source.clone() else {
            panic!("postgres")
        };
        let (tx, mut rx) = mpsc::channel(64);
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
            connector: crate::event::Connector::Postgres,
            name: "live".into(),
        });
        let pg2 = pg.clone();
        let handle = tokio::spawn(async move { run(&pg2, info, ctx).await });

        // Streaming has started once the first keepalive turned into an idle Boundary (a slot
        // row alone is visible before the slot is consistent).
        let first = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("streaming starts");
        let Some(SourceMessage::Boundary(first)) = first else {
            panic!("expected an idle boundary first")
        };
        ck_tx.send_replace(Some(first));
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
            sql.batch_execute(w).await.expect("workload");
        }

        let mut events: Vec<ChangeEvent> = Vec::new();
        let mut boundaries = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while events.len() < 3008 {
            let Ok(m) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                let mut by: std::collections::BTreeMap<(u64, &str, String), usize> =
                    Default::default();
                for e in &events {
                    *by.entry((e.txid.unwrap_or(0), e.op.code(), e.table.name.clone()))
                        .or_default() += 1;
                }
                panic!("timed out after {} events: {by:?}", events.len());
            };
            let m = m.expect("open");
            match m {
                SourceMessage::Change(e) => events.push(e),
                SourceMessage::Boundary(p) => {
                    boundaries += 1;
                    ck_tx.send_replace(Some(p));
                }
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

        cancel.cancel();
        handle.await.expect("join").expect("clean stop");
        // The slot is confirmed up to the last checkpoint, not further.
        let Some(Position::Postgres(last_ck)) = ck_tx.borrow().clone() else {
            panic!("a checkpoint")
        };
        let row = sql
            .query_one("SELECT active, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&db])
            .await
            .expect("slot");
        let confirmed: Lsn = row.get::<_, String>(1).parse().expect("lsn");
        assert_eq!(confirmed, last_ck.lsn);
        drop(sql);
        sql_task.abort();
        drop_slot_and_db(&admin, &db).await;
        admin_task.abort();
    }

    /// Catch-up throughput on a real server (run in release):
    /// `LOGTIDE_TEST_PG_PORT=55417 LOGTIDE_TEST_ROWS=300000 cargo test --release --lib
    /// source::postgres::tests::live_throughput -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a PostgreSQL server (LOGTIDE_TEST_PG_PORT)"]
    async fn live_throughput() {
        use crate::config::{Config, SourceConfig};
        use tokio::sync::{mpsc, watch};
        use tokio_util::sync::CancellationToken;

        let port: u16 = std::env::var("LOGTIDE_TEST_PG_PORT")
            .expect("port")
            .parse()
            .expect("port number");
        let rows: i64 = std::env::var("LOGTIDE_TEST_ROWS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(100_000);
        let db = format!("lt_tput_{}", std::process::id());
        let admin_conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        let (admin, c) = tokio_postgres::connect(&admin_conn, tokio_postgres::NoTls)
            .await
            .expect("admin");
        let admin_task = tokio::spawn(c);
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create db");
        let (sql, c) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname={db}"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("db conn");
        let sql_task = tokio::spawn(c);
        sql.batch_execute(
            "CREATE TABLE bench (id bigint PRIMARY KEY, name text, email text, score numeric, \
             created timestamptz, flag boolean, note text) WITH (autovacuum_enabled = false)",
        )
        .await
        .expect("schema");
        let toml = format!(
            "[[sources]]\nkind = \"postgres\"\nname = \"tput\"\nport = {port}\nuser = \"postgres\"\n\
             database = \"{db}\"\nsslmode = \"disable\"\nslot = \"{db}\"\n[[sinks]]\nkind = \"stdout\"\n"
        );
        let cfg = Config::parse(&toml, std::path::Path::new("t.toml")).expect("config");
        let source = cfg.sources[0].clone();
        let SourceConfig::Postgres(pg) = source.clone() else {
            panic!("postgres")
        };
        let start = |cap: usize| {
            let (tx, rx) = mpsc::channel(cap);
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
                connector: crate::event::Connector::Postgres,
                name: "tput".into(),
            });
            let pg2 = pg.clone();
            let h = tokio::spawn(async move { run(&pg2, info, ctx).await });
            (rx, ck_tx, cancel, h)
        };
        // First run: creates the slot, then stops.
        let (mut rx, _ck, cancel, h) = start(16);
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("streaming starts");
        cancel.cancel();
        h.await.expect("join").expect("stop");
        // Workload while stopped: 1k-row transactions.
        let t0 = std::time::Instant::now();
        let mut i = 0;
        while i < rows {
            let n = 1000.min(rows - i);
            sql.batch_execute(&format!(
                "INSERT INTO bench SELECT g, 'name ' || g, 'user' || g || '@example.com', g * 1.5, \
                 now(), g % 2 = 0, repeat('x', 80) FROM generate_series({i}, {}) g",
                i + n - 1
            ))
            .await
            .expect("insert");
            i += n;
        }
        eprintln!("workload: {rows} rows in {:?}", t0.elapsed());
        // Second run: catch up from the slot.
        let t0 = std::time::Instant::now();
        let (mut rx, ck_tx, cancel, h) = start(16384);
        let mut got = 0i64;
        while got < rows {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("in time")
                .expect("open")
            {
                SourceMessage::Change(_) => got += 1,
                SourceMessage::Boundary(p) => {
                    ck_tx.send_replace(Some(p));
                }
            }
        }
        let dt = t0.elapsed();
        eprintln!(
            "caught up {got} events in {dt:?}: {:.0} events/s",
            got as f64 / dt.as_secs_f64()
        );
        cancel.cancel();
        h.await.expect("join").expect("stop");
        drop(sql);
        sql_task.abort();
        drop_slot_and_db(&admin, &db).await;
        admin_task.abort();
    }

    /// The walsender exits a moment after the client terminated: retry the drop.
    async fn drop_slot_and_db(admin: &tokio_postgres::Client, db: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = admin
            .batch_execute(&format!("SELECT pg_drop_replication_slot('{db}')"))
            .await
        {
            assert!(Instant::now() < deadline, "drop slot: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        admin
            .batch_execute(&format!("DROP DATABASE {db}"))
            .await
            .expect("drop db");
    }

    /// Backpressure: a consumer that stalls for longer than `wal_sender_timeout` must not
    /// get the replication connection killed (status updates go out while blocked). Set
    /// `wal_sender_timeout = '3s'` on the server for a meaningful run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a PostgreSQL server (LOGTIDE_TEST_PG_PORT)"]
    async fn live_backpressure() {
        use crate::config::{Config, SourceConfig};
        use tokio::sync::{mpsc, watch};
        use tokio_util::sync::CancellationToken;

        let port: u16 = std::env::var("LOGTIDE_TEST_PG_PORT")
            .expect("port")
            .parse()
            .expect("port number");
        let db = format!("lt_bp_{}", std::process::id());
        let admin_conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        let (admin, c) = tokio_postgres::connect(&admin_conn, tokio_postgres::NoTls)
            .await
            .expect("admin");
        let admin_task = tokio::spawn(c);
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create db");
        let (sql, c) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname={db}"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("db conn");
        let sql_task = tokio::spawn(c);
        sql.batch_execute("CREATE TABLE b (id int PRIMARY KEY, v text)")
            .await
            .expect("schema");
        let toml = format!(
            "[[sources]]\nkind = \"postgres\"\nname = \"bp\"\nport = {port}\nuser = \"postgres\"\n\
             database = \"{db}\"\nsslmode = \"disable\"\nslot = \"{db}\"\nstatus_interval = \"1s\"\n\
             [[sinks]]\nkind = \"stdout\"\n"
        );
        let cfg = Config::parse(&toml, std::path::Path::new("t.toml")).expect("config");
        let source = cfg.sources[0].clone();
        let SourceConfig::Postgres(pg) = source.clone() else {
            panic!("postgres")
        };
        let (tx, mut rx) = mpsc::channel(1);
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
            connector: crate::event::Connector::Postgres,
            name: "bp".into(),
        });
        let h = tokio::spawn(async move { run(&pg, info, ctx).await });
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("streaming starts");
        for i in 0..20 {
            sql.batch_execute(&format!(
                "INSERT INTO b SELECT g, repeat('v', 200) FROM generate_series({}, {}) g",
                i * 100,
                i * 100 + 99
            ))
            .await
            .expect("insert");
        }
        // Stall well past wal_sender_timeout while the source is blocked on the channel.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            !h.is_finished(),
            "source stopped while blocked: {:?}",
            h.await
        );
        let mut got = 0;
        while got < 2000 {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("in time")
                .expect("open")
            {
                SourceMessage::Change(_) => got += 1,
                SourceMessage::Boundary(p) => {
                    ck_tx.send_replace(Some(p));
                }
            }
        }
        cancel.cancel();
        h.await.expect("join").expect("clean stop");
        drop(sql);
        sql_task.abort();
        drop_slot_and_db(&admin, &db).await;
        admin_task.abort();
    }

    /// Authentication on the replication connection. Needs roles `lt_scram` (password
    /// `sëcret1`, scram-sha-256), `lt_md5` (`secret2`, md5) and `lt_clear` (`secret3`,
    /// password) with matching pg_hba.conf lines on 127.0.0.1.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a PostgreSQL server with test roles (LOGTIDE_TEST_PG_PORT)"]
    async fn live_auth() {
        use crate::config::{Config, Secret, SourceConfig};
        let port: u16 = std::env::var("LOGTIDE_TEST_PG_PORT")
            .expect("port")
            .parse()
            .expect("port number");
        let cfg = |user: &str| {
            let toml = format!(
                "[[sources]]\nkind = \"postgres\"\nname = \"a\"\nport = {port}\nuser = \"{user}\"\n\
                 database = \"postgres\"\nsslmode = \"disable\"\n[[sinks]]\nkind = \"stdout\"\n"
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
            let mut c = ReplConnection::connect(&cfg(user), Some(&Secret::new(pw.into())))
                .await
                .unwrap_or_else(|e| panic!("{user}: {e}"));
            assert!(c.server_version >= 100000);
            let id = c.identify_system().await.expect("identify");
            assert_eq!(id.dbname.as_deref(), Some("postgres"));
        }
        let wrong = ReplConnection::connect(&cfg("lt_scram"), Some(&Secret::new("nope".into())))
            .await
            .err()
            .expect("wrong password fails");
        let msg = wrong.to_string();
        assert!(
            msg.contains("28P01") && msg.contains("password_env") && !msg.contains("nope"),
            "{msg}"
        );
        assert_eq!(PgError::Conn(wrong).class(), ErrorClass::Permanent);
        let missing = ReplConnection::connect(&cfg("lt_md5"), None)
            .await
            .err()
            .expect("needs a password");
        assert!(missing.to_string().contains("password_env"), "{missing}");
    }

    /// TLS on the replication connection (`LOGTIDE_TEST_PG_TLS=1`: the server has
    /// `ssl = on`, any certificate; `require` does not verify it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a PostgreSQL server with ssl = on (LOGTIDE_TEST_PG_PORT)"]
    async fn live_tls() {
        use crate::config::{Config, SourceConfig};
        let port: u16 = std::env::var("LOGTIDE_TEST_PG_PORT")
            .expect("port")
            .parse()
            .expect("port number");
        for mode in ["require", "prefer"] {
            let toml = format!(
                "[[sources]]\nkind = \"postgres\"\nname = \"a\"\nport = {port}\nuser = \"postgres\"\n\
                 database = \"postgres\"\nsslmode = \"{mode}\"\n[[sinks]]\nkind = \"stdout\"\n"
            );
            let c = Config::parse(&toml, std::path::Path::new("t.toml")).expect("config");
            let Some(SourceConfig::Postgres(pg)) = c.sources.into_iter().next() else {
                panic!("postgres")
            };
            let mut conn = ReplConnection::connect(&pg, None)
                .await
                .unwrap_or_else(|e| panic!("{mode}: {e}"));
            conn.identify_system().await.expect("identify over tls");
            let rows = conn
                .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .await
                .expect("query pg_stat_ssl");
            // This connection itself is encrypted.
            assert_eq!(rows, vec![vec![Some("t".to_owned())]]);
        }
    }
}
