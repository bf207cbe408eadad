//! Query mode (`kind = "query"`): scheduled incremental SELECTs for databases whose change
//! log logtide cannot read, over the PostgreSQL wire protocol (PostgreSQL, Redshift;
//! [`postgres`]) or the MySQL/MariaDB one ([`mysql`]), picked by `protocol`.
//!
//! This module owns what both protocols share: the schedule, the look-back window and the
//! re-send suppression, the positions and the checkpoint hand-over. A backend owns its
//! connection, binds the values and decodes the rows; it answers "the next `limit` rows
//! from `low` (or after `last`)" ([`Request`] → [`FetchedRow`]s) and computes
//! `mark − lookback` in the database's own arithmetic.
//!
//! # A run
//!
//! Every `interval` a *run* reads the rows whose cursor is at or above
//! `low = mark − lookback`, where `mark` is the highest cursor value the previous complete
//! run read:
//!
//! * The configured query may use `{{cursor}}` (bound to `low`, or `initial_cursor` before
//!   anything was read) and `{{last_sync_time}}` (Unix seconds of the start of the previous
//!   complete run, 0 the first time). Neither is ever spliced into the SQL text: PostgreSQL
//!   binds them as parameters, MySQL as session variables (see [`mysql`]).
//! * logtide wraps the query as `SELECT <cols> FROM (<query>) q WHERE cursor >= low ORDER BY
//!   cursor, keys LIMIT batch_size` and pages on with `(cursor, keys) > (last row read)`.
//!   Rows whose cursor is NULL are never read.
//! * **Look-back.** A row committed late — after a run passed its cursor value (same
//!   timestamp, or an id handed out before a higher one that committed first) — lies in
//!   `[low, mark]` and is read by a later run as long as it commits within the window:
//!   `lookback` (default `"5s"` for date/timestamp cursors, `100` for numeric ones; `0`
//!   still re-reads the rows *at* `mark`, so ties at one timestamp are never missed).
//! * **Re-send suppression.** The rows of the window are read again every run; a row version
//!   already delivered is not sent again. A version is named by its cursor
//!   (`R` + table + cursor value + keys + content hash, see [`crate::identity`]): one cursor,
//!   one row version, the same cursor whenever that version is read. The cursors delivered
//!   inside the window are kept (as 64-bit fingerprints) in the position the pipeline
//!   checkpoints *after* the sinks accepted them, so a crash re-delivers (same cursors)
//!   rather than loses. Fingerprints below the window are dropped after each page; at most
//!   [`MAX_SEEN`] are kept (beyond that the oldest go, and their rows may be sent again).
//! * A run reads at most `max_rows_per_run` rows; the next run continues its pages (with the
//!   same `low` and `{{last_sync_time}}`) before a new window starts.
//! * Runs start every `interval`; a run still going when the next is due skips that one.
//! * The session time zone is UTC.
//!
//! # What query mode guarantees, and what it cannot
//!
//! Every row is an event with `op = "r"`. Query mode sees the current rows only: it never
//! sees deletes, nor the intermediate versions of a row changed twice between two runs, and
//! a row committed later than `lookback` after a higher cursor value was read is missed
//! (widen `lookback`, or use a log-based source). A row version whose cursor column did
//! not change (an update that forgets `updated_at`) is not read again.
//!
//! # Positions
//!
//! Events carry row positions ([`crate::position::RowPosition`], no stream position). The
//! checkpoint is a [`QueryPosition`]: `<20-digit sequence>:<JSON state>` (the sequence grows
//! by one per page and per completed run, so the string sorts like the position; the state
//! holds `mark`, an unfinished run's `low` and last row, and `{{last_sync_time}}`), plus the
//! window's fingerprints. After each page the source sends a `Boundary`, so the stored
//! position advances only when the sinks accepted the page. A position stored by an older
//! logtide (its `last` row) resumes with `mark` = that row's cursor value.

pub mod mysql;
pub mod postgres;

