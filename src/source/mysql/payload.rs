//! MySQL `TRANSACTION_PAYLOAD_EVENT` (type 40, 8.0.20+ with
//! `binlog_transaction_compression=ON`): one transaction's events, compressed together.
//!
//! The body is a list of fields — each `type`, `length`, `value` as packed integers
//! (`net_field_length`): 1 payload size, 2 compression type (0 zstd, 255 none), 3
//! uncompressed size — ended by field 0, then the payload. Decompressed, the payload is a
//! plain sequence of binlog events (header + body) *without* checksums and with `log_pos`
//! 0: their position is the payload event's own. The GTID event of the transaction stays
//! outside, before the payload.
//!
//! [`InnerEvents`] decompresses as it goes and hands out one inner event at a time, so
//! memory is the compressed payload (already read as one packet), the zstd window and the
//! current inner event — never the whole decompressed transaction.
//! Format: `libbinlogevents/include/control_events.h` (`Transaction_payload_event`).

use std::io::Read;

/// The fields' type codes.
const END_MARK: u64 = 0;
const PAYLOAD_SIZE: u64 = 1;
const COMPRESSION_TYPE: u64 = 2;
const UNCOMPRESSED_SIZE: u64 = 3;
const ZSTD: u64 = 0;
const NONE: u64 = 255;
/// An inner event larger than this without a declared uncompressed size is refused
/// (`max_allowed_packet`'s ceiling), so a corrupt length cannot allocate unbounded memory.
const MAX_INNER_EVENT: u64 = 1 << 30;

/// A packed integer (`net_field_length`) at `*pos`.
fn packed(b: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *b.get(*pos)?;
    let (n, v) = match first {
        0..=250 => (1, u64::from(first)),
        252 => (
            3,
            u64::from(u16::from_le_bytes([*b.get(*pos + 1)?, *b.get(*pos + 2)?])),
        ),
        253 => (
            4,
            u64::from(u32::from_le_bytes([
                *b.get(*pos + 1)?,
                *b.get(*pos + 2)?,
                *b.get(*pos + 3)?,
                0,
            ])),
        ),
        254 => (
            9,
            u64::from_le_bytes(b.get(*pos + 1..*pos + 9)?.try_into().ok()?),
        ),
        _ => return None,
    };
    *pos += n;
    Some(v)
}

/// The inner events of one payload, decompressed on demand.
pub struct InnerEvents<'a> {
    reader: Box<dyn Read + 'a>,
    /// The declared uncompressed size, if the event carries it.
    expected: Option<u64>,
    produced: u64,
}

impl std::fmt::Debug for InnerEvents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InnerEvents")
            .field("expected", &self.expected)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

