//! Query mode over the PostgreSQL wire protocol (PostgreSQL, Redshift), with
//! `tokio-postgres`: the placeholders become bind parameters (`$n::text::<type>`, the type
//! PostgreSQL infers for the placeholder), the tie-break values too, and every result column
//! is read as text and decoded by the PostgreSQL source's decoder
//! ([`crate::source::postgres::types::decode_text`]).
//!
//! The run loop, the cursor and tie logic and the position live in the parent module.

use super::{CursorKind, FetchedRow, QueryError, Request, CURSOR_PH, SYNC_PH};
use crate::config::{Lookback, QuerySourceConfig, SslMode};
use crate::endpoint::Endpoint;
use crate::event::Row;
use crate::source::postgres::tls::{make_tls_connect, TlsError};
use crate::source::postgres::types::{decode_text, PgType, TypeCache};
use crate::value::Value;
use tokio_postgres::types::Type;

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> QueryError {
    move |source| QueryError::Sql { what, source }
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
    /// Without a lower bound (nothing read yet).
    first: tokio_postgres::Statement,
    /// From the run's lower bound: `cursor >= low`.
    from_low: tokio_postgres::Statement,
    /// After the last row read: `(cursor, keys) > last`.
    next: tokio_postgres::Statement,
    /// The SQL type of the cursor column.
    cursor_type: String,
    cursor_kind: CursorKind,
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
    let low = format!("(${}::text::{})", nparams + 1, type_sql(&cols[order[0]].1));
    let limit_low = format!("${}::text::int8", nparams + 2);
    let base = format!("SELECT {} FROM ({}\n) q", select.join(", "), inner);
    // Rows with a NULL cursor are never read: delivered, they would leave a NULL "last"
    // that no later row compares greater than.
    let first_sql = format!(
        "{base} WHERE {} IS NOT NULL ORDER BY {} LIMIT {limit_first}",
        order_by[0],
        order_by.join(", ")
    );
    let low_sql = format!(
        "{base} WHERE {} >= {low} ORDER BY {} LIMIT {limit_low}",
        order_by[0],
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
    let from_low = client
        .prepare(&low_sql)
        .await
        .map_err(sql("preparing the wrapped query"))?;
    let cursor_ty = &cols[order[0]].1;
    let cursor_kind = if [Type::DATE, Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(cursor_ty) {
        CursorKind::Time
    } else if [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::NUMERIC,
        Type::FLOAT4,
        Type::FLOAT8,
    ]
    .contains(cursor_ty)
    {
        CursorKind::Number
    } else {
        CursorKind::Other
    };
    Ok(Plan {
        first,
        from_low,
        next,
        cursor_type: type_sql(cursor_ty),
        cursor_kind,
        uses_cursor,
        uses_sync,
        columns: cols.iter().map(|(n, _)| n.clone()).collect(),
        oids: cols.iter().map(|(_, t)| t.oid()).collect(),
        order,
    })
}

async fn connect(
    cfg: &QuerySourceConfig,
    at: &Endpoint,
) -> Result<
    (
        tokio_postgres::Client,
        crate::source::postgres::tls::SqlConnection,
    ),
    QueryError,
> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&at.host)
        .port(at.port)
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
    let tls = make_tls_connect(cfg.sslmode, cfg.sslrootcert.as_deref())
        .map_err(QueryError::Connect)?
        .with_server_name(at.tls_server_name.clone());
    pg.connect(tls).await.map_err(|source| {
        QueryError::Connect(TlsError::Connect {
            host: at.host.clone(),
            port: at.port,
            user: cfg.user.clone(),
            mode: crate::source::postgres::tls::mode_name(cfg.sslmode),
            source,
        })
    })
}

/// The result columns of the configured query as (name, type name), for
/// `logtide discover`: prepares the query (nothing is executed).
pub(super) async fn result_columns(
    cfg: &QuerySourceConfig,
    at: &Endpoint,
) -> Result<Vec<(String, String)>, QueryError> {
    let (client, conn) = connect(cfg, at).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %crate::error::ErrorChain(&e), "query source connection ended");
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connected PostgreSQL-wire query source: the session is UTC, the statements prepared.
pub(super) struct PgBackend {
    client: tokio_postgres::Client,
    _driver: AbortOnDrop,
    plan: Plan,
    decoders: Vec<PgType>,
    /// Whether `{{cursor}}` comes before `{{last_sync_time}}` in the query (parameter order).
    cursor_first: bool,
}

