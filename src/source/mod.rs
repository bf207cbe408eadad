//! Sources: the `Source` contract and dispatch to PostgreSQL, MySQL and query mode.
//!
//! A source owns its protocol and its type decoding; the pipeline knows neither. A source
//! sends [`SourceMessage`]s over a bounded channel (the backpressure: when the pipeline is
//! slow, the source stops reading from the server) and learns what has been durably
//! checkpointed from a `watch` channel, which is the only thing it may confirm upstream.
//!
//! Contract for every source:
//! * Events arrive in commit order; inside a transaction in log order.
//! * After the last event of a transaction, the source sends `Boundary` with the checkpoint
//!   position of that transaction (ordinal 0, see [`crate::position`]). Only boundaries are
//!   checkpointed. When idle with nothing in flight, a source may send a `Boundary` to move
//!   the checkpoint past WAL/binlog that held no captured change.
//! * On start, a source resumes from `SourceContext::resume_from` (a checkpoint) and skips
//!   every event whose position is `<=` it.
//! * Anything the source cannot decode is an error that stops the source; never a skip.

pub mod classify;
pub mod mysql;
pub mod postgres;
pub mod query;

use crate::event::ChangeEvent;
use crate::filter::Filter;
use crate::position::Position;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// What a source sends to the pipeline.
#[derive(Debug)]
pub enum SourceMessage {
    /// A row change (or truncate) that passed the table filter.
    Change(ChangeEvent),
    /// Everything up to here is complete: a transaction boundary (or an idle advance).
    /// The position is a checkpoint position (ordinal 0).
    Boundary(Position),
    /// Rows read outside the log (a backfill chunk): delivered like changes, then its
    /// record is stored. Never sent inside a transaction.
    Chunk(Chunk),
}

/// Rows read outside the log, with the record that says how far the read got.
///
/// The pipeline delivers `events`, then stores `record` under `key` (the source's backfill
/// records, [`crate::checkpoint::CheckpointStore::save_backfill`]): a record is durable only
/// once the sinks accepted every row before it, the same rule as the checkpoint. What the
/// record means is the sender's business.
#[derive(Debug)]
pub struct Chunk {
    /// `schema.table` the rows come from (metrics and logs).
    pub table: String,
    pub events: Vec<ChangeEvent>,
    /// Where the record is stored.
    pub key: String,
    /// The read's progress after this chunk.
    pub record: serde_json::Value,
    /// The table is read completely once this chunk is accepted.
    pub done: bool,
    /// The table disappeared while it was read and is skipped (no rows).
    pub skipped: bool,
}

/// Everything a running source gets from the service.
pub struct SourceContext {
    /// Bounded channel to the pipeline.
    pub tx: mpsc::Sender<SourceMessage>,
    /// The last position the pipeline stored durably; the only position a source may
    /// confirm to the server (PostgreSQL `flush_lsn`).
    pub checkpointed: watch::Receiver<Option<Position>>,
    /// Where to resume: the stored checkpoint, or a replay start given by the operator.
    pub resume_from: Option<Position>,
    pub filter: Arc<Filter>,
    /// Cancelled only when the operator asked to stop (shutdown, a reached bound, the
    /// pipeline gone): the source then returns `Ok(())` promptly. A source never returns
    /// `Ok(())` otherwise, and an error it met before the cancellation stays an error.
    pub cancel: CancellationToken,
    /// Tells the service the stream is live (call [`Reporter::streaming`] once connected
    /// and reading); `Default` reports nowhere.
    ///
    /// [`Reporter::streaming`]: crate::status::Reporter::streaming
    pub report: crate::status::Reporter,
    /// The state store, for a source's own durable records (the MySQL schema history,
    /// stored with the checkpoints); `None`: keep them in memory only (preview, tests).
    pub store: Option<crate::checkpoint::CheckpointStore>,
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection loss, timeouts, server restart: retry with backoff from the checkpoint.
    Transient,
    /// Configuration, privileges, server settings, undecodable data: stop and say what to fix.
    Permanent,
}

/// A source failure, classified by [`SourceError::class`].
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
    #[error(transparent)]
    Mysql(#[from] mysql::MysqlError),
    #[error(transparent)]
    Query(#[from] query::QueryError),
    /// The source returned without an error although nobody asked it to stop: never a
    /// clean stop (see the supervision rule in [`crate::service`]); reconnected like a
    /// lost connection.
    #[error("the source stopped on its own although no shutdown was requested (reconnecting; please report this as a bug)")]
    Ended,
}

impl SourceError {
    /// Whether to retry (see [`classify`] for the rules every kind shares).
    pub fn class(&self) -> ErrorClass {
        match self {
            SourceError::Postgres(e) => e.class(),
            SourceError::Mysql(e) => e.class(),
            SourceError::Query(e) => e.class(),
            SourceError::Ended => ErrorClass::Transient,
        }
    }
}

/// Runs the configured source, connecting to `at`, until it fails or `ctx.cancel` fires.
pub async fn run(
    cfg: &crate::config::SourceConfig,
    at: &crate::endpoint::Endpoint,
    info: Arc<crate::event::SourceInfo>,
    ctx: SourceContext,
) -> Result<(), SourceError> {
    match cfg {
        crate::config::SourceConfig::Postgres(c) => Ok(postgres::run(c, at, info, ctx).await?),
        crate::config::SourceConfig::Mysql(c) => Ok(mysql::run(c, at, info, ctx).await?),
        crate::config::SourceConfig::Query(c) => Ok(query::run(c, at, info, ctx).await?),
    }
}

/// Parses a position given by an operator (`--until`, `--from`) for a source of this kind:
/// PostgreSQL an LSN (`16/B374D848`) or a cursor; MySQL `file:pos` or a cursor-less
/// `file:pos` pair.
pub fn parse_position(
    cfg: &crate::config::SourceConfig,
    s: &str,
) -> Result<Position, crate::position::PositionParseError> {
    use crate::position::{parse_pg_cursor, Lsn, MysqlPosition, PgPosition, PositionParseError};
    match cfg {
        crate::config::SourceConfig::Postgres(_) => {
            if s.contains('/') {
                Ok(Position::Postgres(PgPosition::checkpoint(
                    s.parse::<Lsn>()?,
                )))
            } else {
                parse_pg_cursor(s).map(Position::Postgres).map_err(|_| {
                    PositionParseError::new(
                        s,
                        "a PostgreSQL LSN like 16/B374D848 or an event's cursor like 0000000001A2B3C4:0000000000000001",
                    )
                })
            }
        }
        crate::config::SourceConfig::Mysql(_) => {
            // A GTID: MariaDB `domain-server-seq`, MySQL `server_uuid:n`.
            if crate::position::gtid_stream_seq(s).is_some() {
                return Ok(Position::Mysql(MysqlPosition::gtid_only(s.trim())));
            }
            let bad = || {
                PositionParseError::new(
                    s,
                    "a binlog position like mysql-bin.000012:4567 or a GTID (0-1-42, uuid:42)",
                )
            };
            let (file, pos) = s.rsplit_once(':').ok_or_else(bad)?;
            let pos: u64 = pos.parse().map_err(|_| bad())?;
            if file.is_empty() || !file.contains('.') {
                return Err(bad());
            }
            Ok(Position::Mysql(MysqlPosition {
                file: file.to_owned(),
                pos,
                ordinal: 0,
                gtid: None,
            }))
        }
        crate::config::SourceConfig::Query(_) => query::parse_position(s),
    }
}
