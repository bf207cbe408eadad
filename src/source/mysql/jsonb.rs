//! MySQL 8's binary JSON format (the JSON column in rows events) to JSON text.
//!
//! Layout (MySQL `sql-common/json_binary.cc`): a type byte, then the value. Objects and
//! arrays come in a small (2-byte offsets) and a large (4-byte offsets) form: element count,
//! byte size, key entries (offset + 2-byte length), value entries (type + offset, or the
//! value inlined when it fits), then keys and values; offsets are relative to the start of
//! the container. Scalars: literals, int16/32/64, uint16/32/64, double, utf8mb4 strings
//! with a variable-length size, and "opaque" values carrying a MySQL column type
//! (DECIMAL, DATE, TIME, DATETIME, TIMESTAMP; other opaque types as MySQL prints them,
//! `"base64:typeN:…"`).
//!
//! [`to_doc`] reads the same format into a tree ([`Doc`]) for partial updates
//! (`json_diff.rs`); it prints exactly as [`to_json_text`] writes.
//!
//! The text is written the way MySQL's `SELECT` prints JSON (`{"a": 1, "b": [1, 2]}`), so
//! both paths agree. Every read is checked: malformed input is an error, never a panic,
//! and nesting is bounded.

use base64::Engine as _;
use std::fmt::Write as _;

const SMALL_OBJECT: u8 = 0x00;
const LARGE_OBJECT: u8 = 0x01;
const SMALL_ARRAY: u8 = 0x02;
const LARGE_ARRAY: u8 = 0x03;
const LITERAL: u8 = 0x04;
const INT16: u8 = 0x05;
const UINT16: u8 = 0x06;
const INT32: u8 = 0x07;
const UINT32: u8 = 0x08;
const INT64: u8 = 0x09;
const UINT64: u8 = 0x0a;
const DOUBLE: u8 = 0x0b;
const STRING: u8 = 0x0c;
const OPAQUE: u8 = 0x0f;

const MAX_DEPTH: usize = 150;

/// Malformed binary JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonbError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, JsonbError> {
    Err(JsonbError(msg.into()))
}

fn get(buf: &[u8], at: usize, n: usize) -> Result<&[u8], JsonbError> {
    at.checked_add(n)
        .and_then(|end| buf.get(at..end))
        .ok_or_else(|| {
            JsonbError(format!(
                "truncated: {n} bytes at offset {at} of {}",
                buf.len()
            ))
        })
}

fn le(buf: &[u8], at: usize, n: usize) -> Result<u64, JsonbError> {
    Ok(get(buf, at, n)?
        .iter()
        .rev()
        .fold(0u64, |a, &b| (a << 8) | u64::from(b)))
}

/// Decodes a binary JSON document. An empty document (MySQL writes one for a JSON `null`
/// in some paths) is `null`.
pub fn to_json_text(doc: &[u8]) -> Result<String, JsonbError> {
    let mut out = String::with_capacity(doc.len() * 2);
    if doc.is_empty() {
        out.push_str("null");
        return Ok(out);
    }
    let t = doc[0];
    write_value(&mut out, t, doc.get(1..).unwrap_or(&[]), 0)?;
    Ok(out)
}

fn write_value(out: &mut String, t: u8, data: &[u8], depth: usize) -> Result<(), JsonbError> {
    if depth > MAX_DEPTH {
        return err("nesting too deep");
    }
    match container_form(t) {
        Some((large, object)) => write_container(out, data, large, object, depth),
        None => write_scalar(out, t, data, 0),
    }
}

fn write_scalar(out: &mut String, t: u8, data: &[u8], at: usize) -> Result<(), JsonbError> {
    match t {
        LITERAL => match le(data, at, 1)? {
            0 => out.push_str("null"),
            1 => out.push_str("true"),
            2 => out.push_str("false"),
            x => return err(format!("unknown literal {x}")),
        },
        INT16 => {
            let _ = write!(out, "{}", le(data, at, 2)? as u16 as i16);
        }
        UINT16 => {
            let _ = write!(out, "{}", le(data, at, 2)?);
        }
        INT32 => {
            let _ = write!(out, "{}", le(data, at, 4)? as u32 as i32);
        }
        UINT32 => {
            let _ = write!(out, "{}", le(data, at, 4)?);
        }
        INT64 => {
            let _ = write!(out, "{}", le(data, at, 8)? as i64);
        }
        UINT64 => {
            let _ = write!(out, "{}", le(data, at, 8)?);
        }
        DOUBLE => {
            let f = f64::from_bits(le(data, at, 8)?);
            if !f.is_finite() {
                return err("non-finite double");
            }
            let _ = write!(out, "{f:?}");
        }
        STRING => {
            let (len, n) = var_len(data, at)?;
            let s = get(data, at + n, len)?;
            let s = std::str::from_utf8(s).map_err(|_| JsonbError("string is not utf8".into()))?;
            write_str(out, s);
        }
        OPAQUE => write_opaque(out, data, at)?,
        x => return err(format!("unknown value type {x:#04x}")),
    }
    Ok(())
}

