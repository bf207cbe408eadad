//! Query mode (`kind = "query"`): scheduled incremental SELECTs for databases whose change
//! log logtide cannot read, over the PostgreSQL wire protocol (PostgreSQL, Redshift).
//!
//! Every `interval` a *run* reads the rows past the stored cursor:
//!
//! * The configured query may use `{{cursor}}` (the last delivered cursor value, or
//!   `initial_cursor` before anything was delivered) and `{{last_sync_time}}` (Unix seconds
//!   of the start of the previous successful run, 0 the first time). Both are replaced by
//!   bind parameters (`$n::text::<type>`, the type PostgreSQL infers for the placeholder),
//!   never spliced into the SQL text.
//! * logtide wraps the query as
//!   `SELECT <cols>::text FROM (<query>) q WHERE (cursor, keys) > (last) ORDER BY cursor, keys
//!   LIMIT batch_size` and pages through it. The `(cursor, keys) > last` filter means that a
//!   `>=` condition on a timestamp (recommended: it never misses rows committed late within
//!   the same timestamp) does not deliver the rows at the boundary value twice, and a batch
//!   that ends inside a run of equal cursor values continues exactly after its last row.
//!   With empty `key_columns` the cursor column alone orders the rows and must be unique.
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

use crate::config::{QuerySourceConfig, SslMode};
use crate::event::{ChangeEvent, Op, Row, SourceInfo, TableSchema};
use crate::position::{Position, PositionParseError, QueryPosition};
use crate::source::postgres::tls::{make_tls_connect, TlsError};
use crate::source::postgres::types::{decode_text, TypeCache, TypeError};
use crate::source::{ErrorClass, SourceContext, SourceMessage};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio_postgres::types::Type;

const CURSOR_PH: &str = "{{cursor}}";
const SYNC_PH: &str = "{{last_sync_time}}";

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
    #[error("the pipeline closed the source channel")]
    ChannelClosed,
}

