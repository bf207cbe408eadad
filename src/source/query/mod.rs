//! Query mode (`kind = "query"`): scheduled incremental SELECTs for databases whose change
//! log logtide cannot read, over the PostgreSQL wire protocol (PostgreSQL, Redshift;
//! [`postgres`]) or the MySQL/MariaDB one ([`mysql`]), picked by `protocol`.
//!
//! This module owns what both protocols share: the schedule, the cursor and tie logic, the
//! position and the checkpoint hand-over. A backend owns its connection, binds the values and
//! decodes the rows; it answers one question, "the next `limit` rows after `last`"
//! ([`Request`] → [`FetchedRow`]s).
//!
//! Every `interval` a *run* reads the rows past the stored cursor:
//!
//! * The configured query may use `{{cursor}}` (the last delivered cursor value, or
//!   `initial_cursor` before anything was delivered) and `{{last_sync_time}}` (Unix seconds
//!   of the start of the previous successful run, 0 the first time). Neither is ever spliced
//!   into the SQL text: PostgreSQL binds them as parameters, MySQL as session variables (see
//!   [`mysql`] for why and how).
//! * logtide wraps the query as
//!   `SELECT <cols> FROM (<query>) q WHERE (cursor, keys) > (last) ORDER BY cursor, keys
//!   LIMIT batch_size` and pages through it. The `(cursor, keys) > last` filter means that a
//!   `>=` condition on a timestamp (recommended: it never misses rows committed late within
//!   the same timestamp) does not deliver the rows at the boundary value twice, and a batch
//!   that ends inside a run of equal cursor values continues exactly after its last row.
//!   With empty `key_columns` the cursor column alone orders the rows and must be unique.
//!   Rows whose cursor is NULL are never read.
//! * A run reads at most `max_rows_per_run` rows; the rest waits for the next run (which then
//!   binds the same `{{last_sync_time}}`, since the capped run did not finish).
//! * Runs start every `interval`; when a run is still going when the next is due, that run
//!   is skipped and logged.
//! * The session time zone is UTC.
//!
//! Every row is an event with `op = "r"`: query mode sees the current rows only, never
//! deletes (nor the intermediate states of a row updated twice between runs).
//!
//! Position: `QueryPosition::cursor` is `<20-digit sequence>:<JSON state>`; the sequence
//! grows by one per delivered row and per completed run, so the string sorts like the
//! position; the JSON holds the last delivered (cursor, keys) in their text form and the
//! `{{last_sync_time}}` value of the next run. After each batch the source sends a
//! `Boundary`, so the stored cursor advances only when the sinks accepted the batch.

pub mod mysql;
pub mod postgres;

use crate::config::{QueryProtocol, QuerySourceConfig};
use crate::event::{ChangeEvent, Op, Row, SourceInfo, TableSchema};
use crate::position::{Position, PositionParseError, QueryPosition};
use crate::source::postgres::tls::TlsError;
use crate::source::postgres::types::TypeError;
use crate::source::{ErrorClass, SourceContext, SourceMessage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
            QueryError::ChannelClosed | QueryError::WorkerLost => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

const CURSOR_PH: &str = "{{cursor}}";
const SYNC_PH: &str = "{{last_sync_time}}";

/// What a run asks a backend for: the next page.
pub(crate) struct Request<'a> {
    /// Bound to `{{cursor}}`: the run's starting cursor text (`None`: SQL NULL).
    pub cursor: Option<&'a str>,
    /// Bound to `{{last_sync_time}}`.
    pub sync: i64,
    /// The last delivered row's (cursor, keys) texts: return only rows after it.
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

/// A connected backend.
enum Backend {
    Postgres(postgres::PgBackend),
    Mysql(mysql::MyBackend),
}

impl Backend {
    async fn connect(cfg: &QuerySourceConfig) -> Result<Backend, QueryError> {
        Ok(match cfg.protocol {
            QueryProtocol::Postgres => Backend::Postgres(postgres::PgBackend::connect(cfg).await?),
            QueryProtocol::Mysql => Backend::Mysql(mysql::MyBackend::connect(cfg).await?),
        })
    }
    fn columns(&self) -> &[String] {
        match self {
            Backend::Postgres(b) => b.columns(),
            Backend::Mysql(b) => b.columns(),
        }
    }
    fn order(&self) -> &[usize] {
        match self {
            Backend::Postgres(b) => b.order(),
            Backend::Mysql(b) => b.order(),
        }
    }
    async fn fetch(&mut self, req: &Request<'_>) -> Result<Vec<FetchedRow>, QueryError> {
        match self {
            Backend::Postgres(b) => b.fetch(req).await,
            Backend::Mysql(b) => b.fetch(req).await,
        }
    }
}

/// The result columns of the configured query as (name, type name), for
/// `logtide discover` and `logtide check`: the query is prepared (PostgreSQL) or run with
/// `LIMIT 0` (MySQL); no row is read.
pub async fn result_columns(cfg: &QuerySourceConfig) -> Result<Vec<(String, String)>, QueryError> {
    match cfg.protocol {
        QueryProtocol::Postgres => postgres::result_columns(cfg).await,
        QueryProtocol::Mysql => mysql::result_columns(cfg).await,
    }
}

/// What the position stores besides its sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct QueryState {
    /// Text of the last delivered row's cursor value followed by its key values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<Vec<Option<String>>>,
    /// `{{last_sync_time}}` for the next run: start (Unix seconds) of the last completed run.
    #[serde(default)]
    sync: i64,
}

/// Decoded position: sequence number and state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    seq: u64,
    q: QueryState,
}

