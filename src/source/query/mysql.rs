//! Query mode over the MySQL/MariaDB wire protocol, with the MySQL source's blocking
//! text-protocol client ([`crate::source::mysql::sql::SqlConn`]) and its text decoder
//! ([`crate::source::mysql::types::decode_text`]), so a value looks like the same value
//! from the binlog stream or the backfill.
//!
//! **Binding without splicing.** The text protocol (`COM_QUERY`) has no parameters. Rather
//! than the binary protocol (`COM_STMT_PREPARE`/`EXECUTE`, whose binary result rows would
//! need a second decoder for every type), the values go into session user variables, set by
//! a separate `SET` statement before each page, and the query refers to the variables:
//! `{{cursor}}` becomes `@logtide_cursor`, `{{last_sync_time}}` becomes
//! `@logtide_last_sync_time`, and the tie-break values of the last delivered row are
//! `@logtide_last_0…n`. A variable is a value, not SQL text, so nothing the data contains
//! reaches the parser. The `SET` statement itself is built only from literals that cannot
//! carry SQL ([`literal`]):
//!
//! * integers (and BIT) as the decimal digits of a parsed `i64`/`u64`, decimals as
//!   validated digits (`-?d+(.d+)?`): typed numbers, so a BIGINT compares exactly (a string
//!   would be compared as a double);
//! * text as `CONVERT(X'<hex>' USING utf8mb4) COLLATE <the column's collation>` — never a
//!   bare hex literal, which is a number in numeric context; the collation is the result
//!   column's own (`COLLATION()` asked once at connect), since a user variable of another
//!   collation cannot be compared with the column ("illegal mix of collations"). `{{cursor}}`
//!   takes the cursor column's collation;
//! * temporal values as the same converted string (compared with a DATE/DATETIME/TIMESTAMP
//!   column it is compared as a temporal value);
//! * byte strings as `CAST(X'<hex>' AS BINARY)`; their stored text (and an `initial_cursor`
//!   for a binary cursor column) is hex.
//!
//! Cursor and key columns must compare exactly like `ORDER BY` sorts them, so FLOAT, DOUBLE,
//! ENUM (sorted by member index, compared by name), SET, JSON and geometry columns are
//! refused there (cast them in the query). MySQL sorts NULL first: the cursor must not be
//! NULL (such rows are never read), and a NULL key is the smallest key (`<=>` and an
//! explicit `IS NULL` arm keep the tie-break exact).
//!
//! The session is `SET NAMES utf8mb4` and `time_zone = '+00:00'`. The connection is blocking;
//! every statement runs on the blocking pool (`spawn_blocking`). Cancelling a page (shutdown)
//! shuts the connection's socket down, so a long query returns at once; where the socket
//! could not be identified, the read ends at the latest after the read timeout
//! (`query_timeout` plus 10 s); `query_timeout` itself drops the statement before.

use super::{CursorKind, FetchedRow, QueryError, Request, CURSOR_PH, SYNC_PH};
use crate::config::Lookback;
use crate::config::MysqlSslMode;
use crate::config::QuerySourceConfig;
use crate::endpoint::Endpoint;
use crate::source::mysql::charset::Charset;
use crate::source::mysql::connect::Login;
use crate::source::mysql::sql::ident;
use crate::source::mysql::sql::{ColumnDef, Interrupt, SqlConn};
use crate::source::mysql::tls::MysqlTls;
use crate::source::mysql::types::{decode_text, Kind};
use crate::source::mysql::MysqlError;
use crate::value::Value;
use std::fmt::Write as _;
use std::sync::Arc;

const VAR_CURSOR: &str = "@logtide_cursor";
const VAR_SYNC: &str = "@logtide_last_sync_time";
const VAR_LOW: &str = "@logtide_low";

fn last_var(i: usize) -> String {
    format!("@logtide_last_{i}")
}

fn my(what: &'static str) -> impl FnOnce(MysqlError) -> QueryError {
    move |source| QueryError::Mysql { what, source }
}

/// How the text of a cursor or key value becomes a literal of the `SET` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// Integers, YEAR and BIT: a number.
    Int,
    Decimal,
    /// Character data, with the column's collation when it is known.
    Text {
        collation: Option<String>,
    },
    /// Byte strings: the stored text is hex.
    Binary,
    /// DATE, TIME, DATETIME, TIMESTAMP: a string the server converts.
    Temporal,
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02X}");
    }
    s
}

