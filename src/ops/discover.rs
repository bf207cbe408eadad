//! `logtide discover`: the tables and columns a source's server has, and which of them the
//! configured filter captures — decided by [`crate::filter::Filter`], the same code `run`
//! uses, with the same key columns (primary key, else the replica identity).
//!
//! The catalog loaders here are shared with `check` (privileges and replica identity per
//! table come from the same query).

use super::qualified;
use crate::config::{MysqlSourceConfig, QuerySourceConfig};
use crate::endpoint::Endpoint;
use crate::filter::Filter;
use crate::source::mysql::sql::SqlConn;
use crate::source::mysql::MysqlError;
use serde::Serialize;
use std::fmt::Write as _;

/// One column of a table.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub nullable: bool,
    /// Part of the key events carry (primary key, else the replica identity).
    pub key: bool,
    /// Whether events carry this column under the current config.
    pub captured: bool,
}

/// One table of a source.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    /// Primary-key columns in key order (empty: none).
    pub primary_key: Vec<String>,
    /// PostgreSQL REPLICA IDENTITY: `default`, `full`, `index` or `nothing`; `null` for MySQL.
    pub replica_identity: Option<String>,
    /// Whether the table filter captures the table.
    pub captured: bool,
    /// Why a captured table is a problem (a key column filtered out, missing from the
    /// publication), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub columns: Vec<ColumnInfo>,
    /// The user may SELECT from it.
    #[serde(skip)]
    pub can_select: bool,
    /// The user may INSERT, UPDATE or DELETE.
    #[serde(skip)]
    pub can_write: bool,
    /// PostgreSQL replica identity index columns (REPLICA IDENTITY USING INDEX).
    #[serde(skip)]
    identity_index: Vec<String>,
}

impl TableInfo {
    pub fn qualified_name(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// The key events carry: the primary key, else the replica identity index (USING
    /// INDEX), else none (REPLICA IDENTITY FULL is no key: events then carry `key: null`).
    pub fn key_columns(&self) -> Vec<String> {
        if !self.primary_key.is_empty() {
            return self.primary_key.clone();
        }
        match self.replica_identity.as_deref() {
            Some("index") => self.identity_index.clone(),
            _ => Vec::new(),
        }
    }
}

/// Marks which tables and columns `filter` captures (and a key column it would drop).
pub fn apply_filter(tables: &mut [TableInfo], filter: &Filter) {
    for t in tables.iter_mut() {
        t.captured = filter.table_selected(&t.schema, &t.name);
        let key = t.key_columns();
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        let key_idx: Vec<usize> = key
            .iter()
            .filter_map(|k| names.iter().position(|n| n == k))
            .collect();
        let keep = match filter.project(&t.schema, &t.name, &names, &key_idx) {
            Ok(p) => p.keep,
            Err(e) => {
                if t.captured {
                    t.problem = Some(e.to_string());
                }
                Vec::new()
            }
        };
        for (i, c) in t.columns.iter_mut().enumerate() {
            c.key = key_idx.contains(&i);
            c.captured = t.captured && keep.contains(&i);
        }
    }
}

fn relreplident(c: &str) -> &'static str {
    match c {
        "f" => "full",
        "i" => "index",
        "n" => "nothing",
        _ => "default",
    }
}

/// Every ordinary and partitioned table outside the system schemas, with columns, keys,
/// replica identity and the current user's privileges. Partitions are not listed: their
/// changes are captured (and named) as their partitioned table's.
pub async fn pg_tables(
    client: &tokio_postgres::Client,
) -> Result<Vec<TableInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text, \
                    has_table_privilege(c.oid, 'SELECT'), \
                    has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE'), \
                    a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, \
                    array_position(pk.indkey::int2[], a.attnum)::int4, \
                    array_position(ri.indkey::int2[], a.attnum) IS NOT NULL \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_catalog.pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary \
             LEFT JOIN pg_catalog.pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' \
             ORDER BY n.nspname, c.relname, a.attnum",
            &[],
        )
        .await?;
    let mut out: Vec<TableInfo> = Vec::new();
    let mut pk_pos: Vec<Vec<(i32, String)>> = Vec::new();
    for r in &rows {
        let schema: String = r.try_get(0)?;
        let name: String = r.try_get(1)?;
        let same = out
            .last()
            .is_some_and(|t| t.schema == schema && t.name == name);
        if !same {
            let ident: String = r.try_get(2)?;
            out.push(TableInfo {
                schema,
                name,
                primary_key: Vec::new(),
                replica_identity: Some(relreplident(&ident).to_owned()),
                captured: false,
                problem: None,
                columns: Vec::new(),
                can_select: r.try_get(3)?,
                can_write: r.try_get(4)?,
                identity_index: Vec::new(),
            });
            pk_pos.push(Vec::new());
        }
        let col: String = r.try_get(5)?;
        let pk: Option<i32> = r.try_get(8)?;
        let in_ri: bool = r.try_get(9)?;
        if let (Some(t), Some(p)) = (out.last_mut(), pk_pos.last_mut()) {
            if let Some(i) = pk {
                p.push((i, col.clone()));
            }
            if in_ri {
                t.identity_index.push(col.clone());
            }
            t.columns.push(ColumnInfo {
                name: col,
                type_name: r.try_get(6)?,
                nullable: r.try_get(7)?,
                key: false,
                captured: false,
            });
        }
    }
    for (t, mut p) in out.iter_mut().zip(pk_pos) {
        p.sort();
        t.primary_key = p.into_iter().map(|(_, c)| c).collect();
    }
    Ok(out)
}

