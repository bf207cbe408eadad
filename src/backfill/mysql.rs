//! MySQL/MariaDB backfill: notes the binlog position (`SHOW MASTER STATUS`) the stream will
//! start from, lists the selected base tables, and reads them in keyset chunks over the
//! source's own blocking text-protocol client ([`crate::source::mysql::sql`]), decoding
//! values with the stream's decoder ([`crate::source::mysql::types::decode_text`]), so a
//! backfilled row looks exactly like the same row from the binlog.
//!
//! All SQL runs on a blocking thread (`spawn_blocking`); chunks reach the async delivery
//! loop through the chunk channel (`blocking_send`, so delivery paces the reads).
//!
//! Key literals of the chunk query are built so that they compare exactly like the
//! `ORDER BY` sorts: integers and decimals unquoted, text as `_utf8mb4 X'…'` (the column's
//! collation applies, no escaping involved), binary strings as `X'…'`, ENUM by member index,
//! temporal values quoted (the session is `time_zone = '+00:00'`). Keys that cannot be
//! compared exactly (FLOAT, DOUBLE, SET, …) make the table a one-pass table, like a table
//! without a primary key. A one-pass table is one SELECT whose rows are streamed from the
//! socket ([`SqlConn::query_rows`]) and handed over in chunks, so memory stays bounded; its
//! progress keeps no key, so an interrupted pass starts the table over. The hand-over rule
//! is in the parent module's docs.

use super::{
    load_progress, BackfillError, Chunk, Progress, RowNamer, RunState, TableProgress, RUN_KEY,
};
use crate::checkpoint::CheckpointStore;
use crate::config::{BackfillMode, BackfillSettings, MysqlSourceConfig};
use crate::endpoint::Endpoint;
use crate::event::{ChangeEvent, Op, SourceInfo, TableSchema};
use crate::filter::Filter;
use crate::position::{MysqlPosition, Position};
use crate::source::mysql::charset::Charset;
use crate::source::mysql::sql::{ident, quote, SqlConn};
use crate::source::mysql::table::{load_schema, parse_members, ColumnMeta};
use crate::source::mysql::types::{decode_text, Kind};
use crate::source::mysql::validate;
use crate::value::Value;
use std::fmt::Write as _;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn setup_err<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> BackfillError {
    move |e| BackfillError::Setup {
        what,
        source: Box::new(e),
    }
}

fn table_err(
    table: &str,
    what: &'static str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> BackfillError {
    // The variant is named after PostgreSQL but its message is source-neutral.
    BackfillError::Postgres {
        table: table.to_owned(),
        what,
        source: source.into(),
    }
}

/// A table to copy: its columns after the filter, their kinds, and the key.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub db: String,
    pub name: String,
    /// Projected column names, in table order.
    pub columns: Vec<String>,
    /// The decoding kind of each projected column.
    pub kinds: Vec<Kind>,
    /// Indices into `columns` of the primary key, in key order; empty: no primary key.
    pub key: Vec<usize>,
    /// Whether the key can be paginated (every key column compares exactly); otherwise the
    /// table is read in one pass.
    pub paginate: bool,
    pub estimated_rows: u64,
}

impl TablePlan {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02X}");
    }
    s
}

fn is_binary(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Char {
            charset: Charset::Binary,
            ..
        } | Kind::Varchar {
            charset: Charset::Binary,
            ..
        } | Kind::Blob {
            charset: Charset::Binary,
            ..
        }
    )
}

/// Whether a key column of this kind compares exactly with a literal built from its
/// `SELECT` text (so `WHERE k > last ORDER BY k` neither repeats nor skips rows).
fn paginable(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Int { .. }
            | Kind::Year
            | Kind::Decimal { .. }
            | Kind::Bit { .. }
            | Kind::Date
            | Kind::Time { .. }
            | Kind::TimeOld
            | Kind::DateTime { .. }
            | Kind::DateTimeOld
            | Kind::Timestamp { .. }
            | Kind::TimestampOld
            | Kind::Char { .. }
            | Kind::Varchar { .. }
            | Kind::Blob { .. }
            | Kind::Enum { .. }
            | Kind::Uuid
            | Kind::Inet4
            | Kind::Inet6
    )
}

