//! The change event (op, before, after, key, source) and its JSON encoding.
//!
//! The envelope follows Debezium's so that existing consumers read it without glue:
//!
//! ```json
//! {"op":"u","before":{...},"after":{...},"key":{"id":1},"unchanged":["doc"],
//!  "source":{"connector":"postgres","name":"app","db":"shop","schema":"public",
//!            "table":"orders","cursor":"...","lsn":"0/16B3748","txid":731,
//!            "ts_ms":1700000000123,"snapshot":false},
//!  "ts_ms":1700000000456}
//! ```
//!
//! * `before`/`after` hold only the columns the filter keeps, in table order. A column whose
//!   value the source did not send (an unchanged TOAST value in PostgreSQL, a column missing
//!   from a MySQL MINIMAL/NOBLOB image) is *absent* from the object, never `null`; absent
//!   columns of `after` are listed in `unchanged` (the consumer keeps its current value).
//! * `key` holds the primary-key (PostgreSQL: replica identity) columns, taken from `after`,
//!   or from `before` for deletes and for key columns `after` lacks (MySQL MINIMAL row
//!   image); `null` when the table has no key.
//! * `source.cursor` sorts like the replication position; see [`crate::position`].

use crate::position::Position;
use crate::value::{write_int, write_json_str, write_uint, Value};
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A row read by a backfill.
    Read,
    Truncate,
}

impl Op {
    /// The one-letter Debezium code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// Which connector a source is; decides the native position fields in `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    Postgres,
    Mysql,
    Query,
}

impl Connector {
    pub fn as_str(self) -> &'static str {
        match self {
            Connector::Postgres => "postgres",
            Connector::Mysql => "mysql",
            Connector::Query => "query",
        }
    }
}

/// Identity of the configured source that produced an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub connector: Connector,
    /// The source's `name` in the config.
    pub name: String,
}

/// A table as seen by the events of one schema version: the columns the filter keeps and
/// which of them form the key. A schema change produces a new `TableSchema`; events keep the
/// one they were decoded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub source: Arc<SourceInfo>,
    /// Database name.
    pub db: String,
    /// PostgreSQL schema; for MySQL the database name again.
    pub schema: String,
    pub name: String,
    /// Column names after column filtering, in table order.
    pub columns: Vec<String>,
    /// Indices into `columns` of the key columns; empty when the table has no key.
    pub key: Vec<usize>,
    /// The JSON of the parts of an event that depend only on this schema, made on first
    /// use (`Default::default()` when building one).
    pub encoded: EncodedCache,
}

impl TableSchema {
    /// The schema's constant JSON pieces (made once, on the first event).
    fn encoded(&self) -> &Encoded {
        self.encoded.0.get_or_init(|| {
            let mut columns = Vec::with_capacity(self.columns.len());
            for c in &self.columns {
                let mut k = Vec::with_capacity(c.len() + 3);
                // Writes to a Vec cannot fail.
                let _ = write_json_str(&mut k, c);
                k.push(b':');
                columns.push(k.into_boxed_slice());
            }
            let mut source = Vec::with_capacity(128);
            source.extend_from_slice(b",\"source\":{\"connector\":\"");
            source.extend_from_slice(self.source.connector.as_str().as_bytes());
            source.extend_from_slice(b"\",\"name\":");
            let _ = write_json_str(&mut source, &self.source.name);
            source.extend_from_slice(b",\"db\":");
            let _ = write_json_str(&mut source, &self.db);
            source.extend_from_slice(b",\"schema\":");
            let _ = write_json_str(&mut source, &self.schema);
            source.extend_from_slice(b",\"table\":");
            let _ = write_json_str(&mut source, &self.name);
            source.extend_from_slice(b",\"cursor\":");
            Encoded {
                columns,
                source: source.into_boxed_slice(),
            }
        })
    }

    /// `schema.table`, the name filters and routes match on.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// The JSON of a schema's constant parts (see [`TableSchema::encoded`]). Every clone starts
/// empty: a schema made from another with `..clone()` and a new name must not write the old
/// one's pieces. Not part of a schema's equality.
#[derive(Default)]
pub struct EncodedCache(std::sync::OnceLock<Encoded>);

impl Clone for EncodedCache {
    fn clone(&self) -> Self {
        EncodedCache::default()
    }
}

impl PartialEq for EncodedCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EncodedCache {}

impl std::fmt::Debug for EncodedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncodedCache")
    }
}

