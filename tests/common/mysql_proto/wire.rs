//! MySQL wire framing for the protocol test server: packets with sequence ids, OK / ERR /
//! EOF, text result sets (the client does not ask for `CLIENT_DEPRECATE_EOF`, so result
//! sets end with EOF packets, as logtide's SQL client and `mysql_cdc` expect).

use openssl::ssl::{SslAcceptor, SslStream};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

/// The server status flag `SERVER_STATUS_AUTOCOMMIT`.
const AUTOCOMMIT: u16 = 0x0002;
/// Column type `MYSQL_TYPE_VAR_STRING`.
const VAR_STRING: u8 = 253;
/// Collation `utf8mb4_0900_ai_ci`.
const UTF8MB4: u16 = 255;

/// A client's socket, plain or (after an SSLRequest) TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
    /// Only while the TLS handshake owns the socket.
    Gone,
}

impl Stream {
    /// Shuts the socket down (a dropped connection, whether or not TLS is on it).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown(how),
            Stream::Tls(s) => s.get_ref().shutdown(how),
            Stream::Gone => Ok(()),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Gone => Ok(()),
        }
    }
}

/// One client connection with the sequence id of the next packet the server writes.
pub struct Conn {
    pub stream: Stream,
    seq: u8,
    /// The connection id the handshake gave the client (set at login).
    pub id: u64,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream: Stream::Plain(stream),
            seq: 0,
            id: 0,
        }
    }

    /// The TLS handshake after the client's SSLRequest; later packets go through TLS.
    pub fn upgrade(&mut self, acceptor: &SslAcceptor) -> io::Result<()> {
        let Stream::Plain(plain) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(io::Error::other("TLS requested twice"));
        };
        let tls = acceptor
            .accept(plain)
            .map_err(|e| io::Error::other(format!("TLS handshake: {e}")))?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Reads one packet; the next packet written answers it (sequence id + 1).
    pub fn read(&mut self) -> io::Result<Vec<u8>> {
        let mut h = [0u8; 4];
        self.stream.read_exact(&mut h)?;
        let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
        let mut p = vec![0u8; len];
        self.stream.read_exact(&mut p)?;
        self.seq = h[3].wrapping_add(1);
        Ok(p)
    }

    /// Starts a new command phase: the server's first packet has sequence id 0.
    pub fn reset(&mut self) {
        self.seq = 0;
    }

    /// Writes one payload (split at 16 MB like a server does).
    pub fn write(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut rest = payload;
        loop {
            let n = rest.len().min(0xFF_FFFF);
            let len = (n as u32).to_le_bytes();
            let mut buf = Vec::with_capacity(4 + n);
            buf.extend_from_slice(&len[..3]);
            buf.push(self.seq);
            buf.extend_from_slice(&rest[..n]);
            self.stream.write_all(&buf)?;
            self.seq = self.seq.wrapping_add(1);
            rest = &rest[n..];
            if n < 0xFF_FFFF {
                return Ok(());
            }
        }
    }

    pub fn ok(&mut self) -> io::Result<()> {
        self.write(&ok_packet())
    }

    pub fn err(&mut self, code: u16, state: &str, message: &str) -> io::Result<()> {
        self.write(&err_packet(code, state, message))
    }

    pub fn eof(&mut self) -> io::Result<()> {
        let mut p = vec![0xFE];
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend_from_slice(&AUTOCOMMIT.to_le_bytes());
        self.write(&p)
    }

    /// A text result set: every column a VARCHAR, every cell text or NULL.
    pub fn result_set(&mut self, columns: &[&str], rows: &[Vec<Option<String>>]) -> io::Result<()> {
        let mut p = Vec::new();
        put_lenenc(&mut p, columns.len() as u64);
        self.write(&p)?;
        for c in columns {
            let mut d = Vec::new();
            for s in ["def", "", "", "", c, c] {
                put_lenenc_str(&mut d, s.as_bytes());
            }
            d.push(0x0c);
            d.extend_from_slice(&UTF8MB4.to_le_bytes());
            d.extend_from_slice(&1024u32.to_le_bytes());
            d.push(VAR_STRING);
            d.extend_from_slice(&0u16.to_le_bytes());
            d.push(0);
            d.extend_from_slice(&[0, 0]);
            self.write(&d)?;
        }
        self.eof()?;
        for r in rows {
            let mut p = Vec::new();
            for cell in r {
                match cell {
                    Some(s) => put_lenenc_str(&mut p, s.as_bytes()),
                    None => p.push(0xFB),
                }
            }
            self.write(&p)?;
        }
        self.eof()
    }
}

pub fn ok_packet() -> Vec<u8> {
    let mut p = vec![0x00, 0x00, 0x00];
    p.extend_from_slice(&AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    p
}

pub fn err_packet(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xFF];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

pub fn put_lenenc(p: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => p.push(n as u8),
        251..=0xFFFF => {
            p.push(0xFC);
            p.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            p.push(0xFD);
            p.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            p.push(0xFE);
            p.extend_from_slice(&n.to_le_bytes());
        }
    }
}

pub fn put_lenenc_str(p: &mut Vec<u8>, s: &[u8]) {
    put_lenenc(p, s.len() as u64);
    p.extend_from_slice(s);
}

/// Reads a length-encoded integer at `*pos`.
pub fn lenenc(p: &[u8], pos: &mut usize) -> Option<u64> {
    let b = *p.get(*pos)?;
    let (n, v) = match b {
        0..=0xFA => (1, u64::from(b)),
        0xFC => (
            3,
            u64::from(u16::from_le_bytes([*p.get(*pos + 1)?, *p.get(*pos + 2)?])),
        ),
        0xFD => (
            4,
            u64::from(u32::from_le_bytes([
                *p.get(*pos + 1)?,
                *p.get(*pos + 2)?,
                *p.get(*pos + 3)?,
                0,
            ])),
        ),
        0xFE => {
            let b = p.get(*pos + 1..*pos + 9)?;
            (9, u64::from_le_bytes(b.try_into().ok()?))
        }
        _ => return None,
    };
    *pos += n;
    Some(v)
}

/// A NUL-terminated string at `*pos`.
pub fn nul_str<'a>(p: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = p.get(*pos..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    *pos += end + 1;
    Some(&rest[..end])
}
