//! The one lossless column value shared by every source and sink.
//!
//! Sources decode their wire formats into [`Value`]; sinks only ever see this type, so a
//! value looks the same whether it came from pgoutput, a binlog rows event or a backfill
//! `SELECT`. The JSON form of each variant is documented in the README ("Type mapping") and
//! pinned by the tests at the bottom of this file.
//!
//! Temporal values are kept as their canonical ISO 8601 text (produced by the source's
//! decoder), because both engines allow ranges and special values (`infinity`, zero dates,
//! negative times) that no single Rust date type represents losslessly.

use base64::Engine as _;
use std::io::{self, Write};

/// A decoded column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL. JSON `null`.
    Null,
    /// JSON `true` / `false`.
    Bool(bool),
    /// Signed integer. JSON number, exact.
    Int(i64),
    /// Unsigned integer (MySQL `BIGINT UNSIGNED` up to 2^64-1). JSON number, exact.
    UInt(u64),
    /// Binary floating point. JSON number; `NaN`, `Infinity`, `-Infinity` as strings.
    Float(f64),
    /// Exact decimal as its canonical text (`"12.50"`, `"NaN"`, `"Infinity"`). JSON string.
    Decimal(String),
    /// Character data. JSON string.
    Text(String),
    /// Binary data. JSON string, standard base64 with padding.
    Bytes(Vec<u8>),
    /// A JSON document, kept as its (valid) JSON text and emitted inline — except the two
    /// documents that would be ambiguous inline (see [`write_json_doc`]): a top-level JSON
    /// `null` (inline it would read as SQL NULL) is written `{"$json":null}`, and an object
    /// whose only key is `"$json"` is wrapped the same way. One rule for every engine.
    Json(String),
    /// Calendar date `YYYY-MM-DD` (or the server's special text such as `infinity`,
    /// `0000-00-00`). JSON string.
    Date(String),
    /// Time of day `HH:MM:SS[.ffffff]`, with offset for `timetz`; MySQL `TIME` may be
    /// negative or over 24 h. JSON string.
    Time(String),
    /// Timestamp without time zone `YYYY-MM-DDTHH:MM:SS[.ffffff]`. JSON string.
    Timestamp(String),
    /// Instant in UTC `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`. JSON string.
    TimestampTz(String),
    /// PostgreSQL interval in ISO 8601 duration form (`P1Y2M3DT4H5M6.5S`). JSON string.
    Interval(String),
    /// UUID in lowercase hyphenated form. JSON string.
    Uuid(String),
    /// Array (possibly multi-dimensional: nested arrays), elements may be `Null`.
    Array(Vec<Value>),
    /// MySQL `SET`: the member names. JSON array of strings.
    Set(Vec<String>),
}

impl Value {
    /// Writes the JSON form of this value.
    pub fn write_json<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        match self {
            Value::Null => out.write_all(b"null"),
            Value::Bool(true) => out.write_all(b"true"),
            Value::Bool(false) => out.write_all(b"false"),
            Value::Int(i) => {
                let mut buf = itoa_buf();
                out.write_all(fmt_int(&mut buf, *i))
            }
            Value::UInt(u) => write!(out, "{u}"),
            Value::Float(f) => {
                if f.is_nan() {
                    out.write_all(b"\"NaN\"")
                } else if f.is_infinite() {
                    out.write_all(if *f > 0.0 {
                        b"\"Infinity\""
                    } else {
                        b"\"-Infinity\""
                    })
                } else {
                    // `{:?}` is Rust's shortest round-trip representation.
                    write!(out, "{f:?}")
                }
            }
            Value::Decimal(s)
            | Value::Text(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::TimestampTz(s)
            | Value::Interval(s)
            | Value::Uuid(s) => write_json_str(out, s),
            Value::Bytes(b) => {
                out.write_all(b"\"")?;
                out.write_all(
                    base64::engine::general_purpose::STANDARD
                        .encode(b)
                        .as_bytes(),
                )?;
                out.write_all(b"\"")
            }
            Value::Json(raw) => write_json_doc(out, raw),
            Value::Array(items) => {
                out.write_all(b"[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    v.write_json(out)?;
                }
                out.write_all(b"]")
            }
            Value::Set(items) => {
                out.write_all(b"[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    write_json_str(out, v)?;
                }
                out.write_all(b"]")
            }
        }
    }

    /// The JSON form as a `serde_json::Value` (used by mapping sinks, not the hot path).
    pub fn to_json(&self) -> serde_json::Value {
        let mut buf = Vec::with_capacity(32);
        // Writing into a Vec cannot fail, and our writer only emits valid JSON.
        if self.write_json(&mut buf).is_err() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null)
    }
}

fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

/// Writes a JSON document value so that it can never be confused with SQL NULL.
///
/// Inline, the document `null` and SQL NULL would both be `null`. The rule: a document is
/// written as itself, except when it is `null` or an object whose only key is `"$json"`;
/// those are written wrapped as `{"$json":<document>}`. A consumer decodes a JSON column as:
/// `null` → SQL NULL; an object whose only key is `"$json"` → the value under that key;
/// anything else → the document itself. Lossless, and ordinary documents stay native.
pub fn write_json_doc<W: Write + ?Sized>(out: &mut W, raw: &str) -> io::Result<()> {
    if needs_json_wrap(raw) {
        out.write_all(b"{\"$json\":")?;
        out.write_all(raw.trim().as_bytes())?;
        out.write_all(b"}")
    } else {
        out.write_all(raw.as_bytes())
    }
}

