//! `kind = "file"`: JSON lines appended to a file, fsynced before a batch is accepted.
//!
//! A failed write is rolled back by truncating the file to its length before the batch, so
//! a retry never leaves a torn line behind.
//!
//! Several sinks on one file (two sources writing into the same `path`, each with its own
//! sink) share one writer per file in the process: every batch is appended whole under
//! one lock, and a failed batch's rollback never reaches lines another source's batch
//! appended (they were accepted, and stay).

use super::{Sink, SinkError};
use crate::config::FileSinkConfig;
use crate::event::ChangeEvent;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

pub struct FileSink {
    name: String,
    path: PathBuf,
    fsync: bool,
    /// The file's one writer, shared with every other sink on the same file.
    file: Arc<SharedFile>,
    /// Two encoding buffers, kept between batches: one piece is encoded while the other is
    /// written.
    bufs: [Vec<u8>; 2],
}

/// A batch is encoded and written in pieces of about this many bytes: the next piece is
/// encoded (on the pipeline's thread) while the last one is written (on a blocking thread),
/// so the encoding and the kernel's copy into the page cache overlap.
const PIECE_BYTES: usize = 512 * 1024;

/// The writer of a batch between pieces: free, or writing the last piece encoded.
enum Piece {
    Ready(BatchWrite),
    Writing(tokio::task::JoinHandle<(BatchWrite, Vec<u8>, std::io::Result<()>)>),
}

/// A batch being written: the file's lock, held from the first piece to the last, and the
/// file's length before the batch (known after the first piece).
struct BatchWrite {
    file: tokio::sync::OwnedMutexGuard<File>,
    before: Option<u64>,
}

impl BatchWrite {
    /// Appends one piece (whole lines), then, for the last, `fdatasync`s if asked. On
    /// failure the file is truncated back to its length before the batch: no torn line and
    /// no part of a failed batch stays.
    fn write(&mut self, piece: &[u8], sync: bool) -> std::io::Result<()> {
        let file: &File = &self.file;
        let res = (|| {
            if self.before.is_none() {
                self.before = Some(file.metadata()?.len());
            }
            let mut w = file;
            failpoint::check(&mut w, piece)?;
            w.write_all(piece)?;
            if sync {
                file.sync_data()?;
            }
            Ok(())
        })();
        if res.is_err() {
            if let Some(before) = self.before {
                let _ = file.set_len(before);
            }
        }
        res
    }
}

/// One open file and the lock every batch holds from its first byte to its fsync: batches
/// of different sources (each source builds its own sink) never interleave, and a failed
/// batch rolls back to the length it found under the same lock, so it never cuts lines
/// another source appended and had accepted. An async lock: a batch holds it while it is
/// encoded piece by piece, between its blocking writes.
type SharedFile = tokio::sync::Mutex<File>;

/// The open files of this process by (device, inode): a second sink on the same file,
/// however its path is spelled, shares the first one's writer.
static OPEN_FILES: Mutex<Option<OpenFiles>> = Mutex::new(None);

/// (device, inode) → the writer, while some sink holds it.
type OpenFiles = HashMap<(u64, u64), Weak<SharedFile>>;

impl FileSink {
    /// Opens (creating, appending) the file, or joins the writer already open on it.
    pub async fn open(cfg: &FileSinkConfig) -> Result<FileSink, SinkError> {
        let path = cfg.path.clone();
        let failed = |what: String, e: std::io::Error| SinkError::Permanent {
            sink: cfg.name.clone(),
            what,
            source: Some(Box::new(e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| {
                failed(
                    format!(
                        "cannot open {} for appending (check the directory exists and is writable)",
                        path.display()
                    ),
                    e,
                )
            })?;
        let id = {
            use std::os::unix::fs::MetadataExt;
            let m = file
                .metadata()
                .map_err(|e| failed(format!("cannot stat {}", path.display()), e))?;
            (m.dev(), m.ino())
        };
        let mut open = OPEN_FILES.lock().unwrap_or_else(|e| e.into_inner());
        let open = open.get_or_insert_with(HashMap::new);
        open.retain(|_, w| w.strong_count() > 0);
        let shared = match open.get(&id).and_then(Weak::upgrade) {
            Some(shared) => {
                tracing::debug!(sink = %cfg.name, path = %path.display(), "file already open in this process: sharing its writer");
                shared
            }
            None => {
                // Only the first opener repairs the end: later ones would cut a batch
                // another source is writing.
                drop_torn_tail(&file).map_err(|e| {
                    failed(format!("cannot repair the end of {}", path.display()), e)
                })?;
                let shared = Arc::new(SharedFile::new(file));
                open.insert(id, Arc::downgrade(&shared));
                shared
            }
        };
        Ok(FileSink {
            name: cfg.name.clone(),
            path,
            fsync: cfg.fsync,
            file: shared,
            bufs: [Vec::new(), Vec::new()],
        })
    }
}

/// A crash (kill -9) in the middle of a write can leave a partial last line. That batch was
/// never accepted (it is delivered again), so the partial line is cut off before appending.
fn drop_torn_tail(file: &File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut f = file;
    let mut pos = len;
    let mut buf = [0u8; 4096];
    while pos > 0 {
        let n = buf.len().min(pos as usize);
        pos -= n as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            let keep = pos + i as u64 + 1;
            if keep < len {
                tracing::warn!(
                    bytes = len - keep,
                    "dropping a torn last line left by a crash"
                );
                file.set_len(keep)?;
            }
            return Ok(());
        }
    }
    tracing::warn!(bytes = len, "dropping a torn line left by a crash");
    file.set_len(0)
}

/// Test hook: makes a write fail after writing part of its batch.
#[cfg(test)]
mod failpoint {
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// Writes whose batch contains this marker fail half-way.
    /// Armed while non-zero: tests that run at the same time each arm and disarm it.
    pub static ARMED: AtomicUsize = AtomicUsize::new(0);
    pub const MARKER: &[u8] = b"\"fail-me\"";

