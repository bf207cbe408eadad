//! The one place that says which failures are transient and which are permanent.
//!
//! Every source kind (and the backfill) asks here about the *leaf* of an error chain: an
//! I/O error, a TLS (rustls) error, a PostgreSQL SQLSTATE, a MySQL/MariaDB error code. The
//! per-source error enums (`PgError::class`, `MysqlError::class`, `QueryError::class`,
//! `BackfillError::is_transient`) only map their own variants and delegate the leaves.
//!
//! | failure                                                        | class     |
//! |----------------------------------------------------------------|-----------|
//! | connection refused / reset / aborted, broken pipe, EOF, timeout | transient |
//! | host or network unreachable, DNS lookup failure                 | transient |
//! | server shutting down, restarting, too many connections          | transient |
//! | deadlock, lock wait timeout, serialization failure, cancelled   | transient |
//! | a connection without a code (closed, I/O) from the SQL driver   | transient |
//! | TLS: certificate not trusted (wrong CA), wrong host name, expired, revoked, a TLS alert from the server, no common protocol | permanent |
//! | authentication (wrong user or password, SQLSTATE 28xxx, MySQL 1045/1044/1698) | permanent |
//! | missing privilege (42501, MySQL 1142/1143/1227/1370)           | permanent |
//! | missing server setting (`wal_level`, `log_bin`, `binlog_format`, …) | permanent |
//! | purged position (binlog purged, slot invalidated)               | permanent |
//! | undecodable data, any other SQL error of ours                   | permanent |
//!
//! A *dropped table* (PostgreSQL 42P01, MySQL 1146) is neither when it happens during a
//! backfill: the backfill skips that table with a warning and the metric
//! `logtide_backfill_tables_skipped_total` ([`is_missing_table`]); elsewhere it is
//! permanent like any other SQL error.
//!
//! Permanent means "stop the source and say what to fix": retrying a wrong password or an
//! untrusted certificate forever pages nobody.

use super::ErrorClass;
use std::error::Error;
use std::io;

/// The class of an I/O error (or `None` when its kind says nothing about retrying).
pub fn io(e: &io::Error) -> Option<ErrorClass> {
    // tokio-rustls reports a rustls error as `InvalidData` with the rustls error inside.
    if let Some(inner) = e.get_ref() {
        if let Some(t) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls(t));
        }
        if let Some(class) = chain(inner) {
            return Some(class);
        }
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::TimedOut
        | K::WouldBlock
        | K::UnexpectedEof
        | K::Interrupted
        | K::AddrNotAvailable
        | K::AddrInUse
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => Some(ErrorClass::Transient),
        // DNS failures come as `Other`/`Uncategorized` with a "lookup" message.
        _ if e.to_string().contains("failed to lookup address") => Some(ErrorClass::Transient),
        K::PermissionDenied | K::InvalidInput => Some(ErrorClass::Permanent),
        _ => None,
    }
}

