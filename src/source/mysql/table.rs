//! Tables as the binlog describes them: a [`TableInfo`] per table map, built once (the
//! reader caches it by table id and the map's raw bytes) with each column's decoding
//! [`Kind`], its name, and — for tables the filter selects — the shared `Arc<TableSchema>`
//! and the column projection.
//!
//! Column names, signedness, character sets, ENUM/SET members and the primary key come
//! from the table map's optional metadata (`binlog_row_metadata=FULL`; MINIMAL carries
//! signedness and character sets only). What the map lacks is read from
//! `information_schema` ([`load_schema`]), which describes the *current* table: the reader
//! drops that cache after every DDL statement, so names stay right while streaming, but a
//! replay across a later schema change needs `binlog_row_metadata=FULL` (a column count
//! mismatch is reported, a rename cannot be detected).

use super::charset::{Charset, CollationMap};
use super::error::MysqlError;
use super::sql::{quote, SqlConn};
use super::types::Kind;
use crate::event::{SourceInfo, TableSchema};
use crate::filter::Filter;
use mysql_cdc::events::table_map_event::TableMapEvent;
use std::borrow::Cow;
use std::sync::Arc;

/// MySQL 8.0.13+ keeps each functional key part `((expr))` of an index in a hidden
/// generated column named `!hidden!<index>!<part>!<n>`, appended after the table's columns
/// when the index is created (a column added later comes after it). MySQL 8.0.13–8.0.17
/// write these columns into table maps (and their names under FULL metadata); 8.0.18 and
/// later leave them out; `information_schema` never lists them. The schema history
/// ([`super::schema_ddl`]) tracks them so a map that has them can be read by position;
/// events never carry them.
pub const HIDDEN_PREFIX: &str = "!hidden!";

/// Whether a column is the hidden column of a functional key part.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with(HIDDEN_PREFIX)
}

/// One column as `information_schema` describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ColumnMeta {
    pub name: String,
    /// `COLUMN_TYPE`, lower case (`int(10) unsigned`, `enum('a','b')`).
    pub column_type: String,
    pub charset: Option<String>,
    /// MariaDB JSON: a text column with a `json_valid(col)` check.
    pub json: bool,
}

/// A table as `information_schema` describes it now (or the schema history as of a
/// binlog position, see [`super::history`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchemaInfo {
    pub columns: Vec<ColumnMeta>,
    /// Primary key column indices, in key order.
    pub key: Vec<usize>,
}

impl SchemaInfo {
    /// This description as it fits a table map of `n` columns: as it is, or without its
    /// hidden columns ([`HIDDEN_PREFIX`]) when the map leaves them out (MySQL 8.0.18+).
    pub fn for_map(&self, n: usize) -> Cow<'_, SchemaInfo> {
        let visible = self.visible();
        if self.columns.len() != n && visible.columns.len() == n {
            visible
        } else {
            Cow::Borrowed(self)
        }
    }

    /// The columns a user sees: without the hidden ones, the key re-indexed.
    pub fn visible(&self) -> Cow<'_, SchemaInfo> {
        if !self.columns.iter().any(|c| is_hidden(&c.name)) {
            return Cow::Borrowed(self);
        }
        let keep: Vec<usize> = (0..self.columns.len())
            .filter(|&i| !is_hidden(&self.columns[i].name))
            .collect();
        Cow::Owned(SchemaInfo {
            columns: keep.iter().map(|&i| self.columns[i].clone()).collect(),
            key: self
                .key
                .iter()
                .filter_map(|k| keep.iter().position(|i| i == k))
                .collect(),
        })
    }
}

