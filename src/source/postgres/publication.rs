//! The publication and the filter: making sure the publication can serve what the filter
//! selects, before anything is streamed or backfilled.
//!
//! Owns: reading the source's tables from the catalog (partitioned tables under their root
//! name, no partitions), rejecting filter entries that name nothing
//! ([`crate::filter::Filter::unmatched`]), creating the publication, bringing a publication
//! logtide manages in line with the filter (ALTER PUBLICATION ADD/DROP TABLE,
//! `publish_via_partition_root`), refusing to start with a publication the user manages
//! that cannot serve the filter (with the statement to run), and naming a partition's root.
//! Does not own the slot (`setup.rs`) or backfilling tables added to the publication (the
//! source queues them as on-demand backfills).
//!
//! **Managed or not.** A publication logtide created carries the comment
//! [`MANAGED_COMMENT`]; logtide changes only those. Any other publication (named with
//! `publication` in the config, or created by hand) is the user's: logtide reads it and
//! refuses to start when it lacks a captured table, with the `ALTER PUBLICATION` to run.
//!
//! **Partitions.** Logtide creates publications `WITH (publish_via_partition_root = true)`
//! (PostgreSQL 13+), so a partitioned table's changes arrive under the partitioned table's
//! name and a row moving between partitions stays one table's business (it still arrives
//! as a delete and an insert: that is how PostgreSQL decodes it). A user's publication
//! without it publishes the partitions; the decoder then maps each partition to its root
//! ([`partition_root`]), so events carry the root's name either way.

use super::conn::quote_ident;
use super::setup::SetupError;
use crate::config::PostgresSourceConfig;
use crate::filter::{Filter, KnownTable};
use std::collections::BTreeSet;
use tokio_postgres::Client;

/// The comment logtide puts on a publication it created (and so may change).
pub const MANAGED_COMMENT: &str = "managed by logtide: tables follow the source's filter";

fn query_err(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SetupError {
    move |source| SetupError::Query { what, source }
}

/// Every table of the database outside the system schemas, partitioned tables by their
/// root (partitions are not listed), with their column names.
pub async fn catalog(client: &Client) -> Result<Vec<KnownTable>, SetupError> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, \
                    coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}') \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' \
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(query_err("list the database's tables"))?;
    rows.iter()
        .map(|r| {
            Ok(KnownTable {
                schema: r.try_get(0).map_err(query_err("read the table list"))?,
                name: r.try_get(1).map_err(query_err("read the table list"))?,
                columns: r.try_get(2).map_err(query_err("read the table list"))?,
            })
        })
        .collect()
}

/// The publication as the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationInfo {
    pub all_tables: bool,
    pub via_root: bool,
    /// PostgreSQL 18+: whether stored generated columns are published
    /// (`publish_generated_columns = stored`); `None` before 18.
    pub generated: Option<bool>,
    pub managed: bool,
    /// Published operations missing among insert, update, delete.
    pub missing_ops: Vec<&'static str>,
    /// Published tables, partitions mapped to their root.
    pub tables: BTreeSet<TableRef>,
}

/// A table as `(schema, name)`. Names may hold dots, so a table is never passed around as
/// a `schema.table` string that something would have to split again.
pub type TableRef = (String, String);

/// `schema.table` for messages and logs.
pub fn show((s, t): &TableRef) -> String {
    format!("{s}.{t}")
}

/// Reads the publication; `None` when it does not exist.
pub async fn read(client: &Client, name: &str) -> Result<Option<PublicationInfo>, SetupError> {
    // to_jsonb: pubviaroot (13+) and the action flags without version-specific SQL.
    let row = client
        .query_opt(
            "SELECT to_jsonb(p)::text, coalesce(obj_description(p.oid, 'pg_publication'), '') \
             FROM pg_catalog.pg_publication p WHERE p.pubname = $1",
            &[&name],
        )
        .await
        .map_err(query_err("look up the publication"))?;
    let Some(row) = row else { return Ok(None) };
    let json: String = row.try_get(0).map_err(query_err("read the publication"))?;
    let comment: String = row.try_get(1).map_err(query_err("read the publication"))?;
    let p: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let flag = |k: &str| p.get(k).and_then(|v| v.as_bool());
    let missing_ops = [
        ("insert", "pubinsert"),
        ("update", "pubupdate"),
        ("delete", "pubdelete"),
    ]
    .into_iter()
    .filter(|(_, k)| flag(k) == Some(false))
    .map(|(op, _)| op)
    .collect();
    let rows = client
        .query(
            "SELECT DISTINCT rn.nspname::text, r.relname::text \
             FROM pg_catalog.pg_publication_tables p \
             JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             JOIN pg_catalog.pg_class r ON r.oid = coalesce(pg_catalog.pg_partition_root(c.oid), c.oid) \
             JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
             WHERE p.pubname = $1",
            &[&name],
        )
        .await
        .map_err(query_err("list the publication's tables"))?;
    let mut tables = BTreeSet::new();
    for r in &rows {
        let s: String = r.try_get(0).map_err(query_err("read the publication"))?;
        let t: String = r.try_get(1).map_err(query_err("read the publication"))?;
        tables.insert((s, t));
    }
    Ok(Some(PublicationInfo {
        all_tables: flag("puballtables").unwrap_or(false),
        via_root: flag("pubviaroot").unwrap_or(false),
        generated: p
            .get("pubgencols")
            .and_then(|v| v.as_str())
            .map(|g| g == "s"),
        managed: comment == MANAGED_COMMENT,
        missing_ops,
        tables,
    }))
}

