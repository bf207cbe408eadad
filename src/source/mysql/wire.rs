//! The MySQL client/server protocol's pure parts: packet framing (with 16 MiB splits and
//! sequence ids), the server's initial handshake, the client's handshake response and
//! SSLRequest, and the password scrambles. No I/O here besides [`Framed`], which works on
//! any `Read + Write`; the connection recipe is `connect.rs`.
//!
//! Protocol: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html>,
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html>,
//! `caching_sha2_password`:
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html>.

use std::io::{self, Read, Write};

/// The largest payload of one wire packet; a payload of this length is continued by the
/// next packet (a final shorter one, possibly empty, ends it).
pub(super) const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Capability flags (the subset logtide reads or sends).
pub(super) mod caps {
    pub const LONG_FLAG: u32 = 0x0004;
    pub const CONNECT_WITH_DB: u32 = 0x0008;
    pub const PROTOCOL_41: u32 = 0x0200;
    pub const SSL: u32 = 0x0800;
    pub const SECURE_CONNECTION: u32 = 0x8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 0x0020_0000;
}

/// utf8mb4_general_ci: the session's character set from the handshake on.
pub(super) const UTF8MB4_GENERAL_CI: u8 = 45;

/// A packet stream: reads reassemble split payloads and check sequence ids; writes split
/// payloads of 16 MiB and more. The sequence id restarts at 0 with every command
/// ([`Framed::send_command`]) and otherwise counts up (wrapping) across both directions.
pub(super) struct Framed<S> {
    stream: S,
    seq: u8,
}

fn out_of_order(expected: u8, got: u8) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("packet out of order: sequence id {got}, expected {expected}"),
    )
}

impl<S: Read + Write> Framed<S> {
    pub(super) fn new(stream: S) -> Framed<S> {
        Framed { stream, seq: 0 }
    }

    pub(super) fn get_ref(&self) -> &S {
        &self.stream
    }

    #[cfg(test)]
    pub(super) fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub(super) fn into_inner(self) -> (S, u8) {
        (self.stream, self.seq)
    }

    /// Continues on another stream (after the TLS upgrade) with the sequence id reached.
    pub(super) fn resume(stream: S, seq: u8) -> Framed<S> {
        Framed { stream, seq }
    }

    /// One logical packet (a split payload reassembled).
    pub(super) fn read_packet(&mut self) -> io::Result<Vec<u8>> {
        let mut payload = Vec::new();
        loop {
            let mut head = [0u8; 4];
            self.stream.read_exact(&mut head)?;
            let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
            if head[3] != self.seq {
                return Err(out_of_order(self.seq, head[3]));
            }
            self.seq = self.seq.wrapping_add(1);
            let start = payload.len();
            payload.resize(start + len, 0);
            self.stream.read_exact(&mut payload[start..])?;
            if len < MAX_PAYLOAD {
                return Ok(payload);
            }
        }
    }

    /// Writes one logical packet with the next sequence id(s), then flushes.
    pub(super) fn write_packet(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(payload.len() + 4 * (payload.len() / MAX_PAYLOAD + 1));
        frame_into(&mut buf, &mut self.seq, payload);
        self.stream.write_all(&buf)?;
        self.stream.flush()
    }

    /// Starts a command: sequence id 0, then the payload.
    pub(super) fn send_command(&mut self, payload: &[u8]) -> io::Result<()> {
        self.seq = 0;
        self.write_packet(payload)
    }
}

/// Appends `payload` to `out` as wire packets from sequence id `*seq` on (advanced past
/// the last one): chunks of [`MAX_PAYLOAD`], and an empty packet after a last full chunk.
pub(super) fn frame_into(out: &mut Vec<u8>, seq: &mut u8, payload: &[u8]) {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        let len = (n as u32).to_le_bytes();
        out.extend_from_slice(&len[..3]);
        out.push(*seq);
        *seq = seq.wrapping_add(1);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            return;
        }
    }
}

/// What the server's initial handshake (protocol 10) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Handshake {
    pub version: String,
    pub connection_id: u32,
    pub capabilities: u32,
    /// The authentication challenge (20 bytes from MySQL and MariaDB; the trailing NUL
    /// removed).
    pub scramble: Vec<u8>,
    /// The default authentication plugin (empty when the server names none).
    pub plugin: String,
}

impl Handshake {
    pub fn is_mariadb(&self) -> bool {
        self.version.contains("MariaDB")
    }
}

/// Why an initial handshake cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("protocol version {0} is not supported (logtide speaks protocol 10)")]
    Protocol(u8),
    #[error("the initial handshake is truncated")]
    Truncated,
    #[error("the server does not speak protocol 4.1 with secure authentication")]
    TooOld,
    #[error("unexpected packet 0x{0:02x} during authentication")]
    Unexpected(u8),
    #[error("the server's RSA public key for caching_sha2_password is unusable")]
    PublicKey(#[source] openssl::error::ErrorStack),
}