fn is_decimal(s: &str) -> bool {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let s = s.strip_prefix('-').unwrap_or(s);
    match s.split_once('.') {
        Some((i, f)) => digits(i) && digits(f),
        None => digits(s),
    }
}

fn text_literal(s: &str, collation: Option<&str>) -> String {
    let mut out = format!("CONVERT(X'{}' USING utf8mb4)", hex(s.as_bytes()));
    if let Some(c) = collation {
        out.push_str(" COLLATE ");
        out.push_str(c);
    }
    out
}

/// The SQL literal for `value` bound as `bind`: only digits, hex digits and fixed keywords
/// come from the value, so no value can change the statement.
pub fn literal(bind: &Bind, value: Option<&str>) -> String {
    let Some(v) = value else {
        return "NULL".into();
    };
    match bind {
        Bind::Int => {
            if let Ok(i) = v.parse::<i64>() {
                i.to_string()
            } else if let Ok(u) = v.parse::<u64>() {
                u.to_string()
            } else {
                // Not a number (e.g. a hand-written initial cursor): let the server convert.
                text_literal(v, None)
            }
        }
        Bind::Decimal if is_decimal(v) => v.to_owned(),
        Bind::Decimal | Bind::Temporal => text_literal(v, None),
        Bind::Text { collation } => text_literal(v, collation.as_deref()),
        Bind::Binary => {
            let bytes = if v.len() % 2 == 0 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                v.to_ascii_uppercase()
            } else {
                // Not hex: take the text's bytes.
                hex(v.as_bytes())
            };
            format!("CAST(X'{bytes}' AS BINARY)")
        }
    }
}

/// How a cursor/key column of `kind` is bound, or why it cannot order the rows.
fn bind_of(kind: &Kind, collation: Option<String>) -> Result<Bind, &'static str> {
    Ok(match kind {
        Kind::Int { .. } | Kind::Year | Kind::Bit { .. } => Bind::Int,
        Kind::Decimal { .. } => Bind::Decimal,
        Kind::Date
        | Kind::Time { .. }
        | Kind::TimeOld
        | Kind::DateTime { .. }
        | Kind::DateTimeOld
        | Kind::Timestamp { .. }
        | Kind::TimestampOld => Bind::Temporal,
        k if k.charset() == Some(&Charset::Binary) => Bind::Binary,
        Kind::Char { .. } | Kind::Varchar { .. } | Kind::Blob { .. } => Bind::Text { collation },
        Kind::Float | Kind::Double => {
            return Err("is FLOAT/DOUBLE, which does not compare exactly with its text")
        }
        Kind::Enum { .. } | Kind::Set { .. } => {
            return Err("is ENUM/SET, which sorts by member index but compares by name")
        }
        Kind::JsonText { .. }
        | Kind::JsonBinary { .. }
        | Kind::Geometry { .. }
        | Kind::Vector { .. } => return Err("is JSON/geometry/vector, which has no usable order"),
        // Only from information_schema / table maps, never from result metadata.
        Kind::Uuid | Kind::Inet4 | Kind::Inet6 | Kind::Compressed(_) => {
            return Err(
                "is a MariaDB UUID/INET/compressed column, which query mode does not order by",
            )
        }
    })
}

/// The text a cursor/key value is stored as (and bound from): the `SELECT` text, the number
/// for BIT, upper-case hex for byte strings.
fn stored_text(kind: &Kind, raw: &[u8]) -> String {
    match kind {
        Kind::Bit { .. } => raw
            .iter()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b))
            .to_string(),
        k if k.charset() == Some(&Charset::Binary) => hex(raw),
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

/// The configured query with the placeholders replaced by the session variables.
pub fn inner_sql(query: &str) -> String {
    query
        .replace(CURSOR_PH, VAR_CURSOR)
        .replace(SYNC_PH, VAR_SYNC)
}

