//! The connection phase of every MySQL/MariaDB connection (SQL and binlog): TCP connect
//! within `connect_timeout`, the server's initial handshake, the optional TLS upgrade
//! (SSLRequest, then rustls over the same socket, per `ssl_mode`, see [`super::tls`]), and
//! authentication: `mysql_native_password`, `caching_sha2_password` (fast path, and full
//! authentication with the password over TLS or RSA-encrypted with the server's public key
//! over plain TCP), and authentication method switches between them.
//!
//! Owns: the socket options (TCP_NODELAY, read timeouts) and the socket handle a stop
//! shuts down. Does not own: statements and results ([`super::sql`]), the binlog dump
//! ([`super::reader`]), certificate configuration (`crate::tls`).
//!
//! Not supported: MariaDB's `client_ed25519` and other plugins (`mysql_clear_password`,
//! `sha256_password`, `auth_gssapi_client`, unix sockets): such an account fails with
//! [`MysqlError::AuthPlugin`], which names the plugin.
//! Protocol: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html>.

use super::error::MysqlError;
use super::socket::Socket;
use super::tls::{MysqlTls, TlsError};
use super::wire::{self, Framed, Handshake, CACHING_SHA2, NATIVE_PASSWORD};
use crate::config::MysqlSourceConfig;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Added to the heartbeat for a connection's default read timeout (as `mysql_cdc` did).
const READ_SLACK: Duration = Duration::from_secs(10);
/// Read buffer of a connection (binlog events arrive in bursts of small packets).
const READ_BUFFER: usize = 64 * 1024;

/// Who connects where. The password never appears in `Debug` output or errors.
#[derive(Clone)]
pub struct Login {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: Option<String>,
    /// Bounds the TCP connect, the TLS handshake and authentication.
    pub connect_timeout: Duration,
    /// The socket's read timeout once connected.
    pub read_timeout: Duration,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// A MySQL source's connections: reads time out a heartbeat plus 10 s after the last
    /// packet unless the caller bounds them otherwise.
    pub fn source(cfg: &MysqlSourceConfig, password: &str) -> Login {
        Login {
            host: cfg.host.clone(),
            port: cfg.port,
            user: cfg.user.clone(),
            password: password.to_owned(),
            database: cfg.database.clone(),
            connect_timeout: cfg.connect_timeout,
            read_timeout: cfg.heartbeat + READ_SLACK,
        }
    }

