//! The MySQL source's errors and their classification (transient: retry from the
//! checkpoint; permanent: stop and say what to fix). No error carries the password.

use super::types::DecodeError;
use crate::config::ConfigError;
use crate::filter::KeyColumnExcluded;
use crate::source::ErrorClass;
use std::fmt;

/// `mysql_cdc::errors::Error` implements neither `Display` nor `std::error::Error`; this
/// wrapper does (for the errors of the crate's event and table-map parsers).
#[derive(Debug)]
pub struct CdcError(pub mysql_cdc::errors::Error);

impl fmt::Display for CdcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use mysql_cdc::errors::Error as E;
        match &self.0 {
            E::IoError(e) => write!(f, "i/o error: {e}"),
            E::Utf8Error(e) => write!(f, "invalid utf8: {e}"),
            E::FromUtf8Error(e) => write!(f, "invalid utf8: {e}"),
            E::FromHexError(e) => write!(f, "invalid hex: {e}"),
            E::ParseIntError(e) => write!(f, "invalid number: {e}"),
            E::ErrorStack(e) => write!(f, "openssl: {e}"),
            E::String(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for CdcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use mysql_cdc::errors::Error as E;
        match &self.0 {
            E::IoError(e) => Some(e),
            _ => None,
        }
    }
}

/// Everything that stops the MySQL source.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("cannot reach MySQL at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("MySQL rejected user {user:?} (error {code}: {message}): check `user` and the password in the variable named by `password_env`; logtide authenticates with mysql_native_password or caching_sha2_password")]
    Auth {
        user: String,
        code: u16,
        message: String,
    },
    #[error("user {user:?} authenticates with the {plugin} plugin, which logtide does not support: give the account mysql_native_password or caching_sha2_password (ALTER USER ... IDENTIFIED WITH ...)")]
    AuthPlugin { user: String, plugin: String },
    #[error("unexpected connection handshake with MySQL at {addr}")]
    Handshake {
        addr: String,
        #[source]
        source: super::wire::HandshakeError,
    },
    #[error("connection to MySQL lost while {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("query {sql:?} failed (error {code}): {message}")]
    Query {
        sql: String,
        code: u16,
        message: String,
    },
    #[error("the server stopped the binlog stream (error {code}): {message}")]
    Stream { code: u16, message: String },
    #[error("binlog position {position} is no longer on the server (error 1236: {message}): the binlog was purged (expire_logs_days / binlog_expire_logs_seconds). Re-backfill the tables and reset the stored position (delete the source's checkpoint), and keep binlogs longer than logtide may be stopped")]
    BinlogPurged { position: String, message: String },
    #[error("server setting {setting} is {actual}, logtide needs {wanted}: {fix}")]
    Setting {
        setting: &'static str,
        actual: String,
        wanted: &'static str,
        fix: String,
    },
    #[error("user {user:?} lacks the {missing} privilege: run `GRANT {grant} ON *.* TO {user_sql}` as an administrator")]
    Privilege {
        user: String,
        user_sql: String,
        missing: &'static str,
        grant: &'static str,
    },
    #[error("binlog event {name} (type {code}) at {file}:{pos} carries row changes logtide cannot decode: set {setting} on the server (and rotate the binlog with FLUSH BINARY LOGS), then restart logtide from a position after it or re-backfill")]
    UnsupportedEvent {
        name: &'static str,
        code: u8,
        file: String,
        pos: u64,
        setting: &'static str,
    },
    #[error("cannot decode column {column} at {at}: {source}")]
    Decode {
        /// `db.table.column`.
        column: String,
        /// `file:pos` of the rows event.
        at: String,
        #[source]
        source: DecodeError,
    },
    #[error("malformed binlog event at {file}:{pos}: {message}")]
    Malformed {
        file: String,
        pos: u64,
        message: String,
    },
    #[error("table {db}.{table}: {message}")]
    Schema {
        db: String,
        table: String,
        message: String,
    },
    #[error("the table filter names what the server does not have: {0}")]
    FilterUnmatched(crate::filter::UnmatchedList),
    #[error(transparent)]
    KeyColumn(#[from] KeyColumnExcluded),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot resume from {0}: it is not a MySQL binlog position (was the checkpoint written by another source kind?)")]
    ForeignPosition(String),
    #[error("statement-based row change ({statement}) at {file}:{pos}: its rows are not in the binlog. Some session writes with binlog_format=STATEMENT or MIXED: set binlog_format=ROW globally (and in the server config) and make those clients reconnect; then re-backfill the affected tables")]
    StatementEvent {
        statement: String,
        file: String,
        pos: u64,
    },
    #[error("the server logged an incident at {file}:{pos} (events may be missing from the binlog): re-backfill the affected tables and resume from a position after it")]
    Incident { file: String, pos: u64 },
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    #[error(transparent)]
    Hold(#[from] super::txhold::SpillError),
    #[error("cannot store the schema history with the checkpoints: {0}")]
    SchemaStore(#[source] crate::checkpoint::CheckpointError),
    #[error("cannot start the binlog reader thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the binlog reader thread ended without a result")]
    ThreadLost,
}

impl MysqlError {
    /// Whether retrying (with backoff, from the checkpoint) can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            MysqlError::Connect { .. }
            | MysqlError::Io { .. }
            | MysqlError::Handshake { .. }
            | MysqlError::ThreadLost => ErrorClass::Transient,
            // Server shutdown / killed connection / too many connections / lock waits.
            MysqlError::Tls(t) => t.class(),
            MysqlError::Stream { code, .. } | MysqlError::Query { code, .. } => {
                crate::source::classify::mysql_code(*code)
            }
            _ => ErrorClass::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_phase_errors_are_classified() {
        let auth = MysqlError::Auth {
            user: "u".into(),
            code: 1045,
            message: "Access denied".into(),
        };
        assert_eq!(auth.class(), ErrorClass::Permanent);
        assert!(auth.to_string().contains("\"u\""));
        let plugin = MysqlError::AuthPlugin {
            user: "u".into(),
            plugin: "client_ed25519".into(),
        };
        assert_eq!(plugin.class(), ErrorClass::Permanent);
        assert!(plugin.to_string().contains("client_ed25519"));
        let hs = MysqlError::Handshake {
            addr: "h:3306".into(),
            source: super::super::wire::HandshakeError::Truncated,
        };
        assert_eq!(hs.class(), ErrorClass::Transient);
        let io = MysqlError::Io {
            context: "x",
            source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        };
        assert_eq!(io.class(), ErrorClass::Transient);
    }
}
