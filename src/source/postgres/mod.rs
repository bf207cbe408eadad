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
use crate::endpoint::Endpoint;
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
    at: &Endpoint,
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
        r = Box::pin(start(cfg, at, &info, &ctx, &mut tasks)) => r.map(Some),
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
    at: &Endpoint,
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

    let (client, connection) = tls::connect_sql(cfg, at)
        .await
        .map_err(SetupError::Connect)?;
    tasks.spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %crate::error::ErrorChain(&error), "postgres sql connection ended");
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

    let mut repl = ReplConnection::connect(cfg, at, password.as_ref()).await?;
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
    use crate::filter::KeyColumnExcluded;

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
}
