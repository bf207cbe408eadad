//! A tiny blocking SQL client (text protocol, `COM_QUERY`) over `mysql_cdc`'s own
//! connection and authentication code.
//!
//! Why not `mysql_async`: the source needs a handful of metadata queries (settings,
//! grants, `information_schema`) from the same blocking thread that reads the binlog; the
//! crate already does the handshake and auth, so ~200 lines here avoid a second protocol
//! stack (and its build time on 2 cores), and authentication failures look the same on
//! both connections. Results are raw bytes per cell, which is what the shared type decoder
//! ([`super::types::decode_text`]) takes.
//!
//! The session uses utf8mb4 (the crate's handshake collation 45).

use super::error::{cdc, MysqlError};
use mysql_cdc::binlog_client::BinlogClient;
use std::io;

/// One column of a result set.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    pub charset: u16,
    pub column_type: u8,
    pub flags: u16,
    pub decimals: u8,
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

enum Op<'a> {
    Read,
    Write(&'a [u8], u8),
}

type Chan = Box<dyn FnMut(Op<'_>) -> io::Result<Vec<u8>> + Send>;

/// A blocking SQL connection.
pub struct SqlConn {
    chan: Chan,
    /// `true` for MariaDB (from the handshake's server version).
    pub mariadb: bool,
    /// The connection's socket, when it could be identified (see [`super::socket`]).
    socket: Option<super::socket::Socket>,
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
    /// Connects and authenticates with the crate's handshake, through the TLS proxy unless
    /// `tls` is `disabled` (see [`super::tls`]).
    /// Sets `TCP_NODELAY` on the crate's socket when it can be found.
    pub fn connect(
        client: &BinlogClient,
        tls: &super::tls::MysqlTls,
    ) -> Result<SqlConn, MysqlError> {
        let proxy = tls.start(&client.options)?;
        let proxied = proxy.as_ref().map(|p| BinlogClient::new(p.options()));
        let client = proxied.as_ref().unwrap_or(client);
        let before = super::socket::snapshot();
        let (mut channel, provider) = client
            .connect()
            .map_err(|e| tls.explain(proxy.as_ref(), &client.options, cdc("connect", e)))?;
        if let Some(p) = &proxy {
            tls.learn(p);
        }
        let socket =
            super::socket::find_new(&before, &client.options.hostname, client.options.port);
        if let Some(s) = &socket {
            s.set_nodelay();
        }
        let mariadb = format!("{provider:?}") == "MariaDB";
        let chan: Chan = Box::new(move |op| match op {
            Op::Read => channel.read_packet().map(|(p, _)| p),
            Op::Write(buf, seq) => channel.write_packet(buf, seq).map(|_| Vec::new()),
        });
        Ok(SqlConn {
            chan,
            mariadb,
            socket,
        })
    }

    /// The connection's socket, if it was identified.
    pub(super) fn socket(&self) -> Option<super::socket::Socket> {
        self.socket.clone()
    }

    /// Sends one command packet (sequence id 0) without reading a response.
    pub fn send_command(&mut self, cmd: &[u8]) -> Result<(), MysqlError> {
        (self.chan)(Op::Write(cmd, 0)).map_err(|source| MysqlError::Io {
            context: "sending a command",
            source,
        })?;
        Ok(())
    }

    /// Reads one logical packet (16 MB splits reassembled), with the raw I/O error.
    pub fn read_packet(&mut self) -> io::Result<Vec<u8>> {
        let mut p = (self.chan)(Op::Read)?;
        let mut last = p.len();
        while last == 0xFF_FFFF {
            let next = (self.chan)(Op::Read)?;
            last = next.len();
            p.extend_from_slice(&next);
        }
        Ok(p)
    }

    fn read(&mut self) -> Result<Vec<u8>, MysqlError> {
        self.read_packet().map_err(|source| MysqlError::Io {
            context: "reading a query result",
            source,
        })
    }

    /// Runs one statement and reads its whole result (empty for statements without rows).
    pub fn query(&mut self, sql: &str) -> Result<ResultSet, MysqlError> {
        let mut cmd = Vec::with_capacity(sql.len() + 1);
        cmd.push(0x03);
        cmd.extend_from_slice(sql.as_bytes());
        (self.chan)(Op::Write(&cmd, 0)).map_err(|source| MysqlError::Io {
            context: "sending a query",
            source,
        })?;
        let first = self.read()?;
        let qerr = |code, message| MysqlError::Query {
            sql: sql.chars().take(200).collect(),
            code,
            message,
        };
        match first.first() {
            Some(0x00) => return Ok(ResultSet::default()),
            Some(0xFF) => {
                let (code, message) = parse_err(&first);
                return Err(qerr(code, message));
            }
            None => return Err(qerr(0, "empty response".into())),
            _ => {}
        }
        let mut pos = 0;
        let ncols = lenenc(&first, &mut pos).ok_or_else(|| qerr(0, "bad column count".into()))?;
        let mut columns = Vec::with_capacity(ncols as usize);
        for _ in 0..ncols {
            let p = self.read()?;
            columns.push(parse_column(&p).ok_or_else(|| qerr(0, "bad column definition".into()))?);
        }
        let eof = self.read()?;
        if !is_eof(&eof) {
            return Err(qerr(0, "expected EOF after column definitions".into()));
        }
        let mut rows = Vec::new();
        loop {
            let p = self.read()?;
            if is_eof(&p) {
                break;
            }
            if p.first() == Some(&0xFF) {
                let (code, message) = parse_err(&p);
                return Err(qerr(code, message));
            }
            let mut pos = 0;
            let mut row = Vec::with_capacity(columns.len());
            for _ in 0..columns.len() {
                if p.get(pos) == Some(&0xFB) {
                    pos += 1;
                    row.push(None);
                    continue;
                }
                let n = lenenc(&p, &mut pos).ok_or_else(|| qerr(0, "bad row".into()))? as usize;
                let cell = pos
                    .checked_add(n)
                    .and_then(|end| p.get(pos..end))
                    .ok_or_else(|| qerr(0, "truncated row".into()))?;
                row.push(Some(cell.to_vec()));
                pos += n;
            }
            rows.push(row);
        }
        Ok(ResultSet { columns, rows })
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
    fn quoting_and_errors() {
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
        let (code, msg) = parse_err(b"\xff\x15\x04#28000Access denied");
        assert_eq!(code, 1045);
        assert_eq!(msg, "Access denied");
    }
}
