//! Backend frames and the CopyBoth stream of the replication connection.
//!
//! Owns: splitting the byte stream into backend messages (tag + length) in one growing
//! buffer and handing out borrowed frames (the hot path allocates nothing), writing
//! frontend messages, and parsing the few backend messages a replication session uses:
//! ErrorResponse/NoticeResponse, DataRow, and the CopyData payloads XLogData `w` and
//! primary keepalive `k`; plus the standby status update `r`. `Message::parse` of
//! postgres-protocol rejects CopyBothResponse `W`, so framing is done here. Does not own
//! connecting or authentication (`conn.rs`).
//!
//! <https://www.postgresql.org/docs/current/protocol-replication.html>

use super::conn::ConnError;
use crate::position::Lsn;
use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::message::frontend;
use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

const READ_CHUNK: usize = 64 * 1024;

pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An error reported by the server (ErrorResponse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// Non-localized severity (`ERROR`, `FATAL`).
    pub severity: String,
    /// SQLSTATE.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    /// What the operator should change, for the errors a misconfigured setup produces.
    pub fn fix(&self) -> Option<&'static str> {
        match self.code.as_str() {
            "28P01" => Some(
                "check the user name and the password in the environment variable named by `password_env`",
            ),
            "28000" => Some(
                "allow this user to connect in pg_hba.conf (logical replication connections match the *database* column, e.g. `host <database> <user> <address> scram-sha-256`), then reload PostgreSQL",
            ),
            "42501" => Some(
                "give the role the REPLICATION attribute (`ALTER ROLE <user> REPLICATION;`) or connect as a superuser",
            ),
            "3D000" => Some("create the database or fix `database` in the source's config"),
            "53300" => Some("the server has no free connection slots (max_connections / max_wal_senders)"),
            _ => None,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PostgreSQL {} {}: {}",
            self.severity, self.code, self.message
        )?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        if let Some(fix) = self.fix() {
            write!(f, ": {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

pub(super) fn read_cstr<'a>(buf: &mut &'a [u8]) -> Option<&'a str> {
    let nul = buf.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(buf.get(..nul)?).ok()?;
    *buf = buf.get(nul + 1..)?;
    Some(s)
}

pub(super) fn read_i32(buf: &mut &[u8]) -> Option<i32> {
    let v: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    *buf = buf.get(4..)?;
    Some(i32::from_be_bytes(v))
}

pub(super) fn read_u64(buf: &mut &[u8]) -> Option<u64> {
    let v: [u8; 8] = buf.get(..8)?.try_into().ok()?;
    *buf = buf.get(8..)?;
    Some(u64::from_be_bytes(v))
}

/// Parses an ErrorResponse/NoticeResponse body.
pub fn parse_error_fields(mut body: &[u8]) -> ServerError {
    let mut e = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    let mut localized = String::new();
    while let Some((&t, rest)) = body.split_first() {
        if t == 0 {
            break;
        }
        body = rest;
        let Some(v) = read_cstr(&mut body) else { break };
        match t {
            b'S' => localized = v.to_owned(),
            b'V' => e.severity = v.to_owned(),
            b'C' => e.code = v.to_owned(),
            b'M' => e.message = v.to_owned(),
            b'D' => e.detail = Some(v.to_owned()),
            b'H' => e.hint = Some(v.to_owned()),
            _ => {}
        }
    }
    if e.severity.is_empty() {
        e.severity = localized;
    }
    e
}

/// One CopyBoth message from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMessage<'a> {
    XLogData {
        wal_start: u64,
        wal_end: u64,
        send_time: i64,
        data: &'a [u8],
    },
    Keepalive {
        wal_end: u64,
        send_time: i64,
        reply_requested: bool,
    },
    /// The server ended the stream.
    CopyDone,
}