/// Reads a table's columns, key and (MariaDB) JSON checks; `None` when it does not exist.
pub fn load_schema(
    conn: &mut SqlConn,
    db: &str,
    table: &str,
) -> Result<Option<SchemaInfo>, MysqlError> {
    let cols = conn.query(&format!(
        "SELECT COLUMN_NAME, LOWER(COLUMN_TYPE), CHARACTER_SET_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
        quote(db),
        quote(table)
    ))?;
    if cols.rows.is_empty() {
        return Ok(None);
    }
    let mut columns: Vec<ColumnMeta> = (0..cols.rows.len())
        .map(|r| ColumnMeta {
            name: cols.text(r, 0).unwrap_or_default(),
            column_type: cols.text(r, 1).unwrap_or_default(),
            charset: cols.text(r, 2),
            json: false,
        })
        .collect();
    let keys = conn.query(&format!(
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} \
         AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
        quote(db),
        quote(table)
    ))?;
    let key = (0..keys.rows.len())
        .filter_map(|r| keys.text(r, 0))
        .filter_map(|k| columns.iter().position(|c| c.name == k))
        .collect();
    if conn.mariadb && columns.iter().any(|c| c.column_type == "longtext") {
        let checks = conn.query(&format!(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = {} AND TABLE_NAME = {}",
            quote(db),
            quote(table)
        ))?;
        for r in 0..checks.rows.len() {
            let clause = checks.text(r, 0).unwrap_or_default();
            for c in columns.iter_mut() {
                if clause == format!("json_valid(`{}`)", c.name.replace('`', "``")) {
                    c.json = true;
                }
            }
        }
    }
    Ok(Some(SchemaInfo { columns, key }))
}

/// What the reader keeps for tables the filter selects.
#[derive(Debug)]
pub struct Selected {
    pub schema: Arc<TableSchema>,
    /// For each table-map column, its slot in the projected row (`None`: dropped).
    pub slot: Vec<Option<usize>>,
}

/// One table map, ready for decoding rows.
#[derive(Debug)]
pub struct TableInfo {
    pub db: String,
    pub name: String,
    pub kinds: Vec<Kind>,
    pub names: Vec<String>,
    pub selected: Option<Selected>,
    /// A map of a table the filter does not select that logtide cannot parse (a column
    /// type it does not know): its rows are skipped without being measured or counted.
    pub opaque: bool,
}

impl TableInfo {
    /// The placeholder for an unparsable map of an unselected table.
    pub fn opaque(db: String, name: String) -> TableInfo {
        TableInfo {
            db,
            name,
            kinds: Vec::new(),
            names: Vec::new(),
            selected: None,
            opaque: true,
        }
    }
}

/// MariaDB `VARCHAR … COMPRESSED` in a table map (same metadata as VARCHAR).
pub const MYSQL_TYPE_VARCHAR_COMPRESSED: u8 = 141;
/// MariaDB `BLOB/TEXT … COMPRESSED` in a table map (same metadata as BLOB).
pub const MYSQL_TYPE_BLOB_COMPRESSED: u8 = 140;

/// The database and table name of a table map body, and where its column types are.
pub fn map_header(body: &[u8]) -> Option<(String, String, std::ops::Range<usize>)> {
    use super::sql::lenenc;
    let mut pos = 8;
    let db_len = usize::from(*body.get(pos)?);
    let db = body.get(pos + 1..pos + 1 + db_len)?;
    pos += 1 + db_len + 1;
    let tbl_len = usize::from(*body.get(pos)?);
    let tbl = body.get(pos + 1..pos + 1 + tbl_len)?;
    pos += 1 + tbl_len + 1;
    let ncols = usize::try_from(lenenc(body, &mut pos)?).ok()?;
    let types = pos..pos.checked_add(ncols)?;
    body.get(types.clone())?;
    Some((
        String::from_utf8_lossy(db).into_owned(),
        String::from_utf8_lossy(tbl).into_owned(),
        types,
    ))
}

