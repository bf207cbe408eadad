//! Backfill: copy the rows that already exist, in keyset-paginated chunks, before the source
//! streams, without a gap at the hand-over.
//!
//! # Algorithm (why the hand-over loses and reorders nothing)
//!
//! 1. Fix the stream's start position `P0` *before* reading any row: PostgreSQL creates the
//!    slot (its consistent point) or reuses it (its confirmed position); MySQL notes
//!    `SHOW MASTER STATUS`. `P0` is stored as the source's checkpoint, so the stream resumes
//!    there even if the backfill is interrupted.
//! 2. Read every selected table in chunks ordered by primary key
//!    (`WHERE (k1, k2) > (last) ORDER BY k1, k2 LIMIT n`), each chunk its own read. Each chunk
//!    goes to the source's pipeline (the same channel and delivery as the stream, see
//!    [`crate::pipeline`]), which delivers it as `op = "r"` events, then stores the last key
//!    (`backfill/<source>/<table>`), so a restart continues after the last accepted chunk.
//! 3. Stream from `P0`. Every change committed after `P0` is delivered after the backfill,
//!    with its full new row image (updates, inserts) or its key (deletes).
//!
//! A row the backfill read is either unchanged since `P0` (then the read is its current
//! value), or changed after `P0` (then a later event carries the newer value, or the
//! delete). A consumer that applies events in order (upsert by key, delete by key) therefore
//! ends with exactly the source table, also with concurrent writes during the backfill and
//! across kill -9 — no snapshot has to outlive a connection, and the source is only read
//! (a read-only user with replication rights suffices).
//!
//! Backfill cursors name the row, not the moment it was read ([`RowNamer`]; the invariant
//! is in [`crate::position`], "Row cursors"): `(P0, schema.table, key, content hash)`,
//! written so it sorts before the stream's cursors — PostgreSQL `P0 - 1`, MySQL
//! `(P0.file, P0.pos - 1)`, then `R` and the row's identity. A chunk read again after a
//! crash gives its rows the same cursors (or new ones where a row changed), whatever was
//! deleted, inserted, added or dropped meanwhile and whatever the chunk size. Tables are
//! read in byte order of their `schema.table` names.
//!
//! Tables without a primary key cannot be paginated: they are read in one pass (a warning
//! says so), and an interrupted pass starts that table again from the beginning; their
//! rows are named by their number in that pass and their content.
//!
//! **Stored progress of an older logtide** (row-counting cursors) needs no migration: the
//! stored last key and row count mean the same thing. The run state records the cursor
//! format; a run resumed from the old format says so in a warning, because the chunk that
//! was delivered but not yet stored is delivered again under new-format cursors (a consumer
//! that de-duplicates on the cursor sees those rows twice; applied in order they leave the
//! same table).

//!
//! # Where the code lives
//!
//! This module is the engine-neutral orchestration (run state, progress records, row
//! cursors, the hand-over to the pipeline); `postgres` and `mysql` are each engine's
//! snapshot reader, built on that engine's own connection and type decoding in
//! [`crate::source`] (`source::postgres::tls::connect_sql`, `source::mysql::sql::SqlConn::open`).
//! Dependencies go one way, `backfill -> source`: a source never reaches into the backfill,
//! and the pipeline delivers the chunks ([`crate::source::Chunk`]) without knowing what
//! they are. Keeping the readers here rather than under `source/<engine>/` keeps that
//! direction without moving the neutral types into `source`; `tests/architecture.rs`
//! fails on any import cycle between the top-level modules.

pub mod mysql;
pub mod ondemand;
pub mod postgres;

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::event::{ChangeEvent, Row};
use crate::identity::RowIdentity;
use crate::position::{Position, RowPosition};
use crate::status::SourceStatus;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Stored progress of one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableProgress {
    /// Text form of the key columns of the last delivered row (`None`: not started).
    pub last_key: Option<Vec<String>>,
    /// Rows delivered so far.
    pub rows: u64,
    pub done: bool,
}

/// Stored state of a source's backfill run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub done: bool,
    /// Cursor format of the run: 0 (absent) row-counting ordinals, 2 row identities with a
    /// SHA-256 content hash, [`ROW_CURSORS`] row identities with an XXH3-64 content hash.
    #[serde(default)]
    pub cursors: u32,
}

/// The cursor format of runs that name rows by their identity (3: XXH3-64 content hash).
pub const ROW_CURSORS: u32 = 3;

impl RunState {
    /// The state of a run in progress with the current cursor format.
    pub fn running() -> Self {
        RunState {
            done: false,
            cursors: ROW_CURSORS,
        }
    }
    /// The state of a finished run.
    pub fn finished() -> Self {
        RunState {
            done: true,
            cursors: ROW_CURSORS,
        }
    }
}

