//! TLS for every MySQL connection (SQL and binlog) through an in-process TLS proxy.
//!
//! `mysql_cdc` has no TLS (its `upgrade_to_ssl` is `unimplemented!()`), and it opens its
//! own `TcpStream`. So when TLS may be used ([`MysqlTls::start`]), a connection goes
//! through a one-shot proxy: a listener on `127.0.0.1:0` that accepts exactly one
//! connection (the crate's) and closes, then, on its own thread with a current-thread
//! tokio runtime:
//!
//! 1. connects to the server (TCP_NODELAY) and reads its initial handshake. Without the
//!    `CLIENT_SSL` capability, `ssl_mode = "preferred"` goes on in plain text and every
//!    stricter mode refuses ([`TlsError::NotOffered`]); nothing is downgraded silently.
//! 2. forwards the handshake, reads the crate's HandshakeResponse41 (sequence id 1), sends
//!    the server an SSLRequest (its first 32 bytes with `CLIENT_SSL`, sequence id 1), does
//!    the TLS handshake (SNI and certificate checks per [`MysqlSslMode`]), then sends the
//!    response itself with `CLIENT_SSL` set and sequence id 2.
//! 3. relays the rest of the authentication ([`Auth`]): server packets go to the crate
//!    with their sequence id minus one, the crate's to the server plus one, until OK or
//!    ERR. `caching_sha2_password` full authentication is answered by the proxy with the
//!    password in clear text (as every MySQL client does over TLS; the server refuses the
//!    crate's RSA public-key request on a TLS connection), and its fast-auth success
//!    (`01 03` + OK) is presented to the crate in the one form it reads completely.
//! 4. copies bytes both ways until either side ends; then both sockets close. A stop that
//!    shuts the crate's socket down (see [`super::socket`], which now finds the loopback
//!    socket) therefore ends the proxy and the server connection too.
//!
//! The proxy reports how the negotiation ended ([`Proxy::outcome`]) so a refused or failed
//! connection surfaces as a typed [`TlsError`] instead of the crate's "connection lost".
//! With `ssl_mode = "disabled"` no proxy is used: the crate connects directly, as before;
//! with `preferred`, once a connection found the server without TLS, the later connections
//! of the same [`MysqlTls`] (one source start) connect directly too.
//! Protocol: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html>.

