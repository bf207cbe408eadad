//! How far a MySQL/MariaDB source is behind its server, in binlog bytes: shared by
//! `logtide status` ([`crate::ops::status`]) and the periodic check of `logtide run` that
//! exports `logtide_lag_bytes`.
//!
//! The server's end is `SHOW BINARY LOG STATUS` / `SHOW MASTER STATUS` (current file and
//! position, see [`super::binlog_status`]); the sizes of the
//! files come from `SHOW BINARY LOGS` (needs `BINLOG MONITOR` on MariaDB, `REPLICATION
//! CLIENT` on MySQL — the replication user has it). The bytes behind a delivered position
//! `(file, pos)` are the rest of its file, the sizes of the files after it, and the current
//! file up to the current position. A failed check (server down) is logged at debug level
//! and retried at the next interval: the binlog connection reports outages itself.

use super::sql::SqlConn;
use crate::config::MysqlSourceConfig;
use crate::endpoint::Endpoint;
use crate::position::{binlog_file_seq, MysqlPosition, Position};
use crate::status::SourceStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The server's binlog end and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogEnd {
    /// Current file and position (see [`super::binlog_status`]).
    pub file: String,
    pub pos: u64,
    /// Every binlog file on the server with its size, oldest first (`SHOW BINARY LOGS`).
    pub files: Vec<(String, u64)>,
}

impl BinlogEnd {
    /// Bytes from `p` to the end (see [`behind`]).
    pub fn behind(&self, p: &MysqlPosition) -> u64 {
        behind(&self.files, p, &self.file, self.pos)
    }
}

/// Reads the binlog end on `conn`; the error says which statement failed.
pub fn binlog_end(conn: &mut SqlConn) -> Result<BinlogEnd, String> {
    let stmt = super::binlog_status::statement_name(conn);
    let Some((file, pos)) =
        super::binlog_status::current_end(conn).map_err(|e| format!("{stmt} failed: {e}"))?
    else {
        return Err(format!(
            "{} returned nothing: is log_bin on?",
            super::binlog_status::statement_name(conn)
        ));
    };
    let logs = conn
        .query("SHOW BINARY LOGS")
        .map_err(|e| format!("SHOW BINARY LOGS failed: {e}"))?;
    let files = (0..logs.rows.len())
        .filter_map(|r| {
            Some((
                logs.text(r, 0)?,
                logs.text(r, 1).and_then(|s| s.parse().ok()).unwrap_or(0),
            ))
        })
        .collect();
    Ok(BinlogEnd { file, pos, files })
}

/// Binlog bytes from the stored position to the current end (file sizes from SHOW BINARY
/// LOGS; the current file counts up to the current position).
pub fn behind(
    files: &[(String, u64)],
    stored: &MysqlPosition,
    cur_file: &str,
    cur_pos: u64,
) -> u64 {
    let from = stored.file_seq();
    let to = binlog_file_seq(cur_file);
    let mut total = 0u64;
    for (f, size) in files {
        let seq = binlog_file_seq(f);
        if seq < from || seq > to {
            continue;
        }
        let end = if f == cur_file { cur_pos } else { *size };
        let start = if seq == from { stored.pos } else { 0 };
        total += end.saturating_sub(start);
    }
    total
}

/// Every `interval` until `cancel`: reads the binlog end over its own SQL connection (kept
/// between checks) and sets the source's lag in bytes from its stored checkpoint.
pub async fn watch(
    cfg: MysqlSourceConfig,
    at: Endpoint,
    interval: Duration,
    status: Arc<SourceStatus>,
    cancel: CancellationToken,
) {
    let mut conn: Option<SqlConn> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let c = cfg.clone();
        let at = at.clone();
        let taken = conn.take();
        let job = tokio::task::spawn_blocking(move || {
            let mut sql = match taken {
                Some(s) => s,
                None => {
                    let s = super::sql::SqlConn::open(&c, &at)
                        .map_err(|e| format!("cannot connect: {}", crate::error::ErrorChain(&e)))?;
                    // A server that stops answering fails the check instead of holding it.
                    s.socket()
                        .bound_reads(c.connect_timeout.max(Duration::from_secs(10)));
                    s
                }
            };
            let end = binlog_end(&mut sql)?;
            Ok::<_, String>((sql, end))
        });
        // Shutdown does not wait for a check stuck on a dead connection (the thread ends
        // with its read timeout; the runtime's shutdown does not wait for it).
        let joined = tokio::select! {
            _ = cancel.cancelled() => return,
            j = job => j,
        };
        match joined {
            Ok(Ok((sql, end))) => {
                conn = Some(sql);
                // After a backfill the checkpoint is a row position; its anchor is the stream position.
                if let Some(Position::Mysql(ck)) =
                    status.checkpoint().as_ref().map(Position::anchor)
                {
                    let bytes = end.behind(ck);
                    tracing::debug!(source = %cfg.name, lag_bytes = bytes, end_file = %end.file, end_pos = end.pos, "binlog lag checked");
                    status.set_lag_bytes(Some(bytes));
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(source = %cfg.name, %error, "binlog lag check failed")
            }
            Err(error) => {
                tracing::debug!(source = %cfg.name, %error, "binlog lag check thread failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_behind_span_files() {
        let files = vec![
            ("b.000001".to_string(), 1000),
            ("b.000002".to_string(), 500),
            ("b.000003".to_string(), 300),
        ];
        let s = MysqlPosition {
            file: "b.000002".into(),
            pos: 100,
            ordinal: 0,
            gtid: None,
        };
        assert_eq!(behind(&files, &s, "b.000003", 250), 400 + 250);
        let s = MysqlPosition {
            file: "b.000003".into(),
            pos: 250,
            ordinal: 0,
            gtid: None,
        };
        assert_eq!(behind(&files, &s, "b.000003", 250), 0);
    }
}