impl State {
    fn position(&self) -> Position {
        let json = serde_json::to_string(&self.q).unwrap_or_else(|_| "{}".into());
        Position::Query(QueryPosition {
            cursor: format!("{:020}:{}", self.seq, pct_encode(&json)),
        })
    }

    fn parse(s: &str) -> Option<State> {
        let (seq, json) = s.split_once(':')?;
        if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(State {
            seq: seq.parse().ok()?,
            q: serde_json::from_str(&pct_decode(json)?).ok()?,
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

/// Parses an operator-given query-mode position (the cursor string of an event).
pub fn parse_position(s: &str) -> Result<Position, PositionParseError> {
    State::parse(s).map(|st| st.position()).ok_or_else(|| {
        PositionParseError::new(
            s,
            "a query-mode cursor like 00000000000000000042:{%22sync%22:0}",
        )
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs the query source until cancelled or failed.
pub async fn run(
    cfg: &QuerySourceConfig,
    info: Arc<SourceInfo>,
    ctx: SourceContext,
) -> Result<(), QueryError> {
    match run_inner(cfg, info, &ctx).await {
        Err(_) if ctx.cancel.is_cancelled() => Ok(()),
        r => r,
    }
}

async fn run_inner(
    cfg: &QuerySourceConfig,
    info: Arc<SourceInfo>,
    ctx: &SourceContext,
) -> Result<(), QueryError> {
    let mut state = match &ctx.resume_from {
        None => State::default(),
        Some(Position::Query(q)) => {
            State::parse(&q.cursor).ok_or_else(|| QueryError::WrongPosition(q.cursor.clone()))?
        }
        Some(p) => return Err(QueryError::WrongPosition(p.to_string())),
    };
    let (schema, table) = cfg
        .table
        .split_once('.')
        .ok_or_else(|| QueryError::Config(format!("table {:?} must be schema.name", cfg.table)))?;
    let mut backend = tokio::select! {
        _ = ctx.cancel.cancelled() => return Ok(()),
        r = Backend::connect(cfg) => r?,
    };
    let schema_arc = Arc::new(TableSchema {
        source: info,
        db: cfg.database.clone(),
        schema: schema.to_owned(),
        name: table.to_owned(),
        columns: backend.columns().to_vec(),
        key: backend.order()[1..].to_vec(),
    });
    tracing::info!(source = %schema_arc.source.name, table = %cfg.table, interval_ms = cfg.interval.as_millis() as u64, resume = ?ctx.resume_from.as_ref().map(ToString::to_string), "query source ready");
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
            Some(Position::Query(q)) => State::parse(&q.cursor).map(|s| s.seq),
            _ => None,
        };
        tracing::debug!(
            checkpointed_seq = checkpointed_seq.unwrap_or(0),
            sync = state.q.sync,
            "query run starting"
        );
        let (rows, complete) = one_run(cfg, &mut backend, &schema_arc, &mut state, ctx).await?;
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
                source = %schema_arc.source.name,
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

/// One run: pages through the rows past `state`. Returns the rows read and whether the run
/// reached the end (not capped by `max_rows_per_run`).
async fn one_run(
    cfg: &QuerySourceConfig,
    backend: &mut Backend,
    table: &Arc<TableSchema>,
    state: &mut State,
    ctx: &SourceContext,
) -> Result<(usize, bool), QueryError> {
    let cursor_text: Option<String> = match &state.q.last {
        Some(l) => l.first().cloned().flatten(),
        None => cfg.initial_cursor.clone(),
    };
    let mut read = 0usize;
    loop {
        if ctx.cancel.is_cancelled() {
            return Ok((read, false));
        }
        let want = cfg.batch_size.min(cfg.max_rows_per_run - read);
        // `{{cursor}}` stays the run's starting value: the `> last` filter pages.
        let req = Request {
            cursor: cursor_text.as_deref(),
            sync: state.q.sync,
            last: state.q.last.as_deref(),
            limit: want,
        };
        let rows = tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok((read, false)),
            r = backend.fetch(&req) => r?,
        };
        let n = rows.len();
        if n == 0 {
            return Ok((read, true));
        }
        for row in rows {
            state.seq += 1;
            state.q.last = Some(row.order);
            let ev = ChangeEvent {
                op: Op::Read,
                table: table.clone(),
                before: None,
                after: Some(row.values),
                position: state.position(),
                txid: None,
                commit_ts_ms: None,
            };
            send(ctx, SourceMessage::Change(ev)).await?;
        }
        read += n;
        send(ctx, SourceMessage::Boundary(state.position())).await?;
        if n < want {
            return Ok((read, true));
        }
        if read >= cfg.max_rows_per_run {
            tracing::info!(
                rows = read,
                "query run reached max_rows_per_run; the rest follows in the next run"
            );
            return Ok((read, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_and_sorts_by_sequence() {
        let a = State {
            seq: 9,
            q: QueryState {
                last: Some(vec![Some("9".into()), Some("it's \\ \"q\" 100% é".into())]),
                sync: 0,
            },
        };
        let b = State {
            seq: 10,
            q: QueryState {
                last: Some(vec![Some("10".into()), None]),
                sync: 1_700_000_000,
            },
        };
        let (pa, pb) = (a.position(), b.position());
        assert!(pa < pb);
        assert!(pa.cursor() < pb.cursor());
        let Position::Query(q) = &pb else { panic!() };
        assert_eq!(State::parse(&q.cursor), Some(b));
        assert_eq!(parse_position(&pa.cursor()).expect("parse"), pa);
        assert!(parse_position("12:{}").is_err());
        assert!(!pa.cursor().contains(['"', '\\', ' ']), "{}", pa.cursor());
    }
}
