//! PostgreSQL text-format value decoding: type OID → [`PgType`] → [`Value`].
//!
//! Owns: the mapping of built-in type OIDs, the resolution of user-defined types (enums,
//! domains, arrays of those, composites) through `pg_type`, and the parsing of each type's
//! text output into the lossless [`Value`]. Does not own: the wire protocol (pgoutput
//! tuples arrive as bytes from `super::pgoutput`), nor the JSON form (see `crate::value`).
//!
//! # What the decoder expects from the session
//!
//! Text output depends on session settings of the connection that produces it (for
//! pgoutput: the walsender). The decoder expects `DateStyle = ISO` (PostgreSQL's default)
//! and rejects other date styles with an error. `TimeZone` may be anything: timestamptz
//! values carry their offset and are converted to UTC here. `IntervalStyle` may be
//! `postgres` (the default), `postgres_verbose` or `iso_8601`; `sql_standard` is rejected
//! because its text is ambiguous. The setting of `extra_float_digits` does not matter (see
//! floats below).
//!
//! # Type mapping (text in → [`Value`] out)
//!
//! | PostgreSQL | Value | notes |
//! | --- | --- | --- |
//! | bool | `Bool` | |
//! | int2, int4, int8, oid | `Int` | exact |
//! | numeric | `Decimal` | the server's text kept verbatim (`12.50`, `NaN`, `Infinity`, `-Infinity`) |
//! | float4, float8 | `Float` | the *text* is parsed as f64, also for float4: `1.1` stays `1.1` (parsing as f32 and widening would print `1.100000023841858`); `NaN`, `Infinity`, `-Infinity` |
//! | text, varchar, bpchar, name, char, xml, enums, everything unknown | `Text` | bpchar keeps its padding |
//! | bytea | `Bytes` | hex (`\x…`) and legacy escape format |
//! | uuid | `Uuid` | lowercase |
//! | json, jsonb | `Json` | the server's text, checked to be valid JSON |
//! | date | `Date` | `YYYY-MM-DD`; BC dates in ISO 8601 astronomical years (`0044-03-15 BC` → `-0043-03-15`, 1 BC → `0000`); years past 9999 as printed (`10000-01-01`); `infinity` / `-infinity` kept |
//! | time | `Time` | `HH:MM:SS[.f]` as printed (`24:00:00` is valid) |
//! | timetz | `Time` | offset normalised to `±HH:MM` (`±HH:MM:SS` if it has seconds) |
//! | timestamp | `Timestamp` | `YYYY-MM-DDTHH:MM:SS[.f]`, BC as for date, `infinity` / `-infinity` kept |
//! | timestamptz | `TimestampTz` | converted exactly to UTC, `…Z`; `infinity` / `-infinity` kept |
//! | interval | `Interval` | ISO 8601 duration exactly as PostgreSQL's own `iso_8601` style prints it (`P1Y2M3DT4H5M6.5S`, `P-1DT2H`, `PT0S`); each field keeps its sign |
//! | arrays of any of these | `Array` | nested for multi-dimensional; NULL elements → `Null`; explicit lower bounds (`[2:3]={…}`) are dropped |
//! | domains | as their base type | resolved via `pg_type.typbasetype` |
//!
//! Fractional seconds are kept exactly as the server prints them: up to 6 digits, trailing
//! zeros trimmed, none for a whole second (PostgreSQL's own output; lossless).
//!
//! Every decoder works on untrusted bytes: any input yields a value or a [`TypeError`],
//! never a panic (pinned by a property test). Errors name the type and the problem but
//! never echo the value, which may be sensitive.

use crate::value::{push_padded, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Deepest array nesting accepted (PostgreSQL's `MAXDIM`).
const MAX_ARRAY_DIMS: usize = 6;

/// How a column's text is decoded. Cheap to clone (arrays share their element type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    /// int2, int4, int8.
    Int,
    Oid,
    Numeric,
    Float4,
    Float8,
    /// text, varchar, bpchar, name, "char", and anything kept as its text form.
    Text,
    Bytea,
    Uuid,
    /// json and jsonb.
    Json,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    /// A user-defined enum: its label.
    Enum,
    /// An array; `delim` is the element type's `typdelim` (`,` for all but `box`).
    Array {
        elem: Arc<PgType>,
        delim: u8,
    },
    /// Any other type (composite, range, geometric, user base types, unknown OIDs): the
    /// server's text form as `Value::Text`.
    Other,
}

impl PgType {
    /// A short name for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            PgType::Bool => "bool",
            PgType::Int => "integer",
            PgType::Oid => "oid",
            PgType::Numeric => "numeric",
            PgType::Float4 => "float4",
            PgType::Float8 => "float8",
            PgType::Text => "text",
            PgType::Bytea => "bytea",
            PgType::Uuid => "uuid",
            PgType::Json => "json",
            PgType::Date => "date",
            PgType::Time => "time",
            PgType::TimeTz => "timetz",
            PgType::Timestamp => "timestamp",
            PgType::TimestampTz => "timestamptz",
            PgType::Interval => "interval",
            PgType::Enum => "enum",
            PgType::Array { .. } => "array",
            PgType::Other => "text form",
        }
    }

    /// The type of a built-in OID, if it is one this module knows without SQL.
    pub fn builtin(oid: u32) -> Option<PgType> {
        let scalar = |t: PgType| Some(t);
        let array = |t: PgType| {
            Some(PgType::Array {
                elem: Arc::new(t),
                delim: b',',
            })
        };
        match oid {
            16 => scalar(PgType::Bool),
            17 => scalar(PgType::Bytea),
            18 | 19 | 25 | 1042 | 1043 | 142 => scalar(PgType::Text),
            20 | 21 | 23 => scalar(PgType::Int),
            26 => scalar(PgType::Oid),
            114 | 3802 => scalar(PgType::Json),
            700 => scalar(PgType::Float4),
            701 => scalar(PgType::Float8),
            1082 => scalar(PgType::Date),
            1083 => scalar(PgType::Time),
            1114 => scalar(PgType::Timestamp),
            1184 => scalar(PgType::TimestampTz),
            1186 => scalar(PgType::Interval),
            1266 => scalar(PgType::TimeTz),
            1700 => scalar(PgType::Numeric),
            2950 => scalar(PgType::Uuid),
            1000 => array(PgType::Bool),
            1001 => array(PgType::Bytea),
            1002 | 1003 | 1009 | 1014 | 1015 | 143 => array(PgType::Text),
            1005 | 1007 | 1016 => array(PgType::Int),
            1028 => array(PgType::Oid),
            199 | 3807 => array(PgType::Json),
            1021 => array(PgType::Float4),
            1022 => array(PgType::Float8),
            1182 => array(PgType::Date),
            1183 => array(PgType::Time),
            1115 => array(PgType::Timestamp),
            1185 => array(PgType::TimestampTz),
            1187 => array(PgType::Interval),
            1270 => array(PgType::TimeTz),
            1231 => array(PgType::Numeric),
            2951 => array(PgType::Uuid),
            // Built-in types below FirstNormalObjectId that we keep as text (xid, regclass,
            // inet, point, ranges, ...) are resolved by SQL like user types, so their
            // arrays are still split into elements.
            _ => None,
        }
    }
}