/// A schema's constant JSON pieces.
pub struct Encoded {
    /// `"column":` per column.
    columns: Vec<Box<[u8]>>,
    /// `,"source":{"connector":…,"name":…,"db":…,"schema":…,"table":…,"cursor":`.
    source: Box<[u8]>,
}

/// One row image: a cell per entry of [`TableSchema::columns`]. `None` means the column is
/// absent from this image (not sent by the source), which is different from SQL NULL.
pub type Row = Vec<Option<Value>>;

/// One row change (or a truncate) with its replication position.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    pub table: Arc<TableSchema>,
    pub before: Option<Row>,
    pub after: Option<Row>,
    pub position: Position,
    /// Transaction id (PostgreSQL xid), when the source has one.
    pub txid: Option<u64>,
    /// Commit time of the transaction in ms since the epoch, when known.
    pub commit_ts_ms: Option<i64>,
}

impl ChangeEvent {
    /// The key columns and values, `None` when the table has no key or no image holds it.
    /// Each key column comes from `after` (the row's key now), or from `before` for
    /// deletes and when `after` lacks it: a MySQL `binlog_row_image=MINIMAL` update sends
    /// the key in `before` only, and only the changed columns in `after`.
    pub fn key(&self) -> Option<Vec<(&str, &Value)>> {
        if self.table.key.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(self.table.key.len());
        for &i in &self.table.key {
            let name = self.table.columns.get(i)?;
            out.push((name.as_str(), self.key_cell(i)?));
        }
        Some(out)
    }

    /// Key column `i`'s value, from the image [`ChangeEvent::key`] takes it from; `None`
    /// when neither image holds it or `i` is not a column.
    fn key_cell(&self, i: usize) -> Option<&Value> {
        self.table.columns.get(i)?;
        if self.op == Op::Delete {
            cell(&self.before, i).or_else(|| cell(&self.after, i))
        } else {
            cell(&self.after, i).or_else(|| cell(&self.before, i))
        }
    }

    /// Names of the `after` columns the source did not send (unchanged values).
    pub fn unchanged(&self) -> Vec<&str> {
        match &self.after {
            Some(a) => a
                .iter()
                .zip(&self.table.columns)
                .filter(|(v, _)| v.is_none())
                .map(|(_, n)| n.as_str())
                .collect(),
            None => Vec::new(),
        }
    }

    /// Appends the event as one line of JSON (with the trailing newline) to `out`.
    pub fn write_json_line(&self, out: &mut Vec<u8>, now_ms: i64) -> io::Result<()> {
        self.write_json(out, now_ms)?;
        out.push(b'\n');
        Ok(())
    }

