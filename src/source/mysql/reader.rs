//! The blocking binlog reader thread.
//!
//! Reads packets from its connection (split packets reassembled by `wire.rs`), parses the
//! event header itself, and handles each event type: GTID/BEGIN open a transaction (its
//! start offset is the position of every row event in it), table maps are cached by table
//! id and raw bytes (an `Arc<TableSchema>` is built once per map, not per row), rows events
//! are decoded by `rows.rs`, Xid / COMMIT / DDL end the transaction with a `Boundary`.
//!
//! Events of a transaction are held ([`super::txhold::Hold`]) up to [`FLUSH_AT`] and then
//! streamed through, so a `ROLLBACK` query event (written only when non-transactional
//! tables were touched) can drop a small transaction whole. From a `SAVEPOINT` on, and for
//! a whole XA transaction, nothing is streamed through before the group's end (the hold
//! spills to disk instead): `ROLLBACK TO` a savepoint drops the rows held since it; a
//! prepared XA transaction's rows wait, by xid, for the later `XA COMMIT` (delivered then,
//! at that group's position) or `XA ROLLBACK` (dropped). While a prepared transaction
//! with captured rows is undecided, checkpoints stay at its start, so a restart reads its
//! rows again; transactions committed after it are then delivered again (at least once).
//! Sending uses `blocking_send` semantics (backpressure) but also leaves when the source
//! is cancelled. The stop flag is checked on every packet;
//! heartbeats bound how long an idle stream takes to notice it.

use super::charset::CollationMap;
use super::connect::Login;
use super::ddl::{classify, Statement, XaStatement, Xid};
use super::error::MysqlError;
use super::history::{At, History};
use super::rows::{self, RowsError, RowsKind};
use super::schema_ddl::{self, Ddl};
use super::sql::{parse_err, SqlConn};
use super::table::{self, BuildContext, SchemaInfo, TableInfo};
use super::tls::MysqlTls;
use super::txhold::Hold;
use super::validate;
use crate::config::MysqlSourceConfig;
use crate::endpoint::Endpoint;
use crate::event::{ChangeEvent, Op, SourceInfo};
use crate::filter::Filter;
use crate::position::{MysqlPosition, Position};
use crate::source::ErrorClass;
use crate::source::{SourceContext, SourceMessage};
use mysql_cdc::events::table_map_event::TableMapEvent;
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{error::TrySendError, Sender};
use tokio_util::sync::CancellationToken;

/// Longest wait for the server to end the dump connection when the reader stops.
const END_DUMP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest wait for an answer to a metadata query (table columns and keys) while
/// streaming.
const METADATA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Events buffered per transaction before they are streamed through.
const FLUSH_AT: usize = 1024;
/// Record indices of seeds start here, after those of a DDL at the same position.
const SEED_INDEX: usize = 100_000;
/// Transactions without captured changes between two idle checkpoints.
const EMPTY_TX_BOUNDARY: u64 = 1000;

pub(super) struct Args {
    pub cfg: MysqlSourceConfig,
    /// Where the SQL and binlog connections go.
    pub at: Endpoint,
    pub password: String,
    pub info: Arc<SourceInfo>,
    pub ctx: SourceContext,
    pub stop: Arc<AtomicBool>,
    /// Where the binlog connection's socket is left for a stop to shut it down.
    pub stop_socket: super::socket::StopSocket,
    pub handle: tokio::runtime::Handle,
}

/// Why the loop ends early.
enum Halt {
    /// Cancelled, or the pipeline went away: not an error.
    Stopped,
    Failed(MysqlError),
}

impl From<MysqlError> for Halt {
    fn from(e: MysqlError) -> Self {
        Halt::Failed(e)
    }
}

struct Header {
    timestamp: u32,
    type_code: u8,
    server_id: u32,
    event_length: u32,
    log_pos: u32,
}

impl Header {
    fn parse(b: &[u8]) -> Option<Header> {
        let h = b.get(..19)?;
        let u32at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Some(Header {
            timestamp: u32at(0),
            type_code: h[4],
            server_id: u32at(5),
            event_length: u32at(9),
            log_pos: u32at(13),
        })
    }

    /// Offset of this event in its binlog file (0 for artificial events).
    fn offset(&self) -> u64 {
        u64::from(self.log_pos.saturating_sub(self.event_length))
    }
}

#[derive(Default)]
struct Tx {
    start: Option<u64>,
    ts_ms: Option<i64>,
    gtid: Option<String>,
    ordinal: u64,
    in_begin: bool,
    /// Events produced in this transaction (buffered or sent).
    emitted: usize,
    /// Some of them already left the buffer.
    flushed: bool,
    /// An XA transaction's group (up to its `XA PREPARE`): held whole.
    xa: bool,
    /// Savepoints of the group and the held event count when each was set.
    savepoints: Vec<(String, usize)>,
}

/// A prepared XA transaction waiting for its `XA COMMIT` / `XA ROLLBACK`.
struct Prepared {
    xid: Xid,
    /// Where its group starts: checkpoints stay at or before it while it holds rows.
    start: MysqlPosition,
    hold: Hold,
}

struct Reader {
    info: Arc<SourceInfo>,
    filter: Arc<Filter>,
    tx_out: Sender<SourceMessage>,
    cancel: CancellationToken,
    stop: Arc<AtomicBool>,
    handle: tokio::runtime::Handle,
    login: Login,
    tls: MysqlTls,
    sql: Option<SqlConn>,
    mariadb: bool,
    metadata_full: bool,
    collations: CollationMap,
    crc: bool,
    file: String,
    resume: Option<MysqlPosition>,
    tables: HashMap<u64, (Vec<u8>, Arc<TableInfo>)>,
    /// The captured tables as of the current position (see `history.rs`).
    history: History,
    /// Seeds read from information_schema so far (their record index).
    seeds: usize,
    tx: Tx,
    hold: Hold,
    prepared: Vec<Prepared>,
    last_boundary: Option<MysqlPosition>,
    idle_boundary: Option<MysqlPosition>,
    empty_txs: u64,
    /// `(table, column)` already warned about: partial JSON updates without a document.
    warned_partial_json: std::collections::HashSet<(String, String)>,
}

/// A SQL connection for `cfg` at `at` (and the login and TLS settings that reconnect it): fails
/// within `connect_timeout` when the server is unreachable, names the user when
/// authentication fails.
pub(super) fn sql_connect(
    cfg: &MysqlSourceConfig,
    at: &Endpoint,
    password: &str,
) -> Result<(Login, MysqlTls, SqlConn), MysqlError> {
    let tls = MysqlTls::new(cfg, at)?;
    let login = Login::source(cfg, at, password);
    let sql = SqlConn::connect(&login, &tls)?;
    Ok((login, tls, sql))
}