impl PgBackend {
    pub(super) async fn connect(
        cfg: &QuerySourceConfig,
        at: &Endpoint,
    ) -> Result<PgBackend, QueryError> {
        let (client, conn) = connect(cfg, at).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %crate::error::ErrorChain(&e), "query source connection ended");
            }
        });
        let driver = AbortOnDrop(driver);
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
        let cursor_first = match (cfg.query.find(CURSOR_PH), cfg.query.find(SYNC_PH)) {
            (Some(c), Some(s)) => c < s,
            _ => true,
        };
        Ok(PgBackend {
            client,
            _driver: driver,
            plan,
            decoders,
            cursor_first,
        })
    }

    pub(super) fn columns(&self) -> &[String] {
        &self.plan.columns
    }

    /// Indices of the cursor column followed by the key columns.
    pub(super) fn order(&self) -> &[usize] {
        &self.plan.order
    }

    pub(super) fn cursor_kind(&self) -> CursorKind {
        self.plan.cursor_kind
    }

    /// `mark − lookback` in the cursor column's type, as its text.
    pub(super) async fn lower(
        &mut self,
        mark: &str,
        lookback: &Lookback,
    ) -> Result<String, QueryError> {
        let t = &self.plan.cursor_type;
        let (sql_text, amount) = match lookback {
            // A date minus an interval is a timestamp: cast back (a date truncates down).
            Lookback::Time(d) => (
                format!("SELECT ((($1::text::{t}) - ($2::text::interval))::{t})::text"),
                format!("{} microseconds", d.as_micros()),
            ),
            Lookback::Amount(a) => (
                format!("SELECT (($1::text::{t}) - ($2::text::{t}))::text"),
                a.clone(),
            ),
        };
        let row = self
            .client
            .query_one(sql_text.as_str(), &[&mark, &amount.as_str()])
            .await
            .map_err(sql("computing the look-back window's lower bound"))?;
        row.try_get::<_, String>(0)
            .map_err(sql("computing the look-back window's lower bound"))
    }

    /// One page: the rows after `req.last` (all rows without it), in (cursor, key) order.
    pub(super) async fn fetch(&mut self, req: &Request<'_>) -> Result<Vec<FetchedRow>, QueryError> {
        let plan = &self.plan;
        let mut params: Vec<Option<String>> = Vec::new();
        // Inner placeholders in their parameter order.
        let cur = || req.cursor.map(str::to_owned);
        let syn = || Some(req.sync.to_string());
        match (plan.uses_cursor, plan.uses_sync, self.cursor_first) {
            (true, true, true) => params.extend([cur(), syn()]),
            (true, true, false) => params.extend([syn(), cur()]),
            (true, false, _) => params.push(cur()),
            (false, true, _) => params.push(syn()),
            (false, false, _) => {}
        }
        let stmt = match (req.last, req.low) {
            (Some(l), _) => {
                params.extend(l.iter().cloned());
                &plan.next
            }
            (None, Some(low)) => {
                params.push(Some(low.to_owned()));
                &plan.from_low
            }
            (None, None) => &plan.first,
        };
        params.push(Some(req.limit.to_string()));
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = self
            .client
            .query(stmt, &refs)
            .await
            .map_err(sql("running the query"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut texts: Vec<Option<&str>> = Vec::with_capacity(self.decoders.len());
            for i in 0..self.decoders.len() {
                texts.push(row.try_get(i).map_err(sql("reading a result row"))?);
            }
            let mut values: Row = Vec::with_capacity(texts.len());
            for (i, t) in texts.iter().enumerate() {
                let v = match t {
                    None => Value::Null,
                    Some(s) => decode_text(&self.decoders[i], s.as_bytes()).map_err(|source| {
                        QueryError::Value {
                            column: plan.columns[i].clone(),
                            source,
                        }
                    })?,
                };
                values.push(Some(v));
            }
            out.push(FetchedRow {
                values,
                order: plan
                    .order
                    .iter()
                    .map(|&i| texts[i].map(str::to_owned))
                    .collect(),
            });
        }
        Ok(out)
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
}