    /// Writes the event as a JSON object.
    pub fn write_json<W: Write + ?Sized>(&self, out: &mut W, now_ms: i64) -> io::Result<()> {
        let t = &*self.table;
        let enc = t.encoded();
        out.write_all(b"{\"op\":\"")?;
        out.write_all(self.op.code().as_bytes())?;
        out.write_all(b"\",\"before\":")?;
        write_row(out, &enc.columns, self.before.as_ref())?;
        out.write_all(b",\"after\":")?;
        write_row(out, &enc.columns, self.after.as_ref())?;
        out.write_all(b",\"key\":")?;
        // As [`ChangeEvent::key`], without collecting it: `null` unless every key column
        // has a value.
        if !t.key.is_empty() && t.key.iter().all(|&i| self.key_cell(i).is_some()) {
            out.write_all(b"{")?;
            for (n, &i) in t.key.iter().enumerate() {
                if let (Some(name), Some(v)) = (enc.columns.get(i), self.key_cell(i)) {
                    if n > 0 {
                        out.write_all(b",")?;
                    }
                    out.write_all(name)?;
                    v.write_json(out)?;
                }
            }
            out.write_all(b"}")?;
        } else {
            out.write_all(b"null")?;
        }
        if let Some(a) = &self.after {
            if a.iter().any(Option::is_none) {
                out.write_all(b",\"unchanged\":[")?;
                for (i, n) in self.unchanged().iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    write_json_str(out, n)?;
                }
                out.write_all(b"]")?;
            }
        }
        out.write_all(&enc.source)?;
        match &self.position {
            // A query cursor is user data: escape it.
            Position::Query(q) => write_json_str(out, &q.cursor)?,
            p => {
                out.write_all(b"\"")?;
                p.write_cursor(out)?;
                out.write_all(b"\"")?;
            }
        }
        // A backfill row shows the stream position it was read at.
        match self.position.anchor() {
            Position::Postgres(p) => {
                out.write_all(b",\"lsn\":\"")?;
                p.lsn.write_to(out)?;
                out.write_all(b"\"")?;
            }
            Position::Mysql(m) => {
                out.write_all(b",\"file\":")?;
                write_json_str(out, &m.file)?;
                out.write_all(b",\"pos\":")?;
                write_uint(out, m.pos)?;
                out.write_all(b",\"gtid\":")?;
                match &m.gtid {
                    Some(g) => write_json_str(out, g)?,
                    None => out.write_all(b"null")?,
                }
            }
            Position::Query(_) | Position::Row(_) => {}
        }
        match self.txid {
            Some(x) => {
                out.write_all(b",\"txid\":")?;
                write_uint(out, x)?;
            }
            None => out.write_all(b",\"txid\":null")?,
        }
        match self.commit_ts_ms {
            Some(x) => {
                out.write_all(b",\"ts_ms\":")?;
                write_int(out, x)?;
            }
            None => out.write_all(b",\"ts_ms\":null")?,
        }
        out.write_all(if self.op == Op::Read {
            b",\"snapshot\":true}"
        } else {
            b",\"snapshot\":false}"
        })?;
        out.write_all(b",\"ts_ms\":")?;
        write_int(out, now_ms)?;
        out.write_all(b"}")
    }

    /// The event as a `serde_json::Value` (for mapping sinks; not the hot path).
    pub fn to_json(&self, now_ms: i64) -> serde_json::Value {
        let mut buf = Vec::with_capacity(256);
        if self.write_json(&mut buf, now_ms).is_err() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null)
    }
}