/// A table map body with the column types `mysql_cdc` does not know replaced by the plain
/// types whose metadata they share, so the map parses: MariaDB's compressed columns
/// (VARCHAR, BLOB) and MySQL 9's VECTOR (BLOB, one metadata byte: the length prefix); and
/// without the optional metadata fields it does not know (VECTOR_DIMENSIONALITY). Also
/// which columns were compressed, and which are vectors. The body is borrowed as is when
/// there are none.
pub fn plain_types(body: &[u8], types: std::ops::Range<usize>) -> PlainTypes<'_> {
    let pick = |want: &dyn Fn(u8) -> bool| -> Vec<usize> {
        body[types.clone()]
            .iter()
            .enumerate()
            .filter(|(_, &t)| want(t))
            .map(|(i, _)| i)
            .collect()
    };
    let compressed =
        pick(&|t| t == MYSQL_TYPE_VARCHAR_COMPRESSED || t == MYSQL_TYPE_BLOB_COMPRESSED);
    let vectors = pick(&|t| t == MYSQL_TYPE_VECTOR);
    let stripped = without_unknown_metadata(body);
    if compressed.is_empty() && vectors.is_empty() {
        return PlainTypes {
            body: stripped.map_or(std::borrow::Cow::Borrowed(body), std::borrow::Cow::Owned),
            compressed,
            vectors,
        };
    }
    let mut b = stripped.unwrap_or_else(|| body.to_vec());
    for &i in compressed.iter().chain(&vectors) {
        let t = &mut b[types.start + i];
        *t = if *t == MYSQL_TYPE_VARCHAR_COMPRESSED {
            15
        } else {
            252
        };
    }
    PlainTypes {
        body: std::borrow::Cow::Owned(b),
        compressed,
        vectors,
    }
}

/// What [`plain_types`] made of a table map.
#[derive(Debug)]
pub struct PlainTypes<'a> {
    pub body: std::borrow::Cow<'a, [u8]>,
    /// MariaDB `COMPRESSED` columns (decode as [`Kind::Compressed`]).
    pub compressed: Vec<usize>,
    /// MySQL VECTOR columns (decode as [`Kind::Vector`]).
    pub vectors: Vec<usize>,
}

/// MySQL 9 `MYSQL_TYPE_VECTOR`.
const MYSQL_TYPE_VECTOR: u8 = 242;
const MYSQL_TYPE_STRING: u8 = 254;
const MYSQL_TYPE_ENUM: u8 = 247;
const MYSQL_TYPE_SET: u8 = 248;

fn is_numeric(t: u8) -> bool {
    // The columns the table map's signedness bits cover. The server counts YEAR too
    // (mysql_cdc does not, so its `signedness` is shifted after a YEAR column: we read
    // the bitmap ourselves with [`signedness_bitmap`]).
    matches!(t, 1 | 2 | 9 | 3 | 8 | 4 | 5 | 246 | 13)
}

/// The raw SIGNEDNESS bitmap (optional metadata type 1) of a table map body, most
/// significant bit first, one bit per numeric column.
pub fn signedness_bitmap(body: &[u8]) -> Option<&[u8]> {
    use super::sql::lenenc;
    let mut pos = optional_metadata_start(body)?;
    while pos < body.len() {
        let t = *body.get(pos)?;
        pos += 1;
        let len = usize::try_from(lenenc(body, &mut pos)?).ok()?;
        let v = body.get(pos..pos.checked_add(len)?)?;
        if t == 1 {
            return Some(v);
        }
        pos += len;
    }
    None
}

/// Where a table map body's optional metadata (type, length, value fields) begins.
fn optional_metadata_start(body: &[u8]) -> Option<usize> {
    use super::sql::lenenc;
    let mut pos = 8;
    let db_len = usize::from(*body.get(pos)?);
    pos += 1 + db_len + 1;
    let tbl_len = usize::from(*body.get(pos)?);
    pos += 1 + tbl_len + 1;
    let ncols = usize::try_from(lenenc(body, &mut pos)?).ok()?;
    pos = pos.checked_add(ncols)?;
    let meta_len = usize::try_from(lenenc(body, &mut pos)?).ok()?;
    pos.checked_add(meta_len)?.checked_add(ncols.div_ceil(8))
}

/// The optional metadata types `mysql_cdc` parses (SIGNEDNESS 1 … COLUMN_VISIBILITY 12);
/// later ones (MySQL 9's VECTOR_DIMENSIONALITY, 13) make it refuse the whole map.
const LAST_KNOWN_OPTIONAL_METADATA: u8 = 12;