use crate::config::{Lookback, QueryProtocol, QuerySourceConfig};
use crate::endpoint::Endpoint;
use crate::event::{ChangeEvent, Op, Row, SourceInfo, TableSchema};
use crate::identity::RowIdentity;
use crate::position::{Position, PositionParseError, QueryPosition, RowPosition};
use crate::source::postgres::tls::TlsError;
use crate::source::postgres::types::TypeError;
use crate::source::{ErrorClass, SourceContext, SourceMessage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A query-mode source failure.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid query source configuration: {0}")]
    Config(String),
    #[error("cannot connect to the query source")]
    Connect(#[source] TlsError),
    #[error("the resume position {0} is not a query-mode position (was the checkpoint store shared with another source?)")]
    WrongPosition(String),
    #[error("{what} failed")]
    Sql {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot resolve the result column types")]
    Types(#[source] TypeError),
    #[error("cannot decode column {column:?} of the query result")]
    Value {
        column: String,
        #[source]
        source: TypeError,
    },
    #[error("{what} failed")]
    Mysql {
        what: &'static str,
        #[source]
        source: crate::source::mysql::MysqlError,
    },
    #[error("cannot decode column {column:?} of the query result")]
    MysqlValue {
        column: String,
        #[source]
        source: crate::source::mysql::types::DecodeError,
    },
    #[error("the MySQL query worker ended unexpectedly")]
    WorkerLost,
    #[error("{what} got no answer within query_timeout ({after:?}): the connection counts as lost (raise query_timeout if the query is this slow)")]
    Timeout { what: &'static str, after: Duration },
    #[error("the pipeline closed the source channel")]
    ChannelClosed,
}

impl QueryError {
    pub fn class(&self) -> ErrorClass {
        match self {
            QueryError::Connect(TlsError::Connect { source, .. }) => {
                crate::source::classify::postgres(source)
            }
            QueryError::Sql { source, .. } => crate::source::classify::postgres(source),
            QueryError::Mysql { source, .. } => source.class(),
            QueryError::ChannelClosed | QueryError::WorkerLost | QueryError::Timeout { .. } => {
                ErrorClass::Transient
            }
            _ => ErrorClass::Permanent,
        }
    }
}

const CURSOR_PH: &str = "{{cursor}}";
const SYNC_PH: &str = "{{last_sync_time}}";

/// What a run asks a backend for: the next page.
pub(crate) struct Request<'a> {
    /// Bound to `{{cursor}}`: the run's `low`, else `initial_cursor` (`None`: SQL NULL).
    pub cursor: Option<&'a str>,
    /// Bound to `{{last_sync_time}}`.
    pub sync: i64,
    /// The run's lower bound: rows with a cursor at or above it (all rows without it).
    pub low: Option<&'a str>,
    /// The last row read in this run, (cursor, keys) texts: only rows after it.
    pub last: Option<&'a [Option<String>]>,
    /// At most this many rows.
    pub limit: usize,
}

/// One decoded result row.
pub(crate) struct FetchedRow {
    /// Every result column's value.
    pub values: Row,
    /// Text of the cursor value followed by the key values, as stored in the position and
    /// handed back in [`Request::last`].
    pub order: Vec<Option<String>>,
}

/// What the cursor column's type makes of `lookback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorKind {
    /// Date and timestamp types: a duration.
    Time,
    /// Integer and decimal types: an amount.
    Number,
    /// Anything else (text, time of day, …): no arithmetic, no look-back.
    Other,
}

/// The default look-back of a date/timestamp cursor.
const DEFAULT_LOOKBACK_TIME: std::time::Duration = std::time::Duration::from_secs(5);
/// The default look-back of a numeric cursor.
const DEFAULT_LOOKBACK_AMOUNT: &str = "100";

/// The look-back in effect for a cursor column of `kind` (`None`: none, the run re-reads
/// from `mark` itself), or why the configured one does not fit.
fn effective_lookback(
    configured: Option<&Lookback>,
    kind: CursorKind,
    column: &str,
) -> Result<Option<Lookback>, QueryError> {
    match (configured, kind) {
        (Some(l), _) if l.is_zero() => Ok(None),
        (None, CursorKind::Time) => Ok(Some(Lookback::Time(DEFAULT_LOOKBACK_TIME))),
        (None, CursorKind::Number) => Ok(Some(Lookback::Amount(DEFAULT_LOOKBACK_AMOUNT.into()))),
        (None, CursorKind::Other) => {
            tracing::warn!(cursor_column = column, "the cursor column is neither a date/timestamp nor a number: no look-back (rows committed late with a cursor value below the highest one read are missed); cast it in the query, or set lookback = 0 to silence this");
            Ok(None)
        }
        (Some(l @ Lookback::Time(_)), CursorKind::Time)
        | (Some(l @ Lookback::Amount(_)), CursorKind::Number) => Ok(Some(l.clone())),
        (Some(Lookback::Amount(a)), CursorKind::Time) => Err(QueryError::Config(format!(
            "lookback = {a} is a number, but cursor column {column:?} is a date/timestamp: write a duration such as \"5s\""
        ))),
        (Some(Lookback::Time(_)), CursorKind::Number) => Err(QueryError::Config(format!(
            "lookback is a duration, but cursor column {column:?} is numeric: write an amount such as 100"
        ))),
        (Some(_), CursorKind::Other) => Err(QueryError::Config(format!(
            "cursor column {column:?} is neither a date/timestamp nor a number, so it has no look-back: set lookback = 0, or cast the column in the query"
        ))),
    }
}

/// A connected backend; every statement is bounded by the source's `query_timeout`.
struct Backend {
    engine: Engine,
    limit: Duration,
}

enum Engine {
    Postgres(postgres::PgBackend),
    Mysql(mysql::MyBackend),
}

/// `f` within `limit`: a server that stops answering without closing the connection is a
/// lost connection (transient), not a hang. Dropping the statement's future drops the
/// connection with it (MySQL: its socket is shut down, so the blocking read returns).
async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, QueryError>>,
) -> Result<T, QueryError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| QueryError::Timeout { what, after: limit })?
}

