//! MySQL 8.3+ `GTID_TAGGED_LOG_EVENT` (type 42): the GTID `uuid:tag:gno` of a transaction
//! whose GTID has a tag (`SET gtid_next = 'AUTOMATIC:tag'` or `'uuid:tag:n'`).
//!
//! Unlike the fixed layout of `GTID_LOG_EVENT`, its body is written with MySQL's
//! serialization library: a message header (format version, serialized size, last
//! non-ignorable field id), then fields, each a field id and a value. Integers are
//! variable-length: the number of trailing one bits of the first byte is the number of
//! extra bytes (eight: the next eight bytes are the value), and the value is the bytes,
//! little-endian, shifted right past that marker; signed integers are zig-zag encoded.
//! Fields: 0 flags, 1 the source uuid (16 integers of one byte each), 2 gno (signed),
//! 3 the tag (length, bytes), then commit metadata (last committed, sequence number,
//! timestamps, transaction length, server versions, commit group ticket) — integers,
//! skipped here.
//! Format: `libs/mysql/binlog/event/control_events.h` (`Gtid_event::Encoder_type`),
//! `libs/mysql/serialization/` (`Serializer_default`, varlen integers).

/// One variable-length unsigned integer at `*pos`.
fn varlen(b: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *b.get(*pos)?;
    let extra = first.trailing_ones() as usize;
    let v = if extra == 8 {
        u64::from_le_bytes(b.get(*pos + 1..*pos + 9)?.try_into().ok()?)
    } else {
        let bytes = b.get(*pos..*pos + extra + 1)?;
        let mut v = 0u64;
        for (i, &x) in bytes.iter().enumerate() {
            v |= u64::from(x) << (8 * i);
        }
        v >> (extra + 1)
    };
    *pos += extra + 1;
    Some(v)
}

fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The GTID text `uuid:tag:gno` (`uuid:gno` with an empty tag), `None` when the body is
/// not a readable tagged GTID event.
pub fn parse(body: &[u8]) -> Option<String> {
    let mut pos = 0;
    let _version = varlen(body, &mut pos)?;
    let size = usize::try_from(varlen(body, &mut pos)?).ok()?;
    let _last_non_ignorable = varlen(body, &mut pos)?;
    let body = body.get(..size.min(body.len()))?;
    let (mut uuid, mut gno, mut tag) = (None, None, String::new());
    while pos < body.len() {
        match varlen(body, &mut pos)? {
            1 => {
                let mut u = [0u8; 16];
                for b in &mut u {
                    *b = u8::try_from(varlen(body, &mut pos)?).ok()?;
                }
                uuid = Some(u);
            }
            2 => gno = Some(zigzag(varlen(body, &mut pos)?)),
            3 => {
                let n = usize::try_from(varlen(body, &mut pos)?).ok()?;
                let t = body.get(pos..pos.checked_add(n)?)?;
                tag = std::str::from_utf8(t).ok()?.to_owned();
                pos += n;
            }
            // Flags and the commit metadata: integers.
            0 | 4..=11 => {
                varlen(body, &mut pos)?;
            }
            // A field of a later version: its type is unknown, but uuid, gno and tag come
            // first.
            _ => break,
        }
    }
    let (u, gno) = (uuid?, gno?);
    let h: String = u.iter().map(|x| format!("{x:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    Some(if tag.is_empty() {
        format!("{uuid}:{gno}")
    } else {
        format!("{uuid}:{tag}:{gno}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body (header and checksum cut) of the GTID_TAGGED event in
    /// `binlog_transaction_with_GTID_TAG.000001` (MySQL 9.6.0, `shared/fixtures/mysql-binlogs`).
    const FIXTURE: &str = "027800000002aaee25020804650222c503c502e1029cc10311035502dead03040c060a6d7974616708000a040c7f1cf3b814244a0610a10412430f0b";

    fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect()
    }

    #[test]
    fn fixture_gtid_with_tag() {
        assert_eq!(
            parse(&bytes(FIXTURE)).as_deref(),
            Some("55778904-0299-11f1-b1b8-4ef0c4956feb:mytag:3")
        );
    }

    #[test]
    fn varlen_integers() {
        let mut p = 0;
        assert_eq!(varlen(&[0x78], &mut p), Some(60));
        let mut p = 0;
        assert_eq!(varlen(&[0x25, 0x02], &mut p), Some(0x89));
        assert_eq!(p, 2);
        let mut p = 0;
        assert_eq!(varlen(&[0xFF, 1, 0, 0, 0, 0, 0, 0, 0], &mut p), Some(1));
        assert_eq!(zigzag(6), 3);
        assert_eq!(zigzag(5), -3);
    }

    #[test]
    fn every_truncation_is_none_never_a_panic() {
        let b = bytes(FIXTURE);
        for n in 0..b.len() {
            let _ = parse(&b[..n]);
        }
        assert!(parse(&b[..20]).is_none());
    }
}