/// Why a type could not be resolved or a value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    /// The bytes of a value are not UTF-8 (the connection must use client_encoding UTF8).
    #[error("{ty} value is not valid UTF-8 (is client_encoding UTF8?)")]
    Utf8 {
        ty: &'static str,
        #[source]
        source: std::str::Utf8Error,
    },
    /// The text does not have the form the type's output function produces.
    #[error("invalid {ty} value: {reason}")]
    Invalid { ty: &'static str, reason: String },
    /// An element of an array failed to decode.
    #[error("invalid array element {index}")]
    ArrayElement {
        index: usize,
        #[source]
        source: Box<TypeError>,
    },
    /// The `pg_type` query failed.
    #[error("cannot look up type oids in pg_type")]
    Resolve {
        #[source]
        source: tokio_postgres::Error,
    },
}

fn invalid(ty: &'static str, reason: impl Into<String>) -> TypeError {
    TypeError::Invalid {
        ty,
        reason: reason.into(),
    }
}

/// One `pg_type` row, as needed to build a [`PgType`].
#[derive(Debug, Clone)]
struct RawType {
    typtype: u8,
    category: u8,
    elem: u32,
    base: u32,
    delim: u8,
}

/// Known types by OID: built-ins without SQL, the rest resolved once via `pg_type`.
#[derive(Debug, Default, Clone)]
pub struct TypeCache {
    resolved: HashMap<u32, PgType>,
    raw: HashMap<u32, RawType>,
}

/// Most rounds of `pg_type` look-ups for one `resolve` call (a domain over an array of a
/// domain over an enum needs 4); beyond this the remaining OIDs stay text.
const MAX_RESOLVE_ROUNDS: usize = 8;

impl TypeCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves the OIDs not yet known (enums, domains, arrays of those, composites and
    /// other user types) with SQL on `pg_type`, following element and base types. Built-in
    /// OIDs are skipped without a query; an OID that `pg_type` does not have stays unknown
    /// (decoded as text). One query per level of nesting, none when everything is known.
    pub async fn resolve(
        &mut self,
        client: &tokio_postgres::Client,
        oids: &[u32],
    ) -> Result<(), TypeError> {
        let mut wanted: Vec<u32> = oids
            .iter()
            .copied()
            .filter(|o| self.needs_lookup(*o))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut rounds = 0;
        while !wanted.is_empty() && rounds < MAX_RESOLVE_ROUNDS {
            rounds += 1;
            tracing::debug!(count = wanted.len(), "resolving postgres type oids");
            let rows = client
                .query(
                    "SELECT oid, typtype::text, typcategory::text, typelem, typbasetype, \
                     typdelim::text FROM pg_catalog.pg_type WHERE oid = ANY($1)",
                    &[&wanted],
                )
                .await
                .map_err(|source| TypeError::Resolve { source })?;
            let mut next = Vec::new();
            for row in rows {
                let oid: u32 = row
                    .try_get(0)
                    .map_err(|source| TypeError::Resolve { source })?;
                let first = |i: usize| -> Result<u8, TypeError> {
                    let s: String = row
                        .try_get(i)
                        .map_err(|source| TypeError::Resolve { source })?;
                    Ok(s.bytes().next().unwrap_or(0))
                };
                let raw = RawType {
                    typtype: first(1)?,
                    category: first(2)?,
                    elem: row
                        .try_get(3)
                        .map_err(|source| TypeError::Resolve { source })?,
                    base: row
                        .try_get(4)
                        .map_err(|source| TypeError::Resolve { source })?,
                    delim: first(5)?,
                };
                for dep in [raw.elem, raw.base] {
                    if dep != 0 && self.needs_lookup(dep) && !wanted.contains(&dep) {
                        next.push(dep);
                    }
                }
                self.raw.insert(oid, raw);
            }
            // OIDs pg_type did not return are remembered as Other so they are not queried
            // again on every Relation message.
            for o in &wanted {
                self.raw.entry(*o).or_insert(RawType {
                    typtype: b'b',
                    category: b'U',
                    elem: 0,
                    base: 0,
                    delim: b',',
                });
            }
            next.sort_unstable();
            next.dedup();
            wanted = next;
        }
        // Rebuild every raw entry now that dependencies are present.
        let oids: Vec<u32> = self.raw.keys().copied().collect();
        for oid in oids {
            let ty = self.build(oid, 0);
            self.resolved.insert(oid, ty);
        }
        Ok(())
    }

    fn needs_lookup(&self, oid: u32) -> bool {
        oid != 0 && PgType::builtin(oid).is_none() && !self.raw.contains_key(&oid)
    }

    fn build(&self, oid: u32, depth: usize) -> PgType {
        if let Some(t) = PgType::builtin(oid) {
            return t;
        }
        if depth > MAX_RESOLVE_ROUNDS {
            return PgType::Other;
        }
        let Some(raw) = self.raw.get(&oid) else {
            return PgType::Other;
        };
        match raw.typtype {
            b'e' => PgType::Enum,
            b'd' if raw.base != 0 => self.build(raw.base, depth + 1),
            _ if raw.category == b'A' && raw.elem != 0 => {
                // typdelim belongs to the element type.
                let delim = self.raw.get(&raw.elem).map_or(b',', |e| e.delim);
                let delim = if delim == 0 { b',' } else { delim };
                PgType::Array {
                    elem: Arc::new(self.build(raw.elem, depth + 1)),
                    delim,
                }
            }
            _ => PgType::Other,
        }
    }

    /// The decoding type of `oid`: built-ins directly, resolved user types from the cache,
    /// anything else as its text form ([`PgType::Other`]).
    pub fn get(&self, oid: u32) -> PgType {
        if let Some(t) = PgType::builtin(oid) {
            return t;
        }
        self.resolved.get(&oid).cloned().unwrap_or(PgType::Other)
    }
}