fn needs_json_wrap(raw: &str) -> bool {
    let t = raw.trim();
    if t == "null" {
        return true;
    }
    // Only an object mentioning `$` (or an escape that could spell it) can be `{"$json":…}`.
    if !t.starts_with('{') || !(t.contains('$') || t.contains("\\u")) {
        return false;
    }
    // The values are skipped, not built: `IgnoredAny` has no nesting limit (a `Value` tree
    // stops at 128 levels, and a deeper document would then go out unwrapped).
    matches!(
        serde_json::from_str::<std::collections::BTreeMap<String, serde::de::IgnoredAny>>(t),
        Ok(m) if m.len() == 1 && m.contains_key("$json")
    )
}

/// The decimal digits of `n`, written at the end of `buf` (hot paths: event values,
/// cursors, temporal fields; no formatting machinery). Returns where they start.
pub(crate) fn digits_into(buf: &mut [u8; 20], mut n: u64) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// Appends `v` zero-padded to `width` digits (more digits if it has more), as
/// `{:0width$}` does, without the formatting machinery: date and time values of both
/// engines format their fields with it per row.
pub(crate) fn push_padded(s: &mut String, v: u64, width: usize) {
    // Date and time fields (2, 4 and 6 digits): a character per digit, no buffer to check.
    if (1..=8).contains(&width) && v < 10u64.pow(width as u32) {
        let mut digits = [b'0'; 8];
        let mut x = v;
        for d in digits[..width].iter_mut().rev() {
            *d = b'0' + (x % 10) as u8;
            x /= 10;
        }
        for &d in &digits[..width] {
            s.push(char::from(d));
        }
        return;
    }
    // Zeros first: the padding is the part of the buffer the digits do not reach.
    let mut buf = [b'0'; 20];
    let i = digits_into(&mut buf, v);
    for _ in buf.len()..width {
        s.push('0');
    }
    let start = i.min(buf.len().saturating_sub(width));
    // ASCII digits: one copy instead of a push per character.
    s.push_str(std::str::from_utf8(&buf[start..]).unwrap_or_default());
}

/// Writes `v` in decimal (event envelopes' numbers: one call per event, no formatting
/// machinery).
pub(crate) fn write_int<W: Write + ?Sized>(out: &mut W, v: i64) -> io::Result<()> {
    let mut buf = itoa_buf();
    out.write_all(fmt_int(&mut buf, v))
}

/// Writes `v` in decimal, as [`write_int`].
pub(crate) fn write_uint<W: Write + ?Sized>(out: &mut W, v: u64) -> io::Result<()> {
    let mut buf = itoa_buf();
    let i = digits_into(&mut buf, v);
    out.write_all(&buf[i..])
}

