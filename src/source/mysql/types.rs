//! MySQL/MariaDB column types and their exact decoding into [`Value`].
//!
//! One [`Kind`] per column, built once per table map (see `table.rs`), decodes both paths:
//! [`decode_binlog`] for the binary row images of rows events and [`decode_text`] for the
//! text protocol result of a `SELECT` (backfill), so a value looks the same whichever path
//! produced it. The text path assumes the session uses `utf8mb4` and `time_zone = '+00:00'`.
//!
//! Type mapping (also in the README):
//!
//! | column | value |
//! |---|---|
//! | TINYINT…BIGINT | `Int`; `UInt` when UNSIGNED (BIGINT UNSIGNED max is exact) |
//! | DECIMAL | `Decimal`, text with exactly `scale` fraction digits, like `SELECT` |
//! | FLOAT | `Float` of the shortest decimal text of the `f32` (`1.1`, not `1.100000023841858`) |
//! | DOUBLE | `Float` |
//! | BIT(n) | `UInt` (big-endian bits, n ≤ 64) |
//! | YEAR | `Int` (`0` for the zero year) |
//! | DATE | `Date` `YYYY-MM-DD`; zero dates stay as text (`0000-00-00`, `2024-00-00`) |
//! | DATETIME(p) | `Timestamp` `YYYY-MM-DDTHH:MM:SS[.f]` with exactly p digits |
//! | TIMESTAMP(p) | `TimestampTz` `…Z` in UTC (the binlog stores epoch seconds); zero is `0000-00-00T00:00:00Z` |
//! | TIME(p) | `Time` `[-]HH:MM:SS[.f]`, negative and over 24 h kept (`-838:59:59`) |
//! | CHAR/VARCHAR/TEXT | `Text`, decoded by the column's character set ([`Charset`]) |
//! | BINARY/VARBINARY/BLOB | `Bytes`; BINARY(n) padded with `0x00` to n bytes like `SELECT` |
//! | ENUM | `Text` of the member name (`""` for the invalid index 0) |
//! | SET | `Set` of member names |
//! | JSON | `Json`: MySQL's binary JSON decoded ([`super::jsonb`]); MariaDB's JSON text as is |
//! | GEOMETRY | `Bytes` of the server's internal form: 4-byte little-endian SRID, then WKB |
//! | MariaDB UUID | `Uuid`, lowercase `123e4567-e89b-12d3-a456-426614174000` |
//! | MariaDB INET4 / INET6 | `Text` as the server prints it (`192.168.1.10`, `::1`, `::ffff:1.2.3.4`) |
//! | MariaDB `… COMPRESSED` | the column's own value, decompressed (zlib or stored) |

use super::charset::Charset;
use super::jsonb;
use crate::value::{push_padded, Value};
use std::fmt::Write as _;
use std::sync::Arc;

/// How one column is stored and decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// TINYINT (1), SMALLINT (2), MEDIUMINT (3), INT (4), BIGINT (8).
    Int {
        bytes: u8,
        unsigned: bool,
    },
    Year,
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// BIT(bits).
    Bit {
        bits: u16,
    },
    Date,
    /// TIME(fsp), MySQL 5.6+ format.
    Time {
        fsp: u8,
    },
    /// Pre-5.6 TIME (no fraction).
    TimeOld,
    DateTime {
        fsp: u8,
    },
    DateTimeOld,
    Timestamp {
        fsp: u8,
    },
    TimestampOld,
    /// CHAR(n)/BINARY(n); `max_len` in bytes.
    Char {
        max_len: u16,
        charset: Charset,
    },
    /// VARCHAR(n)/VARBINARY(n); `max_len` in bytes.
    Varchar {
        max_len: u16,
        charset: Charset,
    },
    /// TEXT/BLOB family; `pack_len` is the size of the length prefix (1–4).
    Blob {
        pack_len: u8,
        charset: Charset,
    },
    /// MariaDB JSON (a LONGTEXT with a `json_valid` check).
    JsonText {
        pack_len: u8,
    },
    /// MySQL binary JSON.
    JsonBinary {
        pack_len: u8,
    },
    Geometry {
        pack_len: u8,
    },
    /// MySQL 9 VECTOR(n) (binlog type 242): a BLOB of `n` little-endian IEEE float32s;
    /// decoded as a JSON array of numbers.
    Vector {
        pack_len: u8,
    },
    Enum {
        pack_len: u8,
        names: Arc<Vec<String>>,
    },
    Set {
        pack_len: u8,
        names: Arc<Vec<String>>,
    },
    /// MariaDB UUID: BINARY(16) in the binlog (trailing zero bytes stripped, like BINARY).
    Uuid,
    /// MariaDB INET4: BINARY(4).
    Inet4,
    /// MariaDB INET6: BINARY(16).
    Inet6,
    /// A MariaDB `COMPRESSED` column (binlog types 140/141): `inner`'s length prefix, then
    /// a one-byte header and the compressed (or stored) data.
    Compressed(Box<Kind>),
}

/// A column value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated value: needs {need} bytes, {have} left")]
    Truncated { need: usize, have: usize },
    #[error("{0}")]
    Invalid(String),
    /// A PARTIAL_UPDATE_ROWS_EVENT's JSON diff that cannot be read or applied.
    #[error("partial JSON update (binlog_row_value_options=PARTIAL_JSON): {0}")]
    PartialJson(#[source] super::json_diff::DiffError),
}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

fn need(buf: &[u8], n: usize) -> Result<&[u8], DecodeError> {
    buf.get(..n).ok_or(DecodeError::Truncated {
        need: n,
        have: buf.len(),
    })
}