/// Parses the initial handshake (v10; MySQL and MariaDB). Needs protocol 4.1 and secure
/// connection (every server since MySQL 4.1 has both).
pub(super) fn parse_handshake(p: &[u8]) -> Result<Handshake, HandshakeError> {
    let proto = *p.first().ok_or(HandshakeError::Truncated)?;
    if proto != 10 {
        return Err(HandshakeError::Protocol(proto));
    }
    let version_len = p
        .get(1..)
        .and_then(|r| r.iter().position(|&b| b == 0))
        .ok_or(HandshakeError::Truncated)?;
    let version = String::from_utf8_lossy(&p[1..1 + version_len]).into_owned();
    let mut pos = 1 + version_len + 1;
    let id = p.get(pos..pos + 4).ok_or(HandshakeError::Truncated)?;
    let connection_id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
    pos += 4;
    let mut scramble = p
        .get(pos..pos + 8)
        .ok_or(HandshakeError::Truncated)?
        .to_vec();
    pos += 8 + 1; // filler
    let low = p.get(pos..pos + 2).ok_or(HandshakeError::Truncated)?;
    let mut capabilities = u32::from(u16::from_le_bytes([low[0], low[1]]));
    pos += 2;
    // charset (1), status (2), capabilities high (2), auth data length (1), reserved (10)
    let rest = p.get(pos..pos + 16).ok_or(HandshakeError::TooOld)?;
    capabilities |= u32::from(u16::from_le_bytes([rest[3], rest[4]])) << 16;
    let data_len = usize::from(rest[5]);
    pos += 16;
    if capabilities & caps::PROTOCOL_41 == 0 || capabilities & caps::SECURE_CONNECTION == 0 {
        return Err(HandshakeError::TooOld);
    }
    // Part 2: max(13, length - 8) bytes, the last of which is a NUL.
    let n = data_len.saturating_sub(8).max(13);
    let part2 = p.get(pos..pos + n).ok_or(HandshakeError::Truncated)?;
    pos += n;
    let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
    scramble.extend_from_slice(part2);
    let plugin = if capabilities & caps::PLUGIN_AUTH != 0 {
        // NUL-terminated; some servers omit the NUL at the end of the packet.
        let name = p.get(pos..).unwrap_or(&[]);
        let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
        String::from_utf8_lossy(name).into_owned()
    } else {
        String::new()
    };
    Ok(Handshake {
        version,
        connection_id,
        capabilities,
        scramble,
        plugin,
    })
}

/// The capabilities logtide asks for, of those the server offers: protocol 4.1, secure
/// connection, plugin auth (+ length-encoded auth data), long column flags, the database
/// when one is configured. Never `CLIENT_DEPRECATE_EOF`: the result reader expects the EOF
/// packet after the column definitions.
pub(super) fn client_capabilities(server: u32, with_db: bool) -> u32 {
    let mut c = caps::LONG_FLAG | caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;
    c |= server & caps::PLUGIN_AUTH_LENENC_DATA;
    if with_db {
        c |= caps::CONNECT_WITH_DB;
    }
    c
}

/// The 32-byte head shared by the SSLRequest and the HandshakeResponse41: capabilities,
/// max packet size (0: the server's own limit), collation, 23 reserved bytes.
fn response_head(capabilities: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(&capabilities.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.push(UTF8MB4_GENERAL_CI);
    p.extend_from_slice(&[0; 23]);
    p
}

/// The SSLRequest: the response head with `CLIENT_SSL`.
pub(super) fn ssl_request(capabilities: u32) -> Vec<u8> {
    response_head(capabilities | caps::SSL)
}

/// HandshakeResponse41.
pub(super) fn handshake_response(
    capabilities: u32,
    user: &str,
    auth: &[u8],
    database: Option<&str>,
    plugin: &str,
) -> Vec<u8> {
    let mut p = response_head(capabilities);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    if capabilities & caps::PLUGIN_AUTH_LENENC_DATA != 0 {
        put_lenenc(&mut p, auth.len() as u64);
    } else {
        // Scrambles are 20 or 32 bytes; an empty password sends none.
        p.push(u8::try_from(auth.len()).unwrap_or(u8::MAX));
    }
    p.extend_from_slice(auth);
    if let Some(db) = database.filter(|_| capabilities & caps::CONNECT_WITH_DB != 0) {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

fn put_lenenc(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// An AuthSwitchRequest (after its 0xFE byte): the plugin and its challenge.
pub(super) fn parse_auth_switch(p: &[u8]) -> Option<(String, Vec<u8>)> {
    let body = p.get(1..)?;
    let end = body.iter().position(|&b| b == 0)?;
    let plugin = String::from_utf8_lossy(&body[..end]).into_owned();
    let data = body.get(end + 1..).unwrap_or(&[]);
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    Some((plugin, data.to_vec()))
}

pub(super) const NATIVE_PASSWORD: &str = "mysql_native_password";
pub(super) const CACHING_SHA2: &str = "caching_sha2_password";

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b.iter().cycle()).map(|(x, y)| x ^ y).collect()
}

/// `mysql_native_password`: `SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))`; nothing for an
/// empty password.
pub(super) fn native_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    use openssl::sha::sha1;
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = sha1(password);
    let h2 = sha1(&h1);
    xor(&h1, &sha1(&[scramble, &h2[..]].concat()))
}

/// `caching_sha2_password`:
/// `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble)`; nothing for an empty password.
pub(super) fn sha2_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    use openssl::sha::sha256;
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = sha256(password);
    let h2 = sha256(&h1);
    xor(&h1, &sha256(&[&h2[..], scramble].concat()))
}

