//! Rows events (WRITE/UPDATE/DELETE, v1 as MariaDB writes them and v2 as MySQL 5.6+ does)
//! decoded with our own value decoder.
//!
//! Body layout: table id (6 bytes), flags (2), v2 only: extra-data length (2, counting
//! itself) and the extra data; column count (length-encoded), the columns-present bitmap,
//! for updates a second one for the after image; then row images until the end: a NULL
//! bitmap over the present columns, then the present non-NULL values. A column missing
//! from the present bitmap (MINIMAL/NOBLOB images) becomes an absent cell (`None`), which
//! is different from SQL NULL (`Some(Value::Null)`).
//!
//! PARTIAL_UPDATE_ROWS_EVENT (MySQL `binlog_row_value_options=PARTIAL_JSON`) is an update
//! whose after images each start with a shared image (MySQL `sql/rpl_record.cc`,
//! `unpack_row`): `value_options` (packed integer, 0 or 1 = PARTIAL_JSON_UPDATES) and, when
//! it is 1, one bit per JSON column of the table map (whether or not the column is in
//! either image). A JSON column whose bit is set carries a diff vector
//! ([`super::json_diff`]) instead of its document; it is applied to the column's document
//! in the before image. Without one (MINIMAL/NOBLOB before images) the new document is not
//! known: the cell stays absent and the column is reported in [`RowsNotes::unbuilt_json`].

use super::json_diff;
use super::jsonb;
use super::sql::lenenc;
use super::table::TableInfo;
use super::types::{decode_binlog, field_len, DecodeError, Kind};
use crate::event::Row;
use crate::value::Value;

/// Which rows event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsKind {
    Write,
    Update,
    /// PARTIAL_UPDATE_ROWS_EVENT: an update whose after images may hold JSON diffs.
    PartialUpdate,
    Delete,
}