/// The wrapped statements without their `LIMIT`: (first page, first page from the run's
/// lower bound `@logtide_low`, pages after `last`). `order` holds the cursor column
/// followed by the key columns.
fn wrapped_sql(inner: &str, columns: &[String], order: &[usize]) -> (String, String, String) {
    let col = |i: usize| format!("q.{}", ident(&columns[i]));
    let select: Vec<String> = (0..columns.len()).map(col).collect();
    let order_by: Vec<String> = order.iter().map(|&i| col(i)).collect();
    let base = format!(
        "SELECT {} FROM (\n{inner}\n) q WHERE {} IS NOT NULL",
        select.join(", "),
        order_by[0]
    );
    let eq = |j: usize| {
        if j == 0 {
            format!("{} = {}", order_by[0], last_var(0))
        } else {
            format!("{} <=> {}", order_by[j], last_var(j))
        }
    };
    let gt = |j: usize| {
        if j == 0 {
            format!("{} > {}", order_by[0], last_var(0))
        } else {
            // NULL sorts first: a NULL last key is below every other key.
            let v = last_var(j);
            format!(
                "({c} > {v} OR ({v} IS NULL AND {c} IS NOT NULL))",
                c = order_by[j]
            )
        }
    };
    let ors: Vec<String> = (0..order.len())
        .map(|j| {
            let mut ands: Vec<String> = (0..j).map(eq).collect();
            ands.push(gt(j));
            format!("({})", ands.join(" AND "))
        })
        .collect();
    let ob = order_by.join(", ");
    let first = format!("{base} ORDER BY {ob}");
    let from_low = format!("{base} AND {} >= {VAR_LOW} ORDER BY {ob}", order_by[0]);
    // A leading `cursor >= last` an index on the cursor can use.
    let next = format!(
        "{base} AND {} >= {} AND ({}) ORDER BY {ob}",
        order_by[0],
        last_var(0),
        ors.join(" OR ")
    );
    (first, from_low, next)
}

/// The `SET` statement binding one page's values (`low`: the run's lower bound).
fn set_sql(
    binds: &[Bind],
    cursor: Option<&str>,
    sync: i64,
    low: Option<&str>,
    last: Option<&[Option<String>]>,
) -> String {
    let cursor_bind = binds
        .first()
        .cloned()
        .unwrap_or(Bind::Text { collation: None });
    let mut s = format!(
        "SET {VAR_CURSOR} = {}, {VAR_SYNC} = {sync}",
        literal(&cursor_bind, cursor)
    );
    if low.is_some() {
        let _ = write!(s, ", {VAR_LOW} = {}", literal(&cursor_bind, low));
    }
    for (i, b) in binds.iter().enumerate() {
        let v = last.and_then(|l| l.get(i)).and_then(|v| v.as_deref());
        let _ = write!(s, ", {} = {}", last_var(i), literal(b, v));
    }
    s
}

/// The kind of a cursor column for the look-back.
fn cursor_kind_of(kind: &Kind) -> CursorKind {
    match kind {
        Kind::Date
        | Kind::DateTime { .. }
        | Kind::DateTimeOld
        | Kind::Timestamp { .. }
        | Kind::TimestampOld => CursorKind::Time,
        Kind::Int { .. } | Kind::Year | Kind::Decimal { .. } | Kind::Bit { .. } => {
            CursorKind::Number
        }
        _ => CursorKind::Other,
    }
}

/// `SELECT mark − lookback` in the cursor column's terms: a temporal value minus an
/// `INTERVAL … MICROSECOND`, a number minus the amount (validated digits).
fn lower_sql(bind: &Bind, mark: &str, lookback: &Lookback) -> Result<String, QueryError> {
    let m = literal(bind, Some(mark));
    match lookback {
        Lookback::Time(d) => Ok(format!(
            "SELECT CAST({m} AS DATETIME(6)) - INTERVAL {} MICROSECOND",
            d.as_micros()
        )),
        Lookback::Amount(a) if is_decimal(a) => Ok(format!("SELECT {m} - {a}")),
        Lookback::Amount(a) => Err(QueryError::Config(format!(
            "lookback {a:?} is not a number"
        ))),
    }
}

/// The login of query mode: reads time out `query_timeout` plus 10 s after the last packet
/// (beyond `query_timeout`, which drops the statement first), so the blocking thread ends
/// even where no interrupt reaches it.
fn login(cfg: &QuerySourceConfig, at: &Endpoint, password: String) -> Login {
    Login {
        host: at.host.clone(),
        port: at.port,
        user: cfg.user.clone(),
        password,
        database: Some(cfg.database.clone()),
        connect_timeout: cfg.connect_timeout,
        read_timeout: std::time::Duration::ZERO,
    }
    .reads_within(cfg.query_timeout)
}

