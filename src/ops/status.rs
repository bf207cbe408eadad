//! The lag part of `logtide status`: how far a source's server is ahead of what logtide
//! has confirmed or stored.
//!
//! PostgreSQL: the slot's `confirmed_flush_lsn`, `restart_lsn`, bytes between
//! `pg_current_wal_lsn()` and the confirmed position, WAL the slot retains, `wal_status`,
//! and whether a walsender uses it; `FAIL` when the slot is gone under a stored position
//! or invalidated (the changes since are lost). MySQL/MariaDB: the current binlog position (`SHOW MASTER STATUS`),
//! the oldest binlog still on the server (`SHOW BINARY LOGS`), whether the stored
//! position's file is still there, and the bytes between it and the current end.

use crate::config::{MysqlSourceConfig, PostgresSourceConfig, SourceConfig};
use crate::endpoint::Endpoint;
use crate::error::ErrorChain;
use crate::position::{MysqlPosition, Position};

/// One line (without the source name) describing the source's lag; an `Err` says why it
/// could not be read (the server at `at` is unreachable, ...).
pub async fn lag(
    cfg: &SourceConfig,
    at: &Endpoint,
    stored: Option<&Position>,
) -> Result<String, String> {
    match cfg {
        SourceConfig::Postgres(c) => pg_lag(c, at, stored).await,
        SourceConfig::Mysql(c) => {
            let (c, at) = (c.clone(), at.clone());
            let stored = match stored {
                Some(Position::Mysql(m)) => Some(m.clone()),
                _ => None,
            };
            tokio::task::spawn_blocking(move || mysql_lag(&c, &at, stored.as_ref()))
                .await
                .map_err(|e| format!("inspection thread failed: {e}"))?
        }
        SourceConfig::Query(_) => Ok("query mode: no server-side log to lag behind".into()),
    }
}

async fn pg_lag(
    cfg: &PostgresSourceConfig,
    at: &Endpoint,
    stored: Option<&Position>,
) -> Result<String, String> {
    let (client, conn) = crate::source::postgres::tls::connect_sql(cfg, at)
        .await
        .map_err(|e| {
            let (what, fix) =
                super::describe_pg_connect_error(&cfg.user, cfg.password_env.as_deref(), &e);
            format!("{what} — {fix}")
        })?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        let _ = conn.await;
    });
    let slot = cfg.slot_name();
    let row = client
        .query_opt(
            "SELECT active, confirmed_flush_lsn::text, restart_lsn::text, \
                    pg_current_wal_lsn()::text, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8, \
                    to_jsonb(s)->>'wal_status', to_jsonb(s)->>'invalidation_reason' \
             FROM pg_catalog.pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| format!("cannot read the slot: {}", ErrorChain(&e)))?;
    let stored = stored.filter(|p| matches!(p, Position::Postgres(_)));
    let Some(row) = row else {
        return Ok(match stored {
            Some(p) => format!(
                "FAIL: slot {slot} does not exist but position {p} is stored: the slot was dropped and the changes since then are lost; `run` refuses to start (see `logtide check`: re-backfill or `logtide reset`)"
            ),
            None => format!("slot {slot} does not exist (created by the first `run`)"),
        });
    };
    let get_s = |i: usize| -> String {
        row.try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .unwrap_or_else(|| "-".into())
    };
    let get_i = |i: usize| -> String {
        row.try_get::<_, Option<i64>>(i)
            .ok()
            .flatten()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let active: bool = row.try_get(0).unwrap_or(false);
    let wal_status = get_s(6);
    let invalidated = row.try_get::<_, Option<String>>(7).ok().flatten();
    if wal_status == "lost" || invalidated.is_some() {
        return Ok(format!(
            "FAIL: slot {slot} is invalidated ({}): the changes since restart_lsn={} are lost; `run` refuses to start (see `logtide check`)",
            invalidated.unwrap_or_else(|| "wal_status = lost".into()),
            get_s(2)
        ));
    }
    Ok(format!(
        "slot {slot} active={} confirmed_flush_lsn={} restart_lsn={} current_wal_lsn={} behind_bytes={} retained_wal_bytes={} wal_status={}",
        if active { "yes" } else { "no" },
        get_s(1),
        get_s(2),
        get_s(3),
        get_i(4),
        get_i(5),
        wal_status,
    ))
}

fn mysql_lag(
    cfg: &MysqlSourceConfig,
    at: &Endpoint,
    stored: Option<&MysqlPosition>,
) -> Result<String, String> {
    let mut conn = crate::source::mysql::sql::SqlConn::open(cfg, at).map_err(|e| {
        let (what, fix) = super::describe_mysql_connect_error(cfg, &e);
        format!("{what} — {fix}")
    })?;
    let crate::source::mysql::lag::BinlogEnd { file, pos, files } =
        crate::source::mysql::lag::binlog_end(&mut conn)?;
    let oldest = files.first().map(|(f, _)| f.as_str()).unwrap_or("-");
    let mut line = format!("binlog current={file}:{pos} oldest={oldest}");
    if let Some(s) = stored {
        let present = files.iter().any(|(f, _)| *f == s.file);
        line.push_str(&format!(
            " stored_file_on_server={}",
            if present {
                "yes"
            } else {
                "no (purged: the source cannot resume)"
            }
        ));
        if present {
            line.push_str(&format!(
                " behind_bytes={}",
                crate::source::mysql::lag::behind(&files, s, &file, pos)
            ));
        }
    }
    Ok(line)
}