/// The decoding kind of a column from its `information_schema` description (the same
/// kind the table map yields for the stream).
pub fn kind_of(meta: &ColumnMeta, mariadb: bool) -> Result<Kind, String> {
    let t = meta.column_type.to_ascii_lowercase();
    let base = t.split(['(', ' ']).next().unwrap_or_default().to_owned();
    let args: Vec<u32> = match (t.find('('), t.find(')')) {
        (Some(o), Some(c)) if o < c && base != "enum" && base != "set" => t[o + 1..c]
            .split(',')
            .filter_map(|a| a.trim().parse().ok())
            .collect(),
        _ => Vec::new(),
    };
    let arg = |i: usize, default: u32| args.get(i).copied().unwrap_or(default);
    let unsigned = t.contains(" unsigned");
    let charset = meta
        .charset
        .as_deref()
        .map(Charset::from_name)
        .unwrap_or(Charset::Binary);
    let small = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    let fsp = || arg(0, 0).min(6) as u8;
    Ok(match base.as_str() {
        "tinyint" => Kind::Int { bytes: 1, unsigned },
        "smallint" => Kind::Int { bytes: 2, unsigned },
        "mediumint" => Kind::Int { bytes: 3, unsigned },
        "int" | "integer" => Kind::Int { bytes: 4, unsigned },
        "bigint" => Kind::Int { bytes: 8, unsigned },
        "year" => Kind::Year,
        "float" => Kind::Float,
        "double" | "real" => Kind::Double,
        "decimal" | "numeric" | "fixed" => Kind::Decimal {
            precision: arg(0, 10).min(255) as u8,
            scale: arg(1, 0).min(255) as u8,
        },
        "bit" => Kind::Bit {
            bits: small(arg(0, 1)),
        },
        "date" => Kind::Date,
        "time" => Kind::Time { fsp: fsp() },
        "datetime" => Kind::DateTime { fsp: fsp() },
        "timestamp" => Kind::Timestamp { fsp: fsp() },
        "char" | "binary" => {
            let n = arg(0, 1);
            if charset == Charset::Binary {
                Kind::Char {
                    max_len: small(n),
                    charset,
                }
            } else {
                Kind::Char {
                    max_len: small(n.saturating_mul(4)),
                    charset,
                }
            }
        }
        "varchar" | "varbinary" => Kind::Varchar {
            max_len: small(arg(0, 1).saturating_mul(4)),
            charset,
        },
        "tinytext" | "tinyblob" => Kind::Blob {
            pack_len: 1,
            charset,
        },
        "text" | "blob" => Kind::Blob {
            pack_len: 2,
            charset,
        },
        "mediumtext" | "mediumblob" => Kind::Blob {
            pack_len: 3,
            charset,
        },
        "longtext" | "longblob" => {
            if meta.json && charset != Charset::Binary {
                Kind::JsonText { pack_len: 4 }
            } else {
                Kind::Blob {
                    pack_len: 4,
                    charset,
                }
            }
        }
        "json" if mariadb => Kind::JsonText { pack_len: 4 },
        // MariaDB's types; SELECT prints their text form.
        "uuid" if mariadb => Kind::Uuid,
        "inet4" if mariadb => Kind::Inet4,
        "inet6" if mariadb => Kind::Inet6,
        "json" => Kind::JsonBinary { pack_len: 4 },
        "vector" => Kind::Vector { pack_len: 4 },
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => {
            Kind::Geometry { pack_len: 4 }
        }
        "enum" | "set" => {
            let names = Arc::new(parse_members(&meta.column_type));
            let n = names.len();
            if base == "enum" {
                Kind::Enum {
                    pack_len: if n < 256 { 1 } else { 2 },
                    names,
                }
            } else {
                Kind::Set {
                    pack_len: n.div_ceil(8).max(1) as u8,
                    names,
                }
            }
        }
        _ => {
            return Err(format!(
                "column {} has type {}, which the backfill does not read (exclude the column or the table, or set backfill = \"never\" for it)",
                meta.name, meta.column_type
            ))
        }
    })
}