impl Backend {
    async fn connect(cfg: &QuerySourceConfig, at: &Endpoint) -> Result<Backend, QueryError> {
        // The handshake has its own `connect_timeout`; the probe's statements count too.
        let limit = cfg.query_timeout;
        let engine = bounded(limit + cfg.connect_timeout, "connecting", async {
            Ok(match cfg.protocol {
                QueryProtocol::Postgres => {
                    Engine::Postgres(postgres::PgBackend::connect(cfg, at).await?)
                }
                QueryProtocol::Mysql => Engine::Mysql(mysql::MyBackend::connect(cfg, at).await?),
            })
        })
        .await?;
        Ok(Backend { engine, limit })
    }
    fn columns(&self) -> &[String] {
        match &self.engine {
            Engine::Postgres(b) => b.columns(),
            Engine::Mysql(b) => b.columns(),
        }
    }
    fn order(&self) -> &[usize] {
        match &self.engine {
            Engine::Postgres(b) => b.order(),
            Engine::Mysql(b) => b.order(),
        }
    }
    fn cursor_kind(&self) -> CursorKind {
        match &self.engine {
            Engine::Postgres(b) => b.cursor_kind(),
            Engine::Mysql(b) => b.cursor_kind(),
        }
    }
    async fn fetch(&mut self, req: &Request<'_>) -> Result<Vec<FetchedRow>, QueryError> {
        bounded(self.limit, "running the query", async {
            match &mut self.engine {
                Engine::Postgres(b) => b.fetch(req).await,
                Engine::Mysql(b) => b.fetch(req).await,
            }
        })
        .await
    }
    /// `mark − lookback` as the text of a cursor value, computed by the database.
    async fn lower(&mut self, mark: &str, lookback: &Lookback) -> Result<String, QueryError> {
        bounded(
            self.limit,
            "computing the look-back window's lower bound",
            async {
                match &mut self.engine {
                    Engine::Postgres(b) => b.lower(mark, lookback).await,
                    Engine::Mysql(b) => b.lower(mark, lookback).await,
                }
            },
        )
        .await
    }
}

/// The result columns of the configured query as (name, type name), for
/// `logtide discover` and `logtide check`: the query is prepared (PostgreSQL) or run with
/// `LIMIT 0` (MySQL); no row is read.
pub async fn result_columns(
    cfg: &QuerySourceConfig,
    at: &Endpoint,
) -> Result<Vec<(String, String)>, QueryError> {
    match cfg.protocol {
        QueryProtocol::Postgres => postgres::result_columns(cfg, at).await,
        QueryProtocol::Mysql => mysql::result_columns(cfg, at).await,
    }
}

