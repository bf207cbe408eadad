//! The WAL-retention check of a PostgreSQL source: how much WAL the replication slot holds
//! back, and how far the stored checkpoint is behind the server.
//!
//! A logical slot keeps every WAL segment from its `restart_lsn` on. When logtide stops
//! confirming (paused, a sink down, a stopped process) the server's disk fills up. Every
//! `[admin] wal_check_interval` this task asks, over its own SQL connection (same host,
//! credentials and TLS as the source):
//!
//! ```sql
//! SELECT pg_current_wal_lsn()::text, (pg_current_wal_lsn() - restart_lsn)::bigint
//!   FROM pg_replication_slots WHERE slot_name = $1
//! ```
//!
//! and exports `logtide_slot_retained_bytes` and `logtide_lag_bytes` (the current WAL
//! position minus the stored checkpoint). Above `wal_retention_warn_mb` it logs a warning
//! naming the slot, the retained size and what to do. A failed check (server down, a
//! standby without `pg_current_wal_lsn()`) is logged at debug level and retried at the next
//! interval: the replication connection reports outages itself.
//! See <https://www.postgresql.org/docs/current/view-pg-replication-slots.html>.

use crate::config::PostgresSourceConfig;
use crate::endpoint::Endpoint;
use crate::position::{Lsn, Position};
use crate::status::SourceStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1024 * 1024;

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotUsage {
    /// `pg_current_wal_lsn()`.
    pub current: Lsn,
    /// WAL the slot retains, bytes (`None`: the slot has no `restart_lsn` yet).
    pub retained: Option<u64>,
}

/// Checks every `interval` until `cancel`.
pub async fn watch(
    cfg: PostgresSourceConfig,
    at: Endpoint,
    interval: Duration,
    warn_mb: u64,
    status: Arc<SourceStatus>,
    cancel: CancellationToken,
) {
    let slot = cfg.slot_name();
    let mut conn: Option<(tokio_postgres::Client, JoinSet<()>)> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            conn = None;
            let connect = tokio::time::timeout(
                cfg.connect_timeout + interval,
                crate::source::postgres::tls::connect_sql(&cfg, &at),
            );
            let connected = tokio::select! {
                _ = cancel.cancelled() => return,
                r = connect => r,
            };
            let Ok(connected) = connected else {
                tracing::debug!(source = %cfg.name, "wal retention check: connecting timed out");
                continue;
            };
            match connected {
                Ok((client, driver)) => {
                    let mut tasks = JoinSet::new();
                    tasks.spawn(async move {
                        let _ = driver.await;
                    });
                    conn = Some((client, tasks));
                }
                Err(error) => {
                    tracing::debug!(source = %cfg.name, error = %crate::error::ErrorChain(&error), "wal retention check: cannot connect");
                    continue;
                }
            }
        }
        let Some((client, _)) = &conn else { continue };
        let usage = tokio::select! {
            _ = cancel.cancelled() => return,
            r = check(client, &slot) => r,
        };
        match usage {
            Ok(Some(u)) => report(&cfg.name, &slot, u, warn_mb, &status),
            Ok(None) => {
                status.set_retained_bytes(None);
            }
            Err(error) => {
                tracing::debug!(source = %cfg.name, slot = %slot, %error, "wal retention check failed");
                conn = None;
            }
        }
    }
}

/// One query; `None` when the slot does not exist (yet).
pub async fn check(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<SlotUsage>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT pg_current_wal_lsn()::text, (pg_current_wal_lsn() - restart_lsn)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let current: String = row.try_get(0)?;
    let retained: Option<i64> = row.try_get(1)?;
    let Ok(current) = current.parse::<Lsn>() else {
        return Ok(None);
    };
    Ok(Some(SlotUsage {
        current,
        retained: retained.map(|r| u64::try_from(r).unwrap_or(0)),
    }))
}

fn report(source: &str, slot: &str, u: SlotUsage, warn_mb: u64, status: &SourceStatus) {
    status.set_retained_bytes(u.retained);
    // After a backfill the checkpoint is a row position; its anchor is the stream position.
    if let Some(Position::Postgres(ck)) = status.checkpoint().as_ref().map(Position::anchor) {
        status.set_lag_bytes(Some(u.current.0.saturating_sub(ck.lsn.0)));
    }
    let Some(retained) = u.retained else { return };
    tracing::debug!(source, slot, retained_bytes = retained, current = %u.current, "wal retention checked");
    if retained > warn_mb.saturating_mul(MIB) {
        tracing::warn!(
            source,
            slot,
            retained_mb = retained / MIB,
            threshold_mb = warn_mb,
            paused = status.is_paused(),
            "replication slot {slot} retains {:.1} MB of WAL (more than wal_retention_warn_mb = {warn_mb}): \
             logtide is behind, paused or stopped; resume the source or fix the failing sink so the checkpoint \
             advances, and if this slot is no longer used drop it (SELECT pg_drop_replication_slot('{slot}')) \
             before the server's disk fills up (max_slot_wal_keep_size caps the retention)",
            retained as f64 / MIB as f64
        );
    }
}
