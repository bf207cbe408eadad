//! The replication connection, on `postgres-protocol`'s message builders.
//!
//! Owns: TCP/Unix connect with a timeout, the SSLRequest (TLS itself is `tls.rs`), startup
//! with `replication=database`, authentication (trust, cleartext, md5, SCRAM-SHA-256), the
//! simple-query protocol for replication commands (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT,
//! START_REPLICATION), and the CopyBoth stream: XLogData `w`, primary keepalive `k`, standby
//! status update `r`, CopyDone and Terminate. Does not own: pgoutput (`pgoutput.rs`) or
//! what to confirm (`mod.rs`).
//!
//! tokio-postgres cannot open a replication connection and `Message::parse` rejects the
//! CopyBothResponse tag `W`, so backend frames are split here (tag + length) and the few
//! backend messages a replication session uses are read with checked slicing; see
//! shared/docs/protocol-notes.md and
//! <https://www.postgresql.org/docs/current/protocol-replication.html>.
//!
//! Framing and the CopyBoth messages are in `frame.rs`.

use super::frame::{log_notice, parse_data_row, parse_error_fields, read_cstr, read_i32, Io};
pub use super::frame::{parse_copy_frame, CopyMessage, FrameReader, FrameWriter, ServerError};
use super::tls;
use crate::config::{PostgresSourceConfig, Secret, SslMode};
use crate::endpoint::Endpoint;
use crate::position::Lsn;
use bytes::BytesMut;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Session settings sent in the startup packet. pgoutput formats text values with the
/// walsender's settings, and `types.rs` relies on these: UTF-8, ISO dates, UTC instants,
/// ISO 8601 intervals, round-trip floats.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
];

/// A replication connection failure.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("cannot connect to PostgreSQL at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {timeout:?} connecting to PostgreSQL at {addr} (raise `connect_timeout` or check the host and port)")]
    Timeout { addr: String, timeout: Duration },
    #[error("PostgreSQL at {addr} does not accept TLS but sslmode is {mode:?}: enable ssl on the server, or set sslmode = \"prefer\" or \"disable\"")]
    TlsRefused { addr: String, mode: SslMode },
    #[error("TLS handshake with PostgreSQL at {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: tls::TlsError,
    },
    #[error("I/O error on the replication connection")]
    Io(#[source] io::Error),
    #[error("the server closed the replication connection")]
    Closed,
    #[error(transparent)]
    Server(ServerError),
    #[error("the server asks user {user:?} for a password but none is configured: set `password_env` in the source's config to the name of an environment variable holding it")]
    PasswordRequired { user: String },
    #[error("the server requested authentication method {0}, which logtide does not support (use scram-sha-256, md5, password or trust in pg_hba.conf)")]
    UnsupportedAuth(String),
    #[error("SCRAM-SHA-256 authentication failed")]
    Scram(#[source] io::Error),
    #[error("replication protocol error: {0}")]
    Protocol(&'static str),
    #[error("unexpected message {tag:?} from the server during {during}")]
    Unexpected { tag: char, during: &'static str },
}

impl ConnError {
    /// Whether reconnecting later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnError::Connect { .. }
            | ConnError::Timeout { .. }
            | ConnError::Io(_)
            | ConnError::Closed => true,
            ConnError::Server(e) => sqlstate_is_transient(&e.code),
            _ => false,
        }
    }
}

/// Connection problems, resource shortage, operator intervention (shutdown, restart), a
/// slot in use by another process, serialization failures: retrying can help (decided in
/// [`crate::source::classify::sqlstate`]).
pub fn sqlstate_is_transient(code: &str) -> bool {
    crate::source::classify::sqlstate(code) == crate::source::ErrorClass::Transient
}

/// TCP keepalive (idle 10 s, every 5 s, 3 lost) and a 30 s limit on unacknowledged
/// writes: the kernel ends a connection whose peer vanished (a crashed host, a dropped
/// route) even while logtide waits. A peer that stays up but stops answering is caught
/// by the stream's own silence check (`super::dead_after`).
fn tcp_keepalive(tcp: &TcpStream) {
    use rustix::net::sockopt;
    let r = sockopt::set_socket_keepalive(tcp, true)
        .and_then(|()| sockopt::set_tcp_keepidle(tcp, Duration::from_secs(10)))
        .and_then(|()| sockopt::set_tcp_keepintvl(tcp, Duration::from_secs(5)))
        .and_then(|()| sockopt::set_tcp_keepcnt(tcp, 3))
        .and_then(|()| sockopt::set_tcp_user_timeout(tcp, 30_000));
    if let Err(error) = r {
        tracing::debug!(%error, "setting TCP keepalive on the replication connection failed");
    }
}

/// Result of IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemId {
    pub system_id: String,
    pub timeline: u32,
    pub xlog_pos: Lsn,
    pub dbname: Option<String>,
}