/// Drops the optional metadata fields `mysql_cdc` does not know; `None` when there are
/// none (or the fields are malformed: the crate then reports that).
fn without_unknown_metadata(body: &[u8]) -> Option<Vec<u8>> {
    use super::sql::lenenc;
    let start = optional_metadata_start(body)?;
    let mut pos = start;
    let mut kept = body.get(..start)?.to_vec();
    let mut dropped = false;
    while pos < body.len() {
        let field_start = pos;
        let t = *body.get(pos)?;
        pos += 1;
        let len = usize::try_from(lenenc(body, &mut pos)?).ok()?;
        let end = pos.checked_add(len)?;
        body.get(pos..end)?;
        if t > LAST_KNOWN_OPTIONAL_METADATA {
            dropped = true;
        } else {
            kept.extend_from_slice(body.get(field_start..end)?);
        }
        pos = end;
    }
    dropped.then_some(kept)
}

/// ENUM/SET members from `COLUMN_TYPE` (`enum('a','it''s')`).
pub fn parse_members(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_str = false;
    let mut chars = column_type[open + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    cur.push('\'');
                } else {
                    in_str = false;
                    out.push(std::mem::take(&mut cur));
                }
            } else if c == '\\' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else {
                cur.push(c);
            }
        } else if c == '\'' {
            in_str = true;
        } else if c == ')' {
            break;
        }
    }
    out
}

/// Everything [`build`] needs besides the table map.
pub struct BuildContext<'a> {
    pub mariadb: bool,
    pub collations: &'a CollationMap,
    pub filter: &'a Filter,
    pub source: &'a Arc<SourceInfo>,
}

