//! Startup validation and replication objects, over the SQL connection (tokio-postgres).
//!
//! Owns: checking the server settings and privileges logical replication needs, with
//! errors that say what to change (`wal_level`, the REPLICATION attribute); creating the
//! publication when it is missing; finding out whether the slot exists; looking up a
//! relation's primary key. Does not own: opening the SQL connection (`tls::connect_sql`) or
//! creating the slot (a replication command, `conn.rs`).
//!
//! Order matters (protocol-notes.md): the publication is created before the slot.

use super::tls::TlsError;
use crate::config::PostgresSourceConfig;
use tokio_postgres::Client;

/// The oldest PostgreSQL major logtide supports (`server_version_num`).
pub const MIN_SERVER_VERSION: u32 = 120_000;

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
    #[error("PostgreSQL server_version_num {0} is not supported: logtide needs PostgreSQL 12 or later (pgoutput, replica identities and publications as it uses them); upgrade the server")]
    Unsupported(u32),
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
    #[error("replication slot {slot:?} does not exist, but position {stored} is stored: the slot was dropped while logtide was not streaming, and the changes since then cannot be read any more. Re-backfill the source (`logtide reset -c <config> --source {source_name}` then `logtide run`, with backfill = \"initial\") or, to accept the gap, `logtide reset -c <config> --source {source_name}` with backfill = \"never\"; the next `run` creates a new slot")]
    SlotDropped {
        slot: String,
        source_name: String,
        stored: String,
    },
    #[error("replication slot {slot:?} was invalidated by the server ({reason}): the WAL it needed is gone and changes since {restart} cannot be read. Drop it (`SELECT pg_drop_replication_slot('{slot}');`), then `logtide reset -c <config> --source {source_name}` and re-backfill (backfill = \"initial\") or accept the gap (backfill = \"never\"); raise max_slot_wal_keep_size to keep it from happening again")]
    SlotInvalidated {
        slot: String,
        source_name: String,
        reason: String,
        restart: String,
    },
    #[error("the table filter names what the server does not have: {0}")]
    FilterUnmatched(crate::filter::UnmatchedList),
    #[error("publication {name:?} is not managed by logtide and {problem}, so their changes would never arrive: run `{sql};` (or capture fewer tables)")]
    PublicationCannotServe {
        name: String,
        problem: String,
        sql: String,
    },
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
    let version = super::publication::server_version(client).await?;
    if version < MIN_SERVER_VERSION {
        return Err(SetupError::Unsupported(version));
    }
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

/// `sslmode = prefer` went on in plain text: say so (libpq's fallback, never silent).
pub async fn warn_if_plaintext(client: &Client) {
    let ssl = client
        .query_opt(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|r| r.try_get::<_, bool>(0).ok());
    if ssl == Some(false) {
        tracing::warn!("the server offers no TLS: the SQL connection is unencrypted (sslmode = prefer); set sslmode = \"verify-full\" (or \"require\") to refuse plain text");
    }
}

/// Checks the filter against the catalog and makes the publication serve it: see
/// [`super::publication::ensure`].
pub async fn ensure_publication(
    client: &Client,
    cfg: &PostgresSourceConfig,
) -> Result<super::publication::Ensured, SetupError> {
    super::publication::ensure(client, cfg).await
}

/// Whether the slot exists; errors when it exists for another plugin, database or kind.
pub async fn slot_exists(client: &Client, cfg: &PostgresSourceConfig) -> Result<bool, SetupError> {
    Ok(!matches!(
        slot_state(client, cfg).await?,
        SlotState::Missing
    ))
}

/// The replication slot as the server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    Missing,
    Ready {
        /// PostgreSQL 17+: the slot is synchronized to standbys (`failover`).
        failover: Option<bool>,
    },
    /// Invalidated (`wal_status = 'lost'`, PG 17 `invalidation_reason`, PG 16
    /// `conflicting`): it can never be streamed from again.
    Lost {
        reason: String,
        restart: String,
    },
}

/// Why a slot row says the slot is unusable, if it does (the row as JSON, so every server
/// version's columns are read the same way).
fn lost_reason(row: &serde_json::Value) -> Option<String> {
    let s = |k: &str| row.get(k).and_then(|v| v.as_str());
    if let Some(r) = s("invalidation_reason") {
        return Some(r.to_owned());
    }
    if s("wal_status") == Some("lost") {
        return Some(
            "wal_status = lost: its WAL was removed, e.g. by max_slot_wal_keep_size".into(),
        );
    }
    if row.get("conflicting").and_then(|v| v.as_bool()) == Some(true) {
        return Some("conflicting with recovery on a standby".into());
    }
    None
}

/// The slot's state; errors when it exists for another plugin, database or kind.
pub async fn slot_state(
    client: &Client,
    cfg: &PostgresSourceConfig,
) -> Result<SlotState, SetupError> {
    let slot = cfg.slot_name();
    let row = client
        .query_opt(
            "SELECT slot_type::text, coalesce(plugin::text, ''), coalesce(database::text, ''), \
                    to_jsonb(s)::text \
             FROM pg_catalog.pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(query_err("look up the replication slot"))?;
    let Some(row) = row else {
        return Ok(SlotState::Missing);
    };
    let get = |i: usize| -> Result<String, SetupError> {
        row.try_get(i)
            .map_err(query_err("read the replication slot"))
    };
    let (kind, plugin, db) = (get(0)?, get(1)?, get(2)?);
    let json: serde_json::Value = serde_json::from_str(&get(3)?).unwrap_or_default();
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
    if let Some(problem) = problem {
        return Err(SetupError::SlotMismatch { slot, problem });
    }
    if let Some(reason) = lost_reason(&json) {
        let restart = json
            .get("restart_lsn")
            .and_then(|v| v.as_str())
            .or_else(|| json.get("confirmed_flush_lsn").and_then(|v| v.as_str()))
            .unwrap_or("its last position")
            .to_owned();
        return Ok(SlotState::Lost { reason, restart });
    }
    Ok(SlotState::Ready {
        failover: json.get("failover").and_then(|v| v.as_bool()),
    })
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

    #[test]
    fn lost_slots() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("json");
        assert_eq!(lost_reason(&j(r#"{"wal_status":"reserved"}"#)), None);
        assert!(lost_reason(&j(r#"{"wal_status":"lost"}"#))
            .expect("lost")
            .contains("max_slot_wal_keep_size"));
        assert_eq!(
            lost_reason(&j(
                r#"{"wal_status":"lost","invalidation_reason":"wal_removed"}"#
            )),
            Some("wal_removed".into())
        );
        assert!(lost_reason(&j(r#"{"conflicting":true}"#)).is_some());
        assert!(lost_reason(&j(r#"{"conflicting":false,"invalidation_reason":null}"#)).is_none());
    }

    #[test]
    fn errors_say_what_to_fix() {
        let e = SetupError::WalLevel("replica".into()).to_string();
        assert!(
            e.contains("wal_level = logical") && e.contains("restart"),
            "{e}"
        );
        let e = SetupError::SlotDropped {
            slot: "logtide_app".into(),
            source_name: "app".into(),
            stored: "0/16B3748#0".into(),
        }
        .to_string();
        assert!(
            e.contains("logtide reset -c <config> --source app") && e.contains("backfill"),
            "{e}"
        );
        let e = SetupError::NoReplication { user: "bob".into() }.to_string();
        assert!(e.contains("ALTER ROLE bob REPLICATION"), "{e}");
        assert!(!SetupError::WalLevel("replica".into()).is_transient());
    }
}