use crate::config::{MysqlSourceConfig, MysqlSslMode};
use crate::source::ErrorClass;
use crate::tls::{TlsConfigError, Verify};
use mysql_cdc::binlog_options::BinlogOptions;
use mysql_cdc::replica_options::ReplicaOptions;
use rustls::ClientConfig;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Capability flag: the server can switch to TLS / the client asks it to.
pub const CLIENT_SSL: u32 = 0x0800;
const CLIENT_PROTOCOL_41: u32 = 0x0200;
/// Length of an SSLRequest: capabilities, max packet size, collation, 23 reserved bytes.
const SSL_REQUEST_LEN: usize = 32;
/// The largest payload of one wire packet.
const MAX_PAYLOAD: usize = 0xFF_FFFF;
const CACHING_SHA2: &[u8] = b"caching_sha2_password";
/// How long a failed connect waits for the proxy's account of what went wrong.
const OUTCOME_WAIT: Duration = Duration::from_secs(2);

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
    #[error("cannot reach MySQL at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("connection to MySQL at {addr} lost while {context}")]
    Io {
        addr: String,
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("unexpected connection handshake with MySQL at {addr}: {what}")]
    Protocol { addr: String, what: &'static str },
    #[error("timed out after {0:?} negotiating TLS with the MySQL server (connect_timeout)")]
    Timeout(Duration),
    #[error("cannot start the local TLS proxy for the MySQL connection")]
    Local(#[source] io::Error),
}

impl TlsError {
    /// Whether retrying can help: refusals and certificate problems stay until the
    /// configuration or the server changes.
    pub fn class(&self) -> ErrorClass {
        match self {
            TlsError::Connect { .. }
            | TlsError::Io { .. }
            | TlsError::Timeout(_)
            | TlsError::Local(_)
            | TlsError::Protocol { .. } => ErrorClass::Transient,
            // tokio-rustls reports rustls errors (certificate, alert) as InvalidData.
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
    host: String,
    port: u16,
    timeout: Duration,
    /// The name to verify and send as SNI when `host` is a tunnel's local end.
    server_name: Option<String>,
    /// `preferred` found the server without TLS: later connections of this setup go
    /// directly to the server (no proxy hop for a plain-text binlog stream).
    plain: Arc<AtomicBool>,
}

impl std::fmt::Debug for MysqlTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlTls")
            .field("mode", &self.mode)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// How the proxy's negotiation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiated {
    /// TLS with this protocol version and cipher suite.
    Tls { version: String, cipher: String },
    /// The server offers no TLS and `ssl_mode = "preferred"`: plain text.
    Plain,
    /// The server answered the connection with an error packet (passed on to the crate).
    ServerError,
}

impl MysqlTls {
    /// Builds the rustls configuration for the source's `ssl_mode` (reading `ssl_ca`).
    pub fn new(cfg: &MysqlSourceConfig) -> Result<MysqlTls, TlsError> {
        let tls = MysqlTls::with(
            cfg.ssl_mode,
            cfg.ssl_ca.as_deref(),
            &cfg.host,
            cfg.port,
            cfg.connect_timeout,
        )?;
        Ok(tls.verifying(cfg.tls_server_name.clone()))
    }

    /// The same for any MySQL connection (query mode maps its `sslmode` here).
    pub fn with(
        mode: MysqlSslMode,
        ca: Option<&Path>,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<MysqlTls, TlsError> {
        let config = match mode {
            MysqlSslMode::Disabled => None,
            mode => Some(client_config(mode, ca)?),
        };
        Ok(MysqlTls {
            mode,
            config,
            host: host.to_owned(),
            port,
            timeout,
            server_name: None,
            plain: Arc::default(),
        })
    }

    /// Through an SSH tunnel (`host` is its local end): the real host's name, verified and
    /// sent as SNI instead of `host`.
    pub fn verifying(mut self, server_name: Option<String>) -> MysqlTls {
        self.server_name = server_name;
        self
    }

    pub fn mode(&self) -> MysqlSslMode {
        self.mode
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Starts the proxy for one connection of the crate (`None` with `ssl_mode =
    /// "disabled"`: connect directly). `options` are the crate's connection options; the
    /// password is needed for `caching_sha2_password` full authentication.
    pub(super) fn start(&self, options: &ReplicaOptions) -> Result<Option<Proxy>, TlsError> {
        let Some(config) = self.config.clone() else {
            return Ok(None);
        };
        if self.mode == MysqlSslMode::Preferred
            && (self.plain.load(Ordering::Relaxed) || self.offers_no_tls())
        {
            self.plain.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        // Without verification the name is only the SNI; a host that is no valid name
        // (rare) then sends none rather than failing a connection that worked before.
        let name = match crate::tls::server_name(self.server_name.as_deref().unwrap_or(&self.host))
        {
            Ok(n) => n,
            Err(_) if !self.mode.requires_tls() || self.mode == MysqlSslMode::Required => {
                rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
            }
            Err(source) => {
                return Err(TlsError::ServerName {
                    host: self.host.clone(),
                    mode: self.mode.name(),
                    source,
                })
            }
        };
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(TlsError::Local)?;
        let port = listener.local_addr().map_err(TlsError::Local)?.port();
        listener.set_nonblocking(true).map_err(TlsError::Local)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job = Job {
            tls: self.clone(),
            config,
            name,
            password: options.password.clone(),
        };
        std::thread::Builder::new()
            .name("mysql-tls".into())
            .spawn(move || job.run(listener, tx))
            .map_err(TlsError::Local)?;
        Ok(Some(Proxy {
            outcome: rx,
            options: ReplicaOptions {
                port,
                hostname: "127.0.0.1".into(),
                ssl_mode: mysql_cdc::ssl_mode::SslMode::Disabled,
                username: options.username.clone(),
                password: options.password.clone(),
                database: options.database.clone(),
                server_id: options.server_id,
                blocking: options.blocking,
                heartbeat_interval: options.heartbeat_interval,
                binlog: BinlogOptions::from_end(),
            },
        }))
    }

    /// The error to report for a failed connect: the proxy's own account when it has one,
    /// a clear refusal when the server demands TLS that `disabled` does not give, else `e`.
    ///
    /// MySQL says so (error 3159); MariaDB answers `require_secure_transport=ON` with a
    /// plain "access denied" (1045), so after an authentication failure in `disabled` mode
    /// the same login is tried once over TLS: if that succeeds, transport was the reason.
    pub(super) fn explain(
        &self,
        proxy: Option<&Proxy>,
        options: &ReplicaOptions,
        e: super::MysqlError,
    ) -> super::MysqlError {
        use super::MysqlError as E;
        if let Some(Err(t)) = proxy.and_then(|p| p.outcome(OUTCOME_WAIT)) {
            return E::Tls(t);
        }
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
                if self.mode == MysqlSslMode::Disabled && self.login_works_over_tls(options) =>
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

    /// Notes how a successful connection through `proxy` was negotiated.
    pub(super) fn learn(&self, proxy: &Proxy) {
        if let Some(Ok(Negotiated::Plain)) = proxy.outcome(OUTCOME_WAIT) {
            self.plain.store(true, Ordering::Relaxed);
        }
    }

    /// `preferred` only: reads the server's greeting on a throw-away connection and says
    /// whether it lacks `CLIENT_SSL`, so a plain-text connection (a backfill, the binlog
    /// stream) goes directly to the server instead of through the proxy's extra hop.
    /// `false` when the probe fails (the proxy then reports what is wrong).
    fn offers_no_tls(&self) -> bool {
        use std::io::Read as _;
        use std::net::ToSocketAddrs as _;
        let probe = || -> io::Result<bool> {
            let addr = (self.host.as_str(), self.port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
            let mut s = std::net::TcpStream::connect_timeout(&addr, self.timeout)?;
            s.set_read_timeout(Some(self.timeout))?;
            let mut head = [0u8; 4];
            s.read_exact(&mut head)?;
            let (len, _) = parse_header(head);
            let mut payload = vec![0u8; len.min(1024)];
            s.read_exact(&mut payload)?;
            Ok(parse_handshake(&payload).is_some_and(|h| h.capabilities & CLIENT_SSL == 0))
        };
        let plain = probe().unwrap_or(false);
        if plain {
            tracing::debug!(addr = %self.addr(), "mysql server offers no tls; ssl_mode = \"preferred\" connects unencrypted");
        }
        plain
    }

    /// Whether the crate's login succeeds through the proxy with `required`.
    fn login_works_over_tls(&self, options: &ReplicaOptions) -> bool {
        let Ok(config) = client_config(MysqlSslMode::Required, None) else {
            return false;
        };
        let probe = MysqlTls {
            mode: MysqlSslMode::Required,
            config: Some(config),
            plain: Arc::default(),
            ..self.clone()
        };
        let Ok(Some(proxy)) = probe.start(options) else {
            return false;
        };
        let ok = mysql_cdc::binlog_client::BinlogClient::new(proxy.options())
            .connect()
            .is_ok();
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

/// A started proxy: the crate connects to [`Proxy::options`].
pub(super) struct Proxy {
    outcome: Receiver<Result<Negotiated, TlsError>>,
    options: ReplicaOptions,
}

impl Proxy {
    /// The crate's connection options, pointed at the proxy.
    pub(super) fn options(&self) -> ReplicaOptions {
        let o = &self.options;
        ReplicaOptions {
            port: o.port,
            hostname: o.hostname.clone(),
            ssl_mode: mysql_cdc::ssl_mode::SslMode::Disabled,
            username: o.username.clone(),
            password: o.password.clone(),
            database: o.database.clone(),
            server_id: o.server_id,
            blocking: o.blocking,
            heartbeat_interval: o.heartbeat_interval,
            binlog: BinlogOptions::from_end(),
        }
    }

    /// How the negotiation ended, waiting up to `wait` for it.
    pub(super) fn outcome(&self, wait: Duration) -> Option<Result<Negotiated, TlsError>> {
        self.outcome.recv_timeout(wait).ok()
    }
}

/// What the proxy thread needs.
struct Job {
    tls: MysqlTls,
    config: Arc<ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    password: String,
}

/// The server side of a proxied connection.
enum Server {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Job {
    fn run(self, listener: std::net::TcpListener, tx: SyncSender<Result<Negotiated, TlsError>>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(TlsError::Local(e)));
                return;
            }
        };
        rt.block_on(self.serve(listener, tx));
    }

    async fn serve(
        self,
        listener: std::net::TcpListener,
        tx: SyncSender<Result<Negotiated, TlsError>>,
    ) {
        let timeout = self.tls.timeout;
        let accepted = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => tokio::time::timeout(timeout, l.accept()).await,
            Err(e) => Ok(Err(e)),
        };
        // The listener is gone here: exactly one connection is served.
        let mut client = match accepted {
            Ok(Ok((c, _))) => c,
            Ok(Err(e)) => {
                let _ = tx.send(Err(TlsError::Local(e)));
                return;
            }
            Err(_) => {
                let _ = tx.send(Err(TlsError::Timeout(timeout)));
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let negotiated = tokio::time::timeout(timeout, self.negotiate(&mut client)).await;
        let (server, how) = match negotiated {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e));
                return;
            }
            Err(_) => {
                let _ = tx.send(Err(TlsError::Timeout(timeout)));
                return;
            }
        };
        match &how {
            Negotiated::Tls { version, cipher } => {
                tracing::debug!(addr = %self.tls.addr(), version, cipher, "mysql connection uses tls")
            }
            Negotiated::Plain => tracing::info!(
                addr = %self.tls.addr(),
                "mysql server offers no tls; ssl_mode = \"preferred\" connects unencrypted"
            ),
            Negotiated::ServerError => {}
        }
        let _ = tx.send(Ok(how));
        match server {
            Server::Plain(s) => pump(client, s).await,
            Server::Tls(s) => pump(client, *s).await,
        }
    }

    /// Steps 1–3 of the module doc: returns the server side once authentication is over
    /// (or the plain-text server when TLS is not used).
    async fn negotiate(&self, client: &mut TcpStream) -> Result<(Server, Negotiated), TlsError> {
        let addr = self.tls.addr();
        let io_err = |context: &'static str| {
            let addr = addr.clone();
            move |source| TlsError::Io {
                addr,
                context,
                source,
            }
        };
        let proto = |what: &'static str| TlsError::Protocol {
            addr: addr.clone(),
            what,
        };
        let mut server = TcpStream::connect((self.tls.host.as_str(), self.tls.port))
            .await
            .map_err(|source| TlsError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = server.set_nodelay(true);
        let (seq, hello) = read_packet(&mut server)
            .await
            .map_err(io_err("reading the server's handshake"))?;
        if hello.first() == Some(&0xFF) {
            // "Too many connections", "host blocked": the crate reports it.
            write_packet(client, seq, &hello)
                .await
                .map_err(io_err("passing on the server's error"))?;
            return Ok((Server::Plain(server), Negotiated::ServerError));
        }
        let hello_info = parse_handshake(&hello)
            .ok_or_else(|| proto("the server's initial handshake is malformed"))?;
        if hello_info.capabilities & CLIENT_SSL == 0 {
            if self.tls.mode.requires_tls() {
                return Err(TlsError::NotOffered {
                    addr,
                    mode: self.tls.mode.name(),
                });
            }
            write_packet(client, seq, &hello)
                .await
                .map_err(io_err("passing on the handshake"))?;
            return Ok((Server::Plain(server), Negotiated::Plain));
        }
        write_packet(client, seq, &hello)
            .await
            .map_err(io_err("passing on the handshake"))?;
        let (cseq, response) = read_packet(client)
            .await
            .map_err(io_err("reading logtide's handshake response"))?;
        let (ssl_request, response) = ssl_request(&response)
            .ok_or_else(|| proto("logtide's handshake response is not a HandshakeResponse41"))?;
        write_packet(&mut server, cseq, &ssl_request)
            .await
            .map_err(io_err("sending the SSLRequest"))?;
        let mut tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), server)
            .await
            .map_err(|source| TlsError::Handshake {
                addr: addr.clone(),
                mode: self.tls.mode.name(),
                source,
            })?;
        let how = {
            let conn = tls.get_ref().1;
            Negotiated::Tls {
                version: conn
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                cipher: conn
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default(),
            }
        };
        write_packet(&mut tls, cseq.wrapping_add(1), &response)
            .await
            .map_err(io_err("sending the handshake response"))?;
        let mut auth = Auth::new(hello_info.plugin, true);
        loop {
            let (sseq, packet) = read_packet(&mut tls)
                .await
                .map_err(io_err("authenticating"))?;
            let step = auth.on_server(&packet);
            if step.password {
                let mut pw = self.password.as_bytes().to_vec();
                pw.push(0);
                write_packet(&mut tls, sseq.wrapping_add(1), &pw)
                    .await
                    .map_err(io_err("authenticating"))?;
            }
            if let Some(p) = &step.to_client {
                write_packet(client, sseq.wrapping_sub(1), p)
                    .await
                    .map_err(io_err("authenticating"))?;
            }
            match step.next {
                Next::Done => break,
                Next::Server => continue,
                Next::Client => {
                    let (cseq, p) = read_packet(client)
                        .await
                        .map_err(io_err("authenticating"))?;
                    write_packet(&mut tls, cseq.wrapping_add(1), &p)
                        .await
                        .map_err(io_err("authenticating"))?;
                }
            }
        }
        Ok((Server::Tls(Box::new(tls)), how))
    }
}

/// Copies both ways until either side ends, then closes both (step 4).
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(client: TcpStream, server: S) {
    let (mut cr, mut cw) = client.into_split();
    let (sr, mut sw) = tokio::io::split(server);
    let up = async {
        let r = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
        r
    };
    let down = async {
        let mut sr = tokio::io::BufReader::with_capacity(64 * 1024, sr);
        let r = tokio::io::copy_buf(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
        r
    };
    let ended = tokio::select! {
        r = up => ("logtide", r),
        r = down => ("server", r),
    };
    if let (side, Err(e)) = ended {
        tracing::debug!(side, error = %e, "mysql tls proxy connection ended");
    }
}

/// What the server's initial handshake tells the proxy.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Hello {
    pub capabilities: u32,
    /// The authentication plugin (empty when the server names none).
    pub plugin: Vec<u8>,
}

/// Parses a protocol-10 initial handshake; `None` when it is truncated or another protocol.
pub(super) fn parse_handshake(p: &[u8]) -> Option<Hello> {
    if *p.first()? != 10 {
        return None;
    }
    let version_end = 1 + p.get(1..)?.iter().position(|&b| b == 0)?;
    // thread id (4), auth-plugin-data part 1 (8), filler (1)
    let mut pos = version_end + 1 + 4 + 8 + 1;
    let low = p.get(pos..pos + 2)?;
    let mut capabilities = u32::from(u16::from_le_bytes([low[0], low[1]]));
    pos += 2;
    let mut plugin = Vec::new();
    // charset (1), status (2), capabilities high (2), auth data length (1), reserved (10)
    if let Some(rest) = p.get(pos..pos + 16) {
        capabilities |= u32::from(u16::from_le_bytes([rest[3], rest[4]])) << 16;
        let data_len = usize::from(rest[5]);
        pos += 16;
        if capabilities & 0x8000 != 0 {
            // CLIENT_SECURE_CONNECTION: auth-plugin-data part 2.
            pos += data_len.saturating_sub(8).max(13);
        }
        if capabilities & 0x0008_0000 != 0 {
            // CLIENT_PLUGIN_AUTH
            if let Some(name) = p.get(pos..) {
                plugin = name.split(|&b| b == 0).next().unwrap_or(&[]).to_vec();
            }
        }
    }
    Some(Hello {
        capabilities,
        plugin,
    })
}

/// From the crate's HandshakeResponse41: the SSLRequest to send first (its first 32 bytes
/// with `CLIENT_SSL`) and the response itself with `CLIENT_SSL` set. `None` when it is
/// shorter than an SSLRequest or not protocol 4.1.
pub(super) fn ssl_request(response: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let caps = response.get(..4)?;
    let caps = u32::from_le_bytes([caps[0], caps[1], caps[2], caps[3]]);
    if caps & CLIENT_PROTOCOL_41 == 0 || response.len() < SSL_REQUEST_LEN {
        return None;
    }
    let mut full = response.to_vec();
    full.get_mut(..4)?
        .copy_from_slice(&(caps | CLIENT_SSL).to_le_bytes());
    let request = full.get(..SSL_REQUEST_LEN)?.to_vec();
    Some((request, full))
}

/// Who sends the next authentication packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    Client,
    Server,
    /// Authentication is over; copy bytes.
    Done,
}

/// What to do with one server packet of the authentication phase.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Step {
    /// The payload to pass to the crate (`None`: nothing).
    pub to_client: Option<Vec<u8>>,
    /// Answer the server with the password in clear text (only over TLS).
    pub password: bool,
    pub next: Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Nothing,
    /// `01 03` (fast auth success) was passed on; the server's OK follows and the crate
    /// does not read it.
    DropOk,
    /// The password was sent; the server's OK is shown to the crate as `01 03`.
    FastOnOk,
}