pub(super) fn run(a: Args) -> Result<(), MysqlError> {
    let Args {
        cfg,
        at,
        password,
        info,
        ctx,
        stop,
        stop_socket,
        handle,
    } = a;
    let (login, tls, mut sql) = sql_connect(&cfg, &at, &password)?;
    // Metadata queries while streaming must not hang on a dead server either.
    sql.socket().bound_reads(METADATA_TIMEOUT);
    let server = validate::validate(&mut sql, &cfg.user)?;
    validate::check_filter(&mut sql, &ctx.filter)?;
    let mut collations = CollationMap::builtin();
    if let Ok(rs) = sql.query(
        "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL",
    ) {
        let pairs: Vec<(u32, String)> = (0..rs.rows.len())
            .filter_map(|r| Some((rs.text(r, 0)?.parse().ok()?, rs.text(r, 1)?)))
            .collect();
        collations.extend_from_rows(pairs.iter().map(|(i, n)| (*i, n.as_str())));
    }
    let resume = match &ctx.resume_from {
        None => None,
        Some(Position::Mysql(m)) => Some(m.clone()),
        Some(other) => return Err(MysqlError::ForeignPosition(other.to_string())),
    };
    if let Some(r) = resume.as_ref().filter(|r| r.start_gtid().is_none()) {
        // A purged start file is reported here, with the fix, rather than by the dump.
        if let Ok(rs) = sql.query("SHOW BINARY LOGS") {
            let files: Vec<String> = (0..rs.rows.len()).filter_map(|i| rs.text(i, 0)).collect();
            if !files.is_empty() && !files.contains(&r.file) {
                return Err(MysqlError::BinlogPurged {
                    position: format!("{}:{}", r.file, r.pos),
                    message: format!("the server's oldest binlog is {}", files[0]),
                });
            }
        }
    }
    // Without a checkpoint, start at the current end and checkpoint that position at once,
    // so a restart resumes here rather than at a newer end (which would skip changes).
    let mut initial = None;
    let (start_file, start_pos) = match &resume {
        Some(r) => (r.file.clone(), r.pos),
        None => match super::binlog_status::current_end(&mut sql)? {
            Some((file, pos)) => {
                initial = Some(MysqlPosition {
                    file: file.clone(),
                    pos,
                    ordinal: 0,
                    gtid: None,
                });
                (file, pos)
            }
            None => {
                return Err(MysqlError::Setting {
                    setting: "log_bin",
                    actual: format!(
                        "OFF ({} is empty)",
                        super::binlog_status::statement_name(&sql)
                    ),
                    wanted: "ON",
                    fix: "start the server with log_bin (and binlog_format=ROW)".into(),
                })
            }
        },
    };
    let start_gtid = resume
        .as_ref()
        .and_then(|r| r.start_gtid().map(str::to_owned));
    let mut dump = start_dump(
        &cfg,
        &login,
        &tls,
        &start_file,
        start_pos,
        start_gtid.as_deref(),
    )?;
    if let Ok(mut slot) = stop_socket.lock() {
        *slot = Some(dump.conn.socket());
    }
    let crc = dump.crc;
    tracing::info!(
        source = %cfg.name,
        server = %server.version,
        server_id = cfg.server_id(),
        resume = ?resume.as_ref().map(|r| format!("{}:{}#{}", r.file, r.pos, r.ordinal)),
        metadata_full = server.metadata_full,
        "mysql binlog stream started"
    );
    ctx.report.streaming();
    let info_name = info.name.clone();
    let mut reader = Reader {
        filter: ctx.filter.clone(),
        tx_out: ctx.tx.clone(),
        cancel: ctx.cancel.clone(),
        info,
        stop,
        handle,
        login,
        tls,
        sql: Some(sql),
        mariadb: server.mariadb,
        metadata_full: server.metadata_full,
        collations,
        crc,
        file: resume
            .as_ref()
            .or(initial.as_ref())
            .map(|r| r.file.clone())
            .unwrap_or_default(),
        resume,
        tables: HashMap::new(),
        history: History::new(&info_name, ctx.store.clone(), server.mariadb),
        seeds: 0,
        tx: Tx::default(),
        hold: Hold::default(),
        prepared: Vec::new(),
        last_boundary: None,
        idle_boundary: None,
        empty_txs: 0,
        warned_partial_json: Default::default(),
    };
    // The schema as of the start: stored history up to the resume position, or (first
    // start, at the server's current end) information_schema, which is right there.
    match (&reader.resume, &initial) {
        (Some(r), _) => {
            let n = reader
                .history
                .load(r, &reader.filter)
                .map_err(MysqlError::SchemaStore)?;
            tracing::debug!(tables = n, "schema history loaded");
        }
        (None, Some(p)) => {
            let at = At {
                file_seq: p.file_seq(),
                pos: p.pos,
            };
            reader.seed_all(at)?;
        }
        (None, None) => {}
    }
    let started = match initial {
        Some(p) => send(
            &reader.tx_out,
            &reader.handle,
            &reader.cancel,
            SourceMessage::Boundary(Position::Mysql(p)),
        )
        .and_then(|()| reader.pump(&mut dump.conn)),
        None => reader.pump(&mut dump.conn),
    };
    // The server's dump thread outlives our socket until it next writes to it (a
    // heartbeat, up to `heartbeat` later), and a restart with the same server id waits for
    // the server to kill it (100 ms measured on MariaDB 10.11). Unless the server is what
    // failed, it is ended here, from the metadata connection (a user may kill its own).
    // A requested stop shuts the dump socket down under the read: its error is the stop.
    let stopping = reader.stop.load(Ordering::Relaxed);
    let server_lost =
        matches!(&started, Err(Halt::Failed(e)) if e.class() == ErrorClass::Transient);
    if stopping || !server_lost {
        reader.end_dump(dump.conn.connection_id);
    }
    match started {
        Ok(()) | Err(Halt::Stopped) => Ok(()),
        Err(Halt::Failed(e)) => Err(e),
    }
}

/// `blocking_send` that also gives up when the source is cancelled.
fn send(
    out: &Sender<SourceMessage>,
    handle: &tokio::runtime::Handle,
    cancel: &CancellationToken,
    msg: SourceMessage,
) -> Result<(), Halt> {
    match out.try_send(msg) {
        Ok(()) => Ok(()),
        Err(TrySendError::Closed(_)) => Err(Halt::Stopped),
        Err(TrySendError::Full(msg)) => handle.block_on(async {
            tokio::select! {
                r = out.send(msg) => r.map_err(|_| Halt::Stopped),
                _ = cancel.cancelled() => Err(Halt::Stopped),
            }
        }),
    }
}