/// Builds the decoding info of one table map. `info` is the `information_schema` view of
/// the table when the map lacks something (names, signedness, charsets, members, key) or,
/// on MariaDB, to recognise JSON columns.
#[allow(clippy::needless_range_loop)] // one index into several parallel arrays
pub fn build(
    tm: &TableMapEvent,
    signedness: Option<&[u8]>,
    info: Option<&SchemaInfo>,
    selected: bool,
    cx: &BuildContext<'_>,
) -> Result<TableInfo, MysqlError> {
    let n = tm.column_types.len();
    let info = info.map(|i| i.for_map(n));
    let info = info.as_deref();
    let schema_err = |message: String| MysqlError::Schema {
        db: tm.database_name.clone(),
        table: tm.table_name.clone(),
        message,
    };
    let meta = tm.table_metadata.as_ref();
    let map_names = meta
        .and_then(|m| m.column_names.clone())
        .filter(|v| v.len() == n);
    // The description of each map column: by position when the counts agree, else by
    // name when the map has names (FULL metadata), so a JSON column stays JSON even when
    // the description is of another version of the table.
    let by_name: Option<Vec<Option<&ColumnMeta>>> = match (info, &map_names) {
        (Some(i), Some(names)) if i.columns.len() != n => Some(
            names
                .iter()
                .map(|nm| i.columns.iter().find(|c| &c.name == nm))
                .collect(),
        ),
        _ => None,
    };
    let info = info.filter(|i| i.columns.len() == n);
    let names: Vec<String> = match map_names {
        Some(v) => v,
        None => match info {
            Some(i) => i.columns.iter().map(|c| c.name.clone()).collect(),
            None if selected => {
                return Err(schema_err(format!(
                    "the binlog's table map has {n} columns without names (binlog_row_metadata is not FULL) and information_schema does not describe the table with {n} columns (it changed or was dropped since, or, on MySQL 8.0.13-8.0.17, it has a functional index whose hidden columns the map carries and information_schema does not list): set binlog_row_metadata=FULL to replay across schema changes"
                )))
            }
            None => (1..=n).map(|i| format!("@{i}")).collect(),
        },
    };
    let column_charsets = meta.and_then(|m| m.column_charsets.as_ref());
    let default_charset = meta.and_then(|m| m.default_charset.as_ref());
    let enum_values = meta.and_then(|m| m.enum_string_values.as_ref());
    let set_values = meta.and_then(|m| m.set_string_values.as_ref());

    let (mut num_i, mut char_i, mut enum_i, mut set_i) = (0usize, 0usize, 0usize, 0usize);
    let mut kinds = Vec::with_capacity(n);
    for i in 0..n {
        let t = tm.column_types[i];
        let m = tm.column_metadata.get(i).copied().unwrap_or(0);
        let col = match &by_name {
            Some(v) => v[i],
            None => info.map(|inf| &inf.columns[i]),
        };
        let unsigned = if is_numeric(t) {
            let u = match signedness {
                Some(s) => s
                    .get(num_i / 8)
                    .is_some_and(|b| b & (0x80 >> (num_i % 8)) != 0),
                None => col.is_some_and(|c| c.column_type.contains("unsigned")),
            };
            num_i += 1;
            u
        } else {
            false
        };
        // STRING carries the real type (CHAR, ENUM, SET) in its metadata's high byte.
        let (real, str_len) = if t == MYSQL_TYPE_STRING {
            let b0 = (m >> 8) as u8;
            let b1 = m & 0xFF;
            if b0 & 0x30 != 0x30 {
                (b0 | 0x30, b1 | ((u16::from(b0 & 0x30) ^ 0x30) << 4))
            } else {
                (b0, b1)
            }
        } else {
            (t, m)
        };
        let is_char_col = match t {
            MYSQL_TYPE_STRING => real != MYSQL_TYPE_ENUM && real != MYSQL_TYPE_SET,
            15 | 253 | 249..=252 => true,
            255 => cx.mariadb,
            _ => false,
        };
        let charset = if is_char_col {
            let coll = match (column_charsets, default_charset) {
                (Some(cs), _) => cs.get(char_i).copied(),
                (None, Some(d)) => Some(
                    d.charset_collations
                        .iter()
                        .find(|(idx, _)| *idx as usize == char_i)
                        .map(|(_, c)| *c)
                        .unwrap_or(d.default_charset_collation),
                ),
                (None, None) => None,
            };
            char_i += 1;
            match (coll, col) {
                (Some(id), _) => cx.collations.charset(id),
                (None, Some(c)) => Charset::from_name(c.charset.as_deref().unwrap_or("binary")),
                (None, None) if selected => {
                    return Err(schema_err(format!(
                        "no character set known for column {}",
                        names[i]
                    )))
                }
                (None, None) => Charset::Binary,
            }
        } else {
            Charset::Binary
        };
        let members = |values: Option<&Vec<Vec<String>>>, idx: &mut usize| -> Arc<Vec<String>> {
            let v = match values.and_then(|v| v.get(*idx)) {
                Some(v) => v.clone(),
                None => col
                    .map(|c| parse_members(&c.column_type))
                    .unwrap_or_default(),
            };
            *idx += 1;
            Arc::new(v)
        };
        let kind = match t {
            1 => Kind::Int { bytes: 1, unsigned },
            2 => Kind::Int { bytes: 2, unsigned },
            9 => Kind::Int { bytes: 3, unsigned },
            3 => Kind::Int { bytes: 4, unsigned },
            8 => Kind::Int { bytes: 8, unsigned },
            13 => Kind::Year,
            4 => Kind::Float,
            5 => Kind::Double,
            246 => Kind::Decimal {
                precision: (m & 0xFF) as u8,
                scale: (m >> 8) as u8,
            },
            16 => Kind::Bit {
                bits: (m >> 8) * 8 + (m & 0xFF),
            },
            10 | 14 => Kind::Date,
            11 => Kind::TimeOld,
            19 => Kind::Time { fsp: m as u8 },
            12 => Kind::DateTimeOld,
            18 => Kind::DateTime { fsp: m as u8 },
            7 => Kind::TimestampOld,
            17 => Kind::Timestamp { fsp: m as u8 },
            15 | 253 => Kind::Varchar {
                max_len: m,
                charset,
            },
            MYSQL_TYPE_STRING => match real {
                MYSQL_TYPE_ENUM => Kind::Enum {
                    pack_len: str_len as u8,
                    names: members(enum_values, &mut enum_i),
                },
                MYSQL_TYPE_SET => Kind::Set {
                    pack_len: str_len as u8,
                    names: members(set_values, &mut set_i),
                },
                _ => Kind::Char {
                    max_len: str_len,
                    charset,
                },
            },
            249..=252 => {
                if col.is_some_and(|c| c.json) && charset != Charset::Binary {
                    Kind::JsonText { pack_len: m as u8 }
                } else {
                    Kind::Blob {
                        pack_len: m as u8,
                        charset,
                    }
                }
            }
            245 => Kind::JsonBinary { pack_len: m as u8 },
            255 => Kind::Geometry { pack_len: m as u8 },
            MYSQL_TYPE_VECTOR => Kind::Vector { pack_len: m as u8 },
            MYSQL_TYPE_ENUM => Kind::Enum {
                pack_len: (m & 0xFF) as u8,
                names: members(enum_values, &mut enum_i),
            },
            MYSQL_TYPE_SET => Kind::Set {
                pack_len: (m & 0xFF) as u8,
                names: members(set_values, &mut set_i),
            },
            other => {
                return Err(schema_err(format!(
                    "column {} has binlog type {other}, which logtide does not decode",
                    names[i]
                )))
            }
        };
        // MariaDB's UUID / INET4 / INET6 are BINARY(16/4) in the table map; only
        // information_schema tells them apart.
        let kind = match (t, col.map(|c| c.column_type.as_str())) {
            (MYSQL_TYPE_STRING, Some("uuid")) if cx.mariadb => Kind::Uuid,
            (MYSQL_TYPE_STRING, Some("inet4")) if cx.mariadb => Kind::Inet4,
            (MYSQL_TYPE_STRING, Some("inet6")) if cx.mariadb => Kind::Inet6,
            _ => kind,
        };
        if selected {
            if let Kind::Enum { names: members, .. } | Kind::Set { names: members, .. } = &kind {
                if members.is_empty() {
                    return Err(schema_err(format!(
                        "the member names of ENUM/SET column {} are unknown (binlog_row_metadata is not FULL and information_schema does not describe it)",
                        names[i]
                    )));
                }
            }
        }
        kinds.push(kind);
    }

    let selected = if selected {
        let key: Vec<usize> = match meta {
            Some(m) if m.simple_primary_keys.is_some() || m.primary_keys_with_prefix.is_some() => m
                .simple_primary_keys
                .iter()
                .flatten()
                .map(|&k| k as usize)
                .chain(
                    m.primary_keys_with_prefix
                        .iter()
                        .flatten()
                        .map(|&(k, _)| k as usize),
                )
                .filter(|&k| k < n)
                .collect(),
            _ => info.map(|i| i.key.clone()).unwrap_or_default(),
        };
        // Hidden columns of functional indexes are decoded (to find the next column) and
        // dropped like a filtered-out column.
        let visible: Vec<usize> = (0..n).filter(|&i| !is_hidden(&names[i])).collect();
        let refs: Vec<&str> = visible.iter().map(|&i| names[i].as_str()).collect();
        let key: Vec<usize> = key
            .iter()
            .filter_map(|k| visible.iter().position(|i| i == k))
            .collect();
        let mut proj = cx
            .filter
            .project(&tm.database_name, &tm.table_name, &refs, &key)?;
        for c in &mut proj.keep {
            *c = visible[*c];
        }
        let mut slot = vec![None; n];
        for (s, &c) in proj.keep.iter().enumerate() {
            slot[c] = Some(s);
        }
        Some(Selected {
            schema: Arc::new(TableSchema {
                source: cx.source.clone(),
                db: tm.database_name.clone(),
                schema: tm.database_name.clone(),
                name: tm.table_name.clone(),
                columns: proj.keep.iter().map(|&c| names[c].clone()).collect(),
                key: proj.key,
                encoded: Default::default(),
            }),
            slot,
        })
    } else {
        None
    };
    Ok(TableInfo {
        db: tm.database_name.clone(),
        name: tm.table_name.clone(),
        kinds,
        names,
        selected,
        opaque: false,
    })
}

