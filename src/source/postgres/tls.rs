//! TLS for both PostgreSQL connections (replication and SQL), with rustls and aws-lc-rs.
//!
//! Owns: the rustls client configuration for each `sslmode`, the upgrade of a raw TCP
//! stream after PostgreSQL's SSLRequest was answered `S` ([`connect`]), the
//! `tokio_postgres::tls` glue for the SQL connection ([`make_tls_connect`]), and opening
//! that SQL connection from a [`PostgresSourceConfig`] ([`connect_sql`]). Does not own the
//! SSLRequest exchange on the replication connection (the caller sends it and reads the
//! one-byte answer; [`wants_tls`] / [`requires_tls`] say what to do with it).
//!
//! `sslmode` semantics follow libpq:
//! * `disable`: never TLS.
//! * `prefer` (default): try TLS; if the server answers `N`, continue in plain text. The
//!   certificate is not verified (as in libpq).
//! * `require`: TLS or fail; the certificate is *not* verified (any certificate is
//!   accepted) but the handshake signatures are, so the session is encrypted with whoever
//!   holds the presented certificate's key. (Unlike libpq, a present root cert file does
//!   not upgrade `require` to `verify-ca`.)
//! * `verify-full`: TLS or fail; the chain must lead to a root in `sslrootcert` (PEM file)
//!   or, without it, the Mozilla roots of `webpki-roots`, and the certificate must name the
//!   host (SAN DNS name or IP address).
//!
//! The rustls configurations (provider, root store, verifiers) are shared with MySQL in
//! [`crate::tls`]. ALPN offers `postgresql`, as libpq 17
//! does. On the SQL connection the TLS stream reports the `tls-server-end-point` channel
//! binding (RFC 5929: the hash of the server certificate, SHA-256 for certificates signed
//! with SHA-1/SHA-256/MD5, SHA-384 for SHA-384), so tokio-postgres uses
//! `SCRAM-SHA-256-PLUS` where the server offers it: under `require` this ties the password
//! exchange to the TLS session, which defeats a man in the middle even though the
//! certificate is not verified. Certificates signed otherwise (SHA-512, Ed25519, PSS)
//! report no binding and authenticate with plain SCRAM-SHA-256.

use crate::config::{ConfigError, PostgresSourceConfig, SslMode};
use crate::endpoint::Endpoint;
use crate::tls::Verify;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::TlsConnector;

/// A TLS setup or handshake failure, or a failure to open the SQL connection.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file (`sslrootcert`) or the rustls configuration.
    #[error(transparent)]
    Config(Box<crate::tls::TlsConfigError>),
    #[error("{host:?} is not a valid TLS server name (DNS name or IP address)")]
    ServerName {
        host: String,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("TLS handshake with {host} failed (sslmode={mode})")]
    Handshake {
        host: String,
        mode: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("TLS was requested with sslmode=disable")]
    Disabled,
    #[error("cannot read the postgres password")]
    Password {
        #[source]
        source: ConfigError,
    },
    #[error("cannot connect to postgres at {host}:{port} as {user} (sslmode={mode})")]
    Connect {
        host: String,
        port: u16,
        user: String,
        mode: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// The libpq name of a mode, for messages.
pub fn mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyFull => "verify-full",
    }
}

/// Whether to send an SSLRequest at all.
pub fn wants_tls(mode: SslMode) -> bool {
    mode != SslMode::Disable
}

/// Whether an `N` answer to the SSLRequest must fail the connection (else: go on in plain
/// text).
pub fn requires_tls(mode: SslMode) -> bool {
    matches!(mode, SslMode::Require | SslMode::VerifyFull)
}

/// The rustls client configuration for `mode` (`disable` → [`TlsError::Disabled`]).
pub fn client_config(
    mode: SslMode,
    rootcert: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verify = match mode {
        SslMode::Disable => return Err(TlsError::Disabled),
        SslMode::Prefer | SslMode::Require => Verify::Nothing,
        SslMode::VerifyFull => Verify::ChainAndName,
    };
    crate::tls::client_config(verify, rootcert, "sslrootcert", Some(b"postgresql"))
        .map_err(|e| TlsError::Config(Box::new(e)))
}

fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    crate::tls::server_name(host).map_err(|source| TlsError::ServerName {
        host: host.to_owned(),
        source,
    })
}