const MYSQL_SYSTEM: &str = "('mysql', 'information_schema', 'performance_schema', 'sys')";

/// Every base table outside the system databases, with columns and primary keys.
/// `can_select`/`can_write` are left `true`/`false`: MySQL privileges are judged from the
/// grants instead.
pub fn mysql_tables(conn: &mut SqlConn) -> Result<Vec<TableInfo>, MysqlError> {
    let rs = conn.query(&format!(
        "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE \
         FROM information_schema.COLUMNS c JOIN information_schema.TABLES t \
           ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
         WHERE t.TABLE_TYPE = 'BASE TABLE' AND c.TABLE_SCHEMA NOT IN {MYSQL_SYSTEM} \
         ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"
    ))?;
    let mut out: Vec<TableInfo> = Vec::new();
    for r in 0..rs.rows.len() {
        let (Some(schema), Some(name), Some(col)) = (rs.text(r, 0), rs.text(r, 1), rs.text(r, 2))
        else {
            continue;
        };
        let same = out
            .last()
            .is_some_and(|t| t.schema == schema && t.name == name);
        if !same {
            out.push(TableInfo {
                schema,
                name,
                primary_key: Vec::new(),
                replica_identity: None,
                captured: false,
                problem: None,
                columns: Vec::new(),
                can_select: true,
                can_write: false,
                identity_index: Vec::new(),
            });
        }
        if let Some(t) = out.last_mut() {
            t.columns.push(ColumnInfo {
                name: col,
                type_name: rs.text(r, 3).unwrap_or_default(),
                nullable: rs.text(r, 4).is_some_and(|v| v.eq_ignore_ascii_case("YES")),
                key: false,
                captured: false,
            });
        }
    }
    let keys = conn.query(&format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
         WHERE CONSTRAINT_NAME = 'PRIMARY' AND TABLE_SCHEMA NOT IN {MYSQL_SYSTEM} \
         ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
    ))?;
    for r in 0..keys.rows.len() {
        let (Some(s), Some(n), Some(c)) = (keys.text(r, 0), keys.text(r, 1), keys.text(r, 2))
        else {
            continue;
        };
        if let Some(t) = out.iter_mut().find(|t| t.schema == s && t.name == n) {
            t.primary_key.push(c);
        }
    }
    Ok(out)
}

/// What `discover` found for one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceTables {
    pub source: String,
    pub kind: &'static str,
    /// Tables (log-based sources); empty for query mode.
    pub tables: Vec<TableInfo>,
    /// Query mode: the result columns (name, type) of the configured query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_columns: Option<Vec<ColumnInfo>>,
    /// Why the source could not be inspected, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Inspects a PostgreSQL source at `at`.
pub async fn discover_postgres(
    cfg: &crate::config::PostgresSourceConfig,
    at: &Endpoint,
    filter: &Filter,
) -> SourceTables {
    let mut st = SourceTables {
        source: cfg.name.clone(),
        kind: "postgres",
        tables: Vec::new(),
        query_columns: None,
        error: None,
    };
    let (client, conn) = match crate::source::postgres::tls::connect_sql(cfg, at).await {
        Ok(c) => c,
        Err(e) => {
            let (what, fix) =
                super::describe_pg_connect_error(&cfg.user, cfg.password_env.as_deref(), &e);
            st.error = Some(format!("{what} — {fix}"));
            return st;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        let _ = conn.await;
    });
    match pg_tables(&client).await {
        Ok(mut t) => {
            apply_filter(&mut t, filter);
            mark_publication(&client, cfg, &mut t).await;
            st.tables = t;
        }
        Err(e) => st.error = Some(format!("cannot read the catalog: {e}")),
    }
    st
}