/// `"schema"."table"`.
pub fn quote_table((s, t): &TableRef) -> String {
    format!("{}.{}", quote_ident(s), quote_ident(t))
}

/// The CREATE PUBLICATION statement: FOR TABLE of the tables of `catalog` the filter
/// captures when `tables.include` holds only exact names (found in the catalog, not split
/// at a dot: a schema or table name may hold one), else FOR ALL TABLES (the filter then
/// selects); partitioned tables
/// publish under their own name (`publish_via_partition_root`, PostgreSQL 13+); stored
/// generated columns are published (`publish_generated_columns = stored`, PostgreSQL 18+;
/// the backfill then reads them too).
pub fn create_sql(
    cfg: &PostgresSourceConfig,
    server_version: u32,
    catalog: &[KnownTable],
) -> String {
    let name = quote_ident(&cfg.publication_name());
    let filter = Filter::new(cfg.tables.clone(), cfg.columns.clone());
    let tables: Vec<String> = catalog
        .iter()
        .filter(|t| filter.table_selected(&t.schema, &t.name))
        .map(|t| quote_table(&(t.schema.clone(), t.name.clone())))
        .collect();
    let target = if filter.include_is_exact() && !tables.is_empty() {
        format!("FOR TABLE {}", tables.join(", "))
    } else {
        "FOR ALL TABLES".to_owned()
    };
    let with = if server_version >= 180_000 {
        " WITH (publish_via_partition_root = true, publish_generated_columns = stored)"
    } else if server_version == 0 || server_version >= 130_000 {
        " WITH (publish_via_partition_root = true)"
    } else {
        ""
    };
    format!("CREATE PUBLICATION {name} {target}{with}")
}

/// What the publication lacks for the filter, and what logtide may do about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Captured tables the publication does not publish.
    pub add: Vec<TableRef>,
    /// Published tables the filter does not capture (only dropped from managed, exact-list
    /// publications).
    pub drop: Vec<TableRef>,
    /// Turn on `publish_via_partition_root` (managed publications only).
    pub set_via_root: bool,
    /// Turn on `publish_generated_columns = stored` (managed publications, PostgreSQL 18+).
    pub set_generated: bool,
    /// Operations to publish (a user's publication without update or delete).
    pub missing_ops: Vec<&'static str>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.drop.is_empty()
            && !self.set_via_root
            && !self.set_generated
            && self.missing_ops.is_empty()
    }

    /// The statements that bring the publication in line.
    pub fn statements(&self, publication: &str) -> Vec<String> {
        let p = quote_ident(publication);
        let list = |v: &[TableRef]| v.iter().map(quote_table).collect::<Vec<_>>();
        let mut out = Vec::new();
        if !self.add.is_empty() {
            out.push(format!(
                "ALTER PUBLICATION {p} ADD TABLE {}",
                list(&self.add).join(", ")
            ));
        }
        if !self.drop.is_empty() {
            out.push(format!(
                "ALTER PUBLICATION {p} DROP TABLE {}",
                list(&self.drop).join(", ")
            ));
        }
        if self.set_via_root {
            out.push(format!(
                "ALTER PUBLICATION {p} SET (publish_via_partition_root = true)"
            ));
        }
        if self.set_generated {
            out.push(format!(
                "ALTER PUBLICATION {p} SET (publish_generated_columns = stored)"
            ));
        }
        if !self.missing_ops.is_empty() {
            out.push(format!(
                "ALTER PUBLICATION {p} SET (publish = 'insert, update, delete, truncate')"
            ));
        }
        out
    }
}

/// What the publication must change for `filter` over `tables` (pure).
pub fn plan(pub_: &PublicationInfo, filter: &Filter, tables: &[KnownTable]) -> Plan {
    let captured: BTreeSet<TableRef> = tables
        .iter()
        .filter(|t| filter.table_selected(&t.schema, &t.name))
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    let mut plan = Plan {
        missing_ops: pub_.missing_ops.clone(),
        ..Plan::default()
    };
    plan.set_generated = pub_.managed && pub_.generated == Some(false);
    if pub_.all_tables {
        plan.set_via_root = pub_.managed && !pub_.via_root;
        return plan;
    }
    plan.add = captured.difference(&pub_.tables).cloned().collect();
    if pub_.managed {
        plan.set_via_root = !pub_.via_root;
        plan.drop = pub_.tables.difference(&captured).cloned().collect();
    }
    plan
}

