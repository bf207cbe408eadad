//! A tiny blocking SQL client (text protocol, `COM_QUERY`) over logtide's own connection
//! phase ([`super::connect`]); the binlog dump runs over the same connection type.
//!
//! Why not `mysql_async`: the source needs a handful of metadata queries (settings,
//! grants, `information_schema`) from the same blocking thread that reads the binlog;
//! ~200 lines here avoid a second protocol stack (and its build time on 2 cores), and
//! authentication failures look the same on every connection. Results are raw bytes per cell, which is what the shared type decoder
//! ([`super::types::decode_text`]) takes.
//!
//! Results are read whole ([`SqlConn::query`], for metadata) or streamed row by row
//! ([`SqlConn::query_rows`], for the backfill's one-pass tables and query mode's pages), and
//! [`ColumnDef::kind`] maps a result column to the decoder's [`Kind`] where no
//! `information_schema` description exists (query mode's arbitrary SELECTs).
//!
//! The session uses utf8mb4 (handshake collation 45).

use super::charset::Charset;
use super::connect::{Buffered, Login};
use super::error::MysqlError;
use super::tls::MysqlTls;
use super::types::Kind;
use super::wire::Framed;
use std::io;
use std::sync::Arc;

/// One column of a result set.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    pub charset: u16,
    pub column_type: u8,
    pub flags: u16,
    pub decimals: u8,
}

/// The binary "character set" (collation id 63) of byte-string columns.
const BINARY_COLLATION: u16 = 63;
const UNSIGNED_FLAG: u16 = 0x20;
const ENUM_FLAG: u16 = 0x100;
const SET_FLAG: u16 = 0x800;

impl ColumnDef {
    /// Whether the column holds byte strings (collation `binary`), not text.
    pub fn is_binary(&self) -> bool {
        self.charset == BINARY_COLLATION
    }

    /// The decoding kind of a text-protocol result column, for
    /// [`super::types::decode_text`] (the session's `character_set_results` is utf8mb4, so
    /// every text column arrives as UTF-8). `Err` names the protocol type code.
    ///
    /// Result metadata is thinner than `information_schema`: ENUM and SET members are not
    /// sent (ENUM decodes to its text, SET to its members either way), and MariaDB's JSON is
    /// a LONGTEXT here, so it decodes as text.
    pub fn kind(&self) -> Result<Kind, String> {
        let unsigned = self.flags & UNSIGNED_FLAG != 0;
        let charset = if self.is_binary() {
            Charset::Binary
        } else {
            Charset::Utf8
        };
        let fsp = self.decimals.min(6);
        let no_members = || Arc::new(Vec::new());
        Ok(match self.column_type {
            1 => Kind::Int { bytes: 1, unsigned },
            2 => Kind::Int { bytes: 2, unsigned },
            9 => Kind::Int { bytes: 3, unsigned },
            3 => Kind::Int { bytes: 4, unsigned },
            8 => Kind::Int { bytes: 8, unsigned },
            13 => Kind::Year,
            4 => Kind::Float,
            5 => Kind::Double,
            0 | 246 => Kind::Decimal {
                precision: 65,
                scale: self.decimals,
            },
            16 => Kind::Bit { bits: 64 },
            10 | 14 => Kind::Date,
            11 => Kind::Time { fsp },
            12 => Kind::DateTime { fsp },
            7 => Kind::Timestamp { fsp },
            245 => Kind::JsonText { pack_len: 4 },
            255 => Kind::Geometry { pack_len: 4 },
            242 => Kind::Vector { pack_len: 4 },
            // NULL-typed column (e.g. `SELECT NULL AS x`): every value is NULL.
            6 => Kind::Varchar {
                max_len: 0,
                charset,
            },
            15 | 253 | 254 | 247 | 248
                if self.flags & ENUM_FLAG != 0 || self.column_type == 247 =>
            {
                Kind::Enum {
                    pack_len: 1,
                    names: no_members(),
                }
            }
            15 | 253 | 254 | 248 if self.flags & SET_FLAG != 0 || self.column_type == 248 => {
                Kind::Set {
                    pack_len: 1,
                    names: no_members(),
                }
            }
            15 | 253 | 254 => Kind::Varchar {
                max_len: u16::MAX,
                charset,
            },
            249..=252 => Kind::Blob {
                pack_len: 4,
                charset,
            },
            t => return Err(format!("unknown MySQL result column type code {t}")),
        })
    }

