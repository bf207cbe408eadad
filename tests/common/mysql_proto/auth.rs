//! The connection phase of the protocol test server: handshake v10, the TLS upgrade after
//! an SSLRequest (servers built with TLS), then `mysql_native_password` or
//! `caching_sha2_password` (fast path against the server's cache of users that
//! authenticated fully before; full authentication: the clear-text password inside TLS, or
//! the RSA public key exchange over plain TCP), as MySQL 8 / 9 do it.
//! Protocol: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html>,
//! `caching_sha2_password`: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html>.

use super::wire::{lenenc, nul_str, Conn};
use openssl::pkey::Private;
use openssl::rsa::{Padding, Rsa};
use openssl::ssl::SslAcceptor;
use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

pub const NATIVE: &str = "mysql_native_password";
pub const CACHING_SHA2: &str = "caching_sha2_password";

const LONG_PASSWORD: u32 = 0x1;
const LONG_FLAG: u32 = 0x4;
const CONNECT_WITH_DB: u32 = 0x8;
const SSL: u32 = 0x800;
const PROTOCOL_41: u32 = 0x200;
const TRANSACTIONS: u32 = 0x2000;
const SECURE_CONNECTION: u32 = 0x8000;
const PLUGIN_AUTH: u32 = 0x8_0000;
const PLUGIN_AUTH_LENENC: u32 = 0x20_0000;

/// Which authentication paths connections took.
#[derive(Default, Debug)]
pub struct AuthStats {
    /// `caching_sha2_password` fast path succeeded (`01 03`).
    pub fast: AtomicUsize,
    /// `caching_sha2_password` full authentication with the RSA key exchange.
    pub full_rsa: AtomicUsize,
    /// `caching_sha2_password` full authentication with the password inside TLS.
    pub full_tls: AtomicUsize,
    /// Connections upgraded to TLS.
    pub tls: AtomicUsize,
    /// `mysql_native_password` logins.
    pub native: AtomicUsize,
    /// Scramble responses that were correct for the password (whether or not the user was
    /// cached).
    pub scramble_ok: AtomicUsize,
    /// Scramble responses that were wrong.
    pub scramble_bad: AtomicUsize,
    /// Logins refused.
    pub refused: AtomicUsize,
}

impl AuthStats {
    pub fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::SeqCst)
    }
}

/// The account the server knows, and how it authenticates.
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub password: String,
    /// The account's plugin.
    pub plugin: &'static str,
}

pub struct AuthServer {
    pub account: Account,
    /// The plugin the handshake announces (the server's `default_authentication_plugin`).
    pub default_plugin: &'static str,
    pub version: String,
    pub stats: AuthStats,
    /// Users whose full authentication succeeded (MySQL's in-memory cache).
    cache: Mutex<HashSet<String>>,
    rsa: Rsa<Private>,
    conn_id: AtomicU64,
    /// Offers TLS (`CLIENT_SSL`) when set.
    pub tls: Option<SslAcceptor>,
}

fn sha1(b: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(b).to_vec()
}

fn sha256(b: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).to_vec()
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b.iter().cycle()).map(|(x, y)| x ^ y).collect()
}

/// `SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))`.
pub fn native_scramble(password: &str, scramble: &[u8]) -> Vec<u8> {
    let h1 = sha1(password.as_bytes());
    let h2 = sha1(&h1);
    xor(&h1, &sha1(&[scramble, &h2].concat()))
}

/// `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble)`.
pub fn sha2_scramble(password: &str, scramble: &[u8]) -> Vec<u8> {
    let h1 = sha256(password.as_bytes());
    let h2 = sha256(&h1);
    xor(&h1, &sha256(&[&h2[..], scramble].concat()))
}

/// 20 scramble bytes in 1..=127 (as MySQL generates them: printable, never NUL).
fn new_scramble(seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 127) as u8 + 1
        })
        .collect()
}

/// What the client's HandshakeResponse41 says.
struct Response {
    user: String,
    auth: Vec<u8>,
    plugin: String,
}