/// The text a key value is stored as in [`TableProgress::last_key`]: the `SELECT` text,
/// upper-case hex for binary strings, the number for BIT.
fn key_text(kind: &Kind, raw: &[u8]) -> String {
    match kind {
        Kind::Bit { .. } => raw
            .iter()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b))
            .to_string(),
        k if is_binary(k) => hex(raw),
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

/// The SQL literal of a stored key value, comparing exactly like `ORDER BY` sorts.
fn key_literal(kind: &Kind, stored: &str) -> Result<String, String> {
    let numeric = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'))
    };
    match kind {
        Kind::Int { .. } | Kind::Year | Kind::Decimal { .. } | Kind::Bit { .. } => {
            if numeric(stored) {
                Ok(stored.to_owned())
            } else {
                Err(format!("stored key value {stored:?} is not a number"))
            }
        }
        k if is_binary(k) => {
            if stored.bytes().all(|b| b.is_ascii_hexdigit()) && stored.len() % 2 == 0 {
                Ok(format!("X'{stored}'"))
            } else {
                Err("stored binary key value is not hex".into())
            }
        }
        Kind::Char { .. } | Kind::Varchar { .. } | Kind::Blob { .. } => {
            Ok(format!("_utf8mb4 X'{}'", hex(stored.as_bytes())))
        }
        Kind::Enum { names, .. } => {
            // ENUM sorts by member index; compared with a number, the index is used.
            let idx = names.iter().position(|n| n == stored).map_or(0, |i| i + 1);
            Ok(idx.to_string())
        }
        Kind::Date
        | Kind::Time { .. }
        | Kind::TimeOld
        | Kind::DateTime { .. }
        | Kind::DateTimeOld
        | Kind::Timestamp { .. }
        | Kind::TimestampOld
        // The server converts the text literal to the type and compares like it sorts.
        | Kind::Uuid
        | Kind::Inet4
        | Kind::Inet6 => Ok(quote(stored)),
        other => Err(format!("a key of kind {other:?} cannot be paginated")),
    }
}

/// The chunk query for `plan` after `last` (stored key texts); one pass without a usable key.
fn chunk_sql(plan: &TablePlan, last: Option<&[String]>, limit: usize) -> Result<String, String> {
    let cols: Vec<String> = plan.columns.iter().map(|c| ident(c)).collect();
    let mut sql = format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        ident(&plan.db),
        ident(&plan.name)
    );
    if !plan.paginate {
        return Ok(sql);
    }
    let key_cols: Vec<String> = plan.key.iter().map(|&i| ident(&plan.columns[i])).collect();
    if let Some(last) = last {
        if last.len() != plan.key.len() {
            return Err(format!(
                "stored key has {} values for {} key columns",
                last.len(),
                plan.key.len()
            ));
        }
        let lits = plan
            .key
            .iter()
            .zip(last)
            .map(|(&i, v)| key_literal(&plan.kinds[i], v))
            .collect::<Result<Vec<_>, _>>()?;
        // (k1, k2) > (l1, l2), spelled out so the range optimizer uses the primary key.
        let mut ors = Vec::with_capacity(key_cols.len());
        for i in 0..key_cols.len() {
            let mut ands: Vec<String> = (0..i)
                .map(|j| format!("{} = {}", key_cols[j], lits[j]))
                .collect();
            ands.push(format!("{} > {}", key_cols[i], lits[i]));
            ors.push(format!("({})", ands.join(" AND ")));
        }
        let _ = write!(sql, " WHERE {}", ors.join(" OR "));
    }
    let _ = write!(sql, " ORDER BY {} LIMIT {limit}", key_cols.join(", "));
    Ok(sql)
}

/// Opens the SQL connection to `at` (blocking): the source's credentials, TCP within the
/// configured timeout, TLS, utf8mb4 and UTC for the text forms the decoder expects.
pub fn connect(cfg: &MysqlSourceConfig, at: &Endpoint) -> Result<SqlConn, BackfillError> {
    SqlConn::open(cfg, at).map_err(setup_err("connect"))
}

/// The binlog position the stream will start from: the server's current end.
pub fn fix_start(conn: &mut SqlConn) -> Result<MysqlPosition, BackfillError> {
    match crate::source::mysql::binlog_status::current_end(conn)
        .map_err(setup_err("read the binlog position"))?
    {
        Some((file, pos)) => Ok(MysqlPosition {
            file,
            pos,
            ordinal: 0,
            gtid: None,
        }),
        None => Err(BackfillError::Setup {
            what: "read the binlog position",
            source: format!(
                "{} returned no binlog file (is log_bin on?)",
                crate::source::mysql::binlog_status::statement_name(conn)
            )
            .into(),
        }),
    }
}