/// The variable-length size of strings and opaque values: 7 bits per byte, high bit =
/// more, at most 5 bytes.
fn var_len(data: &[u8], at: usize) -> Result<(usize, usize), JsonbError> {
    let mut len: u64 = 0;
    for i in 0..5 {
        let b = le(data, at + i, 1)?;
        len |= (b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return usize::try_from(len)
                .map(|l| (l, i + 1))
                .map_err(|_| JsonbError("length overflows".into()));
        }
    }
    err("variable length longer than 5 bytes")
}

/// One container (object or array) of a binary JSON document, its entries checked to fit.
struct Container<'a> {
    data: &'a [u8],
    large: bool,
    count: usize,
    values_at: usize,
}

/// A member or element of a [`Container`].
enum Item<'a> {
    /// A scalar of type `t` at `data[at..]` (inlined in its entry, or at an offset).
    Scalar { t: u8, data: &'a [u8], at: usize },
    /// A nested container of type `t` starting at `data[0]`.
    Nested { t: u8, data: &'a [u8] },
}

impl<'a> Container<'a> {
    fn open(data: &'a [u8], large: bool, object: bool) -> Result<Self, JsonbError> {
        let w = if large { 4 } else { 2 };
        let count = le(data, 0, w)? as usize;
        let size = le(data, w, w)? as usize;
        if size > data.len() {
            return err(format!(
                "container size {size} exceeds the {} bytes present",
                data.len()
            ));
        }
        let data = &data[..size];
        let header = 2 * w;
        let overflow = || JsonbError("count overflows".into());
        let values_at = if object {
            header
                .checked_add(count.checked_mul(w + 2).ok_or_else(overflow)?)
                .ok_or_else(overflow)?
        } else {
            header
        };
        // Every entry must fit before anything is read.
        get(data, values_at, count.saturating_mul(1 + w))?;
        Ok(Container {
            data,
            large,
            count,
            values_at,
        })
    }

    fn width(&self) -> usize {
        if self.large {
            4
        } else {
            2
        }
    }

    /// The key of member `i` (objects only).
    fn key(&self, i: usize) -> Result<&'a str, JsonbError> {
        let w = self.width();
        let e = 2 * w + i * (w + 2);
        let off = le(self.data, e, w)? as usize;
        let len = le(self.data, e + w, 2)? as usize;
        std::str::from_utf8(get(self.data, off, len)?)
            .map_err(|_| JsonbError("key is not utf8".into()))
    }

    fn item(&self, i: usize) -> Result<Item<'a>, JsonbError> {
        let w = self.width();
        let e = self.values_at + i * (1 + w);
        let t = le(self.data, e, 1)? as u8;
        let inlined = match t {
            LITERAL | INT16 | UINT16 => true,
            INT32 | UINT32 => self.large,
            _ => false,
        };
        if inlined {
            return Ok(Item::Scalar {
                t,
                data: self.data,
                at: e + 1,
            });
        }
        let off = le(self.data, e + 1, w)? as usize;
        if off >= self.data.len() {
            return err(format!("value offset {off} outside the container"));
        }
        Ok(match t {
            SMALL_OBJECT | LARGE_OBJECT | SMALL_ARRAY | LARGE_ARRAY => Item::Nested {
                t,
                data: &self.data[off..],
            },
            _ => Item::Scalar {
                t,
                data: self.data,
                at: off,
            },
        })
    }
}

/// `(large, object)` of a container type.
fn container_form(t: u8) -> Option<(bool, bool)> {
    match t {
        SMALL_OBJECT => Some((false, true)),
        LARGE_OBJECT => Some((true, true)),
        SMALL_ARRAY => Some((false, false)),
        LARGE_ARRAY => Some((true, false)),
        _ => None,
    }
}

