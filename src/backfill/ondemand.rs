//! On-demand backfill of one table while its source keeps streaming:
//! `logtide backfill --source S --table T`, or `POST /sources/S/backfill?table=T` on the
//! admin endpoint.
//!
//! # Algorithm (why nothing is lost or left stale)
//!
//! The source's pipeline is the serialization point. Between two batches, when everything
//! up to a transaction boundary `B` has been delivered and nothing of the next transaction
//! has, the pipeline stores `B` as the checkpoint, reads **one** keyset chunk of the table
//! (`WHERE (k…) > (last) ORDER BY k… LIMIT n`) in a read that sees at least every
//! transaction up to `B`, delivers it as `op = "r"` events whose cursor sorts after `B`'s
//! events and before the next transaction's, stores the job's last key, and goes on
//! streaming. A consumer that applies the events in order (upsert by key, delete by key)
//! ends with exactly the table:
//!
//! * every transaction up to `B` is visible to the chunk, so a chunk row is never older
//!   than what was delivered before it;
//! * every transaction the chunk saw beyond `B` is delivered after the chunk, with its full
//!   row image or the delete; applying it again reaches the same state (a row may briefly
//!   show that transaction's value after the chunk's newer one, then advance), and a row
//!   deleted before the read is simply absent from the chunk.
//!
//! No snapshot has to be shared with the replication stream and nothing is written to the
//! source (no watermark table): a read-only user suffices, as for the initial backfill.
//!
//! **Visibility of `B`.** A commit can reach the log, and logtide, a moment before new reads
//! see it. PostgreSQL: the chunk is read in a `REPEATABLE READ` transaction whose snapshot
//! (`txid_current_snapshot()`) must not list any recently delivered transaction id as
//! still in progress; otherwise the chunk is read again a moment later. MariaDB:
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` reports the binlog position its snapshot
//! matches (`binlog_snapshot_file` / `binlog_snapshot_position`), which must not be before
//! `B`. MySQL has no such status: the check is skipped there (a warning says so once; the
//! window is the storage-engine commit right after the binlog write).
//!
//! **Cursors.** A row read at `B` is named `(B, schema.table, key, content hash)`
//! ([`super::RowNamer`]; the invariant is in [`crate::position`], "Row cursors"), written
//! as PostgreSQL `B.lsn - 1`, MySQL `(B.file, B.pos - 1)`, then `R` and the identity:
//! above every event of the transaction that ends at `B` (they carry its commit LSN /
//! start offset, and hex ordinals below `R`) and below every later transaction's. A chunk
//! read again after a crash names an unchanged row the same way (at the same boundary) or
//! at its new boundary — never another row with the same cursor, whatever was deleted or
//! inserted meanwhile. Two jobs, or two runs of one table, share a cursor only for the
//! same row with the same content at the same boundary.
//!
//! **Progress** (the queued jobs and each one's last key) is stored under
//! `backfill/<source>/#ondemand` after each accepted chunk. After a crash the stream resumes
//! from its checkpoint (the last `B`, stored before the chunk was read) and the job
//! continues after its last stored key.
//!
//! Tables need a primary key (or replica identity index) that can be paginated; others are
//! refused with what to do instead (the initial backfill reads them in one pass).

use super::postgres as pgb;
use super::{BackfillError, TableProgress};
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{BackfillMode, BackfillSettings, SourceConfig};
use crate::endpoint::Endpoint;
use crate::error::{Backoff, ErrorChain};
use crate::event::{ChangeEvent, SourceInfo, TableSchema};
use crate::filter::Filter;
use crate::position::{MysqlPosition, Position};
use crate::source::Chunk;
use crate::status::{OnDemandSnapshot, SourceStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The store key of the job list (a pseudo table name no real table can have).
pub const JOBS_KEY: &str = "#ondemand";

/// How many delivered PostgreSQL transaction ids the visibility check looks at.
const RECENT_XIDS: usize = 4096;

/// How long a chunk waits before it is read again when its snapshot did not see `B` yet.
const NOT_VISIBLE_WAIT: Duration = Duration::from_millis(20);

/// One requested table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `schema.table` (MySQL: `database.table`).
    pub table: String,
    /// Numbers the requests (kept in the stored job list; cursors no longer use it).
    pub run: u64,
    pub progress: TableProgress,
}

