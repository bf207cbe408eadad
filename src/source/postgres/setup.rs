//! Startup validation and replication objects, over the SQL connection (tokio-postgres).
//!
//! Owns: checking the server settings and privileges logical replication needs, with
//! errors that say what to change (`wal_level`, the REPLICATION attribute); creating the
//! publication when it is missing; finding out whether the slot exists; looking up a
//! relation's primary key. Does not own: opening the SQL connection (`tls::connect_sql`) or
//! creating the slot (a replication command, `conn.rs`).
//!
//! Order matters (protocol-notes.md): the publication is created before the slot.

use super::conn::quote_ident;
use super::tls::TlsError;
use crate::config::PostgresSourceConfig;
use tokio_postgres::Client;

/// A startup check failed, or a setup query could not run.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot open the SQL connection to PostgreSQL")]
    Connect(#[source] TlsError),
    #[error("setup query failed: {what}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("wal_level is {0:?} but logical replication needs `logical`: set wal_level = logical in postgresql.conf and restart PostgreSQL")]
    WalLevel(String),
    #[error("role {user:?} may not start logical replication: run `ALTER ROLE {user} REPLICATION;` as a superuser (or connect as a superuser)")]
    NoReplication { user: String },
    #[error("cannot create publication {name:?}: role {user:?} lacks the privilege (FOR ALL TABLES needs a superuser). Create it as a superuser, e.g. `{sql}`, and name it in `publication` in the source's config")]
    PublicationPrivilege {
        name: String,
        user: String,
        sql: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("publication {name:?} does not exist and create_publication = false: create it (e.g. `CREATE PUBLICATION {name} FOR ALL TABLES;`) or set create_publication = true")]
    PublicationMissing { name: String },
    #[error("replication slot {slot:?} exists but {problem}: drop it (`SELECT pg_drop_replication_slot('{slot}');`) or set `slot` to another name")]
    SlotMismatch { slot: String, problem: String },
}

impl SetupError {
    /// Whether retrying later can help (connection problems), else a setup to fix.
    pub fn is_transient(&self) -> bool {
        let pg = match self {
            SetupError::Connect(TlsError::Connect { source, .. }) => source,
            SetupError::Query { source, .. } => source,
            _ => return false,
        };
        // No SQLSTATE: I/O, a closed connection, a timeout — or a TLS certificate that
        // fails verification, which is permanent (see `source::classify`).
        crate::source::classify::postgres(pg) == crate::source::ErrorClass::Transient
    }
}

