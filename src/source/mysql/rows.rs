//! Rows events (WRITE/UPDATE/DELETE, v1 as MariaDB writes them and v2 as MySQL 5.6+ does)
//! decoded with our own value decoder.
//!
//! Body layout: table id (6 bytes), flags (2), v2 only: extra-data length (2, counting
//! itself) and the extra data; column count (length-encoded), the columns-present bitmap,
//! for updates a second one for the after image; then row images until the end: a NULL
//! bitmap over the present columns, then the present non-NULL values. A column missing
//! from the present bitmap (MINIMAL/NOBLOB images) becomes an absent cell (`None`), which
//! is different from SQL NULL (`Some(Value::Null)`).

use super::sql::lenenc;
use super::table::TableInfo;
use super::types::{decode_binlog, field_len, DecodeError};
use crate::event::Row;
use crate::value::Value;

/// Which rows event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsKind {
    Write,
    Update,
    Delete,
}

/// The fixed part of a rows event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowsHeader {
    pub table_id: u64,
    pub flags: u16,
}

/// Problems of a rows event, before the reader names the place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowsError {
    Malformed(String),
    /// A value failed to decode; `column` is the table-map column index.
    Value {
        column: usize,
        source: DecodeError,
    },
}

fn malformed<T>(m: impl Into<String>) -> Result<T, RowsError> {
    Err(RowsError::Malformed(m.into()))
}

/// Reads the table id and flags.
pub fn header(body: &[u8]) -> Result<RowsHeader, RowsError> {
    let Some(b) = body.get(..8) else {
        return malformed("rows event shorter than its header");
    };
    let table_id = b[..6]
        .iter()
        .rev()
        .fold(0u64, |a, &x| (a << 8) | u64::from(x));
    Ok(RowsHeader {
        table_id,
        flags: u16::from_le_bytes([b[6], b[7]]),
    })
}

fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Decodes every row of the event and hands `(before, after)` images to `emit`; when
/// `table.selected` is `None` rows are only measured (to count them). Returns the number
/// of rows.
pub fn for_each_row<E>(
    body: &[u8],
    v2: bool,
    kind: RowsKind,
    table: &TableInfo,
    mut emit: impl FnMut(Option<Row>, Option<Row>) -> Result<(), E>,
) -> Result<Result<usize, E>, RowsError> {
    let mut pos = 8;
    if v2 {
        let Some(b) = body.get(8..10) else {
            return malformed("truncated v2 extra data");
        };
        let extra = usize::from(u16::from_le_bytes([b[0], b[1]]));
        if extra < 2 {
            return malformed("bad v2 extra data length");
        }
        pos += extra;
    }
    let Some(ncols) = lenenc(body, &mut pos) else {
        return malformed("truncated column count");
    };
    let ncols = ncols as usize;
    if ncols > table.kinds.len() {
        return malformed(format!(
            "rows event has {ncols} columns, its table map {}",
            table.kinds.len()
        ));
    }
    let bm_len = ncols.div_ceil(8);
    let Some(present) = body.get(pos..pos + bm_len) else {
        return malformed("truncated column bitmap");
    };
    pos += bm_len;
    let present_after = if kind == RowsKind::Update {
        let Some(p) = body.get(pos..pos + bm_len) else {
            return malformed("truncated column bitmap");
        };
        pos += bm_len;
        p
    } else {
        present
    };
    let want = table.selected.as_ref();
    let n_before = (0..ncols).filter(|&i| bit(present, i)).count();
    let n_after = (0..ncols).filter(|&i| bit(present_after, i)).count();
    let mut rows = 0;
    while pos < body.len() {
        let row_start = pos;
        let first = image(
            body,
            &mut pos,
            (ncols, n_before),
            present,
            table,
            want.is_some(),
        )?;
        let (before, after) = match kind {
            RowsKind::Write => (None, first),
            RowsKind::Delete => (first, None),
            RowsKind::Update => {
                let second = image(
                    body,
                    &mut pos,
                    (ncols, n_after),
                    present_after,
                    table,
                    want.is_some(),
                )?;
                (first, second)
            }
        };
        if pos == row_start {
            return malformed("row image without columns");
        }
        rows += 1;
        if want.is_some() {
            if let Err(e) = emit(before, after) {
                return Ok(Err(e));
            }
        }
    }
    Ok(Ok(rows))
}