/// Connects (blocking): TCP within `connect_timeout`, TLS, authentication, then utf8mb4
/// and UTC for the text forms the decoder expects.
fn connect(
    cfg: &QuerySourceConfig,
    at: &Endpoint,
    password: String,
) -> Result<SqlConn, QueryError> {
    // libpq's names for the MySQL modes; verify-full checks chain and host name against
    // `sslrootcert` (default: the Mozilla roots).
    let mode = match cfg.sslmode {
        crate::config::SslMode::Disable => MysqlSslMode::Disabled,
        crate::config::SslMode::Prefer => MysqlSslMode::Preferred,
        crate::config::SslMode::Require => MysqlSslMode::Required,
        crate::config::SslMode::VerifyFull => MysqlSslMode::VerifyIdentity,
    };
    let tls = MysqlTls::with(mode, cfg.sslrootcert.as_deref(), at)
        .map_err(|e| my("setting up TLS")(MysqlError::from(e)))?;
    let mut conn = SqlConn::connect(&login(cfg, at, password), &tls).map_err(my("connecting"))?;
    for s in ["SET NAMES utf8mb4", "SET time_zone = '+00:00'"] {
        conn.query(s).map_err(my("setting the session options"))?;
    }
    Ok(conn)
}

/// What the probe learned about the query's result.
struct Plan {
    columns: Vec<String>,
    defs: Vec<ColumnDef>,
    kinds: Vec<Kind>,
    order: Vec<usize>,
    binds: Vec<Bind>,
    first: String,
    from_low: String,
    next: String,
}

/// Runs the query with `LIMIT 0` (the variables bound to NULL) to learn
/// its columns, and checks the cursor and key columns.
fn probe(conn: &mut SqlConn, cfg: &QuerySourceConfig) -> Result<Plan, QueryError> {
    let inner = inner_sql(&cfg.query);
    // NULL, not the initial cursor: a NULL has no collation to clash with (see the docs).
    conn.query(&set_sql(&[], None, 0, None, None))
        .map_err(my("binding the first run's values"))?;
    let rs = conn
        .query(&format!("SELECT * FROM (\n{inner}\n) q LIMIT 0"))
        .map_err(my("describing the configured query"))?;
    let defs = rs.columns;
    let columns: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
    for (i, n) in columns.iter().enumerate() {
        if columns[..i].contains(n) {
            return Err(QueryError::Config(format!(
                "the query returns column {n:?} twice: give every result column a distinct name"
            )));
        }
    }
    let mut kinds = Vec::with_capacity(defs.len());
    for d in &defs {
        kinds.push(d.kind().map_err(|e| {
            QueryError::Config(format!(
                "result column {:?}: {e}; cast it in the query (e.g. CAST(x AS CHAR))",
                d.name
            ))
        })?);
    }
    let find = |name: &str, what: &str| {
        columns.iter().position(|n| n == name).ok_or_else(|| {
            QueryError::Config(format!(
                "{what} {name:?} is not a column of the query result (columns: {})",
                columns.join(", ")
            ))
        })
    };
    let mut order = vec![find(&cfg.cursor_column, "cursor_column")?];
    for k in &cfg.key_columns {
        order.push(find(k, "key column")?);
    }
    let is_text = |i: usize| {
        matches!(
            kinds[i],
            Kind::Char { .. } | Kind::Varchar { .. } | Kind::Blob { .. }
        ) && !defs[i].is_binary()
    };
    let text_cols: Vec<usize> = order.iter().copied().filter(|&i| is_text(i)).collect();
    let collations = collations(conn, &inner, &columns, &text_cols)?;
    let mut binds = Vec::with_capacity(order.len());
    for &i in &order {
        let collation = text_cols
            .iter()
            .position(|&t| t == i)
            .and_then(|p| collations.get(p).cloned().flatten());
        binds.push(bind_of(&kinds[i], collation).map_err(|why| {
            QueryError::Config(format!(
                "cursor/key column {:?} {why}: cast it in the query to an integer, decimal, string or temporal type",
                columns[i]
            ))
        })?);
    }
    let (first, from_low, next) = wrapped_sql(&inner, &columns, &order);
    tracing::debug!(sql = %next, "query source statement");
    Ok(Plan {
        columns,
        defs,
        kinds,
        order,
        binds,
        first,
        from_low,
        next,
    })
}