/// `columns`: each column's `"name":`.
fn write_row<W: Write + ?Sized>(
    out: &mut W,
    columns: &[Box<[u8]>],
    row: Option<&Row>,
) -> io::Result<()> {
    let Some(row) = row else {
        return out.write_all(b"null");
    };
    out.write_all(b"{")?;
    let mut first = true;
    for (name, cell) in columns.iter().zip(row) {
        let Some(v) = cell else { continue };
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        out.write_all(name)?;
        v.write_json(out)?;
    }
    out.write_all(b"}")
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Cell `i` of an image, when the image holds it.
fn cell(img: &Option<Row>, i: usize) -> Option<&Value> {
    img.as_ref()?.get(i)?.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{Lsn, PgPosition};

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            source: Arc::new(SourceInfo {
                connector: Connector::Postgres,
                name: "app".into(),
            }),
            db: "shop".into(),
            schema: "public".into(),
            name: "users".into(),
            columns: vec!["id".into(), "name".into(), "doc".into()],
            key: vec![0],
            encoded: Default::default(),
        })
    }

    fn ev(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            op,
            table: table(),
            before,
            after,
            position: Position::Postgres(PgPosition {
                lsn: Lsn(0x16B3748),
                ordinal: 1,
            }),
            txid: Some(731),
            commit_ts_ms: Some(1_700_000_000_123),
        }
    }

    /// The schema's JSON pieces are made once; a schema made from another by `..clone()`
    /// (a new name, other columns) writes its own, not the pieces the original made.
    #[test]
    fn a_schema_made_from_another_writes_its_own_names() {
        let e = ev(
            Op::Create,
            None,
            Some(vec![Some(Value::Int(1)), None, None]),
        );
        let first = e.to_json(0);
        assert_eq!(first["source"]["table"], "users");
        assert_eq!(first["after"]["id"], 1);
        let mut renamed = e.clone();
        renamed.table = Arc::new(TableSchema {
            name: "accounts\"\n".into(),
            columns: vec!["account id".into(), "name".into(), "doc".into()],
            ..(*e.table).clone()
        });
        let j = renamed.to_json(0);
        assert_eq!(j["source"]["table"], "accounts\"\n");
        assert_eq!(j["after"]["account id"], 1);
        assert!(j["after"].get("id").is_none(), "{j}");
        // The original still writes its own.
        assert_eq!(e.to_json(0)["source"]["table"], "users");
    }

    #[test]
    fn insert_envelope() {
        let e = ev(
            Op::Create,
            None,
            Some(vec![
                Some(Value::Int(1)),
                Some(Value::Text("ann".into())),
                Some(Value::Null),
            ]),
        );
        let j = e.to_json(5);
        assert_eq!(j["op"], "c");
        assert_eq!(j["before"], serde_json::Value::Null);
        assert_eq!(j["after"]["name"], "ann");
        assert_eq!(j["after"]["doc"], serde_json::Value::Null);
        assert_eq!(j["key"], serde_json::json!({"id": 1}));
        assert_eq!(j["source"]["lsn"], "0/16B3748");
        assert_eq!(j["source"]["cursor"], "00000000016B3748:0000000000000001");
        assert_eq!(j["source"]["txid"], 731);
        assert_eq!(j["source"]["snapshot"], false);
        assert_eq!(j["ts_ms"], 5);
        assert!(j.get("unchanged").is_none());
    }

    #[test]
    fn unchanged_columns_are_absent_not_null() {
        let e = ev(
            Op::Update,
            None,
            Some(vec![
                Some(Value::Int(1)),
                Some(Value::Text("b".into())),
                None,
            ]),
        );
        let j = e.to_json(5);
        assert!(j["after"].get("doc").is_none());
        assert_eq!(j["unchanged"], serde_json::json!(["doc"]));
    }

    #[test]
    fn delete_key_from_before() {
        let e = ev(
            Op::Delete,
            Some(vec![Some(Value::Int(9)), None, None]),
            None,
        );
        let j = e.to_json(5);
        assert_eq!(j["key"], serde_json::json!({"id": 9}));
        assert_eq!(j["before"], serde_json::json!({"id": 9}));
        assert_eq!(j["after"], serde_json::Value::Null);
    }

    #[test]
    fn minimal_update_key_from_before() {
        // binlog_row_image=MINIMAL: before holds the key, after only the changed column.
        let e = ev(
            Op::Update,
            Some(vec![Some(Value::Int(4)), None, None]),
            Some(vec![None, Some(Value::Text("new".into())), None]),
        );
        assert_eq!(e.to_json(5)["key"], serde_json::json!({"id": 4}));
        // A changed key: the new value wins.
        let e = ev(
            Op::Update,
            Some(vec![Some(Value::Int(4)), None, None]),
            Some(vec![Some(Value::Int(5)), None, None]),
        );
        assert_eq!(e.to_json(5)["key"], serde_json::json!({"id": 5}));
        // No image has it: null.
        let e = ev(Op::Update, None, Some(vec![None, None, None]));
        assert_eq!(e.to_json(5)["key"], serde_json::Value::Null);
    }

    /// A two-column key is written in key order, each column from the image that has it,
    /// and is `null` (never half a key) when one of them is in no image.
    #[test]
    fn a_composite_key_is_whole_or_null() {
        let mut e = ev(
            Op::Update,
            Some(vec![Some(Value::Int(4)), None, Some(Value::Int(8))]),
            Some(vec![
                None,
                Some(Value::Text("new".into())),
                Some(Value::Int(9)),
            ]),
        );
        e.table = Arc::new(TableSchema {
            key: vec![2, 0],
            ..(*e.table).clone()
        });
        let line = String::from_utf8({
            let mut b = Vec::new();
            e.write_json_line(&mut b, 5).expect("write");
            b
        })
        .expect("utf8");
        assert!(line.contains(r#""key":{"doc":9,"id":4}"#), "{line}");
        assert_eq!(
            e.key()
                .map(|k| k.iter().map(|(n, _)| *n).collect::<Vec<_>>()),
            Some(vec!["doc", "id"])
        );
        e.before = None;
        assert_eq!(e.to_json(5)["key"], serde_json::Value::Null);
        assert!(e.key().is_none());
    }
}
