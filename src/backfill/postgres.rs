//! PostgreSQL backfill: fixes the slot's start position, lists the published tables, and
//! reads them in keyset chunks with `COPY (SELECT …) TO STDOUT` (text format), decoding
//! values with the same decoder as the stream (`source::postgres::types`).
//!
//! Owns the SQL of the backfill; the hand-over rule is in the parent module's docs.

use super::{BackfillError, Chunk, RowNamer, TableProgress};
use crate::config::{BackfillMode, BackfillSettings, PostgresSourceConfig};
use crate::endpoint::Endpoint;
use crate::event::{ChangeEvent, Op, SourceInfo, TableSchema};
use crate::filter::Filter;
use crate::position::{Lsn, PgPosition, Position};
use crate::source::postgres::conn::{quote_ident, quote_literal};
use crate::source::postgres::tls::connect_sql;
use crate::source::postgres::types::{decode_text, PgType, TypeCache};
use crate::value::Value;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use std::borrow::Cow;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_postgres::Client;

/// `fut`, an exchange with the server, answered within `limit` (the source's
/// `read_timeout`), else [`BackfillError::Silent`]. TCP keepalive cannot see a peer that
/// still acknowledges but forwards nothing (a proxy, a half-partition); this can.
pub async fn bounded<T>(
    limit: std::time::Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, BackfillError>>,
) -> Result<T, BackfillError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(BackfillError::Silent { what, after: limit }))
}

fn setup_err<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> BackfillError {
    move |e| BackfillError::Setup {
        what,
        source: Box::new(e),
    }
}

fn table_err<E: std::error::Error + Send + Sync + 'static>(
    table: &str,
    what: &'static str,
) -> impl FnOnce(E) -> BackfillError {
    let table = table.to_owned();
    move |e| BackfillError::Postgres {
        table,
        what,
        source: Box::new(e),
    }
}

/// A table to copy: its columns after the filter, their types, and the key.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub schema: String,
    pub name: String,
    /// (name, type OID, SQL type for casting a key literal).
    pub columns: Vec<(String, u32, String)>,
    /// Indices into `columns` of the primary key (else the replica identity index, like the
    /// stream), in key order; empty: neither.
    pub key: Vec<usize>,
    pub estimated_rows: u64,
}

impl TablePlan {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// Opens the SQL connection to `at`; its driver runs on a task owned by the returned handle.
pub async fn connect(
    cfg: &PostgresSourceConfig,
    at: &Endpoint,
) -> Result<(Client, tokio::task::JoinHandle<()>), BackfillError> {
    let (client, conn) = connect_sql(cfg, at).await.map_err(setup_err("connect"))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %crate::error::ErrorChain(&e), "backfill sql connection ended");
        }
    });
    // The text forms the shared decoder expects.
    client
        .batch_execute("SET standard_conforming_strings = on; SET datestyle = 'ISO, YMD'; SET intervalstyle = 'postgres'; SET extra_float_digits = 3")
        .await
        .map_err(setup_err("set session options"))?;
    Ok((client, driver))
}