impl QueryError {
    pub fn class(&self) -> ErrorClass {
        match self {
            QueryError::Connect(TlsError::Connect { .. }) => ErrorClass::Transient,
            QueryError::Sql { source, .. } => {
                if source.is_closed() {
                    return ErrorClass::Transient;
                }
                match source.code() {
                    None => ErrorClass::Transient,
                    Some(c) => {
                        let c = c.code();
                        // connection exceptions, operator intervention, insufficient resources
                        if c.starts_with("08") || c.starts_with("57") || c.starts_with("53") {
                            ErrorClass::Transient
                        } else {
                            ErrorClass::Permanent
                        }
                    }
                }
            }
            QueryError::ChannelClosed => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> QueryError {
    move |source| QueryError::Sql { what, source }
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

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn type_sql(t: &Type) -> String {
    format!("{}.{}", quote_ident(t.schema()), quote_ident(t.name()))
}

/// Replaces the placeholders by `$n` (probe) or by `f(n)` in order of first appearance.
/// Returns the text and (cursor index, sync index).
fn substitute(query: &str, mut f: impl FnMut(usize, bool) -> String) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    let c_idx = query.find(CURSOR_PH);
    let s_idx = query.find(SYNC_PH);
    let (ci, si) = match (c_idx, s_idx) {
        (Some(c), Some(s)) if s < c => (2, 1),
        (Some(_), Some(_)) => (1, 2),
        (Some(_), None) => (1, 0),
        (None, Some(_)) => (0, 1),
        (None, None) => (0, 0),
    };
    loop {
        let c = rest.find(CURSOR_PH);
        let s = rest.find(SYNC_PH);
        let (at, len, is_cursor) = match (c, s) {
            (Some(c), Some(s)) if c < s => (c, CURSOR_PH.len(), true),
            (_, Some(s)) => (s, SYNC_PH.len(), false),
            (Some(c), None) => (c, CURSOR_PH.len(), true),
            (None, None) => break,
        };
        out.push_str(&rest[..at]);
        out.push_str(&f(if is_cursor { ci } else { si }, is_cursor));
        rest = &rest[at + len..];
    }
    out.push_str(rest);
    out
}

/// The SQL of one source, built once per connection.
struct Plan {
    /// Without the `> last` filter (nothing delivered yet).
    first: tokio_postgres::Statement,
    /// With it.
    next: tokio_postgres::Statement,
    uses_cursor: bool,
    uses_sync: bool,
    /// Result columns: names and type OIDs.
    columns: Vec<String>,
    oids: Vec<u32>,
    /// Index of the cursor column followed by the key columns, into `columns`.
    order: Vec<usize>,
}

async fn plan(
    client: &tokio_postgres::Client,
    cfg: &QuerySourceConfig,
) -> Result<Plan, QueryError> {
    let uses_cursor = cfg.query.contains(CURSOR_PH);
    let uses_sync = cfg.query.contains(SYNC_PH);
    let probe_sql = substitute(&cfg.query, |n, _| format!("${n}"));
    let probe = client
        .prepare(&probe_sql)
        .await
        .map_err(sql("preparing the configured query"))?;
    let params = probe.params().to_vec();
    let cols: Vec<(String, Type)> = probe
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().clone()))
        .collect();
    for (i, (n, _)) in cols.iter().enumerate() {
        if cols[..i].iter().any(|(m, _)| m == n) {
            return Err(QueryError::Config(format!(
                "the query returns column {n:?} twice: give every result column a distinct name"
            )));
        }
    }
    let find = |name: &str, what: &str| {
        cols.iter().position(|(n, _)| n == name).ok_or_else(|| {
            QueryError::Config(format!(
                "{what} {name:?} is not a column of the query result (columns: {})",
                cols.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    };
    let mut order = vec![find(&cfg.cursor_column, "cursor_column")?];
    for k in &cfg.key_columns {
        order.push(find(k, "key column")?);
    }
    let inner = substitute(&cfg.query, |n, _| {
        let ty = params
            .get(n - 1)
            .map(type_sql)
            .unwrap_or_else(|| "text".into());
        format!("(${n}::text::{ty})")
    });
    let nparams = params.len();
    let select: Vec<String> = cols
        .iter()
        .map(|(n, _)| format!("q.{}::text", quote_ident(n)))
        .collect();
    let order_by: Vec<String> = order
        .iter()
        .map(|&i| format!("q.{}", quote_ident(&cols[i].0)))
        .collect();
    // `(a, b, c) > (x, y, z)` spelled out (Redshift has no row comparison), with a leading
    // `a >= x` an index on the cursor can use.
    let last: Vec<String> = order
        .iter()
        .enumerate()
        .map(|(j, &i)| format!("(${}::text::{})", nparams + 1 + j, type_sql(&cols[i].1)))
        .collect();
    let mut ors = Vec::new();
    for j in 0..order_by.len() {
        let mut ands: Vec<String> = (0..j)
            .map(|m| format!("{} = {}", order_by[m], last[m]))
            .collect();
        ands.push(format!("{} > {}", order_by[j], last[j]));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    let limit = format!("${}::text::int8", nparams + 1 + order.len());
    let limit_first = format!("${}::text::int8", nparams + 1);
    let base = format!("SELECT {} FROM ({}\n) q", select.join(", "), inner);
    let first_sql = format!(
        "{base} ORDER BY {} LIMIT {limit_first}",
        order_by.join(", ")
    );
    let next_sql = format!(
        "{base} WHERE {} >= {} AND ({}) ORDER BY {} LIMIT {limit}",
        order_by[0],
        last[0],
        ors.join(" OR "),
        order_by.join(", ")
    );
    tracing::debug!(sql = %next_sql, "query source statement");
    let first = client
        .prepare(&first_sql)
        .await
        .map_err(sql("preparing the wrapped query"))?;
    let next = client
        .prepare(&next_sql)
        .await
        .map_err(sql("preparing the wrapped query"))?;
    Ok(Plan {
        first,
        next,
        uses_cursor,
        uses_sync,
        columns: cols.iter().map(|(n, _)| n.clone()).collect(),
        oids: cols.iter().map(|(_, t)| t.oid()).collect(),
        order,
    })
}

async fn connect(
    cfg: &QuerySourceConfig,
) -> Result<
    (
        tokio_postgres::Client,
        crate::source::postgres::tls::SqlConnection,
    ),
    QueryError,
> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&cfg.host)
        .port(cfg.port)
        .user(&cfg.user)
        .dbname(&cfg.database)
        .application_name("logtide")
        .connect_timeout(cfg.connect_timeout)
        .ssl_mode(match cfg.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
    if let Some(pw) = cfg
        .password()
        .map_err(|e| QueryError::Config(e.to_string()))?
    {
        pg.password(pw.expose());
    }
    let tls = make_tls_connect(cfg.sslmode, None)
        .map_err(QueryError::Connect)?
        .with_server_name(cfg.tls_server_name.clone());
    pg.connect(tls).await.map_err(|source| {
        QueryError::Connect(TlsError::Connect {
            host: cfg.host.clone(),
            port: cfg.port,
            user: cfg.user.clone(),
            mode: crate::source::postgres::tls::mode_name(cfg.sslmode),
            source,
        })
    })
}

/// The result columns of the configured query as (name, type name), for
/// `logtide discover`: prepares the query (nothing is executed).
pub async fn result_columns(cfg: &QuerySourceConfig) -> Result<Vec<(String, String)>, QueryError> {
    let (client, conn) = connect(cfg).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "query source connection ended");
        }
    });
    let _abort = AbortOnDrop(driver);
    let plan = plan(&client, cfg).await?;
    Ok(plan
        .columns
        .into_iter()
        .zip(plan.oids)
        .map(|(n, oid)| {
            let ty = Type::from_oid(oid)
                .map(|t| t.name().to_owned())
                .unwrap_or_else(|| format!("oid {oid}"));
            (n, ty)
        })
        .collect())
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
    let (client, conn) = tokio::select! {
        _ = ctx.cancel.cancelled() => return Ok(()),
        r = connect(cfg) => r?,
    };
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "query source connection ended");
        }
    });
    let _abort = AbortOnDrop(driver);
    client
        .batch_execute("SET TIME ZONE 'UTC'")
        .await
        .map_err(sql("setting the session time zone"))?;
    let plan = plan(&client, cfg).await?;
    let mut types = TypeCache::new();
    types
        .resolve(&client, &plan.oids)
        .await
        .map_err(QueryError::Types)?;
    let decoders: Vec<_> = plan.oids.iter().map(|o| types.get(*o)).collect();
    let key_idx: Vec<usize> = plan.order[1..].to_vec();
    let schema_arc = Arc::new(TableSchema {
        source: info,
        db: cfg.database.clone(),
        schema: schema.to_owned(),
        name: table.to_owned(),
        columns: plan.columns.clone(),
        key: key_idx,
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
        let (rows, complete) =
            one_run(cfg, &client, &plan, &decoders, &schema_arc, &mut state, ctx).await?;
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
    client: &tokio_postgres::Client,
    plan: &Plan,
    decoders: &[crate::source::postgres::types::PgType],
    table: &Arc<TableSchema>,
    state: &mut State,
    ctx: &SourceContext,
) -> Result<(usize, bool), QueryError> {
    let sync_text = state.q.sync.to_string();
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
        let limit = want.to_string();
        let mut params: Vec<Option<String>> = Vec::new();
        // Inner placeholders in their parameter order.
        let c_first = match (cfg.query.find(CURSOR_PH), cfg.query.find(SYNC_PH)) {
            (Some(c), Some(s)) => c < s,
            _ => true,
        };
        let cur = || cursor_text.clone();
        let syn = || Some(sync_text.clone());
        match (plan.uses_cursor, plan.uses_sync, c_first) {
            (true, true, true) => params.extend([cur(), syn()]),
            (true, true, false) => params.extend([syn(), cur()]),
            (true, false, _) => params.push(cur()),
            (false, true, _) => params.push(syn()),
            (false, false, _) => {}
        }
        let stmt = match &state.q.last {
            Some(l) => {
                params.extend(l.iter().cloned());
                &plan.next
            }
            None => &plan.first,
        };
        params.push(Some(limit));
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok((read, false)),
            r = client.query(stmt, &refs) => r.map_err(sql("running the query"))?,
        };
        let n = rows.len();
        if n == 0 {
            return Ok((read, true));
        }
        for row in &rows {
            let mut texts: Vec<Option<&str>> = Vec::with_capacity(decoders.len());
            for i in 0..decoders.len() {
                texts.push(row.try_get(i).map_err(sql("reading a result row"))?);
            }
            let mut after: Row = Vec::with_capacity(texts.len());
            for (i, t) in texts.iter().enumerate() {
                let v = match t {
                    None => Value::Null,
                    Some(s) => decode_text(&decoders[i], s.as_bytes()).map_err(|source| {
                        QueryError::Value {
                            column: plan.columns[i].clone(),
                            source,
                        }
                    })?,
                };
                after.push(Some(v));
            }
            state.seq += 1;
            state.q.last = Some(
                plan.order
                    .iter()
                    .map(|&i| texts[i].map(str::to_owned))
                    .collect(),
            );
            let ev = ChangeEvent {
                op: Op::Read,
                table: table.clone(),
                before: None,
                after: Some(after),
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
        // `{{cursor}}` stays the run's starting value: the `> last` filter pages.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_parameters() {
        let q = "SELECT * FROM t WHERE u >= to_timestamp({{last_sync_time}}) AND id > {{cursor}} OR id = {{cursor}}";
        assert_eq!(
            substitute(q, |n, _| format!("${n}")),
            "SELECT * FROM t WHERE u >= to_timestamp($1) AND id > $2 OR id = $2"
        );
        assert_eq!(
            substitute("SELECT 1 WHERE x > {{cursor}}", |n, _| format!("${n}")),
            "SELECT 1 WHERE x > $1"
        );
        assert_eq!(substitute("SELECT 1", |n, _| format!("${n}")), "SELECT 1");
    }

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