fn flush(
    hold: &mut Hold,
    out: &Sender<SourceMessage>,
    handle: &tokio::runtime::Handle,
    cancel: &CancellationToken,
) -> Result<(), Halt> {
    hold.drain(|ev| send(out, handle, cancel, SourceMessage::Change(ev)))
        .map_err(|e| Halt::Failed(MysqlError::Hold(e)))?
}

/// The binlog connection after `COM_BINLOG_DUMP`.
struct Dump {
    conn: SqlConn,
    /// Events carry a CRC32 checksum.
    crc: bool,
}

/// Opens the binlog connection and requests the stream from `file:pos`, or after `gtid`
/// when given (the transaction after it is the first one sent), on a connection with
/// `TCP_NODELAY`, so the setup round trips do not each wait for a delayed ACK.
fn start_dump(
    cfg: &MysqlSourceConfig,
    login: &Login,
    tls: &MysqlTls,
    file: &str,
    pos: u64,
    gtid: Option<&str>,
) -> Result<Dump, MysqlError> {
    let mut conn = SqlConn::connect(login, tls)?;
    conn.query(&format!(
        "SET @master_heartbeat_period = {}",
        cfg.heartbeat.as_nanos()
    ))?;
    // Silence beyond three heartbeats (at least 10 s) is a dead connection.
    conn.socket()
        .bound_reads(super::socket::dead_after(cfg.heartbeat));
    conn.query("SET @master_binlog_checksum = @@global.binlog_checksum")?;
    let crc = conn
        .query("SELECT @master_binlog_checksum")?
        .text(0, 0)
        .is_some_and(|c| c.eq_ignore_ascii_case("CRC32"));
    if conn.mariadb {
        // Capability 4: GTID events and annotate rows events are understood.
        conn.query("SET @mariadb_slave_capability = 4")?;
    }
    if let Some(g) = gtid {
        return start_gtid_dump(cfg, conn, crc, g);
    }
    let pos = u32::try_from(pos).map_err(|_| MysqlError::Malformed {
        file: file.to_owned(),
        pos,
        message: "binlog position beyond 4 GiB cannot be requested with COM_BINLOG_DUMP".into(),
    })?;
    // COM_BINLOG_DUMP: position u32, flags u16 (0: block at the end), server id u32, file.
    let mut cmd = Vec::with_capacity(11 + file.len());
    cmd.push(0x12);
    cmd.extend_from_slice(&pos.to_le_bytes());
    cmd.extend_from_slice(&0u16.to_le_bytes());
    cmd.extend_from_slice(&cfg.server_id().to_le_bytes());
    cmd.extend_from_slice(file.as_bytes());
    conn.send_command(&cmd)?;
    Ok(Dump { conn, crc })
}

/// The GTID variant of [`start_dump`]: MariaDB takes the start as the session's
/// `@slave_connect_state` (the last transaction already applied), MySQL as the executed
/// GTID set of `COM_BINLOG_DUMP_GTID`.
fn start_gtid_dump(
    cfg: &MysqlSourceConfig,
    mut conn: SqlConn,
    crc: bool,
    gtid: &str,
) -> Result<Dump, MysqlError> {
    let bad = |why: &str| MysqlError::Malformed {
        file: String::new(),
        pos: 0,
        message: format!("start GTID {gtid:?}: {why}"),
    };
    if conn.mariadb {
        // Digits and dashes only (checked by the position parser): safe inside the quotes.
        if !gtid
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
        {
            return Err(bad("not a MariaDB GTID like 0-1-42"));
        }
        conn.query(&format!("SET @slave_connect_state = '{gtid}'"))?;
        conn.query("SET @slave_gtid_strict_mode = 0")?;
        conn.query("SET @slave_gtid_ignore_duplicates = 0")?;
        conn.send_command(&register_replica(cfg.server_id()))?;
        let ok = conn.read_packet().map_err(|source| MysqlError::Io {
            context: "registering as a replica",
            source,
        })?;
        if ok.first() == Some(&0xFF) {
            let (code, message) = parse_err(&ok);
            return Err(MysqlError::Stream { code, message });
        }
        let mut cmd = Vec::with_capacity(11);
        cmd.push(0x12);
        cmd.extend_from_slice(&4u32.to_le_bytes());
        cmd.extend_from_slice(&0u16.to_le_bytes());
        cmd.extend_from_slice(&cfg.server_id().to_le_bytes());
        conn.send_command(&cmd)?;
    } else {
        let cmd = mysql_gtid_dump(cfg.server_id(), gtid)
            .ok_or_else(|| bad("not a MySQL GTID like 3e11fa47-71ca-11e1-9e33-c80aa9429562:42"))?;
        conn.send_command(&cmd)?;
    }
    Ok(Dump { conn, crc })
}

/// `COM_REGISTER_SLAVE` with only the server id (host, user, password empty).
fn register_replica(server_id: u32) -> Vec<u8> {
    let mut cmd = Vec::with_capacity(18);
    cmd.push(0x15);
    cmd.extend_from_slice(&server_id.to_le_bytes());
    cmd.extend_from_slice(&[0, 0, 0]); // host, user, password lengths
    cmd.extend_from_slice(&0u16.to_le_bytes()); // port
    cmd.extend_from_slice(&0u32.to_le_bytes()); // replication rank
    cmd.extend_from_slice(&0u32.to_le_bytes()); // master id
    cmd
}

/// `COM_BINLOG_DUMP_GTID` for MySQL: stream everything not in the executed set
/// `uuid:1-n` (that is, from the transaction after `uuid:n`), file name empty, position 4.
fn mysql_gtid_dump(server_id: u32, gtid: &str) -> Option<Vec<u8>> {
    let (uuid, n) = crate::position::gtid_stream_seq(gtid)?;
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut sid = [0u8; 16];
    for (i, b) in sid.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let mut data = Vec::with_capacity(48);
    data.extend_from_slice(&1u64.to_le_bytes()); // one uuid set
    data.extend_from_slice(&sid);
    data.extend_from_slice(&1u64.to_le_bytes()); // one interval
    data.extend_from_slice(&1u64.to_le_bytes()); // start
    data.extend_from_slice(&(n + 1).to_le_bytes()); // end (exclusive)
    let mut cmd = Vec::with_capacity(23 + data.len());
    cmd.push(0x1e);
    cmd.extend_from_slice(&0x0004u16.to_le_bytes()); // BINLOG_THROUGH_GTID
    cmd.extend_from_slice(&server_id.to_le_bytes());
    cmd.extend_from_slice(&0u32.to_le_bytes()); // file name length
    cmd.extend_from_slice(&4u64.to_le_bytes()); // position
    cmd.extend_from_slice(&u32::try_from(data.len()).ok()?.to_le_bytes());
    cmd.extend_from_slice(&data);
    Some(cmd)
}

