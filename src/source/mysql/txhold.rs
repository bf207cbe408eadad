//! The transaction hold: the change events of binlog groups that are not yet decided.
//!
//! A group's rows may still be undone after they were read: a `ROLLBACK TO` savepoint
//! (logged inside the group when a non-transactional table was written in the transaction),
//! a `ROLLBACK` at its end, or — for an XA transaction — an `XA ROLLBACK` in a later group
//! after `XA PREPARE`. The reader keeps such rows in a [`Hold`] until the decision and
//! delivers or drops them then. A hold keeps up to [`SPILL_AT`] bytes in memory; beyond
//! that its events move to an unlinked file in `$TMPDIR` (gone with the process, however it
//! ends), like the PostgreSQL source's streamed transactions.
//!
//! Owns: the in-memory/on-disk buffer and its event encoding. Not here: when to hold or
//! deliver (the reader decides), positions (the events carry theirs).

use crate::event::{ChangeEvent, Op, Row, TableSchema};
use crate::position::Position;
use crate::value::Value;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of events a hold keeps in memory before it moves them to disk.
pub const SPILL_AT: usize = 8 << 20;

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// Held change events of one undecided group, in order.
pub struct Hold {
    mem: Vec<ChangeEvent>,
    mem_bytes: usize,
    spill_at: usize,
    spill: Option<Spill>,
}

/// The events that left memory: one unlinked file, the end offset of each event in it and
/// the tables they refer to (schemas stay in memory; events name them by index).
struct Spill {
    file: File,
    path: PathBuf,
    ends: Vec<u64>,
    tables: Vec<Arc<TableSchema>>,
}

/// A spill file could not be written or read back.
#[derive(Debug, thiserror::Error)]
#[error("cannot hold a large undecided transaction in {path}: {source} (free space there, or point TMPDIR at a larger disk)")]
pub struct SpillError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

impl Default for Hold {
    fn default() -> Self {
        Hold::with_limit(SPILL_AT)
    }
}

impl Hold {
    /// A hold that spills past `spill_at` bytes (tests use a small limit).
    pub fn with_limit(spill_at: usize) -> Self {
        Hold {
            mem: Vec::new(),
            mem_bytes: 0,
            spill_at,
            spill: None,
        }
    }

    pub fn len(&self) -> usize {
        self.spilled() + self.mem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some events are on disk.
    pub fn on_disk(&self) -> bool {
        self.spilled() > 0
    }

    fn spilled(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.ends.len())
    }

    fn err(&self, source: io::Error) -> SpillError {
        SpillError {
            path: self
                .spill
                .as_ref()
                .map(|s| s.path.display().to_string())
                .unwrap_or_else(|| std::env::temp_dir().display().to_string()),
            source,
        }
    }