/// Result of CREATE_REPLICATION_SLOT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub slot_name: String,
    pub consistent_point: Lsn,
    /// Valid only until this connection runs its next command.
    pub snapshot_name: Option<String>,
}

/// How START_REPLICATION asks pgoutput for changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOptions {
    pub slot: String,
    pub publication: String,
    pub start: Lsn,
    /// 2 with streaming of in-progress transactions (PG14+), 1 otherwise.
    pub proto_version: u32,
    pub streaming: bool,
}

impl StartOptions {
    /// Options for a server of `server_version_num` (e.g. 150004).
    pub fn for_server(
        server_version_num: u32,
        slot: String,
        publication: String,
        start: Lsn,
    ) -> Self {
        let v2 = server_version_num >= 140000;
        StartOptions {
            slot,
            publication,
            start,
            proto_version: if v2 { 2 } else { 1 },
            streaming: v2,
        }
    }

    /// The START_REPLICATION command.
    pub fn command(&self) -> String {
        let mut s = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '{}', publication_names {}",
            quote_ident(&self.slot),
            self.start,
            self.proto_version,
            quote_literal(&quote_ident(&self.publication)),
        );
        if self.streaming {
            s.push_str(", streaming 'true'");
        }
        s.push(')');
        s
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Parses `server_version` (`15.4 (Debian 15.4-1)`, `14beta1`, `9.6.2`) to the numeric form
/// (150004, 140000, 90602).
pub fn parse_server_version(v: &str) -> Option<u32> {
    let head: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = head
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    if major >= 10 {
        Some(major * 10000 + minor)
    } else {
        let patch = parts.next().flatten().unwrap_or(0);
        Some(major * 10000 + minor * 100 + patch)
    }
}

/// A replication connection (after startup and authentication).
pub struct ReplConnection {
    pub reader: FrameReader,
    pub writer: FrameWriter,
    /// `server_version_num` form, from the ParameterStatus `server_version`.
    pub server_version: u32,
    /// The walsender's process id (BackendKeyData), to end it when this connection went
    /// silent but the server still holds it (see `super::stale`).
    pub backend_pid: Option<i32>,
}

impl ReplConnection {
    /// Connects to `at`, negotiates TLS per `sslmode`, starts a `replication=database`
    /// session and authenticates.
    pub async fn connect(
        cfg: &PostgresSourceConfig,
        at: &Endpoint,
        password: Option<&Secret>,
    ) -> Result<Self, ConnError> {
        let addr = at.addr();
        let io: Box<dyn Io> = if at.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", at.host, at.port);
            let s =
                tokio::time::timeout(cfg.connect_timeout, tokio::net::UnixStream::connect(&path))
                    .await
                    .map_err(|_| ConnError::Timeout {
                        addr: path.clone(),
                        timeout: cfg.connect_timeout,
                    })?
                    .map_err(|source| ConnError::Connect {
                        addr: path.clone(),
                        source,
                    })?;
            Box::new(s)
        } else {
            let tcp = tokio::time::timeout(
                cfg.connect_timeout,
                TcpStream::connect((at.host.as_str(), at.port)),
            )
            .await
            .map_err(|_| ConnError::Timeout {
                addr: addr.clone(),
                timeout: cfg.connect_timeout,
            })?
            .map_err(|source| ConnError::Connect {
                addr: addr.clone(),
                source,
            })?;
            tcp.set_nodelay(true).map_err(ConnError::Io)?;
            tcp_keepalive(&tcp);
            let fut = negotiate_tls(tcp, cfg, at.tls_host(), &addr);
            tokio::time::timeout(cfg.connect_timeout, fut)
                .await
                .map_err(|_| ConnError::Timeout {
                    addr: addr.clone(),
                    timeout: cfg.connect_timeout,
                })??
        };
        let (r, w) = tokio::io::split(io);
        let mut conn = ReplConnection {
            reader: FrameReader::new(r),
            writer: FrameWriter::new(w),
            server_version: 0,
            backend_pid: None,
        };
        let startup = tokio::time::timeout(cfg.connect_timeout, conn.startup(cfg, password));
        startup.await.map_err(|_| ConnError::Timeout {
            addr,
            timeout: cfg.connect_timeout,
        })??;
        Ok(conn)
    }

