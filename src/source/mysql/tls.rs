//! TLS for every MySQL connection (SQL and binlog): the `ssl_mode` rules and the rustls
//! session. The SSLRequest and the upgrade of the socket are part of the connection phase
//! (`connect.rs`).
//!
//! - `disabled`: plain text, whatever the server offers.
//! - `preferred`: TLS when the server's handshake has `CLIENT_SSL`, else plain text (logged
//!   at info for the first connection of a source start, debug after).
//! - `required`, `verify_ca`, `verify_identity`: TLS, or [`TlsError::NotOffered`] before any
//!   credential is sent; nothing is downgraded silently. Certificates are checked per mode
//!   (`crate::tls::Verify`), the name against the endpoint's `tls_server_name` when the
//!   host is an SSH tunnel's local end.
//!
//! A server that demands TLS (`require_secure_transport`) while `ssl_mode = "disabled"` is
//! reported as [`TlsError::ServerRequiresTls`] ([`MysqlTls::explain`]).
//! Protocol: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html>.

use super::connect::Login;
use super::MysqlError;
use crate::config::{MysqlSourceConfig, MysqlSslMode};
use crate::endpoint::Endpoint;
use crate::source::ErrorClass;
use crate::tls::{TlsConfigError, Verify};
use rustls::ClientConfig;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A TLS setup, negotiation or handshake failure on a MySQL connection.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("MySQL server {addr} does not offer TLS, but ssl_mode = \"{mode}\" requires it: enable TLS on the server (ssl_cert / ssl_key in its configuration) or, to connect unencrypted, set ssl_mode = \"preferred\" or \"disabled\" in the source's config")]
    NotOffered { addr: String, mode: &'static str },
    #[error("MySQL server {addr} refuses unencrypted connections (error {code}: {message}), and ssl_mode = \"disabled\": set ssl_mode = \"required\" (or \"verify_ca\" / \"verify_identity\" with ssl_ca) in the source's config")]
    ServerRequiresTls {
        addr: String,
        code: u16,
        message: String,
    },
    #[error("TLS handshake with MySQL server {addr} failed (ssl_mode = \"{mode}\"); for a certificate error check ssl_ca and, with verify_identity, that the certificate names the configured host")]
    Handshake {
        addr: String,
        mode: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{host:?} is not a valid TLS server name (DNS name or IP address) for ssl_mode = \"{mode}\"")]
    ServerName {
        host: String,
        mode: &'static str,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error(transparent)]
    Config(Box<TlsConfigError>),
    #[error("connection to MySQL at {addr} lost while {context}")]
    Io {
        addr: String,
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("unexpected connection handshake with MySQL at {addr}: {what}")]
    Protocol { addr: String, what: &'static str },
}

impl TlsError {
    /// Whether retrying can help: refusals and certificate problems stay until the
    /// configuration or the server changes.
    pub fn class(&self) -> ErrorClass {
        match self {
            TlsError::Io { .. } | TlsError::Protocol { .. } => ErrorClass::Transient,
            // rustls reports its errors (certificate, alert) as InvalidData; a timeout or a
            // reset is worth a retry.
            TlsError::Handshake { source, .. } if source.kind() != io::ErrorKind::InvalidData => {
                ErrorClass::Transient
            }
            _ => ErrorClass::Permanent,
        }
    }
}

/// The TLS settings of one MySQL source, checked and ready to connect with (cheap to
/// clone: the rustls configuration is shared).
#[derive(Clone)]
pub struct MysqlTls {
    mode: MysqlSslMode,
    /// `None` for `disabled`.
    config: Option<Arc<ClientConfig>>,
    /// Where connections go, and the name verified and sent as SNI.
    at: Endpoint,
    /// `preferred` found the server without TLS once (later connections log at debug).
    plain: Arc<AtomicBool>,
}

impl std::fmt::Debug for MysqlTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlTls")
            .field("mode", &self.mode)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl MysqlTls {
    /// Builds the rustls configuration for the source's `ssl_mode` (reading `ssl_ca`), for
    /// connections to `at`.
    pub fn new(cfg: &MysqlSourceConfig, at: &Endpoint) -> Result<MysqlTls, TlsError> {
        MysqlTls::with(cfg.ssl_mode, cfg.ssl_ca.as_deref(), at)
    }

    /// The same for any MySQL connection (query mode maps its `sslmode` here). Through an
    /// SSH tunnel (`at.host` is its local end) the real host's name is verified and sent as
    /// SNI.
    pub fn with(
        mode: MysqlSslMode,
        ca: Option<&Path>,
        at: &Endpoint,
    ) -> Result<MysqlTls, TlsError> {
        let config = match mode {
            MysqlSslMode::Disabled => None,
            mode => Some(client_config(mode, ca)?),
        };
        Ok(MysqlTls {
            mode,
            config,
            at: at.clone(),
            plain: Arc::default(),
        })
    }

    pub fn mode(&self) -> MysqlSslMode {
        self.mode
    }

    pub(super) fn addr(&self) -> String {
        self.at.addr()
    }

    /// Whether to upgrade a connection whose server does (`offered`) or does not offer
    /// TLS; `Err` when the mode requires TLS the server does not offer.
    pub(super) fn wants_tls(&self, offered: bool) -> Result<bool, MysqlError> {
        if self.config.is_none() {
            return Ok(false);
        }
        if offered {
            return Ok(true);
        }
        if self.mode.requires_tls() {
            return Err(MysqlError::Tls(TlsError::NotOffered {
                addr: self.addr(),
                mode: self.mode.name(),
            }));
        }
        if self.plain.swap(true, Ordering::Relaxed) {
            tracing::debug!(addr = %self.addr(), "mysql server offers no tls; ssl_mode = \"preferred\" connects unencrypted");
        } else {
            tracing::info!(addr = %self.addr(), "mysql server offers no tls; ssl_mode = \"preferred\" connects unencrypted");
        }
        Ok(false)
    }

    /// A client session for one connection (SNI and certificate checks per mode).
    pub(super) fn session(&self) -> Result<rustls::ClientConnection, MysqlError> {
        let Some(config) = self.config.clone() else {
            return Err(MysqlError::Tls(TlsError::Protocol {
                addr: self.addr(),
                what: "TLS was not configured",
            }));
        };
        // Without verification the name is only the SNI; a host that is no valid name
        // (rare) then sends none rather than failing a connection that worked before.
        let name = match crate::tls::server_name(self.at.tls_host()) {
            Ok(n) => n,
            Err(_) if !self.mode.requires_tls() || self.mode == MysqlSslMode::Required => {
                rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
            }
            Err(source) => {
                return Err(MysqlError::Tls(TlsError::ServerName {
                    host: self.at.tls_host().to_owned(),
                    mode: self.mode.name(),
                    source,
                }))
            }
        };
        rustls::ClientConnection::new(config, name).map_err(|source| {
            MysqlError::Tls(TlsError::Config(Box::new(TlsConfigError::Config {
                source,
            })))
        })
    }

    /// A failed TLS handshake (rustls errors arrive as `InvalidData`).
    pub(super) fn handshake_failed(&self, source: io::Error) -> MysqlError {
        MysqlError::Tls(TlsError::Handshake {
            addr: self.addr(),
            mode: self.mode.name(),
            source,
        })
    }

    /// The error to report for a failed connect: a clear refusal when the server demands
    /// TLS that `disabled` does not give, else `e`.
    ///
    /// MySQL says so (error 3159); MariaDB answers `require_secure_transport=ON` with a
    /// plain "access denied" (1045), so after an authentication failure in `disabled` mode
    /// the same login is tried once over TLS: if that succeeds, transport was the reason.
    pub(super) fn explain(&self, login: &Login, e: MysqlError) -> MysqlError {
        use super::MysqlError as E;
        match e {
            E::Auth { code, message, .. } | E::Stream { code, message }
                if code == 3159
                    || message.contains("require_secure_transport")
                    || message.contains("insecure transport") =>
            {
                E::Tls(TlsError::ServerRequiresTls {
                    addr: self.addr(),
                    code,
                    message,
                })
            }
            E::Auth { code, message, .. }
                if self.mode == MysqlSslMode::Disabled && self.login_works_over_tls(login) =>
            {
                E::Tls(TlsError::ServerRequiresTls {
                    addr: self.addr(),
                    code,
                    message: format!("{message}; the same login succeeds over TLS"),
                })
            }
            e => e,
        }
    }

    /// Whether the login succeeds with `required`.
    fn login_works_over_tls(&self, login: &Login) -> bool {
        let Ok(config) = client_config(MysqlSslMode::Required, None) else {
            return false;
        };
        let probe = MysqlTls {
            mode: MysqlSslMode::Required,
            config: Some(config),
            plain: Arc::default(),
            ..self.clone()
        };
        let ok = super::connect::open(login, &probe).is_ok();
        tracing::debug!(addr = %self.addr(), ok, "login retried over tls after an authentication failure with ssl_mode = \"disabled\"");
        ok
    }
}

fn client_config(mode: MysqlSslMode, ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let verify = match mode {
        MysqlSslMode::Disabled | MysqlSslMode::Preferred | MysqlSslMode::Required => {
            Verify::Nothing
        }
        MysqlSslMode::VerifyCa => Verify::Chain,
        MysqlSslMode::VerifyIdentity => Verify::ChainAndName,
    };
    crate::tls::client_config(verify, ca, "ssl_ca", None).map_err(|e| TlsError::Config(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: MysqlSslMode) -> MysqlTls {
        MysqlTls::with(mode, None, &Endpoint::direct("db.example.com", 3306)).expect("config")
    }

    #[test]
    fn modes_decide_about_an_offer() {
        assert!(!tls(MysqlSslMode::Disabled).wants_tls(true).expect("plain"));
        assert!(tls(MysqlSslMode::Preferred).wants_tls(true).expect("tls"));
        assert!(!tls(MysqlSslMode::Preferred)
            .wants_tls(false)
            .expect("plain"));
        for mode in [
            MysqlSslMode::Required,
            MysqlSslMode::VerifyCa,
            MysqlSslMode::VerifyIdentity,
        ] {
            assert!(tls(mode).wants_tls(true).expect("tls"));
            let e = tls(mode).wants_tls(false).expect_err("refused");
            assert!(
                matches!(&e, MysqlError::Tls(TlsError::NotOffered { .. })),
                "{e:?}"
            );
            assert_eq!(e.class(), ErrorClass::Permanent);
        }
    }

    #[test]
    fn sessions_and_names() {
        assert!(tls(MysqlSslMode::VerifyIdentity).session().is_ok());
        assert!(tls(MysqlSslMode::Disabled).session().is_err());
        // An invalid name is only refused where the name is verified.
        let bad =
            |mode| MysqlTls::with(mode, None, &Endpoint::direct("bad name", 3306)).expect("config");
        assert!(bad(MysqlSslMode::Required).session().is_ok());
        assert!(matches!(
            bad(MysqlSslMode::VerifyIdentity).session(),
            Err(MysqlError::Tls(TlsError::ServerName { .. }))
        ));
    }

    #[test]
    fn a_certificate_error_is_permanent_a_reset_is_not() {
        let t = tls(MysqlSslMode::VerifyCa);
        let cert = t.handshake_failed(io::Error::new(io::ErrorKind::InvalidData, "UnknownIssuer"));
        assert_eq!(cert.class(), ErrorClass::Permanent);
        let reset = t.handshake_failed(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(reset.class(), ErrorClass::Transient);
    }
}
