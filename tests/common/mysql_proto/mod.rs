//! A MySQL protocol test server: enough of the wire protocol of MySQL 8.0 / 8.4 / 9.x (and
//! MariaDB 10.5, for its fixture) for
//! logtide to run against it unchanged, with the events of a binary log file written by a
//! real server (`../shared/fixtures/mysql-binlogs`).
//!
//! * `auth.rs`: handshake v10, the TLS upgrade, `caching_sha2_password` (fast path, full
//!   authentication inside TLS or with the RSA key exchange) and `mysql_native_password`,
//!   with counters per path.
//! * `flavour.rs`: the scripted answers to logtide's statements per server flavour.
//! * `binlog.rs`: the fixture file's events, the artificial events a dump adds.
//! * `wire.rs`: packets, OK / ERR / EOF, result sets.
//!
//! A dump (`COM_BINLOG_DUMP` from a position, `COM_BINLOG_DUMP_GTID` from an executed GTID
//! set) streams the fixture's events as the server that wrote it would: a fake ROTATE, the
//! FORMAT_DESCRIPTION (its `log_pos` zeroed when the dump starts past it), the events with
//! their own checksums; then heartbeats until the client leaves. The connection can be
//! dropped at a chosen event, once. The fixture is served as one file, `binlog.000001`,
//! whose "current end" (`SHOW MASTER STATUS`) is where its changes begin, so a first start
//! streams every change of the file.

#![allow(dead_code)]

pub mod auth;
pub mod binlog;
pub mod flavour;
pub mod wire;

use auth::{Account, AuthServer};
use binlog::{Fixture, GtidSet};
use flavour::{Answer, Flavour, Status, TableDef};
use std::collections::BTreeMap;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wire::Conn;

pub const USER: &str = "logtide";
pub const PASSWORD: &str = "proto-pw";
pub const PASSWORD_ENV: &str = "LOGTIDE_PROTO_PASSWORD";
/// The name the fixture is served under.
pub const FILE: &str = "binlog.000001";

/// A dump request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dump {
    Position { file: String, pos: u64 },
    Gtid { set: GtidSet },
}

struct Shared {
    flavour: Flavour,
    auth: AuthServer,
    fixture: Fixture,
    variables: Mutex<BTreeMap<String, String>>,
    tables: Vec<TableDef>,
    tolerated: Vec<String>,
    send_torn_tail: bool,
    end: AtomicU64,
    /// Drop the dump connection before the event at this file offset (once).
    drop_at: Mutex<Option<usize>>,
    queries: Mutex<Vec<String>>,
    unknown: Mutex<Vec<String>>,
    dumps: Mutex<Vec<Dump>>,
    /// Dump connections that were dropped on purpose.
    dropped: AtomicUsize,
    connections: AtomicUsize,
    stop: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
    /// Logged-in connections by id, for `KILL`.
    live: Mutex<BTreeMap<u64, TcpStream>>,
    /// Connection ids that dumped the binlog, and the ones `KILL` ended.
    dump_ids: Mutex<Vec<u64>>,
    killed: Mutex<Vec<u64>>,
}

pub struct Builder {
    flavour: Flavour,
    fixture: Fixture,
    account_plugin: &'static str,
    default_plugin: &'static str,
    variables: BTreeMap<String, String>,
    drop_at: Option<usize>,
    end: Option<u64>,
    tables: Vec<TableDef>,
    tolerated: Vec<String>,
    send_torn_tail: bool,
    tls: bool,
}