    async fn startup(
        &mut self,
        cfg: &PostgresSourceConfig,
        password: Option<&Secret>,
    ) -> Result<(), ConnError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", cfg.user.as_str()),
            ("database", cfg.database.as_str()),
            ("replication", "database"),
            ("application_name", "logtide"),
        ];
        params.extend_from_slice(SESSION_SETTINGS);
        frontend::startup_message(params, &mut self.writer.buf).map_err(ConnError::Io)?;
        self.writer.flush_buf().await?;

        let mut scram: Option<sasl::ScramSha256> = None;
        let need_pw = || {
            password.ok_or_else(|| ConnError::PasswordRequired {
                user: cfg.user.clone(),
            })
        };
        // Authentication.
        loop {
            let (tag, body) = self.reader.next_frame().await?;
            match tag {
                b'R' => {
                    let mut b = body;
                    let code = read_i32(&mut b)
                        .ok_or(ConnError::Protocol("truncated authentication request"))?;
                    match code {
                        0 => break,
                        3 => {
                            let pw = need_pw()?;
                            frontend::password_message(
                                pw.expose().as_bytes(),
                                &mut self.writer.buf,
                            )
                            .map_err(ConnError::Io)?;
                        }
                        5 => {
                            let pw = need_pw()?;
                            let salt: [u8; 4] = b
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or(ConnError::Protocol("truncated md5 salt"))?;
                            let hash = md5_hash(cfg.user.as_bytes(), pw.expose().as_bytes(), salt);
                            frontend::password_message(hash.as_bytes(), &mut self.writer.buf)
                                .map_err(ConnError::Io)?;
                        }
                        10 => {
                            let pw = need_pw()?;
                            let mut mechs = Vec::new();
                            while let Some(m) = read_cstr(&mut b) {
                                if m.is_empty() {
                                    break;
                                }
                                mechs.push(m);
                            }
                            if !mechs.contains(&"SCRAM-SHA-256") {
                                return Err(ConnError::UnsupportedAuth(format!("SASL {mechs:?}")));
                            }
                            // No channel binding: we do not pass the TLS certificate hash.
                            let s = sasl::ScramSha256::new(
                                pw.expose().as_bytes(),
                                sasl::ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response(
                                "SCRAM-SHA-256",
                                s.message(),
                                &mut self.writer.buf,
                            )
                            .map_err(ConnError::Io)?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or(ConnError::Protocol("SASL continue without SASL start"))?;
                            s.update(b).map_err(ConnError::Scram)?;
                            frontend::sasl_response(s.message(), &mut self.writer.buf)
                                .map_err(ConnError::Io)?;
                        }
                        12 => {
                            let s = scram
                                .as_mut()
                                .ok_or(ConnError::Protocol("SASL final without SASL start"))?;
                            s.finish(b).map_err(ConnError::Scram)?;
                            continue;
                        }
                        2 => return Err(ConnError::UnsupportedAuth("Kerberos V5".into())),
                        7 | 8 => return Err(ConnError::UnsupportedAuth("GSSAPI".into())),
                        9 => return Err(ConnError::UnsupportedAuth("SSPI".into())),
                        other => return Err(ConnError::UnsupportedAuth(format!("code {other}"))),
                    }
                    self.writer.flush_buf().await?;
                }
                b'E' => return Err(ConnError::Server(parse_error_fields(body))),
                b'N' => log_notice(body),
                other => {
                    return Err(ConnError::Unexpected {
                        tag: other as char,
                        during: "authentication",
                    })
                }
            }
        }
        // Parameters until ReadyForQuery.
        loop {
            let (tag, body) = self.reader.next_frame().await?;
            match tag {
                b'S' => {
                    let mut b = body;
                    if let (Some(name), Some(value)) = (read_cstr(&mut b), read_cstr(&mut b)) {
                        if name == "server_version" {
                            self.server_version = parse_server_version(value).unwrap_or(0);
                        }
                    }
                }
                b'K' => {
                    let mut b = body;
                    self.backend_pid = read_i32(&mut b);
                }
                b'v' => {}
                b'N' => log_notice(body),
                b'E' => return Err(ConnError::Server(parse_error_fields(body))),
                b'Z' => return Ok(()),
                other => {
                    return Err(ConnError::Unexpected {
                        tag: other as char,
                        during: "startup",
                    })
                }
            }
        }
    }

    /// Runs a command with the simple-query protocol and returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ConnError> {
        self.writer.send_query(sql).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.reader.next_frame().await?;
            match tag {
                b'T' | b'C' | b'I' | b'S' => {}
                b'D' => rows.push(parse_data_row(body)?),
                b'N' => log_notice(body),
                b'E' => error = Some(parse_error_fields(body)),
                b'Z' => break,
                other => {
                    return Err(ConnError::Unexpected {
                        tag: other as char,
                        during: "a query",
                    })
                }
            }
        }
        match error {
            Some(e) => Err(ConnError::Server(e)),
            None => Ok(rows),
        }
    }

    pub async fn identify_system(&mut self) -> Result<SystemId, ConnError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or(ConnError::Protocol("IDENTIFY_SYSTEM returned no row"))?;
        let col = |i: usize| row.get(i).cloned().flatten();
        Ok(SystemId {
            system_id: col(0).unwrap_or_default(),
            timeline: col(1).and_then(|t| t.parse().ok()).unwrap_or(0),
            xlog_pos: col(2).and_then(|l| l.parse().ok()).unwrap_or_default(),
            dbname: col(3),
        })
    }

    /// Creates a permanent logical slot with pgoutput. With `export_snapshot`, the snapshot
    /// name is returned; it stays valid until this connection's next command.
    pub async fn create_slot(
        &mut self,
        slot: &str,
        export_snapshot: bool,
    ) -> Result<CreatedSlot, ConnError> {
        // The pre-PG15 keyword syntax, still accepted by PG15+.
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {}",
            quote_ident(slot),
            if export_snapshot {
                "EXPORT_SNAPSHOT"
            } else {
                "NOEXPORT_SNAPSHOT"
            }
        );
        let rows = self.simple_query(&sql).await?;
        let row = rows.first().ok_or(ConnError::Protocol(
            "CREATE_REPLICATION_SLOT returned no row",
        ))?;
        let col = |i: usize| row.get(i).cloned().flatten();
        Ok(CreatedSlot {
            slot_name: col(0).unwrap_or_else(|| slot.to_owned()),
            consistent_point: col(1).and_then(|l| l.parse().ok()).unwrap_or_default(),
            snapshot_name: col(2),
        })
    }

    /// Sends START_REPLICATION and waits for CopyBothResponse; then the stream is read with
    /// `reader` and acknowledged with `writer`.
    pub async fn start_replication(&mut self, opts: &StartOptions) -> Result<(), ConnError> {
        self.writer.send_query(&opts.command()).await?;
        let mut error = None;
        loop {
            let (tag, body) = self.reader.next_frame().await?;
            match tag {
                b'W' => return Ok(()),
                b'N' => log_notice(body),
                b'E' => error = Some(parse_error_fields(body)),
                b'Z' => {
                    return Err(match error {
                        Some(e) => ConnError::Server(e),
                        None => ConnError::Protocol("START_REPLICATION ended without streaming"),
                    })
                }
                b'T' | b'D' | b'C' => {}
                other => {
                    return Err(ConnError::Unexpected {
                        tag: other as char,
                        during: "START_REPLICATION",
                    })
                }
            }
        }
    }

    /// Ends streaming (CopyDone), waits briefly for the server to finish, and terminates.
    pub async fn shutdown(mut self) -> Result<(), ConnError> {
        self.writer.copy_done().await?;
        let drain = async {
            loop {
                let (tag, _) = self.reader.next_frame().await?;
                if tag == b'Z' {
                    return Ok::<(), ConnError>(());
                }
            }
        };
        // A server that is busy sending WAL may take a moment; do not wait long.
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        self.writer.terminate().await
    }
}