/// The stored job list of a source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    pub next_run: u64,
    pub jobs: Vec<Job>,
}

/// Whether rows can be read at boundary `at`: a transaction boundary of the stream (not a
/// GTID-only start, nor the very beginning).
pub fn placeable(at: &Position) -> bool {
    match at {
        Position::Postgres(p) => p.lsn.0 > 0,
        Position::Mysql(m) => !m.file.is_empty() && m.pos > 0,
        _ => false,
    }
}

/// Whether a PostgreSQL snapshot (`xmin:xmax:xip,…`, 64-bit ids) sees every transaction in
/// `recent` (32-bit ids from pgoutput) as committed. `None` for an unreadable snapshot.
pub fn snapshot_sees(snapshot: &str, recent: &VecDeque<u64>) -> Option<bool> {
    let mut parts = snapshot.trim().splitn(3, ':');
    let _xmin: u64 = parts.next()?.parse().ok()?;
    let xmax: u64 = parts.next()?.parse().ok()?;
    let xip = parts.next()?;
    let mut in_progress = Vec::new();
    for x in xip.split(',').filter(|x| !x.is_empty()) {
        in_progress.push(x.parse::<u64>().ok()? as u32);
    }
    let xmax32 = xmax as u32;
    Some(recent.iter().all(|&x| {
        let x = x as u32;
        // Modulo-2^32 order, as PostgreSQL compares xids: x must precede xmax.
        let before_xmax = (x.wrapping_sub(xmax32) as i32) < 0;
        before_xmax && !in_progress.contains(&x)
    }))
}

/// Why a table cannot be backfilled on demand.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("table {table} is not captured by source {source_name}: it is not in the publication, or the table filter excludes it; list what is captured with `logtide discover`")]
    NotCaptured { table: String, source_name: String },
    #[error("table {table} has no primary key (or replica identity index) that can be paginated: an on-demand backfill needs one; add a primary key, or re-run the initial backfill (`logtide reset`, which reads such tables in one pass)")]
    NoKey { table: String },
    #[error("source {0} is a query source: it has no log to hand over to; its next run reads from the stored cursor")]
    QuerySource(String),
}

/// A table ready to be read on demand.
struct PgTable {
    plan: pgb::TablePlan,
    tys: Vec<crate::source::postgres::types::PgType>,
    schema: Arc<TableSchema>,
}

struct PgReader {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
    types: crate::source::postgres::types::TypeCache,
    tables: BTreeMap<String, PgTable>,
}

