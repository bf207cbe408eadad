//! The blocking binlog reader thread.
//!
//! Reads packets from the crate's channel (reassembling packets split at 16 MB), parses the
//! event header itself, and handles each event type: GTID/BEGIN open a transaction (its
//! start offset is the position of every row event in it), table maps are cached by table
//! id and raw bytes (an `Arc<TableSchema>` is built once per map, not per row), rows events
//! are decoded by `rows.rs`, Xid / COMMIT / DDL end the transaction with a `Boundary`.
//!
//! Events of a transaction are buffered up to [`FLUSH_AT`] and then streamed through, so a
//! `ROLLBACK` query event (written only when non-transactional tables were touched) can
//! drop a small transaction whole. Sending uses `blocking_send` semantics (backpressure)
//! but also leaves when the source is cancelled. The stop flag is checked on every packet;
//! heartbeats bound how long an idle stream takes to notice it.

use super::charset::CollationMap;
use super::ddl::{classify, Statement};
use super::error::{cdc, MysqlError};
use super::rows::{self, RowsError, RowsKind};
use super::sql::{parse_err, SqlConn};
use super::table::{self, BuildContext, SchemaInfo, TableInfo};
use super::validate;
use crate::config::MysqlSourceConfig;
use crate::event::{ChangeEvent, Op, SourceInfo};
use crate::filter::Filter;
use crate::position::{MysqlPosition, Position};
use crate::source::{SourceContext, SourceMessage};
use mysql_cdc::binlog_client::BinlogClient;
use mysql_cdc::binlog_events::BinlogEvents;
use mysql_cdc::binlog_options::BinlogOptions;
use mysql_cdc::events::table_map_event::TableMapEvent;
use mysql_cdc::replica_options::ReplicaOptions;
use mysql_cdc::ssl_mode::SslMode;
use std::collections::HashMap;
use std::io::Cursor;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{error::TrySendError, Sender};
use tokio_util::sync::CancellationToken;

/// Events buffered per transaction before they are streamed through.
const FLUSH_AT: usize = 1024;
/// Transactions without captured changes between two idle checkpoints.
const EMPTY_TX_BOUNDARY: u64 = 1000;

pub(super) struct Args {
    pub cfg: MysqlSourceConfig,
    pub password: String,
    pub info: Arc<SourceInfo>,
    pub ctx: SourceContext,
    pub stop: Arc<AtomicBool>,
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
}

struct Reader {
    info: Arc<SourceInfo>,
    filter: Arc<Filter>,
    tx_out: Sender<SourceMessage>,
    cancel: CancellationToken,
    stop: Arc<AtomicBool>,
    handle: tokio::runtime::Handle,
    sql_client: BinlogClient,
    sql: Option<SqlConn>,
    mariadb: bool,
    metadata_full: bool,
    collations: CollationMap,
    crc: bool,
    file: String,
    resume: Option<MysqlPosition>,
    tables: HashMap<u64, (Vec<u8>, Arc<TableInfo>)>,
    schemas: HashMap<(String, String), Option<Arc<SchemaInfo>>>,
    tx: Tx,
    pending: Vec<SourceMessage>,
    idle_boundary: Option<MysqlPosition>,
    empty_txs: u64,
}

fn options(cfg: &MysqlSourceConfig, password: &str, binlog: BinlogOptions) -> ReplicaOptions {
    ReplicaOptions {
        port: cfg.port,
        hostname: cfg.host.clone(),
        ssl_mode: SslMode::Disabled,
        username: cfg.user.clone(),
        password: password.to_owned(),
        database: cfg.database.clone(),
        server_id: cfg.server_id(),
        blocking: true,
        heartbeat_interval: cfg.heartbeat,
        binlog,
    }
}

/// Fails fast (with the configured timeout) when the server is unreachable; the crate's
/// own connect has no timeout.
fn reachable(cfg: &MysqlSourceConfig) -> Result<(), MysqlError> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let err = |source| MysqlError::Connect {
        addr: addr.clone(),
        source,
    };
    let addrs: Vec<_> = addr.to_socket_addrs().map_err(err)?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, cfg.connect_timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(err(last))
}

fn with_user(e: MysqlError, user: &str) -> MysqlError {
    match e {
        MysqlError::Auth { code, message, .. } => MysqlError::Auth {
            user: user.to_owned(),
            code,
            message,
        },
        e => e,
    }
}