fn fmt_int(buf: &mut [u8; 20], v: i64) -> &[u8] {
    let neg = v < 0;
    let mut i = digits_into(buf, v.unsigned_abs());
    if neg {
        // i64::MIN has 19 digits, so there is always room for the sign.
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// Writes `s` as a JSON string literal with the escapes RFC 8259 requires.
pub fn write_json_str<W: Write + ?Sized>(out: &mut W, s: &str) -> io::Result<()> {
    out.write_all(b"\"")?;
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip 8-byte blocks without a byte that needs escaping (most text, and most of
        // the stretches between the quotes of JSON held in a text column).
        if let Some(block) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(block);
            if !needs_escape(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc = ESCAPE[usize::from(b)];
        if esc != 0 {
            out.write_all(&bytes[start..i])?;
            if esc == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let e = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ];
                out.write_all(&e)?;
            } else {
                out.write_all(&[b'\\', esc])?;
            }
            start = i + 1;
        }
        i += 1;
    }
    out.write_all(&bytes[start..])?;
    out.write_all(b"\"")
}

/// Per byte: 0 when it goes out as is, else the character after the backslash of its
/// escape (`u` for the `\u00XX` form of the other control characters).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = b'u';
        c += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Whether any byte of the block is a control character, `"` or `\\` (SWAR: a byte
/// is below 0x20, or equal to 0x22 / 0x5c, exactly when its high bit survives below).
pub(crate) fn needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0;
    below_space || has_zero(x ^ (ONES * 0x22)) || has_zero(x ^ (ONES * 0x5c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(v: &Value) -> String {
        let mut b = Vec::new();
        v.write_json(&mut b).expect("write");
        String::from_utf8(b).expect("utf8")
    }

    #[test]
    fn json_null_and_sql_null_never_look_alike() {
        assert_eq!(json_of(&Value::Null), "null");
        assert_eq!(json_of(&Value::Json("null".into())), r#"{"$json":null}"#);
        assert_eq!(json_of(&Value::Json(" null ".into())), r#"{"$json":null}"#);
        // Inside a document, null is unambiguous and stays native.
        assert_eq!(json_of(&Value::Json("[null]".into())), "[null]");
        assert_eq!(
            json_of(&Value::Json(r#"{"a":null}"#.into())),
            r#"{"a":null}"#
        );
        // A document that looks like the wrapper is itself wrapped, so decoding is exact.
        assert_eq!(
            json_of(&Value::Json(r#"{"$json":null}"#.into())),
            r#"{"$json":{"$json":null}}"#
        );
        assert_eq!(
            json_of(&Value::Json(r#"{"\u0024json":1}"#.into())),
            r#"{"$json":{"\u0024json":1}}"#
        );
        assert_eq!(
            json_of(&Value::Json(r#"{"$json":1,"b":2}"#.into())),
            r#"{"$json":1,"b":2}"#
        );
        // However deep the wrapped-looking document nests.
        let deep = format!(r#"{{"$json":{}1{}}}"#, "[".repeat(500), "]".repeat(500));
        assert_eq!(
            json_of(&Value::Json(deep.clone())),
            format!(r#"{{"$json":{deep}}}"#)
        );
        // Arrays of JSON documents (PostgreSQL jsonb[]): element NULL vs element JSON null.
        let arr = Value::Array(vec![
            Value::Null,
            Value::Json("null".into()),
            Value::Json("1".into()),
        ]);
        assert_eq!(json_of(&arr), r#"[null,{"$json":null},1]"#);
    }

    #[test]
    fn escaping_matches_serde_json_for_every_byte_position() {
        for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", "é", " ", "\u{7f}"] {
            for at in 0..20 {
                let s = format!("{}{special}{}", "a".repeat(at), "b".repeat(20 - at));
                let mut b = Vec::new();
                write_json_str(&mut b, &s).expect("write");
                let back: String = serde_json::from_slice(&b).expect("valid JSON string");
                assert_eq!(back, s);
                let plain = serde_json::to_string(&s).expect("serde");
                assert_eq!(String::from_utf8(b).expect("utf8"), plain, "{s:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_round_trips_through_its_json_literal(s in "(?s).{0,40}", pad in 0usize..9) {
            // Shifted by `pad` so every character meets every position of the 8-byte blocks.
            let s = format!("{}{s}", "a".repeat(pad));
            let mut b = Vec::new();
            write_json_str(&mut b, &s).expect("write");
            proptest::prop_assert!(b.iter().all(|&c| c >= 0x20), "raw control byte in {:?}", b);
            let back: String = serde_json::from_slice(&b).expect("valid JSON string");
            proptest::prop_assert_eq!(back, s);
        }
    }

    fn json(v: &Value) -> String {
        let mut b = Vec::new();
        v.write_json(&mut b).expect("write to vec");
        String::from_utf8(b).expect("utf8")
    }

    #[test]
    fn write_int_and_uint_match_display() {
        for v in [
            0i64,
            1,
            -1,
            9,
            10,
            -10,
            i64::MAX,
            i64::MIN,
            1_733_000_000_123,
        ] {
            let mut b = Vec::new();
            write_int(&mut b, v).expect("write");
            assert_eq!(String::from_utf8(b).expect("utf8"), v.to_string());
        }
        for v in [0u64, 7, 10, u64::MAX] {
            let mut b = Vec::new();
            write_uint(&mut b, v).expect("write");
            assert_eq!(String::from_utf8(b).expect("utf8"), v.to_string());
        }
    }

    #[test]
    fn integers_are_exact() {
        assert_eq!(json(&Value::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(json(&Value::Int(0)), "0");
        assert_eq!(json(&Value::Int(-7)), "-7");
        assert_eq!(json(&Value::UInt(u64::MAX)), "18446744073709551615");
    }

    #[test]
    fn floats_and_specials() {
        assert_eq!(json(&Value::Float(1.5)), "1.5");
        assert_eq!(json(&Value::Float(f64::NAN)), "\"NaN\"");
        assert_eq!(json(&Value::Float(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(json(&Value::Float(0.1)), "0.1");
    }

    #[test]
    fn strings_are_escaped() {
        let v = Value::Text("a\"b\\c\nd\u{1}é😀".into());
        let s = json(&v);
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001é😀\"");
        let back: String = serde_json::from_str(&s).expect("valid json");
        assert_eq!(back, "a\"b\\c\nd\u{1}é😀");
    }

    #[test]
    fn bytes_arrays_sets_json() {
        assert_eq!(json(&Value::Bytes(vec![0, 255, 1])), "\"AP8B\"");
        let arr = Value::Array(vec![
            Value::Array(vec![Value::Int(1), Value::Null]),
            Value::Array(vec![Value::Int(3), Value::Int(4)]),
        ]);
        assert_eq!(json(&arr), "[[1,null],[3,4]]");
        assert_eq!(
            json(&Value::Set(vec!["a".into(), "b".into()])),
            "[\"a\",\"b\"]"
        );
        assert_eq!(json(&Value::Json("{\"k\":[1]}".into())), "{\"k\":[1]}");
    }
}