/// The password for `caching_sha2_password` full authentication without TLS: the
/// NUL-terminated password XOR the scramble, encrypted with the server's RSA public key
/// (PEM) with OAEP padding.
pub(super) fn rsa_encrypt_password(
    password: &[u8],
    scramble: &[u8],
    pem: &[u8],
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    use openssl::rsa::{Padding, Rsa};
    let mut clear = password.to_vec();
    clear.push(0);
    let plain = xor(&clear, scramble);
    let rsa = Rsa::public_key_from_pem(pem)?;
    let mut out = vec![0u8; rsa.size() as usize];
    let n = rsa.public_encrypt(&plain, &mut out, Padding::PKCS1_OAEP)?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A MariaDB 10.11-like initial handshake with `caps`.
    pub(crate) fn hello(caps: u32, plugin: &str) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        p
    }

    const BASE: u32 = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;

    #[test]
    fn handshake_fields() {
        let h = parse_handshake(&hello(BASE | caps::SSL, "mysql_native_password")).expect("ok");
        assert_eq!(h.version, "5.5.5-10.11.19-MariaDB");
        assert!(h.is_mariadb());
        assert_eq!(h.connection_id, 7);
        assert_eq!(h.capabilities, BASE | caps::SSL);
        assert_eq!(h.scramble, b"abcdefghijklmnopqrst");
        assert_eq!(h.plugin, NATIVE_PASSWORD);
        // No NUL after the plugin name (seen from some servers).
        let mut p = hello(BASE, CACHING_SHA2);
        p.pop();
        assert_eq!(parse_handshake(&p).expect("ok").plugin, CACHING_SHA2);
    }

    #[test]
    fn handshake_refusals() {
        use HandshakeError as E;
        let err = |p: &[u8]| parse_handshake(p).expect_err("refused");
        assert!(matches!(err(&[]), E::Truncated));
        assert!(matches!(err(&[9, b'5', 0]), E::Protocol(9)));
        assert!(matches!(err(&[10, b'5', b'.']), E::Truncated));
        let full = hello(BASE, "x");
        assert!(matches!(err(&full[..20]), E::Truncated));
        // Cut after the low capabilities: a pre-4.1 server.
        assert!(matches!(err(&full[..39]), E::TooOld));
        assert!(matches!(err(&hello(caps::PLUGIN_AUTH, "x")), E::TooOld));
        assert!(matches!(err(&full[..60]), E::Truncated));
    }

    #[test]
    fn responses() {
        let c = client_capabilities(BASE | caps::PLUGIN_AUTH_LENENC_DATA | caps::SSL, true);
        assert_eq!(
            c & caps::SSL,
            0,
            "TLS is asked for with the SSLRequest only"
        );
        assert_ne!(c & caps::PLUGIN_AUTH_LENENC_DATA, 0);
        assert_ne!(c & caps::CONNECT_WITH_DB, 0);
        assert_eq!(
            client_capabilities(BASE, false) & caps::PLUGIN_AUTH_LENENC_DATA,
            0
        );
        let req = ssl_request(c);
        assert_eq!(req.len(), 32);
        assert_eq!(
            u32::from_le_bytes([req[0], req[1], req[2], req[3]]),
            c | caps::SSL
        );
        assert_eq!(req[8], UTF8MB4_GENERAL_CI);
        let r = handshake_response(c, "u", &[7; 20], Some("db"), NATIVE_PASSWORD);
        assert_eq!(&r[..32], &response_head(c)[..]);
        let mut tail = b"u\0".to_vec();
        tail.push(20);
        tail.extend_from_slice(&[7; 20]);
        tail.extend_from_slice(b"db\0mysql_native_password\0");
        assert_eq!(&r[32..], &tail[..]);
        // Without CONNECT_WITH_DB the database is not sent.
        let r = handshake_response(BASE, "u", &[], Some("db"), NATIVE_PASSWORD);
        assert_eq!(&r[32..], b"u\0\0mysql_native_password\0");
    }

    #[test]
    fn auth_switch() {
        assert_eq!(
            parse_auth_switch(b"\xfemysql_native_password\0abcdefghijklmnopqrst\0"),
            Some((NATIVE_PASSWORD.into(), b"abcdefghijklmnopqrst".to_vec()))
        );
        assert_eq!(parse_auth_switch(b"\xfe"), None);
        assert_eq!(parse_auth_switch(b"\xfeno-nul"), None);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn scrambles_with_known_vectors() {
        // Vectors computed independently (Python hashlib) for password "secret" and the
        // scramble "abcdefghijklmnopqrst".
        let s = b"abcdefghijklmnopqrst";
        assert_eq!(
            native_scramble(b"secret", s),
            hex("8817c50fa779daef010ee7577825b0847df9842e")
        );
        assert_eq!(
            sha2_scramble(b"secret", s),
            hex("c76e2898612a4cf042c77fa8c4702c4c64c0c2c557c53c4d75595aaa6abae809")
        );
        assert!(native_scramble(b"", s).is_empty());
        assert!(sha2_scramble(b"", s).is_empty());
    }

    #[test]
    fn rsa_password_decrypts_to_the_scrambled_password() {
        use openssl::rsa::{Padding, Rsa};
        let key = Rsa::generate(2048).expect("key");
        let pem = key.public_key_to_pem().expect("pem");
        let enc = rsa_encrypt_password(b"pw", b"0123456789", &pem).expect("encrypt");
        let mut out = vec![0u8; key.size() as usize];
        let n = key
            .private_decrypt(&enc, &mut out, Padding::PKCS1_OAEP)
            .expect("decrypt");
        assert_eq!(&out[..n], &xor(b"pw\0", b"0123456789")[..]);
        assert!(rsa_encrypt_password(b"pw", b"s", b"not a key").is_err());
    }

    /// A stream over a byte buffer that records what is written.
    struct Mem {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Mem {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn mem(input: Vec<u8>) -> Framed<Mem> {
        Framed::new(Mem {
            input: io::Cursor::new(input),
            output: Vec::new(),
        })
    }

    #[test]
    fn split_packets_round_trip() {
        for len in [
            0,
            1,
            MAX_PAYLOAD - 1,
            MAX_PAYLOAD,
            MAX_PAYLOAD + 1,
            2 * MAX_PAYLOAD,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut w = mem(Vec::new());
            w.send_command(&payload).expect("write");
            let bytes = std::mem::take(&mut w.get_mut().output);
            let packets = len / MAX_PAYLOAD + 1;
            assert_eq!(bytes.len(), len + 4 * packets, "len {len}");
            // The last packet is shorter than MAX_PAYLOAD (empty after a full one).
            let last = bytes.len() - 4 - (len % MAX_PAYLOAD);
            assert_eq!(bytes[last + 3] as usize, packets - 1);
            let mut r = mem(bytes);
            assert_eq!(r.read_packet().expect("read"), payload, "len {len}");
        }
    }

    #[test]
    fn sequence_ids_are_checked_and_wrap() {
        let mut bytes = Vec::new();
        let mut seq = 0u8;
        for _ in 0..300 {
            frame_into(&mut bytes, &mut seq, b"x");
        }
        let mut r = mem(bytes);
        for _ in 0..300 {
            assert_eq!(r.read_packet().expect("read"), b"x");
        }
        let mut r = mem(vec![1, 0, 0, 5, b'x']);
        let e = r.read_packet().expect_err("out of order");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut r = mem(vec![3, 0, 0, 0, b'x']);
        assert_eq!(
            r.read_packet().expect_err("truncated").kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_handshake(&bytes);
            let _ = parse_auth_switch(&bytes);
            let _ = mem(bytes).read_packet();
        }

        #[test]
        fn truncated_and_mutated_handshakes_never_panic(
            cut in 0usize..100,
            caps in any::<u32>(),
            at in 0usize..100,
            b in any::<u8>(),
        ) {
            let mut h = hello(caps, "caching_sha2_password");
            if let Some(x) = h.get_mut(at) {
                *x = b;
            }
            let _ = parse_handshake(&h[..cut.min(h.len())]);
        }
    }
}