/// What a rows event left undone, for the reader to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowsNotes {
    /// Table-map indices of JSON columns sent as a diff without a document in the before
    /// image to apply it to: absent from `after`.
    pub unbuilt_json: Vec<usize>,
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
/// of rows; what could not be rebuilt is added to `notes`.
pub fn for_each_row<E>(
    body: &[u8],
    v2: bool,
    kind: RowsKind,
    table: &TableInfo,
    notes: &mut RowsNotes,
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
    let update = matches!(kind, RowsKind::Update | RowsKind::PartialUpdate);
    let present_after = if update {
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
    let partial = kind == RowsKind::PartialUpdate;
    // The position of each JSON column among the table's JSON columns (its partial bit).
    let json_bits: Vec<Option<usize>> = if partial {
        let mut n = 0;
        table
            .kinds
            .iter()
            .map(|k| {
                matches!(k, Kind::JsonBinary { .. }).then(|| {
                    n += 1;
                    n - 1
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let json_count = json_bits.iter().flatten().count();
    let mut rows = 0;
    let mut bases = Vec::new();
    while pos < body.len() {
        let row_start = pos;
        bases.clear();
        let first = image(
            body,
            &mut pos,
            (ncols, n_before),
            present,
            table,
            want.is_some(),
            if partial {
                Extra::Bases(&mut bases)
            } else {
                Extra::None
            },
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
                    Extra::None,
                )?;
                (first, second)
            }
            RowsKind::PartialUpdate => {
                let partial_bits = shared_image(body, &mut pos, json_count)?;
                let second = image(
                    body,
                    &mut pos,
                    (ncols, n_after),
                    present_after,
                    table,
                    want.is_some(),
                    Extra::Partial(Partial {
                        bits: partial_bits,
                        json_bits: &json_bits,
                        bases: &bases,
                        notes: &mut *notes,
                    }),
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

/// A JSON column's value in a before image, the document a diff applies to.
#[derive(Debug, Clone, Copy)]
enum Base<'a> {
    Null,
    /// The binary JSON document (after its length prefix).
    Doc(&'a [u8]),
}

/// The partial-update state of one after image.
struct Partial<'p, 'a> {
    /// The shared image's partial bits (`None`: value_options 0, every value full).
    bits: Option<&'a [u8]>,
    json_bits: &'p [Option<usize>],
    bases: &'p [(usize, Base<'a>)],
    notes: &'p mut RowsNotes,
}

/// The shared image before a partial update's after image: `value_options`, then the
/// partial bits (one per JSON column of the table) when it is PARTIAL_JSON_UPDATES.
fn shared_image<'a>(
    body: &'a [u8],
    pos: &mut usize,
    json_count: usize,
) -> Result<Option<&'a [u8]>, RowsError> {
    match lenenc(body, pos) {
        None => malformed("truncated value_options of a partial update"),
        Some(0) => Ok(None),
        Some(1) => {
            let n = json_count.div_ceil(8);
            let Some(bits) = body.get(*pos..*pos + n) else {
                return malformed("truncated partial-JSON bitmap");
            };
            *pos += n;
            Ok(Some(bits))
        }
        Some(x) => malformed(format!(
            "value_options {x} of a partial update (only 0 and 1 = PARTIAL_JSON_UPDATES exist)"
        )),
    }
}

/// What an image does beyond decoding its values.
enum Extra<'p, 'a> {
    None,
    /// A partial update's before image: keep the selected JSON columns' values.
    Bases(&'p mut Vec<(usize, Base<'a>)>),
    /// A partial update's after image.
    Partial(Partial<'p, 'a>),
}

/// One row image; `Some(row)` only when `decode`.
fn image<'a>(
    body: &'a [u8],
    pos: &mut usize,
    (ncols, npresent): (usize, usize),
    present: &[u8],
    table: &TableInfo,
    decode: bool,
    mut extra: Extra<'_, 'a>,
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
        let kind = &table.kinds[i];
        let keep = slot.is_some() && matches!(kind, Kind::JsonBinary { .. });
        if is_null {
            if let (Some(r), Some(s)) = (row.as_mut(), slot) {
                r[s] = Some(Value::Null);
            }
            if let Extra::Bases(b) = &mut extra {
                if keep {
                    b.push((i, Base::Null));
                }
            }
            continue;
        }
        let rest = body.get(*pos..).unwrap_or(&[]);
        if let Extra::Partial(p) = &mut extra {
            let diff_bit = p.json_bits.get(i).copied().flatten();
            if diff_bit.is_some_and(|b| p.bits.is_some_and(|bits| bit(bits, b))) {
                let err = |source: json_diff::DiffError| RowsError::Value {
                    column: i,
                    source: DecodeError::PartialJson(source),
                };
                let (diffs, n) = json_diff::read_vector(rest).map_err(err)?;
                if let (Some(r), Some(s)) = (row.as_mut(), slot) {
                    match p.bases.iter().find(|(c, _)| *c == i).map(|(_, b)| *b) {
                        Some(Base::Doc(raw)) => {
                            let mut doc = jsonb::to_doc(raw).map_err(|e| RowsError::Value {
                                column: i,
                                source: DecodeError::Invalid(format!(
                                    "binary JSON of the before image: {e}"
                                )),
                            })?;
                            json_diff::apply(&mut doc, &diffs).map_err(err)?;
                            r[s] = Some(Value::Json(doc.to_text()));
                        }
                        Some(Base::Null) => {
                            return Err(RowsError::Value {
                                column: i,
                                source: DecodeError::Invalid(
                                    "a partial JSON update of a column that was NULL".into(),
                                ),
                            })
                        }
                        None => {
                            if !p.notes.unbuilt_json.contains(&i) {
                                p.notes.unbuilt_json.push(i);
                            }
                        }
                    }
                }
                *pos += n;
                continue;
            }
        }
        let n = field_len(kind, rest).map_err(|source| RowsError::Value { column: i, source })?;
        if let (Some(r), Some(s)) = (row.as_mut(), slot) {
            let v = decode_binlog(kind, &rest[..n])
                .map_err(|source| RowsError::Value { column: i, source })?;
            r[s] = Some(v);
        }
        if let (Extra::Bases(b), Kind::JsonBinary { pack_len }, true) = (&mut extra, kind, keep) {
            b.push((
                i,
                Base::Doc(rest.get(usize::from(*pack_len)..n).unwrap_or(&[])),
            ));
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
                    encoded: Default::default(),
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
        let n = for_each_row(body, false, kind, &t, &mut RowsNotes::default(), |b, a| {
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

    /// `mysql.t(id INT, json_col JSON, name VARCHAR(100), age INT)` of `json.binlog.000001`
    /// (MySQL 8.0.22); `json_selected: false` drops json_col from the projection.
    fn json_table(json_selected: bool) -> TableInfo {
        let names: Vec<String> = vec!["id".into(), "json_col".into(), "name".into(), "age".into()];
        let int = Kind::Int {
            bytes: 4,
            unsigned: false,
        };
        let slot = if json_selected {
            vec![Some(0), Some(1), Some(2), Some(3)]
        } else {
            vec![Some(0), None, Some(1), Some(2)]
        };
        let columns: Vec<String> = names
            .iter()
            .zip(&slot)
            .filter(|(_, s)| s.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        TableInfo {
            db: "mysql".into(),
            name: "t".into(),
            opaque: false,
            selected: Some(Selected {
                schema: Arc::new(TableSchema {
                    source: Arc::new(SourceInfo {
                        connector: Connector::Mysql,
                        name: "s".into(),
                    }),
                    db: "mysql".into(),
                    schema: "mysql".into(),
                    name: "t".into(),
                    columns,
                    key: vec![0],
                    encoded: Default::default(),
                }),
                slot,
            }),
            kinds: vec![
                int.clone(),
                Kind::JsonBinary { pack_len: 4 },
                Kind::Varchar {
                    max_len: 400,
                    charset: Charset::Utf8,
                },
                int,
            ],
            names,
        }
    }

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// The body of `json.binlog.000001`'s PARTIAL_UPDATE_ROWS_EVENT (offset 3750, between
    /// its header and checksum): six rows, MINIMAL before images (id only), after images
    /// of json_col (a diff: REPLACE `$.age`), name and age.
    const FIXTURE_PARTIAL: &str = "7700000000000100020004010e00010000000101000b0000000005242e61676503051a0003004a6f651a00000000020000000101000b0000000005242e6167650305220003005375652200000000030000000101000b0000000005242e61676503052a000400506574652a00000000040000000101000b0000000005242e61676503051a0003004a6f651a00000000050000000101000b0000000005242e6167650305220003005375652200000000060000000101000b0000000005242e61676503052a000400506574652a000000";
    /// Row 1 of the same file's full UPDATE_ROWS event (offset 2612), after image: id 1,
    /// json_col `{"age": 25, "data": "xxxxxxxxxx", "name": "Joe"}`, name, age.
    const FIXTURE_FULL_ROW1: &str = "0001000000340000000003003300190003001c000400200004000519000c24000c2f00616765646174616e616d650a78787878787878787878034a6f6503004a6f6519000000";

    type NotedImages = (Images, RowsNotes);

    fn collect_partial(body: &[u8], t: &TableInfo) -> Result<NotedImages, RowsError> {
        let mut out = Vec::new();
        let mut notes = RowsNotes::default();
        for_each_row(
            body,
            true,
            RowsKind::PartialUpdate,
            t,
            &mut notes,
            |b, a| {
                out.push((b, a));
                Ok::<_, ()>(())
            },
        )?
        .expect("emit");
        Ok((out, notes))
    }

    /// A partial update of row 1 whose before image is the full row of the file's full
    /// update and whose after image is the file's own (the diff against that document).
    fn spliced(after_image: &[u8]) -> Vec<u8> {
        let mut b = unhex("77000000000001000200040f0e");
        b.extend_from_slice(&unhex(FIXTURE_FULL_ROW1));
        b.extend_from_slice(after_image);
        b
    }

    /// The after image of row 1 of [`FIXTURE_PARTIAL`] (after its 13-byte header and the
    /// 5-byte before image).
    fn fixture_after_row1() -> Vec<u8> {
        unhex(FIXTURE_PARTIAL)[18..18 + 27].to_vec()
    }

    #[test]
    fn partial_update_without_a_document_leaves_the_column_absent() {
        let (rows, notes) =
            collect_partial(&unhex(FIXTURE_PARTIAL), &json_table(true)).expect("rows");
        assert_eq!(notes.unbuilt_json, vec![1]);
        let people = [("Joe", 26), ("Sue", 34), ("Pete", 42)];
        assert_eq!(rows.len(), 6);
        for (i, (before, after)) in rows.iter().enumerate() {
            let (name, age) = people[i % 3];
            assert_eq!(
                before.as_deref(),
                Some(&[Some(Value::Int(i as i64 + 1)), None, None, None][..])
            );
            assert_eq!(
                after.as_deref(),
                Some(
                    &[
                        None,
                        None,
                        Some(Value::Text(name.into())),
                        Some(Value::Int(age))
                    ][..]
                ),
                "row {i}"
            );
        }
        // The JSON column not captured: nothing to rebuild, nothing to report.
        let (rows, notes) =
            collect_partial(&unhex(FIXTURE_PARTIAL), &json_table(false)).expect("rows");
        assert!(notes.unbuilt_json.is_empty());
        assert_eq!(rows[2].1.as_ref().map(|r| r.len()), Some(3));
    }

    #[test]
    fn partial_update_applies_the_diff_to_the_before_document() {
        let (rows, notes) =
            collect_partial(&spliced(&fixture_after_row1()), &json_table(true)).expect("rows");
        assert!(notes.unbuilt_json.is_empty());
        assert_eq!(rows.len(), 1);
        let after = rows[0].1.as_ref().expect("after");
        assert_eq!(
            after[1],
            Some(Value::Json(
                r#"{"age": 26, "data": "xxxxxxxxxx", "name": "Joe"}"#.into()
            ))
        );
        assert_eq!(after[3], Some(Value::Int(26)));
        assert_eq!(after[0], None, "id is not in the after image");
    }

    #[test]
    fn partial_update_with_full_values_and_bad_shared_images() {
        // value_options 0: no partial bits, every value whole (json_col NULL here).
        let mut a = vec![0x00, 0b001];
        a.extend_from_slice(&unhex("03004a6f651a000000"));
        let (rows, notes) = collect_partial(&spliced(&a), &json_table(true)).expect("rows");
        assert!(notes.unbuilt_json.is_empty());
        assert_eq!(rows[0].1.as_ref().expect("after")[1], Some(Value::Null));
        // value_options 2 is not defined.
        let mut bad = fixture_after_row1();
        bad[0] = 2;
        assert!(matches!(
            collect_partial(&spliced(&bad), &json_table(true)),
            Err(RowsError::Malformed(_))
        ));
    }

    #[test]
    fn a_diff_that_does_not_apply_is_an_error_naming_the_column() {
        // `$.age` → `$.agx`: REPLACE of a member the document does not have.
        let mut a = fixture_after_row1();
        a[13] = b'x';
        match collect_partial(&spliced(&a), &json_table(true)) {
            Err(RowsError::Value {
                column: 1,
                source: DecodeError::PartialJson(json_diff::DiffError::NotApplicable { .. }),
            }) => {}
            other => panic!("{other:?}"),
        }
        // A diff on a NULL document.
        let mut b = unhex("77000000000001000200040f0e");
        b.extend_from_slice(&[0b0010]);
        b.extend_from_slice(&1i32.to_le_bytes());
        b.extend_from_slice(&unhex("03004a6f6519000000"));
        b.extend_from_slice(&fixture_after_row1());
        assert!(matches!(
            collect_partial(&b, &json_table(true)),
            Err(RowsError::Value { column: 1, .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = collect(&body, RowsKind::Write);
            let _ = collect(&body, RowsKind::Update);
            let _ = collect(&body, RowsKind::PartialUpdate);
            let _ = collect_partial(&body, &json_table(true));
        }

        #[test]
        fn mutated_partial_events_never_panic(i in 0usize..200, x in proptest::num::u8::ANY) {
            for mut b in [unhex(FIXTURE_PARTIAL), spliced(&fixture_after_row1())] {
                let n = b.len();
                b[i % n] = x;
                let _ = collect_partial(&b, &json_table(true));
            }
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