fn query_err(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SetupError {
    move |source| SetupError::Query { what, source }
}

/// Checks `wal_level` and the role's REPLICATION attribute.
pub async fn validate(client: &Client, cfg: &PostgresSourceConfig) -> Result<(), SetupError> {
    let row = client
        .query_one("SELECT current_setting('wal_level')", &[])
        .await
        .map_err(query_err("read wal_level"))?;
    let wal_level: String = row.try_get(0).map_err(query_err("read wal_level"))?;
    if wal_level != "logical" {
        return Err(SetupError::WalLevel(wal_level));
    }
    let row = client
        .query_one(
            "SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(query_err("read the role's attributes"))?;
    let ok: bool = row
        .try_get(0)
        .map_err(query_err("read the role's attributes"))?;
    if !ok {
        return Err(SetupError::NoReplication {
            user: cfg.user.clone(),
        });
    }
    Ok(())
}

/// `schema.table` → `"schema"."table"` (a name without a schema is in `public`).
fn quote_table(name: &str) -> String {
    match name.split_once('.') {
        Some((s, t)) => format!("{}.{}", quote_ident(s), quote_ident(t)),
        None => format!("{}.{}", quote_ident("public"), quote_ident(name)),
    }
}

/// The CREATE PUBLICATION statement for the config: FOR TABLE of the `tables.include` names
/// when they are all exact names, else FOR ALL TABLES (the filter then selects).
pub fn publication_sql(cfg: &PostgresSourceConfig) -> String {
    let name = quote_ident(&cfg.publication_name());
    let inc = &cfg.tables.include;
    if !inc.is_empty() && inc.iter().all(|p| !p.contains(['*', '?', '['])) {
        let tables: Vec<String> = inc.iter().map(|t| quote_table(t)).collect();
        format!("CREATE PUBLICATION {name} FOR TABLE {}", tables.join(", "))
    } else {
        format!("CREATE PUBLICATION {name} FOR ALL TABLES")
    }
}

/// Uses the publication if it exists (as is), else creates it when the config allows.
pub async fn ensure_publication(
    client: &Client,
    cfg: &PostgresSourceConfig,
) -> Result<(), SetupError> {
    let name = cfg.publication_name();
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(query_err("look up the publication"))?
        .is_some();
    if exists {
        tracing::debug!(publication = %name, "using existing publication");
        return Ok(());
    }
    if !cfg.create_publication {
        return Err(SetupError::PublicationMissing { name });
    }
    let sql = publication_sql(cfg);
    match client.batch_execute(&sql).await {
        Ok(()) => {
            tracing::info!(publication = %name, statement = %sql, "created publication");
            Ok(())
        }
        Err(source) => match source.code().map(|c| c.code()) {
            // Created concurrently by another process: use it.
            Some("42710") => Ok(()),
            Some("42501") => Err(SetupError::PublicationPrivilege {
                name,
                user: cfg.user.clone(),
                sql,
                source,
            }),
            _ => Err(SetupError::Query {
                what: "create the publication",
                source,
            }),
        },
    }
}

/// Whether the slot exists; errors when it exists for another plugin, database or kind.
pub async fn slot_exists(client: &Client, cfg: &PostgresSourceConfig) -> Result<bool, SetupError> {
    let slot = cfg.slot_name();
    let row = client
        .query_opt(
            "SELECT slot_type::text, coalesce(plugin::text, ''), coalesce(database::text, '') \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(query_err("look up the replication slot"))?;
    let Some(row) = row else { return Ok(false) };
    let get = |i: usize| -> Result<String, SetupError> {
        row.try_get(i)
            .map_err(query_err("read the replication slot"))
    };
    let (kind, plugin, db) = (get(0)?, get(1)?, get(2)?);
    let problem = if kind != "logical" {
        Some(format!("is a {kind} slot"))
    } else if plugin != "pgoutput" {
        Some(format!("uses output plugin {plugin:?}, not pgoutput"))
    } else if db != cfg.database {
        Some(format!(
            "belongs to database {db:?}, not {:?}",
            cfg.database
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(SetupError::SlotMismatch { slot, problem }),
        None => Ok(true),
    }
}

/// The primary-key column names of a relation, in key order; empty without a primary key.
pub async fn primary_key(client: &Client, relation_oid: u32) -> Result<Vec<String>, SetupError> {
    let rows = client
        .query(
            "SELECT a.attname::text \
             FROM pg_catalog.pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary \
             ORDER BY k.ord",
            &[&relation_oid],
        )
        .await
        .map_err(query_err("look up the primary key"))?;
    rows.iter()
        .map(|r| {
            r.try_get::<_, String>(0)
                .map_err(query_err("read the primary key"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SourceConfig};
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
    fn publication_statement() {
        assert_eq!(
            publication_sql(&pg("")),
            "CREATE PUBLICATION \"logtide_app\" FOR ALL TABLES"
        );
        assert_eq!(
            publication_sql(&pg(
                "tables = { include = [\"public.users\", \"App.Orders\"] }"
            )),
            "CREATE PUBLICATION \"logtide_app\" FOR TABLE \"public\".\"users\", \"App\".\"Orders\""
        );
        assert_eq!(
            publication_sql(&pg("tables = { include = [\"public.*\"] }")),
            "CREATE PUBLICATION \"logtide_app\" FOR ALL TABLES"
        );
    }

    #[test]
    fn errors_say_what_to_fix() {
        let e = SetupError::WalLevel("replica".into()).to_string();
        assert!(
            e.contains("wal_level = logical") && e.contains("restart"),
            "{e}"
        );
        let e = SetupError::NoReplication { user: "bob".into() }.to_string();
        assert!(e.contains("ALTER ROLE bob REPLICATION"), "{e}");
        assert!(!SetupError::WalLevel("replica".into()).is_transient());
    }
}