/// Decodes one value in PostgreSQL's text output format. Never panics.
pub fn decode_text(ty: &PgType, text: &[u8]) -> Result<Value, TypeError> {
    if let PgType::Bytea = ty {
        return decode_bytea(text).map(Value::Bytes);
    }
    let name = ty.name();
    let s = std::str::from_utf8(text).map_err(|source| TypeError::Utf8 { ty: name, source })?;
    decode_str(ty, s)
}

fn decode_str(ty: &PgType, s: &str) -> Result<Value, TypeError> {
    match ty {
        PgType::Bool => match s {
            "t" | "true" => Ok(Value::Bool(true)),
            "f" | "false" => Ok(Value::Bool(false)),
            _ => Err(invalid("bool", "expected t or f")),
        },
        PgType::Int => parse_int(s).map(Value::Int),
        PgType::Oid => {
            if !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("oid", "expected an unsigned integer"));
            }
            s.parse::<u32>()
                .map(|o| Value::Int(i64::from(o)))
                .map_err(|_| invalid("oid", "expected an unsigned 32-bit integer"))
        }
        PgType::Numeric => decode_numeric(s).map(|()| Value::Decimal(s.to_owned())),
        PgType::Float4 => decode_float("float4", s).map(Value::Float),
        PgType::Float8 => decode_float("float8", s).map(Value::Float),
        PgType::Text | PgType::Enum | PgType::Other => Ok(Value::Text(s.to_owned())),
        PgType::Bytea => decode_bytea(s.as_bytes()).map(Value::Bytes),
        PgType::Uuid => decode_uuid(s).map(Value::Uuid),
        PgType::Json => {
            if !crate::json_check::is_valid(s) {
                // serde_json's message says where and why.
                let why = serde_json::from_str::<serde::de::IgnoredAny>(s)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                return Err(invalid("json", format!("not valid JSON: {why}")));
            }
            Ok(Value::Json(s.to_owned()))
        }
        PgType::Date => decode_date(s).map(Value::Date),
        PgType::Time => {
            let (t, rest) = parse_time("time", s)?;
            if !rest.is_empty() {
                return Err(invalid("time", "trailing characters after the time"));
            }
            Ok(Value::Time(t.to_owned()))
        }
        PgType::TimeTz => decode_timetz(s).map(Value::Time),
        PgType::Timestamp => decode_timestamp(s).map(Value::Timestamp),
        PgType::TimestampTz => decode_timestamptz(s).map(Value::TimestampTz),
        PgType::Interval => decode_interval(s).map(Value::Interval),
        PgType::Array { elem, delim } => decode_array(elem, *delim, s),
    }
}

fn parse_int(s: &str) -> Result<i64, TypeError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("integer", "expected an optionally signed integer"));
    }
    s.parse::<i64>()
        .map_err(|_| invalid("integer", "out of the 64-bit range"))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn decode_numeric(s: &str) -> Result<(), TypeError> {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return Ok(());
    }
    let body = s.strip_prefix('-').unwrap_or(s);
    let ok = match body.split_once('.') {
        Some((int, frac)) => all_digits(int) && all_digits(frac),
        None => all_digits(body),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "numeric",
            "expected digits with an optional sign and decimal point",
        ))
    }
}

/// Parses the text directly as f64 (also for float4, so the printed decimal is kept).
fn decode_float(ty: &'static str, s: &str) -> Result<f64, TypeError> {
    match s {
        "NaN" => return Ok(f64::NAN),
        "Infinity" => return Ok(f64::INFINITY),
        "-Infinity" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust also accepts "inf"/"nan" spellings; PostgreSQL never prints them.
    let ok = !s.is_empty()
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !ok {
        return Err(invalid(ty, "expected a decimal number, NaN or [-]Infinity"));
    }
    let f = s
        .parse::<f64>()
        .map_err(|_| invalid(ty, "expected a decimal number"))?;
    if f.is_infinite() {
        return Err(invalid(ty, "finite text overflows f64"));
    }
    Ok(f)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// bytea in hex (`\x0aff`) or the legacy escape format (`a\\b\001`).
fn decode_bytea(t: &[u8]) -> Result<Vec<u8>, TypeError> {
    if let Some(hex) = t.strip_prefix(b"\\x") {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut it = hex.iter().copied().filter(|b| !b.is_ascii_whitespace());
        while let Some(hi) = it.next() {
            let lo = it
                .next()
                .ok_or_else(|| invalid("bytea", "odd number of hex digits"))?;
            match (hex_val(hi), hex_val(lo)) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(invalid("bytea", "invalid hex digit")),
            }
        }
        return Ok(out);
    }
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while let Some(&b) = t.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match t.get(i + 1..i + 4) {
            Some(&[a, b2, c])
                if (b'0'..=b'3').contains(&a)
                    && (b'0'..=b'7').contains(&b2)
                    && (b'0'..=b'7').contains(&c) =>
            {
                out.push((a - b'0') << 6 | (b2 - b'0') << 3 | (c - b'0'));
                i += 4;
            }
            _ if t.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            _ => return Err(invalid("bytea", "invalid escape sequence")),
        }
    }
    Ok(out)
}

fn decode_uuid(s: &str) -> Result<String, TypeError> {
    let b = s.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(invalid("uuid", "expected 8-4-4-4-12 hex digits"))
    }
}

/// A calendar date with an astronomical year (1 BC = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ymd {
    y: i64,
    m: u32,
    d: u32,
}

/// Appends a date as ISO 8601: the year in 4 digits, `-` and 4+ digits before year 0, more
/// digits past 9999 as PostgreSQL prints them; then `-MM-DD`.
fn push_ymd(out: &mut String, d: Ymd) {
    if d.y < 0 {
        out.push('-');
    }
    push_padded(out, d.y.unsigned_abs(), 4);
    out.push('-');
    push_padded(out, u64::from(d.m), 2);
    out.push('-');
    push_padded(out, u64::from(d.d), 2);
}

fn fmt_ymd(d: Ymd) -> String {
    let mut s = String::with_capacity(10);
    push_ymd(&mut s, d);
    s
}

/// Parses `YYYY-MM-DD` (4+ digit year) at the start of `s`; returns the rest.
fn parse_ymd<'a>(ty: &'static str, s: &'a str) -> Result<(Ymd, &'a str), TypeError> {
    let bad = || invalid(ty, "expected YYYY-MM-DD (is DateStyle ISO?)");
    let (y, rest) = s.split_once('-').ok_or_else(bad)?;
    if y.len() < 4 || y.len() > 9 || !all_digits(y) {
        return Err(bad());
    }
    let m = rest.get(0..2).filter(|x| all_digits(x)).ok_or_else(bad)?;
    if rest.as_bytes().get(2) != Some(&b'-') {
        return Err(bad());
    }
    let d = rest.get(3..5).filter(|x| all_digits(x)).ok_or_else(bad)?;
    let rest = rest.get(5..).ok_or_else(bad)?;
    let y: i64 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    let d: u32 = d.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(invalid(ty, "month or day out of range"));
    }
    Ok((Ymd { y, m, d }, rest))
}