/// Names the rows of one table read at one stream position: the cursor of a backfill row
/// (see [`crate::position`], "Row cursors").
pub struct RowNamer {
    /// Shared by every row's cursor (one reference count, not a copy per row).
    at: std::sync::Arc<Position>,
    ident: RowIdentity,
    key: Vec<usize>,
}

impl RowNamer {
    /// `at` is the stream position the rows are read at (a checkpoint position); `table`
    /// the stable `schema.table` id; `key` the key's indices into `columns` (empty: none).
    pub fn new(at: &Position, table: &str, columns: &[String], key: &[usize]) -> Self {
        let at = match at {
            // The GTID is informational; rows need not carry a copy.
            Position::Mysql(m) => Position::Mysql(crate::position::MysqlPosition {
                gtid: None,
                ..m.clone()
            }),
            p => p.clone(),
        };
        RowNamer {
            at: std::sync::Arc::new(at),
            ident: RowIdentity::backfill(table, columns),
            key: key.to_vec(),
        }
    }

    /// The position of `row`, the `row_number`-th (1-based) row of a pass that started at
    /// the table's beginning (used only for tables without a key).
    pub fn position(&self, row_number: u64, row: &Row) -> Position {
        Position::Row(RowPosition {
            at: Some(self.at.clone()),
            row: self.ident.row(&self.key, row_number, row),
        })
    }
}

/// The store key of the run state (a pseudo table name no real table can have).
pub const RUN_KEY: &str = "#run";

/// A backfill failure.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("backfill of {table} failed: {what}")]
    Postgres {
        table: String,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("backfill failed: {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("backfill reader stopped unexpectedly")]
    ReaderGone,
    #[error("no answer from the database within {after:?} (read_timeout) while trying to {what}: the server or the network stopped answering (reconnecting)")]
    Silent {
        what: &'static str,
        after: std::time::Duration,
    },
}

impl BackfillError {
    /// Whether the failure is on the database side (settings, privileges, credentials),
    /// as opposed to a sink or the checkpoint store.
    pub fn is_source_side(&self) -> bool {
        !matches!(self, BackfillError::Checkpoint(_))
    }

    /// Whether retrying later may succeed: the connection dropped or the server went away,
    /// as opposed to a setting, privilege or value to fix.
    pub fn is_transient(&self) -> bool {
        match self {
            BackfillError::Checkpoint(_) => false,
            BackfillError::ReaderGone | BackfillError::Silent { .. } => true,
            BackfillError::Setup { source, .. } | BackfillError::Postgres { source, .. } => {
                // One classification for every source kind (see `source::classify`);
                // nothing recognised (a SQL error of ours, a setting): permanent.
                crate::source::classify::chain(source.as_ref())
                    == Some(crate::source::ErrorClass::Transient)
            }
        }
    }
}

/// One chunk, ready to deliver.
pub struct Chunk {
    /// `schema.table`.
    pub table: String,
    pub events: Vec<ChangeEvent>,
    /// Progress after this chunk is accepted.
    pub progress: TableProgress,
    /// The table was dropped while the backfill read it: it is skipped (marked done,
    /// counted in `logtide_backfill_tables_skipped_total`), the others go on.
    pub skipped: bool,
}

impl Chunk {
    /// The marker for a table dropped during the backfill.
    pub fn skipped(table: &str) -> Chunk {
        Chunk {
            table: table.to_owned(),
            events: Vec::new(),
            progress: TableProgress {
                done: true,
                ..TableProgress::default()
            },
            skipped: true,
        }
    }
}

/// Logs a table dropped during the backfill (PostgreSQL 42P01, MySQL 1146; see
/// [`crate::source::classify::is_missing_table`]): the backfill skips it and goes on, its
/// rows read so far stay delivered, and the stream carries on with the other tables.
pub(crate) fn skip_dropped(table: &str, error: &BackfillError) {
    tracing::warn!(
        table,
        error = %crate::error::ErrorChain(error),
        "table dropped during the backfill: skipping it and continuing with the other tables"
    );
}

/// Reports progress: an indicatif bar on a terminal, structured log lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_log: Instant,
    rows: u64,
    total: u64,
}