impl Drop for PgReader {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

struct MyTable {
    plan: super::mysql::TablePlan,
    schema: Arc<TableSchema>,
}

struct MyReader {
    conn: crate::source::mysql::sql::SqlConn,
    tables: BTreeMap<String, MyTable>,
    warned_unchecked: bool,
}

enum Reader {
    Postgres(Box<PgReader>),
    /// `None` while a blocking call has it. In a mutex only to be `Sync` (the SQL
    /// connection is not, and the pipeline is shared across awaits); only `get_mut` is used.
    Mysql(std::sync::Mutex<Option<MyReader>>),
}

/// The MySQL reader slot (never contended: see [`Reader::Mysql`]).
fn slot(m: &mut std::sync::Mutex<Option<MyReader>>) -> &mut Option<MyReader> {
    m.get_mut().unwrap_or_else(|e| e.into_inner())
}

/// The plain `schema.table` a user gave, qualified with the source's default schema.
pub fn qualify(cfg: &SourceConfig, table: &str) -> String {
    if table.contains('.') {
        return table.to_owned();
    }
    match cfg {
        SourceConfig::Postgres(_) => format!("public.{table}"),
        SourceConfig::Mysql(m) => match &m.database {
            Some(db) => format!("{db}.{table}"),
            None => table.to_owned(),
        },
        SourceConfig::Query(_) => table.to_owned(),
    }
}

/// Settings under which `plan` lists every captured table, whatever its backfill mode.
fn every_table(cfg: &SourceConfig) -> BackfillSettings {
    BackfillSettings {
        mode: BackfillMode::Initial,
        tables: BTreeMap::new(),
        chunk_rows: cfg.backfill().chunk_rows,
    }
}

impl Reader {
    async fn connect(cfg: &SourceConfig, at: &Endpoint) -> Result<Reader, BackfillError> {
        match cfg {
            SourceConfig::Postgres(pg) => {
                let (client, driver) = pgb::connect(pg, at).await?;
                Ok(Reader::Postgres(Box::new(PgReader {
                    client,
                    driver,
                    types: crate::source::postgres::types::TypeCache::new(),
                    tables: BTreeMap::new(),
                })))
            }
            SourceConfig::Mysql(my) => {
                let (my, at) = (my.clone(), at.clone());
                let conn = tokio::task::spawn_blocking(move || {
                    let mut conn = super::mysql::connect(&my, &at)?;
                    conn.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        .map_err(|e| BackfillError::Setup {
                            what: "set the isolation level",
                            source: Box::new(e),
                        })?;
                    Ok::<_, BackfillError>(conn)
                })
                .await
                .map_err(|e| BackfillError::Setup {
                    what: "run the blocking connect",
                    source: Box::new(e),
                })??;
                Ok(Reader::Mysql(std::sync::Mutex::new(Some(MyReader {
                    conn,
                    tables: BTreeMap::new(),
                    warned_unchecked: false,
                }))))
            }
            SourceConfig::Query(q) => Err(BackfillError::Setup {
                what: "start an on-demand backfill",
                source: Box::new(JobError::QuerySource(q.name.clone())),
            }),
        }
    }

    /// Plans `table` (once) and checks it can be paginated.
    async fn prepare(
        &mut self,
        cfg: &SourceConfig,
        info: &Arc<SourceInfo>,
        filter: &Filter,
        table: &str,
    ) -> Result<(), BackfillError> {
        let not_captured = || BackfillError::Setup {
            what: "plan the on-demand backfill",
            source: Box::new(JobError::NotCaptured {
                table: table.to_owned(),
                source_name: cfg.name().to_owned(),
            }),
        };
        let no_key = || BackfillError::Setup {
            what: "plan the on-demand backfill",
            source: Box::new(JobError::NoKey {
                table: table.to_owned(),
            }),
        };
        match (self, cfg) {
            (Reader::Postgres(r), SourceConfig::Postgres(pg)) => {
                if r.tables.contains_key(table) {
                    return Ok(());
                }
                // As the stream does: the publication decides what is captured.
                crate::source::postgres::setup::ensure_publication(&r.client, pg)
                    .await
                    .map_err(|e| BackfillError::Setup {
                        what: "prepare the publication",
                        source: Box::new(e),
                    })?;
                let plans =
                    pgb::plan(&r.client, pg, filter, &every_table(cfg), Some(table)).await?;
                let plan = plans.into_iter().next().ok_or_else(not_captured)?;
                if plan.key.is_empty() {
                    return Err(no_key());
                }
                let tys = pgb::column_types(&r.client, &mut r.types, &plan).await?;
                let schema = pgb::table_schema(&plan, pg, info);
                r.tables
                    .insert(table.to_owned(), PgTable { plan, tys, schema });
                Ok(())
            }
            (Reader::Mysql(m), SourceConfig::Mysql(_)) => {
                let slot = slot(m);
                let Some(mut r) = slot.take() else {
                    return Err(BackfillError::ReaderGone);
                };
                if r.tables.contains_key(table) {
                    *slot = Some(r);
                    return Ok(());
                }
                let settings = every_table(cfg);
                let filter = filter.clone();
                let t = table.to_owned();
                let (r, planned) = blocking(move || {
                    let res = super::mysql::plan(&mut r.conn, &filter, &settings, Some(&t));
                    (r, res)
                })
                .await?;
                *slot = Some(r);
                let plan = planned?.into_iter().next().ok_or_else(not_captured)?;
                if !plan.paginate {
                    return Err(no_key());
                }
                let schema = super::mysql::table_schema(&plan, info);
                if let Some(r) = slot.as_mut() {
                    r.tables.insert(table.to_owned(), MyTable { plan, schema });
                }
                Ok(())
            }
            _ => Err(BackfillError::ReaderGone),
        }
    }