/// Parses the body of a CopyData message of a replication stream.
pub fn parse_copy_data(body: &[u8]) -> Result<CopyMessage<'_>, ConnError> {
    let (&kind, mut rest) = body
        .split_first()
        .ok_or(ConnError::Protocol("empty CopyData"))?;
    match kind {
        b'w' => {
            let bad = ConnError::Protocol("truncated XLogData header");
            let wal_start =
                read_u64(&mut rest).ok_or(ConnError::Protocol("truncated XLogData header"))?;
            let wal_end =
                read_u64(&mut rest).ok_or(ConnError::Protocol("truncated XLogData header"))?;
            let send_time = read_u64(&mut rest).ok_or(bad)? as i64;
            Ok(CopyMessage::XLogData {
                wal_start,
                wal_end,
                send_time,
                data: rest,
            })
        }
        b'k' => {
            let bad = || ConnError::Protocol("truncated primary keepalive");
            let wal_end = read_u64(&mut rest).ok_or_else(bad)?;
            let send_time = read_u64(&mut rest).ok_or_else(bad)? as i64;
            let reply = *rest.first().ok_or_else(bad)?;
            Ok(CopyMessage::Keepalive {
                wal_end,
                send_time,
                reply_requested: reply == 1,
            })
        }
        _ => Err(ConnError::Protocol(
            "unknown CopyData message in replication stream",
        )),
    }
}

/// The read half: backend frames out of one buffer.
pub struct FrameReader {
    io: ReadHalf<Box<dyn Io>>,
    buf: BytesMut,
    /// Length of the frame handed out last, dropped on the next call.
    consumed: usize,
}

impl FrameReader {
    pub(super) fn new(io: ReadHalf<Box<dyn Io>>) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(2 * READ_CHUNK),
            consumed: 0,
        }
    }

    /// The next complete frame already in the buffer (tag, body), without reading.
    pub fn buffered_frame(&mut self) -> Result<Option<(u8, &[u8])>, ConnError> {
        if self.consumed > 0 {
            self.buf.advance(self.consumed);
            self.consumed = 0;
        }
        let Some(head) = self.buf.get(..5) else {
            return Ok(None);
        };
        let tag = head[0];
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l >= 4)
            .ok_or(ConnError::Protocol("invalid message length"))?;
        let total = 1 + len;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.consumed = total;
        Ok(Some((tag, &self.buf[5..total])))
    }

    /// Reads more bytes from the socket (cancel safe: one `read_buf`).
    pub async fn read_more(&mut self) -> Result<(), ConnError> {
        if self.consumed > 0 {
            self.buf.advance(self.consumed);
            self.consumed = 0;
        }
        let want = match self.buf.get(1..5) {
            Some(l) => {
                let len = i32::from_be_bytes([l[0], l[1], l[2], l[3]]).max(0) as usize;
                (1 + len).saturating_sub(self.buf.len()).max(READ_CHUNK)
            }
            None => READ_CHUNK,
        };
        self.buf.reserve(want);
        let n = self
            .io
            .read_buf(&mut self.buf)
            .await
            .map_err(ConnError::Io)?;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        Ok(())
    }

    /// The next frame, reading as needed. Not cancel safe across the returned borrow, but
    /// the buffer state is kept in `self`, so cancelling the future loses nothing.
    pub async fn next_frame(&mut self) -> Result<(u8, &[u8]), ConnError> {
        loop {
            if self.buffered_frame()?.is_some() {
                break;
            }
            self.read_more().await?;
        }
        // Re-borrow the frame `buffered_frame` found (it set `consumed`).
        let total = self.consumed;
        let tag = self.buf[0];
        Ok((tag, &self.buf[5..total]))
    }
}

/// The write half.
pub struct FrameWriter {
    io: WriteHalf<Box<dyn Io>>,
    pub(super) buf: BytesMut,
}

impl FrameWriter {
    pub(super) fn new(io: WriteHalf<Box<dyn Io>>) -> Self {
        FrameWriter {
            io,
            buf: BytesMut::with_capacity(1024),
        }
    }

    pub(super) async fn flush_buf(&mut self) -> Result<(), ConnError> {
        self.io.write_all(&self.buf).await.map_err(ConnError::Io)?;
        self.buf.clear();
        self.io.flush().await.map_err(ConnError::Io)
    }