    /// A short SQL type name for listings (`logtide discover`): the protocol type, which
    /// is coarser than the column's declared type (VARCHAR and CHAR look alike).
    pub fn type_name(&self) -> String {
        let bin = self.is_binary();
        let base = match self.column_type {
            1 => "tinyint",
            2 => "smallint",
            9 => "mediumint",
            3 => "int",
            8 => "bigint",
            13 => "year",
            4 => "float",
            5 => "double",
            0 | 246 => "decimal",
            16 => "bit",
            10 | 14 => "date",
            11 => "time",
            12 => "datetime",
            7 => "timestamp",
            245 => "json",
            255 => "geometry",
            242 => "vector",
            6 => "null",
            _ if self.flags & ENUM_FLAG != 0 => "enum",
            _ if self.flags & SET_FLAG != 0 => "set",
            15 | 253 if bin => "varbinary",
            15 | 253 => "varchar",
            254 if bin => "binary",
            254 => "char",
            249..=252 if bin => "blob",
            249..=252 => "text",
            _ => "unknown",
        };
        let mut s = base.to_owned();
        if matches!(self.column_type, 7 | 11 | 12) && self.decimals > 0 && self.decimals <= 6 {
            s.push_str(&format!("({})", self.decimals));
        }
        if matches!(self.column_type, 1 | 2 | 3 | 8 | 9) && self.flags & UNSIGNED_FLAG != 0 {
            s.push_str(" unsigned");
        }
        s
    }
}