    /// Reads one chunk of `job` at boundary `at`; `None` when the read's snapshot does not
    /// cover `at` yet.
    async fn chunk(
        &mut self,
        job: &Job,
        at: &Position,
        chunk_rows: usize,
        recent: &VecDeque<u64>,
        limit: Duration,
    ) -> Result<Option<(Vec<ChangeEvent>, TableProgress)>, BackfillError> {
        let table = job.table.as_str();
        let mut progress = job.progress.clone();
        match self {
            Reader::Postgres(r) => {
                let setup = |what| {
                    move |e: tokio_postgres::Error| BackfillError::Postgres {
                        table: table.to_owned(),
                        what,
                        source: Box::new(e),
                    }
                };
                let client = &r.client;
                pgb::bounded(limit, "begin the chunk's transaction", async {
                    client
                        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                        .await
                        .map_err(setup("begin the chunk's transaction"))
                })
                .await?;
                let snap: String = pgb::bounded(limit, "read the chunk's snapshot", async {
                    client
                        .query_one("SELECT pg_catalog.txid_current_snapshot()::text", &[])
                        .await
                        .and_then(|row| row.try_get(0))
                        .map_err(setup("read the chunk's snapshot"))
                })
                .await?;
                let sees = snapshot_sees(&snap, recent).ok_or_else(|| BackfillError::Postgres {
                    table: table.to_owned(),
                    what: "read the chunk's snapshot",
                    source: format!("unreadable snapshot {snap:?}").into(),
                })?;
                if !sees {
                    pgb::bounded(limit, "end the chunk's transaction", async {
                        client
                            .batch_execute("ROLLBACK")
                            .await
                            .map_err(setup("end the chunk's transaction"))
                    })
                    .await?;
                    return Ok(None);
                }
                let t = r.tables.get(table).ok_or(BackfillError::ReaderGone)?;
                let namer = super::RowNamer::new(at, table, &t.schema.columns, &t.plan.key);
                let reader = pgb::TableReader {
                    plan: &t.plan,
                    tys: &t.tys,
                    schema: &t.schema,
                    limit,
                };
                let mut events = Vec::with_capacity(chunk_rows.min(65_536));
                let n = reader
                    .copy(client, &mut progress, chunk_rows, &namer, &mut events, None)
                    .await?;
                pgb::bounded(limit, "end the chunk's transaction", async {
                    client
                        .batch_execute("COMMIT")
                        .await
                        .map_err(setup("end the chunk's transaction"))
                })
                .await?;
                progress.done = n < chunk_rows;
                Ok(Some((events, progress)))
            }
            Reader::Mysql(m) => {
                let slot = slot(m);
                let Some(mut r) = slot.take() else {
                    return Err(BackfillError::ReaderGone);
                };
                let at = at.clone();
                let table = table.to_owned();
                let (r, res) = blocking(move || {
                    let res = mysql_chunk(&mut r, &table, &at, progress, chunk_rows);
                    (r, res)
                })
                .await?;
                *slot = Some(r);
                res
            }
        }
    }
}

/// Runs a blocking call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackfillError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackfillError::Setup {
            what: "run the blocking backfill reader",
            source: Box::new(e),
        })
}