/// The class of a TLS error: certificate and negotiation failures stay until the
/// configuration or the server changes.
pub fn tls(e: &rustls::Error) -> ErrorClass {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(_)
        | E::NoCertificatesPresented
        | E::UnsupportedNameType
        | E::AlertReceived(_)
        | E::PeerIncompatible(_)
        | E::InvalidCertRevocationList(_)
        | E::General(_) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

/// The class of a PostgreSQL SQLSTATE.
pub fn sqlstate(code: &str) -> ErrorClass {
    let transient = code.starts_with("08") // connection exception
        || code.starts_with("40") // serialization failure, deadlock
        || code.starts_with("53") // insufficient resources (too many connections, disk)
        || code.starts_with("57") // operator intervention: shutdown, crash, cancel
        || code.starts_with("58") // system error (I/O) on the server
        || code == "55006" // object in use (a slot still held by a dead walsender)
        || code == "55P03"; // lock not available
    if transient {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// The class of a MySQL / MariaDB server error code (`0`: the code was not readable).
pub fn mysql_code(code: u16) -> ErrorClass {
    match code {
        0
        | 1040 // too many connections
        | 1053 // server shutdown in progress
        | 1077..=1080 // normal shutdown, got signal, shutdown complete, forcing close
        | 1152..=1161 // aborted connection, packet/network errors and timeouts
        | 1205 // lock wait timeout
        | 1213 // deadlock
        | 1317 // query interrupted
        | 1927 // MariaDB: connection killed
        | 2006 // server has gone away
        | 2013 // lost connection during query
        | 4031 => ErrorClass::Transient, // disconnected by the server (idle)
        _ => ErrorClass::Permanent,
    }
}

/// The class of the first recognised error in `err`'s chain (outermost first), looking
/// at I/O errors, TLS errors, the PostgreSQL driver's errors and the MySQL source's.
/// `None`: nothing in the chain is known here (the caller decides).
pub fn chain(err: &(dyn Error + 'static)) -> Option<ErrorClass> {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(tls(t));
        }
        if let Some(i) = e.downcast_ref::<io::Error>() {
            if let Some(c) = io(i) {
                return Some(c);
            }
        }
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            return Some(postgres(pg));
        }
        if let Some(my) = e.downcast_ref::<crate::source::mysql::MysqlError>() {
            return Some(my.class());
        }
        cur = e.source();
    }
    None
}

/// The class of a `tokio_postgres` error: its SQLSTATE when the server sent one, else
/// what its cause says (a TLS certificate failure is permanent), else transient (a closed
/// connection, I/O, a timeout).
pub fn postgres(e: &tokio_postgres::Error) -> ErrorClass {
    if let Some(code) = e.code() {
        return sqlstate(code.code());
    }
    if e.is_closed() {
        return ErrorClass::Transient;
    }
    e.source().and_then(chain).unwrap_or(ErrorClass::Transient)
}

/// Whether `err`'s chain says a table does not exist (PostgreSQL 42P01, MySQL 1146): a
/// table dropped while a backfill reads it.
pub fn is_missing_table(err: &(dyn Error + 'static)) -> bool {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            if pg.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                return true;
            }
        }
        if let Some(crate::source::mysql::MysqlError::Query { code: 1146, .. }) =
            e.downcast_ref::<crate::source::mysql::MysqlError>()
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_failures_are_transient() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::TimedOut,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::BrokenPipe,
        ] {
            assert_eq!(
                io(&io::Error::from(kind)),
                Some(ErrorClass::Transient),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn certificate_failures_are_permanent_also_inside_io_errors() {
        let bad_ca = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(tls(&bad_ca), ErrorClass::Permanent);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, bad_ca);
        assert_eq!(io(&wrapped), Some(ErrorClass::Permanent));
        // Behind another error's `source()`, as the TLS connectors report it.
        #[derive(Debug, thiserror::Error)]
        #[error("TLS handshake failed")]
        struct Handshake(#[source] io::Error);
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        let outer = Handshake(io::Error::new(io::ErrorKind::InvalidData, name));
        assert_eq!(chain(&outer), Some(ErrorClass::Permanent));
    }

    #[test]
    fn sqlstates() {
        for c in ["08006", "57P01", "53300", "40001", "55006"] {
            assert_eq!(sqlstate(c), ErrorClass::Transient, "{c}");
        }
        for c in ["28P01", "28000", "42501", "42P01", "3D000", "55000"] {
            assert_eq!(sqlstate(c), ErrorClass::Permanent, "{c}");
        }
    }

    #[test]
    fn mysql_codes() {
        for c in [1040, 1053, 2013, 1927, 1205] {
            assert_eq!(mysql_code(c), ErrorClass::Transient, "{c}");
        }
        for c in [1045, 1044, 1227, 1236, 1146, 1064] {
            assert_eq!(mysql_code(c), ErrorClass::Permanent, "{c}");
        }
    }

    #[test]
    fn missing_tables_are_recognised() {
        let e = crate::source::mysql::MysqlError::Query {
            sql: "SELECT 1".into(),
            code: 1146,
            message: "Table 'd.t' doesn't exist".into(),
        };
        assert!(is_missing_table(&e));
        let other = crate::source::mysql::MysqlError::Query {
            sql: "SELECT 1".into(),
            code: 1064,
            message: "syntax".into(),
        };
        assert!(!is_missing_table(&other));
    }
}