pub(super) fn run(a: Args) -> Result<(), MysqlError> {
    let Args {
        cfg,
        password,
        info,
        ctx,
        stop,
        handle,
    } = a;
    reachable(&cfg)?;
    let sql_client = BinlogClient::new(options(&cfg, &password, BinlogOptions::from_end()));
    let mut sql = SqlConn::connect(&sql_client).map_err(|e| with_user(e, &cfg.user))?;
    let server = validate::validate(&mut sql, &cfg.user)?;
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
    if let Some(r) = &resume {
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
    let start = match &resume {
        Some(r) => {
            BinlogOptions::from_position(r.file.clone(), u32::try_from(r.pos).unwrap_or(u32::MAX))
        }
        None => {
            let rs = sql.query("SHOW MASTER STATUS")?;
            match (
                rs.text(0, 0),
                rs.text(0, 1).and_then(|p| p.parse::<u64>().ok()),
            ) {
                (Some(file), Some(pos)) => {
                    initial = Some(MysqlPosition {
                        file: file.clone(),
                        pos,
                        ordinal: 0,
                        gtid: None,
                    });
                    BinlogOptions::from_position(file, u32::try_from(pos).unwrap_or(u32::MAX))
                }
                _ => BinlogOptions::from_end(),
            }
        }
    };
    let mut client = BinlogClient::new(options(&cfg, &password, start));
    let mut events = client
        .replicate()
        .map_err(|e| with_user(cdc("starting the binlog dump", e), &cfg.user))?;
    let crc = format!("{:?}", events.parser.checksum_type) == "Crc32";
    tracing::info!(
        source = %cfg.name,
        server = %server.version,
        server_id = cfg.server_id(),
        resume = ?resume.as_ref().map(|r| format!("{}:{}#{}", r.file, r.pos, r.ordinal)),
        metadata_full = server.metadata_full,
        "mysql binlog stream started"
    );
    ctx.report.streaming();
    let mut reader = Reader {
        filter: ctx.filter.clone(),
        tx_out: ctx.tx.clone(),
        cancel: ctx.cancel.clone(),
        info,
        stop,
        handle,
        sql_client,
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
        schemas: HashMap::new(),
        tx: Tx::default(),
        pending: Vec::with_capacity(FLUSH_AT),
        idle_boundary: None,
        empty_txs: 0,
    };
    let started = match initial {
        Some(p) => send(
            &reader.tx_out,
            &reader.handle,
            &reader.cancel,
            SourceMessage::Boundary(Position::Mysql(p)),
        )
        .and_then(|()| reader.pump(&mut events)),
        None => reader.pump(&mut events),
    };
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
    pending: &mut Vec<SourceMessage>,
    out: &Sender<SourceMessage>,
    handle: &tokio::runtime::Handle,
    cancel: &CancellationToken,
) -> Result<(), Halt> {
    for m in pending.drain(..) {
        send(out, handle, cancel, m)?;
    }
    Ok(())
}

fn read_packet(events: &mut BinlogEvents) -> Result<Vec<u8>, MysqlError> {
    let io = |source: std::io::Error| {
        let context = if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            "waiting for binlog events (no heartbeat from the server within heartbeat + 10s)"
        } else {
            "reading binlog events"
        };
        MysqlError::Io { context, source }
    };
    let (mut p, _) = events.channel.read_packet().map_err(io)?;
    let mut last = p.len();
    while last == 0xFF_FFFF {
        let (next, _) = events.channel.read_packet().map_err(io)?;
        last = next.len();
        p.extend_from_slice(&next);
    }
    Ok(p)
}

impl Reader {
    fn pump(&mut self, events: &mut BinlogEvents) -> Result<(), Halt> {
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
            4 => {
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
            34 | 42 => self.begin_tx(h, None),
            // XA_PREPARE: the prepared transaction's rows are final in the binlog.
            38 => {
                tracing::warn!(file = %self.file, pos = h.offset(), "xa transaction prepared: its changes are emitted now, a later XA ROLLBACK cannot retract them");
                self.commit(u64::from(h.log_pos), false)?;
            }
            // HEARTBEAT (v1, v2): idle.
            27 | 41 => {
                if let Some(b) = self.idle_boundary.take() {
                    self.empty_txs = 0;
                    send(
                        &self.tx_out,
                        &self.handle,
                        &self.cancel,
                        SourceMessage::Boundary(Position::Mysql(b)),
                    )?;
                }
            }
            26 => {
                return Err(MysqlError::Incident {
                    file: self.file.clone(),
                    pos: h.offset(),
                }
                .into());
            }
            39 => {
                return Err(self.unsupported(
                    h,
                    "PARTIAL_UPDATE_ROWS_EVENT",
                    "binlog_row_value_options='' (no PARTIAL_JSON)",
                ))
            }
            40 => {
                return Err(self.unsupported(
                    h,
                    "TRANSACTION_PAYLOAD_EVENT",
                    "binlog_transaction_compression=OFF",
                ))
            }
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
            15 | 5 | 13 | 14 | 29 | 35 | 36 | 37 | 160 | 161 | 163 | 164 | 3 => self.passed(h),
            other => {
                tracing::debug!(event_type = other, file = %self.file, pos = h.offset(), "skipping unknown binlog event");
                self.passed(h);
            }
        }
        Ok(())
    }