impl Progress {
    pub fn new(total_estimate: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total_estimate.max(1));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "backfill {bar:30} {human_pos}/{human_len} rows  {per_sec}  eta {eta}  {msg}",
            ) {
                b.set_style(style);
            }
            b
        });
        Progress {
            bar,
            started: Instant::now(),
            last_log: Instant::now(),
            rows: 0,
            total: total_estimate,
        }
    }

    pub fn advance(&mut self, table: &str, rows: u64) {
        self.rows += rows;
        if let Some(b) = &self.bar {
            if self.rows > b.length().unwrap_or(0) {
                b.set_length(self.rows);
            }
            b.set_position(self.rows);
            b.set_message(table.to_owned());
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            tracing::info!(
                table,
                rows = self.rows,
                estimate = self.total,
                rows_per_sec = (self.rows as f64 / secs) as u64,
                "backfill progress"
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        tracing::info!(
            rows = self.rows,
            seconds = secs,
            rows_per_sec = (self.rows as f64 / secs) as u64,
            "backfill finished"
        );
    }
}

/// How the initial backfill's reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Nothing to backfill (done before, or off).
    Nothing,
    /// Every table was read and its chunks sent: once the pipeline has accepted them all,
    /// [`finished`] marks the backfill complete.
    All,
    /// Stopped before the end: shutdown, or the pipeline stopped taking chunks (a bound,
    /// a sink failure). The stored progress says where to continue.
    Stopped,
}

impl Chunk {
    /// The pipeline's form: the record is this table's progress.
    fn message(self) -> Result<crate::source::SourceMessage, BackfillError> {
        let record = serde_json::to_value(&self.progress).map_err(CheckpointError::Encode)?;
        Ok(crate::source::SourceMessage::Chunk(crate::source::Chunk {
            done: self.progress.done,
            key: self.table.clone(),
            table: self.table,
            events: self.events,
            record,
            skipped: self.skipped,
        }))
    }
}

/// Passes the reader's chunks on to the pipeline (`tx`), noting progress, until the reader
/// ends (`true`) or shutdown / the pipeline stopped taking them (`false`). The reader is
/// at most the two channels' capacity ahead of the delivery.
async fn forward(
    mut rx: mpsc::Receiver<Chunk>,
    tx: &mpsc::Sender<crate::source::SourceMessage>,
    progress: &mut Progress,
    cancel: &CancellationToken,
) -> Result<bool, BackfillError> {
    loop {
        let chunk = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(false),
            c = rx.recv() => c,
        };
        let Some(chunk) = chunk else {
            return Ok(true);
        };
        let (table, rows) = (chunk.table.clone(), chunk.events.len() as u64);
        let sent = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(false),
            r = tx.send(chunk.message()?) => r,
        };
        if sent.is_err() {
            return Ok(false);
        }
        progress.advance(&table, rows);
    }
}

/// Marks the initial backfill complete, once the pipeline accepted every chunk of a read
/// that returned [`Read::All`].
pub async fn finished(store: &CheckpointStore, source: &str) -> Result<(), CheckpointError> {
    store
        .save_backfill(source, RUN_KEY, &RunState::finished())
        .await
}

/// The stored progress of each table (in order) and the estimated rows still to read.
pub fn load_progress(
    store: &CheckpointStore,
    source: &str,
    tables: impl Iterator<Item = (String, u64)>,
) -> Result<(Vec<TableProgress>, u64), CheckpointError> {
    let mut resume = Vec::new();
    let mut estimate = 0;
    for (table, estimated_rows) in tables {
        let prog: TableProgress = store.load_backfill(source, &table)?.unwrap_or_default();
        if !prog.done {
            estimate += estimated_rows.saturating_sub(prog.rows);
        }
        resume.push(prog);
    }
    Ok((resume, estimate))
}