/// The collations of the result columns `cols` (text columns). The result metadata does
/// not say (MariaDB sends the connection's character set there), but `COLLATION()` of an
/// aggregate over the empty result does, without running the query (`LIMIT 0`). A name that
/// is not a plain identifier is dropped.
fn collations(
    conn: &mut SqlConn,
    inner: &str,
    columns: &[String],
    cols: &[usize],
) -> Result<Vec<Option<String>>, QueryError> {
    if cols.is_empty() {
        return Ok(Vec::new());
    }
    let exprs: Vec<String> = cols
        .iter()
        .map(|&i| format!("COLLATION(MIN(q.{}))", ident(&columns[i])))
        .collect();
    let rs = conn
        .query(&format!(
            "SELECT {} FROM (SELECT * FROM (\n{inner}\n) q0 LIMIT 0) q",
            exprs.join(", ")
        ))
        .map_err(my("reading the cursor and key columns' collations"))?;
    Ok((0..cols.len())
        .map(|j| {
            rs.text(0, j).filter(|n| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        })
        .collect())
}

fn password(cfg: &QuerySourceConfig) -> Result<String, QueryError> {
    Ok(cfg
        .password()
        .map_err(|e| QueryError::Config(e.to_string()))?
        .map(|s| s.expose().to_owned())
        .unwrap_or_default())
}

/// The result columns as (name, type name), for `logtide discover` / `check`.
pub(super) async fn result_columns(
    cfg: &QuerySourceConfig,
    at: &Endpoint,
) -> Result<Vec<(String, String)>, QueryError> {
    let pw = password(cfg)?;
    let c = cfg.clone();
    let at = at.clone();
    let plan = tokio::task::spawn_blocking(move || {
        let mut conn = connect(&c, &at, pw)?;
        probe(&mut conn, &c)
    })
    .await
    .map_err(|_| QueryError::WorkerLost)??;
    Ok(plan
        .columns
        .into_iter()
        .zip(plan.defs.iter().map(ColumnDef::type_name))
        .collect())
}

/// Interrupts the connection when dropped armed: a page abandoned (cancelled) mid-query
/// must not keep its blocking thread in a socket read.
struct InterruptOnDrop(Option<Interrupt>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(i) = self.0.take() {
            i.interrupt();
        }
    }
}

/// A connected MySQL-wire query source.
pub(crate) struct MyBackend {
    /// `None` while a statement runs on the blocking pool, and after one was abandoned.
    conn: Option<SqlConn>,
    interrupt: Option<Interrupt>,
    columns: Vec<String>,
    kinds: Arc<Vec<Kind>>,
    order: Vec<usize>,
    binds: Vec<Bind>,
    first: String,
    from_low: String,
    next: String,
}

impl MyBackend {
    pub(super) async fn connect(
        cfg: &QuerySourceConfig,
        at: &Endpoint,
    ) -> Result<MyBackend, QueryError> {
        let pw = password(cfg)?;
        let c = cfg.clone();
        let at = at.clone();
        let (conn, plan) = tokio::task::spawn_blocking(move || {
            let mut conn = connect(&c, &at, pw)?;
            let plan = probe(&mut conn, &c)?;
            Ok::<_, QueryError>((conn, plan))
        })
        .await
        .map_err(|_| QueryError::WorkerLost)??;
        Ok(MyBackend {
            interrupt: Some(conn.interrupter()),
            conn: Some(conn),
            columns: plan.columns,
            kinds: Arc::new(plan.kinds),
            order: plan.order,
            binds: plan.binds,
            first: plan.first,
            from_low: plan.from_low,
            next: plan.next,
        })
    }

    pub(super) fn columns(&self) -> &[String] {
        &self.columns
    }

    pub(super) fn order(&self) -> &[usize] {
        &self.order
    }

    pub(super) fn cursor_kind(&self) -> CursorKind {
        self.order
            .first()
            .and_then(|&i| self.kinds.get(i))
            .map_or(CursorKind::Other, cursor_kind_of)
    }