/// A fully read result set: cells are `None` for SQL NULL.
#[derive(Debug, Clone, Default)]
pub struct ResultSet {
    pub columns: Vec<ColumnDef>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

impl ResultSet {
    /// Cell `(row, col)` as text (lossy for non-UTF-8; metadata only).
    pub fn text(&self, row: usize, col: usize) -> Option<String> {
        self.rows
            .get(row)?
            .get(col)?
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// A blocking SQL connection.
pub struct SqlConn {
    conn: Framed<Buffered>,
    /// `true` for MariaDB (from the handshake's server version).
    pub mariadb: bool,
    /// The server's id for this connection (the handshake's), what `KILL` takes.
    pub connection_id: u32,
    /// A handle on the connection's socket (see [`super::socket`]).
    socket: super::socket::Socket,
    /// A result is being read (or was abandoned) and the connection cannot take a new
    /// statement.
    mid_result: bool,
    /// The statement that reads the binlog end on this server, once known (see
    /// [`super::binlog_status`]).
    status_statement: Option<&'static str>,
}

/// The rows of one statement's result, read from the connection as they are asked for
/// (see [`SqlConn::query_rows`]).
pub struct Rows<'a> {
    conn: &'a mut SqlConn,
    /// The result's columns (empty for a statement without a result set).
    pub columns: Vec<ColumnDef>,
    sql: String,
    done: bool,
}

impl Rows<'_> {
    /// The next row (cells `None` for SQL NULL), or `None` after the last one.
    pub fn next_row(&mut self) -> Result<Option<Vec<Option<Vec<u8>>>>, MysqlError> {
        if self.done {
            return Ok(None);
        }
        let qerr = |sql: &str, code, message| MysqlError::Query {
            sql: sql.to_owned(),
            code,
            message,
        };
        let p = self.conn.read()?;
        if is_eof(&p) {
            self.done = true;
            self.conn.mid_result = false;
            return Ok(None);
        }
        if p.first() == Some(&0xFF) {
            // An error ends the result (e.g. a query killed mid-way).
            self.done = true;
            self.conn.mid_result = false;
            let (code, message) = parse_err(&p);
            return Err(qerr(&self.sql, code, message));
        }
        let mut pos = 0;
        let mut row = Vec::with_capacity(self.columns.len());
        for _ in 0..self.columns.len() {
            if p.get(pos) == Some(&0xFB) {
                pos += 1;
                row.push(None);
                continue;
            }
            let n =
                lenenc(&p, &mut pos).ok_or_else(|| qerr(&self.sql, 0, "bad row".into()))? as usize;
            let cell = pos
                .checked_add(n)
                .and_then(|end| p.get(pos..end))
                .ok_or_else(|| qerr(&self.sql, 0, "truncated row".into()))?;
            row.push(Some(cell.to_vec()));
            pos += n;
        }
        Ok(Some(row))
    }
}

/// Interrupts a connection from another thread: shuts its socket down, so a read blocked
/// on it (a long query) returns at once with an error. The connection is unusable after.
#[derive(Clone, Debug)]
pub struct Interrupt(super::socket::Socket);

impl Interrupt {
    pub fn interrupt(&self) {
        self.0.shutdown();
    }
}

/// Splits a server error packet (after the 0xFF byte) into code and message.
pub(crate) fn parse_err(packet: &[u8]) -> (u16, String) {
    let code = packet
        .get(1..3)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let mut msg = packet.get(3..).unwrap_or(&[]);
    if msg.first() == Some(&b'#') {
        msg = msg.get(6..).unwrap_or(&[]);
    }
    (code, String::from_utf8_lossy(msg).into_owned())
}

impl SqlConn {
    /// The one SQL connection to a MySQL/MariaDB source, for every caller (backfill,
    /// on-demand backfill, the lag check, the operator commands): the same connection phase
    /// as the binlog reader (TCP within `connect_timeout`, TLS per `ssl_mode`,
    /// authentication), then a `utf8mb4` session in UTC (`time_zone = '+00:00'`, so
    /// TIMESTAMP values read as they are stored in the binlog). Connects to `at`.
    pub fn open(
        cfg: &crate::config::MysqlSourceConfig,
        at: &crate::endpoint::Endpoint,
    ) -> Result<SqlConn, MysqlError> {
        let password = cfg
            .password()?
            .map(|s| s.expose().to_owned())
            .unwrap_or_default();
        let tls = MysqlTls::new(cfg, at)?;
        let mut conn = SqlConn::connect(&Login::source(cfg, at, &password), &tls)?;
        for s in ["SET NAMES utf8mb4", "SET time_zone = '+00:00'"] {
            conn.query(s)?;
        }
        Ok(conn)
    }

    /// Connects and authenticates `login`, with TLS per `tls` (see [`super::connect`]).
    /// Authentication failures name the user; with `ssl_mode = "disabled"` against a
    /// server that demands TLS the error says so ([`MysqlTls::explain`]).
    pub fn connect(login: &Login, tls: &MysqlTls) -> Result<SqlConn, MysqlError> {
        let opened = super::connect::open(login, tls).map_err(|e| tls.explain(login, e))?;
        Ok(SqlConn {
            conn: opened.conn,
            mariadb: opened.handshake.is_mariadb(),
            connection_id: opened.handshake.connection_id,
            socket: opened.socket,
            mid_result: false,
            status_statement: None,
        })
    }

    /// A handle that can interrupt this connection from another thread.
    pub fn interrupter(&self) -> Interrupt {
        Interrupt(self.socket.clone())
    }

    /// The statement that reads the binlog end here, once [`super::binlog_status`] found it.
    pub fn status_statement(&self) -> Option<&'static str> {
        self.status_statement
    }

    pub(super) fn set_status_statement(&mut self, stmt: &'static str) {
        self.status_statement = Some(stmt);
    }

    /// The connection's socket.
    pub(super) fn socket(&self) -> super::socket::Socket {
        self.socket.clone()
    }