impl Builder {
    /// Offers TLS with a server certificate for 127.0.0.1 / localhost signed by a test CA
    /// ([`ProtoServer::ca`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
    /// The account's plugin (default `caching_sha2_password`).
    pub fn account_plugin(mut self, p: &'static str) -> Self {
        self.account_plugin = p;
        self
    }
    /// The plugin the handshake names (default `caching_sha2_password`, as MySQL 8+).
    pub fn default_plugin(mut self, p: &'static str) -> Self {
        self.default_plugin = p;
        self
    }
    pub fn variable(mut self, k: &str, v: &str) -> Self {
        self.variables.insert(k.to_owned(), v.to_owned());
        self
    }
    /// Describes a table in `information_schema`: columns `(name, type)` (text columns
    /// utf8mb4) and the primary key.
    pub fn table(mut self, db: &str, name: &str, columns: &[(&str, &str)], key: &[&str]) -> Self {
        let text = |t: &str| {
            ["char", "varchar", "text", "enum", "set"]
                .iter()
                .any(|p| t.starts_with(p))
        };
        self.tables.push(TableDef {
            db: db.into(),
            name: name.into(),
            columns: columns
                .iter()
                .map(|(n, t)| ((*n).into(), (*t).into(), text(t).then(|| "utf8mb4".into())))
                .collect(),
            key: key.iter().map(|k| (*k).into()).collect(),
        });
        self
    }
    /// Answers statements that start with `prefix` (compared uppercased, whitespace
    /// collapsed) with OK, as the real server would, when the flavour script does not know
    /// them: for clients other than logtide (python-mysql-replication sets
    /// `@mariadb_slave_capability` on MySQL too, where a user variable is set without
    /// complaint). They are recorded in `queries`, not in `unknown`.
    pub fn tolerate(mut self, prefix: &str) -> Self {
        self.tolerated.push(prefix.to_ascii_uppercase());
        self
    }
    /// At the torn end of a truncated file, send the partial event as a packet (what a
    /// broken server or proxy would deliver) instead of the server's error 1236.
    pub fn send_torn_tail(mut self) -> Self {
        self.send_torn_tail = true;
        self
    }
    /// Drops the first dump connection that reaches the event at file offset `offset`.
    pub fn drop_at(mut self, offset: usize) -> Self {
        self.drop_at = Some(offset);
        self
    }
    /// Where `SHOW MASTER STATUS` says the binlog ends (default: where the changes begin).
    pub fn end(mut self, pos: u64) -> Self {
        self.end = Some(pos);
        self
    }