/// Creates the slot if missing and returns the position the stream will start from.
pub async fn fix_start(client: &Client, cfg: &PostgresSourceConfig) -> Result<Lsn, BackfillError> {
    let slot = cfg.slot_name();
    let row = client
        .query_opt(
            "SELECT coalesce(confirmed_flush_lsn, restart_lsn)::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(setup_err("look up the replication slot"))?;
    let lsn: String = match row {
        Some(r) => r
            .try_get(0)
            .map_err(setup_err("read the replication slot"))?,
        None => {
            let r = client
                .query_one("SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
                .await
                .map_err(setup_err("create the replication slot (the role needs REPLICATION)"))?;
            tracing::info!(slot = %slot, "created replication slot for backfill hand-over");
            r.try_get(0)
                .map_err(setup_err("read the new slot's position"))?
        }
    };
    lsn.parse::<Lsn>()
        .map_err(setup_err("parse the slot's position"))
}

/// The published tables the filter selects and the backfill settings include, with columns
/// and keys.
pub async fn plan(
    client: &Client,
    cfg: &PostgresSourceConfig,
    filter: &Filter,
    settings: &BackfillSettings,
    only: Option<&str>,
) -> Result<Vec<TablePlan>, BackfillError> {
    let rows = client
        .query(
            // Partitions (a publication without publish_via_partition_root lists them)
            // are read once through their partitioned root, under its name, as the stream
            // names them.
            "SELECT DISTINCT r.oid, rn.nspname::text, r.relname::text, \
                    coalesce((SELECT sum(greatest(x.reltuples, 0)) FROM pg_catalog.pg_partition_tree(r.oid) pt \
                              JOIN pg_catalog.pg_class x ON x.oid = pt.relid), greatest(r.reltuples, 0))::int8 \
             FROM pg_catalog.pg_publication_tables p \
             JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             JOIN pg_catalog.pg_class r ON r.oid = coalesce(pg_catalog.pg_partition_root(c.oid), c.oid) \
             JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
             WHERE p.pubname = $1 ORDER BY 2, 3",
            &[&cfg.publication_name()],
        )
        .await
        .map_err(setup_err("list the publication's tables"))?;
    // PostgreSQL 18 streams stored generated columns when the publication says so: read
    // them then too, so backfilled and streamed rows have the same columns.
    let generated = client
        .query_opt(
            "SELECT coalesce(to_jsonb(p)->>'pubgencols', 'n') = 's' FROM pg_catalog.pg_publication p WHERE p.pubname = $1",
            &[&cfg.publication_name()],
        )
        .await
        .map_err(setup_err("read the publication"))?
        .map(|r| r.try_get::<_, bool>(0))
        .transpose()
        .map_err(setup_err("read the publication"))?
        .unwrap_or(false);
    let mut plans = Vec::new();
    for r in rows {
        let oid: u32 = r.try_get(0).map_err(setup_err("read table list"))?;
        let schema: String = r.try_get(1).map_err(setup_err("read table list"))?;
        let name: String = r.try_get(2).map_err(setup_err("read table list"))?;
        let est: i64 = r.try_get(3).map_err(setup_err("read table list"))?;
        let qualified = format!("{schema}.{name}");
        if !filter.table_selected(&schema, &name) {
            continue;
        }
        match only {
            Some(t) if t != qualified => continue,
            None if settings.mode_for(&qualified) == BackfillMode::Never => continue,
            _ => {}
        }
        let cols = client
            .query(
                "SELECT a.attname::text, a.atttypid, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                        coalesce(array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) + 1, 0)::int4 \
                 FROM pg_catalog.pg_attribute a \
                 LEFT JOIN LATERAL (SELECT x.indkey FROM pg_catalog.pg_index x WHERE x.indrelid = a.attrelid AND (x.indisprimary OR x.indisreplident) ORDER BY x.indisprimary DESC LIMIT 1) i ON true \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                   AND (a.attgenerated = '' OR (a.attgenerated = 's' AND $2)) ORDER BY a.attnum",
                &[&oid, &generated],
            )
            .await
            .map_err(table_err(&qualified, "read its columns"))?;
        let mut all = Vec::new();
        let mut key_pos: Vec<(i32, usize)> = Vec::new();
        for (i, c) in cols.iter().enumerate() {
            let cname: String = c
                .try_get(0)
                .map_err(table_err(&qualified, "read its columns"))?;
            let typ: u32 = c
                .try_get(1)
                .map_err(table_err(&qualified, "read its columns"))?;
            let tname: String = c
                .try_get(2)
                .map_err(table_err(&qualified, "read its columns"))?;
            let kp: i32 = c
                .try_get(3)
                .map_err(table_err(&qualified, "read its columns"))?;
            if kp > 0 {
                key_pos.push((kp, i));
            }
            all.push((cname, typ, tname));
        }
        key_pos.sort();
        let key_idx: Vec<usize> = key_pos.iter().map(|(_, i)| *i).collect();
        let names: Vec<&str> = all.iter().map(|c| c.0.as_str()).collect();
        let proj = filter
            .project(&schema, &name, &names, &key_idx)
            .map_err(|e| BackfillError::Setup {
                what: "apply the column filter",
                source: Box::new(e),
            })?;
        let columns: Vec<(String, u32, String)> =
            proj.keep.iter().map(|&i| all[i].clone()).collect();
        // Key in key order, as indices into the projected columns.
        let key: Vec<usize> = key_idx
            .iter()
            .filter_map(|k| proj.keep.iter().position(|x| x == k))
            .collect();
        if key.is_empty() {
            tracing::warn!(table = %qualified, "table has no primary key: backfilled in one pass, restarted from the beginning if interrupted, and its events have key = null");
        }
        plans.push(TablePlan {
            schema,
            name,
            columns,
            key,
            estimated_rows: est as u64,
        });
    }
    // Byte order of the names (the cursors' order), whatever the server's collation.
    plans.sort_by(|a, b| {
        (a.schema.as_bytes(), a.name.as_bytes()).cmp(&(b.schema.as_bytes(), b.name.as_bytes()))
    });
    Ok(plans)
}

/// The chunk query for `plan` after `last` (text forms of the key).
fn chunk_sql(plan: &TablePlan, last: Option<&[String]>, limit: usize) -> String {
    let cols: Vec<String> = plan.columns.iter().map(|c| quote_ident(&c.0)).collect();
    let table = format!("{}.{}", quote_ident(&plan.schema), quote_ident(&plan.name));
    let mut sql = format!("SELECT {} FROM {table}", cols.join(", "));
    if plan.key.is_empty() {
        return format!("COPY ({sql}) TO STDOUT");
    }
    let key_cols: Vec<String> = plan
        .key
        .iter()
        .map(|&i| quote_ident(&plan.columns[i].0))
        .collect();
    if let Some(last) = last {
        let lits: Vec<String> = plan
            .key
            .iter()
            .zip(last)
            .map(|(&i, v)| format!("{}::{}", quote_literal(v), plan.columns[i].2))
            .collect();
        sql.push_str(&format!(
            " WHERE ({}) > ({})",
            key_cols.join(", "),
            lits.join(", ")
        ));
    }
    sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", key_cols.join(", ")));
    format!("COPY ({sql}) TO STDOUT")
}

/// Splits one COPY text row into its fields, undoing COPY's escapes; `None` is `\N`. A
/// field without escapes borrows from `line` (most fields: no copy per field).
pub fn parse_copy_row(line: &[u8]) -> Result<Vec<Option<Cow<'_, [u8]>>>, &'static str> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut out = Vec::with_capacity(8);
    for field in line.split(|&b| b == b'\t') {
        if field == b"\\N" {
            out.push(None);
            continue;
        }
        if !field.contains(&b'\\') {
            out.push(Some(Cow::Borrowed(field)));
            continue;
        }
        out.push(Some(Cow::Owned(unescape_copy_field(field)?)));
    }
    Ok(out)
}

/// Undoes COPY's backslash escapes in one field.
fn unescape_copy_field(field: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut v = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' {
            v.push(b);
            i += 1;
            continue;
        }
        let Some(&e) = field.get(i + 1) else {
            return Err("dangling backslash");
        };
        i += 2;
        match e {
            b'b' => v.push(8),
            b'f' => v.push(12),
            b'n' => v.push(b'\n'),
            b'r' => v.push(b'\r'),
            b't' => v.push(b'\t'),
            b'v' => v.push(11),
            b'0'..=b'7' => {
                let mut n = u32::from(e - b'0');
                let mut k = 0;
                while k < 2 {
                    match field.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            n = n * 8 + u32::from(d - b'0');
                            i += 1;
                            k += 1;
                        }
                        _ => break,
                    }
                }
                v.push((n & 0xFF) as u8);
            }
            b'x' => {
                let mut n = 0u32;
                let mut k = 0;
                while k < 2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            n = n * 16 + d;
                            i += 1;
                            k += 1;
                        }
                        None => break,
                    }
                }
                if k == 0 {
                    return Err("\\x without hex digits");
                }
                v.push(n as u8);
            }
            other => v.push(other),
        }
    }
    Ok(v)
}