    pub fn push(&mut self, ev: ChangeEvent) -> Result<(), SpillError> {
        self.mem_bytes += approx_size(&ev);
        self.mem.push(ev);
        if self.mem_bytes > self.spill_at {
            self.spill_mem().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn spill_mem(&mut self) -> io::Result<()> {
        if self.spill.is_none() {
            let path = std::env::temp_dir().join(format!(
                "logtide-hold-{}-{}",
                std::process::id(),
                NEXT_FILE.fetch_add(1, Ordering::Relaxed)
            ));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            // Unlinked at once: the data lives as long as the handle, never after a crash.
            std::fs::remove_file(&path)?;
            self.spill = Some(Spill {
                file,
                path,
                ends: Vec::new(),
                tables: Vec::new(),
            });
        }
        let Some(s) = self.spill.as_mut() else {
            return Ok(());
        };
        let mut end = s.ends.last().copied().unwrap_or(0);
        s.file.seek(SeekFrom::Start(end))?;
        let mut w = BufWriter::new(&s.file);
        let mut buf = Vec::new();
        for ev in self.mem.drain(..) {
            buf.clear();
            let t = match s.tables.iter().rposition(|t| Arc::ptr_eq(t, &ev.table)) {
                Some(i) => i,
                None => {
                    s.tables.push(ev.table.clone());
                    s.tables.len() - 1
                }
            };
            encode(&ev, t as u32, &mut buf)?;
            w.write_all(&buf)?;
            end += buf.len() as u64;
            s.ends.push(end);
        }
        w.flush()?;
        self.mem_bytes = 0;
        Ok(())
    }

    /// Drops every event after the first `n` (a `ROLLBACK TO` the savepoint set at `n`).
    pub fn truncate(&mut self, n: usize) -> Result<(), SpillError> {
        let spilled = self.spilled();
        if n >= spilled {
            self.mem.truncate(n - spilled);
            self.mem_bytes = self.mem.iter().map(approx_size).sum();
            return Ok(());
        }
        self.mem.clear();
        self.mem_bytes = 0;
        if let Some(s) = self.spill.as_mut() {
            s.ends.truncate(n);
            let end = s.ends.last().copied().unwrap_or(0);
            if let Err(e) = s.file.set_len(end) {
                return Err(self.err(e));
            }
        }
        Ok(())
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.mem.clear();
        self.mem_bytes = 0;
        // Dropping the handle frees the unlinked file's space.
        self.spill = None;
    }

    /// Hands every event to `f` in order and leaves the hold empty; stops at `f`'s first
    /// error (the rest is dropped). Spilled events are read back in batches, so memory
    /// stays bounded.
    pub fn drain<E>(
        &mut self,
        mut f: impl FnMut(ChangeEvent) -> Result<(), E>,
    ) -> Result<Result<(), E>, SpillError> {
        if let Some(s) = self.spill.take() {
            let mut done = 0;
            while done < s.ends.len() {
                let batch = match s.read_batch(done, 1024) {
                    Ok(b) => b,
                    Err(source) => {
                        self.clear();
                        return Err(SpillError {
                            path: s.path.display().to_string(),
                            source,
                        });
                    }
                };
                done += batch.len();
                for ev in batch {
                    if let Err(e) = f(ev) {
                        self.clear();
                        return Ok(Err(e));
                    }
                }
            }
        }
        self.mem_bytes = 0;
        for ev in std::mem::take(&mut self.mem) {
            if let Err(e) = f(ev) {
                self.clear();
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}

impl Spill {
    /// Up to `max` events from the `from`-th on.
    fn read_batch(&self, from: usize, max: usize) -> io::Result<Vec<ChangeEvent>> {
        let mut at = if from == 0 { 0 } else { self.ends[from - 1] };
        let mut file = &self.file;
        file.seek(SeekFrom::Start(at))?;
        let mut r = BufReader::new(file);
        let mut out = Vec::new();
        for &end in self.ends.iter().skip(from).take(max.max(1)) {
            let len = usize::try_from(end - at).map_err(|_| bad("length"))?;
            let mut buf = vec![0u8; len];
            r.read_exact(&mut buf)?;
            at = end;
            out.push(decode(&buf, &self.tables)?);
        }
        Ok(out)
    }
}

/// Roughly the heap bytes of an event, to decide when to spill.
fn approx_size(ev: &ChangeEvent) -> usize {
    fn value(v: &Value) -> usize {
        24 + match v {
            Value::Decimal(s)
            | Value::Text(s)
            | Value::Json(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::TimestampTz(s)
            | Value::Interval(s)
            | Value::Uuid(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Array(a) => a.iter().map(value).sum(),
            Value::Set(s) => s.iter().map(|x| 24 + x.len()).sum(),
            _ => 0,
        }
    }
    let row = |r: &Option<Row>| {
        r.as_ref().map_or(0, |r| {
            r.iter().map(|c| 8 + c.as_ref().map_or(0, value)).sum()
        })
    };
    128 + row(&ev.before) + row(&ev.after)
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    let text = |out: &mut Vec<u8>, tag: u8, s: &str| {
        out.push(tag);
        put_bytes(out, s.as_bytes());
    };
    match v {
        Value::Null => out.push(0),
        Value::Bool(b) => {
            out.push(1);
            out.push(u8::from(*b));
        }
        Value::Int(i) => {
            out.push(2);
            put_u64(out, *i as u64);
        }
        Value::UInt(u) => {
            out.push(3);
            put_u64(out, *u);
        }
        Value::Float(f) => {
            out.push(4);
            put_u64(out, f.to_bits());
        }
        Value::Decimal(s) => text(out, 5, s),
        Value::Text(s) => text(out, 6, s),
        Value::Bytes(b) => {
            out.push(7);
            put_bytes(out, b);
        }
        Value::Json(s) => text(out, 8, s),
        Value::Date(s) => text(out, 9, s),
        Value::Time(s) => text(out, 10, s),
        Value::Timestamp(s) => text(out, 11, s),
        Value::TimestampTz(s) => text(out, 12, s),
        Value::Interval(s) => text(out, 13, s),
        Value::Uuid(s) => text(out, 14, s),
        Value::Array(a) => {
            out.push(15);
            put_u64(out, a.len() as u64);
            for x in a {
                put_value(out, x);
            }
        }
        Value::Set(s) => {
            out.push(16);
            put_u64(out, s.len() as u64);
            for x in s {
                put_bytes(out, x.as_bytes());
            }
        }
    }
}

fn put_row(out: &mut Vec<u8>, r: &Option<Row>) {
    match r {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            put_u64(out, r.len() as u64);
            for c in r {
                match c {
                    None => out.push(0),
                    Some(v) => {
                        out.push(1);
                        put_value(out, v);
                    }
                }
            }
        }
    }
}

fn encode(ev: &ChangeEvent, table: u32, out: &mut Vec<u8>) -> io::Result<()> {
    out.push(match ev.op {
        Op::Create => 0,
        Op::Update => 1,
        Op::Delete => 2,
        Op::Read => 3,
        Op::Truncate => 4,
    });
    out.extend_from_slice(&table.to_le_bytes());
    put_row(out, &ev.before);
    put_row(out, &ev.after);
    let pos = serde_json::to_vec(&ev.position).map_err(io::Error::other)?;
    put_bytes(out, &pos);
    match ev.txid {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_u64(out, t);
        }
    }
    match ev.commit_ts_ms {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_u64(out, t as u64);
        }
    }
    Ok(())
}

/// Reads what [`encode`] wrote; every read is checked (the file is ours, but a short read
/// must not panic).
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("spill file: {what}"))
}

impl Cur<'_> {
    fn u8(&mut self) -> io::Result<u8> {
        let v = *self.b.get(self.i).ok_or_else(|| bad("truncated"))?;
        self.i += 1;
        Ok(v)
    }
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        let end = self.i.checked_add(n).ok_or_else(|| bad("length"))?;
        let v = self.b.get(self.i..end).ok_or_else(|| bad("truncated"))?;
        self.i = end;
        Ok(v)
    }
    fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self) -> io::Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| bad("length"))
    }
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.len()?;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| bad("utf8"))
    }
    fn value(&mut self) -> io::Result<Value> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(self.u8()? != 0),
            2 => Value::Int(self.u64()? as i64),
            3 => Value::UInt(self.u64()?),
            4 => Value::Float(f64::from_bits(self.u64()?)),
            5 => Value::Decimal(self.string()?),
            6 => Value::Text(self.string()?),
            7 => Value::Bytes(self.bytes()?),
            8 => Value::Json(self.string()?),
            9 => Value::Date(self.string()?),
            10 => Value::Time(self.string()?),
            11 => Value::Timestamp(self.string()?),
            12 => Value::TimestampTz(self.string()?),
            13 => Value::Interval(self.string()?),
            14 => Value::Uuid(self.string()?),
            15 => {
                let n = self.len()?;
                let mut a = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    a.push(self.value()?);
                }
                Value::Array(a)
            }
            16 => {
                let n = self.len()?;
                let mut a = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    a.push(self.string()?);
                }
                Value::Set(a)
            }
            _ => return Err(bad("value tag")),
        })
    }
    fn row(&mut self) -> io::Result<Option<Row>> {
        if self.u8()? == 0 {
            return Ok(None);
        }
        let n = self.len()?;
        let mut r = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            r.push(match self.u8()? {
                0 => None,
                _ => Some(self.value()?),
            });
        }
        Ok(Some(r))
    }
    fn opt_u64(&mut self) -> io::Result<Option<u64>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.u64()?),
        })
    }
}