/// The publication is ready for the filter; `added` lists tables that were added to it
/// now (their existing rows still have to be backfilled).
#[derive(Debug, Clone, Default)]
pub struct Ensured {
    pub added: Vec<String>,
    pub created: bool,
}

/// Checks the filter against the catalog, then creates the publication or brings a
/// managed one in line with the filter; a user's publication that cannot serve the filter
/// is an error naming the statement to run.
pub async fn ensure(client: &Client, cfg: &PostgresSourceConfig) -> Result<Ensured, SetupError> {
    let filter = Filter::new(cfg.tables.clone(), cfg.columns.clone());
    let tables = catalog(client).await?;
    let unmatched = filter.unmatched(&tables);
    if !unmatched.is_empty() {
        return Err(SetupError::FilterUnmatched(crate::filter::UnmatchedList(
            unmatched,
        )));
    }
    if !tables
        .iter()
        .any(|t| filter.table_selected(&t.schema, &t.name))
    {
        tracing::warn!(
            source = %cfg.name,
            tables_on_server = tables.len(),
            "the table filter captures no table of the database: no change will be delivered until a matching table is created; check `tables.include` against `logtide discover`"
        );
    }
    let name = cfg.publication_name();
    let Some(info) = read(client, &name).await? else {
        if !cfg.create_publication {
            return Err(SetupError::PublicationMissing { name });
        }
        let version = server_version(client).await?;
        let sql = create_sql(cfg, version, &tables);
        create(client, cfg, &sql).await?;
        return Ok(Ensured {
            added: Vec::new(),
            created: true,
        });
    };
    let plan = plan(&info, &filter, &tables);
    if plan.is_empty() {
        tracing::debug!(publication = %name, "using existing publication");
        return Ok(Ensured::default());
    }
    let statements = plan.statements(&name);
    if !info.managed {
        return Err(SetupError::PublicationCannotServe {
            name,
            problem: if plan.add.is_empty() {
                format!("does not publish {}", plan.missing_ops.join(", "))
            } else {
                format!(
                    "lacks captured tables {}",
                    plan.add.iter().map(show).collect::<Vec<_>>().join(", ")
                )
            },
            sql: statements.join("; "),
        });
    }
    for sql in &statements {
        if let Err(source) = client.batch_execute(sql).await {
            return Err(match source.code().map(|c| c.code()) {
                Some("42501") => SetupError::PublicationPrivilege {
                    name,
                    user: cfg.user.clone(),
                    sql: sql.clone(),
                    source,
                },
                _ => SetupError::Query {
                    what: "bring the publication in line with the filter",
                    source,
                },
            });
        }
        tracing::warn!(publication = %name, statement = %sql, "publication changed to follow the filter");
    }
    Ok(Ensured {
        added: plan.add.iter().map(show).collect(),
        created: false,
    })
}

async fn create(client: &Client, cfg: &PostgresSourceConfig, sql: &str) -> Result<(), SetupError> {
    let name = cfg.publication_name();
    let comment = format!(
        "COMMENT ON PUBLICATION {} IS {}",
        quote_ident(&name),
        super::conn::quote_literal(MANAGED_COMMENT)
    );
    match client.batch_execute(sql).await {
        Ok(()) => {
            tracing::info!(publication = %name, statement = %sql, "created publication");
            client
                .batch_execute(&comment)
                .await
                .map_err(query_err("mark the publication as managed by logtide"))
        }
        Err(source) => match source.code().map(|c| c.code()) {
            // Created concurrently by another process: use it.
            Some("42710") => Ok(()),
            Some("42501") => Err(SetupError::PublicationPrivilege {
                name,
                user: cfg.user.clone(),
                sql: sql.to_owned(),
                source,
            }),
            _ => Err(SetupError::Query {
                what: "create the publication",
                source,
            }),
        },
    }
}

/// `server_version_num`, e.g. 150004.
pub async fn server_version(client: &Client) -> Result<u32, SetupError> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(query_err("read server_version_num"))?;
    let v: i32 = row
        .try_get(0)
        .map_err(query_err("read server_version_num"))?;
    Ok(u32::try_from(v).unwrap_or(0))
}