fn read_packet(conn: &mut SqlConn) -> Result<Vec<u8>, MysqlError> {
    conn.read_packet().map_err(|source| {
        let context = if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            "waiting for binlog events (nothing, not even a heartbeat, within 3 heartbeat periods (at least 10 s): the server or the network stopped answering)"
        } else {
            "reading binlog events"
        };
        MysqlError::Io { context, source }
    })
}

impl Reader {
    fn pump(&mut self, events: &mut SqlConn) -> Result<(), Halt> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Halt::Stopped);
            }
            let packet = read_packet(events)?;
            match packet.first() {
                Some(0x00) => {}
                Some(0xFF) => {
                    let (code, message) = parse_err(&packet);
                    let purged = code == 1236
                        && (message.contains("first log file")
                            || message.contains("purged")
                            || message.contains("Could not find"));
                    return Err(if purged {
                        MysqlError::BinlogPurged {
                            position: self
                                .resume
                                .as_ref()
                                .map(|r| format!("{}:{}", r.file, r.pos))
                                .unwrap_or_else(|| self.file.clone()),
                            message,
                        }
                    } else {
                        MysqlError::Stream { code, message }
                    }
                    .into());
                }
                Some(0xFE) if packet.len() < 9 => {
                    return Err(MysqlError::Io {
                        context: "reading binlog events",
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the server ended the binlog stream",
                        ),
                    }
                    .into())
                }
                _ => {
                    return Err(self
                        .malformed(0, "unexpected packet in the binlog stream")
                        .into())
                }
            }
            let ev = &packet[1..];
            let Some(h) = Header::parse(ev) else {
                return Err(self.malformed(0, "event shorter than its header").into());
            };
            let end = if self.crc {
                ev.len().saturating_sub(4)
            } else {
                ev.len()
            };
            let Some(body) = ev.get(19..end) else {
                return Err(self
                    .malformed(h.offset(), "event shorter than its checksum")
                    .into());
            };
            self.on_event(&h, body)?;
        }
    }

    /// A TRANSACTION_PAYLOAD: its inner events, one at a time, handled like any other, at
    /// the payload event's position (see [`super::payload`]): the transaction's start is its
    /// GTID event before the payload, its commit position the payload's end, and row
    /// ordinals count on inside it.
    fn on_payload(&mut self, h: &Header, body: &[u8]) -> Result<(), Halt> {
        let bad = |s: &Self, m: String| -> Halt {
            s.malformed(h.offset(), &format!("TRANSACTION_PAYLOAD_EVENT: {m}"))
                .into()
        };
        let mut inner = super::payload::InnerEvents::new(body).map_err(|m| bad(self, m))?;
        while let Some(ev) = inner.next_event().map_err(|m| bad(self, m))? {
            let Some(ih) = Header::parse(&ev) else {
                return Err(bad(self, "inner event shorter than its header".into()));
            };
            if ih.type_code == 40 {
                return Err(bad(self, "a payload inside a payload".into()));
            }
            let ih = Header {
                event_length: h.event_length,
                log_pos: h.log_pos,
                ..ih
            };
            self.on_event(&ih, ev.get(19..).unwrap_or_default())?;
        }
        Ok(())
    }

    fn malformed(&self, pos: u64, message: &str) -> MysqlError {
        MysqlError::Malformed {
            file: self.file.clone(),
            pos,
            message: message.to_owned(),
        }
    }

    fn unsupported(&self, h: &Header, name: &'static str, setting: &'static str) -> Halt {
        Halt::Failed(MysqlError::UnsupportedEvent {
            name,
            code: h.type_code,
            file: self.file.clone(),
            pos: h.offset(),
            setting,
        })
    }

    fn on_event(&mut self, h: &Header, body: &[u8]) -> Result<(), Halt> {
        match h.type_code {
            // ROTATE: the file every later position refers to.
            // A real rotate (log_pos != 0) ends the old file: everything in it is passed,
            // so a bound at the old file's end is reached without waiting for a heartbeat.
            4 => {
                self.passed(h)?;
                if let Some(name) = body.get(8..) {
                    self.file = String::from_utf8_lossy(name).into_owned();
                }
            }
            // QUERY
            2 => self.on_query(h, body)?,
            // XID: commit.
            16 => self.commit(u64::from(h.log_pos), false)?,
            19 => self.on_table_map(h, body)?,
            23 | 30 => self.on_rows(h, body, RowsKind::Write)?,
            24 | 31 => self.on_rows(h, body, RowsKind::Update)?,
            25 | 32 => self.on_rows(h, body, RowsKind::Delete)?,
            // MariaDB GTID: seq u64, domain u32, flags.
            162 => {
                let seq = body
                    .get(..8)
                    .map(|b| b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)));
                let domain = body
                    .get(8..12)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let gtid = match (domain, seq) {
                    (Some(d), Some(s)) => Some(format!("{d}-{}-{s}", h.server_id)),
                    _ => None,
                };
                self.begin_tx(h, gtid);
                // flags2 FL_PREPARED_XA: the group ends with XA PREPARE (MariaDB logs no
                // XA START query; the xid is in this event).
                self.tx.xa = body.get(12).is_some_and(|f| f & 0x40 != 0);
            }
            // MySQL GTID: flags, sid[16], gno i64; anonymous and tagged GTIDs open a transaction too.
            33 => {
                let gtid = body.get(1..25).map(|b| {
                    let u: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
                    let gno = i64::from_le_bytes([
                        b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23],
                    ]);
                    format!(
                        "{}-{}-{}-{}-{}:{gno}",
                        &u[..8],
                        &u[8..12],
                        &u[12..16],
                        &u[16..20],
                        &u[20..]
                    )
                });
                self.begin_tx(h, gtid);
            }
            34 => self.begin_tx(h, None),
            // MySQL 8.3+ tagged GTID: `uuid:tag:gno`.
            42 => match super::gtid_tagged::parse(body) {
                Some(gtid) => self.begin_tx(h, Some(gtid)),
                None => {
                    return Err(self
                        .malformed(h.offset(), "unreadable GTID_TAGGED_LOG_EVENT")
                        .into())
                }
            },
            // XA_PREPARE: ends the group of an XA transaction (or commits one phase).
            38 => match Xid::from_prepare_event(body) {
                Some((one_phase, xid)) => self.xa_prepare(h, xid, one_phase)?,
                None => {
                    return Err(self
                        .malformed(h.offset(), "truncated XA_PREPARE event")
                        .into())
                }
            },
            // HEARTBEAT (v1, v2): idle.
            27 | 41 => {
                if let Some(b) = self.idle_boundary.take() {
                    self.boundary(b)?;
                }
            }
            26 => {
                return Err(MysqlError::Incident {
                    file: self.file.clone(),
                    pos: h.offset(),
                }
                .into());
            }
            // PARTIAL_UPDATE_ROWS (binlog_row_value_options=PARTIAL_JSON).
            39 => self.on_rows(h, body, RowsKind::PartialUpdate)?,
            40 => self.on_payload(h, body)?,
            165 => {
                return Err(self.unsupported(h, "QUERY_COMPRESSED_EVENT", "log_bin_compress=OFF"))
            }
            166..=171 => {
                return Err(self.unsupported(h, "compressed ROWS_EVENT", "log_bin_compress=OFF"))
            }
            20..=22 => {
                return Err(self.unsupported(
                    h,
                    "pre-GA ROWS_EVENT v0",
                    "a server version of MySQL 5.1.18 or later",
                ))
            }
            // FORMAT_DESCRIPTION, INTVAR, RAND, USER_VAR, ROWS_QUERY, PREVIOUS_GTIDS,
            // TRANSACTION_CONTEXT, VIEW_CHANGE, MariaDB annotate/checkpoint/GTID list/
            // encryption: nothing to do.
            15 | 5 | 13 | 14 | 29 | 35 | 36 | 37 | 160 | 161 | 163 | 164 | 3 => self.passed(h)?,
            other => {
                tracing::debug!(event_type = other, file = %self.file, pos = h.offset(), "skipping unknown binlog event");
                self.passed(h)?;
            }
        }
        Ok(())
    }

    /// An event outside any transaction (rotate, format description, binlog checkpoint,
    /// GTID list, ...): the checkpoint moves past it at once, so a bound at or before it is
    /// reached now rather than at the next heartbeat. These events are rare (file starts
    /// and ends), so each costs one boundary message at most.
    fn passed(&mut self, h: &Header) -> Result<(), Halt> {
        if self.tx.start.is_some() || h.log_pos == 0 {
            return Ok(());
        }
        let pos = MysqlPosition {
            file: self.file.clone(),
            pos: u64::from(h.log_pos),
            ordinal: 0,
            gtid: None,
        };
        if self.skipped(&pos) {
            return Ok(());
        }
        self.boundary(pos)
    }

    /// Sends a checkpoint boundary; it supersedes an older idle boundary of empty
    /// transactions. While a prepared XA transaction holds rows the boundary stays at that
    /// transaction's start (so a restart reads its rows again); a repeated boundary is not
    /// sent twice.
    fn boundary(&mut self, pos: MysqlPosition) -> Result<(), Halt> {
        self.idle_boundary = None;
        self.empty_txs = 0;
        let floor = self
            .prepared
            .iter()
            .filter(|p| !p.hold.is_empty())
            .map(|p| &p.start)
            .min();
        let pos = match floor {
            Some(f) if *f < pos => f.clone(),
            _ => pos,
        };
        if self
            .last_boundary
            .as_ref()
            .is_some_and(|l| l.cmp(&pos).is_eq())
        {
            return Ok(());
        }
        self.last_boundary = Some(pos.clone());
        send(
            &self.tx_out,
            &self.handle,
            &self.cancel,
            SourceMessage::Boundary(Position::Mysql(pos)),
        )
    }

    fn begin_tx(&mut self, h: &Header, gtid: Option<String>) {
        self.tx = Tx {
            start: Some(h.offset()),
            ts_ms: Some(i64::from(h.timestamp) * 1000),
            gtid,
            ..Tx::default()
        };
        self.hold.clear();
    }

    /// The end of an XA transaction's first phase: its held rows wait for the decision
    /// (`XA PREPARE … ONE PHASE` commits at once).
    fn xa_prepare(&mut self, h: &Header, xid: Xid, one_phase: bool) -> Result<(), Halt> {
        if one_phase {
            return self.commit(u64::from(h.log_pos), false);
        }
        let hold = std::mem::take(&mut self.hold);
        tracing::info!(file = %self.file, pos = h.offset(), xid = %xid, rows = hold.len(), on_disk = hold.on_disk(), "xa transaction prepared: its changes wait for XA COMMIT");
        let start = MysqlPosition {
            file: self.file.clone(),
            pos: self.tx.start.unwrap_or(h.offset()),
            ordinal: 0,
            gtid: None,
        };
        self.prepared.retain(|p| p.xid != xid);
        self.prepared.push(Prepared { xid, start, hold });
        self.tx.emitted = 0;
        self.commit(u64::from(h.log_pos), false)
    }

    /// `XA COMMIT` / `XA ROLLBACK` of a prepared transaction (its own group): delivers its
    /// rows at this group's position, or drops them.
    fn xa_decide(&mut self, h: &Header, xid: Option<Xid>, commit: bool) -> Result<(), Halt> {
        if self.tx.start.is_none() {
            self.begin_tx(h, None);
        }
        let found = xid
            .as_ref()
            .and_then(|x| self.prepared.iter().position(|p| &p.xid == x))
            .map(|i| self.prepared.remove(i));
        let label = xid.as_ref().map(ToString::to_string).unwrap_or_default();
        match found {
            Some(mut p) if commit => {
                let start = self.tx.start.unwrap_or(h.offset());
                let (file, gtid, ts) = (&self.file, &self.tx.gtid, self.tx.ts_ms);
                let (hold, resume) = (&mut self.hold, &mut self.resume);
                let mut ordinal = self.tx.ordinal;
                let mut emitted = 0;
                let mut pushed = Ok(());
                let drained = p.hold.drain(|mut ev| {
                    ordinal += 1;
                    let position = MysqlPosition {
                        file: file.clone(),
                        pos: start,
                        ordinal,
                        gtid: gtid.clone(),
                    };
                    if let Some(r) = resume.as_ref() {
                        if &position <= r {
                            return Ok(());
                        }
                        *resume = None;
                    }
                    ev.position = Position::Mysql(position);
                    ev.commit_ts_ms = ts;
                    emitted += 1;
                    pushed = hold.push(ev);
                    pushed.as_ref().map_err(|_| ()).copied()
                });
                self.tx.ordinal = ordinal;
                self.tx.emitted += emitted;
                pushed.map_err(|e| Halt::Failed(MysqlError::Hold(e)))?;
                drained.map_err(|e| Halt::Failed(MysqlError::Hold(e)))?.ok();
                tracing::debug!(file = %self.file, pos = h.offset(), xid = %label, rows = emitted, "xa transaction committed");
            }
            Some(p) => {
                tracing::info!(file = %self.file, pos = h.offset(), xid = %label, dropped = p.hold.len(), "xa transaction rolled back: its changes are not emitted");
            }
            None if commit => {
                tracing::warn!(file = %self.file, pos = h.offset(), xid = %label, "XA COMMIT of a transaction whose XA PREPARE this stream did not read (prepared before the start position, or delivered before a restart): its changes are not emitted here");
            }
            None => {}
        }
        self.commit(u64::from(h.log_pos), false)
    }

    /// Whether `p` was delivered before the resume point.
    fn skipped(&mut self, p: &MysqlPosition) -> bool {
        match &self.resume {
            Some(r) if p <= r => true,
            Some(_) => {
                self.resume = None;
                false
            }
            None => false,
        }
    }

    fn commit(&mut self, next: u64, ddl: bool) -> Result<(), Halt> {
        let tx = std::mem::take(&mut self.tx);
        flush(&mut self.hold, &self.tx_out, &self.handle, &self.cancel)?;
        let pos = MysqlPosition {
            file: self.file.clone(),
            pos: next,
            ordinal: 0,
            gtid: tx.gtid,
        };
        if self.skipped(&pos) {
            return Ok(());
        }
        if tx.emitted > 0 || ddl || self.empty_txs + 1 >= EMPTY_TX_BOUNDARY {
            self.boundary(pos)?;
        } else {
            self.empty_txs += 1;
            self.idle_boundary = Some(pos);
        }
        Ok(())
    }

    fn on_query(&mut self, h: &Header, body: &[u8]) -> Result<(), Halt> {
        // thread id 4, exec time 4, db len 1, error code 2, status vars len 2, vars, db, NUL, query.
        let parsed = (|| {
            let db_len = usize::from(*body.get(8)?);
            let vars = usize::from(u16::from_le_bytes([*body.get(11)?, *body.get(12)?]));
            let db_at = 13 + vars;
            let db = body.get(db_at..db_at + db_len)?;
            let q = body.get(db_at + db_len + 1..)?;
            Some((
                String::from_utf8_lossy(db).into_owned(),
                String::from_utf8_lossy(q).into_owned(),
            ))
        })();
        let Some((db, sql)) = parsed else {
            return Err(self.malformed(h.offset(), "truncated query event").into());
        };
        match classify(&sql) {
            Statement::Begin => {
                if self.tx.start.is_none() {
                    self.begin_tx(h, None);
                }
                self.tx.in_begin = true;
            }
            Statement::Commit => self.commit(u64::from(h.log_pos), false)?,
            Statement::Rollback => {
                if self.tx.flushed {
                    tracing::warn!(file = %self.file, pos = h.offset(), "rolled-back transaction (non-transactional tables involved) was larger than the buffer: its first changes were already emitted");
                } else if self.tx.emitted > 0 {
                    tracing::info!(file = %self.file, pos = h.offset(), dropped = self.tx.emitted, "rolled-back transaction: its changes are not emitted");
                }
                self.hold.clear();
                self.tx.emitted = 0;
                self.commit(u64::from(h.log_pos), false)?;
            }
            Statement::Savepoint(name) => {
                if self.tx.start.is_none() {
                    self.begin_tx(h, None);
                }
                let sp = &mut self.tx.savepoints;
                sp.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                sp.push((name, self.hold.len()));
            }
            Statement::RollbackTo(name) => {
                let at = self
                    .tx
                    .savepoints
                    .iter()
                    .rposition(|(n, _)| n.eq_ignore_ascii_case(&name));
                match at {
                    Some(i) => {
                        let keep = self.tx.savepoints[i].1;
                        let dropped = self.hold.len().saturating_sub(keep);
                        self.hold
                            .truncate(keep)
                            .map_err(|e| Halt::Failed(MysqlError::Hold(e)))?;
                        self.tx.emitted = self.tx.emitted.saturating_sub(dropped);
                        self.tx.savepoints.truncate(i + 1);
                        tracing::debug!(file = %self.file, pos = h.offset(), savepoint = %name, dropped, "rollback to savepoint: the changes since it are not emitted");
                    }
                    None => {
                        tracing::warn!(file = %self.file, pos = h.offset(), savepoint = %name, "ROLLBACK TO a savepoint this stream did not see set: nothing dropped");
                    }
                }
            }
            Statement::Release(name) => {
                if let Some(i) = self
                    .tx
                    .savepoints
                    .iter()
                    .rposition(|(n, _)| n.eq_ignore_ascii_case(&name))
                {
                    self.tx.savepoints.truncate(i);
                }
            }
            Statement::Xa(xa) => match xa {
                XaStatement::Start => {
                    if self.tx.start.is_none() {
                        self.begin_tx(h, None);
                    }
                    self.tx.in_begin = true;
                    self.tx.xa = true;
                }
                XaStatement::Prepare(Some(xid)) => self.xa_prepare(h, xid, false)?,
                XaStatement::Commit { .. } if self.tx.xa => {
                    self.commit(u64::from(h.log_pos), false)?
                }
                XaStatement::Rollback(_) if self.tx.xa => {
                    self.hold.clear();
                    self.tx.emitted = 0;
                    self.commit(u64::from(h.log_pos), false)?
                }
                XaStatement::Commit { xid, one_phase } => {
                    if one_phase {
                        self.commit(u64::from(h.log_pos), false)?
                    } else {
                        self.xa_decide(h, xid, true)?
                    }
                }
                XaStatement::Rollback(xid) => self.xa_decide(h, xid, false)?,
                XaStatement::End | XaStatement::Prepare(None) | XaStatement::Other => {}
            },
            Statement::Dml(statement) => {
                // A statement on a table we do not capture is harmless (e.g. the
                // `DELETE FROM memory_table` MariaDB logs after a restart).
                if let Some((tdb, table)) = super::ddl::dml_target(&sql) {
                    let tdb = tdb.unwrap_or(db);
                    if !self.filter.table_selected(&tdb, &table) {
                        tracing::warn!(file = %self.file, pos = h.offset(), db = %tdb, table = %table, "statement-logged change to a table that is not captured: skipped");
                        return Ok(());
                    }
                }
                return Err(MysqlError::StatementEvent {
                    statement,
                    file: self.file.clone(),
                    pos: h.offset(),
                }
                .into());
            }
            Statement::Truncate { db: tdb, table } => {
                let tdb = tdb.unwrap_or(db);
                if self.tx.start.is_none() {
                    self.begin_tx(h, None);
                }
                self.tx.ordinal += 1;
                let position = MysqlPosition {
                    file: self.file.clone(),
                    pos: self.tx.start.unwrap_or(h.offset()),
                    ordinal: self.tx.ordinal,
                    gtid: self.tx.gtid.clone(),
                };
                if self.filter.table_selected(&tdb, &table) && !self.skipped(&position) {
                    let info = self.schema_info(&tdb, &table)?;
                    let cx = BuildContext {
                        mariadb: self.mariadb,
                        collations: &self.collations,
                        filter: &self.filter,
                        source: &self.info,
                    };
                    let schema = table::truncate_schema(&tdb, &table, info.as_deref(), &cx)?;
                    self.hold
                        .push(ChangeEvent {
                            op: Op::Truncate,
                            table: schema,
                            before: None,
                            after: None,
                            position: Position::Mysql(position),
                            txid: None,
                            commit_ts_ms: self.tx.ts_ms,
                        })
                        .map_err(|e| Halt::Failed(MysqlError::Hold(e)))?;
                    self.tx.emitted += 1;
                }
                if !self.tx.in_begin {
                    self.commit(u64::from(h.log_pos), true)?;
                }
            }
            Statement::Other => {
                // DDL: the schema history follows it; table ids may be reused.
                let ddl = schema_ddl::parse_ddl(&sql, self.mariadb);
                if ddl != Ddl::None {
                    self.tables.clear();
                    let at = At {
                        file_seq: crate::position::binlog_file_seq(&self.file),
                        pos: u64::from(h.log_pos),
                    };
                    let unknown = self
                        .history
                        .apply_ddl(ddl, &db, at, &self.filter)
                        .map_err(MysqlError::SchemaStore)?;
                    for (d, t) in unknown {
                        tracing::warn!(file = %self.file, pos = h.offset(), table = %format!("{d}.{t}"), statement = %sql.chars().take(200).collect::<String>(), "schema change not understood: the table is read again from information_schema (today's definition)");
                    }
                }
                if !self.tx.in_begin {
                    self.commit(u64::from(h.log_pos), true)?;
                }
            }
        }
        Ok(())
    }

    /// Ends the server's side of the dump connection `id` (best effort: a failure only
    /// leaves the thread to end at its next heartbeat).
    fn end_dump(&mut self, id: u32) {
        let Some(conn) = self.sql.as_mut() else {
            return;
        };
        // A server that stopped answering does not hold up the stop for long (the
        // connection is not used after this).
        conn.socket().bound_reads(END_DUMP_TIMEOUT);
        match conn.query(&format!("KILL CONNECTION {id}")) {
            Ok(_) => tracing::debug!(
                connection = id,
                "binlog dump connection ended on the server"
            ),
            Err(error) => {
                tracing::debug!(connection = id, %error, "could not end the binlog dump connection on the server")
            }
        }
    }

    fn schema_info(
        &mut self,
        db: &str,
        table: &str,
    ) -> Result<Option<Arc<SchemaInfo>>, MysqlError> {
        if let Some(s) = self.history.get(db, table) {
            return Ok(s);
        }
        if self.sql.is_none() {
            self.sql = Some(SqlConn::connect(&self.login, &self.tls)?);
        }
        let Some(conn) = self.sql.as_mut() else {
            return Ok(None);
        };
        let loaded = match table::load_schema(conn, db, table) {
            Ok(s) => s.map(Arc::new),
            Err(e) => {
                self.sql = None;
                return Err(e);
            }
        };
        // Recorded where it is first needed: from here on this is the table's schema.
        let at = At {
            file_seq: crate::position::binlog_file_seq(&self.file),
            pos: self.tx.start.unwrap_or(0),
        };
        self.seeds += 1;
        self.history
            .set(at, SEED_INDEX + self.seeds, db, table, loaded.clone())
            .map_err(MysqlError::SchemaStore)?;
        Ok(loaded)
    }

    /// Seeds the history with every captured table from information_schema (the first
    /// start, at the server's current end, where information_schema is right).
    fn seed_all(&mut self, at: At) -> Result<(), MysqlError> {
        let Some(conn) = self.sql.as_mut() else {
            return Ok(());
        };
        let rs = conn.query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')",
        )?;
        let tables: Vec<(String, String)> = (0..rs.rows.len())
            .filter_map(|r| Some((rs.text(r, 0)?, rs.text(r, 1)?)))
            .filter(|(d, t)| self.filter.table_selected(d, t))
            .collect();
        for (d, t) in tables {
            let Some(conn) = self.sql.as_mut() else {
                break;
            };
            let def = table::load_schema(conn, &d, &t)?.map(Arc::new);
            self.seeds += 1;
            self.history
                .set(at, SEED_INDEX + self.seeds, &d, &t, def)
                .map_err(MysqlError::SchemaStore)?;
        }
        Ok(())
    }

    fn on_table_map(&mut self, h: &Header, body: &[u8]) -> Result<(), Halt> {
        let Some(idb) = body.get(..6) else {
            return Err(self.malformed(h.offset(), "truncated table map").into());
        };
        let id = idb.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x));
        if let Some((raw, _)) = self.tables.get(&id) {
            if raw.as_slice() == body {
                return Ok(());
            }
        }
        let Some((db, name, types)) = table::map_header(body) else {
            return Err(self.malformed(h.offset(), "truncated table map").into());
        };
        let selected = self.filter.table_selected(&db, &name);
        // MariaDB COMPRESSED columns: parsed as the plain type, decoded by decompressing.
        let table::PlainTypes {
            body: plain,
            compressed,
            vectors,
        } = table::plain_types(body, types);
        let tm = match TableMapEvent::parse(&mut Cursor::new(&plain)) {
            Ok(tm) => tm,
            Err(e) if !selected => {
                // Never decoded, so never an error: its rows are skipped unmeasured.
                tracing::debug!(file = %self.file, pos = h.offset(), db = %db, table = %name, error = %super::error::CdcError(e), "table map of a table that is not captured cannot be parsed: its rows are skipped");
                self.tables
                    .insert(id, (body.to_vec(), Arc::new(TableInfo::opaque(db, name))));
                return Ok(());
            }
            Err(e) => {
                return Err(MysqlError::Malformed {
                    file: self.file.clone(),
                    pos: h.offset(),
                    message: format!("table map of {db}.{name}: {}", super::error::CdcError(e)),
                }
                .into())
            }
        };
        let long_text = tm
            .column_types
            .iter()
            .zip(&tm.column_metadata)
            .any(|(&t, &m)| t == 252 && m == 4);
        // BINARY(16)/BINARY(4): maybe MariaDB UUID / INET6 / INET4.
        let fixed_binary = tm
            .column_types
            .iter()
            .zip(&tm.column_metadata)
            .any(|(&t, &m)| t == 254 && m >> 8 == 254 && matches!(m & 0xFF, 4 | 16));
        let info = if selected
            && (!self.metadata_full
                || tm.table_metadata.is_none()
                || (self.mariadb && (long_text || fixed_binary)))
        {
            self.schema_info(&tm.database_name, &tm.table_name)?
        } else {
            None
        };
        let cx = BuildContext {
            mariadb: self.mariadb,
            collations: &self.collations,
            filter: &self.filter,
            source: &self.info,
        };
        let mut t = table::build(
            &tm,
            table::signedness_bitmap(body),
            info.as_deref(),
            selected,
            &cx,
        )?;
        for i in compressed {
            if let Some(k) = t.kinds.get_mut(i) {
                *k = super::types::Kind::Compressed(Box::new(k.clone()));
            }
        }
        for i in vectors {
            if let Some(k) = t.kinds.get_mut(i) {
                if let super::types::Kind::Blob { pack_len, .. } = k {
                    *k = super::types::Kind::Vector {
                        pack_len: *pack_len,
                    };
                }
            }
        }
        self.tables.insert(id, (body.to_vec(), Arc::new(t)));
        Ok(())
    }

    fn on_rows(&mut self, h: &Header, body: &[u8], kind: RowsKind) -> Result<(), Halt> {
        let v2 = matches!(h.type_code, 30..=32 | 39);
        let rh = rows::header(body).map_err(|e| self.rows_err(h, None, e))?;
        if rh.table_id == 0x00FF_FFFF {
            return Ok(());
        }
        let Some(t) = self.tables.get(&rh.table_id).map(|(_, t)| t.clone()) else {
            return Err(self
                .malformed(
                    h.offset(),
                    &format!(
                        "rows event for table id {} without a table map",
                        rh.table_id
                    ),
                )
                .into());
        };
        if t.opaque {
            return Ok(());
        }
        if self.tx.start.is_none() {
            self.begin_tx(h, None);
        }
        let op = match kind {
            RowsKind::Write => Op::Create,
            RowsKind::Update | RowsKind::PartialUpdate => Op::Update,
            RowsKind::Delete => Op::Delete,
        };
        let start = self.tx.start.unwrap_or(h.offset());
        let ts = self.tx.ts_ms;
        let mut ordinal = self.tx.ordinal;
        let mut emitted = 0usize;
        let mut flushed = false;
        let schema = t.selected.as_ref().map(|s| s.schema.clone());
        let (file, gtid) = (&self.file, &self.tx.gtid);
        let resume = &mut self.resume;
        let hold = &mut self.hold;
        // Streamed through only while nothing can undo the rows before the group's end.
        let may_flush = !self.tx.xa && self.tx.savepoints.is_empty();
        let (out, handle, cancel) = (&self.tx_out, &self.handle, &self.cancel);
        let mut notes = rows::RowsNotes::default();
        let result = rows::for_each_row(body, v2, kind, &t, &mut notes, |before, after| {
            ordinal += 1;
            let position = MysqlPosition {
                file: file.clone(),
                pos: start,
                ordinal,
                gtid: gtid.clone(),
            };
            if let Some(r) = resume.as_ref() {
                if &position <= r {
                    return Ok(());
                }
                *resume = None;
            }
            let Some(table) = schema.clone() else {
                return Ok(());
            };
            hold.push(ChangeEvent {
                op,
                table,
                before,
                after,
                position: Position::Mysql(position),
                txid: None,
                commit_ts_ms: ts,
            })
            .map_err(|e| Halt::Failed(MysqlError::Hold(e)))?;
            emitted += 1;
            if may_flush && hold.len() >= FLUSH_AT {
                flushed = true;
                flush(hold, out, handle, cancel)?;
            }
            Ok::<(), Halt>(())
        });
        self.tx.emitted += emitted;
        self.tx.flushed |= flushed;
        for i in notes.unbuilt_json {
            let column = t
                .names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("#{}", i + 1));
            let table = format!("{}.{}", t.db, t.name);
            if self
                .warned_partial_json
                .insert((table.clone(), column.clone()))
            {
                tracing::warn!(file = %self.file, pos = h.offset(), table = %table, column = %column, "partial JSON update without the old document in the before image: the column's new value is not known and is left out of `after` (listed in `unchanged`); set binlog_row_image=FULL (or binlog_row_value_options='') on the server to get the whole document");
            }
        }
        match result {
            Ok(Ok(n)) => {
                if t.selected.is_none() {
                    ordinal += n as u64;
                }
                self.tx.ordinal = ordinal;
                Ok(())
            }
            Ok(Err(halt)) => Err(halt),
            Err(e) => Err(self.rows_err(h, Some(&t), e)),
        }
    }

    fn rows_err(&self, h: &Header, t: Option<&TableInfo>, e: RowsError) -> Halt {
        Halt::Failed(match e {
            RowsError::Malformed(message) => self.malformed(h.offset(), &message),
            RowsError::Value { column, source } => MysqlError::Decode {
                column: format!(
                    "{}.{}.{}",
                    t.map(|t| t.db.as_str()).unwrap_or_default(),
                    t.map(|t| t.name.as_str()).unwrap_or_default(),
                    t.and_then(|t| t.names.get(column).cloned())
                        .unwrap_or_else(|| format!("#{}", column + 1))
                ),
                at: format!("{}:{}", self.file, h.offset()),
                source,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gtid_dump_encodes_the_executed_set() {
        let cmd = mysql_gtid_dump(7, "3e11fa47-71ca-11e1-9e33-c80aa9429562:42").expect("cmd");
        assert_eq!(cmd.len(), 1 + 2 + 4 + 4 + 8 + 4 + 48);
        assert_eq!(cmd[0], 0x1e);
        assert_eq!(&cmd[3..7], &7u32.to_le_bytes());
        assert_eq!(&cmd[23..31], &1u64.to_le_bytes());
        assert_eq!(&cmd[31..35], &[0x3e, 0x11, 0xfa, 0x47]);
        assert_eq!(
            &cmd[63..71],
            &43u64.to_le_bytes(),
            "interval end is exclusive"
        );
        assert!(mysql_gtid_dump(7, "0-1-42").is_none());
        assert_eq!(register_replica(9).len(), 18);
    }

    #[test]
    fn header_offsets() {
        let mut b = vec![0u8; 19];
        b[4] = 16;
        b[9..13].copy_from_slice(&31u32.to_le_bytes());
        b[13..17].copy_from_slice(&1000u32.to_le_bytes());
        let h = Header::parse(&b).expect("header");
        assert_eq!(h.type_code, 16);
        assert_eq!(h.offset(), 969);
        assert!(Header::parse(&b[..18]).is_none());
    }
}