fn decode(b: &[u8], tables: &[Arc<TableSchema>]) -> io::Result<ChangeEvent> {
    let mut c = Cur { b, i: 0 };
    let op = match c.u8()? {
        0 => Op::Create,
        1 => Op::Update,
        2 => Op::Delete,
        3 => Op::Read,
        4 => Op::Truncate,
        _ => return Err(bad("op")),
    };
    let t = c.take(4)?;
    let t = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize;
    let table = tables.get(t).cloned().ok_or_else(|| bad("table index"))?;
    let before = c.row()?;
    let after = c.row()?;
    let position: Position = serde_json::from_slice(&c.bytes()?).map_err(|_| bad("position"))?;
    let txid = c.opt_u64()?;
    let commit_ts_ms = c.opt_u64()?.map(|t| t as i64);
    Ok(ChangeEvent {
        op,
        table,
        before,
        after,
        position,
        txid,
        commit_ts_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Connector, SourceInfo};
    use crate::position::MysqlPosition;

    fn table(name: &str) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            source: Arc::new(SourceInfo {
                connector: Connector::Mysql,
                name: "m".into(),
            }),
            db: "d".into(),
            schema: "d".into(),
            name: name.into(),
            columns: vec!["id".into(), "v".into()],
            key: vec![0],
            encoded: Default::default(),
        })
    }

    fn ev(t: &Arc<TableSchema>, i: u64, v: Value) -> ChangeEvent {
        ChangeEvent {
            op: Op::Update,
            table: t.clone(),
            before: Some(vec![Some(Value::UInt(i)), None]),
            after: Some(vec![Some(Value::UInt(i)), Some(v)]),
            position: Position::Mysql(MysqlPosition {
                file: "b.000001".into(),
                pos: 4,
                ordinal: i,
                gtid: Some("0-1-7".into()),
            }),
            txid: None,
            commit_ts_ms: Some(-5),
        }
    }

    fn values() -> Vec<Value> {
        vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(1.5),
            Value::Decimal("1.20".into()),
            Value::Text("x\u{e9}".into()),
            Value::Bytes(vec![0, 255]),
            Value::Json("{\"a\":null}".into()),
            Value::Date("2024-01-01".into()),
            Value::Time("-838:59:59".into()),
            Value::Timestamp("2024-01-01T00:00:00".into()),
            Value::TimestampTz("2024-01-01T00:00:00Z".into()),
            Value::Interval("P1D".into()),
            Value::Uuid("123e4567-e89b-12d3-a456-426614174000".into()),
            Value::Array(vec![Value::Int(1), Value::Null]),
            Value::Set(vec!["a".into(), "b".into()]),
        ]
    }

    fn drained(h: &mut Hold) -> Vec<ChangeEvent> {
        let mut out = Vec::new();
        h.drain(|e| {
            out.push(e);
            Ok::<(), ()>(())
        })
        .expect("read")
        .expect("deliver");
        out
    }

    #[test]
    fn spilled_events_come_back_identical_and_in_order() {
        let (a, b) = (table("a"), table("b"));
        let mut h = Hold::with_limit(300);
        let mut want = Vec::new();
        for (i, v) in values().into_iter().cycle().take(3000).enumerate() {
            let t = if i % 3 == 0 { &a } else { &b };
            let e = ev(t, i as u64, v);
            want.push(e.clone());
            h.push(e).expect("push");
        }
        assert!(h.on_disk());
        assert_eq!(h.len(), 3000);
        let got = drained(&mut h);
        assert_eq!(got, want);
        assert!(got
            .iter()
            .zip(&want)
            .all(|(g, w)| Arc::ptr_eq(&g.table, &w.table)));
        assert!(h.is_empty() && !h.on_disk());
    }

    #[test]
    fn truncate_in_memory_and_on_disk() {
        let a = table("a");
        for limit in [usize::MAX, 1000] {
            let mut h = Hold::with_limit(limit);
            for i in 0..50 {
                h.push(ev(&a, i, Value::Int(i as i64))).expect("push");
            }
            h.truncate(30).expect("truncate");
            for i in 100..105 {
                h.push(ev(&a, i, Value::Int(0))).expect("push");
            }
            h.truncate(40).expect("no-op beyond");
            let got: Vec<u64> = drained(&mut h)
                .iter()
                .map(|e| match &e.position {
                    Position::Mysql(p) => p.ordinal,
                    _ => 0,
                })
                .collect();
            let want: Vec<u64> = (0..30).chain(100..105).collect();
            assert_eq!(got, want, "limit {limit}");
        }
    }

    #[test]
    fn drain_stops_on_error() {
        let a = table("a");
        let mut h = Hold::with_limit(500);
        for i in 0..40 {
            h.push(ev(&a, i, Value::Int(1))).expect("push");
        }
        let mut n = 0;
        let r = h
            .drain(|_| {
                n += 1;
                if n == 10 {
                    Err("stop")
                } else {
                    Ok(())
                }
            })
            .expect("read");
        assert_eq!(r, Err("stop"));
        assert!(h.is_empty());
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let a = table("a");
        let mut buf = Vec::new();
        encode(&ev(&a, 1, Value::Text("t".into())), 0, &mut buf).expect("encode");
        for n in 0..buf.len() {
            assert!(decode(&buf[..n], std::slice::from_ref(&a)).is_err());
        }
        assert!(decode(&buf, &[]).is_err(), "unknown table index");
        assert!(decode(&buf, std::slice::from_ref(&a)).is_ok());
    }
}