    pub fn check(w: &mut impl std::io::Write, buf: &[u8]) -> std::io::Result<()> {
        if ARMED.load(Ordering::SeqCst) > 0 && buf.windows(MARKER.len()).any(|m| m == MARKER) {
            // Half the batch reaches the file before the failure.
            w.write_all(buf.get(..buf.len() / 2).unwrap_or_default())?;
            return Err(std::io::Error::other("injected write failure"));
        }
        Ok(())
    }
}

#[cfg(not(test))]
mod failpoint {
    #[inline(always)]
    pub fn check(_: &mut impl std::io::Write, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Accepted = appended and (unless `fsync = false`) `fdatasync`ed.
    async fn deliver(&mut self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = crate::event::now_ms();
        let mut slot = Piece::Ready(BatchWrite {
            file: self.file.clone().lock_owned().await,
            before: None,
        });
        let [mut next, mut spare] = std::mem::take(&mut self.bufs);
        let mut events = batch.iter().peekable();
        let res = loop {
            next.clear();
            for e in events.by_ref() {
                // Writing into a Vec<u8> cannot fail.
                let _ = e.write_json_line(&mut next, now);
                if next.len() >= PIECE_BYTES {
                    break;
                }
            }
            let last = events.peek().is_none();
            // The piece before this one must be in the file before this one is written.
            let mut w = match slot {
                Piece::Ready(w) => w,
                Piece::Writing(h) => match self.written(h).await {
                    Ok((w, b)) => {
                        spare = b;
                        w
                    }
                    Err(e) => break Err(e),
                },
            };
            let piece = std::mem::replace(&mut next, std::mem::take(&mut spare));
            let sync = last && self.fsync;
            let h = tokio::task::spawn_blocking(move || {
                let r = w.write(&piece, sync);
                (w, piece, r)
            });
            if last {
                break self.written(h).await.map(|(_, b)| spare = b);
            }
            slot = Piece::Writing(h);
        };
        next.clear();
        spare.clear();
        self.bufs = [next, spare];
        res
    }
}

impl FileSink {
    /// Waits for a piece's write: the writer (still holding the file's lock) and the
    /// piece's buffer for reuse, or the write's error (the batch already rolled back).
    async fn written(
        &self,
        h: tokio::task::JoinHandle<(BatchWrite, Vec<u8>, std::io::Result<()>)>,
    ) -> Result<(BatchWrite, Vec<u8>), SinkError> {
        let (w, buf, res) = h.await.map_err(|e| SinkError::Permanent {
            sink: self.name.clone(),
            what: "file writer task failed".into(),
            source: Some(Box::new(e)),
        })?;
        match res {
            Ok(()) => Ok((w, buf)),
            Err(e) => Err(SinkError::Transient {
                sink: self.name.clone(),
                what: format!("write to {} failed", self.path.display()),
                source: Some(Box::new(e)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Connector, Op, SourceInfo, TableSchema};
    use crate::position::{Lsn, PgPosition, Position};
    use crate::value::Value;

    fn events(source: &str, from: u64, n: u64, text: &str) -> Vec<ChangeEvent> {
        let t = Arc::new(TableSchema {
            source: Arc::new(SourceInfo {
                connector: Connector::Postgres,
                name: source.into(),
            }),
            db: "d".into(),
            schema: "public".into(),
            name: "t".into(),
            columns: vec!["id".into(), "pad".into()],
            key: vec![0],
            encoded: Default::default(),
        });
        (from..from + n)
            .map(|i| ChangeEvent {
                op: Op::Create,
                table: t.clone(),
                before: None,
                after: Some(vec![
                    Some(Value::Int(i as i64)),
                    Some(Value::Text(text.into())),
                ]),
                position: Position::Postgres(PgPosition {
                    lsn: Lsn(i + 1),
                    ordinal: 1,
                }),
                txid: None,
                commit_ts_ms: None,
            })
            .collect()
    }

    /// Two sources' sinks on one file (spelled differently): batches of one source fail
    /// half-way and are rolled back while the other's keep being accepted concurrently;
    /// every accepted line stays whole, and no failed line remains.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_never_cuts_another_sources_accepted_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.jsonl");
        let cfg = |name: &str, path: PathBuf| FileSinkConfig {
            name: name.into(),
            path,
            fsync: false,
            sources: vec![],
        };
        let mut a = FileSink::open(&cfg("a", path.clone()))
            .await
            .expect("open a");
        let mut b = FileSink::open(&cfg("b", dir.path().join(".").join("o.jsonl")))
            .await
            .expect("open b");
        assert!(Arc::ptr_eq(&a.file, &b.file), "one writer per file");
        failpoint::ARMED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pad = "x".repeat(3000);
        let ta = tokio::spawn(async move {
            let mut ok = 0u64;
            for round in 0..200u64 {
                // Every other batch of source a fails after the write started.
                let text = if round % 2 == 0 { "fail-me" } else { "a-ok" };
                if a.deliver(&events("a", round * 10, 10, text)).await.is_ok() {
                    ok += 10;
                }
            }
            ok
        });
        let pad2 = pad.clone();
        let tb = tokio::spawn(async move {
            for round in 0..200u64 {
                b.deliver(&events("b", round * 10, 10, &pad2))
                    .await
                    .expect("source b's writes are accepted");
            }
        });
        let a_ok = ta.await.expect("a");
        tb.await.expect("b");
        failpoint::ARMED.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let text = std::fs::read_to_string(&path).expect("read");
        let (mut from_a, mut from_b) = (0u64, 0u64);
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).expect("every line is whole JSON");
            match v["source"]["name"].as_str() {
                Some("a") => {
                    assert_eq!(v["after"]["pad"], "a-ok", "a failed batch left a line");
                    from_a += 1;
                }
                Some("b") => from_b += 1,
                other => panic!("unexpected source {other:?}"),
            }
        }
        assert_eq!(from_b, 2000, "every accepted line of source b is there");
        assert_eq!(from_a, a_ok);
        assert_eq!(a_ok, 1000);
    }

    /// A batch larger than a piece is written in several pieces; one failing late takes the
    /// pieces already written with it, and the retry writes the batch whole, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_many_pieces_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.jsonl");
        let mut sink = FileSink::open(&FileSinkConfig {
            name: "f".into(),
            path: path.clone(),
            fsync: true,
            sources: vec![],
        })
        .await
        .expect("open");
        let pad = "y".repeat(1000);
        sink.deliver(&events("s", 0, 10, "first"))
            .await
            .expect("first batch");
        // About 1.1 MB per 1,000 events: 3,000 events are several pieces.
        let mut batch = events("s", 10, 3000, &pad);
        let n = batch.len();
        let marked = events("s", 10 + n as u64, 1, "fail-me");
        batch.extend(marked);
        assert!(
            n * pad.len() > 4 * PIECE_BYTES,
            "the batch spans several pieces"
        );
        failpoint::ARMED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let failed = sink.deliver(&batch).await;
        failpoint::ARMED.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        assert!(failed.is_err(), "the last piece's write failed");
        let ids = |text: &str| -> Vec<i64> {
            text.lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON line");
                    v["after"]["id"].as_i64().expect("id")
                })
                .collect()
        };
        let after_failure = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            ids(&after_failure),
            (0..10).collect::<Vec<_>>(),
            "the failed batch left none of its pieces"
        );
        // The retry (the same rows, without the marker: another test may still have the
        // failpoint armed) appends it whole and in order.
        batch.pop();
        batch.extend(events("s", 10 + n as u64, 1, "passes"));
        sink.deliver(&batch).await.expect("retry");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(ids(&text), (0..10 + n as i64 + 1).collect::<Vec<_>>());
    }

    #[test]
    fn torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("o.jsonl");
        for (content, want) in [
            ("{\"a\":1}\n{\"b\":", "{\"a\":1}\n"),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            ("{\"partial", ""),
            ("", ""),
        ] {
            std::fs::write(&p, content).expect("write");
            let f = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&p)
                .expect("open");
            drop_torn_tail(&f).expect("repair");
            assert_eq!(std::fs::read_to_string(&p).expect("read"), want);
        }
    }
}
