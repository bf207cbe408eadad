//! The MySQL/MariaDB binlog source.
//!
//! Owns the binlog protocol and the MySQL type decoding; the pipeline knows neither.
//! The connection phase (handshake, TLS, authentication), the packet framing and the dump
//! command are logtide's; `mysql_cdc` keeps the table-map and event parsing. Everything
//! that turns bytes into values is
//! ours, because the crate truncates microseconds, fails on negative TIME and non-UTF-8
//! text, loses whole rows events on one bad value, drops compressed events silently and
//! breaks on packets over 16 MB (see `shared/docs/protocol-notes.md`, "MySQL / MariaDB
//! binlog with mysql_cdc"):
//!
//! * `reader.rs`: the blocking reader thread — packet reassembly, events, transactions,
//!   positions and boundaries, backpressure (`blocking_send` semantics) and shutdown.
//! * `rows.rs`: rows events (v1 and v2) → row images; `types.rs`: one column [`types::Kind`]
//!   decoded from the binlog or from `SELECT` text into the same [`crate::value::Value`];
//!   `charset.rs`, `jsonb.rs` (MySQL binary JSON), `json_diff.rs` (partial JSON updates).
//! * `table.rs`: table maps + `information_schema` → names, key, projection.
//! * `history.rs`: the schema as of the binlog position (DDL applied, stored with the
//!   checkpoints), which `table.rs` uses instead of today's `information_schema`;
//!   `schema_ddl.rs` parses the DDL it applies.
//! * `ddl.rs`: query events (transaction markers, savepoints, XA, DDL, TRUNCATE).
//! * `txhold.rs`: the rows of undecided groups (savepoints, XA), spilled to disk if large.
//! * `sql.rs`: a tiny text-protocol SQL client; `validate.rs`: startup checks.
//! * `binlog_status.rs`: the server's binlog end (`SHOW BINARY LOG STATUS` on MySQL 8.2+,
//!   `SHOW MASTER STATUS` before and on MariaDB) for every caller.
//! * `payload.rs`: MySQL `TRANSACTION_PAYLOAD_EVENT` (zstd), streamed inner event by inner
//!   event; `gtid_tagged.rs`: MySQL 8.3+ tagged GTIDs.
//! * `connect.rs`: the connection phase of every connection (TCP, handshake, TLS upgrade,
//!   `mysql_native_password` / `caching_sha2_password`); `wire.rs`: packet framing, handshake
//!   parsing, scrambles; `tls.rs`: the `ssl_mode` rules and rustls sessions; `socket.rs`:
//!   the socket handle for read bounds and shutdown.
//!
//! Positions (see [`crate::position`]): an event is `(file, offset where its transaction
//! starts, 1-based row ordinal in the transaction)`, counting rows the filter drops, so a
//! cursor does not depend on the filter; after the transaction's Xid / COMMIT (or a DDL
//! statement, its own transaction) the source sends a checkpoint `(file, offset of the next
//! event, 0)`. A resumed dump starts at the checkpoint and skips events `<=` it.
//!
//! Not done here: the retry loop (the service's), GTID-based starts (positions are
//! file:offset; the GTID travels alongside), MariaDB's `client_ed25519` authentication
//! (refused with [`MysqlError::AuthPlugin`]).

pub mod binlog_status;
pub mod charset;
pub mod connect;
pub mod ddl;
pub mod error;
pub mod gtid_tagged;
pub mod history;
pub mod json_diff;
pub mod jsonb;
pub mod lag;
pub mod payload;
mod reader;
pub mod rows;
pub mod schema_ddl;
mod socket;
pub mod sql;
pub mod table;
pub mod tls;
mod txhold;
pub mod types;
pub mod validate;
mod wire;

pub use error::{CdcError, MysqlError};