/// The base tables the filter selects and the backfill settings include, with their
/// projected columns, kinds and primary keys, sorted by `db.table`.
pub fn plan(
    conn: &mut SqlConn,
    filter: &Filter,
    settings: &BackfillSettings,
    only: Option<&str>,
) -> Result<Vec<TablePlan>, BackfillError> {
    let rs = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')",
        )
        .map_err(setup_err("list the tables"))?;
    let mut tables: Vec<(String, String, u64)> = (0..rs.rows.len())
        .filter_map(|r| {
            Some((
                rs.text(r, 0)?,
                rs.text(r, 1)?,
                rs.text(r, 2).and_then(|n| n.parse().ok()).unwrap_or(0),
            ))
        })
        .filter(|(db, name, _)| {
            let qualified = format!("{db}.{name}");
            filter.table_selected(db, name)
                && match only {
                    Some(t) => t == qualified,
                    None => settings.mode_for(&qualified) != BackfillMode::Never,
                }
        })
        .collect();
    tables.sort();
    let mut plans = Vec::with_capacity(tables.len());
    for (db, name, est) in tables {
        let qualified = format!("{db}.{name}");
        let Some(info) = load_schema(conn, &db, &name)
            .map_err(|e| table_err(&qualified, "read its columns", e))?
        else {
            continue; // dropped since it was listed
        };
        let names: Vec<&str> = info.columns.iter().map(|c| c.name.as_str()).collect();
        let proj = filter
            .project(&db, &name, &names, &info.key)
            .map_err(setup_err("apply the column filter"))?;
        let mut kinds = Vec::with_capacity(proj.keep.len());
        for &i in &proj.keep {
            kinds.push(
                kind_of(&info.columns[i], conn.mariadb)
                    .map_err(|e| table_err(&qualified, "map its column types", e))?,
            );
        }
        let columns: Vec<String> = proj
            .keep
            .iter()
            .map(|&i| info.columns[i].name.clone())
            .collect();
        let key = proj.key;
        let paginate = !key.is_empty() && key.iter().all(|&k| paginable(&kinds[k]));
        if key.is_empty() {
            tracing::warn!(table = %qualified, "table has no primary key: backfilled in one pass, restarted from the beginning if interrupted, and its events have key = null");
        } else if !paginate {
            tracing::warn!(table = %qualified, "table's primary key cannot be paginated exactly (FLOAT/DOUBLE/SET/…): backfilled in one pass, restarted from the beginning if interrupted");
        }
        plans.push(TablePlan {
            db,
            name,
            columns,
            kinds,
            key,
            paginate,
            estimated_rows: est,
        });
    }
    Ok(plans)
}