    /// Sends one command packet (sequence id 0) without reading a response.
    pub fn send_command(&mut self, cmd: &[u8]) -> Result<(), MysqlError> {
        self.conn
            .send_command(cmd)
            .map_err(|source| MysqlError::Io {
                context: "sending a command",
                source,
            })?;
        Ok(())
    }

    /// Reads one logical packet (16 MB splits reassembled, sequence ids checked), with
    /// the raw I/O error.
    pub fn read_packet(&mut self) -> io::Result<Vec<u8>> {
        self.conn.read_packet()
    }

    fn read(&mut self) -> Result<Vec<u8>, MysqlError> {
        self.read_packet().map_err(|source| MysqlError::Io {
            context: "reading a query result",
            source,
        })
    }

    /// Runs one statement and reads its whole result (empty for statements without rows).
    pub fn query(&mut self, sql: &str) -> Result<ResultSet, MysqlError> {
        let mut rows = self.query_rows(sql)?;
        let mut all = Vec::new();
        while let Some(row) = rows.next_row()? {
            all.push(row);
        }
        let columns = rows.columns;
        Ok(ResultSet { columns, rows: all })
    }

    /// Runs one statement and returns its result as a stream of rows read from the socket
    /// one at a time ([`Rows::next_row`]), so memory stays bounded whatever the result size.
    /// The connection is busy until the last row was read; a [`Rows`] dropped before that
    /// leaves the connection unusable (the next statement fails with an i/o error instead of
    /// reading the rest of the old result).
    pub fn query_rows(&mut self, sql: &str) -> Result<Rows<'_>, MysqlError> {
        if self.mid_result {
            return Err(MysqlError::Io {
                context: "sending a query",
                source: io::Error::other(
                    "the connection is in the middle of an unread result (a row stream was dropped early)",
                ),
            });
        }
        let mut cmd = Vec::with_capacity(sql.len() + 1);
        cmd.push(0x03);
        cmd.extend_from_slice(sql.as_bytes());
        self.conn
            .send_command(&cmd)
            .map_err(|source| MysqlError::Io {
                context: "sending a query",
                source,
            })?;
        let sql_head: String = sql.chars().take(200).collect();
        let first = self.read()?;
        let qerr = |code, message| MysqlError::Query {
            sql: sql_head.clone(),
            code,
            message,
        };
        match first.first() {
            Some(0x00) => {
                return Ok(Rows {
                    conn: self,
                    columns: Vec::new(),
                    sql: sql_head,
                    done: true,
                })
            }
            Some(0xFF) => {
                let (code, message) = parse_err(&first);
                return Err(qerr(code, message));
            }
            None => return Err(qerr(0, "empty response".into())),
            _ => {}
        }
        // From here on the server sends the result whatever we do with it.
        self.mid_result = true;
        let mut pos = 0;
        let ncols = lenenc(&first, &mut pos).ok_or_else(|| qerr(0, "bad column count".into()))?;
        let mut columns = Vec::with_capacity(ncols.min(4096) as usize);
        for _ in 0..ncols {
            let p = self.read()?;
            columns.push(parse_column(&p).ok_or_else(|| qerr(0, "bad column definition".into()))?);
        }
        let eof = self.read()?;
        if !is_eof(&eof) {
            return Err(qerr(0, "expected EOF after column definitions".into()));
        }
        Ok(Rows {
            conn: self,
            columns,
            sql: sql_head,
            done: false,
        })
    }

    /// The first column of the first row, as text.
    pub fn query_value(&mut self, sql: &str) -> Result<Option<String>, MysqlError> {
        Ok(self.query(sql)?.text(0, 0))
    }
}

fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xFE) && p.len() < 9
}