/// The partitioned table at the top of `oid`'s partition tree as (schema, name), when
/// `oid` is a partition; `None` for any other relation.
pub async fn partition_root(
    client: &Client,
    oid: u32,
) -> Result<Option<(String, String)>, SetupError> {
    let row = client
        .query_opt(
            "SELECT n.nspname::text, r.relname::text \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_class r ON r.oid = pg_catalog.pg_partition_root(c.oid) \
             JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
             WHERE c.oid = $1 AND c.relispartition",
            &[&oid],
        )
        .await
        .map_err(query_err("look up the partition's root"))?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((
            r.try_get(0)
                .map_err(query_err("read the partition's root"))?,
            r.try_get(1)
                .map_err(query_err("read the partition's root"))?,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SourceConfig};
    use crate::filter::TableFilterConfig;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn pg(extra: &str) -> PostgresSourceConfig {
        let text = format!(
            "[[sources]]\nkind = \"postgres\"\nname = \"app\"\nuser = \"u\"\ndatabase = \"d\"\n{extra}\n[[sinks]]\nkind = \"stdout\"\n"
        );
        let c = Config::parse(&text, Path::new("t.toml")).expect("config");
        match c.sources.into_iter().next() {
            Some(SourceConfig::Postgres(p)) => p,
            _ => panic!("postgres source"),
        }
    }

    #[test]
    fn create_statement() {
        let cat = [t("public.users"), t("App.Orders"), t("public.other")];
        assert_eq!(
            create_sql(&pg(""), 150000, &cat),
            "CREATE PUBLICATION \"logtide_app\" FOR ALL TABLES WITH (publish_via_partition_root = true)"
        );
        assert_eq!(
            create_sql(
                &pg("tables = { include = [\"public.users\", \"App.Orders\"] }"),
                170000,
                &cat
            ),
            "CREATE PUBLICATION \"logtide_app\" FOR TABLE \"public\".\"users\", \"App\".\"Orders\" WITH (publish_via_partition_root = true)"
        );
        // Names with dots: found in the catalog, never split at the first dot.
        let odd = [KnownTable {
            schema: "Odd.Sch ema".into(),
            name: "Tab \"le\"".into(),
            columns: vec!["id".into()],
        }];
        assert_eq!(
            create_sql(
                &pg("tables = { include = [\"Odd.Sch ema.Tab \\\"le\\\"\"] }"),
                170000,
                &odd
            ),
            "CREATE PUBLICATION \"logtide_app\" FOR TABLE \"Odd.Sch ema\".\"Tab \"\"le\"\"\" WITH (publish_via_partition_root = true)"
        );
        assert!(create_sql(&pg(""), 180000, &cat).ends_with(
            "WITH (publish_via_partition_root = true, publish_generated_columns = stored)"
        ));
        assert_eq!(
            create_sql(&pg("tables = { include = [\"public.*\"] }"), 120000, &cat),
            "CREATE PUBLICATION \"logtide_app\" FOR ALL TABLES"
        );
    }

    fn t(name: &str) -> KnownTable {
        let (s, n) = name.split_once('.').expect("qualified");
        KnownTable {
            schema: s.into(),
            name: n.into(),
            columns: vec!["id".into()],
        }
    }

    fn pair(name: &str) -> TableRef {
        let (s, n) = name.split_once('.').expect("qualified");
        (s.into(), n.into())
    }

    #[test]
    fn plans_follow_the_filter() {
        let tables = [t("public.a"), t("public.b"), t("public.c")];
        let filter = Filter::new(
            TableFilterConfig {
                include: vec!["public.a".into(), "public.b".into()],
                exclude: vec![],
            },
            BTreeMap::new(),
        );
        let mut p = PublicationInfo {
            all_tables: false,
            via_root: true,
            generated: None,
            managed: true,
            missing_ops: vec![],
            tables: [pair("public.a"), pair("public.c")].into(),
        };
        let managed = plan(&p, &filter, &tables);
        assert_eq!(managed.add, vec![pair("public.b")]);
        assert_eq!(managed.drop, vec![pair("public.c")]);
        assert_eq!(
            managed.statements("logtide_app"),
            vec![
                "ALTER PUBLICATION \"logtide_app\" ADD TABLE \"public\".\"b\"".to_string(),
                "ALTER PUBLICATION \"logtide_app\" DROP TABLE \"public\".\"c\"".to_string(),
            ]
        );
        p.managed = false;
        p.via_root = false;
        let user = plan(&p, &filter, &tables);
        assert_eq!(user.add, vec![pair("public.b")]);
        assert!(user.drop.is_empty() && !user.set_via_root);
        p.all_tables = true;
        assert!(plan(&p, &filter, &tables).is_empty());
        p.managed = true;
        p.generated = Some(false);
        assert!(plan(&p, &filter, &tables).set_generated);
        p.managed = false;
        p.missing_ops = vec!["delete"];
        assert!(plan(&p, &filter, &tables).statements("x")[0].contains("publish = "));
    }
}