    /// `mark − lookback` as the text of a cursor value, computed by the server.
    pub(super) async fn lower(
        &mut self,
        mark: &str,
        lookback: &Lookback,
    ) -> Result<String, QueryError> {
        let bind = self
            .binds
            .first()
            .cloned()
            .unwrap_or(Bind::Text { collation: None });
        let sql = lower_sql(&bind, mark, lookback)?;
        let mut conn = self.conn.take().ok_or(QueryError::WorkerLost)?;
        let mut guard = InterruptOnDrop(self.interrupt.clone());
        let (conn, r) = tokio::task::spawn_blocking(move || {
            let r = conn
                .query(&sql)
                .map_err(my("computing the look-back window's lower bound"));
            (conn, r)
        })
        .await
        .map_err(|_| QueryError::WorkerLost)?;
        guard.0 = None;
        self.conn = Some(conn);
        r?.text(0, 0).ok_or_else(|| {
            QueryError::Config(format!(
                "the look-back window's lower bound below {mark:?} is NULL: check lookback"
            ))
        })
    }

    pub(super) async fn fetch(&mut self, req: &Request<'_>) -> Result<Vec<FetchedRow>, QueryError> {
        let set = set_sql(&self.binds, req.cursor, req.sync, req.low, req.last);
        let stmt = match (req.last, req.low) {
            (Some(_), _) => &self.next,
            (None, Some(_)) => &self.from_low,
            (None, None) => &self.first,
        };
        let sql = format!("{stmt} LIMIT {}", req.limit);
        let kinds = self.kinds.clone();
        let order = self.order.clone();
        let columns = self.columns.clone();
        let mut conn = self.conn.take().ok_or(QueryError::WorkerLost)?;
        let mut guard = InterruptOnDrop(self.interrupt.clone());
        let (conn, r) = tokio::task::spawn_blocking(move || {
            let r = read_page(&mut conn, &set, &sql, &kinds, &order, &columns);
            (conn, r)
        })
        .await
        .map_err(|_| QueryError::WorkerLost)?;
        guard.0 = None;
        self.conn = Some(conn);
        r
    }
}