    /// Sends a standby status update (`r`). `write`: last received; `flush` = `apply`: the
    /// last durable checkpoint (0 means "unknown" and is ignored by the server).
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        reply: bool,
    ) -> Result<(), ConnError> {
        let now = super::pgoutput::unix_to_pg_timestamp(std::time::SystemTime::now());
        self.buf.put_u8(b'd');
        self.buf.put_i32(4 + 34);
        self.buf.put_u8(b'r');
        self.buf.put_u64(write.0);
        self.buf.put_u64(flush.0);
        self.buf.put_u64(flush.0);
        self.buf.put_i64(now);
        self.buf.put_u8(u8::from(reply));
        self.flush_buf().await
    }

    pub async fn send_query(&mut self, sql: &str) -> Result<(), ConnError> {
        frontend::query(sql, &mut self.buf).map_err(ConnError::Io)?;
        self.flush_buf().await
    }

    pub async fn copy_done(&mut self) -> Result<(), ConnError> {
        frontend::copy_done(&mut self.buf);
        self.flush_buf().await
    }

    pub async fn terminate(&mut self) -> Result<(), ConnError> {
        frontend::terminate(&mut self.buf);
        self.flush_buf().await
    }
}

/// Reads one CopyBoth frame (tag, body) into a [`CopyMessage`]; `None` for notices.
pub fn parse_copy_frame(tag: u8, body: &[u8]) -> Result<Option<CopyMessage<'_>>, ConnError> {
    match tag {
        b'd' => parse_copy_data(body).map(Some),
        b'c' => Ok(Some(CopyMessage::CopyDone)),
        b'N' => {
            log_notice(body);
            Ok(None)
        }
        b'E' => Err(ConnError::Server(parse_error_fields(body))),
        b'C' | b'Z' => Ok(Some(CopyMessage::CopyDone)),
        other => Err(ConnError::Unexpected {
            tag: other as char,
            during: "streaming",
        }),
    }
}

pub(super) fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, ConnError> {
    let bad = || ConnError::Protocol("malformed DataRow");
    let mut b = body;
    let n: [u8; 2] = b.get(..2).and_then(|s| s.try_into().ok()).ok_or_else(bad)?;
    b = &b[2..];
    let n = i16::from_be_bytes(n).max(0) as usize;
    let mut row = Vec::with_capacity(n);
    for _ in 0..n {
        let len = read_i32(&mut b).ok_or_else(bad)?;
        if len < 0 {
            row.push(None);
            continue;
        }
        let v = b.get(..len as usize).ok_or_else(bad)?;
        b = &b[len as usize..];
        row.push(Some(String::from_utf8_lossy(v).into_owned()));
    }
    Ok(row)
}

pub(super) fn log_notice(body: &[u8]) {
    let n = parse_error_fields(body);
    tracing::info!(severity = %n.severity, code = %n.code, message = %n.message, "postgresql notice");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_and_fix() {
        let mut b = Vec::new();
        for (t, v) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"u\""),
        ] {
            b.push(t);
            b.extend(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        let e = parse_error_fields(&b);
        assert_eq!(e.code, "28P01");
        let s = ConnError::Server(e.clone()).to_string();
        assert!(s.contains("28P01") && s.contains("password_env"), "{s}");
        assert!(!ConnError::Server(e).is_transient());
        // Truncated fields do not panic.
        for cut in 0..b.len() {
            let _ = parse_error_fields(&b[..cut]);
        }
    }

    #[test]
    fn copy_data_messages() {
        let mut k = vec![b'k'];
        k.extend(0x10u64.to_be_bytes());
        k.extend(5i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            parse_copy_data(&k).expect("keepalive"),
            CopyMessage::Keepalive {
                wal_end: 0x10,
                send_time: 5,
                reply_requested: true
            }
        );
        let mut w = vec![b'w'];
        w.extend(1u64.to_be_bytes());
        w.extend(2u64.to_be_bytes());
        w.extend(3i64.to_be_bytes());
        w.extend(b"B...");
        assert_eq!(
            parse_copy_data(&w).expect("xlogdata"),
            CopyMessage::XLogData {
                wal_start: 1,
                wal_end: 2,
                send_time: 3,
                data: b"B..."
            }
        );
        for f in [&k, &w] {
            for cut in 0..17.min(f.len()) {
                assert!(parse_copy_data(&f[..cut]).is_err());
            }
        }
        assert!(parse_copy_data(b"?").is_err());
    }

    #[test]
    fn data_rows() {
        let mut b = 2i16.to_be_bytes().to_vec();
        b.extend(2i32.to_be_bytes());
        b.extend(b"ab");
        b.extend((-1i32).to_be_bytes());
        assert_eq!(
            parse_data_row(&b).expect("row"),
            vec![Some("ab".into()), None]
        );
        for cut in 0..b.len() {
            assert!(parse_data_row(&b[..cut]).is_err());
        }
    }
}
