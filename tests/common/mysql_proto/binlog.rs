//! Binary log files as the protocol test server serves them: the events of a fixture
//! file, the artificial ROTATE and heartbeat events a dump adds, GTID sets of
//! `COM_BINLOG_DUMP_GTID`, and the CRC32 checksum of events the server writes itself.

use std::path::{Path, PathBuf};

/// Event type codes used here.
pub const ROTATE: u8 = 4;
pub const FORMAT_DESCRIPTION: u8 = 15;
pub const HEARTBEAT: u8 = 27;
pub const GTID: u8 = 33;
pub const ANONYMOUS_GTID: u8 = 34;
pub const PREVIOUS_GTIDS: u8 = 35;
pub const GTID_TAGGED: u8 = 42;
pub const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
pub const MARIADB_GTID: u8 = 162;
pub const MARIADB_GTID_LIST: u8 = 163;
/// `LOG_EVENT_ARTIFICIAL_F`.
const ARTIFICIAL: u16 = 0x20;

/// `../shared/fixtures/mysql-binlogs/<name>` beside the repository.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/mysql-binlogs")
        .join(name)
}

/// One event of a file.
#[derive(Debug, Clone)]
pub struct Ev {
    /// Where it starts in the file.
    pub offset: usize,
    pub type_code: u8,
    pub len: usize,
    pub log_pos: u32,
}

/// A binlog file split into events.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub bytes: Vec<u8>,
    pub events: Vec<Ev>,
    /// Events carry a CRC32 (the FORMAT_DESCRIPTION's checksum algorithm is 1).
    pub crc: bool,
    /// The server version in the FORMAT_DESCRIPTION event.
    pub version: String,
    /// The file ends inside an event (or inside the header).
    pub truncated: bool,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let path = fixture_path(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Fixture::parse(bytes)
    }

    pub fn parse(bytes: Vec<u8>) -> Fixture {
        let mut events = Vec::new();
        let mut p = 4;
        let mut truncated = bytes.len() < 4;
        while p < bytes.len() {
            let Some(h) = bytes.get(p..p + 19) else {
                truncated = true;
                break;
            };
            let len = u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as usize;
            if len < 19 || p + len > bytes.len() {
                truncated = true;
                break;
            }
            events.push(Ev {
                offset: p,
                type_code: h[4],
                len,
                log_pos: u32::from_le_bytes([h[13], h[14], h[15], h[16]]),
            });
            p += len;
        }
        let (mut crc, mut version) = (false, String::new());
        if let Some(fde) = events.iter().find(|e| e.type_code == FORMAT_DESCRIPTION) {
            let b = &bytes[fde.offset..fde.offset + fde.len];
            version = String::from_utf8_lossy(b[21..71].split(|&x| x == 0).next().unwrap_or(&[]))
                .into_owned();
            // The checksum algorithm byte precedes the 4-byte checksum (servers >= 5.6.1).
            crc = b.get(b.len() - 5) == Some(&1);
        }
        Fixture {
            bytes,
            events,
            crc,
            version,
            truncated,
        }
    }

    pub fn raw(&self, e: &Ev) -> &[u8] {
        &self.bytes[e.offset..e.offset + e.len]
    }

    /// Where a server that wrote this file would say its binlog "ends" before the changes:
    /// the first event after the head (FORMAT_DESCRIPTION, PREVIOUS_GTIDS; MariaDB's
    /// GTID_LIST and BINLOG_CHECKPOINT).
    pub fn head_end(&self) -> u64 {
        self.events
            .iter()
            .find(|e| {
                !matches!(
                    e.type_code,
                    FORMAT_DESCRIPTION
                        | PREVIOUS_GTIDS
                        | ROTATE
                        | MARIADB_GTID_LIST
                        | MARIADB_BINLOG_CHECKPOINT
                )
            })
            .map(|e| e.offset as u64)
            .unwrap_or(self.bytes.len() as u64)
    }

    /// The GTID (`uuid`, `gno`) of a GTID event, if it is one.
    pub fn gtid(&self, e: &Ev) -> Option<([u8; 16], u64)> {
        if e.type_code != GTID {
            return None;
        }
        let b = self.raw(e).get(19 + 1..19 + 25)?;
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&b[..16]);
        Some((sid, u64::from_le_bytes(b[16..24].try_into().ok()?)))
    }
}

/// An event the server makes itself (ROTATE, heartbeat): header, body, checksum.
pub fn artificial(type_code: u8, log_pos: u32, body: &[u8], crc: bool) -> Vec<u8> {
    let len = 19 + body.len() + if crc { 4 } else { 0 };
    let mut e = Vec::with_capacity(len);
    e.extend_from_slice(&0u32.to_le_bytes());
    e.push(type_code);
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(len as u32).to_le_bytes());
    e.extend_from_slice(&log_pos.to_le_bytes());
    e.extend_from_slice(&ARTIFICIAL.to_le_bytes());
    e.extend_from_slice(body);
    if crc {
        let c = crc32(&e);
        e.extend_from_slice(&c.to_le_bytes());
    }
    e
}

/// The fake ROTATE a dump starts with: the file and the position it streams from.
pub fn fake_rotate(file: &str, pos: u64, crc: bool) -> Vec<u8> {
    let mut body = pos.to_le_bytes().to_vec();
    body.extend_from_slice(file.as_bytes());
    artificial(ROTATE, 0, &body, crc)
}

/// A HEARTBEAT (v1): the file name; `log_pos` is where the stream stands.
pub fn heartbeat(file: &str, log_pos: u32, crc: bool) -> Vec<u8> {
    artificial(HEARTBEAT, log_pos, file.as_bytes(), crc)
}

/// The FORMAT_DESCRIPTION as a dump that starts past it sends it: `log_pos` 0 (so the
/// replica does not take its position from it), checksum recomputed.
pub fn fde_for_dump(raw: &[u8], crc: bool) -> Vec<u8> {
    let mut e = raw.to_vec();
    e[13..17].copy_from_slice(&0u32.to_le_bytes());
    if crc {
        let n = e.len() - 4;
        let c = crc32(&e[..n]);
        e[n..].copy_from_slice(&c.to_le_bytes());
    }
    e
}

/// CRC-32 (IEEE, reflected), as binlog checksums use.
pub fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A GTID set from `COM_BINLOG_DUMP_GTID`: per source uuid, intervals `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet(pub Vec<SidIntervals>);

/// One source uuid and its intervals `[start, end)`.
pub type SidIntervals = ([u8; 16], Vec<(u64, u64)>);

impl GtidSet {
    /// Parses the encoded (untagged) set.
    pub fn decode(b: &[u8]) -> Option<GtidSet> {
        let u64at = |p: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(p..p + 8)?.try_into().ok()?))
        };
        let n = u64at(0)?;
        let mut p = 8;
        let mut out = Vec::new();
        for _ in 0..n {
            let mut sid = [0u8; 16];
            sid.copy_from_slice(b.get(p..p + 16)?);
            p += 16;
            let k = u64at(p)?;
            p += 8;
            let mut iv = Vec::new();
            for _ in 0..k {
                iv.push((u64at(p)?, u64at(p + 8)?));
                p += 16;
            }
            out.push((sid, iv));
        }
        Some(GtidSet(out))
    }

    pub fn contains(&self, sid: &[u8; 16], gno: u64) -> bool {
        self.0
            .iter()
            .any(|(s, iv)| s == sid && iv.iter().any(|&(a, b)| a <= gno && gno < b))
    }
}

/// `uuid` text of a sid.
pub fn uuid_text(sid: &[u8; 16]) -> String {
    let h: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_known_text() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