/// Strips a trailing ` BC` and converts the year to astronomical numbering.
fn apply_era(ty: &'static str, mut d: Ymd, bc: bool) -> Result<Ymd, TypeError> {
    if bc {
        if d.y == 0 {
            return Err(invalid(ty, "year 0 BC does not exist"));
        }
        d.y = 1 - d.y;
    }
    Ok(d)
}

fn split_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(x) => (x, true),
        None => (s, false),
    }
}

fn decode_date(s: &str) -> Result<String, TypeError> {
    if matches!(s, "infinity" | "-infinity") {
        return Ok(s.to_owned());
    }
    let (body, bc) = split_bc(s);
    let (d, rest) = parse_ymd("date", body)?;
    if !rest.is_empty() {
        return Err(invalid("date", "trailing characters after the date"));
    }
    Ok(fmt_ymd(apply_era("date", d, bc)?))
}

/// Parses `HH:MM:SS[.ffffff]` at the start of `s`; returns that text and the rest.
fn parse_time<'a>(ty: &'static str, s: &'a str) -> Result<(&'a str, &'a str), TypeError> {
    let b = s.as_bytes();
    let bad = || invalid(ty, "expected HH:MM:SS[.ffffff]");
    if b.len() < 8 || b.get(2) != Some(&b':') || b.get(5) != Some(&b':') {
        return Err(bad());
    }
    for r in [0..2, 3..5, 6..8] {
        if !s.get(r).is_some_and(all_digits) {
            return Err(bad());
        }
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let (h, m, sec) = (num(0..2), num(3..5), num(6..8));
    match (h, m, sec) {
        (Some(h), Some(m), Some(sec)) if h <= 24 && m <= 59 && sec <= 60 => {}
        _ => return Err(invalid(ty, "hour, minute or second out of range")),
    }
    let mut end = 8;
    if b.get(8) == Some(&b'.') {
        let digits = b
            .get(9..)
            .unwrap_or(&[])
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 || digits > 6 {
            return Err(invalid(ty, "expected 1 to 6 fractional digits"));
        }
        end = 9 + digits;
    }
    match (s.get(..end), s.get(end..)) {
        (Some(t), Some(rest)) => Ok((t, rest)),
        _ => Err(bad()),
    }
}