/// The event schema of a planned table.
pub fn table_schema(
    plan: &TablePlan,
    cfg: &PostgresSourceConfig,
    info: &Arc<SourceInfo>,
) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        source: info.clone(),
        db: cfg.database.clone(),
        schema: plan.schema.clone(),
        name: plan.name.clone(),
        columns: plan.columns.iter().map(|c| c.0.clone()).collect(),
        key: plan.key.clone(),
        encoded: Default::default(),
    })
}

/// Resolves the types of a planned table's columns.
pub async fn column_types(
    client: &Client,
    types: &mut TypeCache,
    plan: &TablePlan,
) -> Result<Vec<PgType>, BackfillError> {
    let oids: Vec<u32> = plan.columns.iter().map(|c| c.1).collect();
    types
        .resolve(client, &oids)
        .await
        .map_err(table_err(&plan.qualified(), "resolve column types"))?;
    Ok(oids.iter().map(|o| types.get(*o)).collect())
}

/// One table being read: its plan, column types and event schema.
pub struct TableReader<'a> {
    pub plan: &'a TablePlan,
    pub tys: &'a [PgType],
    pub schema: &'a Arc<TableSchema>,
    /// Longest wait for the server's next COPY message (`read_timeout`).
    pub limit: std::time::Duration,
}