/// The authentication relay's state (step 3 of the module doc).
#[derive(Debug)]
pub(super) struct Auth {
    plugin: Vec<u8>,
    tls: bool,
    pending: Pending,
}

impl Auth {
    pub(super) fn new(plugin: Vec<u8>, tls: bool) -> Auth {
        Auth {
            plugin,
            tls,
            pending: Pending::Nothing,
        }
    }

    /// Decides about one server packet. `mysql_cdc` ends `caching_sha2_password` after
    /// `01 03` without reading the OK behind it, and asks for the RSA key after `01 04`
    /// (refused over TLS); so the proxy shows the crate `01 03` for a success and never
    /// the OK behind it, and answers `01 04` over TLS itself.
    pub(super) fn on_server(&mut self, p: &[u8]) -> Step {
        let pass = |next| Step {
            to_client: Some(p.to_vec()),
            password: false,
            next,
        };
        match self.pending {
            Pending::DropOk => {
                self.pending = Pending::Nothing;
                return if p.first() == Some(&0x00) {
                    Step {
                        to_client: None,
                        password: false,
                        next: Next::Done,
                    }
                } else {
                    pass(Next::Done)
                };
            }
            Pending::FastOnOk => {
                self.pending = Pending::Nothing;
                return if p.first() == Some(&0x00) {
                    Step {
                        to_client: Some(vec![0x01, 0x03]),
                        password: false,
                        next: Next::Done,
                    }
                } else {
                    pass(Next::Done)
                };
            }
            Pending::Nothing => {}
        }
        let sha2 = self.plugin == CACHING_SHA2;
        match p {
            [0x00, ..] | [0xFF, ..] => pass(Next::Done),
            [0xFE, rest @ ..] => {
                self.plugin = rest.split(|&b| b == 0).next().unwrap_or(&[]).to_vec();
                pass(Next::Client)
            }
            [0x01, 0x03] if sha2 => {
                self.pending = Pending::DropOk;
                pass(Next::Server)
            }
            [0x01, 0x04] if sha2 && self.tls => {
                self.pending = Pending::FastOnOk;
                Step {
                    to_client: None,
                    password: true,
                    next: Next::Server,
                }
            }
            _ => pass(Next::Client),
        }
    }
}

