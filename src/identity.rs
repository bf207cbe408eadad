//! Row identities: the part of a backfill or query-mode cursor that names the row.
//!
//! A read row's cursor is `(where it was read, what it is)` ([`crate::position::RowPosition`]);
//! this module builds the "what it is": a stable table id, an order-preserving encoding of
//! the key and a short content hash, as cursor-safe text (only `[0-9A-Za-z._-]` and
//! `! $ / : ^ \` ~`, nothing JSON, HTTP headers or logs would escape).
//!
//! Encoding rules (pinned by the tests below, since a change would rename every row):
//!
//! * Text (table names, string-like key values) keeps `[0-9A-Za-z._-]` and writes every other
//!   byte as a marker and two upper-case hex digits, the marker chosen from the gap of the
//!   ASCII table the byte lies in (`$` below `-`, `/`, `:` between `9` and `A`, `^` between
//!   `Z` and `_`, `` ` ``, `~` above `z`). Every component ends with `!`, which sorts below
//!   every other character used, so the encoding sorts like the bytes it encodes, also for
//!   composite keys.
//! * Integers are fixed-width hex (signed ones offset by 2^63), floats their order-preserving
//!   bit pattern, each behind a one-letter type tag; a `timestamptz` drops its `Z` so
//!   fractional seconds sort right. Decimals, dates, times and other text-like keys are
//!   encoded as their text (byte order, which for a decimal is not numeric order; the
//!   cursor is still unique, only the order among rows of one snapshot differs).
//! * The content hash is a 64-bit hash over the column names and a typed, length-prefixed
//!   encoding of every cell, in hex: a different content gives a different cursor, the same
//!   content the same one. Backfill rows ([`RowIdentity::backfill`]) use XXH3-64 (seeded
//!   with the XXH3-64 of the column names); query mode ([`RowIdentity::new`]) the first 64
//!   bits of SHA-256, as it always did (its stored fingerprints of delivered rows would
//!   otherwise all change on an upgrade). Backfill runs record their cursor format
//!   ([`crate::backfill::ROW_CURSORS`]), so a run resumed across the change says so.

use crate::event::Row;
use crate::value::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Ends each component of an identity; sorts below every other character used.
const END: char = '!';

/// Appends the order-preserving escape of `bytes` (without the terminator).
pub fn push_escaped(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        let marker = match b {
            b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'-' | b'.' | b'_' => {
                out.push(b as char);
                continue;
            }
            0x00..=0x2C => '$',
            0x2F => '/',
            0x3A..=0x40 => ':',
            0x5B..=0x5E => '^',
            0x60 => '`',
            0x7B..=0xFF => '~',
        };
        out.push(marker);
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xF)] as char);
    }
}

fn push_hex16(out: &mut String, v: u64) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for i in (0..16).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xF) as usize] as char);
    }
}

/// Appends one key value: a type tag, its order-preserving encoding and the terminator.
pub fn push_key_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push('n'),
        Value::Bool(b) => out.push_str(if *b { "z1" } else { "z0" }),
        Value::Int(i) => {
            out.push('i');
            push_hex16(out, (*i as u64) ^ (1 << 63));
        }
        Value::UInt(u) => {
            out.push('u');
            push_hex16(out, *u);
        }
        Value::Float(f) => {
            out.push('f');
            let bits = f.to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            push_hex16(out, ordered);
        }
        Value::Bytes(b) => {
            out.push('b');
            push_escaped(out, b);
        }
        Value::TimestampTz(s) => {
            out.push('s');
            push_escaped(out, s.strip_suffix('Z').unwrap_or(s).as_bytes());
        }
        Value::Decimal(s) => {
            out.push('d');
            push_escaped(out, s.as_bytes());
        }
        Value::Text(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::Interval(s)
        | Value::Uuid(s)
        | Value::Json(s) => {
            out.push('s');
            push_escaped(out, s.as_bytes());
        }
        Value::Array(_) | Value::Set(_) => {
            out.push('a');
            push_escaped(out, v.to_json().to_string().as_bytes());
        }
    }
    out.push(END);
}

