//! The server's current binlog end — file and position — for every caller (first start
//! position, lag, `logtide check`, the backfill's hand-over), through one statement choice.
//!
//! MySQL 8.2 added `SHOW BINARY LOG STATUS` and 8.4 removed `SHOW MASTER STATUS`; MySQL
//! 8.0 knows only the old name; MariaDB keeps `SHOW MASTER STATUS` (its `SHOW BINLOG
//! STATUS` exists only from 10.5.2). So on MySQL the new statement is tried first and,
//! when the server does not parse it (error 1064, 8.0 and 8.1), the old one; the
//! connection remembers which one worked ([`SqlConn::status_statement`]), so a
//! connection pays for the failed try at most once.

use super::error::MysqlError;
use super::sql::SqlConn;

/// MySQL 8.2+ (the only name from 8.4 on).
pub const BINARY_LOG_STATUS: &str = "SHOW BINARY LOG STATUS";
/// MySQL up to 8.3 and MariaDB.
pub const MASTER_STATUS: &str = "SHOW MASTER STATUS";
/// `ER_PARSE_ERROR`.
const PARSE_ERROR: u16 = 1064;

/// The binlog's current end: `(file, position)`; `None` when binary logging is off (the
/// statement returns no row).
pub fn current_end(conn: &mut SqlConn) -> Result<Option<(String, u64)>, MysqlError> {
    let rs = match conn.status_statement() {
        Some(stmt) => conn.query(stmt)?,
        None if conn.mariadb => {
            let rs = conn.query(MASTER_STATUS)?;
            conn.set_status_statement(MASTER_STATUS);
            rs
        }
        None => match conn.query(BINARY_LOG_STATUS) {
            Ok(rs) => {
                conn.set_status_statement(BINARY_LOG_STATUS);
                rs
            }
            Err(MysqlError::Query { code, .. }) if code == PARSE_ERROR => {
                let rs = conn.query(MASTER_STATUS)?;
                conn.set_status_statement(MASTER_STATUS);
                rs
            }
            Err(e) => return Err(e),
        },
    };
    Ok(
        match (
            rs.text(0, 0),
            rs.text(0, 1).and_then(|p| p.parse::<u64>().ok()),
        ) {
            (Some(file), Some(pos)) if !file.is_empty() => Some((file, pos)),
            _ => None,
        },
    )
}

/// The statement [`current_end`] uses on a server of this kind, for messages.
pub fn statement_name(conn: &SqlConn) -> &'static str {
    conn.status_statement().unwrap_or(if conn.mariadb {
        MASTER_STATUS
    } else {
        BINARY_LOG_STATUS
    })
}