/// Binds the values and reads one page (blocking).
fn read_page(
    conn: &mut SqlConn,
    set: &str,
    sql: &str,
    kinds: &[Kind],
    order: &[usize],
    columns: &[String],
) -> Result<Vec<FetchedRow>, QueryError> {
    conn.query(set).map_err(my("binding the cursor values"))?;
    let mut rows = conn.query_rows(sql).map_err(my("running the query"))?;
    if rows.columns.len() != kinds.len() {
        return Err(QueryError::Config(format!(
            "the query returned {} columns, {} when logtide connected: restart after changing the query's tables",
            rows.columns.len(),
            kinds.len()
        )));
    }
    let mut out = Vec::new();
    while let Some(cells) = rows.next_row().map_err(my("reading a result row"))? {
        let mut values = Vec::with_capacity(cells.len());
        for (i, (cell, kind)) in cells.iter().zip(kinds).enumerate() {
            values.push(Some(match cell {
                None => Value::Null,
                Some(b) => decode_text(kind, b).map_err(|source| QueryError::MysqlValue {
                    column: columns.get(i).cloned().unwrap_or_default(),
                    source,
                })?,
            }));
        }
        let order = order
            .iter()
            .map(|&i| {
                cells
                    .get(i)
                    .and_then(|c| c.as_deref())
                    .map(|b| stored_text(&kinds[i], b))
            })
            .collect();
        out.push(FetchedRow { values, order });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_carry_no_sql() {
        assert_eq!(literal(&Bind::Int, Some("42")), "42");
        assert_eq!(
            literal(&Bind::Int, Some("-9223372036854775808")),
            "-9223372036854775808"
        );
        assert_eq!(
            literal(&Bind::Int, Some("18446744073709551615")),
            "18446744073709551615"
        );
        assert_eq!(literal(&Bind::Int, None), "NULL");
        // Not a number: converted text, never spliced.
        assert_eq!(
            literal(&Bind::Int, Some("1 OR 1=1")),
            "CONVERT(X'31204F5220313D31' USING utf8mb4)"
        );
        assert_eq!(literal(&Bind::Decimal, Some("-12.50")), "-12.50");
        assert_eq!(
            literal(&Bind::Decimal, Some("1e5")),
            "CONVERT(X'316535' USING utf8mb4)"
        );
        let evil = "x'; DROP TABLE t; -- \\ \"";
        let lit = literal(
            &Bind::Text {
                collation: Some("utf8mb4_unicode_ci".into()),
            },
            Some(evil),
        );
        assert_eq!(
            lit,
            format!(
                "CONVERT(X'{}' USING utf8mb4) COLLATE utf8mb4_unicode_ci",
                hex(evil.as_bytes())
            )
        );
        assert!(!lit.contains(';') && !lit.contains("DROP"), "{lit}");
        assert_eq!(
            literal(&Bind::Temporal, Some("2024-01-01 10:00:00.5")),
            "CONVERT(X'323032342D30312D30312031303A30303A30302E35' USING utf8mb4)"
        );
        assert_eq!(
            literal(&Bind::Binary, Some("00ab")),
            "CAST(X'00AB' AS BINARY)"
        );
        assert_eq!(
            literal(&Bind::Binary, Some("zz")),
            "CAST(X'7A7A' AS BINARY)"
        );
        assert!(is_decimal("0") && is_decimal("-1.5") && !is_decimal("1.") && !is_decimal("-"));
    }

    #[test]
    fn placeholders_become_session_variables() {
        assert_eq!(
            inner_sql("SELECT * FROM t WHERE u >= FROM_UNIXTIME({{last_sync_time}}) AND id > {{cursor}} OR id = {{cursor}}"),
            "SELECT * FROM t WHERE u >= FROM_UNIXTIME(@logtide_last_sync_time) AND id > @logtide_cursor OR id = @logtide_cursor"
        );
        let binds = [Bind::Temporal, Bind::Int];
        let last = [Some("2024-01-01 00:00:00".to_string()), None];
        assert_eq!(
            set_sql(&binds, Some("7"), 1_700_000_000, None, Some(&last)),
            "SET @logtide_cursor = CONVERT(X'37' USING utf8mb4), @logtide_last_sync_time = 1700000000, \
             @logtide_last_0 = CONVERT(X'323032342D30312D30312030303A30303A3030' USING utf8mb4), @logtide_last_1 = NULL"
        );
        assert_eq!(
            set_sql(&[], None, 0, None, None),
            "SET @logtide_cursor = NULL, @logtide_last_sync_time = 0"
        );
    }

    #[test]
    fn wrapped_sql_orders_and_breaks_ties() {
        let cols = vec!["id".to_string(), "at".to_string(), "v`x".to_string()];
        let (first, from_low, next) = wrapped_sql("SELECT 1", &cols, &[1, 0]);
        assert_eq!(
            from_low,
            "SELECT q.`id`, q.`at`, q.`v``x` FROM (\nSELECT 1\n) q WHERE q.`at` IS NOT NULL AND q.`at` >= @logtide_low ORDER BY q.`at`, q.`id`"
        );
        assert_eq!(
            first,
            "SELECT q.`id`, q.`at`, q.`v``x` FROM (\nSELECT 1\n) q WHERE q.`at` IS NOT NULL ORDER BY q.`at`, q.`id`"
        );
        assert_eq!(
            next,
            "SELECT q.`id`, q.`at`, q.`v``x` FROM (\nSELECT 1\n) q WHERE q.`at` IS NOT NULL \
             AND q.`at` >= @logtide_last_0 AND ((q.`at` > @logtide_last_0) OR (q.`at` = @logtide_last_0 \
             AND (q.`id` > @logtide_last_1 OR (@logtide_last_1 IS NULL AND q.`id` IS NOT NULL)))) \
             ORDER BY q.`at`, q.`id`"
        );
    }

    #[test]
    fn order_columns_must_compare_exactly() {
        assert_eq!(
            bind_of(
                &Kind::Int {
                    bytes: 8,
                    unsigned: true
                },
                None
            ),
            Ok(Bind::Int)
        );
        assert_eq!(
            bind_of(
                &Kind::Varchar {
                    max_len: 10,
                    charset: Charset::Binary
                },
                None
            ),
            Ok(Bind::Binary)
        );
        assert!(bind_of(&Kind::Double, None).is_err());
        assert!(bind_of(
            &Kind::Enum {
                pack_len: 1,
                names: Arc::new(Vec::new())
            },
            None
        )
        .is_err());
        assert_eq!(stored_text(&Kind::Bit { bits: 64 }, &[1, 0]), "256");
    }
}