    /// An event outside any transaction (binlog checkpoint, GTID list, ...): the idle
    /// checkpoint may move past it, so a position taken after it is reached too.
    fn passed(&mut self, h: &Header) {
        if self.tx.start.is_some() || h.log_pos == 0 {
            return;
        }
        let pos = MysqlPosition {
            file: self.file.clone(),
            pos: u64::from(h.log_pos),
            ordinal: 0,
            gtid: None,
        };
        if !self.skipped(&pos) {
            self.idle_boundary = Some(pos);
        }
    }

    fn begin_tx(&mut self, h: &Header, gtid: Option<String>) {
        self.tx = Tx {
            start: Some(h.offset()),
            ts_ms: Some(i64::from(h.timestamp) * 1000),
            gtid,
            ..Tx::default()
        };
        self.pending.clear();
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
        flush(&mut self.pending, &self.tx_out, &self.handle, &self.cancel)?;
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
            self.idle_boundary = None;
            self.empty_txs = 0;
            send(
                &self.tx_out,
                &self.handle,
                &self.cancel,
                SourceMessage::Boundary(Position::Mysql(pos)),
            )?;
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
                self.pending.clear();
                self.tx.emitted = 0;
                self.commit(u64::from(h.log_pos), false)?;
            }
            Statement::Savepoint => {}
            Statement::Xa(kind) => match kind.as_str() {
                "START" | "BEGIN" => {
                    if self.tx.start.is_none() {
                        self.begin_tx(h, None);
                    }
                    self.tx.in_begin = true;
                }
                "COMMIT" | "ROLLBACK" => {
                    if self.tx.emitted > 0 && kind == "ROLLBACK" {
                        self.pending.clear();
                        self.tx.emitted = 0;
                    }
                    self.commit(u64::from(h.log_pos), false)?
                }
                _ => {}
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
                    self.pending.push(SourceMessage::Change(ChangeEvent {
                        op: Op::Truncate,
                        table: schema,
                        before: None,
                        after: None,
                        position: Position::Mysql(position),
                        txid: None,
                        commit_ts_ms: self.tx.ts_ms,
                    }));
                    self.tx.emitted += 1;
                }
                if !self.tx.in_begin {
                    self.commit(u64::from(h.log_pos), true)?;
                }
            }
            Statement::Other => {
                // DDL: names, keys and table ids may have changed.
                self.schemas.clear();
                self.tables.clear();
                tracing::debug!(file = %self.file, pos = h.offset(), "schema change: table caches dropped");
                if !self.tx.in_begin {
                    self.commit(u64::from(h.log_pos), true)?;
                }
            }
        }
        Ok(())
    }

    fn schema_info(
        &mut self,
        db: &str,
        table: &str,
    ) -> Result<Option<Arc<SchemaInfo>>, MysqlError> {
        let key = (db.to_owned(), table.to_owned());
        if let Some(s) = self.schemas.get(&key) {
            return Ok(s.clone());
        }
        if self.sql.is_none() {
            self.sql = Some(SqlConn::connect(&self.sql_client)?);
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
        self.schemas.insert(key, loaded.clone());
        Ok(loaded)
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
        let tm =
            TableMapEvent::parse(&mut Cursor::new(body)).map_err(|e| MysqlError::Malformed {
                file: self.file.clone(),
                pos: h.offset(),
                message: format!("table map: {}", super::error::CdcError(e)),
            })?;
        let selected = self
            .filter
            .table_selected(&tm.database_name, &tm.table_name);
        let long_text = tm
            .column_types
            .iter()
            .zip(&tm.column_metadata)
            .any(|(&t, &m)| t == 252 && m == 4);
        let info = if selected
            && (!self.metadata_full || tm.table_metadata.is_none() || (self.mariadb && long_text))
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
        let t = table::build(
            &tm,
            table::signedness_bitmap(body),
            info.as_deref(),
            selected,
            &cx,
        )?;
        self.tables.insert(id, (body.to_vec(), Arc::new(t)));
        Ok(())
    }

    fn on_rows(&mut self, h: &Header, body: &[u8], kind: RowsKind) -> Result<(), Halt> {
        let v2 = matches!(h.type_code, 30..=32);
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
        if self.tx.start.is_none() {
            self.begin_tx(h, None);
        }
        let op = match kind {
            RowsKind::Write => Op::Create,
            RowsKind::Update => Op::Update,
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
        let pending = &mut self.pending;
        let (out, handle, cancel) = (&self.tx_out, &self.handle, &self.cancel);
        let result = rows::for_each_row(body, v2, kind, &t, |before, after| {
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
            pending.push(SourceMessage::Change(ChangeEvent {
                op,
                table,
                before,
                after,
                position: Position::Mysql(position),
                txid: None,
                commit_ts_ms: ts,
            }));
            emitted += 1;
            if pending.len() >= FLUSH_AT {
                flushed = true;
                flush(pending, out, handle, cancel)?;
            }
            Ok::<(), Halt>(())
        });
        self.tx.emitted += emitted;
        self.tx.flushed |= flushed;
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