/// MySQL/MariaDB: one chunk in a consistent-snapshot transaction, checked against `at`.
fn mysql_chunk(
    r: &mut MyReader,
    table: &str,
    at: &Position,
    mut progress: TableProgress,
    chunk_rows: usize,
) -> Result<Option<(Vec<ChangeEvent>, TableProgress)>, BackfillError> {
    let fail = |what: &'static str| {
        move |e: crate::source::mysql::MysqlError| BackfillError::Setup {
            what,
            source: Box::new(e),
        }
    };
    r.conn
        .query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .map_err(fail("begin the chunk's transaction"))?;
    let rs = r
        .conn
        .query("SHOW SESSION STATUS LIKE 'binlog\\_snapshot\\_%'")
        .map_err(fail("read the chunk's binlog snapshot position"))?;
    let mut file = None;
    let mut pos = None;
    for i in 0..rs.rows.len() {
        match rs.text(i, 0).as_deref() {
            Some("Binlog_snapshot_file") => file = rs.text(i, 1),
            Some("Binlog_snapshot_position") => pos = rs.text(i, 1).and_then(|p| p.parse().ok()),
            _ => {}
        }
    }
    match (file, pos, at) {
        (Some(file), Some(pos), Position::Mysql(b)) if !file.is_empty() => {
            let snap = MysqlPosition {
                file,
                pos,
                ordinal: 0,
                gtid: None,
            };
            if snap < *b {
                r.conn
                    .query("ROLLBACK")
                    .map_err(fail("end the chunk's transaction"))?;
                return Ok(None);
            }
        }
        _ => {
            if !r.warned_unchecked {
                r.warned_unchecked = true;
                tracing::warn!(table, "the server reports no binlog_snapshot_file/position (MySQL): on-demand backfill chunks cannot be checked against the stream position");
            }
        }
    }
    let t = r.tables.get(table).ok_or(BackfillError::ReaderGone)?;
    let namer = super::RowNamer::new(at, table, &t.plan.columns, &t.plan.key);
    let events = super::mysql::read_chunk(
        &mut r.conn,
        &t.plan,
        &t.schema,
        &mut progress,
        chunk_rows,
        &namer,
    )?;
    r.conn
        .query("COMMIT")
        .map_err(fail("end the chunk's transaction"))?;
    progress.done = events.len() < chunk_rows;
    Ok(Some((events, progress)))
}

/// The on-demand backfills of one source, owned by its pipeline.
pub struct OnDemand {
    source: String,
    cfg: SourceConfig,
    /// Where the chunk reader connects.
    at: Endpoint,
    info: Arc<SourceInfo>,
    filter: Arc<Filter>,
    jobs: Jobs,
    reader: Option<Reader>,
    /// Transaction ids of recently delivered PostgreSQL events.
    recent: VecDeque<u64>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// What `/sources` shows: running, finished and failed jobs of this process.
    shown: Vec<OnDemandSnapshot>,
    /// The table and progress of the chunk handed to the pipeline and not yet accepted.
    staged: Option<(String, TableProgress)>,
}

impl OnDemand {
    /// Loads the stored jobs of a log-based source (`None` for query sources); its chunks
    /// are read over a connection to `at`.
    pub fn load(
        store: &CheckpointStore,
        cfg: &SourceConfig,
        at: &Endpoint,
        info: &Arc<SourceInfo>,
        filter: &Arc<Filter>,
    ) -> Result<Option<OnDemand>, crate::checkpoint::CheckpointError> {
        if matches!(cfg, SourceConfig::Query(_)) {
            return Ok(None);
        }
        let jobs: Jobs = store
            .load_backfill(cfg.name(), JOBS_KEY)?
            .unwrap_or_default();
        let shown = jobs
            .jobs
            .iter()
            .map(|j| OnDemandSnapshot {
                table: j.table.clone(),
                rows: j.progress.rows,
                state: "running",
                error: None,
            })
            .collect();
        if !jobs.jobs.is_empty() {
            tracing::info!(source = cfg.name(), tables = ?jobs.jobs.iter().map(|j| &j.table).collect::<Vec<_>>(), "resuming on-demand backfill");
        }
        Ok(Some(OnDemand {
            source: cfg.name().to_owned(),
            cfg: cfg.clone(),
            at: at.clone(),
            info: info.clone(),
            filter: filter.clone(),
            jobs,
            reader: None,
            recent: VecDeque::new(),
            retry_at: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            shown,
            staged: None,
        }))
    }