impl<'a> InnerEvents<'a> {
    /// Parses the payload event's fields (`body` without the common header and checksum).
    /// `Err` says what is wrong (truncated fields, unknown compression).
    pub fn new(body: &'a [u8]) -> Result<InnerEvents<'a>, String> {
        let mut pos = 0;
        let (mut compression, mut size, mut expected) = (None, None, None);
        loop {
            let ty = packed(body, &mut pos).ok_or("truncated header fields")?;
            if ty == END_MARK {
                break;
            }
            let len = packed(body, &mut pos).ok_or("truncated header fields")?;
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| pos.checked_add(l))
                .filter(|&e| e <= body.len())
                .ok_or("a header field runs past the event")?;
            let mut at = pos;
            let value = packed(body, &mut at).filter(|_| at <= end);
            match ty {
                PAYLOAD_SIZE => size = value,
                COMPRESSION_TYPE => compression = value,
                UNCOMPRESSED_SIZE => expected = value,
                // A field of a later server version: its length lets us skip it.
                _ => {}
            }
            pos = end;
        }
        let data = body.get(pos..).ok_or("truncated payload")?;
        let data = match size {
            Some(s) => usize::try_from(s)
                .ok()
                .and_then(|s| data.get(..s))
                .ok_or_else(|| format!("payload of {s} bytes declared, {} present", data.len()))?,
            None => data,
        };
        let reader: Box<dyn Read + 'a> = match compression {
            Some(ZSTD) => Box::new(
                ruzstd::StreamingDecoder::new(data)
                    .map_err(|e| format!("zstd frame header: {e}"))?,
            ),
            Some(NONE) | None => Box::new(data),
            Some(other) => {
                return Err(format!(
                    "compression type {other} (only zstd, 0, and none, 255, exist)"
                ))
            }
        };
        Ok(InnerEvents {
            reader,
            expected,
            produced: 0,
        })
    }

    /// Fills `buf` unless the stream ends first; returns how many bytes were read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let mut n = 0;
        while n < buf.len() {
            match self.reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("decompressing: {e}")),
            }
        }
        self.produced += n as u64;
        Ok(n)
    }

    /// The next inner event (header + body), `None` after the last one.
    pub fn next_event(&mut self) -> Result<Option<Vec<u8>>, String> {
        let mut head = [0u8; 19];
        match self.fill(&mut head)? {
            0 => {
                return match self.expected {
                    Some(e) if e != self.produced => Err(format!(
                        "{} bytes decompressed, {e} declared",
                        self.produced
                    )),
                    _ => Ok(None),
                }
            }
            19 => {}
            n => return Err(format!("truncated inner event header ({n} of 19 bytes)")),
        }
        let len = u64::from(u32::from_le_bytes([head[9], head[10], head[11], head[12]]));
        let limit = self.expected.unwrap_or(MAX_INNER_EVENT);
        if len < 19 || self.produced - 19 + len > limit {
            return Err(format!(
                "inner event of {len} bytes does not fit the payload"
            ));
        }
        let mut ev = head.to_vec();
        ev.resize(len as usize, 0);
        let want = ev.len() - 19;
        let got = self.fill(&mut ev[19..])?;
        if got != want {
            return Err(format!(
                "truncated inner event ({got} of {want} body bytes)"
            ));
        }
        Ok(Some(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TRANSACTION_PAYLOAD body of `transaction_compression.000001` (MySQL 8.0.32;
    /// `shared/fixtures/mysql-binlogs`): one row inserted, zstd.
    fn fixture_body() -> Vec<u8> {
        let hex = "0201000301b301017c0028b52ffd0058840300e2";
        let mut b: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        b.truncate(7); // the fields; the payload is rebuilt below
        b
    }

    fn none_payload(events: &[Vec<u8>]) -> Vec<u8> {
        let data: Vec<u8> = events.concat();
        let mut b = vec![2, 1, 255, 3];
        let mut size = Vec::new();
        put_packed(&mut size, data.len() as u64);
        b.push(size.len() as u8);
        b.extend_from_slice(&size);
        b.push(1);
        b.push(size.len() as u8);
        b.extend_from_slice(&size);
        b.push(0);
        b.extend_from_slice(&data);
        b
    }

    fn put_packed(b: &mut Vec<u8>, v: u64) {
        if v < 251 {
            b.push(v as u8);
        } else {
            b.push(252);
            b.extend_from_slice(&(v as u16).to_le_bytes());
        }
    }

    fn event(type_code: u8, body: &[u8]) -> Vec<u8> {
        let mut e = vec![0, 0, 0, 0, type_code, 1, 0, 0, 0];
        e.extend_from_slice(&((19 + body.len()) as u32).to_le_bytes());
        e.extend_from_slice(&[0; 6]);
        e.extend_from_slice(body);
        e
    }

    #[test]
    fn uncompressed_payload_yields_its_events_in_order() {
        let evs = vec![event(2, b"BEGIN"), event(19, &[7; 30]), event(16, &[1; 8])];
        let body = none_payload(&evs);
        let mut it = InnerEvents::new(&body).expect("header");
        let mut got = Vec::new();
        while let Some(e) = it.next_event().expect("event") {
            got.push(e);
        }
        assert_eq!(got, evs);
    }

    #[test]
    fn fixture_fields_parse() {
        let b = fixture_body();
        let mut pos = 0;
        assert_eq!(packed(&b, &mut pos), Some(COMPRESSION_TYPE));
        assert_eq!(packed(&b, &mut pos), Some(1));
        assert_eq!(packed(&b, &mut pos), Some(ZSTD));
    }

    #[test]
    fn unknown_compression_and_truncation_are_errors() {
        let mut body = none_payload(&[event(2, b"BEGIN")]);
        body[2] = 7;
        assert!(InnerEvents::new(&body).is_err());
        let body = none_payload(&[event(2, b"BEGIN")]);
        assert!(InnerEvents::new(&body[..body.len() - 3]).is_err());
        // A declared size larger than the data.
        let mut it = InnerEvents::new(&body).expect("header");
        assert!(it.next_event().is_ok());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(mut it) = InnerEvents::new(&bytes) {
                for _ in 0..10 {
                    match it.next_event() {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
        }
    }
}