/// Little-endian unsigned integer of `n` (≤ 8) bytes at the start of `buf`.
pub(crate) fn le_uint(buf: &[u8], n: usize) -> Result<u64, DecodeError> {
    let b = need(buf, n)?;
    Ok(b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

/// Big-endian unsigned integer of `n` (≤ 8) bytes at the start of `buf`.
fn be_uint(buf: &[u8], n: usize) -> Result<u64, DecodeError> {
    let b = need(buf, n)?;
    Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

fn decimal_size(precision: u8, scale: u8) -> usize {
    let intg = usize::from(precision.saturating_sub(scale));
    let frac = usize::from(scale);
    (intg / 9) * 4 + DIG2BYTES[intg % 9] + (frac / 9) * 4 + DIG2BYTES[frac % 9]
}

fn frac_bytes(fsp: u8) -> usize {
    usize::from(fsp).div_ceil(2)
}

impl Kind {
    /// Whether the column holds character data in a character set (not binary).
    pub fn charset(&self) -> Option<&Charset> {
        match self {
            Kind::Char { charset, .. }
            | Kind::Varchar { charset, .. }
            | Kind::Blob { charset, .. } => Some(charset),
            _ => None,
        }
    }
}

/// The length in bytes of the binlog value of `kind` at the start of `buf`.
pub fn field_len(kind: &Kind, buf: &[u8]) -> Result<usize, DecodeError> {
    let len = match kind {
        Kind::Int { bytes, .. } => usize::from(*bytes),
        Kind::Year => 1,
        Kind::Float => 4,
        Kind::Double => 8,
        Kind::Decimal { precision, scale } => decimal_size(*precision, *scale),
        Kind::Bit { bits } => usize::from(*bits).div_ceil(8),
        Kind::Date | Kind::TimeOld => 3,
        Kind::Time { fsp } => 3 + frac_bytes(*fsp),
        Kind::DateTime { fsp } => 5 + frac_bytes(*fsp),
        Kind::DateTimeOld => 8,
        Kind::Timestamp { fsp } => 4 + frac_bytes(*fsp),
        Kind::TimestampOld => 4,
        Kind::Char { max_len, .. } | Kind::Varchar { max_len, .. } => {
            let p = if *max_len > 255 { 2 } else { 1 };
            p + le_uint(buf, p)? as usize
        }
        Kind::Blob { pack_len, .. }
        | Kind::JsonText { pack_len }
        | Kind::JsonBinary { pack_len }
        | Kind::Geometry { pack_len }
        | Kind::Vector { pack_len } => {
            let p = usize::from(*pack_len);
            if !(1..=4).contains(&p) {
                return Err(invalid(format!("length prefix of {p} bytes")));
            }
            p.checked_add(le_uint(buf, p)? as usize)
                .ok_or_else(|| invalid("length overflows"))?
        }
        Kind::Enum { pack_len, .. } | Kind::Set { pack_len, .. } => usize::from(*pack_len),
        Kind::Uuid | Kind::Inet4 | Kind::Inet6 => 1 + le_uint(buf, 1)? as usize,
        Kind::Compressed(inner) => return field_len(inner, buf),
    };
    need(buf, len)?;
    Ok(len)
}

/// A VECTOR value (`n` little-endian float32s) as a JSON array, each element in the
/// shortest text that reads back as the same float32.
fn vector(data: &[u8]) -> Result<Value, DecodeError> {
    if data.len() % 4 != 0 {
        return Err(invalid(format!(
            "VECTOR value of {} bytes is not a whole number of float32s",
            data.len()
        )));
    }
    let mut s = String::with_capacity(2 + data.len() * 3);
    s.push('[');
    for (i, c) in data.chunks_exact(4).enumerate() {
        let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if !x.is_finite() {
            return Err(invalid(format!("VECTOR element {i} is {x}")));
        }
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    Ok(Value::Json(s))
}

/// Decodes one binlog value; `field` is exactly the bytes [`field_len`] measured.
pub fn decode_binlog(kind: &Kind, field: &[u8]) -> Result<Value, DecodeError> {
    Ok(match kind {
        Kind::Int { bytes, unsigned } => {
            let n = usize::from(*bytes);
            let u = le_uint(field, n)?;
            if *unsigned {
                Value::UInt(u)
            } else {
                let shift = 64 - 8 * n as u32;
                Value::Int(((u << shift) as i64) >> shift)
            }
        }
        Kind::Year => {
            let y = le_uint(field, 1)?;
            Value::Int(if y == 0 { 0 } else { 1900 + y as i64 })
        }
        Kind::Float => {
            let b = need(field, 4)?;
            float_from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        Kind::Double => {
            let b = need(field, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Value::Float(f64::from_le_bytes(a))
        }
        Kind::Decimal { precision, scale } => {
            Value::Decimal(decode_decimal(field, *precision, *scale)?)
        }
        Kind::Bit { bits } => {
            let n = usize::from(*bits).div_ceil(8);
            if n > 8 {
                return Err(invalid(format!("BIT({bits}) is wider than 64 bits")));
            }
            Value::UInt(be_uint(field, n)?)
        }
        Kind::Date => {
            let v = le_uint(field, 3)?;
            let mut s = String::with_capacity(10);
            push_padded(&mut s, v >> 9, 4);
            s.push('-');
            push_padded(&mut s, (v >> 5) & 15, 2);
            s.push('-');
            push_padded(&mut s, v & 31, 2);
            Value::Date(s)
        }
        Kind::Time { fsp } => Value::Time(decode_time2(field, *fsp)?),
        Kind::TimeOld => {
            let u = le_uint(field, 3)?;
            let v = ((u << 40) as i64) >> 40;
            let neg = v < 0;
            let a = v.unsigned_abs();
            Value::Time(format!(
                "{}{:02}:{:02}:{:02}",
                if neg { "-" } else { "" },
                a / 10000,
                (a / 100) % 100,
                a % 100
            ))
        }
        Kind::DateTime { fsp } => {
            let int = be_uint(field, 5)? as i64 - 0x80_0000_0000;
            let frac = read_frac(field.get(5..).unwrap_or(&[]), *fsp, false)?;
            if int < 0 {
                return Err(invalid("negative DATETIME"));
            }
            let int = int as u64;
            let ymd = int >> 17;
            let hms = int & ((1 << 17) - 1);
            let ym = ymd >> 5;
            let mut s = String::with_capacity(26);
            for (i, (v, w)) in [
                (ym / 13, 4),
                (ym % 13, 2),
                (ymd & 31, 2),
                (hms >> 12, 2),
                ((hms >> 6) & 63, 2),
                (hms & 63, 2),
            ]
            .into_iter()
            .enumerate()
            {
                if i > 0 {
                    s.push(match i {
                        1 | 2 => '-',
                        3 => 'T',
                        _ => ':',
                    });
                }
                push_padded(&mut s, v, w);
            }
            push_frac(&mut s, frac as u64, *fsp);
            Value::Timestamp(s)
        }
        Kind::DateTimeOld => {
            let v = le_uint(field, 8)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            Value::Timestamp(format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                d / 10000,
                (d / 100) % 100,
                d % 100,
                t / 10000,
                (t / 100) % 100,
                t % 100
            ))
        }
        Kind::Timestamp { fsp } => {
            let secs = be_uint(field, 4)?;
            let frac = read_frac(field.get(4..).unwrap_or(&[]), *fsp, false)?;
            Value::TimestampTz(format_epoch(secs as i64, frac as u64, *fsp))
        }
        Kind::TimestampOld => Value::TimestampTz(format_epoch(le_uint(field, 4)? as i64, 0, 0)),
        Kind::Char { max_len, charset } | Kind::Varchar { max_len, charset } => {
            let p = if *max_len > 255 { 2 } else { 1 };
            let data = field.get(p..).unwrap_or(&[]);
            if *charset == Charset::Binary {
                let mut v = data.to_vec();
                if matches!(kind, Kind::Char { .. }) && v.len() < usize::from(*max_len) {
                    // The binlog strips BINARY(n)'s 0x00 padding; SELECT returns it.
                    v.resize(usize::from(*max_len), 0);
                }
                Value::Bytes(v)
            } else {
                Value::Text(charset.decode(data).map_err(DecodeError::Invalid)?)
            }
        }
        Kind::Blob { pack_len, charset } => {
            let data = field.get(usize::from(*pack_len)..).unwrap_or(&[]);
            if *charset == Charset::Binary {
                Value::Bytes(data.to_vec())
            } else {
                Value::Text(charset.decode(data).map_err(DecodeError::Invalid)?)
            }
        }
        Kind::JsonText { pack_len } => {
            json_text(field.get(usize::from(*pack_len)..).unwrap_or(&[]))?
        }
        Kind::JsonBinary { pack_len } => {
            let data = field.get(usize::from(*pack_len)..).unwrap_or(&[]);
            Value::Json(
                jsonb::to_json_text(data).map_err(|e| invalid(format!("binary JSON: {e}")))?,
            )
        }
        Kind::Geometry { pack_len } => {
            Value::Bytes(field.get(usize::from(*pack_len)..).unwrap_or(&[]).to_vec())
        }
        Kind::Vector { pack_len } => vector(field.get(usize::from(*pack_len)..).unwrap_or(&[]))?,
        Kind::Enum { pack_len, names } => {
            let i = le_uint(field, usize::from(*pack_len))? as usize;
            enum_name(names, i)?
        }
        Kind::Set { pack_len, names } => {
            let bits = le_uint(field, usize::from(*pack_len))?;
            set_names(names, bits)?
        }
        Kind::Uuid | Kind::Inet4 | Kind::Inet6 => {
            let width = if *kind == Kind::Inet4 { 4 } else { 16 };
            let data = field.get(1..).unwrap_or(&[]);
            if data.len() > width {
                return Err(invalid(format!(
                    "{} bytes for a {width}-byte value",
                    data.len()
                )));
            }
            let mut b = [0u8; 16];
            b[..data.len()].copy_from_slice(data);
            fixed_binary_text(kind, &b[..width])
        }
        Kind::Compressed(inner) => {
            let prefix = match inner.as_ref() {
                Kind::Varchar { max_len, .. } => {
                    if *max_len > 255 {
                        2
                    } else {
                        1
                    }
                }
                Kind::Blob { pack_len, .. } | Kind::JsonText { pack_len } => usize::from(*pack_len),
                other => return Err(invalid(format!("compressed column of kind {other:?}"))),
            };
            let raw = uncompress(field.get(prefix..).unwrap_or(&[]))?;
            match inner.as_ref() {
                Kind::JsonText { .. } => json_text(&raw)?,
                k => match k.charset() {
                    Some(cs) if *cs != Charset::Binary => {
                        Value::Text(cs.decode(&raw).map_err(DecodeError::Invalid)?)
                    }
                    _ => Value::Bytes(raw),
                },
            }
        }
    })
}

/// The text of a MariaDB UUID / INET4 / INET6 from its `width` bytes (what `SELECT`
/// prints, so stream and backfill agree).
fn fixed_binary_text(kind: &Kind, b: &[u8]) -> Value {
    match (kind, b.len()) {
        (Kind::Inet4, 4) => {
            Value::Text(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
        }
        (Kind::Inet6, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            let v4 = std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]);
            let tail = u32::from_be_bytes([a[12], a[13], a[14], a[15]]);
            // Like the server (and inet_ntop): IPv4-compatible (::a.b.c.d, beyond ::1)
            // and IPv4-mapped (::ffff:a.b.c.d) addresses end in dotted form.
            if a[..12].iter().all(|&x| x == 0) && tail > 1 {
                Value::Text(format!("::{v4}"))
            } else if a[..10].iter().all(|&x| x == 0) && a[10] == 0xff && a[11] == 0xff {
                Value::Text(format!("::ffff:{v4}"))
            } else {
                Value::Text(std::net::Ipv6Addr::from(a).to_string())
            }
        }
        _ => {
            let mut s = String::with_capacity(36);
            for (i, x) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                let _ = write!(s, "{x:02x}");
            }
            Value::Uuid(s)
        }
    }
}

/// Largest value a compressed column may expand to (MariaDB's LONGBLOB limit).
const MAX_UNCOMPRESSED: u64 = u32::MAX as u64;

/// The data of a MariaDB compressed column value: empty; header 0 and the bytes as
/// stored; or header `0x80 | raw<<3 | n` (method 8, zlib), the original length in `n`
/// big-endian bytes and the deflate stream (raw deflate when bit 3 is set, else with a
/// zlib wrapper).
pub fn uncompress(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let Some(&header) = data.first() else {
        return Ok(Vec::new());
    };
    if header == 0 {
        return Ok(data[1..].to_vec());
    }
    if header & 0xF0 != 0x80 {
        return Err(invalid(format!(
            "compressed column with unknown method {} (header 0x{header:02x}); logtide reads zlib",
            header >> 4
        )));
    }
    let n = usize::from(header & 0x07);
    if n == 0 || n > 4 {
        return Err(invalid(format!("compressed column header 0x{header:02x}")));
    }
    let len = be_uint(&data[1..], n)?;
    if len > MAX_UNCOMPRESSED {
        return Err(invalid("compressed column longer than 4 GiB"));
    }
    let stream = &data[1 + n..];
    let raw_first = header & 0x08 != 0;
    let limit = len as usize;
    let inflate = |raw: bool| {
        if raw {
            miniz_oxide::inflate::decompress_to_vec_with_limit(stream, limit)
        } else {
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(stream, limit)
        }
    };
    let out = inflate(raw_first)
        .or_else(|_| inflate(!raw_first))
        .map_err(|e| invalid(format!("compressed column does not inflate: {e}")))?;
    if out.len() != limit {
        return Err(invalid(format!(
            "compressed column inflates to {} bytes, its header says {limit}",
            out.len()
        )));
    }
    Ok(out)
}

fn enum_name(names: &[String], i: usize) -> Result<Value, DecodeError> {
    if i == 0 {
        return Ok(Value::Text(String::new()));
    }
    names
        .get(i - 1)
        .map(|n| Value::Text(n.clone()))
        .ok_or_else(|| {
            invalid(format!(
                "ENUM index {i} but the column has {} members",
                names.len()
            ))
        })
}

fn set_names(names: &[String], bits: u64) -> Result<Value, DecodeError> {
    let mut out = Vec::with_capacity(bits.count_ones() as usize);
    for i in 0..64 {
        if bits & (1u64 << i) != 0 {
            let n = names.get(i).ok_or_else(|| {
                invalid(format!(
                    "SET bit {i} but the column has {} members",
                    names.len()
                ))
            })?;
            out.push(n.clone());
        }
    }
    Ok(Value::Set(out))
}

fn json_text(data: &[u8]) -> Result<Value, DecodeError> {
    let s = std::str::from_utf8(data).map_err(|_| invalid("JSON text is not utf8"))?;
    // Emitted inline, so it must be valid JSON; a column without the check stays text.
    if crate::json_check::is_valid(s) {
        Ok(Value::Json(s.to_owned()))
    } else {
        Ok(Value::Text(s.to_owned()))
    }
}

/// FLOAT as the `f64` of its shortest decimal text, which is what `SELECT` shows.
fn float_from_f32(f: f32) -> Value {
    if !f.is_finite() {
        return Value::Float(f64::from(f));
    }
    let s = format!("{f}");
    Value::Float(s.parse::<f64>().unwrap_or(f64::from(f)))
}

/// Fraction bytes of the 5.6 temporal formats, in microseconds. `signed` for TIME.
fn read_frac(buf: &[u8], fsp: u8, _signed: bool) -> Result<i64, DecodeError> {
    Ok(match fsp {
        0 => 0,
        1 | 2 => be_uint(buf, 1)? as i64 * 10_000,
        3 | 4 => be_uint(buf, 2)? as i64 * 100,
        5 | 6 => be_uint(buf, 3)? as i64,
        _ => return Err(invalid(format!("fractional precision {fsp}"))),
    })
}

fn push_frac(s: &mut String, micros: u64, fsp: u8) {
    if fsp == 0 {
        return;
    }
    let fsp = fsp.min(6);
    let v = micros / 10u64.pow(u32::from(6 - fsp));
    s.push('.');
    push_padded(s, v, usize::from(fsp));
}

/// TIME2: 3 bytes big endian with offset 0x800000, then the fraction; negative values
/// borrow from the integer part (MySQL's `my_time_packed_from_binary`).
fn decode_time2(field: &[u8], fsp: u8) -> Result<String, DecodeError> {
    const OFS: i64 = 0x80_0000;
    let packed: i64 = match fsp {
        0 => (be_uint(field, 3)? as i64 - OFS) << 24,
        1 | 2 => {
            let mut int = be_uint(field, 3)? as i64 - OFS;
            let mut frac = be_uint(field.get(3..).unwrap_or(&[]), 1)? as i64;
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x100;
            }
            (int << 24) + frac * 10_000
        }
        3 | 4 => {
            let mut int = be_uint(field, 3)? as i64 - OFS;
            let mut frac = be_uint(field.get(3..).unwrap_or(&[]), 2)? as i64;
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x10000;
            }
            (int << 24) + frac * 100
        }
        5 | 6 => be_uint(field, 6)? as i64 - 0x8000_0000_0000,
        _ => return Err(invalid(format!("fractional precision {fsp}"))),
    };
    let neg = packed < 0;
    let a = packed.unsigned_abs();
    let hms = a >> 24;
    let micros = a & 0xFF_FFFF;
    let mut s = String::with_capacity(18);
    let _ = write!(
        s,
        "{}{:02}:{:02}:{:02}",
        if neg { "-" } else { "" },
        (hms >> 12) & 1023,
        (hms >> 6) & 63,
        hms & 63
    );
    push_frac(&mut s, micros, fsp);
    Ok(s)
}

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian; Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Epoch seconds (+ µs) as `YYYY-MM-DDTHH:MM:SS[.f]Z`; 0 is MySQL's zero timestamp.
fn format_epoch(secs: i64, micros: u64, fsp: u8) -> String {
    let mut s = String::with_capacity(28);
    if secs == 0 && micros == 0 {
        s.push_str("0000-00-00T00:00:00");
    } else {
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let t = secs.rem_euclid(86_400);
        let _ = write!(
            s,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            t / 3600,
            (t / 60) % 60,
            t % 60
        );
    }
    push_frac(&mut s, micros, fsp);
    s.push('Z');
    s
}

/// The binary NEWDECIMAL format: big-endian groups of 9 digits in 4 bytes, a partial group
/// in 1–4 bytes at each end; the sign bit flipped, negative numbers with every bit inverted.
pub fn decode_decimal(field: &[u8], precision: u8, scale: u8) -> Result<String, DecodeError> {
    if scale > precision || precision > 65 {
        return Err(invalid(format!("DECIMAL({precision},{scale})")));
    }
    let size = decimal_size(precision, scale);
    let raw = need(field, size)?;
    if size == 0 {
        return Ok("0".into());
    }
    let neg = raw[0] & 0x80 == 0;
    // Negative numbers have every bit inverted; the sign bit is flipped either way.
    let mask = if neg { 0xFF } else { 0 };
    let mut pos = 0;
    // One digit group, read in place (one call per group per row: no copy of the field).
    let mut group = |digits: usize| -> Result<u64, DecodeError> {
        let n = DIG2BYTES[digits];
        let bytes = raw
            .get(pos..pos + n)
            .ok_or_else(|| invalid("DECIMAL too short"))?;
        let v = bytes.iter().enumerate().fold(0u64, |acc, (i, &b)| {
            let b = b ^ mask ^ if pos + i == 0 { 0x80 } else { 0 };
            (acc << 8) | u64::from(b)
        });
        pos += n;
        if v >= 10u64.pow(digits as u32) {
            return Err(invalid("DECIMAL digit group out of range"));
        }
        Ok(v)
    };
    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);
    let mut out = String::with_capacity(usize::from(precision) + 3);
    if neg {
        out.push('-');
    }
    let digits_start = out.len();
    let mut nonzero = false;
    // Leading zero groups print nothing; after the first digit, groups are padded.
    let leading = (intg % 9 > 0).then_some(intg % 9);
    for width in leading.into_iter().chain(std::iter::repeat_n(9, intg / 9)) {
        let v = group(width)?;
        if out.len() > digits_start {
            push_padded(&mut out, v, width);
        } else if v > 0 {
            push_padded(&mut out, v, 0);
        }
        nonzero |= v > 0;
    }
    if out.len() == digits_start {
        out.push('0');
    }
    if frac > 0 {
        out.push('.');
    }
    let trailing = (frac % 9 > 0).then_some(frac % 9);
    for width in std::iter::repeat_n(9, frac / 9).chain(trailing) {
        let v = group(width)?;
        push_padded(&mut out, v, width);
        nonzero |= v > 0;
    }
    // Negative zero is zero.
    if neg && !nonzero {
        out.remove(0);
    }
    Ok(out)
}