    /// Notes the transaction ids of delivered events (PostgreSQL's visibility check).
    pub fn note(&mut self, events: &[ChangeEvent]) {
        for x in events.iter().filter_map(|e| e.txid) {
            if self.recent.back() != Some(&x) {
                if self.recent.len() == RECENT_XIDS {
                    self.recent.pop_front();
                }
                self.recent.push_back(x);
            }
        }
    }

    /// Whether a chunk can be read at `at` now.
    pub fn ready(&self, at: Option<&Position>) -> bool {
        !self.jobs.jobs.is_empty()
            && self.retry_at.is_none_or(|t| Instant::now() >= t)
            && at.is_some_and(placeable)
    }

    /// When a waiting job may be tried again.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|_| !self.jobs.jobs.is_empty())
    }

    /// Takes requested tables from the admin endpoint into the stored job list.
    pub async fn take_requests(
        &mut self,
        store: &CheckpointStore,
        status: &SourceStatus,
    ) -> Result<(), CheckpointError> {
        let requested = status.take_backfill_requests();
        if requested.is_empty() {
            return Ok(());
        }
        for t in requested {
            let table = qualify(&self.cfg, &t);
            if self.jobs.jobs.iter().any(|j| j.table == table) {
                tracing::info!(source = %self.source, %table, "on-demand backfill of this table is already running");
                continue;
            }
            self.jobs.next_run += 1;
            self.jobs.jobs.push(Job {
                table: table.clone(),
                run: self.jobs.next_run,
                progress: TableProgress::default(),
            });
            self.shown.retain(|s| s.table != table);
            self.shown.push(OnDemandSnapshot {
                table: table.clone(),
                rows: 0,
                state: "running",
                error: None,
            });
            tracing::info!(source = %self.source, %table, "on-demand backfill queued");
        }
        self.retry_at = None;
        store
            .save_backfill(&self.source, JOBS_KEY, &self.jobs)
            .await?;
        status.set_ondemand(self.shown.clone());
        Ok(())
    }

    /// Reads one chunk of the first job at the delivered boundary `at`, for the pipeline
    /// to deliver; [`OnDemand::accepted`] then takes the chunk's progress in. `None`: no
    /// chunk now. A failing read is retried later (transient) or ends the job with the
    /// error shown in `/sources` and the logs (permanent); the stream goes on.
    pub async fn next_chunk(
        &mut self,
        at: &Position,
        store: &CheckpointStore,
        status: &SourceStatus,
    ) -> Result<Option<Chunk>, CheckpointError> {
        let Some(job) = self.jobs.jobs.first().cloned() else {
            return Ok(None);
        };
        let chunk_rows = self.cfg.backfill().chunk_rows.max(1);
        let read = self.read(&job, at, chunk_rows).await;
        let (events, progress) = match read {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::debug!(source = %self.source, table = %job.table, "chunk snapshot does not cover the stream position yet; reading again");
                self.retry_at = Some(Instant::now() + NOT_VISIBLE_WAIT);
                return Ok(None);
            }
            Err(e) => {
                self.reader = None;
                if e.is_transient() {
                    crate::metrics::error(&self.source, "backfill_transient");
                    let wait = self.backoff.next_wait();
                    tracing::warn!(source = %self.source, table = %job.table, error = %ErrorChain(&e), retry_in_ms = wait.as_millis() as u64, "on-demand backfill chunk failed, retrying");
                    self.retry_at = Some(Instant::now() + wait);
                } else {
                    crate::metrics::error(&self.source, "backfill_permanent");
                    let msg = ErrorChain(&e).to_string();
                    tracing::error!(source = %self.source, table = %job.table, error = %msg, "on-demand backfill failed; the stream goes on");
                    self.finish_job(&job.table, "failed", Some(msg));
                    store
                        .save_backfill(&self.source, JOBS_KEY, &self.jobs)
                        .await?;
                    status.set_ondemand(self.shown.clone());
                }
                return Ok(None);
            }
        };
        self.retry_at = None;
        self.backoff.reset();
        // The job list as it is once this chunk is accepted: what the pipeline stores.
        let mut after = self.jobs.clone();
        if progress.done {
            after.jobs.retain(|j| j.table != job.table);
        } else if let Some(j) = after.jobs.iter_mut().find(|j| j.table == job.table) {
            j.progress = progress.clone();
        }
        let record = serde_json::to_value(&after).map_err(CheckpointError::Encode)?;
        let done = progress.done;
        self.staged = Some((job.table.clone(), progress));
        Ok(Some(Chunk {
            table: job.table,
            events,
            key: JOBS_KEY.to_owned(),
            record,
            done,
            skipped: false,
        }))
    }

    /// The pipeline delivered the chunk [`OnDemand::next_chunk`] returned and stored its
    /// record: the job moves on (or ends), and `/sources` shows it.
    pub fn accepted(&mut self, status: &SourceStatus) {
        let Some((table, progress)) = self.staged.take() else {
            return;
        };
        let (done, rows) = (progress.done, progress.rows);
        if let Some(j) = self.jobs.jobs.iter_mut().find(|j| j.table == table) {
            j.progress = progress;
        }
        if let Some(s) = self.shown.iter_mut().find(|s| s.table == table) {
            s.rows = rows;
        }
        if done {
            tracing::info!(source = %self.source, %table, rows, "on-demand backfill finished");
            self.finish_job(&table, "done", None);
        }
        status.set_ondemand(self.shown.clone());
    }

    async fn read(
        &mut self,
        job: &Job,
        at: &Position,
        chunk_rows: usize,
    ) -> Result<Option<(Vec<ChangeEvent>, TableProgress)>, BackfillError> {
        // The pipeline waits on this: every exchange is bounded, so a silent connection
        // (PostgreSQL: `read_timeout`; MySQL's reads have socket timeouts) cannot hold the
        // stream. A PostgreSQL chunk's own COPY messages are bounded one by one.
        let limit = match &self.cfg {
            SourceConfig::Postgres(pg) => pg.read_timeout,
            _ => Duration::MAX,
        };
        if self.reader.is_none() {
            let connect = Reader::connect(&self.cfg, &self.at);
            self.reader = Some(pgb::bounded(limit, "connect", connect).await?);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Err(BackfillError::ReaderGone);
        };
        let prepare = reader.prepare(&self.cfg, &self.info, &self.filter, &job.table);
        pgb::bounded(limit, "plan the table", prepare).await?;
        reader.chunk(job, at, chunk_rows, &self.recent, limit).await
    }

    fn finish_job(&mut self, table: &str, state: &'static str, error: Option<String>) {
        self.jobs.jobs.retain(|j| j.table != table);
        if let Some(s) = self.shown.iter_mut().find(|s| s.table == table) {
            s.state = state;
            s.error = error;
        }
    }
}