/// The schema of a table for a TRUNCATE event (no table map involved).
pub fn truncate_schema(
    db: &str,
    table: &str,
    info: Option<&SchemaInfo>,
    cx: &BuildContext<'_>,
) -> Result<Arc<TableSchema>, MysqlError> {
    let info = info.map(SchemaInfo::visible);
    let (names, key): (Vec<String>, Vec<usize>) = match info.as_deref() {
        Some(i) => (
            i.columns.iter().map(|c| c.name.clone()).collect(),
            i.key.clone(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let proj = cx.filter.project(db, table, &refs, &key)?;
    Ok(Arc::new(TableSchema {
        source: cx.source.clone(),
        db: db.to_owned(),
        schema: db.to_owned(),
        name: table.to_owned(),
        columns: proj.keep.iter().map(|&c| names[c].clone()).collect(),
        key: proj.key,
        encoded: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Connector;
    use mysql_cdc::metadata::table_metadata::TableMetadata;

    /// A table map of INT columns `types` (3 = LONG, 8 = LONGLONG), with FULL metadata
    /// naming them `names` and keyed on `key` when given.
    fn map(types: &[u8], names: Option<&[&str]>, key: &[u32]) -> TableMapEvent {
        TableMapEvent {
            table_id: 1,
            database_name: "d".into(),
            table_name: "t".into(),
            column_types: types.to_vec(),
            column_metadata: vec![0; types.len()],
            null_bitmap: vec![true; types.len()],
            table_metadata: names.map(|n| TableMetadata {
                signedness: None,
                default_charset: None,
                column_charsets: None,
                column_names: Some(n.iter().map(|s| s.to_string()).collect()),
                set_string_values: None,
                enum_string_values: None,
                geometry_types: None,
                simple_primary_keys: Some(key.to_vec()),
                primary_keys_with_prefix: None,
                enum_and_set_default_charset: None,
                enum_and_set_column_charsets: None,
                column_visibility: None,
            }),
        }
    }

    fn col(name: &str, ty: &str) -> ColumnMeta {
        ColumnMeta {
            name: name.into(),
            column_type: ty.into(),
            charset: None,
            json: false,
        }
    }

    /// The visible columns of a built map: names, slots and key.
    fn built(
        tm: &TableMapEvent,
        info: Option<&SchemaInfo>,
    ) -> (Vec<String>, Vec<Option<usize>>, Vec<usize>) {
        let filter = Filter::new(Default::default(), Default::default());
        let cx = BuildContext {
            mariadb: false,
            collations: &CollationMap::builtin(),
            filter: &filter,
            source: &Arc::new(SourceInfo {
                connector: Connector::Mysql,
                name: "s".into(),
            }),
        };
        let t = build(tm, None, info, true, &cx).expect("builds");
        let sel = t.selected.expect("selected");
        (sel.schema.columns.clone(), sel.slot, sel.schema.key.clone())
    }

    /// A functional index's hidden column (`HIDDEN_PREFIX`): decoded but never in the event
    /// or its key, whether the map names it (FULL metadata, MySQL 8.0.13-8.0.17), the
    /// schema history places it (MINIMAL), or the map leaves it out (8.0.18+).
    #[test]
    fn hidden_columns_are_dropped_in_every_case() {
        let want = (
            vec!["a".to_string(), "b".to_string()],
            vec![Some(0), None, Some(1)],
            vec![1],
        );
        let full = map(&[3, 8, 3], Some(&["a", "!hidden!i!0!0", "b"]), &[2]);
        assert_eq!(built(&full, None), want);
        let history = SchemaInfo {
            columns: vec![
                col("a", "int"),
                col("!hidden!i!0!0", "functional key part"),
                col("b", "int"),
            ],
            key: vec![2],
        };
        let minimal = map(&[3, 8, 3], None, &[]);
        assert_eq!(built(&minimal, Some(&history)), want);
        let without = map(&[3, 3], None, &[]);
        assert_eq!(
            built(&without, Some(&history)),
            (
                vec!["a".to_string(), "b".to_string()],
                vec![Some(0), Some(1)],
                vec![1]
            )
        );
    }

    #[test]
    fn members_from_column_type() {
        assert_eq!(
            parse_members("enum('a','it''s','x,y')"),
            vec!["a", "it's", "x,y"]
        );
        assert_eq!(parse_members("set('')"), vec![""]);
        assert!(parse_members("int(11)").is_empty());
    }
}