/// Appends the typed, length-prefixed encoding of `v` that the content hash covers.
fn hash_value(h: &mut Vec<u8>, v: &Value) {
    fn bytes(h: &mut Vec<u8>, tag: u8, b: &[u8]) {
        h.push(tag);
        h.extend_from_slice(&(b.len() as u64).to_le_bytes());
        h.extend_from_slice(b);
    }
    match v {
        Value::Null => h.push(b'n'),
        Value::Bool(b) => h.extend_from_slice(&[b'z', u8::from(*b)]),
        Value::Int(i) => bytes(h, b'i', &i.to_le_bytes()),
        Value::UInt(u) => bytes(h, b'u', &u.to_le_bytes()),
        Value::Float(f) => bytes(h, b'f', &f.to_bits().to_le_bytes()),
        Value::Decimal(s) => bytes(h, b'd', s.as_bytes()),
        Value::Text(s) => bytes(h, b's', s.as_bytes()),
        Value::Bytes(b) => bytes(h, b'b', b),
        Value::Json(s) => bytes(h, b'j', s.as_bytes()),
        Value::Date(s) => bytes(h, b'D', s.as_bytes()),
        Value::Time(s) => bytes(h, b'T', s.as_bytes()),
        Value::Timestamp(s) => bytes(h, b'S', s.as_bytes()),
        Value::TimestampTz(s) => bytes(h, b'Z', s.as_bytes()),
        Value::Interval(s) => bytes(h, b'I', s.as_bytes()),
        Value::Uuid(s) => bytes(h, b'U', s.as_bytes()),
        Value::Array(items) => {
            bytes(h, b'a', &(items.len() as u64).to_le_bytes());
            for i in items {
                hash_value(h, i);
            }
        }
        Value::Set(items) => {
            bytes(h, b'e', &(items.len() as u64).to_le_bytes());
            for i in items {
                bytes(h, b's', i.as_bytes());
            }
        }
    }
}

/// The encoded table id and its terminator.
fn table_id(table: &str) -> String {
    let mut t = String::with_capacity(table.len() + 1);
    push_escaped(&mut t, table.as_bytes());
    t.push(END);
    t
}

/// Builds the identities of one table's rows.
#[derive(Clone)]
pub struct RowIdentity {
    /// The encoded table id and its terminator.
    table: String,
    hash: ContentHash,
}

/// The content hash of an identity, with its state after the column names.
#[derive(Clone)]
enum ContentHash {
    Sha256(Sha256),
    /// XXH3-64 seeded with the XXH3-64 of the column names' encoding.
    Xxh3(u64),
}

/// The encoding of the column names both hashes start from.
fn columns_encoding(columns: &[String]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + columns.iter().map(|c| c.len() + 8).sum::<usize>());
    b.extend_from_slice(&(columns.len() as u64).to_le_bytes());
    for c in columns {
        b.extend_from_slice(&(c.len() as u64).to_le_bytes());
        b.extend_from_slice(c.as_bytes());
    }
    b
}

impl RowIdentity {
    /// `table` is the stable table id (`schema.table`); `columns` the row's column names.
    /// Content hash: the first 64 bits of SHA-256 (query mode).
    pub fn new(table: &str, columns: &[String]) -> Self {
        let mut base = Sha256::new();
        base.update(columns_encoding(columns));
        RowIdentity {
            table: table_id(table),
            hash: ContentHash::Sha256(base),
        }
    }

    /// As [`RowIdentity::new`], with XXH3-64 as the content hash (backfill rows: a
    /// backfill hashes every row of every table).
    pub fn backfill(table: &str, columns: &[String]) -> Self {
        RowIdentity {
            table: table_id(table),
            hash: ContentHash::Xxh3(xxh3_64(&columns_encoding(columns))),
        }
    }

    /// The 64-bit content hash of `row` (column names included).
    pub fn content_hash(&self, row: &Row) -> u64 {
        // One call over the whole encoding: many small updates cost more than the hashing.
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&(row.len() as u64).to_le_bytes());
        for cell in row {
            match cell {
                None => buf.push(0),
                Some(v) => {
                    buf.push(1);
                    hash_value(&mut buf, v);
                }
            }
        }
        match &self.hash {
            ContentHash::Sha256(base) => {
                let mut h = base.clone();
                h.update(&buf);
                let d = h.finalize();
                let mut first = [0u8; 8];
                first.copy_from_slice(&d[..8]);
                u64::from_be_bytes(first)
            }
            ContentHash::Xxh3(seed) => xxh3_64_with_seed(&buf, *seed),
        }
    }

    /// The identity of `row`: table id, then the key values at `key` (indices into the
    /// row), or, for a table without a key (`key` empty), `#` and `row_number`; then the
    /// content hash. A key cell absent from the image counts as NULL.
    pub fn row(&self, key: &[usize], row_number: u64, row: &Row) -> String {
        let mut s = String::with_capacity(self.table.len() + 20 * key.len().max(1) + 17);
        s.push_str(&self.table);
        if key.is_empty() {
            s.push('#');
            push_hex16(&mut s, row_number);
            s.push(END);
        } else {
            for &k in key {
                match row.get(k).and_then(Option::as_ref) {
                    Some(v) => push_key_value(&mut s, v),
                    None => push_key_value(&mut s, &Value::Null),
                }
            }
        }
        push_hex16(&mut s, self.content_hash(row));
        s
    }
}