fn parse_response(p: &[u8]) -> Option<Response> {
    let caps = u32::from_le_bytes(p.get(..4)?.try_into().ok()?);
    let mut pos = 32;
    let user = String::from_utf8_lossy(nul_str(p, &mut pos)?).into_owned();
    let n = if caps & PLUGIN_AUTH_LENENC != 0 {
        lenenc(p, &mut pos)? as usize
    } else {
        let n = usize::from(*p.get(pos)?);
        pos += 1;
        n
    };
    let auth = p.get(pos..pos + n)?.to_vec();
    pos += n;
    if caps & CONNECT_WITH_DB != 0 {
        nul_str(p, &mut pos)?;
    }
    let plugin = if caps & PLUGIN_AUTH != 0 {
        nul_str(p, &mut pos)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Some(Response { user, auth, plugin })
}

impl AuthServer {
    pub fn new(account: Account, default_plugin: &'static str, version: String) -> AuthServer {
        AuthServer {
            account,
            default_plugin,
            version,
            stats: AuthStats::default(),
            cache: Mutex::new(HashSet::new()),
            rsa: Rsa::generate(2048).expect("rsa key"),
            conn_id: AtomicU64::new(1),
            tls: None,
        }
    }

    /// Forgets the cached users (as `FLUSH PRIVILEGES` or a server restart does).
    pub fn flush_cache(&self) {
        self.cache.lock().expect("cache").clear();
    }

    fn refuse(&self, c: &mut Conn, user: &str) -> io::Result<bool> {
        self.stats.refused.fetch_add(1, Ordering::SeqCst);
        c.err(
            1045,
            "28000",
            &format!("Access denied for user '{user}'@'127.0.0.1' (using password: YES)"),
        )?;
        Ok(false)
    }

    /// Runs the connection phase; `Ok(true)` once the client is logged in.
    pub fn login(&self, c: &mut Conn) -> io::Result<bool> {
        let id = self.conn_id.fetch_add(1, Ordering::SeqCst);
        c.id = id;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let scramble = new_scramble(nanos ^ (id << 32));
        let caps = LONG_PASSWORD
            | LONG_FLAG
            | CONNECT_WITH_DB
            | PROTOCOL_41
            | TRANSACTIONS
            | SECURE_CONNECTION
            | PLUGIN_AUTH
            | if self.tls.is_some() { SSL } else { 0 };
        let mut h = vec![10];
        h.extend_from_slice(self.version.as_bytes());
        h.push(0);
        h.extend_from_slice(&(id as u32).to_le_bytes());
        h.extend_from_slice(&scramble[..8]);
        h.push(0);
        h.extend_from_slice(&(caps as u16).to_le_bytes());
        h.push(255);
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        h.push(21);
        h.extend_from_slice(&[0; 10]);
        h.extend_from_slice(&scramble[8..]);
        h.push(0);
        h.extend_from_slice(self.default_plugin.as_bytes());
        h.push(0);
        c.reset();
        c.write(&h)?;
        let mut p = c.read()?;
        // An SSLRequest: the capability flags, max packet, charset and filler (32 bytes)
        // with CLIENT_SSL; TLS starts, then the real response comes through it.
        let client_caps = p
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if let (Some(acceptor), 32, true) = (&self.tls, p.len(), client_caps & SSL != 0) {
            c.upgrade(acceptor)?;
            self.stats.tls.fetch_add(1, Ordering::SeqCst);
            p = c.read()?;
        }
        let Some(r) = parse_response(&p) else {
            c.err(1043, "08S01", "Bad handshake")?;
            return Ok(false);
        };
        if r.user != self.account.user {
            return self.refuse(c, &r.user);
        }
        let (mut auth, mut scramble) = (r.auth, scramble);
        let plugin = self.account.plugin;
        if r.plugin != plugin {
            // Authentication method switch to the account's plugin, with a new scramble.
            scramble = new_scramble(nanos.rotate_left(17) ^ id);
            let mut s = vec![0xFE];
            s.extend_from_slice(plugin.as_bytes());
            s.push(0);
            s.extend_from_slice(&scramble);
            s.push(0);
            c.write(&s)?;
            auth = c.read()?;
        }
        if plugin == NATIVE {
            if auth != native_scramble(&self.account.password, &scramble) {
                return self.refuse(c, &r.user);
            }
            self.stats.native.fetch_add(1, Ordering::SeqCst);
            c.ok()?;
            return Ok(true);
        }
        let right = sha2_scramble(&self.account.password, &scramble);
        let scramble_ok = auth == right;
        if scramble_ok {
            self.stats.scramble_ok.fetch_add(1, Ordering::SeqCst);
        } else {
            self.stats.scramble_bad.fetch_add(1, Ordering::SeqCst);
        }
        let cached = self.cache.lock().expect("cache").contains(&r.user);
        if scramble_ok && cached {
            self.stats.fast.fetch_add(1, Ordering::SeqCst);
            c.write(&[0x01, 0x03])?;
            c.ok()?;
            return Ok(true);
        }
        // perform_full_authentication
        c.write(&[0x01, 0x04])?;
        let p = c.read()?;
        if c.is_tls() {
            // Inside TLS the client sends the password itself, NUL-terminated.
            return self.full_auth(c, r.user, &p, &self.stats.full_tls);
        }
        if p != [0x02] {
            // A clear-text password on a plain TCP connection: MySQL refuses it.
            c.err(
                2061,
                "HY000",
                "Authentication plugin 'caching_sha2_password' reported error: Authentication requires secure connection.",
            )?;
            return Ok(false);
        }
        let pem = self.rsa.public_key_to_pem().expect("pem");
        let mut k = vec![0x01];
        k.extend_from_slice(&pem);
        c.write(&k)?;
        let enc = c.read()?;
        let mut buf = vec![0u8; self.rsa.size() as usize];
        let n = match self
            .rsa
            .private_decrypt(&enc, &mut buf, Padding::PKCS1_OAEP)
        {
            Ok(n) => n,
            Err(_) => return self.refuse(c, &r.user),
        };
        let clear = xor(&buf[..n], &scramble);
        self.full_auth(c, r.user, &clear, &self.stats.full_rsa)
    }

    /// The end of a full authentication: `clear` must be the password and a NUL; the user
    /// is cached (later logins take the fast path) and the path counted in `path`.
    fn full_auth(
        &self,
        c: &mut Conn,
        user: String,
        clear: &[u8],
        path: &AtomicUsize,
    ) -> io::Result<bool> {
        if clear.strip_suffix(&[0]) != Some(self.account.password.as_bytes()) {
            return self.refuse(c, &user);
        }
        path.fetch_add(1, Ordering::SeqCst);
        self.cache.lock().expect("cache").insert(user);
        c.ok()?;
        Ok(true)
    }
}