async fn negotiate_tls(
    mut tcp: TcpStream,
    cfg: &PostgresSourceConfig,
    tls_host: &str,
    addr: &str,
) -> Result<Box<dyn Io>, ConnError> {
    if cfg.sslmode == SslMode::Disable {
        return Ok(Box::new(tcp));
    }
    let mut req = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut req);
    tcp.write_all(&req).await.map_err(ConnError::Io)?;
    let answer = tcp.read_u8().await.map_err(ConnError::Io)?;
    match answer {
        b'S' => {
            let tls = tls::connect(tcp, tls_host, cfg.sslmode, cfg.sslrootcert.as_deref())
                .await
                .map_err(|source| ConnError::Tls {
                    addr: addr.to_owned(),
                    source,
                })?;
            Ok(Box::new(tls))
        }
        b'N' if cfg.sslmode == SslMode::Prefer => {
            // libpq's `prefer`: go on in plain text, but never silently.
            tracing::warn!(addr, "the server offers no TLS: the replication connection is unencrypted (sslmode = prefer); set sslmode = \"verify-full\" (or \"require\") to refuse plain text");
            Ok(Box::new(tcp))
        }
        b'N' => Err(ConnError::TlsRefused {
            addr: addr.to_owned(),
            mode: cfg.sslmode,
        }),
        b'E' => Err(ConnError::Protocol(
            "the server answered the SSL request with an error (server too old?)",
        )),
        _ => Err(ConnError::Protocol("unexpected answer to the SSL request")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version("15.4 (Debian 15.4-1.pgdg120+1)"),
            Some(150004)
        );
        assert_eq!(parse_server_version("14beta1"), Some(140000));
        assert_eq!(parse_server_version("13.12"), Some(130012));
        assert_eq!(parse_server_version("9.6.2"), Some(90602));
        assert_eq!(parse_server_version("x"), None);
    }

    #[test]
    fn start_command_per_version() {
        let o = StartOptions::for_server(150004, "s".into(), "p'ub".into(), Lsn(0x1_0000_00A0));
        assert_eq!(
            o.command(),
            "START_REPLICATION SLOT \"s\" LOGICAL 1/A0 (proto_version '2', publication_names '\"p''ub\"', streaming 'true')"
        );
        let o = StartOptions::for_server(130000, "s".into(), "p".into(), Lsn(0));
        assert_eq!(o.command(), "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (proto_version '1', publication_names '\"p\"')");
    }
}