/// A 64-bit fingerprint of a cursor (the first 8 bytes of its SHA-256), for remembering
/// which row versions were delivered.
pub fn fingerprint(cursor: &str) -> u64 {
    let d = Sha256::digest(cursor.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// `id` if it has at most `max` bytes; otherwise its first bytes, `~` and 32 hex digits of
/// its SHA-256, `max` bytes in all: unique like `id`, for receivers that limit the length
/// of a de-duplication id (Segment's `messageId`: 100 characters).
pub fn bounded_id(id: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if id.len() <= max {
        return std::borrow::Cow::Borrowed(id);
    }
    let d = Sha256::digest(id.as_bytes());
    let mut keep = max.saturating_sub(33);
    while !id.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut out = String::with_capacity(max);
    out.push_str(&id[..keep]);
    out.push('~');
    for b in &d[..16] {
        let _ = write!(out, "{b:02x}");
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn esc(b: &[u8]) -> String {
        let mut s = String::new();
        push_escaped(&mut s, b);
        s.push(END);
        s
    }

    fn key(vs: &[Value]) -> String {
        let mut s = String::new();
        for v in vs {
            push_key_value(&mut s, v);
        }
        s
    }

    #[test]
    fn escaping_is_readable_and_cursor_safe() {
        assert_eq!(esc(b"public.order_items"), "public.order_items!");
        assert_eq!(esc("a:b c\"d\\é".as_bytes()), "a:3Ab$20c$22d^5C~C3~A9!");
        let all: Vec<u8> = (0..=255).collect();
        let e = esc(&all);
        assert!(
            e.bytes()
                .all(|b| b.is_ascii_graphic()
                    && !matches!(b, b'"' | b'\\' | b'%' | b'\'' | b',' | b' ')),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn escaping_sorts_like_the_bytes(a in proptest::collection::vec(any::<u8>(), 0..12),
                                         b in proptest::collection::vec(any::<u8>(), 0..12)) {
            prop_assert_eq!(esc(&a).cmp(&esc(&b)), a.cmp(&b));
        }

        #[test]
        fn text_keys_sort_like_their_bytes(a in "\\PC{0,8}", b in "\\PC{0,8}", x in any::<i64>(), y in any::<i64>()) {
            // Composite (text, int) keys: the encoding sorts like the tuple.
            let ka = key(&[Value::Text(a.clone()), Value::Int(x)]);
            let kb = key(&[Value::Text(b.clone()), Value::Int(y)]);
            prop_assert_eq!(ka.cmp(&kb), (a.as_bytes(), x).cmp(&(b.as_bytes(), y)));
        }

        #[test]
        fn integer_keys_sort_like_the_integers(a in any::<i64>(), b in any::<i64>(), c in any::<u64>(), d in any::<u64>()) {
            prop_assert_eq!(key(&[Value::Int(a)]).cmp(&key(&[Value::Int(b)])), a.cmp(&b));
            prop_assert_eq!(key(&[Value::UInt(c)]).cmp(&key(&[Value::UInt(d)])), c.cmp(&d));
        }

        #[test]
        fn float_keys_sort_like_the_floats(a in -1e300f64..1e300, b in -1e300f64..1e300) {
            prop_assert_eq!(
                key(&[Value::Float(a)]).cmp(&key(&[Value::Float(b)])),
                a.partial_cmp(&b).expect("finite")
            );
        }

        #[test]
        fn byte_keys_sort_like_the_bytes(a in proptest::collection::vec(any::<u8>(), 0..10),
                                         b in proptest::collection::vec(any::<u8>(), 0..10)) {
            prop_assert_eq!(key(&[Value::Bytes(a.clone())]).cmp(&key(&[Value::Bytes(b.clone())])), a.cmp(&b));
        }
    }

    #[test]
    fn long_ids_are_hashed_to_the_limit() {
        assert_eq!(bounded_id("short", 100), "short");
        let long = format!("logtide-app-{}", "x".repeat(200));
        let b = bounded_id(&long, 100);
        assert_eq!(b.len(), 100);
        assert!(b.starts_with("logtide-app-xxx"), "{b}");
        let other = format!("logtide-app-{}y", "x".repeat(199));
        assert_ne!(bounded_id(&other, 100), b);
        assert_eq!(bounded_id(&long, 100), b, "deterministic");
        // Never splits a character.
        let wide = "é".repeat(80);
        assert!(bounded_id(&wide, 100).len() <= 100);
    }

    #[test]
    fn timestamps_with_fractions_sort_in_time_order() {
        let ts = [
            "2024-01-01T10:00:00Z",
            "2024-01-01T10:00:00.000001Z",
            "2024-01-01T10:00:00.5Z",
            "2024-01-01T10:00:01Z",
        ];
        for w in ts.windows(2) {
            let a = key(&[Value::TimestampTz(w[0].into())]);
            let b = key(&[Value::TimestampTz(w[1].into())]);
            assert!(a < b, "{a} vs {b}");
        }
    }

    /// Pinned: a change here renames every backfilled row (consumers would see them all
    /// again under new cursors). Change only with a note in the README's upgrade section.
    #[test]
    fn identity_and_hash_are_pinned() {
        let id = RowIdentity::new("public.t", &["id".into(), "v".into()]);
        let row: Row = vec![Some(Value::Int(42)), Some(Value::Text("x".into()))];
        assert_eq!(id.content_hash(&row), 0x8AFF_4DF4_5523_A7EC);
        assert_eq!(
            id.row(&[0], 7, &row),
            "public.t!i800000000000002A!8AFF4DF45523A7EC"
        );
        assert_eq!(
            id.row(&[], 7, &row),
            "public.t!#0000000000000007!8AFF4DF45523A7EC"
        );
        // Content decides the hash; an absent cell differs from NULL.
        let other: Row = vec![Some(Value::Int(42)), Some(Value::Text("y".into()))];
        assert_ne!(id.content_hash(&row), id.content_hash(&other));
        let absent: Row = vec![Some(Value::Int(42)), None];
        let null: Row = vec![Some(Value::Int(42)), Some(Value::Null)];
        assert_ne!(id.content_hash(&absent), id.content_hash(&null));
        // Column names are part of the content.
        let renamed = RowIdentity::new("public.t", &["id".into(), "w".into()]);
        assert_ne!(id.content_hash(&row), renamed.content_hash(&row));
    }

    /// Pinned like the above, for backfill rows (XXH3-64; cursor format 3).
    #[test]
    fn backfill_identity_and_hash_are_pinned() {
        let cols: Vec<String> = vec!["id".into(), "v".into()];
        let id = RowIdentity::backfill("public.t", &cols);
        let row: Row = vec![Some(Value::Int(42)), Some(Value::Text("x".into()))];
        let h = id.content_hash(&row);
        assert_eq!(h, PINNED_BACKFILL_HASH, "{h:016X}");
        assert_eq!(
            id.row(&[0], 7, &row),
            format!("public.t!i800000000000002A!{PINNED_BACKFILL_HASH:016X}")
        );
        // The same rules as query mode: content, absent vs NULL, column names.
        let other: Row = vec![Some(Value::Int(42)), Some(Value::Text("y".into()))];
        assert_ne!(h, id.content_hash(&other));
        let absent: Row = vec![Some(Value::Int(42)), None];
        let null: Row = vec![Some(Value::Int(42)), Some(Value::Null)];
        assert_ne!(id.content_hash(&absent), id.content_hash(&null));
        let renamed = RowIdentity::backfill("public.t", &["id".into(), "w".into()]);
        assert_ne!(h, renamed.content_hash(&row));
        // Not query mode's hash (a different format, recorded in the run state).
        assert_ne!(h, RowIdentity::new("public.t", &cols).content_hash(&row));
    }

    const PINNED_BACKFILL_HASH: u64 = 0xFB63_B73E_2287_3675;
}