impl TableReader<'_> {
    /// Splits one COPY text line into exactly one field per column.
    fn fields<'l>(&self, line: &'l [u8]) -> Result<Vec<Option<Cow<'l, [u8]>>>, BackfillError> {
        let bad = |source: Box<dyn std::error::Error + Send + Sync>| BackfillError::Postgres {
            table: self.plan.qualified(),
            what: "parse COPY row",
            source,
        };
        let fields = parse_copy_row(line).map_err(|e| bad(e.into()))?;
        if fields.len() != self.tys.len() {
            return Err(bad(format!(
                "{} fields for {} columns",
                fields.len(),
                self.tys.len()
            )
            .into()));
        }
        Ok(fields)
    }

    /// Decodes one COPY text line, the `row_number`-th of its pass, into an `r` event named
    /// by `namer`.
    fn event(
        &self,
        line: &[u8],
        namer: &RowNamer,
        row_number: u64,
    ) -> Result<ChangeEvent, BackfillError> {
        let fields = self.fields(line)?;
        let mut row = Vec::with_capacity(self.tys.len());
        for (f, ty) in fields.iter().zip(self.tys) {
            row.push(Some(match f {
                None => Value::Null,
                Some(b) => decode_text(ty, b)
                    .map_err(|e| table_err(&self.plan.qualified(), "decode a value")(e))?,
            }));
        }
        let position = namer.position(row_number, &row);
        Ok(ChangeEvent {
            op: Op::Read,
            table: self.schema.clone(),
            before: None,
            after: Some(row),
            position,
            txid: None,
            commit_ts_ms: None,
        })
    }

    /// The text forms of the key of a COPY line (a keyed table's last row of a chunk: the
    /// next chunk starts after it).
    fn key_text(&self, line: &[u8]) -> Result<Vec<String>, BackfillError> {
        let fields = self.fields(line)?;
        Ok(self
            .plan
            .key
            .iter()
            .map(|&i| {
                String::from_utf8_lossy(fields[i].as_deref().unwrap_or_default()).into_owned()
            })
            .collect())
    }

    /// Runs the chunk query after `progress.last_key` and appends every row's event to
    /// `events`, named by `namer` (row `n` of the table counts `progress.rows`, 1-based). A keyless table's one query streams through here whole: with
    /// `pieces`, every `chunk_rows` events are sent on as a chunk. Returns the rows read;
    /// `progress` then holds the last key and the row count.
    pub async fn copy(
        &self,
        client: &Client,
        progress: &mut TableProgress,
        chunk_rows: usize,
        namer: &RowNamer,
        events: &mut Vec<ChangeEvent>,
        pieces: Option<&mpsc::Sender<Chunk>>,
    ) -> Result<usize, BackfillError> {
        let qualified = self.plan.qualified();
        let sql = chunk_sql(self.plan, progress.last_key.as_deref(), chunk_rows);
        let stream = bounded(self.limit, "start a COPY", async {
            client
                .copy_out(sql.as_str())
                .await
                .map_err(table_err(&qualified, "start COPY"))
        })
        .await?;
        futures_util::pin_mut!(stream);
        let keyed = !self.plan.key.is_empty();
        // The server sends a row per message: lines are parsed in place, and only a row
        // split across messages is joined here.
        let mut pending: Vec<u8> = Vec::new();
        // The last row's line: a keyed table's next chunk starts after its key.
        let mut last_line: Vec<u8> = Vec::new();
        let mut n = 0usize;
        loop {
            // A message already received is taken without arming the read timeout (a
            // timer per row cost more than the row's decoding).
            let next = match stream.next().now_or_never() {
                Some(next) => next,
                None => {
                    bounded(self.limit, "read COPY data", async {
                        Ok(stream.next().await)
                    })
                    .await?
                }
            };
            let Some(data) = next else { break };
            let data: Bytes = data.map_err(|e| table_err(&qualified, "read COPY data")(e))?;
            let joined;
            let buf: &[u8] = if pending.is_empty() {
                &data
            } else {
                pending.extend_from_slice(&data);
                joined = std::mem::take(&mut pending);
                &joined
            };
            let mut consumed = 0;
            while let Some(nl) = buf[consumed..].iter().position(|&b| b == b'\n') {
                let line = &buf[consumed..consumed + nl];
                consumed += nl + 1;
                let event = self.event(line, namer, progress.rows + 1)?;
                progress.rows += 1;
                n += 1;
                if keyed {
                    last_line.clear();
                    last_line.extend_from_slice(line);
                }
                events.push(event);
                if let Some(tx) = pieces.filter(|_| events.len() >= chunk_rows) {
                    let piece = std::mem::replace(events, Vec::with_capacity(chunk_rows));
                    send(tx, &qualified, piece, progress.clone()).await?;
                }
            }
            pending.extend_from_slice(&buf[consumed..]);
        }
        if keyed && n > 0 {
            progress.last_key = Some(self.key_text(&last_line)?);
        }
        Ok(n)
    }
}