/// Upgrades a TCP stream after PostgreSQL's SSLRequest was answered `S`.
///
/// `host` is the name the certificate must carry under `verify-full` (and the SNI). Fails
/// with [`TlsError::Disabled`] for `disable` (the caller should not have asked).
pub async fn connect(
    stream: TcpStream,
    host: &str,
    mode: SslMode,
    rootcert: Option<&Path>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TlsError> {
    let config = client_config(mode, rootcert)?;
    let name = server_name(host)?;
    TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|source| TlsError::Handshake {
            host: host.to_owned(),
            mode: mode_name(mode),
            source,
        })
}

/// The `tokio_postgres` TLS connector for `mode`. For `disable` it is a connector that is
/// never used (tokio-postgres is then told `SslMode::Disable`), so every mode yields the
/// same stream type.
pub fn make_tls_connect(
    mode: SslMode,
    rootcert: Option<&Path>,
) -> Result<MakeRustlsConnect, TlsError> {
    let config = match mode {
        SslMode::Disable => None,
        _ => Some(client_config(mode, rootcert)?),
    };
    Ok(MakeRustlsConnect {
        config,
        mode,
        server_name: None,
    })
}

/// The SQL connection's driver future: poll it (e.g. in the service's `JoinSet`) for the
/// [`tokio_postgres::Client`] to make progress; it ends when the client is dropped.
pub type SqlConnection =
    tokio_postgres::Connection<tokio_postgres::Socket, RustlsStream<tokio_postgres::Socket>>;

/// Opens the SQL connection (tokio-postgres) for a PostgreSQL source to `at`: host (a
/// leading `/` means a unix socket directory) and port, TLS verifying `at`'s server name;
/// the source's user, database, the password from the environment
/// variable the config names, `connect_timeout`, `application_name = logtide`, and TLS per
/// `sslmode` (`verify-full` is `require` for tokio-postgres plus our verifying config).
///
/// Spawns nothing: the caller owns the returned [`SqlConnection`] future and must drive it
/// (typically `join_set.spawn(conn)`), else the client never gets an answer.
pub async fn connect_sql(
    cfg: &PostgresSourceConfig,
    at: &Endpoint,
) -> Result<(tokio_postgres::Client, SqlConnection), TlsError> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&at.host)
        .port(at.port)
        .user(&cfg.user)
        .dbname(&cfg.database)
        .application_name("logtide")
        .connect_timeout(cfg.connect_timeout)
        // A vanished peer ends the connection (see `conn::tcp_keepalive`).
        .keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(10))
        .keepalives_interval(std::time::Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(std::time::Duration::from_secs(30))
        .ssl_mode(match cfg.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
    if let Some(pw) = cfg
        .password()
        .map_err(|source| TlsError::Password { source })?
    {
        pg.password(pw.expose());
    }
    let tls = make_tls_connect(cfg.sslmode, cfg.sslrootcert.as_deref())?
        .with_server_name(at.tls_server_name.clone());
    tracing::debug!(host = %at.host, port = at.port, user = %cfg.user, sslmode = mode_name(cfg.sslmode), "connecting to postgres (sql)");
    pg.connect(tls).await.map_err(|source| TlsError::Connect {
        host: at.host.clone(),
        port: at.port,
        user: cfg.user.clone(),
        mode: mode_name(cfg.sslmode),
        source,
    })
}

/// `tokio_postgres::tls::MakeTlsConnect` with rustls; see [`make_tls_connect`].
#[derive(Clone)]
pub struct MakeRustlsConnect {
    /// `None` for `sslmode=disable`.
    config: Option<Arc<ClientConfig>>,
    mode: SslMode,
    /// Verify this name instead of the connected host (the database behind an SSH tunnel).
    server_name: Option<String>,
}

impl MakeRustlsConnect {
    /// Verifies (and sends as SNI) `name` instead of the host tokio-postgres connects to;
    /// `None` keeps the connected host.
    pub fn with_server_name(mut self, name: Option<String>) -> Self {
        self.server_name = name;
        self
    }
}

impl std::fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeRustlsConnect")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, TlsError> {
        // tokio-postgres passes "" for unix sockets; an invalid name only matters if the
        // server actually offers TLS, so the error is deferred to `connect`.
        Ok(RustlsConnect {
            config: self.config.clone(),
            mode: self.mode,
            host: self
                .server_name
                .clone()
                .unwrap_or_else(|| domain.to_owned()),
        })
    }
}