/// Notes captured tables missing from an existing publication (their changes never arrive).
async fn mark_publication(
    client: &tokio_postgres::Client,
    cfg: &crate::config::PostgresSourceConfig,
    tables: &mut [TableInfo],
) {
    let Some(members) = publication_tables(client, &cfg.publication_name()).await else {
        return;
    };
    for t in tables.iter_mut().filter(|t| t.captured) {
        if !members.contains(&t.qualified_name()) && t.problem.is_none() {
            t.problem = Some(format!(
                "not in publication {:?}: its changes are not streamed (ALTER PUBLICATION {} ADD TABLE {})",
                cfg.publication_name(),
                cfg.publication_name(),
                t.qualified_name()
            ));
        }
    }
}

/// The `schema.table` names an existing publication covers (partitions as their root);
/// `None` when it does not exist or cannot be read.
pub(crate) async fn publication_tables(
    client: &tokio_postgres::Client,
    name: &str,
) -> Option<Vec<String>> {
    let info = crate::source::postgres::publication::read(client, name)
        .await
        .ok()??;
    Some(
        info.tables
            .iter()
            .map(crate::source::postgres::publication::show)
            .collect(),
    )
}

/// Inspects a MySQL/MariaDB source (blocking; run it on a blocking thread).
pub fn discover_mysql(cfg: &MysqlSourceConfig, at: &Endpoint, filter: &Filter) -> SourceTables {
    let mut st = SourceTables {
        source: cfg.name.clone(),
        kind: "mysql",
        tables: Vec::new(),
        query_columns: None,
        error: None,
    };
    let mut conn = match SqlConn::open(cfg, at) {
        Ok(c) => c,
        Err(e) => {
            let (what, fix) = super::describe_mysql_connect_error(cfg, &e);
            st.error = Some(format!("{what} — {fix}"));
            return st;
        }
    };
    match mysql_tables(&mut conn) {
        Ok(mut t) => {
            apply_filter(&mut t, filter);
            st.tables = t;
        }
        Err(e) => st.error = Some(format!("cannot read information_schema: {e}")),
    }
    st
}

/// Query mode: the result columns of the configured query (prepared, not run).
pub async fn discover_query(cfg: &QuerySourceConfig, at: &Endpoint) -> SourceTables {
    let mut st = SourceTables {
        source: cfg.name.clone(),
        kind: "query",
        tables: Vec::new(),
        query_columns: None,
        error: None,
    };
    match crate::source::query::result_columns(cfg, at).await {
        Ok(cols) => {
            st.query_columns = Some(
                cols.into_iter()
                    .map(|(name, type_name)| ColumnInfo {
                        key: name == cfg.cursor_column || cfg.key_columns.contains(&name),
                        name,
                        type_name,
                        nullable: true,
                        captured: true,
                    })
                    .collect(),
            )
        }
        Err(e) => {
            st.error = Some(format!(
                "cannot describe the query: {}",
                crate::error::ErrorChain(&e)
            ))
        }
    }
    st
}

/// Inspects any source, connecting to `at`.
pub async fn discover(cfg: &crate::config::SourceConfig, at: &Endpoint) -> SourceTables {
    use crate::config::SourceConfig as S;
    let filter = cfg.filter();
    match cfg {
        S::Postgres(c) => discover_postgres(c, at, &filter).await,
        S::Mysql(c) => {
            let (c, at) = (c.clone(), at.clone());
            let name = c.name.clone();
            match tokio::task::spawn_blocking(move || discover_mysql(&c, &at, &filter)).await {
                Ok(st) => st,
                Err(e) => SourceTables {
                    source: name,
                    kind: "mysql",
                    tables: Vec::new(),
                    query_columns: None,
                    error: Some(format!("inspection thread failed: {e}")),
                },
            }
        }
        S::Query(c) => discover_query(c, at).await,
    }
}