fn write_container(
    out: &mut String,
    data: &[u8],
    large: bool,
    object: bool,
    depth: usize,
) -> Result<(), JsonbError> {
    let c = Container::open(data, large, object)?;
    out.push(if object { '{' } else { '[' });
    for i in 0..c.count {
        if i > 0 {
            out.push_str(", ");
        }
        if object {
            write_str(out, c.key(i)?);
            out.push_str(": ");
        }
        match c.item(i)? {
            Item::Scalar { t, data, at } => write_scalar(out, t, data, at)?,
            Item::Nested { t, data } => write_value(out, t, data, depth + 1)?,
        }
    }
    out.push(if object { '}' } else { ']' });
    Ok(())
}

/// A JSON document as a tree, for applying partial updates (`json_diff.rs`): members and
/// elements in stored order, each scalar kept as the text MySQL prints for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doc {
    Object(Vec<(String, Doc)>),
    Array(Vec<Doc>),
    Scalar(String),
}

impl Doc {
    /// The document as text, in the form [`to_json_text`] writes.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Doc::Scalar(s) => out.push_str(s),
            Doc::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Doc::Object(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_str(out, k);
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Decodes a binary JSON document into a [`Doc`] (an empty document is `null`, as in
/// [`to_json_text`]).
pub fn to_doc(doc: &[u8]) -> Result<Doc, JsonbError> {
    match doc.split_first() {
        None => Ok(Doc::Scalar("null".into())),
        Some((&t, data)) => doc_value(t, data, 0),
    }
}

fn doc_value(t: u8, data: &[u8], depth: usize) -> Result<Doc, JsonbError> {
    if depth > MAX_DEPTH {
        return err("nesting too deep");
    }
    let Some((large, object)) = container_form(t) else {
        let mut s = String::new();
        write_scalar(&mut s, t, data, 0)?;
        return Ok(Doc::Scalar(s));
    };
    let c = Container::open(data, large, object)?;
    let value = |i: usize| -> Result<Doc, JsonbError> {
        match c.item(i)? {
            Item::Scalar { t, data, at } => {
                let mut s = String::new();
                write_scalar(&mut s, t, data, at)?;
                Ok(Doc::Scalar(s))
            }
            Item::Nested { t, data } => doc_value(t, data, depth + 1),
        }
    };
    if object {
        let mut members = Vec::with_capacity(c.count.min(1024));
        for i in 0..c.count {
            members.push((c.key(i)?.to_owned(), value(i)?));
        }
        Ok(Doc::Object(members))
    } else {
        let mut items = Vec::with_capacity(c.count.min(1024));
        for i in 0..c.count {
            items.push(value(i)?);
        }
        Ok(Doc::Array(items))
    }
}

fn write_opaque(out: &mut String, data: &[u8], at: usize) -> Result<(), JsonbError> {
    let field_type = le(data, at, 1)? as u8;
    let (len, n) = var_len(data, at + 1)?;
    let v = get(data, at + 1 + n, len)?;
    match field_type {
        // NEWDECIMAL: precision, scale, binary decimal.
        246 => {
            let p = *v
                .first()
                .ok_or_else(|| JsonbError("empty decimal".into()))?;
            let s = *v.get(1).ok_or_else(|| JsonbError("empty decimal".into()))?;
            let d = super::types::decode_decimal(v.get(2..).unwrap_or(&[]), p, s)
                .map_err(|e| JsonbError(format!("decimal: {e}")))?;
            out.push_str(&d);
        }
        // DATE, DATETIME, TIMESTAMP: a packed datetime in 8 bytes.
        10 | 12 | 7 => {
            let packed = le(v, 0, 8)? as i64;
            let a = packed.unsigned_abs();
            let ymdhms = a >> 24;
            let micros = a & 0xFF_FFFF;
            let ymd = ymdhms >> 17;
            let ym = ymd >> 5;
            let hms = ymdhms & ((1 << 17) - 1);
            let date = format!("{:04}-{:02}-{:02}", ym / 13, ym % 13, ymd & 31);
            if field_type == 10 {
                write_str(out, &date);
            } else {
                let s = format!(
                    "{date} {:02}:{:02}:{:02}.{micros:06}",
                    hms >> 12,
                    (hms >> 6) & 63,
                    hms & 63
                );
                write_str(out, &s);
            }
        }
        // TIME: a packed time in 8 bytes.
        11 => {
            let packed = le(v, 0, 8)? as i64;
            let a = packed.unsigned_abs();
            let hms = a >> 24;
            let s = format!(
                "{}{:02}:{:02}:{:02}.{:06}",
                if packed < 0 { "-" } else { "" },
                (hms >> 12) & 1023,
                (hms >> 6) & 63,
                hms & 63,
                a & 0xFF_FFFF
            );
            write_str(out, &s);
        }
        t => {
            let s = format!(
                "base64:type{t}:{}",
                base64::engine::general_purpose::STANDARD.encode(v)
            );
            write_str(out, &s);
        }
    }
    Ok(())
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"a": 1, "b": [true, null, "xy"]}` as MySQL 8 writes it (captured layout: small
    /// object, keys after the entries, the array stored after the keys).
    fn sample() -> Vec<u8> {
        let mut array = vec![];
        // count 3, size filled later
        array.extend_from_slice(&3u16.to_le_bytes());
        array.extend_from_slice(&0u16.to_le_bytes());
        array.extend_from_slice(&[LITERAL, 1, 0]); // true inlined
        array.extend_from_slice(&[LITERAL, 0, 0]); // null inlined
        let str_off = (4 + 9) as u16;
        array.push(STRING);
        array.extend_from_slice(&str_off.to_le_bytes());
        array.extend_from_slice(&[2, b'x', b'y']);
        let asize = array.len() as u16;
        array[2..4].copy_from_slice(&asize.to_le_bytes());

        let mut obj = vec![];
        obj.extend_from_slice(&2u16.to_le_bytes());
        obj.extend_from_slice(&0u16.to_le_bytes());
        // key entries: header 4 + 2*4 key entries + 2*3 value entries = 18
        let keys_at = 4 + 8 + 6;
        obj.extend_from_slice(&(keys_at as u16).to_le_bytes());
        obj.extend_from_slice(&1u16.to_le_bytes());
        obj.extend_from_slice(&((keys_at + 1) as u16).to_le_bytes());
        obj.extend_from_slice(&1u16.to_le_bytes());
        obj.extend_from_slice(&[INT16, 1, 0]);
        let arr_off = (keys_at + 2) as u16;
        obj.push(SMALL_ARRAY);
        obj.extend_from_slice(&arr_off.to_le_bytes());
        obj.extend_from_slice(b"ab");
        obj.extend_from_slice(&array);
        let osize = obj.len() as u16;
        obj[2..4].copy_from_slice(&osize.to_le_bytes());
        let mut doc = vec![SMALL_OBJECT];
        doc.extend_from_slice(&obj);
        doc
    }

    #[test]
    fn object_with_nested_array() {
        assert_eq!(
            to_json_text(&sample()).expect("decode"),
            r#"{"a": 1, "b": [true, null, "xy"]}"#
        );
    }

    #[test]
    fn tree_prints_as_the_text() {
        let doc = to_doc(&sample()).expect("tree");
        assert_eq!(doc.to_text(), to_json_text(&sample()).expect("text"));
        match &doc {
            Doc::Object(m) => {
                assert_eq!(m[0], ("a".to_owned(), Doc::Scalar("1".into())));
                assert!(matches!(&m[1].1, Doc::Array(a) if a.len() == 3));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(to_doc(&[]).expect("empty"), Doc::Scalar("null".into()));
        assert_eq!(
            to_doc(&[INT16, 2, 0]).expect("int"),
            Doc::Scalar("2".into())
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(to_json_text(&[LITERAL, 2]).expect("f"), "false");
        assert_eq!(to_json_text(&[INT16, 0xFF, 0xFF]).expect("i"), "-1");
        let mut d = vec![DOUBLE];
        d.extend_from_slice(&1.5f64.to_le_bytes());
        assert_eq!(to_json_text(&d).expect("d"), "1.5");
        let mut u = vec![UINT64];
        u.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(to_json_text(&u).expect("u"), "18446744073709551615");
        assert_eq!(
            to_json_text(&[STRING, 3, b'a', b'"', b'\n']).expect("s"),
            r#""a\"\n""#
        );
        assert_eq!(to_json_text(&[]).expect("empty"), "null");
        // Opaque DECIMAL(4,2) 12.34: precision 4, scale 2, bytes 0x8C 0x22.
        assert_eq!(
            to_json_text(&[OPAQUE, 246, 4, 4, 2, 0x8C, 0x22]).expect("dec"),
            "12.34"
        );
    }

    #[test]
    fn truncations_are_errors_not_panics() {
        let doc = sample();
        for n in 0..doc.len() {
            let _ = to_json_text(&doc[..n]);
        }
        assert!(to_json_text(&doc[..doc.len() - 1]).is_err());
        assert!(to_json_text(&[STRING, 0x80, 0x80, 0x80, 0x80, 0x80]).is_err());
        assert!(to_json_text(&[0x33]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(doc in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let text = to_json_text(&doc);
            let tree = to_doc(&doc).map(|d| d.to_text());
            proptest::prop_assert_eq!(text, tree);
        }
    }
}
