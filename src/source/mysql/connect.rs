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
use crate::endpoint::Endpoint;
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
    /// A MySQL source's connections to `at`: reads time out a heartbeat plus 10 s after the
    /// last packet unless the caller bounds them otherwise.
    pub fn source(cfg: &MysqlSourceConfig, at: &Endpoint, password: &str) -> Login {
        Login {
            host: at.host.clone(),
            port: at.port,
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
    let tls_on = matches!(conn.get_ref().0.get_ref(), Stream::Tls(_));
    authenticate(&mut conn, tls_on, &handshake, capabilities, login)?;
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
fn authenticate<S: Read + Write>(
    conn: &mut Framed<S>,
    tls: bool,
    handshake: &Handshake,
    capabilities: u32,
    login: &Login,
) -> Result<(), MysqlError> {
    let io = |source| MysqlError::Io {
        context: "authenticating",
        source,
    };
    let password = login.password.as_bytes();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted server: its packets (framed with the sequence ids the client expects)
    /// are read in order; what the client writes is kept.
    struct Script {
        input: io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const SCRAMBLE: &[u8] = b"abcdefghijklmnopqrst";

    fn login() -> Login {
        Login {
            host: "h".into(),
            port: 3306,
            user: "logtide".into(),
            password: "secret".into(),
            database: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        }
    }

    fn handshake(plugin: &str) -> Handshake {
        Handshake {
            version: "8.0.40".into(),
            connection_id: 1,
            capabilities: wire::caps::PROTOCOL_41
                | wire::caps::SECURE_CONNECTION
                | wire::caps::PLUGIN_AUTH,
            scramble: SCRAMBLE.to_vec(),
            plugin: plugin.into(),
        }
    }

    /// Runs authentication against `server` packets; they start at sequence id 2 (after
    /// the handshake 0 and the response 1) and each client packet in between takes one.
    fn run(plugin: &str, tls: bool, server: &[(u8, &[u8])]) -> (Result<(), MysqlError>, Vec<u8>) {
        let mut input = Vec::new();
        for (seq, p) in server {
            let mut s = *seq;
            wire::frame_into(&mut input, &mut s, p);
        }
        let mut conn = Framed::resume(
            Script {
                input: io::Cursor::new(input),
                written: Vec::new(),
            },
            1,
        );
        let caps = wire::client_capabilities(handshake(plugin).capabilities, false);
        let r = authenticate(&mut conn, tls, &handshake(plugin), caps, &login());
        let (script, _) = conn.into_inner();
        (r, script.written)
    }

    const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];

    #[test]
    fn native_and_fast_path() {
        let (r, w) = run(NATIVE_PASSWORD, false, &[(2, OK)]);
        assert!(r.is_ok(), "{r:?}");
        let scramble = wire::native_scramble(b"secret", SCRAMBLE);
        assert!(w.windows(20).any(|x| x == scramble.as_slice()));
        let (r, w) = run(CACHING_SHA2, false, &[(2, &[0x01, 0x03]), (3, OK)]);
        assert!(r.is_ok(), "{r:?}");
        let scramble = wire::sha2_scramble(b"secret", SCRAMBLE);
        assert!(w.windows(32).any(|x| x == scramble.as_slice()));
    }

    #[test]
    fn full_authentication_over_tls_sends_the_password() {
        let (r, w) = run(CACHING_SHA2, true, &[(2, &[0x01, 0x04]), (4, OK)]);
        assert!(r.is_ok(), "{r:?}");
        assert!(w.ends_with(&[7, 0, 0, 3, b's', b'e', b'c', b'r', b'e', b't', 0]));
    }

    #[test]
    fn full_authentication_without_tls_asks_for_the_key() {
        use openssl::rsa::{Padding, Rsa};
        let key = Rsa::generate(2048).expect("key");
        let mut k = vec![0x01];
        k.extend_from_slice(&key.public_key_to_pem().expect("pem"));
        let (r, w) = run(CACHING_SHA2, false, &[(2, &[0x01, 0x04]), (4, &k), (6, OK)]);
        assert!(r.is_ok(), "{r:?}");
        // The key request, then 256 encrypted bytes that decrypt to the scrambled password.
        let req = w
            .windows(5)
            .position(|x| x == [1, 0, 0, 3, 2])
            .expect("key request");
        let enc = &w[req + 5 + 4..];
        assert_eq!(&w[req + 5..req + 9], &[0, 1, 0, 5]);
        let mut out = vec![0u8; key.size() as usize];
        let n = key
            .private_decrypt(enc, &mut out, Padding::PKCS1_OAEP)
            .expect("decrypt");
        let want: Vec<u8> = b"secret\0"
            .iter()
            .zip(SCRAMBLE.iter().cycle())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(&out[..n], &want[..]);
        // A key that is no key: a typed error, not a panic.
        let (r, _) = run(CACHING_SHA2, false, &[(2, &[0x01, 0x04]), (4, b"\x01junk")]);
        assert!(matches!(r, Err(MysqlError::Handshake { .. })), "{r:?}");
    }

    #[test]
    fn switches_refusals_and_unsupported_plugins() {
        let mut switch = b"\xfemysql_native_password\0".to_vec();
        switch.extend_from_slice(b"ABCDEFGHIJKLMNOPQRST\0");
        let (r, w) = run(CACHING_SHA2, false, &[(2, &switch), (4, OK)]);
        assert!(r.is_ok(), "{r:?}");
        let answer = wire::native_scramble(b"secret", b"ABCDEFGHIJKLMNOPQRST");
        let mut tail = vec![20, 0, 0, 3];
        tail.extend_from_slice(&answer);
        assert!(w.ends_with(&tail));

        let denied = b"\xff\x15\x04#28000Access denied for user";
        let (r, _) = run(NATIVE_PASSWORD, false, &[(2, denied)]);
        match r {
            Err(MysqlError::Auth { user, code, .. }) => {
                assert_eq!((user.as_str(), code), ("logtide", 1045));
            }
            other => panic!("{other:?}"),
        }

        let ed = b"\xfeclient_ed25519\0abcdefghijklmnopqrstuvwxyz012345\0";
        let (r, _) = run(NATIVE_PASSWORD, false, &[(2, ed)]);
        match r {
            Err(e @ MysqlError::AuthPlugin { .. }) => {
                assert!(e.to_string().contains("client_ed25519"), "{e}");
                assert_eq!(e.class(), crate::source::ErrorClass::Permanent);
            }
            other => panic!("{other:?}"),
        }
        // An unknown server default is answered with the native scramble.
        let (r, w) = run("client_ed25519", false, &[(2, OK)]);
        assert!(r.is_ok(), "{r:?}");
        assert!(w.ends_with(b"mysql_native_password\0"));
    }

    #[test]
    fn garbage_from_the_server_is_an_error() {
        for junk in [&b""[..], b"\x01", b"\x07abc", b"\xfe", b"\x01\x09"] {
            let (r, _) = run(CACHING_SHA2, false, &[(2, junk)]);
            assert!(r.is_err(), "{junk:?}");
        }
        // Out of order.
        let (r, _) = run(NATIVE_PASSWORD, false, &[(5, OK)]);
        assert!(matches!(r, Err(MysqlError::Io { .. })), "{r:?}");
        // Cut off.
        let (r, _) = run(NATIVE_PASSWORD, false, &[]);
        assert!(matches!(r, Err(MysqlError::Io { .. })), "{r:?}");
    }
}