/// Parses an offset `±HH[:MM[:SS]]` (the whole of `s`) into seconds east of UTC.
fn parse_offset(ty: &'static str, s: &str) -> Result<i64, TypeError> {
    let bad = || invalid(ty, "expected a UTC offset ±HH[:MM[:SS]]");
    let (sign, body) = match s.as_bytes().first() {
        Some(b'+') => (1, s.get(1..).ok_or_else(bad)?),
        Some(b'-') => (-1, s.get(1..).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    let mut secs = 0i64;
    let mut n = 0;
    for (i, part) in body.split(':').enumerate() {
        if i > 2 || part.len() != 2 || !all_digits(part) {
            return Err(bad());
        }
        let v: i64 = part.parse().map_err(|_| bad())?;
        if i > 0 && v > 59 {
            return Err(bad());
        }
        secs += v * [3600, 60, 1][i];
        n += 1;
    }
    if n == 0 {
        return Err(bad());
    }
    Ok(sign * secs)
}

fn fmt_offset(secs: i64) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    if s == 0 {
        format!("{sign}{h:02}:{m:02}")
    } else {
        format!("{sign}{h:02}:{m:02}:{s:02}")
    }
}

fn decode_timetz(s: &str) -> Result<String, TypeError> {
    let (t, rest) = parse_time("timetz", s)?;
    let off = parse_offset("timetz", rest)?;
    Ok(format!("{t}{}", fmt_offset(off)))
}

fn decode_timestamp(s: &str) -> Result<String, TypeError> {
    if matches!(s, "infinity" | "-infinity") {
        return Ok(s.to_owned());
    }
    let (body, bc) = split_bc(s);
    let (d, rest) = parse_ymd("timestamp", body)?;
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| invalid("timestamp", "expected a space between date and time"))?;
    let (t, rest) = parse_time("timestamp", rest)?;
    if !rest.is_empty() {
        return Err(invalid("timestamp", "trailing characters after the time"));
    }
    let d = apply_era("timestamp", d, bc)?;
    let mut out = String::with_capacity(11 + t.len());
    push_ymd(&mut out, d);
    out.push('T');
    out.push_str(t);
    Ok(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(d: Ymd) -> i64 {
    let y = if d.m <= 2 { d.y - 1 } else { d.y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(d.m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d.d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> Ymd {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is 1..=31 and m 1..=12 by construction.
    Ymd {
        y,
        m: u32::try_from(m).unwrap_or(1),
        d: u32::try_from(d).unwrap_or(1),
    }
}

fn decode_timestamptz(s: &str) -> Result<String, TypeError> {
    const TY: &str = "timestamptz";
    if matches!(s, "infinity" | "-infinity") {
        return Ok(s.to_owned());
    }
    let (body, bc) = split_bc(s);
    let (d, rest) = parse_ymd(TY, body)?;
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| invalid(TY, "expected a space between date and time"))?;
    let (t, rest) = parse_time(TY, rest)?;
    let off = parse_offset(TY, rest)?;
    let d = apply_era(TY, d, bc)?;
    // t is validated HH:MM:SS[.f]; the fraction is unaffected by whole-second offsets.
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
    let frac = t.get(8..).unwrap_or("");
    let secs = days_from_civil(d) * 86_400 + num(0..2) * 3600 + num(3..5) * 60 + num(6..8) - off;
    let day = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let mut out = String::with_capacity(21 + frac.len());
    push_ymd(&mut out, civil_from_days(day));
    for (sep, n) in [('T', sod / 3600), (':', sod / 60 % 60), (':', sod % 60)] {
        out.push(sep);
        push_padded(&mut out, n.unsigned_abs(), 2);
    }
    out.push_str(frac);
    out.push('Z');
    Ok(out)
}

/// An interval as PostgreSQL's fields: each keeps its own sign, like the server does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct IntervalParts {
    years: i64,
    months: i64,
    days: i64,
    hours: i64,
    minutes: i64,
    /// Seconds in microseconds.
    micros: i64,
}

impl IntervalParts {
    fn negate(&mut self) -> Option<()> {
        self.years = self.years.checked_neg()?;
        self.months = self.months.checked_neg()?;
        self.days = self.days.checked_neg()?;
        self.hours = self.hours.checked_neg()?;
        self.minutes = self.minutes.checked_neg()?;
        self.micros = self.micros.checked_neg()?;
        Some(())
    }

    /// ISO 8601 exactly as PostgreSQL's `IntervalStyle = iso_8601` prints it.
    fn to_iso(self) -> String {
        use std::fmt::Write as _;
        if self == IntervalParts::default() {
            return "PT0S".to_owned();
        }
        let mut out = String::from("P");
        for (v, u) in [(self.years, 'Y'), (self.months, 'M'), (self.days, 'D')] {
            if v != 0 {
                let _ = write!(out, "{v}{u}");
            }
        }
        if self.hours != 0 || self.minutes != 0 || self.micros != 0 {
            out.push('T');
            if self.hours != 0 {
                let _ = write!(out, "{}H", self.hours);
            }
            if self.minutes != 0 {
                let _ = write!(out, "{}M", self.minutes);
            }
            if self.micros != 0 {
                let sign = if self.micros < 0 { "-" } else { "" };
                let a = self.micros.unsigned_abs();
                let (whole, frac) = (a / 1_000_000, a % 1_000_000);
                if frac == 0 {
                    let _ = write!(out, "{sign}{whole}S");
                } else {
                    let f = format!("{frac:06}");
                    let _ = write!(out, "{sign}{whole}.{}S", f.trim_end_matches('0'));
                }
            }
        }
        out
    }
}

/// Parses `[-]S[.ffffff]` into microseconds.
fn parse_seconds(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (w, f) = body.split_once('.').unwrap_or((body, ""));
    if !all_digits(w) || (!f.is_empty() && !all_digits(f)) || f.len() > 6 {
        return None;
    }
    let w: i64 = w.parse().ok()?;
    let f: i64 = if f.is_empty() {
        0
    } else {
        format!("{f:0<6}").parse().ok()?
    };
    let v = w.checked_mul(1_000_000)?.checked_add(f)?;
    Some(if neg { -v } else { v })
}

fn decode_interval(s: &str) -> Result<String, TypeError> {
    const TY: &str = "interval";
    if s.starts_with('P') {
        // iso_8601 style: already the form we emit.
        let ok = s.len() > 1
            && s.bytes().all(|b| {
                b.is_ascii_digit()
                    || matches!(
                        b,
                        b'P' | b'Y' | b'M' | b'W' | b'D' | b'T' | b'H' | b'S' | b'.' | b'-'
                    )
            });
        return if ok {
            Ok(s.to_owned())
        } else {
            Err(invalid(TY, "malformed ISO 8601 duration"))
        };
    }
    let (verbose, body) = match s.strip_prefix("@ ") {
        Some(b) => (true, b),
        None => (false, s),
    };
    let mut p = IntervalParts::default();
    if verbose && body == "0" {
        // postgres_verbose prints a zero interval as `@ 0`.
        return Ok(p.to_iso());
    }
    let mut toks = body.split(' ').peekable();
    let mut ago = false;
    let overflow = || invalid(TY, "field out of range");
    while let Some(tok) = toks.next() {
        if tok.contains(':') {
            // postgres style time part: [+-]H+:MM:SS[.ffffff], one sign for all three.
            let (neg, t) = match tok.as_bytes().first() {
                Some(b'-') => (true, tok.get(1..).unwrap_or("")),
                Some(b'+') => (false, tok.get(1..).unwrap_or("")),
                _ => (false, tok),
            };
            let mut it = t.split(':');
            let (h, m, sec) = match (it.next(), it.next(), it.next(), it.next()) {
                (Some(h), Some(m), Some(sec), None) => (h, m, sec),
                _ => return Err(invalid(TY, "expected [-]H:MM:SS[.ffffff]")),
            };
            if !all_digits(h) || !all_digits(m) || m.len() != 2 || sec.starts_with(['-', '+']) {
                return Err(invalid(TY, "expected [-]H:MM:SS[.ffffff]"));
            }
            let h: i64 = h.parse().map_err(|_| overflow())?;
            let m: i64 = m.parse().map_err(|_| overflow())?;
            let us = parse_seconds(sec).ok_or_else(|| invalid(TY, "invalid seconds"))?;
            let sign = if neg { -1 } else { 1 };
            p.hours = h * sign;
            p.minutes = m * sign;
            p.micros = us * sign;
            continue;
        }
        if verbose && tok == "ago" && toks.peek().is_none() {
            ago = true;
            continue;
        }
        let unit = toks.next().ok_or_else(|| {
            invalid(
                TY,
                "expected a number followed by a unit (is IntervalStyle sql_standard?)",
            )
        })?;
        let unit = unit.strip_suffix('s').unwrap_or(unit);
        if unit == "sec" && verbose {
            p.micros = parse_seconds(tok).ok_or_else(|| invalid(TY, "invalid seconds"))?;
            continue;
        }
        // postgres style prints `+3 days` after a negative field.
        let num = tok.strip_prefix('+').unwrap_or(tok);
        let v = parse_int(num).map_err(|_| invalid(TY, "expected an integer before the unit"))?;
        match unit {
            "year" => p.years = v,
            "mon" => p.months = v,
            "day" => p.days = v,
            "hour" if verbose => p.hours = v,
            "min" if verbose => p.minutes = v,
            _ => return Err(invalid(TY, "unknown unit (is IntervalStyle sql_standard?)")),
        }
    }
    if ago {
        p.negate().ok_or_else(overflow)?;
    }
    if body.is_empty() {
        return Err(invalid(TY, "empty"));
    }
    Ok(p.to_iso())
}

/// Parses an array literal `[lo:hi]...={...}`; lower bounds are dropped.
fn decode_array(elem: &PgType, delim: u8, s: &str) -> Result<Value, TypeError> {
    let mut b = s.as_bytes();
    if b.first() == Some(&b'[') {
        let eq = b
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| invalid("array", "dimension decoration without '='"))?;
        let dims = b.get(..eq).unwrap_or(&[]);
        if !dims
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'[' | b']' | b':' | b'-'))
        {
            return Err(invalid("array", "malformed dimension decoration"));
        }
        b = b.get(eq + 1..).unwrap_or(&[]);
    }
    let mut p = ArrayParser {
        b,
        i: 0,
        delim,
        elem,
        count: 0,
    };
    let v = p.parse_level(0)?;
    if p.i != p.b.len() {
        return Err(invalid("array", "trailing characters after '}'"));
    }
    Ok(v)
}