/// One TLS upgrade for tokio-postgres.
pub struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    mode: SslMode,
    host: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or(TlsError::Disabled)?;
            let name = server_name(&self.host)?;
            let tls = TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(|source| TlsError::Handshake {
                    host: self.host.clone(),
                    mode: mode_name(self.mode),
                    source,
                })?;
            let binding = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|cert| tls_server_end_point(cert));
            Ok(RustlsStream { tls, binding })
        })
    }
}

/// A rustls client stream as tokio-postgres wants it.
pub struct RustlsStream<S> {
    tls: tokio_rustls::client::TlsStream<S>,
    /// `tls-server-end-point` channel binding data, if the certificate allows one.
    binding: Option<Vec<u8>>,
}

/// One DER item: (tag, content, rest). Bounds-checked; `None` on malformed input.
fn der_item(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = b
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, x| (acc << 8) | usize::from(*x));
        (len, 2 + n)
    };
    let content = b.get(header..header.checked_add(len)?)?;
    let rest = b.get(header + len..)?;
    Some((tag, content, rest))
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its signature's hash
/// (SHA-1 and MD5 replaced by SHA-256). `None` for hashes we cannot name or compute.
fn tls_server_end_point(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use rustls::crypto::aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384,
    };
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let (_, cert_body, _) = der_item(cert.as_ref()).filter(|(t, _, _)| *t == 0x30)?;
    let (_, _tbs, rest) = der_item(cert_body).filter(|(t, _, _)| *t == 0x30)?;
    let (_, alg, _) = der_item(rest).filter(|(t, _, _)| *t == 0x30)?;
    let (_, oid, _) = der_item(alg).filter(|(t, _, _)| *t == 0x06)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    let suite = match oid {
        // md5WithRSA, sha1WithRSA, sha256WithRSA
        [p @ .., 0x04 | 0x05 | 0x0b] if p == RSA => TLS13_AES_128_GCM_SHA256,
        [p @ .., 0x02] if p == ECDSA_SHA2 => TLS13_AES_128_GCM_SHA256,
        o if o == ECDSA_SHA1 => TLS13_AES_128_GCM_SHA256,
        [p @ .., 0x0c] if p == RSA => TLS13_AES_256_GCM_SHA384,
        [p @ .., 0x03] if p == ECDSA_SHA2 => TLS13_AES_256_GCM_SHA384,
        _ => return None,
    };
    let rustls::SupportedCipherSuite::Tls13(suite) = suite else {
        return None;
    };
    Some(
        suite
            .common
            .hash_provider
            .hash(cert.as_ref())
            .as_ref()
            .to_vec(),
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.binding {
            Some(b) => ChannelBinding::tls_server_end_point(b.clone()),
            None => ChannelBinding::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build_for_each_mode() {
        assert!(matches!(
            client_config(SslMode::Disable, None),
            Err(TlsError::Disabled)
        ));
        for mode in [SslMode::Prefer, SslMode::Require, SslMode::VerifyFull] {
            let c = client_config(mode, None).expect("config");
            assert_eq!(c.alpn_protocols, vec![b"postgresql".to_vec()]);
        }
        assert!(wants_tls(SslMode::Prefer) && !wants_tls(SslMode::Disable));
        assert!(requires_tls(SslMode::VerifyFull) && !requires_tls(SslMode::Prefer));
    }

    fn e_config(e: &TlsError) -> &crate::tls::TlsConfigError {
        match e {
            TlsError::Config(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_rootcert_is_named() {
        let e = client_config(
            SslMode::VerifyFull,
            Some(Path::new("/nonexistent/root.pem")),
        )
        .expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/root.pem"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not a pem\n").expect("write");
        let e = client_config(SslMode::VerifyFull, Some(&p)).expect_err("no certs");
        assert!(
            matches!(*e_config(&e), crate::tls::TlsConfigError::NoCa { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn der_walker_never_panics_and_rejects_garbage() {
        for b in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 0, 0, 0, 0, 0],
            &[0x30, 0x82, 0xff, 0xff],
            &[0x30, 0x02, 0x30, 0x00],
        ] {
            assert!(tls_server_end_point(&CertificateDer::from(b.to_vec())).is_none());
        }
        assert_eq!(
            der_item(&[0x06, 0x01, 0x2a, 0xff]),
            Some((0x06, &[0x2a][..], &[0xff][..]))
        );
    }

    #[test]
    fn server_names() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("").is_err());
    }
}