/// Reads a length-encoded integer.
pub(crate) fn lenenc(p: &[u8], pos: &mut usize) -> Option<u64> {
    let b = *p.get(*pos)?;
    let (n, v) = match b {
        0..=0xFA => (1, u64::from(b)),
        0xFC => (
            3,
            u64::from(u16::from_le_bytes([*p.get(*pos + 1)?, *p.get(*pos + 2)?])),
        ),
        0xFD => (
            4,
            p.get(*pos + 1..*pos + 4)?
                .iter()
                .rev()
                .fold(0u64, |a, &x| (a << 8) | u64::from(x)),
        ),
        0xFE => (
            9,
            p.get(*pos + 1..*pos + 9)?
                .iter()
                .rev()
                .fold(0u64, |a, &x| (a << 8) | u64::from(x)),
        ),
        _ => return None,
    };
    *pos += n;
    Some(v)
}

fn lenenc_bytes<'a>(p: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let n = lenenc(p, pos)? as usize;
    let s = p.get(*pos..pos.checked_add(n)?)?;
    *pos += n;
    Some(s)
}

fn parse_column(p: &[u8]) -> Option<ColumnDef> {
    let mut pos = 0;
    for _ in 0..4 {
        lenenc_bytes(p, &mut pos)?; // catalog, schema, table, org_table
    }
    let name = String::from_utf8_lossy(lenenc_bytes(p, &mut pos)?).into_owned();
    lenenc_bytes(p, &mut pos)?; // org_name
    lenenc(p, &mut pos)?; // length of fixed fields (0x0c)
    let f = p.get(pos..pos + 10)?;
    Some(ColumnDef {
        name,
        charset: u16::from_le_bytes([f[0], f[1]]),
        column_type: f[6],
        flags: u16::from_le_bytes([f[7], f[8]]),
        decimals: f[9],
    })
}

/// Quotes an identifier with backticks.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Quotes a string literal for SQL (backslash and quote escaped).
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        match c {
            '\'' => q.push_str("''"),
            '\\' => q.push_str("\\\\"),
            '\0' => q.push_str("\\0"),
            c => q.push(c),
        }
    }
    q.push('\'');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_ints() {
        let mut pos = 0;
        assert_eq!(lenenc(&[0xFA], &mut pos), Some(250));
        let mut pos = 0;
        assert_eq!(lenenc(&[0xFC, 0x01, 0x02], &mut pos), Some(0x0201));
        assert_eq!(pos, 3);
        let mut pos = 0;
        assert_eq!(lenenc(&[0xFD, 1, 0], &mut pos), None);
    }

    #[test]
    fn result_column_kinds() {
        let col = |column_type, charset, flags, decimals| ColumnDef {
            name: "c".into(),
            charset,
            column_type,
            flags,
            decimals,
        };
        assert_eq!(
            col(8, 63, UNSIGNED_FLAG, 0).kind(),
            Ok(Kind::Int {
                bytes: 8,
                unsigned: true
            })
        );
        assert_eq!(col(8, 63, UNSIGNED_FLAG, 0).type_name(), "bigint unsigned");
        assert_eq!(col(12, 63, 0, 6).kind(), Ok(Kind::DateTime { fsp: 6 }));
        assert_eq!(col(12, 63, 0, 6).type_name(), "datetime(6)");
        assert!(matches!(
            col(253, 45, 0, 0).kind(),
            Ok(Kind::Varchar {
                charset: Charset::Utf8,
                ..
            })
        ));
        assert!(matches!(
            col(252, 63, 0, 0).kind(),
            Ok(Kind::Blob {
                charset: Charset::Binary,
                ..
            })
        ));
        assert!(matches!(
            col(254, 45, ENUM_FLAG, 0).kind(),
            Ok(Kind::Enum { .. })
        ));
        assert!(matches!(
            col(254, 45, SET_FLAG, 0).kind(),
            Ok(Kind::Set { .. })
        ));
        assert_eq!(col(254, 45, SET_FLAG, 0).type_name(), "set");
        assert!(col(200, 63, 0, 0).kind().is_err());
    }

    #[test]
    fn quoting_and_errors() {
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
        let (code, msg) = parse_err(b"\xff\x15\x04#28000Access denied");
        assert_eq!(code, 1045);
        assert_eq!(msg, "Access denied");
    }
}