    /// A read timeout of `t` plus 10 s.
    pub fn reads_within(mut self, t: Duration) -> Login {
        self.read_timeout = t + READ_SLACK;
        self
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Buffered reads, direct writes (every write is one whole framed packet).
pub(super) struct Buffered(BufReader<Stream>);

impl Read for Buffered {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Buffered {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.get_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.get_mut().flush()
    }
}

/// An authenticated connection.
pub(super) struct Opened {
    pub conn: Framed<Buffered>,
    pub socket: Socket,
    pub handshake: Handshake,
}

/// `(code, message)` of an ERR packet.
pub(super) fn parse_err(packet: &[u8]) -> (u16, String) {
    super::sql::parse_err(packet)
}

/// Server error codes that mean "these credentials are refused".
fn is_auth_code(code: u16) -> bool {
    matches!(code, 1044 | 1045 | 1698 | 1251)
}

/// Connects, negotiates TLS per `tls` and authenticates `login`.
pub(super) fn open(login: &Login, tls: &MysqlTls) -> Result<Opened, MysqlError> {
    let addr = login.addr();
    let tcp = tcp_connect(&addr, login.connect_timeout)?;
    let io = |context: &'static str| move |source| MysqlError::Io { context, source };
    let setup = tcp
        .set_nodelay(true)
        .and_then(|()| tcp.set_read_timeout(Some(login.connect_timeout)))
        .and_then(|()| tcp.set_write_timeout(Some(login.connect_timeout)));
    setup.map_err(io("connecting"))?;
    let socket = Socket::new(tcp.try_clone().map_err(io("connecting"))?);
    let mut conn = Framed::new(Buffered(BufReader::with_capacity(
        READ_BUFFER,
        Stream::Plain(tcp),
    )));
    let hello = conn
        .read_packet()
        .map_err(io("reading the server's handshake"))?;
    if hello.first() == Some(&0xFF) {
        // "Too many connections", "host blocked".
        return Err(server_error(&hello, login, false));
    }
    let handshake =
        wire::parse_handshake(&hello).map_err(|source| MysqlError::Handshake { addr, source })?;
    let capabilities = wire::client_capabilities(handshake.capabilities, login.database.is_some());
    if tls.wants_tls(handshake.capabilities & wire::caps::SSL != 0)? {
        conn = upgrade(conn, capabilities, tls)?;
    }
    authenticate(&mut conn, &handshake, capabilities, login)?;
    let tcp = match conn.get_ref().0.get_ref() {
        Stream::Plain(s) => s,
        Stream::Tls(s) => s.get_ref(),
    };
    tcp.set_read_timeout(Some(login.read_timeout))
        .and_then(|()| tcp.set_write_timeout(None))
        .map_err(io("connecting"))?;
    Ok(Opened {
        conn,
        socket,
        handshake,
    })
}

fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, MysqlError> {
    let unreachable = |source| MysqlError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addr.to_socket_addrs().map_err(unreachable)? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(unreachable(last))
}

/// SSLRequest, then the TLS handshake on the same socket; the sequence ids go on.
fn upgrade(
    mut conn: Framed<Buffered>,
    capabilities: u32,
    tls: &MysqlTls,
) -> Result<Framed<Buffered>, MysqlError> {
    let io_err = |context: &'static str| {
        move |source| {
            MysqlError::Tls(TlsError::Io {
                addr: tls.addr(),
                context,
                source,
            })
        }
    };
    conn.write_packet(&wire::ssl_request(capabilities))
        .map_err(io_err("sending the SSLRequest"))?;
    let (Buffered(reader), seq) = conn.into_inner();
    if !reader.buffer().is_empty() {
        return Err(MysqlError::Tls(TlsError::Protocol {
            addr: tls.addr(),
            what: "the server sent data before the TLS handshake",
        }));
    }
    let Stream::Plain(mut tcp) = reader.into_inner() else {
        return Err(MysqlError::Tls(TlsError::Protocol {
            addr: tls.addr(),
            what: "TLS requested twice",
        }));
    };
    let mut session = tls.session()?;
    while session.is_handshaking() {
        session
            .complete_io(&mut tcp)
            .map_err(|source| tls.handshake_failed(source))?;
    }
    if let (Some(version), Some(cipher)) = (
        session.protocol_version(),
        session.negotiated_cipher_suite(),
    ) {
        tracing::debug!(addr = %tls.addr(), version = ?version, cipher = ?cipher.suite(), "mysql connection uses tls");
    }
    let stream = Stream::Tls(Box::new(rustls::StreamOwned::new(session, tcp)));
    Ok(Framed::resume(
        Buffered(BufReader::with_capacity(READ_BUFFER, stream)),
        seq,
    ))
}

/// An ERR packet from the server: an authentication refusal (names the user) when it
/// answers the credentials or has an access-denied code, else a server error.
fn server_error(p: &[u8], login: &Login, answers_credentials: bool) -> MysqlError {
    let (code, message) = parse_err(p);
    if answers_credentials || is_auth_code(code) {
        MysqlError::Auth {
            user: login.user.clone(),
            code,
            message,
        }
    } else {
        MysqlError::Stream { code, message }
    }
}

/// The response to `plugin`'s challenge, or `None` for a plugin logtide does not speak.
fn scramble(plugin: &str, password: &[u8], challenge: &[u8]) -> Option<Vec<u8>> {
    match plugin {
        NATIVE_PASSWORD => Some(wire::native_scramble(password, challenge)),
        CACHING_SHA2 => Some(wire::sha2_scramble(password, challenge)),
        _ => None,
    }
}

/// HandshakeResponse41 and the exchange after it, until OK or ERR.
fn authenticate(
    conn: &mut Framed<Buffered>,
    handshake: &Handshake,
    capabilities: u32,
    login: &Login,
) -> Result<(), MysqlError> {
    let io = |source| MysqlError::Io {
        context: "authenticating",
        source,
    };
    let password = login.password.as_bytes();
    let tls = matches!(conn.get_ref().0.get_ref(), Stream::Tls(_));
    // A server default logtide does not speak (e.g. client_ed25519): answer with the
    // native scramble; the server switches to the account's plugin if that differs.
    let (mut plugin, mut auth) = match scramble(&handshake.plugin, password, &handshake.scramble) {
        Some(a) => (handshake.plugin.clone(), a),
        None => (
            NATIVE_PASSWORD.to_owned(),
            wire::native_scramble(password, &handshake.scramble),
        ),
    };
    let mut challenge = handshake.scramble.clone();
    conn.write_packet(&wire::handshake_response(
        capabilities,
        &login.user,
        &auth,
        login.database.as_deref(),
        &plugin,
    ))
    .map_err(io)?;
    // A reply to the credentials themselves (not to a key request).
    let mut answers_credentials = true;
    loop {
        let p = conn.read_packet().map_err(io)?;
        match p.first() {
            Some(0x00) => return Ok(()),
            Some(0xFF) => return Err(server_error(&p, login, answers_credentials)),
            Some(0xFE) => {
                let (next, data) =
                    wire::parse_auth_switch(&p).ok_or_else(|| MysqlError::AuthPlugin {
                        user: login.user.clone(),
                        plugin: "mysql_old_password".into(),
                    })?;
                auth = scramble(&next, password, &data).ok_or_else(|| MysqlError::AuthPlugin {
                    user: login.user.clone(),
                    plugin: next.clone(),
                })?;
                plugin = next;
                challenge = data;
                conn.write_packet(&auth).map_err(io)?;
                answers_credentials = true;
            }
            Some(0x01) if plugin == CACHING_SHA2 => match p.get(1) {
                // Fast authentication succeeded: the OK follows.
                Some(0x03) => answers_credentials = true,
                // Full authentication: the password itself, over TLS in clear, else
                // encrypted with the server's RSA key (asked for with 0x02).
                Some(0x04) if tls => {
                    let mut clear = password.to_vec();
                    clear.push(0);
                    conn.write_packet(&clear).map_err(io)?;
                    answers_credentials = true;
                }
                Some(0x04) => {
                    conn.write_packet(&[0x02]).map_err(io)?;
                    answers_credentials = false;
                }
                _ if !answers_credentials => {
                    // The public key (PEM) after 0x01.
                    let pem = p.get(1..).unwrap_or(&[]);
                    let enc = wire::rsa_encrypt_password(password, &challenge, pem).map_err(
                        |source| MysqlError::Handshake {
                            addr: login.addr(),
                            source: wire::HandshakeError::PublicKey(source),
                        },
                    )?;
                    conn.write_packet(&enc).map_err(io)?;
                    answers_credentials = true;
                }
                _ => return Err(unexpected(login, &p)),
            },
            _ => return Err(unexpected(login, &p)),
        }
    }
}

fn unexpected(login: &Login, p: &[u8]) -> MysqlError {
    MysqlError::Handshake {
        addr: login.addr(),
        source: wire::HandshakeError::Unexpected(p.first().copied().unwrap_or(0)),
    }
}