/// Reads every planned table (blocking), sending chunks in order. `start` is the stream's
/// start position; rows are named at it ([`RowNamer`]).
#[allow(clippy::too_many_arguments)]
pub fn read_tables(
    conn: &mut SqlConn,
    info: &Arc<SourceInfo>,
    plans: &[TablePlan],
    start: &MysqlPosition,
    resume: Vec<TableProgress>,
    chunk_rows: usize,
    tx: mpsc::Sender<Chunk>,
) -> Result<(), BackfillError> {
    let chunk_rows = chunk_rows.max(1);
    for (plan, progress) in plans.iter().zip(resume) {
        if progress.done {
            continue;
        }
        let qualified = plan.qualified();
        // A table dropped while the backfill runs is skipped, not fatal.
        let read = || -> Result<(), BackfillError> {
            let schema = table_schema(plan, info);
            // Rows are named by table, key and content, read at the stream's start.
            let namer = RowNamer::new(
                &Position::Mysql(start.clone()),
                &qualified,
                &plan.columns,
                &plan.key,
            );
            let mut progress = if plan.paginate {
                progress
            } else {
                TableProgress::default()
            };
            if !plan.paginate {
                // One pass: one SELECT whose rows are read from the socket as they are handed
                // over, `chunk_rows` at a time, so memory stays bounded. Its progress stays
                // `last_key = None`, so an interrupted pass starts the table over.
                let sql = chunk_sql(plan, None, chunk_rows)
                    .map_err(|e| table_err(&qualified, "build the chunk query", e))?;
                let mut rows = conn
                    .query_rows(&sql)
                    .map_err(|e| table_err(&qualified, "read a chunk", e))?;
                if rows.columns.len() != plan.columns.len() {
                    return Err(columns_changed(plan, rows.columns.len()));
                }
                let mut events = Vec::with_capacity(chunk_rows);
                while let Some(cells) = rows
                    .next_row()
                    .map_err(|e| table_err(&qualified, "read a chunk", e))?
                {
                    progress.rows += 1;
                    events.push(row_event(plan, &schema, &cells, &namer, progress.rows)?);
                    if events.len() >= chunk_rows {
                        let evs = std::mem::replace(&mut events, Vec::with_capacity(chunk_rows));
                        send(&tx, &qualified, evs, progress.clone())?;
                    }
                }
                progress.done = true;
                send(&tx, &qualified, events, progress.clone())?;
                return Ok(());
            }
            loop {
                let events = read_chunk(conn, plan, &schema, &mut progress, chunk_rows, &namer)?;
                let finished = events.len() < chunk_rows;
                progress.done = finished;
                send(&tx, &qualified, events, progress.clone())?;
                if finished {
                    break;
                }
            }
            Ok(())
        };
        match read() {
            Err(e) if crate::source::classify::is_missing_table(&e) => {
                super::skip_dropped(&qualified, &e);
                tx.blocking_send(Chunk::skipped(&qualified))
                    .map_err(|_| BackfillError::ReaderGone)?;
            }
            r => r?,
        }
    }
    Ok(())
}

/// The error for a result whose column count no longer matches the plan.
fn columns_changed(plan: &TablePlan, n: usize) -> BackfillError {
    table_err(
        &plan.qualified(),
        "read a chunk",
        format!(
            "{n} columns for {} planned (the table changed?)",
            plan.columns.len()
        ),
    )
}

/// Decodes one result row of `plan`, the `row_number`-th of its pass, into an `r` event
/// named by `namer`.
fn row_event(
    plan: &TablePlan,
    schema: &Arc<TableSchema>,
    cells: &[Option<Vec<u8>>],
    namer: &RowNamer,
    row_number: u64,
) -> Result<ChangeEvent, BackfillError> {
    let mut row = Vec::with_capacity(cells.len());
    for (cell, kind) in cells.iter().zip(&plan.kinds) {
        row.push(Some(match cell {
            None => Value::Null,
            Some(b) => decode_text(kind, b)
                .map_err(|e| table_err(&plan.qualified(), "decode a value", e))?,
        }));
    }
    let position = namer.position(row_number, &row);
    Ok(ChangeEvent {
        op: Op::Read,
        table: schema.clone(),
        before: None,
        after: Some(row),
        position,
        txid: None,
        commit_ts_ms: None,
    })
}

/// The event schema of a planned table.
pub fn table_schema(plan: &TablePlan, info: &Arc<SourceInfo>) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        source: info.clone(),
        db: plan.db.clone(),
        schema: plan.db.clone(),
        name: plan.name.clone(),
        columns: plan.columns.clone(),
        key: plan.key.clone(),
        encoded: Default::default(),
    })
}