/// Runs (or resumes) the initial backfill of a source if it has not completed yet: reads
/// every table (connecting to `at`) and sends the chunks to the source's pipeline on `tx`
/// (which delivers them and stores each one's progress). Returns [`Read::Nothing`] when the
/// source already streamed before (a stored position and no unfinished run) or backfill is
/// off.
#[allow(clippy::too_many_arguments)]
pub async fn run_initial(
    cfg: &crate::config::SourceConfig,
    at: &crate::endpoint::Endpoint,
    info: &std::sync::Arc<crate::event::SourceInfo>,
    filter: &crate::filter::Filter,
    store: &CheckpointStore,
    tx: mpsc::Sender<crate::source::SourceMessage>,
    cancel: &CancellationToken,
    status: &SourceStatus,
) -> Result<Read, BackfillError> {
    let name = cfg.name();
    let settings = cfg.backfill();
    let state: Option<RunState> = store.load_backfill(name, RUN_KEY)?;
    match &state {
        Some(RunState { done: true, .. }) => return Ok(Read::Nothing),
        Some(RunState {
            done: false,
            cursors,
        }) if *cursors < ROW_CURSORS => {
            tracing::warn!(
                source = name,
                from_format = *cursors,
                "resuming a backfill started by an older logtide with another cursor format: the last chunk delivered before the restart comes again under new cursors (consumers de-duplicating on source.cursor see those rows twice, applying in order is unaffected)"
            )
        }
        Some(RunState { done: false, .. }) => {
            tracing::info!(source = name, "resuming interrupted backfill")
        }
        None => {
            if store.load(name)?.is_some() {
                return Ok(Read::Nothing);
            }
            if settings.mode == crate::config::BackfillMode::Never && settings.tables.is_empty() {
                return Ok(Read::Nothing);
            }
        }
    }
    match cfg {
        crate::config::SourceConfig::Postgres(pg) => {
            run_postgres(
                pg,
                at,
                info,
                filter,
                &settings,
                store,
                tx,
                cancel,
                state.is_none(),
                status,
            )
            .await
        }
        crate::config::SourceConfig::Query(_) => Ok(Read::Nothing),
        crate::config::SourceConfig::Mysql(my) => {
            mysql::run_mysql(
                my,
                at,
                info,
                filter,
                &settings,
                store,
                tx,
                cancel,
                state.is_none(),
                status,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_postgres(
    cfg: &crate::config::PostgresSourceConfig,
    at: &crate::endpoint::Endpoint,
    info: &std::sync::Arc<crate::event::SourceInfo>,
    filter: &crate::filter::Filter,
    settings: &crate::config::BackfillSettings,
    store: &CheckpointStore,
    out: mpsc::Sender<crate::source::SourceMessage>,
    cancel: &CancellationToken,
    first: bool,
    status: &SourceStatus,
) -> Result<Read, BackfillError> {
    let name = cfg.name.as_str();
    let limit = cfg.read_timeout;
    let (client, mut driver) =
        postgres::bounded(limit, "connect", postgres::connect(cfg, at)).await?;
    // The same checks as the stream, so a bad setting is reported the same way.
    postgres::bounded(limit, "validate the server", async {
        crate::source::postgres::setup::validate(&client, cfg)
            .await
            .map_err(|e| BackfillError::Setup {
                what: "validate the server",
                source: Box::new(e),
            })
    })
    .await?;
    postgres::bounded(limit, "prepare the publication", async {
        crate::source::postgres::setup::ensure_publication(&client, cfg)
            .await
            .map_err(|e| BackfillError::Setup {
                what: "prepare the publication",
                source: Box::new(e),
            })
    })
    .await?;
    // 1. Fix the stream's start before reading anything. Not bounded by `read_timeout`:
    // creating a slot waits for the transactions running at that moment to end.
    let start = match store.load(name)? {
        Some(crate::position::Position::Postgres(p)) if !first => p.lsn,
        _ => {
            let lsn = postgres::fix_start(&client, cfg).await?;
            let p0 =
                crate::position::Position::Postgres(crate::position::PgPosition::checkpoint(lsn));
            store.save(name, &p0).await?;
            lsn
        }
    };
    store
        .save_backfill(name, RUN_KEY, &RunState::running())
        .await?;
    // Connected, and the stream's start is fixed: changes from now on are not missed.
    status.set_state(crate::status::SourceState::Backfilling);
    let plans = postgres::bounded(
        limit,
        "list the tables to backfill",
        postgres::plan(&client, cfg, filter, settings, None),
    )
    .await?;
    let (resume, estimate) = load_progress(
        store,
        name,
        plans.iter().map(|p| (p.qualified(), p.estimated_rows)),
    )?;
    tracing::info!(source = name, tables = plans.len(), estimated_rows = estimate, start = %start, "backfill starting");
    let mut progress = Progress::new(estimate);
    let (tx, rx) = mpsc::channel(2);
    // The reader (COPY parsing, value decoding) runs as its own task, in parallel with the
    // delivery (JSON encoding, sink writes).
    let reader = {
        let (cfg, info, chunk_rows) = (cfg.clone(), info.clone(), settings.chunk_rows);
        tokio::spawn(async move {
            let r =
                postgres::read_tables(&client, &cfg, &info, &plans, start, resume, chunk_rows, tx)
                    .await;
            drop(client);
            r
        })
    };
    let forwarded = forward(rx, &out, &mut progress, cancel).await;
    // Stopped early (shutdown, the pipeline stopped taking chunks): the reader's chunk is
    // not wanted.
    if !matches!(forwarded, Ok(true)) {
        reader.abort();
    }
    let read_res = reader.await;
    // The reader dropped the client: the connection ends on its own, unless it went silent
    // with a request outstanding (then it would wait forever).
    if tokio::time::timeout(std::time::Duration::from_secs(5), &mut driver)
        .await
        .is_err()
    {
        driver.abort();
    }
    if !forwarded? {
        return Ok(Read::Stopped);
    }
    read_res.map_err(|e| BackfillError::Setup {
        what: "run the backfill reader",
        source: Box::new(e),
    })??;
    progress.finish();
    Ok(Read::All)
}