/// Checks that `table` of `cfg` can be backfilled on demand (captured, with a key that can
/// be paginated) by planning it on a fresh connection to `at`; returns its qualified name.
pub async fn validate(
    cfg: &SourceConfig,
    at: &Endpoint,
    table: &str,
) -> Result<String, BackfillError> {
    let table = qualify(cfg, table);
    let info = Arc::new(SourceInfo {
        connector: match cfg {
            SourceConfig::Postgres(_) => crate::event::Connector::Postgres,
            SourceConfig::Mysql(_) => crate::event::Connector::Mysql,
            SourceConfig::Query(_) => crate::event::Connector::Query,
        },
        name: cfg.name().to_owned(),
    });
    let mut reader = Reader::connect(cfg, at).await?;
    reader.prepare(cfg, &info, &cfg.filter(), &table).await?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{Lsn, PgPosition};

    #[test]
    fn chunk_positions_sit_between_the_boundary_transaction_and_the_next() {
        let b = Position::Postgres(PgPosition::checkpoint(Lsn(0x1000)));
        let cols = vec!["id".to_string(), "v".to_string()];
        let namer = super::super::RowNamer::new(&b, "public.t", &cols, &[0]);
        let row = |id: i64, v: &str| -> crate::event::Row {
            vec![
                Some(crate::value::Value::Int(id)),
                Some(crate::value::Value::Text(v.into())),
            ]
        };
        let c = namer.position(1, &row(5, "a"));
        // The boundary's transaction: commit LSN below its end.
        let last_event = Position::Postgres(PgPosition {
            lsn: Lsn(0xF80),
            ordinal: 7,
        });
        // Even an event at B - 1 (its ordinals are hex digits) sorts below.
        let at_b_minus_1 = Position::Postgres(PgPosition {
            lsn: Lsn(0xFFF),
            ordinal: u64::MAX,
        });
        // The next transaction may commit right at the boundary's end LSN.
        let next_event = Position::Postgres(PgPosition {
            lsn: Lsn(0x1000),
            ordinal: 1,
        });
        assert!(last_event < c && at_b_minus_1 < c && c < next_event);
        assert!(c.cursor() < next_event.cursor() && at_b_minus_1.cursor() < c.cursor());
        // Key order; the row number does not matter for a keyed table.
        let c2 = namer.position(99, &row(6, "a"));
        assert!(c < c2);
        assert_eq!(namer.position(77, &row(5, "a")), c);
        // Another content of the same key is another cursor.
        assert_ne!(namer.position(1, &row(5, "b")), c);
        let m = Position::Mysql(MysqlPosition {
            file: "bin.000003".into(),
            pos: 900,
            ordinal: 0,
            gtid: Some("0-1-5".into()),
        });
        let mc = super::super::RowNamer::new(&m, "d.t", &cols, &[0]).position(1, &row(5, "a"));
        let next = Position::Mysql(MysqlPosition {
            file: "bin.000003".into(),
            pos: 900,
            ordinal: 1,
            gtid: None,
        });
        let prev = Position::Mysql(MysqlPosition {
            file: "bin.000003".into(),
            pos: 500,
            ordinal: 9,
            gtid: None,
        });
        assert!(prev < mc && mc < next);
        assert!(prev.cursor() < mc.cursor() && mc.cursor() < next.cursor());
        assert!(!placeable(&Position::Mysql(MysqlPosition::gtid_only(
            "0-1-5"
        ))));
        assert!(placeable(&m) && placeable(&b));
    }

    #[test]
    fn snapshot_check_requires_recent_transactions_committed() {
        let recent: VecDeque<u64> = [100, 101, 105].into_iter().collect();
        assert_eq!(snapshot_sees("90:110:", &recent), Some(true));
        assert_eq!(snapshot_sees("90:110:95,96", &recent), Some(true));
        assert_eq!(snapshot_sees("90:110:101", &recent), Some(false));
        // Not yet below xmax: started after the snapshot.
        assert_eq!(snapshot_sees("90:105:", &recent), Some(false));
        // 64-bit ids with an epoch compare by their low 32 bits.
        let e = 1u64 << 32;
        assert_eq!(
            snapshot_sees(&format!("{}:{}:{}", e + 90, e + 110, e + 105), &recent),
            Some(false)
        );
        assert_eq!(
            snapshot_sees(&format!("{}:{}:", e + 90, e + 110), &recent),
            Some(true)
        );
        assert_eq!(snapshot_sees("garbage", &recent), None);
        assert_eq!(snapshot_sees("1:2:x", &recent), None);
        assert_eq!(snapshot_sees("1:2:", &VecDeque::new()), Some(true));
    }

    #[test]
    fn unqualified_tables_get_the_default_schema() {
        let cfg: crate::config::Config = toml::from_str(
            "[[sources]]\nkind = \"postgres\"\nname = \"p\"\nhost = \"h\"\nuser = \"u\"\ndatabase = \"d\"\n",
        )
        .expect("config");
        assert_eq!(qualify(&cfg.sources[0], "t"), "public.t");
        assert_eq!(qualify(&cfg.sources[0], "s.t"), "s.t");
    }
}