    pub fn start(self) -> ProtoServer {
        let mut variables = self.variables;
        if !self.fixture.crc {
            variables.insert("binlog_checksum".into(), "NONE".into());
        }
        let end = self.end.unwrap_or_else(|| self.fixture.head_end());
        let certs = self.tls.then(|| {
            let dir = tempfile::tempdir().expect("tls dir");
            crate::common::mariadb::make_certs(dir.path());
            dir
        });
        let mut auth = AuthServer::new(
            Account {
                user: USER.into(),
                password: PASSWORD.into(),
                plugin: self.account_plugin,
            },
            self.default_plugin,
            if self.flavour.mariadb() {
                // MariaDB 10+ prefixes its handshake version for old clients.
                format!("5.5.5-{}", self.flavour.version())
            } else {
                self.flavour.version().into()
            },
        );
        if let Some(dir) = &certs {
            use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
            let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
                .expect("ssl acceptor");
            a.set_private_key_file(dir.path().join("server.key"), SslFiletype::PEM)
                .expect("server key");
            a.set_certificate_chain_file(dir.path().join("server.pem"))
                .expect("server certificate");
            auth.tls = Some(a.build());
        }
        let shared = Arc::new(Shared {
            flavour: self.flavour,
            auth,
            fixture: self.fixture,
            variables: Mutex::new(variables),
            tables: self.tables,
            tolerated: self.tolerated,
            send_torn_tail: self.send_torn_tail,
            end: AtomicU64::new(end),
            drop_at: Mutex::new(self.drop_at),
            queries: Mutex::default(),
            unknown: Mutex::default(),
            dumps: Mutex::default(),
            dropped: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            open: Mutex::default(),
            live: Mutex::default(),
            dump_ids: Mutex::default(),
            killed: Mutex::default(),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind proto server");
        let port = listener.local_addr().expect("addr").port();
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("proto-accept".into())
            .spawn(move || {
                for s in listener.incoming() {
                    if sh.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    if let Ok(c) = s.try_clone() {
                        sh.open.lock().expect("open").push(c);
                    }
                    let handle = s.try_clone().ok();
                    sh.connections.fetch_add(1, Ordering::SeqCst);
                    let sh = sh.clone();
                    let _ =
                        std::thread::Builder::new()
                            .name("proto-conn".into())
                            .spawn(move || {
                                let _ = serve(&sh, Conn::new(s), handle);
                            });
                }
            })
            .expect("accept thread");
        ProtoServer {
            port,
            shared,
            certs,
        }
    }
}

/// A running protocol test server; stops (and closes every connection) when dropped.
pub struct ProtoServer {
    port: u16,
    shared: Arc<Shared>,
    /// The test CA and server certificate of a server built with [`Builder::tls`].
    certs: Option<tempfile::TempDir>,
}

impl ProtoServer {
    pub fn builder(flavour: Flavour, fixture: &str) -> Builder {
        // MariaDB's default (and the fixture's server's) plugin is mysql_native_password.
        let plugin = if flavour.mariadb() {
            auth::NATIVE
        } else {
            auth::CACHING_SHA2
        };
        Builder {
            flavour,
            fixture: Fixture::load(fixture),
            account_plugin: plugin,
            default_plugin: plugin,
            variables: flavour.variables(),
            drop_at: None,
            end: None,
            tables: Vec::new(),
            tolerated: Vec::new(),
            send_torn_tail: false,
            tls: false,
        }
    }

    /// The CA that signed the certificate of a server built with [`Builder::tls`].
    pub fn ca(&self) -> std::path::PathBuf {
        self.certs
            .as_ref()
            .expect("a server built with tls()")
            .path()
            .join("ca.pem")
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn fixture(&self) -> &Fixture {
        &self.shared.fixture
    }
    pub fn stats(&self) -> &auth::AuthStats {
        &self.shared.auth.stats
    }
    pub fn flush_auth_cache(&self) {
        self.shared.auth.flush_cache();
    }
    /// Every statement received, in order.
    pub fn queries(&self) -> Vec<String> {
        self.shared.queries.lock().expect("queries").clone()
    }
    /// Statements the flavour script does not know (answered with a syntax error).
    pub fn unknown(&self) -> Vec<String> {
        self.shared.unknown.lock().expect("unknown").clone()
    }
    /// The connection ids of the dump connections, in order.
    pub fn dump_ids(&self) -> Vec<u64> {
        self.shared.dump_ids.lock().expect("dump ids").clone()
    }
    /// The connection ids ended with `KILL`, in order.
    pub fn killed(&self) -> Vec<u64> {
        self.shared.killed.lock().expect("killed").clone()
    }
    pub fn dumps(&self) -> Vec<Dump> {
        self.shared.dumps.lock().expect("dumps").clone()
    }
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
    /// Drops the next dump connection at the event at file offset `offset`.
    pub fn drop_at(&self, offset: usize) {
        *self.shared.drop_at.lock().expect("drop_at") = Some(offset);
    }

    /// A `[[sources]]` table for this server; `extra` is appended TOML.
    pub fn source_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[[sources]]\nkind = \"mysql\"\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{USER}\"\npassword_env = \"{PASSWORD_ENV}\"\nserver_id = 4242\nheartbeat = \"1s\"\nconnect_timeout = \"5s\"\nssl_mode = \"disabled\"\n{extra}\n",
            self.port
        )
    }
}

impl Drop for ProtoServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.open.lock().expect("open").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One client connection: login, then commands until it quits or a dump ends. `handle`
/// is the connection's socket, which a `KILL` from another connection shuts down.
fn serve(sh: &Shared, mut c: Conn, handle: Option<TcpStream>) -> io::Result<()> {
    if !sh.auth.login(&mut c)? {
        return Ok(());
    }
    if let Some(h) = handle {
        sh.live.lock().expect("live").insert(c.id, h);
    }
    let r = serve_logged_in(sh, &mut c);
    sh.live.lock().expect("live").remove(&c.id);
    r
}

/// `KILL [CONNECTION] n` as a server answers it: the connection is closed (a dump ends
/// at once), an unknown id is error 1094.
fn kill(sh: &Shared, c: &mut Conn, up: &str) -> io::Result<()> {
    let arg = up.trim_start_matches("KILL").trim();
    let arg = arg.strip_prefix("CONNECTION").unwrap_or(arg).trim();
    let Ok(id) = arg.parse::<u64>() else {
        return c.err(
            1064,
            "42000",
            &format!("protocol test server: bad KILL {arg:?}"),
        );
    };
    match sh.live.lock().expect("live").remove(&id) {
        Some(s) => {
            let _ = s.shutdown(Shutdown::Both);
            sh.killed.lock().expect("killed").push(id);
            c.ok()
        }
        None => c.err(1094, "HY000", &format!("Unknown thread id: {id}")),
    }
}

fn serve_logged_in(sh: &Shared, c: &mut Conn) -> io::Result<()> {
    let mut heartbeat = Duration::from_secs(1);
    let mut checksum: Option<String> = None;
    loop {
        let p = c.read()?;
        match p.first() {
            Some(0x01) => return Ok(()),
            Some(0x03) => {
                let sql = String::from_utf8_lossy(&p[1..]).into_owned();
                sh.queries.lock().expect("queries").push(sql.clone());
                let up = sql.trim().to_ascii_uppercase();
                if let Some(v) = up.strip_prefix("SET @MASTER_HEARTBEAT_PERIOD") {
                    let n: u64 = v
                        .trim_start_matches([' ', '='])
                        .trim()
                        .parse()
                        .unwrap_or(1_000_000_000);
                    heartbeat = Duration::from_nanos(n.max(50_000_000));
                }
                if up.starts_with("KILL ") {
                    kill(sh, c, &up)?;
                    continue;
                }
                if up.starts_with("SET @MASTER_BINLOG_CHECKSUM") {
                    checksum = sh
                        .variables
                        .lock()
                        .expect("vars")
                        .get("binlog_checksum")
                        .cloned();
                }
                let vars = sh.variables.lock().expect("vars").clone();
                let st = Status {
                    flavour: sh.flavour,
                    user: USER,
                    variables: &vars,
                    file: FILE,
                    end: sh.end.load(Ordering::SeqCst),
                    file_size: sh.fixture.bytes.len() as u64,
                    checksum: checksum.as_deref(),
                    tables: &sh.tables,
                };
                let norm = up.split_whitespace().collect::<Vec<_>>().join(" ");
                let answer = flavour::answer(&sql, &st).or_else(|| {
                    sh.tolerated
                        .iter()
                        .any(|t| norm.starts_with(t.as_str()))
                        .then_some(Answer::Ok)
                });
                match answer {
                    Some(Answer::Ok) => c.ok()?,
                    Some(Answer::Err(code, state, msg)) => c.err(code, state, &msg)?,
                    Some(Answer::Rows(cols, rows)) => c.result_set(&cols, &rows)?,
                    None => {
                        sh.unknown.lock().expect("unknown").push(sql.clone());
                        c.err(
                            1064,
                            "42000",
                            &format!(
                                "protocol test server: statement not in the {:?} script: {sql}",
                                sh.flavour
                            ),
                        )?
                    }
                }
            }
            Some(0x0e) | Some(0x15) => c.ok()?,
            Some(0x12) => {
                let pos = p
                    .get(1..5)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(4);
                let flags = p
                    .get(5..7)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .unwrap_or(0);
                // The name up to its first NUL, as the server copies it into a C string
                // (python-mysql-replication's MariaDB dump sends four NULs for "none").
                let name = p.get(11..).unwrap_or(&[]);
                let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
                let file = String::from_utf8_lossy(name).into_owned();
                sh.dumps.lock().expect("dumps").push(Dump::Position {
                    file: file.clone(),
                    pos: u64::from(pos),
                });
                if !file.is_empty() && file != FILE {
                    c.err(
                        1236,
                        "HY000",
                        "Could not find first log file name in binary log index file",
                    )?;
                    return Ok(());
                }
                let end = if flags & NON_BLOCK != 0 {
                    End::Eof
                } else {
                    End::Heartbeats(heartbeat)
                };
                sh.dump_ids.lock().expect("dump ids").push(c.id);
                return stream(sh, c, u64::from(pos), None, end);
            }
            Some(0x1e) => {
                // flags 2, server id 4, name length 4, name, position 8, data length 4, data.
                let flags = p
                    .get(1..3)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .unwrap_or(0);
                let set = (|| {
                    let n = u32::from_le_bytes(p.get(7..11)?.try_into().ok()?) as usize;
                    let at = 11 + n + 8 + 4;
                    GtidSet::decode(p.get(at..)?)
                })();
                let Some(set) = set else {
                    c.err(1236, "HY000", "malformed GTID set in COM_BINLOG_DUMP_GTID")?;
                    return Ok(());
                };
                sh.dumps
                    .lock()
                    .expect("dumps")
                    .push(Dump::Gtid { set: set.clone() });
                let end = if flags & NON_BLOCK != 0 {
                    End::Eof
                } else {
                    End::Heartbeats(heartbeat)
                };
                sh.dump_ids.lock().expect("dump ids").push(c.id);
                return stream(sh, c, 4, Some(set), end);
            }
            _ => c.err(1047, "08S01", "Unknown command")?,
        }
    }
}

/// `BINLOG_DUMP_NON_BLOCK`: the dump ends with EOF at the end of the binlog.
const NON_BLOCK: u16 = 0x01;

/// What a dump does after the last event.
enum End {
    /// Waits for new events, sending heartbeats (a replica's dump).
    Heartbeats(Duration),
    /// Sends EOF and ends (`BINLOG_DUMP_NON_BLOCK`, as `mysqlbinlog` asks without
    /// `--stop-never`).
    Eof,
}

/// Streams the fixture from `from` (skipping the transactions of `gtids`), then heartbeats
/// or EOF.
fn stream(
    sh: &Shared,
    c: &mut Conn,
    from: u64,
    gtids: Option<GtidSet>,
    end: End,
) -> io::Result<()> {
    let fx = &sh.fixture;
    let crc = fx.crc;
    let packet = |ev: &[u8]| {
        let mut p = Vec::with_capacity(ev.len() + 1);
        p.push(0x00);
        p.extend_from_slice(ev);
        p
    };
    c.write(&packet(&binlog::fake_rotate(FILE, from.max(4), crc)))?;
    if from > 4 {
        if let Some(fde) = fx
            .events
            .iter()
            .find(|e| e.type_code == binlog::FORMAT_DESCRIPTION)
        {
            c.write(&packet(&binlog::fde_for_dump(fx.raw(fde), crc)))?;
        }
    }
    let mut skipping = false;
    let mut last_pos = from as u32;
    for e in fx.events.iter().filter(|e| e.offset as u64 >= from.max(4)) {
        {
            let mut d = sh.drop_at.lock().expect("drop_at");
            if *d == Some(e.offset) {
                *d = None;
                sh.dropped.fetch_add(1, Ordering::SeqCst);
                let _ = c.stream.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        if let Some(set) = &gtids {
            match e.type_code {
                binlog::GTID => {
                    skipping = fx.gtid(e).is_some_and(|(sid, gno)| set.contains(&sid, gno));
                }
                binlog::ANONYMOUS_GTID | binlog::GTID_TAGGED => skipping = false,
                _ => {}
            }
            if skipping {
                continue;
            }
        }
        c.write(&packet(fx.raw(e)))?;
        if e.log_pos != 0 {
            last_pos = e.log_pos;
        }
    }
    if fx.truncated {
        // The file ends inside an event: MySQL's dump thread reports it and stops.
        let complete = fx.events.last().map_or(4, |e| e.offset + e.len);
        if sh.send_torn_tail {
            c.write(&packet(&fx.bytes[complete.max(4).min(fx.bytes.len())..]))?;
        } else {
            c.err(
                1236,
                "HY000",
                &format!(
                    "binlog truncated in the middle of event; consider out of disk space on master; the first event '{FILE}' at 4, the last event read from './{FILE}' at {complete}, the last byte read from './{FILE}' at {}.",
                    fx.bytes.len()
                ),
            )?;
        }
        return Ok(());
    }
    let _ = io::Write::flush(&mut c.stream);
    let heartbeat = match end {
        End::Eof => return c.eof(),
        End::Heartbeats(h) => h,
    };
    while !sh.stop.load(Ordering::SeqCst) {
        std::thread::sleep(heartbeat);
        c.write(&packet(&binlog::heartbeat(FILE, last_pos, crc)))?;
    }
    Ok(())
}