/// One row image; `Some(row)` only when `decode`.
fn image(
    body: &[u8],
    pos: &mut usize,
    (ncols, npresent): (usize, usize),
    present: &[u8],
    table: &TableInfo,
    decode: bool,
) -> Result<Option<Row>, RowsError> {
    let nb_len = npresent.div_ceil(8);
    let Some(nulls) = body.get(*pos..*pos + nb_len) else {
        return malformed("truncated NULL bitmap");
    };
    *pos += nb_len;
    let sel = if decode {
        table.selected.as_ref()
    } else {
        None
    };
    let mut row: Option<Row> = sel.map(|s| vec![None; s.schema.columns.len()]);
    let mut j = 0;
    for i in 0..ncols {
        if !bit(present, i) {
            continue;
        }
        let is_null = bit(nulls, j);
        j += 1;
        let slot = sel.and_then(|s| s.slot.get(i).copied().flatten());
        if is_null {
            if let (Some(r), Some(s)) = (row.as_mut(), slot) {
                r[s] = Some(Value::Null);
            }
            continue;
        }
        let kind = &table.kinds[i];
        let rest = body.get(*pos..).unwrap_or(&[]);
        let n = field_len(kind, rest).map_err(|source| RowsError::Value { column: i, source })?;
        if let (Some(r), Some(s)) = (row.as_mut(), slot) {
            let v = decode_binlog(kind, &rest[..n])
                .map_err(|source| RowsError::Value { column: i, source })?;
            r[s] = Some(v);
        }
        *pos += n;
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Connector, SourceInfo, TableSchema};
    use crate::source::mysql::charset::Charset;
    use crate::source::mysql::table::Selected;
    use crate::source::mysql::types::Kind;
    use std::sync::Arc;

    fn table() -> TableInfo {
        let kinds = vec![
            Kind::Int {
                bytes: 4,
                unsigned: false,
            },
            Kind::Varchar {
                max_len: 20,
                charset: Charset::Utf8,
            },
            Kind::Int {
                bytes: 8,
                unsigned: true,
            },
        ];
        let names: Vec<String> = vec!["id".into(), "name".into(), "n".into()];
        TableInfo {
            db: "d".into(),
            name: "t".into(),
            opaque: false,
            selected: Some(Selected {
                schema: Arc::new(TableSchema {
                    source: Arc::new(SourceInfo {
                        connector: Connector::Mysql,
                        name: "s".into(),
                    }),
                    db: "d".into(),
                    schema: "d".into(),
                    name: "t".into(),
                    columns: names.clone(),
                    key: vec![0],
                }),
                slot: vec![Some(0), Some(1), Some(2)],
            }),
            kinds,
            names,
        }
    }

    fn write_event() -> Vec<u8> {
        let mut b = vec![1, 0, 0, 0, 0, 0, 1, 0]; // table id 1, flags STMT_END
        b.push(3); // ncols
        b.push(0b111); // present
                       // row 1: id=7, name="hé", n=NULL
        b.push(0b100);
        b.extend_from_slice(&7i32.to_le_bytes());
        b.push(3);
        b.extend_from_slice("hé".as_bytes());
        // row 2: id=-1, name=NULL, n=max
        b.push(0b010);
        b.extend_from_slice(&(-1i32).to_le_bytes());
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b
    }

    type Images = Vec<(Option<Row>, Option<Row>)>;

    fn collect(body: &[u8], kind: RowsKind) -> Result<Images, RowsError> {
        let t = table();
        let mut out = Vec::new();
        let n = for_each_row(body, false, kind, &t, |b, a| {
            out.push((b, a));
            Ok::<_, ()>(())
        })?
        .expect("emit");
        assert_eq!(n, out.len());
        Ok(out)
    }

    #[test]
    fn write_rows_with_nulls() {
        let rows = collect(&write_event(), RowsKind::Write).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].1,
            Some(vec![
                Some(Value::Int(7)),
                Some(Value::Text("hé".into())),
                Some(Value::Null)
            ])
        );
        assert_eq!(
            rows[1].1,
            Some(vec![
                Some(Value::Int(-1)),
                Some(Value::Null),
                Some(Value::UInt(u64::MAX))
            ])
        );
        assert_eq!(
            header(&write_event()).expect("h"),
            RowsHeader {
                table_id: 1,
                flags: 1
            }
        );
    }

    #[test]
    fn minimal_image_absent_is_not_null() {
        // Update: before has only id (MINIMAL), after has id and name.
        let mut b = vec![1, 0, 0, 0, 0, 0, 1, 0, 3, 0b001, 0b011];
        b.push(0);
        b.extend_from_slice(&7i32.to_le_bytes());
        b.push(0b10); // after: name NULL
        b.extend_from_slice(&7i32.to_le_bytes());
        let rows = collect(&b, RowsKind::Update).expect("rows");
        assert_eq!(rows[0].0, Some(vec![Some(Value::Int(7)), None, None]));
        assert_eq!(
            rows[0].1,
            Some(vec![Some(Value::Int(7)), Some(Value::Null), None])
        );
    }

    #[test]
    fn truncated_events_are_errors() {
        let full = write_event();
        for n in 0..full.len() {
            let r = collect(&full[..n], RowsKind::Write);
            assert!(
                r.is_err() || n < 9 || r.as_ref().map(|v| v.len()).unwrap_or(0) < 2,
                "prefix {n}"
            );
        }
        assert!(collect(&full[..full.len() - 1], RowsKind::Write).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = collect(&body, RowsKind::Write);
            let _ = collect(&body, RowsKind::Update);
        }

        #[test]
        fn mutated_events_never_panic(i in 0usize..40, x in proptest::num::u8::ANY) {
            let mut b = write_event();
            let n = b.len();
            b[i % n] = x;
            let _ = collect(&b, RowsKind::Write);
        }
    }
}