/// Decodes one value of a text-protocol result row (`SELECT`), with the session in
/// `utf8mb4` and `time_zone = '+00:00'`, into the same [`Value`] as [`decode_binlog`].
/// `None` (SQL NULL) is the caller's business.
pub fn decode_text(kind: &Kind, text: &[u8]) -> Result<Value, DecodeError> {
    let s = || std::str::from_utf8(text).map_err(|_| invalid("text value is not utf8"));
    Ok(match kind {
        Kind::Int { unsigned: true, .. } => Value::UInt(
            s()?.parse()
                .map_err(|_| invalid("not an unsigned integer"))?,
        ),
        Kind::Int { .. } | Kind::Year => {
            Value::Int(s()?.parse().map_err(|_| invalid("not an integer"))?)
        }
        Kind::Float | Kind::Double => {
            Value::Float(s()?.parse().map_err(|_| invalid("not a number"))?)
        }
        Kind::Decimal { .. } => Value::Decimal(s()?.to_owned()),
        Kind::Bit { .. } => {
            if text.len() > 8 {
                return Err(invalid("BIT value wider than 64 bits"));
            }
            Value::UInt(be_uint(text, text.len())?)
        }
        Kind::Date => Value::Date(s()?.to_owned()),
        Kind::Time { .. } | Kind::TimeOld => Value::Time(s()?.to_owned()),
        Kind::DateTime { .. } | Kind::DateTimeOld => Value::Timestamp(s()?.replacen(' ', "T", 1)),
        Kind::Timestamp { .. } | Kind::TimestampOld => {
            let mut t = s()?.replacen(' ', "T", 1);
            t.push('Z');
            Value::TimestampTz(t)
        }
        Kind::Char {
            charset: Charset::Binary,
            max_len,
        } => {
            let mut v = text.to_vec();
            if v.len() < usize::from(*max_len) {
                v.resize(usize::from(*max_len), 0);
            }
            Value::Bytes(v)
        }
        Kind::Varchar {
            charset: Charset::Binary,
            ..
        }
        | Kind::Blob {
            charset: Charset::Binary,
            ..
        }
        | Kind::Geometry { .. } => Value::Bytes(text.to_vec()),
        Kind::Char { .. } | Kind::Varchar { .. } | Kind::Blob { .. } | Kind::Enum { .. } => {
            Value::Text(s()?.to_owned())
        }
        Kind::JsonText { .. } | Kind::JsonBinary { .. } => json_text(text)?,
        // The text protocol sends a VECTOR's binary value as is.
        Kind::Vector { .. } => vector(text)?,
        Kind::Uuid => Value::Uuid(s()?.to_ascii_lowercase()),
        Kind::Inet4 | Kind::Inet6 => Value::Text(s()?.to_owned()),
        // The server decompresses for SELECT.
        Kind::Compressed(inner) => decode_text(inner, text)?,
        Kind::Set { .. } => {
            let t = s()?;
            Value::Set(if t.is_empty() {
                Vec::new()
            } else {
                t.split(',').map(str::to_owned).collect()
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_fixed_binary_types() {
        // As MariaDB 10.11 logs them: a length byte, trailing zero bytes stripped.
        let uuid = [
            15, 0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40,
        ];
        assert_eq!(field_len(&Kind::Uuid, &uuid), Ok(16));
        assert_eq!(
            dec(&Kind::Uuid, &uuid),
            Value::Uuid("123e4567-e89b-12d3-a456-426614174000".into())
        );
        assert_eq!(
            dec(&Kind::Inet4, &[4, 192, 168, 1, 10]),
            Value::Text("192.168.1.10".into())
        );
        assert_eq!(
            dec(&Kind::Inet4, &[3, 10, 0, 0]),
            Value::Text("10.0.0.0".into())
        );
        let mut one = vec![16u8];
        one.extend_from_slice(&[0; 15]);
        one.push(1);
        assert_eq!(dec(&Kind::Inet6, &one), Value::Text("::1".into()));
        assert_eq!(dec(&Kind::Inet6, &[0]), Value::Text("::".into()));
        let mut mapped = vec![16u8];
        mapped.extend_from_slice(&[0; 10]);
        mapped.extend_from_slice(&[0xff, 0xff, 1, 2, 3, 4]);
        assert_eq!(
            dec(&Kind::Inet6, &mapped),
            Value::Text("::ffff:1.2.3.4".into())
        );
        let v6 = [
            14, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0x42, 0x83, 0x29,
        ];
        assert_eq!(
            dec(&Kind::Inet6, &v6[..15]),
            Value::Text("2001:db8::ff00:42:0".into())
        );
        assert!(decode_binlog(&Kind::Inet4, &[5, 1, 2, 3, 4, 5]).is_err());
        assert_eq!(
            decode_text(&Kind::Uuid, b"123E4567-E89B-12D3-A456-426614174000").expect("uuid"),
            Value::Uuid("123e4567-e89b-12d3-a456-426614174000".into())
        );
    }

    #[test]
    fn mariadb_compressed_columns() {
        // VARCHAR(200) COMPRESSED holding repeat('x',150), BLOB COMPRESSED holding
        // repeat('y',300) and TEXT COMPRESSED holding 'short', as MariaDB 10.11 logs them.
        let vc = Kind::Compressed(Box::new(Kind::Varchar {
            max_len: 201,
            charset: Charset::Utf8,
        }));
        let v = [0x08, 0x89, 0x96, 0xab, 0xa8, 0x18, 0x8c, 0x00, 0x00];
        assert_eq!(field_len(&vc, &v), Ok(9));
        assert_eq!(dec(&vc, &v), Value::Text("x".repeat(150)));
        let blob = Kind::Compressed(Box::new(Kind::Blob {
            pack_len: 2,
            charset: Charset::Binary,
        }));
        let b = [
            0x0a, 0x00, 0x8a, 0x01, 0x2c, 0xab, 0xac, 0x1c, 0x05, 0xc4, 0x02, 0x00,
        ];
        assert_eq!(dec(&blob, &b), Value::Bytes(vec![b'y'; 300]));
        let text = Kind::Compressed(Box::new(Kind::Blob {
            pack_len: 2,
            charset: Charset::Utf8,
        }));
        assert_eq!(
            dec(&text, &[6, 0, 0, b's', b'h', b'o', b'r', b't']),
            Value::Text("short".into())
        );
        assert_eq!(dec(&text, &[0, 0]), Value::Text(String::new()));
        // A length that disagrees, an unknown method, garbage: errors, no panic.
        assert!(decode_binlog(
            &blob,
            &[0x0a, 0x00, 0x8a, 0x01, 0x2d, 0xab, 0xac, 0x1c, 0x05, 0xc4, 0x02, 0x00]
        )
        .is_err());
        assert!(decode_binlog(&blob, &[2, 0, 0x90, 1]).is_err());
        assert!(decode_binlog(&blob, &[4, 0, 0x89, 5, 1, 2]).is_err());
        assert!(decode_binlog(&blob, &[1, 0, 0x88]).is_err());
    }

    #[test]
    fn push_padded_matches_the_format_macro() {
        for v in [0u64, 7, 42, 999, 2024, 12345, u64::MAX] {
            for w in (0..=6).chain([19, 20, 21, 25]) {
                let mut s = String::new();
                push_padded(&mut s, v, w);
                assert_eq!(s, format!("{v:0w$}"));
            }
        }
    }

    fn dec(kind: &Kind, bytes: &[u8]) -> Value {
        let n = field_len(kind, bytes).expect("len");
        assert_eq!(n, bytes.len(), "field length");
        decode_binlog(kind, bytes).expect("decode")
    }

    #[test]
    fn integers_signed_and_unsigned() {
        let k = |bytes, unsigned| Kind::Int { bytes, unsigned };
        assert_eq!(dec(&k(1, false), &[0xFF]), Value::Int(-1));
        assert_eq!(dec(&k(1, true), &[0xFF]), Value::UInt(255));
        assert_eq!(
            dec(&k(3, false), &[0x00, 0x00, 0x80]),
            Value::Int(-8_388_608)
        );
        assert_eq!(dec(&k(8, true), &[0xFF; 8]), Value::UInt(u64::MAX));
        assert_eq!(
            dec(&k(8, false), &[0, 0, 0, 0, 0, 0, 0, 0x80]),
            Value::Int(i64::MIN)
        );
    }

    /// The digits of a binary DECIMAL as arithmetic on its groups: every group's value,
    /// padded to its width, joined, with leading zeros dropped from the integer part. The
    /// decoder writes them in place; this is what it must produce.
    fn decimal_by_groups(raw: &[u8], precision: u8, scale: u8) -> Option<String> {
        let neg = raw[0] & 0x80 == 0;
        let mut b: Vec<u8> = raw.iter().map(|x| if neg { !x } else { *x }).collect();
        b[0] ^= 0x80;
        let (intg, frac) = (usize::from(precision - scale), usize::from(scale));
        let mut widths: Vec<usize> = Vec::new();
        widths.extend((intg % 9 > 0).then_some(intg % 9));
        widths.extend(std::iter::repeat_n(9, intg / 9));
        let n_int = widths.len();
        widths.extend(std::iter::repeat_n(9, frac / 9));
        widths.extend((frac % 9 > 0).then_some(frac % 9));
        let mut pos = 0;
        let mut text = Vec::new();
        for w in widths {
            let n = DIG2BYTES[w];
            let v = b[pos..pos + n]
                .iter()
                .fold(0u64, |a, &x| (a << 8) | u64::from(x));
            pos += n;
            if v >= 10u64.pow(w as u32) {
                return None;
            }
            text.push(format!("{v:0w$}"));
        }
        let int = text[..n_int].concat();
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let frac_text = text[n_int..].concat();
        let zero = int == "0" && frac_text.bytes().all(|c| c == b'0');
        let sign = if neg && !zero { "-" } else { "" };
        let dot = if frac_text.is_empty() { "" } else { "." };
        Some(format!("{sign}{int}{dot}{frac_text}"))
    }

    proptest::proptest! {
        #[test]
        fn decimals_match_their_digit_groups(
            precision in 1u8..=65,
            scale_seed in 0u8..=65,
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 30),
            small in proptest::prelude::any::<bool>(),
        ) {
            let scale = scale_seed % (precision.min(30) + 1);
            let size = decimal_size(precision, scale);
            let mut raw = bytes[..size].to_vec();
            if small {
                // Mostly zero groups: leading zeros, zero and negative zero.
                let fill = if raw[0] & 0x80 == 0 { 0xFF } else { 0 };
                for b in raw.iter_mut().skip(1) {
                    *b = fill;
                }
                if bytes[29] % 2 == 0 {
                    raw[0] = fill ^ 0x80;
                }
            }
            let want = decimal_by_groups(&raw, precision, scale);
            let got = decode_decimal(&raw, precision, scale).ok();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn decimals_exact() {
        // DECIMAL(10,2) 1234.56 (MySQL docs' example layout), and -1234.56.
        let k = Kind::Decimal {
            precision: 10,
            scale: 2,
        };
        // intg 8 → 4 bytes for 8 digits, frac 2 → 1 byte.
        let pos = [0x80, 0x00, 0x04, 0xD2, 0x38];
        assert_eq!(dec(&k, &pos), Value::Decimal("1234.56".into()));
        let negb: Vec<u8> = pos.iter().map(|b| b ^ 0xFF).collect();
        assert_eq!(dec(&k, &negb), Value::Decimal("-1234.56".into()));
        // DECIMAL(65,30) zero.
        let k = Kind::Decimal {
            precision: 65,
            scale: 30,
        };
        let mut z = vec![0u8; decimal_size(65, 30)];
        z[0] = 0x80;
        let Value::Decimal(s) = dec(&k, &z) else {
            panic!()
        };
        assert_eq!(s, format!("0.{}", "0".repeat(30)));
        // DECIMAL(20,0) 12345678901234567890: 2 digits in 1 byte + 2 groups of 9.
        let k = Kind::Decimal {
            precision: 20,
            scale: 0,
        };
        let mut b = vec![12u8 | 0x80];
        b.extend_from_slice(&345_678_901u32.to_be_bytes());
        b.extend_from_slice(&234_567_890u32.to_be_bytes());
        assert_eq!(dec(&k, &b), Value::Decimal("12345678901234567890".into()));
    }

    #[test]
    fn temporal() {
        // DATE 2024-02-29: (2024*16+2)*32+29
        let v: u32 = (2024 * 16 + 2) * 32 + 29;
        assert_eq!(
            dec(&Kind::Date, &v.to_le_bytes()[..3]),
            Value::Date("2024-02-29".into())
        );
        assert_eq!(
            dec(&Kind::Date, &[0, 0, 0]),
            Value::Date("0000-00-00".into())
        );
        // DATETIME(6) 2024-01-02 03:04:05.123456
        let ym: u64 = 2024 * 13 + 1;
        let ymd = (ym << 5) | 2;
        let hms: u64 = (3 << 12) | (4 << 6) | 5;
        let int = ((ymd << 17) | hms) + 0x80_0000_0000;
        let mut b = int.to_be_bytes()[3..].to_vec();
        b.extend_from_slice(&123_456u32.to_be_bytes()[1..]);
        assert_eq!(
            dec(&Kind::DateTime { fsp: 6 }, &b),
            Value::Timestamp("2024-01-02T03:04:05.123456".into())
        );
        // TIMESTAMP(3) 1700000000.5 → .500
        let mut t = 1_700_000_000u32.to_be_bytes().to_vec();
        t.extend_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            dec(&Kind::Timestamp { fsp: 3 }, &t),
            Value::TimestampTz("2023-11-14T22:13:20.500Z".into())
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    fn time2(neg: bool, h: i64, m: i64, s: i64, micros: i64, fsp: u8) -> Vec<u8> {
        // Encode like MySQL's my_time_packed_to_binary.
        let hms = (h << 12) | (m << 6) | s;
        let mut packed = (hms << 24) + micros;
        if neg {
            packed = -packed;
        }
        let int = packed >> 24;
        let frac = packed % (1 << 24);
        match fsp {
            0 => ((int + 0x80_0000) as u32).to_be_bytes()[1..].to_vec(),
            // MySQL stores the (negative) remainder as a wrapped byte / short.
            1 | 2 => {
                let mut v = ((int + 0x80_0000) as u32).to_be_bytes()[1..].to_vec();
                v.push((frac / 10_000) as i8 as u8);
                v
            }
            3 | 4 => {
                let mut v = ((int + 0x80_0000) as u32).to_be_bytes()[1..].to_vec();
                v.extend_from_slice(&((frac / 100) as i16).to_be_bytes());
                v
            }
            _ => ((packed + 0x8000_0000_0000) as u64).to_be_bytes()[2..].to_vec(),
        }
    }

    #[test]
    fn time_incl_negative() {
        let t = |neg, h, m, s, us, fsp| dec(&Kind::Time { fsp }, &time2(neg, h, m, s, us, fsp));
        assert_eq!(t(false, 12, 34, 56, 0, 0), Value::Time("12:34:56".into()));
        assert_eq!(t(true, 838, 59, 59, 0, 0), Value::Time("-838:59:59".into()));
        assert_eq!(
            t(true, 0, 0, 1, 500_000, 2),
            Value::Time("-00:00:01.50".into())
        );
        assert_eq!(
            t(true, 1, 2, 3, 456_700, 4),
            Value::Time("-01:02:03.4567".into())
        );
        assert_eq!(
            t(true, 1, 2, 3, 456_789, 6),
            Value::Time("-01:02:03.456789".into())
        );
        assert_eq!(
            t(false, 100, 0, 0, 1, 6),
            Value::Time("100:00:00.000001".into())
        );
    }

    #[test]
    fn strings_by_charset() {
        let latin = Kind::Varchar {
            max_len: 40,
            charset: Charset::Latin1,
        };
        assert_eq!(dec(&latin, b"\x04caf\xe9"), Value::Text("café".into()));
        let bin = Kind::Char {
            max_len: 4,
            charset: Charset::Binary,
        };
        assert_eq!(
            dec(&bin, &[2, 0xFF, 0x01]),
            Value::Bytes(vec![0xFF, 1, 0, 0])
        );
        let utf = Kind::Blob {
            pack_len: 2,
            charset: Charset::Utf8,
        };
        let mut b = vec![4, 0];
        b.extend_from_slice("😀".as_bytes());
        assert_eq!(dec(&utf, &b), Value::Text("😀".into()));
        let big = Kind::Varchar {
            max_len: 1000,
            charset: Charset::Utf8,
        };
        assert_eq!(dec(&big, &[1, 0, b'x']), Value::Text("x".into()));
        assert!(decode_binlog(
            &Kind::Varchar {
                max_len: 9,
                charset: Charset::Utf8
            },
            &[1, 0xFF]
        )
        .is_err());
    }

    #[test]
    fn enum_set_bit_year_float() {
        let names = Arc::new(vec!["a".to_string(), "b".to_string(), "c".to_string()]);
        assert_eq!(
            dec(
                &Kind::Enum {
                    pack_len: 1,
                    names: names.clone()
                },
                &[2]
            ),
            Value::Text("b".into())
        );
        assert_eq!(
            dec(
                &Kind::Enum {
                    pack_len: 1,
                    names: names.clone()
                },
                &[0]
            ),
            Value::Text("".into())
        );
        assert!(decode_binlog(
            &Kind::Enum {
                pack_len: 1,
                names: names.clone()
            },
            &[9]
        )
        .is_err());
        assert_eq!(
            dec(&Kind::Set { pack_len: 1, names }, &[0b101]),
            Value::Set(vec!["a".into(), "c".into()])
        );
        assert_eq!(
            dec(&Kind::Bit { bits: 10 }, &[0x02, 0x01]),
            Value::UInt(513)
        );
        assert_eq!(dec(&Kind::Year, &[124]), Value::Int(2024));
        assert_eq!(dec(&Kind::Year, &[0]), Value::Int(0));
        assert_eq!(dec(&Kind::Float, &1.1f32.to_le_bytes()), Value::Float(1.1));
    }

    #[test]
    fn truncated_inputs_are_errors() {
        let kinds = [
            Kind::Int {
                bytes: 8,
                unsigned: false,
            },
            Kind::Decimal {
                precision: 10,
                scale: 2,
            },
            Kind::DateTime { fsp: 6 },
            Kind::Time { fsp: 6 },
            Kind::Timestamp { fsp: 6 },
            Kind::Varchar {
                max_len: 300,
                charset: Charset::Utf8,
            },
            Kind::Blob {
                pack_len: 4,
                charset: Charset::Binary,
            },
            Kind::JsonBinary { pack_len: 4 },
        ];
        for k in &kinds {
            for n in 0..3 {
                let b = vec![0x80u8; n];
                assert!(
                    field_len(k, &b).is_err() || decode_binlog(k, &b).is_ok(),
                    "{k:?} {n}"
                );
            }
        }
        assert!(matches!(
            field_len(
                &Kind::Blob {
                    pack_len: 4,
                    charset: Charset::Binary
                },
                &[10, 0, 0, 0, 1]
            ),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn text_protocol_matches_binlog_forms() {
        let k = Kind::DateTime { fsp: 6 };
        assert_eq!(
            decode_text(&k, b"2024-01-02 03:04:05.123456").expect("dt"),
            Value::Timestamp("2024-01-02T03:04:05.123456".into())
        );
        assert_eq!(
            decode_text(&Kind::Timestamp { fsp: 0 }, b"2023-11-14 22:13:20").expect("ts"),
            Value::TimestampTz("2023-11-14T22:13:20Z".into())
        );
        assert_eq!(
            decode_text(
                &Kind::Int {
                    bytes: 8,
                    unsigned: true
                },
                b"18446744073709551615"
            )
            .expect("u"),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            decode_text(&Kind::Bit { bits: 10 }, &[0x02, 0x01]).expect("bit"),
            Value::UInt(513)
        );
        assert_eq!(
            decode_text(
                &Kind::Set {
                    pack_len: 1,
                    names: Arc::new(vec![])
                },
                b"a,c"
            )
            .expect("set"),
            Value::Set(vec!["a".into(), "c".into()])
        );
        assert_eq!(
            decode_text(&Kind::Float, b"1.1").expect("f"),
            Value::Float(1.1)
        );
        assert_eq!(
            decode_text(
                &Kind::Char {
                    max_len: 4,
                    charset: Charset::Binary
                },
                &[0xFF, 1]
            )
            .expect("bin"),
            Value::Bytes(vec![0xFF, 1, 0, 0])
        );
    }

    #[test]
    fn vector_is_a_float32_array() {
        let mut b = Vec::new();
        for x in [1.1f32, -1.0, 0.0] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        let mut field = (b.len() as u32).to_le_bytes().to_vec();
        field.extend_from_slice(&b);
        let k = Kind::Vector { pack_len: 4 };
        assert_eq!(field_len(&k, &field), Ok(field.len()));
        assert_eq!(
            decode_binlog(&k, &field),
            Ok(Value::Json("[1.1,-1,0]".into()))
        );
        assert!(decode_binlog(&k, &[3, 0, 0, 0, 1, 2, 3]).is_err());
        assert!(
            decode_binlog(&k, &[4, 0, 0, 0, 0, 0, 0xC0, 0x7F]).is_err(),
            "NaN"
        );
    }
}