/// Reads one keyset chunk of a paginated table after `progress.last_key` (blocking) as
/// `r` events named by `namer`. `progress` then holds the last key and the row count.
pub fn read_chunk(
    conn: &mut SqlConn,
    plan: &TablePlan,
    schema: &Arc<TableSchema>,
    progress: &mut TableProgress,
    chunk_rows: usize,
    namer: &RowNamer,
) -> Result<Vec<ChangeEvent>, BackfillError> {
    let qualified = plan.qualified();
    let sql = chunk_sql(plan, progress.last_key.as_deref(), chunk_rows)
        .map_err(|e| table_err(&qualified, "build the chunk query", e))?;
    let rs = conn
        .query(&sql)
        .map_err(|e| table_err(&qualified, "read a chunk", e))?;
    if rs.columns.len() != plan.columns.len() {
        return Err(columns_changed(plan, rs.columns.len()));
    }
    let mut events = Vec::with_capacity(rs.rows.len());
    for (ri, cells) in rs.rows.into_iter().enumerate() {
        let k: Vec<String> = plan
            .key
            .iter()
            .map(|&i| {
                key_text(
                    &plan.kinds[i],
                    cells.get(i).and_then(|c| c.as_deref()).unwrap_or_default(),
                )
            })
            .collect();
        if ri == 0 && progress.last_key.as_ref() == Some(&k) {
            return Err(table_err(
                &qualified,
                "paginate by its primary key",
                "a chunk started at the previous chunk's last key",
            ));
        }
        progress.last_key = Some(k);
        progress.rows += 1;
        events.push(row_event(plan, schema, &cells, namer, progress.rows)?);
    }
    Ok(events)
}

fn send(
    tx: &mpsc::Sender<Chunk>,
    table: &str,
    events: Vec<ChangeEvent>,
    progress: TableProgress,
) -> Result<(), BackfillError> {
    tx.blocking_send(Chunk {
        table: table.to_owned(),
        events,
        progress,
        skipped: false,
    })
    .map_err(|_| BackfillError::ReaderGone)
}

fn joined<T>(
    r: Result<Result<T, BackfillError>, tokio::task::JoinError>,
) -> Result<T, BackfillError> {
    r.map_err(setup_err("run the blocking backfill reader"))?
}