struct ArrayParser<'a> {
    b: &'a [u8],
    i: usize,
    delim: u8,
    elem: &'a PgType,
    /// Elements seen so far (for error messages).
    count: usize,
}

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn parse_level(&mut self, depth: usize) -> Result<Value, TypeError> {
        if depth >= MAX_ARRAY_DIMS {
            return Err(invalid("array", "more than 6 dimensions"));
        }
        if self.peek() != Some(b'{') {
            return Err(invalid("array", "expected '{'"));
        }
        self.i += 1;
        let mut items = Vec::new();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            match self.peek() {
                Some(b'{') => items.push(self.parse_level(depth + 1)?),
                Some(b'"') => {
                    let raw = self.quoted()?;
                    items.push(self.element(&raw)?);
                }
                Some(_) => {
                    let start = self.i;
                    while let Some(c) = self.peek() {
                        if c == self.delim || c == b'}' {
                            break;
                        }
                        if c == b'{' || c == b'"' || c == b'\\' {
                            return Err(invalid(
                                "array",
                                "unexpected character in unquoted element",
                            ));
                        }
                        self.i += 1;
                    }
                    let raw = self.b.get(start..self.i).unwrap_or(&[]);
                    if raw.is_empty() {
                        return Err(invalid("array", "empty unquoted element"));
                    }
                    if raw.eq_ignore_ascii_case(b"NULL") {
                        self.count += 1;
                        items.push(Value::Null);
                    } else {
                        items.push(self.element(raw)?);
                    }
                }
                None => return Err(invalid("array", "unterminated array")),
            }
            match self.peek() {
                Some(c) if c == self.delim => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(invalid("array", "expected a delimiter or '}'")),
            }
        }
    }

    /// A double-quoted element with `\` escapes; returns its unescaped bytes.
    fn quoted(&mut self) -> Result<Vec<u8>, TypeError> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let c = self
                        .b
                        .get(self.i + 1)
                        .ok_or_else(|| invalid("array", "unterminated escape"))?;
                    out.push(*c);
                    self.i += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
                None => return Err(invalid("array", "unterminated quoted element")),
            }
        }
    }

    fn element(&mut self, raw: &[u8]) -> Result<Value, TypeError> {
        let index = self.count;
        self.count += 1;
        decode_text(self.elem, raw).map_err(|e| TypeError::ArrayElement {
            index,
            source: Box::new(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(ty: &PgType, s: &str) -> Value {
        match decode_text(ty, s.as_bytes()) {
            Ok(v) => v,
            Err(e) => panic!("{s:?} as {}: {e}", ty.name()),
        }
    }

    fn bad(ty: &PgType, s: &[u8]) {
        assert!(
            decode_text(ty, s).is_err(),
            "{:?} should not decode as {}",
            String::from_utf8_lossy(s),
            ty.name()
        );
    }

    fn arr(t: PgType) -> PgType {
        PgType::Array {
            elem: Arc::new(t),
            delim: b',',
        }
    }

    #[test]
    fn bools_and_ints() {
        assert_eq!(d(&PgType::Bool, "t"), Value::Bool(true));
        assert_eq!(d(&PgType::Bool, "f"), Value::Bool(false));
        bad(&PgType::Bool, b"yes");
        assert_eq!(
            d(&PgType::Int, "-9223372036854775808"),
            Value::Int(i64::MIN)
        );
        assert_eq!(d(&PgType::Int, "32767"), Value::Int(32767));
        bad(&PgType::Int, b"9223372036854775808");
        bad(&PgType::Int, b"+1");
        bad(&PgType::Int, b"");
        bad(&PgType::Int, b"-");
        bad(&PgType::Int, b"1 ");
        assert_eq!(d(&PgType::Oid, "4294967295"), Value::Int(4_294_967_295));
        bad(&PgType::Oid, b"4294967296");
        bad(&PgType::Oid, b"-1");
        assert_eq!(PgType::builtin(20), Some(PgType::Int));
        assert_eq!(PgType::builtin(21), Some(PgType::Int));
    }

    #[test]
    fn numerics() {
        for s in [
            "0",
            "12.50",
            "-0.000001",
            "NaN",
            "Infinity",
            "-Infinity",
            "123456789012345678901234567890.123",
        ] {
            assert_eq!(d(&PgType::Numeric, s), Value::Decimal(s.into()));
        }
        for s in [&b"1e5"[..], b"1.", b".5", b"--1", b"nan", b"", b"1.2.3"] {
            bad(&PgType::Numeric, s);
        }
    }

    #[test]
    fn floats_keep_their_decimal_text() {
        assert_eq!(d(&PgType::Float4, "1.1"), Value::Float(1.1));
        let mut out = Vec::new();
        d(&PgType::Float4, "1.1").write_json(&mut out).expect("vec");
        assert_eq!(out, b"1.1");
        assert_eq!(
            d(&PgType::Float4, "3.4028235e+38"),
            Value::Float(3.4028235e38)
        );
        assert_eq!(d(&PgType::Float8, "-1.5e-07"), Value::Float(-1.5e-7));
        assert_eq!(
            d(&PgType::Float8, "1.7976931348623157e+308"),
            Value::Float(f64::MAX)
        );
        assert_eq!(d(&PgType::Float8, "Infinity"), Value::Float(f64::INFINITY));
        assert_eq!(
            d(&PgType::Float8, "-Infinity"),
            Value::Float(f64::NEG_INFINITY)
        );
        assert!(matches!(d(&PgType::Float4, "NaN"), Value::Float(f) if f.is_nan()));
        assert_eq!(d(&PgType::Float8, "-0"), Value::Float(-0.0));
        for s in [
            &b"inf"[..],
            b"nan",
            b"infinity",
            b"",
            b"1e999",
            b"1,5",
            b"e",
            b".",
        ] {
            bad(&PgType::Float8, s);
        }
    }

    #[test]
    fn text_like() {
        assert_eq!(d(&PgType::Text, "héllo 😀"), Value::Text("héllo 😀".into()));
        assert_eq!(d(&PgType::Text, ""), Value::Text(String::new()));
        assert_eq!(d(&PgType::Enum, "happy"), Value::Text("happy".into()));
        assert_eq!(d(&PgType::Other, "(1,2)"), Value::Text("(1,2)".into()));
        bad(&PgType::Text, b"\xff\xfe");
        assert_eq!(TypeCache::new().get(1042), PgType::Text);
        assert_eq!(TypeCache::new().get(99_999), PgType::Other);
    }

    #[test]
    fn bytea_hex_and_escape() {
        assert_eq!(
            d(&PgType::Bytea, "\\x00ff10"),
            Value::Bytes(vec![0, 255, 16])
        );
        assert_eq!(
            d(&PgType::Bytea, "\\xDEADbeef"),
            Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(d(&PgType::Bytea, "\\x"), Value::Bytes(vec![]));
        assert_eq!(
            d(&PgType::Bytea, "ab\\\\c\\000\\377"),
            Value::Bytes(b"ab\\c\x00\xff".to_vec())
        );
        assert_eq!(d(&PgType::Bytea, ""), Value::Bytes(vec![]));
        for s in [&b"\\x0"[..], b"\\xzz", b"\\4", b"\\400", b"a\\", b"\\x0g"] {
            bad(&PgType::Bytea, s);
        }
    }

    #[test]
    fn uuid_and_json() {
        assert_eq!(
            d(&PgType::Uuid, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
            Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
        );
        bad(&PgType::Uuid, b"a0eebc999c0b4ef8bb6d6bb9bd380a11");
        bad(&PgType::Uuid, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g");
        let j = r#"{"a": [1, 2.5, null], "b": "x\"y"}"#;
        assert_eq!(d(&PgType::Json, j), Value::Json(j.into()));
        assert_eq!(d(&PgType::Json, "3"), Value::Json("3".into()));
        bad(&PgType::Json, b"{\"a\":");
        bad(&PgType::Json, b"");
    }

    #[test]
    fn dates() {
        assert_eq!(
            d(&PgType::Date, "2024-02-29"),
            Value::Date("2024-02-29".into())
        );
        assert_eq!(d(&PgType::Date, "infinity"), Value::Date("infinity".into()));
        assert_eq!(
            d(&PgType::Date, "-infinity"),
            Value::Date("-infinity".into())
        );
        assert_eq!(
            d(&PgType::Date, "0044-03-15 BC"),
            Value::Date("-0043-03-15".into())
        );
        assert_eq!(
            d(&PgType::Date, "0001-01-01 BC"),
            Value::Date("0000-01-01".into())
        );
        assert_eq!(
            d(&PgType::Date, "4714-11-24 BC"),
            Value::Date("-4713-11-24".into())
        );
        assert_eq!(
            d(&PgType::Date, "5874897-12-31"),
            Value::Date("5874897-12-31".into())
        );
        for s in [
            &b"2024-1-02"[..],
            b"01/02/2024",
            b"2024-13-01",
            b"2024-01-02 ",
            b"0000-01-01 BC",
            b"2024-01",
            b"",
        ] {
            bad(&PgType::Date, s);
        }
    }

    #[test]
    fn times() {
        assert_eq!(
            d(&PgType::Time, "04:05:06.789"),
            Value::Time("04:05:06.789".into())
        );
        assert_eq!(d(&PgType::Time, "24:00:00"), Value::Time("24:00:00".into()));
        assert_eq!(
            d(&PgType::TimeTz, "04:05:06+01"),
            Value::Time("04:05:06+01:00".into())
        );
        assert_eq!(
            d(&PgType::TimeTz, "04:05:06.5-05:30"),
            Value::Time("04:05:06.5-05:30".into())
        );
        assert_eq!(
            d(&PgType::TimeTz, "00:00:00+00:53:28"),
            Value::Time("00:00:00+00:53:28".into())
        );
        for s in [
            &b"4:05:06"[..],
            b"04:05",
            b"25:00:00",
            b"04:05:06.1234567",
            b"04:05:06.",
            b"04:05:06x",
        ] {
            bad(&PgType::Time, s);
        }
        bad(&PgType::TimeTz, b"04:05:06");
        bad(&PgType::TimeTz, b"04:05:06+1");
    }

    #[test]
    fn timestamps() {
        let ts = |s| d(&PgType::Timestamp, s);
        assert_eq!(
            ts("2024-01-02 03:04:05.123456"),
            Value::Timestamp("2024-01-02T03:04:05.123456".into())
        );
        assert_eq!(
            ts("2024-01-02 03:04:05"),
            Value::Timestamp("2024-01-02T03:04:05".into())
        );
        assert_eq!(ts("infinity"), Value::Timestamp("infinity".into()));
        assert_eq!(
            ts("0044-03-15 12:00:00 BC"),
            Value::Timestamp("-0043-03-15T12:00:00".into())
        );
        bad(&PgType::Timestamp, b"2024-01-02T03:04:05");
        bad(&PgType::Timestamp, b"2024-01-02 03:04:05+01");

        let tz = |s| d(&PgType::TimestampTz, s);
        assert_eq!(
            tz("2024-01-02 03:04:05.123456+01"),
            Value::TimestampTz("2024-01-02T02:04:05.123456Z".into())
        );
        assert_eq!(
            tz("2024-01-02 03:04:05+05:30"),
            Value::TimestampTz("2024-01-01T21:34:05Z".into())
        );
        assert_eq!(
            tz("2024-12-31 22:30:00-02"),
            Value::TimestampTz("2025-01-01T00:30:00Z".into())
        );
        assert_eq!(
            tz("2024-03-01 00:00:00.5+00"),
            Value::TimestampTz("2024-03-01T00:00:00.5Z".into())
        );
        assert_eq!(
            tz("2024-03-01 00:10:00+00:53:28"),
            Value::TimestampTz("2024-02-29T23:16:32Z".into())
        );
        assert_eq!(tz("-infinity"), Value::TimestampTz("-infinity".into()));
        assert_eq!(
            tz("0001-01-01 00:30:00+01 BC"),
            Value::TimestampTz("-0001-12-31T23:30:00Z".into())
        );
        assert_eq!(
            tz("0001-01-01 00:30:00+01"),
            Value::TimestampTz("0000-12-31T23:30:00Z".into())
        );
        assert_eq!(
            tz("294276-12-31 23:59:59.999999+00"),
            Value::TimestampTz("294276-12-31T23:59:59.999999Z".into())
        );
        for s in [
            &b"2024-01-02 03:04:05"[..],
            b"2024-01-02 03:04:05+1",
            b"2024-01-02 03:04:05+01:60",
            b"2024-01-02 03:04:05+01:00:00:00",
        ] {
            bad(&PgType::TimestampTz, s);
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in [-1_000_000i64, -719_468, -1, 0, 1, 19_723, 2_000_000] {
            assert_eq!(days_from_civil(civil_from_days(days)), days);
        }
        assert_eq!(
            days_from_civil(Ymd {
                y: 1970,
                m: 1,
                d: 1
            }),
            0
        );
        assert_eq!(
            days_from_civil(Ymd {
                y: 2000,
                m: 3,
                d: 1
            }),
            11_017
        );
    }

    #[test]
    fn intervals_postgres_style() {
        let iv = |s| match d(&PgType::Interval, s) {
            Value::Interval(x) => x,
            other => panic!("{other:?}"),
        };
        assert_eq!(iv("1 year 2 mons 3 days 04:05:06.5"), "P1Y2M3DT4H5M6.5S");
        assert_eq!(iv("-1 days +02:00:00"), "P-1DT2H");
        assert_eq!(iv("00:00:00"), "PT0S");
        assert_eq!(iv("1 day"), "P1D");
        assert_eq!(iv("-00:00:00.000001"), "PT-0.000001S");
        assert_eq!(
            iv("-1 years -2 mons +3 days -04:05:06"),
            "P-1Y-2M3DT-4H-5M-6S"
        );
        assert_eq!(iv("100:00:00"), "PT100H");
        assert_eq!(iv("3 years"), "P3Y");
        assert_eq!(iv("1 mon 00:00:01"), "P1MT1S");
        assert_eq!(iv("-2562047788:00:54.775807"), "PT-2562047788H-54.775807S");
        // iso_8601 style passes through, postgres_verbose converts.
        assert_eq!(iv("P1Y2M3DT4H5M6.5S"), "P1Y2M3DT4H5M6.5S");
        assert_eq!(
            iv("@ 1 year 2 mons 3 days 4 hours 5 mins 6.5 secs ago"),
            "P-1Y-2M-3DT-4H-5M-6.5S"
        );
        assert_eq!(iv("@ 1 sec"), "PT1S");
        assert_eq!(iv("@ 0"), "PT0S");
        assert_eq!(iv("@ 0.5 secs ago"), "PT-0.5S");
        assert_eq!(iv("1 day -00:00:01"), "P1DT-1S");
        assert_eq!(iv("1 year 2 mons -3 days +04:05:06.5"), "P1Y2M-3DT4H5M6.5S");
        for s in [
            &b"1-2 3 4:05:06"[..],
            b"1 fortnight",
            b"",
            b"P",
            b"1",
            b"04:05",
            b"-1 days +02:00:00:00",
            b"1 day 04:-5:06",
            b"@ 1 year ago ago",
        ] {
            bad(&PgType::Interval, s);
        }
    }

    #[test]
    fn arrays() {
        let ints = arr(PgType::Int);
        assert_eq!(d(&ints, "{}"), Value::Array(vec![]));
        assert_eq!(
            d(&ints, "{1,NULL,-3}"),
            Value::Array(vec![Value::Int(1), Value::Null, Value::Int(-3)])
        );
        assert_eq!(
            d(&ints, "{{1,2},{3,NULL}}"),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Null]),
            ])
        );
        assert_eq!(
            d(&ints, "[2:3]={5,6}"),
            Value::Array(vec![Value::Int(5), Value::Int(6)])
        );
        assert_eq!(
            d(&ints, "[0:1][-1:-1]={{5},{6}}"),
            Value::Array(vec![
                Value::Array(vec![Value::Int(5)]),
                Value::Array(vec![Value::Int(6)])
            ])
        );
        let texts = arr(PgType::Text);
        assert_eq!(
            d(
                &texts,
                r#"{"a b","q\"uote","back\\slash","NULL",null,"",x}"#
            ),
            Value::Array(vec![
                Value::Text("a b".into()),
                Value::Text("q\"uote".into()),
                Value::Text("back\\slash".into()),
                Value::Text("NULL".into()),
                Value::Null,
                Value::Text(String::new()),
                Value::Text("x".into()),
            ])
        );
        assert_eq!(
            d(&arr(PgType::Bytea), r#"{"\\x00ff",NULL}"#),
            Value::Array(vec![Value::Bytes(vec![0, 255]), Value::Null])
        );
        assert_eq!(
            d(&arr(PgType::TimestampTz), r#"{"2024-01-02 03:04:05+01"}"#),
            Value::Array(vec![Value::TimestampTz("2024-01-02T02:04:05Z".into())])
        );
        let boxes = PgType::Array {
            elem: Arc::new(PgType::Other),
            delim: b';',
        };
        assert_eq!(
            d(&boxes, "{(1,1),(0,0);(2,2),(1,1)}"),
            Value::Array(vec![
                Value::Text("(1,1),(0,0)".into()),
                Value::Text("(2,2),(1,1)".into())
            ])
        );
        for s in [
            &b"{1,2"[..],
            b"{1,,2}",
            b"1,2",
            b"{1}x",
            b"{{{{{{{1}}}}}}}",
            b"{\"a}",
            b"[1:2]{1,2}",
            b"{1,x}",
            b"{a\"b}",
            b"",
        ] {
            bad(&ints, s);
        }
        let e = decode_text(&ints, b"{1,x}").expect_err("bad element");
        assert!(
            matches!(e, TypeError::ArrayElement { index: 1, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn errors_name_the_type_not_the_value() {
        let e = decode_text(&PgType::Date, b"secret-value").expect_err("invalid");
        let msg = e.to_string();
        assert!(msg.contains("date"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }

    fn all_types() -> Vec<PgType> {
        let scalars = vec![
            PgType::Bool,
            PgType::Int,
            PgType::Oid,
            PgType::Numeric,
            PgType::Float4,
            PgType::Float8,
            PgType::Text,
            PgType::Bytea,
            PgType::Uuid,
            PgType::Json,
            PgType::Date,
            PgType::Time,
            PgType::TimeTz,
            PgType::Timestamp,
            PgType::TimestampTz,
            PgType::Interval,
            PgType::Enum,
            PgType::Other,
        ];
        let mut all = scalars.clone();
        all.extend(scalars.into_iter().map(arr));
        all.push(arr(arr(PgType::Int)));
        all
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for ty in all_types() {
                let _ = decode_text(&ty, &bytes);
            }
        }

        #[test]
        fn structured_noise_never_panics(s in "[-+0-9:. {}\",\\\\NULTPYMDHS@a-z\\[\\]=]{0,40}") {
            for ty in all_types() {
                let _ = decode_text(&ty, s.as_bytes());
            }
        }

        #[test]
        fn timestamptz_utc_is_identity_at_zero_offset(
            y in 1i64..9999, m in 1u32..=12, day in 1u32..=28, h in 0u32..24, mi in 0u32..60, sec in 0u32..60
        ) {
            let s = format!("{y:04}-{m:02}-{day:02} {h:02}:{mi:02}:{sec:02}+00");
            let want = format!("{y:04}-{m:02}-{day:02}T{h:02}:{mi:02}:{sec:02}Z");
            prop_assert_eq!(decode_text(&PgType::TimestampTz, s.as_bytes()).ok(), Some(Value::TimestampTz(want)));
        }
    }
}