/// What the position stores besides its sequence number and the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct QueryState {
    /// Highest cursor value (text) read by the last complete run: the window's top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mark: Option<String>,
    /// Whether a run is unfinished (capped by `max_rows_per_run`, or interrupted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    running: bool,
    /// The unfinished run's lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    low: Option<String>,
    /// The unfinished run's last row read: (cursor, keys) texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<Vec<Option<String>>>,
    /// `{{last_sync_time}}` for the next run: start (Unix seconds) of the last completed run.
    #[serde(default)]
    sync: i64,
    /// Read from positions stored by an older logtide only: its last delivered row.
    #[serde(default, skip_serializing)]
    last: Option<Vec<Option<String>>>,
}

/// Most fingerprints the window keeps.
pub const MAX_SEEN: usize = 200_000;

/// The row versions delivered inside the look-back window: (cursor value text,
/// fingerprint of the event cursor), in the order they were read (ascending cursor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    entries: std::collections::VecDeque<(String, u64)>,
    set: std::collections::HashSet<u64>,
    warned: bool,
}

impl Seen {
    /// Records a delivered version; `false` when it was delivered before.
    fn insert(&mut self, cursor: &str, fp: u64) -> bool {
        if !self.set.insert(fp) {
            return false;
        }
        self.entries.push_back((cursor.to_owned(), fp));
        if self.entries.len() > MAX_SEEN {
            if !self.warned {
                self.warned = true;
                tracing::warn!(
                    max = MAX_SEEN,
                    "more row versions in the look-back window than logtide keeps: the oldest may be sent again (same cursors); lower lookback"
                );
            }
            if let Some((_, old)) = self.entries.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Drops the versions whose cursor value is certainly below `low` (they are never read
    /// again); keeps those it cannot compare.
    fn prune_below(&mut self, low: &str) {
        while let Some((c, fp)) = self.entries.front() {
            if cmp_cursor_text(c, low) != Some(std::cmp::Ordering::Less) {
                break;
            }
            self.set.remove(fp);
            self.entries.pop_front();
        }
    }

    /// Keeps only the versions at cursor value `at` (a window without look-back).
    fn keep_only(&mut self, at: &str) {
        self.entries.retain(|(c, _)| c == at);
        self.set = self.entries.iter().map(|(_, fp)| *fp).collect();
    }

    /// Compact text for the position: `cursor value -> fingerprints` runs, as JSON.
    fn encode(&self) -> String {
        let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
        for (c, fp) in &self.entries {
            match groups.last_mut() {
                Some((g, fps)) if *g == c.as_str() => fps.push(format!("{fp:016x}")),
                _ => groups.push((c, vec![format!("{fp:016x}")])),
            }
        }
        if groups.is_empty() {
            return String::new();
        }
        serde_json::to_string(&groups).unwrap_or_default()
    }

    fn decode(s: &str) -> Option<Seen> {
        let mut seen = Seen::default();
        if s.is_empty() {
            return Some(seen);
        }
        let groups: Vec<(String, Vec<String>)> = serde_json::from_str(s).ok()?;
        for (c, fps) in groups {
            for fp in fps {
                let fp = u64::from_str_radix(&fp, 16).ok()?;
                if seen.set.insert(fp) {
                    seen.entries.push_back((c.clone(), fp));
                }
            }
        }
        Some(seen)
    }
}

/// Compares two cursor value texts as the database would, where that is clear: decimal
/// numbers, and date/timestamp texts in UTC (`2024-01-01[ T]10:00:00[.5][Z|+00]`). `None`
/// otherwise. Only used to forget fingerprints below the window, so `None` merely keeps one.
fn cmp_cursor_text(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (decimal_key(a), decimal_key(b)) {
        return Some(x.cmp(&y));
    }
    Some(temporal_key(a)?.cmp(&temporal_key(b)?))
}

/// A sort key of a decimal number's text: (sign, integer digits count, digits) so that
/// byte order is numeric order.
fn decimal_key(s: &str) -> Option<(bool, Vec<u8>)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let zero = int.is_empty() && frac.is_empty();
    let mut k = Vec::with_capacity(int.len() + frac.len() + 9);
    k.extend_from_slice(format!("{:08}", int.len()).as_bytes());
    k.extend_from_slice(int.as_bytes());
    k.push(b'.');
    k.extend_from_slice(frac.as_bytes());
    if neg && !zero {
        // Larger magnitude sorts lower: complement every byte, and end above any longer one.
        for b in &mut k {
            *b = 0xFF - *b;
        }
        k.push(0xFF);
    }
    Some((!neg || zero, k))
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` (fraction padded to 9 digits) from a UTC date/timestamp text.
fn temporal_key(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let date_ok = b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit);
    if !date_ok {
        return None;
    }
    let rest = s.get(10..)?;
    let rest = ["+00:00", "+00", "Z"]
        .iter()
        .find_map(|z| rest.strip_suffix(z))
        .unwrap_or(rest);
    let (time, frac) = if rest.is_empty() {
        ("00:00:00", "")
    } else {
        let t = rest.strip_prefix([' ', 'T'])?;
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let ok = hms.len() == 8
            && hms.bytes().enumerate().all(|(i, c)| {
                if i == 2 || i == 5 {
                    c == b':'
                } else {
                    c.is_ascii_digit()
                }
            })
            && frac.len() <= 9
            && frac.bytes().all(|c| c.is_ascii_digit());
        if !ok {
            return None;
        }
        (hms, frac)
    };
    Some(format!("{} {time}.{frac:0<9}", &s[..10]))
}

/// Decoded position: sequence number, state and window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    seq: u64,
    q: QueryState,
    seen: Seen,
}

impl State {
    fn position(&self) -> Position {
        let json = serde_json::to_string(&self.q).unwrap_or_else(|_| "{}".into());
        Position::Query(QueryPosition {
            cursor: format!("{:020}:{}", self.seq, pct_encode(&json)),
            window: self.seen.encode(),
        })
    }

    fn parse(p: &QueryPosition) -> Option<State> {
        let (seq, json) = p.cursor.split_once(':')?;
        if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut q: QueryState = serde_json::from_str(&pct_decode(json)?).ok()?;
        if let Some(last) = q.last.take() {
            if q.mark.is_none() {
                // An older logtide's position: its last row's cursor value is the mark.
                q.mark = last.into_iter().next().flatten();
            }
        }
        Some(State {
            seq: seq.parse().ok()?,
            q,
            seen: Seen::decode(&p.window)?,
        })
    }
}

/// Percent-encodes everything but printable ASCII other than `"`, `\` and `%`, so the
/// cursor string needs no escaping wherever it is written (JSON, headers, logs).
fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'\\' | b'%') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses an operator-given query-mode position (the checkpoint cursor `logtide status`
/// shows); its window is empty, so rows of the window may be delivered again.
pub fn parse_position(s: &str) -> Result<Position, PositionParseError> {
    State::parse(&QueryPosition {
        cursor: s.to_owned(),
        window: String::new(),
    })
    .map(|st| st.position())
    .ok_or_else(|| {
        PositionParseError::new(
            s,
            "a query-mode checkpoint cursor like 00000000000000000042:{%22sync%22:0}",
        )
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs the query source, connecting to `at`, until cancelled or failed.
pub async fn run(
    cfg: &QuerySourceConfig,
    at: &Endpoint,
    info: Arc<SourceInfo>,
    ctx: SourceContext,
) -> Result<(), QueryError> {
    match run_inner(cfg, at, info, &ctx).await {
        // A connection error caused by the stop (an interrupted query) is the stop; a
        // permanent error keeps its error (the supervision rule in `crate::service`).
        Err(e) if ctx.cancel.is_cancelled() && e.class() == ErrorClass::Transient => Ok(()),
        r => r,
    }
}

/// What a run needs besides its state.
struct Runner<'a> {
    cfg: &'a QuerySourceConfig,
    table: Arc<TableSchema>,
    ident: RowIdentity,
    /// Cursor column then key columns, indices into the result columns.
    order: Vec<usize>,
    lookback: Option<Lookback>,
}

async fn run_inner(
    cfg: &QuerySourceConfig,
    at: &Endpoint,
    info: Arc<SourceInfo>,
    ctx: &SourceContext,
) -> Result<(), QueryError> {
    let mut state = match &ctx.resume_from {
        None => State::default(),
        Some(Position::Query(q)) => {
            State::parse(q).ok_or_else(|| QueryError::WrongPosition(q.cursor.clone()))?
        }
        Some(p) => return Err(QueryError::WrongPosition(p.to_string())),
    };
    let (schema, table) = cfg
        .table
        .split_once('.')
        .ok_or_else(|| QueryError::Config(format!("table {:?} must be schema.name", cfg.table)))?;
    let mut backend = tokio::select! {
        _ = ctx.cancel.cancelled() => return Ok(()),
        r = Backend::connect(cfg, at) => r?,
    };
    let lookback = effective_lookback(
        cfg.lookback.as_ref(),
        backend.cursor_kind(),
        &cfg.cursor_column,
    )?;
    let schema_arc = Arc::new(TableSchema {
        source: info,
        db: cfg.database.clone(),
        schema: schema.to_owned(),
        name: table.to_owned(),
        columns: backend.columns().to_vec(),
        key: backend.order()[1..].to_vec(),
        encoded: Default::default(),
    });
    let runner = Runner {
        cfg,
        ident: RowIdentity::new(&cfg.table, &schema_arc.columns),
        order: backend.order().to_vec(),
        table: schema_arc,
        lookback,
    };
    tracing::info!(source = %runner.table.source.name, table = %cfg.table, interval_ms = cfg.interval.as_millis() as u64, lookback = ?runner.lookback, resume = ?ctx.resume_from.as_ref().map(ToString::to_string), "query source ready");
    ctx.report.streaming();
    let mut next_due = Instant::now();
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(next_due.into()) => {}
        }
        let started = Instant::now();
        let started_unix = unix_now();
        let checkpointed_seq = match &*ctx.checkpointed.borrow() {
            Some(Position::Query(q)) => State::parse(q).map(|s| s.seq),
            _ => None,
        };
        tracing::debug!(
            checkpointed_seq = checkpointed_seq.unwrap_or(0),
            sync = state.q.sync,
            mark = ?state.q.mark,
            window = state.seen.entries.len(),
            "query run starting"
        );
        let (rows, complete) = one_run(&runner, &mut backend, &mut state, ctx).await?;
        if ctx.cancel.is_cancelled() {
            return Ok(());
        }
        if complete {
            // The run read everything there was: its start is the next `{{last_sync_time}}`.
            state.seq += 1;
            state.q.sync = started_unix;
            send(ctx, SourceMessage::Boundary(state.position())).await?;
        }
        tracing::debug!(
            rows,
            complete,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "query run finished"
        );
        next_due += cfg.interval;
        let now = Instant::now();
        let mut skipped = 0u64;
        while next_due <= now {
            next_due += cfg.interval;
            skipped += 1;
        }
        if skipped > 0 {
            tracing::warn!(
                source = %runner.table.source.name,
                skipped,
                run_ms = started.elapsed().as_millis() as u64,
                interval_ms = cfg.interval.as_millis() as u64,
                "query run took longer than the interval: skipped the overlapping run(s)"
            );
        }
    }
}

async fn send(ctx: &SourceContext, m: SourceMessage) -> Result<(), QueryError> {
    tokio::select! {
        _ = ctx.cancel.cancelled() => Ok(()),
        r = ctx.tx.send(m) => r.map_err(|_| QueryError::ChannelClosed),
    }
}

/// Forgets the window's versions that no later read can return, given that every later
/// read starts at or above cursor value `from` (minus the look-back).
async fn prune(
    runner: &Runner<'_>,
    backend: &mut Backend,
    seen: &mut Seen,
    from: &str,
) -> Result<(), QueryError> {
    match &runner.lookback {
        Some(l) => {
            let low = backend.lower(from, l).await?;
            seen.prune_below(&low);
        }
        None => seen.keep_only(from),
    }
    Ok(())
}

/// One run: pages through the rows from the window's bottom (or continues an unfinished
/// run). Returns the rows read and whether the run reached the end (not capped by
/// `max_rows_per_run`).
async fn one_run(
    runner: &Runner<'_>,
    backend: &mut Backend,
    state: &mut State,
    ctx: &SourceContext,
) -> Result<(usize, bool), QueryError> {
    let cfg = runner.cfg;
    if !state.q.running {
        // A new window: from `mark − lookback` (everything the first time).
        state.q.low = match (&state.q.mark, &runner.lookback) {
            (Some(m), Some(l)) => Some(backend.lower(m, l).await?),
            (Some(m), None) => Some(m.clone()),
            (None, _) => None,
        };
        state.q.page = None;
        state.q.running = true;
        // Versions below the new window are never read again.
        match (&state.q.mark, &state.q.low, &runner.lookback) {
            (Some(_), Some(low), Some(_)) => state.seen.prune_below(low),
            (Some(m), _, None) => state.seen.keep_only(m),
            _ => {}
        }
    }
    let low = state.q.low.clone();
    let cursor_text: Option<String> = low.clone().or_else(|| cfg.initial_cursor.clone());
    let mut read = 0usize;
    let mut sent = 0usize;
    loop {
        if ctx.cancel.is_cancelled() {
            return Ok((read, false));
        }
        let want = cfg.batch_size.min(cfg.max_rows_per_run - read);
        // `{{cursor}}` stays the run's starting value: the `> last` filter pages.
        let req = Request {
            cursor: cursor_text.as_deref(),
            sync: state.q.sync,
            low: low.as_deref(),
            last: state.q.page.as_deref(),
            limit: want,
        };
        let rows = tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok((read, false)),
            r = backend.fetch(&req) => r?,
        };
        let n = rows.len();
        if n == 0 {
            finish_run(state);
            return Ok((read, true));
        }
        for row in rows {
            let cursor_value = row.order.first().cloned().flatten().unwrap_or_default();
            let id = runner.ident.row(&runner.order, 0, &row.values);
            state.q.page = Some(row.order);
            if !state
                .seen
                .insert(&cursor_value, crate::identity::fingerprint(&id))
            {
                continue;
            }
            sent += 1;
            let ev = ChangeEvent {
                op: Op::Read,
                table: runner.table.clone(),
                before: None,
                after: Some(row.values),
                position: Position::Row(RowPosition { at: None, row: id }),
                txid: None,
                commit_ts_ms: None,
            };
            send(ctx, SourceMessage::Change(ev)).await?;
        }
        read += n;
        // Versions below the window of the last row read are never read again.
        if let Some(top) = state
            .q
            .page
            .as_ref()
            .and_then(|p| p.first().cloned().flatten())
        {
            prune(runner, backend, &mut state.seen, &top).await?;
        }
        if n < want {
            finish_run(state);
            state.seq += 1;
            send(ctx, SourceMessage::Boundary(state.position())).await?;
            tracing::debug!(read, sent, "query run read the window");
            return Ok((read, true));
        }
        state.seq += 1;
        send(ctx, SourceMessage::Boundary(state.position())).await?;
        if read >= cfg.max_rows_per_run {
            tracing::info!(
                rows = read,
                "query run reached max_rows_per_run; the rest follows in the next run"
            );
            return Ok((read, false));
        }
    }
}

/// Ends a run that read everything: the last row read is the new mark.
fn finish_run(state: &mut State) {
    if let Some(top) = state
        .q
        .page
        .take()
        .and_then(|p| p.into_iter().next().flatten())
    {
        state.q.mark = Some(top);
    }
    state.q.running = false;
    state.q.low = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    fn state(seq: u64, mark: &str, seen: &[(&str, u64)]) -> State {
        let mut st = State {
            seq,
            q: QueryState {
                mark: Some(mark.into()),
                sync: 1_700_000_000,
                ..QueryState::default()
            },
            seen: Seen::default(),
        };
        for (c, fp) in seen {
            st.seen.insert(c, *fp);
        }
        st
    }

    #[test]
    fn position_round_trips_and_sorts_by_sequence() {
        let a = state(9, "it's \\ \"q\" 100% é", &[("9", 1), ("9", 2), ("10", 3)]);
        let b = state(10, "10", &[]);
        let (pa, pb) = (a.position(), b.position());
        assert!(pa < pb);
        assert!(pa.cursor() < pb.cursor());
        let Position::Query(qa) = &pa else { panic!() };
        assert_eq!(State::parse(qa), Some(a));
        // The window is stored with the checkpoint, not shown in its cursor.
        assert!(!pa.cursor().contains("0000000000000003"), "{}", pa.cursor());
        assert!(!qa.window.is_empty());
        let Position::Query(qb) = &pb else { panic!() };
        assert_eq!(State::parse(qb), Some(b));
        assert!(parse_position(&pa.cursor()).is_ok());
        assert!(parse_position("12:{}").is_err());
        assert!(!pa.cursor().contains(['"', '\\', ' ']), "{}", pa.cursor());
    }

    #[test]
    fn an_older_position_resumes_from_its_last_row() {
        let old = QueryPosition {
            cursor: format!(
                "{:020}:{}",
                41,
                pct_encode(r#"{"last":["2024-01-01 10:00:00+00","7"],"sync":5}"#)
            ),
            window: String::new(),
        };
        let st = State::parse(&old).expect("parse");
        assert_eq!(st.seq, 41);
        assert_eq!(st.q.mark.as_deref(), Some("2024-01-01 10:00:00+00"));
        assert_eq!(st.q.sync, 5);
        assert!(!st.q.running);
    }

    #[test]
    fn the_window_forgets_what_lies_below_it_and_never_repeats() {
        let mut s = Seen::default();
        assert!(s.insert("1", 10));
        assert!(!s.insert("1", 10), "a version is delivered once");
        assert!(s.insert("2", 20));
        assert!(s.insert("5", 50));
        s.prune_below("2");
        assert_eq!(s.entries.len(), 2);
        assert!(s.insert("1", 10), "forgotten below the window");
        s.keep_only("5");
        assert_eq!(s.entries.iter().map(|e| e.1).collect::<Vec<_>>(), [50]);
        // Text it cannot compare is kept.
        let mut t = Seen::default();
        t.insert("abc", 1);
        t.prune_below("zzz");
        assert_eq!(t.entries.len(), 1);
        assert_eq!(Seen::decode(&s.encode()), Some(s));
    }

    #[test]
    fn cursor_texts_compare_like_the_database() {
        let lt = |a: &str, b: &str| {
            assert_eq!(cmp_cursor_text(a, b), Some(Ordering::Less), "{a} < {b}");
            assert_eq!(cmp_cursor_text(b, a), Some(Ordering::Greater), "{b} > {a}");
        };
        lt("9", "10");
        lt("-10", "-9");
        lt("-1", "0");
        lt("-0.5", "0.25");
        lt("1.5", "1.50001");
        assert_eq!(cmp_cursor_text("1.50", "1.5"), Some(Ordering::Equal));
        assert_eq!(cmp_cursor_text("-0", "0"), Some(Ordering::Equal));
        lt("2024-01-01 10:00:00+00", "2024-01-01 10:00:00.5+00");
        lt("2024-01-01 10:00:00.5", "2024-01-01 10:00:01");
        lt("2024-01-01", "2024-01-01 00:00:00.000001");
        lt("2024-01-01T23:59:59Z", "2024-01-02");
        assert_eq!(
            cmp_cursor_text("2024-01-01 10:00:00.500000", "2024-01-01T10:00:00.5Z"),
            Some(Ordering::Equal)
        );
        assert_eq!(cmp_cursor_text("abc", "abd"), None);
        assert_eq!(
            cmp_cursor_text("2024-01-01 10:00:00+02", "2024-01-01"),
            None
        );
    }

    #[test]
    fn lookback_defaults_by_cursor_type_and_must_fit_it() {
        let five = Lookback::Time(std::time::Duration::from_secs(5));
        assert_eq!(
            effective_lookback(None, CursorKind::Time, "c").expect("ok"),
            Some(five.clone())
        );
        assert_eq!(
            effective_lookback(None, CursorKind::Number, "c").expect("ok"),
            Some(Lookback::Amount("100".into()))
        );
        assert_eq!(
            effective_lookback(None, CursorKind::Other, "c").expect("ok"),
            None
        );
        let zero = Lookback::Amount("0".into());
        assert_eq!(
            effective_lookback(Some(&zero), CursorKind::Time, "c").expect("ok"),
            None
        );
        assert!(effective_lookback(Some(&five), CursorKind::Number, "c").is_err());
        assert!(
            effective_lookback(Some(&Lookback::Amount("3".into())), CursorKind::Time, "c").is_err()
        );
        assert!(effective_lookback(Some(&five), CursorKind::Other, "c").is_err());
    }
}