/// The text form: one block per table, one line per column, `+` captured / `-` not.
///
/// ```text
/// source app (postgres)
///   + public.users  key (id)  replica identity default
///       + id        integer                 not null  key
///       - password  text                    null
///   - public.audit_log  excluded by the table filter
/// ```
pub fn render_text(st: &SourceTables) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "source {} ({})", st.source, st.kind);
    if let Some(e) = &st.error {
        let _ = writeln!(s, "  error: {e}");
        return s;
    }
    if let Some(cols) = &st.query_columns {
        let _ = writeln!(s, "  query result columns:");
        for c in cols {
            let l = format!(
                "      + {:<24} {:<24}{}",
                c.name,
                c.type_name,
                if c.key { " key" } else { "" }
            );
            let _ = writeln!(s, "{}", l.trim_end());
        }
        return s;
    }
    if st.tables.is_empty() {
        let _ = writeln!(s, "  (no tables)");
    }
    let width = st
        .tables
        .iter()
        .flat_map(|t| t.columns.iter().map(|c| c.name.len()))
        .max()
        .unwrap_or(0)
        .max(8);
    for t in &st.tables {
        let mark = if t.captured { '+' } else { '-' };
        let key = if t.primary_key.is_empty() {
            "no primary key".to_owned()
        } else {
            format!("key ({})", t.primary_key.join(", "))
        };
        let ident = t
            .replica_identity
            .as_deref()
            .map(|i| format!("  replica identity {i}"))
            .unwrap_or_default();
        let state = if t.captured {
            String::new()
        } else {
            "  excluded by the table filter".to_owned()
        };
        let _ = writeln!(s, "  {mark} {}  {key}{ident}{state}", t.qualified_name());
        if let Some(p) = &t.problem {
            let _ = writeln!(s, "      ! {p}");
        }
        for c in &t.columns {
            let l = format!(
                "      {} {:<width$}  {:<24} {:<8}{}",
                if c.captured { '+' } else { '-' },
                c.name,
                c.type_name,
                if c.nullable { "null" } else { "not null" },
                if c.key { "  key" } else { "" },
            );
            let _ = writeln!(s, "{}", l.trim_end());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{ColumnFilterConfig, TableFilterConfig};
    use std::collections::BTreeMap;

    fn table(schema: &str, name: &str, cols: &[&str], pk: &[&str]) -> TableInfo {
        TableInfo {
            schema: schema.into(),
            name: name.into(),
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            replica_identity: Some("default".into()),
            captured: false,
            problem: None,
            columns: cols
                .iter()
                .map(|c| ColumnInfo {
                    name: c.to_string(),
                    type_name: "text".into(),
                    nullable: true,
                    key: false,
                    captured: false,
                })
                .collect(),
            can_select: true,
            can_write: false,
            identity_index: Vec::new(),
        }
    }

    #[test]
    fn marks_follow_the_filter() {
        let mut cols = BTreeMap::new();
        cols.insert(
            "public.users".to_string(),
            ColumnFilterConfig {
                include: vec![],
                exclude: vec!["secret".into()],
            },
        );
        cols.insert(
            "public.bad".to_string(),
            ColumnFilterConfig {
                include: vec![],
                exclude: vec!["id".into()],
            },
        );
        let f = Filter::new(
            TableFilterConfig {
                include: vec![],
                exclude: vec!["public.audit".into()],
            },
            cols,
        );
        let mut t = vec![
            table("public", "users", &["id", "secret", "name"], &["id"]),
            table("public", "audit", &["id"], &["id"]),
            table("public", "bad", &["id", "v"], &["id"]),
        ];
        apply_filter(&mut t, &f);
        assert!(t[0].captured);
        let marks: Vec<bool> = t[0].columns.iter().map(|c| c.captured).collect();
        assert_eq!(marks, vec![true, false, true]);
        assert!(t[0].columns[0].key);
        assert!(!t[1].captured && t[1].columns.iter().all(|c| !c.captured));
        assert!(t[2]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("key column")));
        let text = render_text(&SourceTables {
            source: "s".into(),
            kind: "postgres",
            tables: t,
            query_columns: None,
            error: None,
        });
        assert!(text.contains("  + public.users  key (id)"), "{text}");
        assert!(text.contains("  - public.audit"), "{text}");
        assert!(text.contains("      - secret"), "{text}");
    }

    #[test]
    fn full_identity_is_no_key() {
        let mut t = table("public", "k", &["a", "b"], &[]);
        t.replica_identity = Some("full".into());
        assert!(t.key_columns().is_empty());
        t.replica_identity = Some("index".into());
        t.identity_index = vec!["b".into()];
        assert_eq!(t.key_columns(), vec!["b".to_string()]);
        t.replica_identity = Some("nothing".into());
        assert!(t.key_columns().is_empty());
    }
}