/// Reads every planned table, sending chunks in order. `start` is the stream's start LSN.
#[allow(clippy::too_many_arguments)]
pub async fn read_tables(
    client: &Client,
    cfg: &PostgresSourceConfig,
    info: &Arc<SourceInfo>,
    plans: &[TablePlan],
    start: Lsn,
    resume: Vec<TableProgress>,
    chunk_rows: usize,
    tx: mpsc::Sender<Chunk>,
) -> Result<(), BackfillError> {
    let mut types = TypeCache::new();
    for (plan, progress) in plans.iter().zip(resume) {
        if progress.done {
            continue;
        }
        let qualified = plan.qualified();
        // A table dropped while the backfill runs is skipped, not fatal (see below).
        let read = async {
            let tys = bounded(
                cfg.read_timeout,
                "resolve column types",
                column_types(client, &mut types, plan),
            )
            .await?;
            let schema = table_schema(plan, cfg, info);
            let reader = TableReader {
                plan,
                tys: &tys,
                schema: &schema,
                limit: cfg.read_timeout,
            };
            // Rows are named by table, key and content, read at the stream's start.
            let namer = RowNamer::new(
                &Position::Postgres(PgPosition::checkpoint(start)),
                &qualified,
                &schema.columns,
                &plan.key,
            );
            let keyless = plan.key.is_empty();
            let mut progress = if keyless {
                TableProgress::default()
            } else {
                progress
            };
            loop {
                let mut events = Vec::with_capacity(chunk_rows.min(65_536));
                // Keyless tables come in one COPY: hand them over in chunk-sized pieces.
                let pieces = keyless.then_some(&tx);
                let in_chunk = reader
                    .copy(
                        client,
                        &mut progress,
                        chunk_rows,
                        &namer,
                        &mut events,
                        pieces,
                    )
                    .await?;
                let finished = keyless || in_chunk < chunk_rows;
                progress.done = finished;
                send(&tx, &qualified, events, progress.clone()).await?;
                if finished {
                    break;
                }
            }
            Ok::<(), BackfillError>(())
        }
        .await;
        match read {
            Err(e) if crate::source::classify::is_missing_table(&e) => {
                super::skip_dropped(&qualified, &e);
                send_skipped(&tx, &qualified).await?;
            }
            r => r?,
        }
    }
    Ok(())
}

/// Tells the delivery that `table` was skipped (dropped during the backfill).
async fn send_skipped(tx: &mpsc::Sender<Chunk>, table: &str) -> Result<(), BackfillError> {
    tx.send(Chunk::skipped(table))
        .await
        .map_err(|_| BackfillError::ReaderGone)
}

async fn send(
    tx: &mpsc::Sender<Chunk>,
    table: &str,
    events: Vec<ChangeEvent>,
    progress: TableProgress,
) -> Result<(), BackfillError> {
    tx.send(Chunk {
        table: table.to_owned(),
        events,
        progress,
        skipped: false,
    })
    .await
    .map_err(|_| BackfillError::ReaderGone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_unescape() {
        let r = parse_copy_row(b"1\ta\\tb\\nc\\\\d\t\\N\t\\101\\x42\n").expect("parse");
        assert_eq!(
            r,
            vec![
                Some(Cow::Borrowed(&b"1"[..])),
                Some(Cow::Owned(b"a\tb\nc\\d".to_vec())),
                None,
                Some(Cow::Owned(b"AB".to_vec()))
            ]
        );
        assert!(parse_copy_row(b"x\\").is_err());
        assert_eq!(
            parse_copy_row(b"").expect("empty"),
            vec![Some(Cow::Borrowed(&b""[..]))]
        );
    }

    #[test]
    fn chunk_sql_uses_row_comparison_and_casts() {
        let plan = TablePlan {
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                ("a".into(), 23, "integer".into()),
                ("b".into(), 25, "text".into()),
                ("c".into(), 25, "text".into()),
            ],
            key: vec![0, 1],
            estimated_rows: 0,
        };
        let sql = chunk_sql(&plan, Some(&["5".to_string(), "it's".to_string()]), 100);
        assert_eq!(
            sql,
            "COPY (SELECT \"a\", \"b\", \"c\" FROM \"public\".\"t\" WHERE (\"a\", \"b\") > ('5'::integer, 'it''s'::text) ORDER BY \"a\", \"b\" LIMIT 100) TO STDOUT"
        );
        let first = chunk_sql(&plan, None, 10);
        assert!(
            first.ends_with("ORDER BY \"a\", \"b\" LIMIT 10) TO STDOUT"),
            "{first}"
        );
    }
}