use crate::config::MysqlSourceConfig;
use crate::endpoint::Endpoint;
use crate::event::SourceInfo;
use crate::position::{MysqlPosition, Position, PositionParseError};
use crate::source::SourceContext;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How long a stop waits for the reader thread before leaving it to end by itself.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// Streams the binlog into `ctx.tx` until cancelled (`Ok(())`) or an error. A transient
/// error (connection loss) means: call again, resuming from the last checkpoint.
pub async fn run(
    cfg: &MysqlSourceConfig,
    at: &Endpoint,
    info: Arc<SourceInfo>,
    ctx: SourceContext,
) -> Result<(), MysqlError> {
    let password = cfg
        .password()?
        .map(|s| s.expose().to_owned())
        .unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_socket = socket::StopSocket::default();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let cancel = ctx.cancel.clone();
    let args = reader::Args {
        cfg: cfg.clone(),
        at: at.clone(),
        password,
        info,
        ctx,
        stop: stop.clone(),
        stop_socket: stop_socket.clone(),
        handle: tokio::runtime::Handle::current(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("mysql-{}", cfg.name))
        .spawn(move || {
            let r = reader::run(args);
            let _ = done_tx.send(r);
        })
        .map_err(MysqlError::Thread)?;
    // Biased to the reader's result: an error the reader met before (or while) a stop
    // was requested keeps its error; the cancel branch means only "the operator asked to
    // stop" (see the supervision rule in `crate::service`).
    let result = tokio::select! {
        biased;
        r = &mut done_rx => r,
        _ = cancel.cancelled() => {
            // The thread leaves a blocked send at once, and a blocked socket read ends
            // when the socket is shut down. Before the dump connection exists (connecting,
            // validating) there is no socket to shut down; the thread holds nothing that
            // needs flushing (the checkpoint belongs to the pipeline) and its sends fail
            // once the channel is gone, so after a short grace it is left to end on its own.
            stop.store(true, Ordering::Relaxed);
            if let Some(s) = stop_socket.lock().ok().and_then(|g| g.clone()) {
                s.shutdown();
            }
            let r = tokio::time::timeout(STOP_GRACE, &mut done_rx).await;
            drop(thread);
            // An error caused by the stop itself (the socket shut down under the read)
            // is the stop; a permanent one is reported.
            if let Ok(Ok(Err(e))) = r {
                if e.class() == crate::source::ErrorClass::Permanent {
                    return Err(e);
                }
                tracing::debug!(error = %e, "mysql source stopped with an error during shutdown");
            }
            return Ok(());
        }
    };
    // The thread sent its result as its last act; it has finished or is about to.
    drop(thread);
    result.unwrap_or(Err(MysqlError::ThreadLost))
}

/// The binlog files on the server at `at`, oldest first (`SHOW BINARY LOGS`). Blocking.
pub fn binary_logs(cfg: &MysqlSourceConfig, at: &Endpoint) -> Result<Vec<String>, MysqlError> {
    let password = cfg
        .password()?
        .map(|s| s.expose().to_owned())
        .unwrap_or_default();
    let (_, _, mut sql) = reader::sql_connect(cfg, at, &password)?;
    let rs = sql.query("SHOW BINARY LOGS")?;
    Ok((0..rs.rows.len()).filter_map(|i| rs.text(i, 0)).collect())
}

/// Parses a `--until` bound for a MySQL source: `file:pos` (e.g. `mysql-bin.000012:4711`),
/// a checkpoint position; events at or after it are not delivered.
pub fn parse_until(s: &str) -> Result<Position, PositionParseError> {
    let bad = || PositionParseError::new(s, "a binlog position like mysql-bin.000012:4711");
    let (file, pos) = s.rsplit_once(':').ok_or_else(bad)?;
    if file.is_empty() {
        return Err(bad());
    }
    Ok(Position::Mysql(MysqlPosition {
        file: file.to_owned(),
        pos: pos.parse().map_err(|_| bad())?,
        ordinal: 0,
        gtid: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_parses_file_and_pos() {
        let p = parse_until("mysql-bin.000012:4711").expect("parse");
        assert_eq!(
            p,
            Position::Mysql(MysqlPosition {
                file: "mysql-bin.000012".into(),
                pos: 4711,
                ordinal: 0,
                gtid: None
            })
        );
        assert!(parse_until("mysql-bin.000012").is_err());
        assert!(parse_until(":5").is_err());
        assert!(parse_until("f:x").is_err());
    }
}