/// Runs (or resumes) the backfill of a MySQL/MariaDB source: the MySQL branch of
/// [`super::run_initial`], the same steps as its PostgreSQL one.
#[allow(clippy::too_many_arguments)]
pub async fn run_mysql(
    cfg: &MysqlSourceConfig,
    at: &Endpoint,
    info: &Arc<SourceInfo>,
    filter: &Filter,
    settings: &BackfillSettings,
    store: &CheckpointStore,
    out: mpsc::Sender<crate::source::SourceMessage>,
    cancel: &CancellationToken,
    first: bool,
    status: &crate::status::SourceStatus,
) -> Result<super::Read, BackfillError> {
    let name = cfg.name.as_str();
    let (c, f, s) = (cfg.clone(), filter.clone(), settings.clone());
    let at = at.clone();
    // 1. Fix the stream's start before reading any row (the plan reads metadata only).
    let (mut conn, current, plans) = joined(
        tokio::task::spawn_blocking(move || {
            let mut conn = connect(&c, &at)?;
            // The same checks as the stream, so a bad setting is reported the same way.
            validate::validate(&mut conn, &c.user).map_err(setup_err("validate the server"))?;
            validate::check_filter(&mut conn, &f).map_err(setup_err("check the table filter"))?;
            let p0 = fix_start(&mut conn)?;
            let plans = plan(&mut conn, &f, &s, None)?;
            Ok((conn, p0, plans))
        })
        .await,
    )?;
    let start = match store.load(name)? {
        Some(Position::Mysql(p)) if !first => p,
        _ => {
            store.save(name, &Position::Mysql(current.clone())).await?;
            current
        }
    };
    store
        .save_backfill(name, RUN_KEY, &RunState::running())
        .await?;
    // Connected, and the stream's start is fixed: changes from now on are not missed.
    status.set_state(crate::status::SourceState::Backfilling);
    let (resume, estimate) = load_progress(
        store,
        name,
        plans.iter().map(|p| (p.qualified(), p.estimated_rows)),
    )?;
    tracing::info!(source = name, tables = plans.len(), estimated_rows = estimate, start = %format!("{}:{}", start.file, start.pos), "backfill starting");
    let mut progress = Progress::new(estimate);
    let (tx, rx) = mpsc::channel(2);
    let info2 = info.clone();
    let chunk_rows = settings.chunk_rows;
    let reader = tokio::task::spawn_blocking(move || {
        read_tables(&mut conn, &info2, &plans, &start, resume, chunk_rows, tx)
    });
    // Stopped early (shutdown, the pipeline stopped taking chunks): returning drops `rx`,
    // which stops the blocking reader at its next chunk.
    let forwarded = super::forward(rx, &out, &mut progress, cancel).await?;
    if !forwarded {
        return Ok(super::Read::Stopped);
    }
    joined(reader.await)?;
    progress.finish();
    Ok(super::Read::All)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(t: &str, cs: Option<&str>) -> ColumnMeta {
        ColumnMeta {
            name: "c".into(),
            column_type: t.into(),
            charset: cs.map(str::to_owned),
            json: false,
        }
    }

    #[test]
    fn kinds_from_column_types() {
        assert_eq!(
            kind_of(&meta("int(10) unsigned", None), true),
            Ok(Kind::Int {
                bytes: 4,
                unsigned: true
            })
        );
        assert_eq!(
            kind_of(&meta("decimal(10,2)", None), true),
            Ok(Kind::Decimal {
                precision: 10,
                scale: 2
            })
        );
        assert_eq!(
            kind_of(&meta("binary(16)", None), true),
            Ok(Kind::Char {
                max_len: 16,
                charset: Charset::Binary
            })
        );
        assert_eq!(
            kind_of(&meta("datetime(6)", None), true),
            Ok(Kind::DateTime { fsp: 6 })
        );
        assert!(matches!(
            kind_of(&meta("varchar(20)", Some("utf8mb4")), true),
            Ok(Kind::Varchar {
                charset: Charset::Utf8,
                ..
            })
        ));
        let Ok(Kind::Enum { names, .. }) = kind_of(&meta("enum('a','b(c)')", None), true) else {
            panic!("enum")
        };
        assert_eq!(*names, vec!["a".to_string(), "b(c)".to_string()]);
        assert_eq!(kind_of(&meta("uuid", None), true), Ok(Kind::Uuid));
        assert_eq!(kind_of(&meta("inet6", None), true), Ok(Kind::Inet6));
        assert!(
            kind_of(&meta("uuid", None), false).is_err(),
            "MySQL has no UUID type"
        );
        // MySQL 9's VECTOR (read as its packed float32 bytes).
        assert_eq!(
            kind_of(&meta("vector(3)", None), true),
            Ok(Kind::Vector { pack_len: 4 })
        );
    }

    #[test]
    fn chunk_sql_spells_out_the_row_comparison() {
        let plan = TablePlan {
            db: "d".into(),
            name: "t".into(),
            columns: vec!["a".into(), "b".into(), "c".into()],
            kinds: vec![
                Kind::Int {
                    bytes: 4,
                    unsigned: false,
                },
                Kind::Varchar {
                    max_len: 40,
                    charset: Charset::Utf8,
                },
                Kind::Blob {
                    pack_len: 2,
                    charset: Charset::Binary,
                },
            ],
            key: vec![0, 1],
            paginate: true,
            estimated_rows: 0,
        };
        let sql = chunk_sql(&plan, Some(&["5".to_string(), "it's".to_string()]), 100).expect("sql");
        assert_eq!(
            sql,
            "SELECT `a`, `b`, `c` FROM `d`.`t` WHERE (`a` > 5) OR (`a` = 5 AND `b` > _utf8mb4 X'69742773') ORDER BY `a`, `b` LIMIT 100"
        );
        assert_eq!(
            chunk_sql(&plan, None, 10).expect("sql"),
            "SELECT `a`, `b`, `c` FROM `d`.`t` ORDER BY `a`, `b` LIMIT 10"
        );
        assert!(chunk_sql(&plan, Some(&["5 OR 1=1".to_string(), "x".to_string()]), 1).is_err());
        let bin = Kind::Varchar {
            max_len: 4,
            charset: Charset::Binary,
        };
        assert_eq!(key_text(&bin, &[0, 0xAB]), "00AB");
        assert_eq!(key_literal(&bin, "00AB").expect("lit"), "X'00AB'");
        assert_eq!(key_text(&Kind::Bit { bits: 16 }, &[1, 2]), "258");
        let e = Kind::Enum {
            pack_len: 1,
            names: Arc::new(vec!["x".into(), "y".into()]),
        };
        assert_eq!(key_literal(&e, "y").expect("lit"), "2");
        assert_eq!(
            key_literal(&Kind::Date, "2024-01-02").expect("lit"),
            "'2024-01-02'"
        );
        assert!(!paginable(&Kind::Float));
    }
}