/// One wire packet: (sequence id, payload). Payloads of 16 MB or more (split packets) do
/// not occur in the handshake.
async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h).await?;
    let (len, seq) = parse_header(h);
    let mut p = vec![0; len];
    r.read_exact(&mut p).await?;
    Ok((seq, p))
}

async fn write_packet<W: AsyncWrite + Unpin>(w: &mut W, seq: u8, payload: &[u8]) -> io::Result<()> {
    let framed = frame(seq, payload)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "packet over 16 MB"))?;
    w.write_all(&framed).await?;
    w.flush().await
}

fn parse_header(h: [u8; 4]) -> (usize, u8) {
    (u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize, h[3])
}

/// Header + payload, `None` for a payload that does not fit one packet.
pub(super) fn frame(seq: u8, payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() >= MAX_PAYLOAD {
        return None;
    }
    let len = u32::try_from(payload.len()).ok()?.to_le_bytes();
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A MariaDB 10.11-like initial handshake with `caps`.
    fn hello(caps: u32, plugin: &str) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"10.11.19-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        p
    }

    /// The crate's HandshakeResponse41 (see mysql_cdc's AuthenticateCommand).
    fn response() -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&(0x0004u32 | 0x0200 | 0x8000 | 0x0008_0000).to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"logtide\0");
        p.push(20);
        p.extend_from_slice(&[7; 20]);
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn handshake_capabilities_and_plugin() {
        let caps = 0x0008_0000 | 0x8000 | 0x0200 | CLIENT_SSL;
        let h = parse_handshake(&hello(caps, "mysql_native_password")).expect("parse");
        assert_eq!(h.capabilities, caps);
        assert_eq!(h.plugin, b"mysql_native_password");
        let h =
            parse_handshake(&hello(0x0008_0000 | 0x8000, "caching_sha2_password")).expect("parse");
        assert_eq!(h.capabilities & CLIENT_SSL, 0);
        assert_eq!(h.plugin, CACHING_SHA2);
        // Protocol 9, no NUL after the version, cut before the capabilities.
        assert_eq!(parse_handshake(&[9, b'5', 0]), None);
        assert_eq!(parse_handshake(&[10, b'5', b'.']), None);
        let full = hello(caps, "x");
        assert_eq!(parse_handshake(&full[..20]), None);
        // Cut after the low capabilities: still enough to decide about TLS.
        let short = parse_handshake(&full[..33]).expect("old short handshake");
        assert_eq!(short.capabilities, caps & 0xFFFF);
    }

    #[test]
    fn ssl_request_is_the_response_head_with_client_ssl() {
        let r = response();
        let (req, full) = ssl_request(&r).expect("41 response");
        assert_eq!(req.len(), 32);
        assert_eq!(&req[..], &full[..32]);
        assert_eq!(&full[4..], &r[4..]);
        let caps = u32::from_le_bytes([full[0], full[1], full[2], full[3]]);
        assert_eq!(caps & CLIENT_SSL, CLIENT_SSL);
        assert_eq!(
            caps & !CLIENT_SSL,
            u32::from_le_bytes([r[0], r[1], r[2], r[3]])
        );
        assert!(
            ssl_request(&r[..31]).is_none(),
            "shorter than an SSLRequest"
        );
        let mut old = r.clone();
        old[1] &= !0x02; // no CLIENT_PROTOCOL_41
        assert!(ssl_request(&old).is_none());
        assert!(ssl_request(&[]).is_none());
    }

    #[test]
    fn frames_and_headers() {
        let f = frame(2, b"abc").expect("frame");
        assert_eq!(f, vec![3, 0, 0, 2, b'a', b'b', b'c']);
        assert_eq!(parse_header([3, 0, 0, 2]), (3, 2));
        assert_eq!(parse_header([0xFF, 0xFF, 0xFF, 9]), (MAX_PAYLOAD, 9));
        assert!(frame(0, &vec![0; MAX_PAYLOAD]).is_none());
    }

    #[test]
    fn native_password_ends_with_ok_or_err() {
        let mut a = Auth::new(b"mysql_native_password".to_vec(), true);
        let s = a.on_server(&[0x00, 0, 0, 2, 0, 0, 0]);
        assert_eq!(s.next, Next::Done);
        assert!(s.to_client.is_some() && !s.password);
        let mut a = Auth::new(b"mysql_native_password".to_vec(), true);
        let s = a.on_server(b"\xff\x15\x04#28000Access denied");
        assert_eq!(s.next, Next::Done);
        // An auth switch is passed on and the client answers.
        let mut a = Auth::new(b"mysql_native_password".to_vec(), true);
        let s = a.on_server(b"\xfecaching_sha2_password\0scramble");
        assert_eq!(s.next, Next::Client);
        assert_eq!(a.plugin, CACHING_SHA2);
    }

    #[test]
    fn caching_sha2_fast_auth_hides_the_trailing_ok() {
        let mut a = Auth::new(CACHING_SHA2.to_vec(), true);
        let s = a.on_server(&[0x01, 0x03]);
        assert_eq!(s.to_client.as_deref(), Some(&[0x01, 0x03][..]));
        assert_eq!(s.next, Next::Server);
        let s = a.on_server(&[0x00, 0, 0, 2, 0, 0, 0]);
        assert_eq!(s.to_client, None);
        assert_eq!(s.next, Next::Done);
    }

    #[test]
    fn caching_sha2_full_auth_over_tls_sends_the_password() {
        let mut a = Auth::new(CACHING_SHA2.to_vec(), true);
        let s = a.on_server(&[0x01, 0x04]);
        assert!(s.password && s.to_client.is_none());
        assert_eq!(s.next, Next::Server);
        let s = a.on_server(&[0x00, 0, 0, 2, 0, 0, 0]);
        assert_eq!(s.to_client.as_deref(), Some(&[0x01, 0x03][..]));
        assert_eq!(s.next, Next::Done);
        // A wrong password: the error reaches the crate.
        let mut a = Auth::new(CACHING_SHA2.to_vec(), true);
        a.on_server(&[0x01, 0x04]);
        let s = a.on_server(b"\xff\x15\x04#28000Access denied");
        assert_eq!(s.to_client.as_deref().and_then(|p| p.first()), Some(&0xFF));
        assert_eq!(s.next, Next::Done);
        // Without TLS the crate's RSA exchange is relayed unchanged.
        let mut a = Auth::new(CACHING_SHA2.to_vec(), false);
        let s = a.on_server(&[0x01, 0x04]);
        assert!(!s.password && s.to_client.is_some());
        assert_eq!(s.next, Next::Client);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_handshake(&bytes);
            let _ = ssl_request(&bytes);
            let mut a = Auth::new(CACHING_SHA2.to_vec(), true);
            let _ = a.on_server(&bytes);
            let _ = a.on_server(&bytes);
        }

        #[test]
        fn truncated_handshakes_never_panic(cut in 0usize..80, caps in any::<u32>()) {
            let h = hello(caps, "caching_sha2_password");
            let _ = parse_handshake(&h[..cut.min(h.len())]);
        }

        #[test]
        fn ssl_request_keeps_everything_but_the_flag(tail in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut r = response();
            r.extend_from_slice(&tail);
            let (req, full) = ssl_request(&r).expect("41 response");
            prop_assert_eq!(&full[4..], &r[4..]);
            prop_assert_eq!(&req[..], &full[..32]);
        }
    }
}
