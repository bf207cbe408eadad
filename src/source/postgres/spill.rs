//! Spill files for streamed (in-progress) transactions, pgoutput protocol 2.
//!
//! Owns: keeping the raw pgoutput messages of each in-progress top-level transaction on
//! disk until its Stream Commit or Stream Abort, so memory stays bounded however large the
//! transaction is. Does not own: decoding (the messages are replayed through the normal
//! decode path in `mod.rs` with the commit LSN of the Stream Commit).
//!
//! The rules follow PostgreSQL's own apply worker (`worker.c`, "subxact info"): the first
//! message of every subtransaction records its start offset in the file; a Stream Abort of
//! a subtransaction truncates the file to that offset (which also drops the subtransactions
//! nested in it, as they come later in the file); a Stream Abort of the top-level
//! transaction drops the whole file, so an aborted streamed transaction emits nothing.
//!
//! Files are created in the spill directory and unlinked at once (Unix), so nothing is left
//! behind after a crash; the open descriptor keeps the data until it is dropped. After a
//! restart the server streams in-progress transactions again from their beginning
//! (Stream Start with `first_segment`), which starts a fresh file.
//!
//! Record format: `u32` big-endian length, then the message bytes (with its xid prefix).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const BUF_SIZE: usize = 64 * 1024;

/// A spill file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("cannot create spill file in {dir} for a streamed transaction (check free space and permissions, or set TMPDIR)")]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write or read the spill file of streamed transaction {xid}")]
    Io {
        xid: u32,
        #[source]
        source: io::Error,
    },
    #[error("spill file of streamed transaction {xid} is corrupt (record of {len} bytes)")]
    Corrupt { xid: u32, len: u64 },
}

struct SpilledTxn {
    writer: BufWriter<File>,
    len: u64,
    /// (subxid, offset of its first message), in file order.
    subxacts: Vec<(u32, u64)>,
    messages: u64,
}

/// The spill files of every in-progress streamed transaction.
pub struct SpillStore {
    dir: PathBuf,
    txns: HashMap<u32, SpilledTxn>,
}

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

impl SpillStore {
    /// Spill files go in `dir` (created if missing).
    pub fn new(dir: PathBuf) -> Self {
        SpillStore {
            dir,
            txns: HashMap::new(),
        }
    }

    /// Whether a streamed transaction is in progress (has spilled data not yet committed or
    /// aborted).
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stream Start: the first segment of a transaction discards anything left from an
    /// earlier, interrupted delivery of it.
    pub fn stream_start(&mut self, xid: u32, first_segment: bool) {
        if first_segment {
            self.txns.remove(&xid);
        }
    }

    fn create(&self, xid: u32) -> Result<File, SpillError> {
        let create = |source| SpillError::Create {
            dir: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(create)?;
        let name = format!(
            "logtide-spill-{}-{}-{}",
            std::process::id(),
            xid,
            FILE_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(create)?;
        // Unlink now: the descriptor keeps the data, and a crash leaves nothing behind.
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::debug!(path = %path.display(), %error, "cannot unlink spill file early");
        }
        Ok(file)
    }

    /// Appends one message of top-level transaction `xid`, made by (sub)transaction `subxid`.
    pub fn append(&mut self, xid: u32, subxid: u32, msg: &[u8]) -> Result<(), SpillError> {
        if !self.txns.contains_key(&xid) {
            let file = self.create(xid)?;
            self.txns.insert(
                xid,
                SpilledTxn {
                    writer: BufWriter::with_capacity(BUF_SIZE, file),
                    len: 0,
                    subxacts: Vec::new(),
                    messages: 0,
                },
            );
        }
        let Some(t) = self.txns.get_mut(&xid) else {
            return Ok(());
        };
        if subxid != xid && !t.subxacts.iter().any(|(s, _)| *s == subxid) {
            t.subxacts.push((subxid, t.len));
        }
        let io = |source| SpillError::Io { xid, source };
        let len = u32::try_from(msg.len()).map_err(|_| {
            io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message over 4 GiB",
            ))
        })?;
        t.writer.write_all(&len.to_be_bytes()).map_err(io)?;
        t.writer.write_all(msg).map_err(io)?;
        t.len += 4 + u64::from(len);
        t.messages += 1;
        Ok(())
    }

    /// Stream Abort: drops the whole transaction (`subxid == xid`) or the part of it that
    /// starts with subtransaction `subxid`.
    pub fn abort(&mut self, xid: u32, subxid: u32) -> Result<(), SpillError> {
        if subxid == xid {
            self.txns.remove(&xid);
            return Ok(());
        }
        let Some(t) = self.txns.get_mut(&xid) else {
            return Ok(());
        };
        let Some(i) = t.subxacts.iter().position(|(s, _)| *s == subxid) else {
            // The subtransaction made no change we received.
            return Ok(());
        };
        let offset = t.subxacts[i].1;
        t.subxacts.truncate(i);
        let io = |source| SpillError::Io { xid, source };
        t.writer.flush().map_err(io)?;
        let f = t.writer.get_mut();
        f.set_len(offset).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        t.len = offset;
        Ok(())
    }

    /// Stream Commit: the transaction's messages for replay, `None` if none were spilled.
    pub fn take(&mut self, xid: u32) -> Result<Option<SpillReader>, SpillError> {
        let Some(t) = self.txns.remove(&xid) else {
            return Ok(None);
        };
        let io = |source| SpillError::Io { xid, source };
        let mut file = t.writer.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok(Some(SpillReader {
            xid,
            reader: BufReader::with_capacity(BUF_SIZE, file.take(t.len)),
            buf: Vec::new(),
            left: t.len,
        }))
    }
}

/// Reads a committed transaction's messages back, one at a time.
pub struct SpillReader {
    xid: u32,
    reader: BufReader<io::Take<File>>,
    buf: Vec<u8>,
    left: u64,
}

impl SpillReader {
    /// The next message, `None` at the end.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, SpillError> {
        if self.left == 0 {
            return Ok(None);
        }
        let xid = self.xid;
        let io = |source| SpillError::Io { xid, source };
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len).map_err(io)?;
        let len = u64::from(u32::from_be_bytes(len));
        if len + 4 > self.left {
            return Err(SpillError::Corrupt { xid, len });
        }
        self.left -= len + 4;
        self.buf.resize(len as usize, 0);
        self.reader.read_exact(&mut self.buf).map_err(io)?;
        Ok(Some(&self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut SpillReader) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(m) = r.next_message().expect("read") {
            out.push(m.to_vec());
        }
        out
    }

    fn store() -> (tempfile::TempDir, SpillStore) {
        let d = tempfile::tempdir().expect("tempdir");
        let s = SpillStore::new(d.path().join("spill"));
        (d, s)
    }

    #[test]
    fn commit_replays_in_order() {
        let (_d, mut s) = store();
        s.stream_start(10, true);
        s.append(10, 10, b"a").expect("append");
        s.append(10, 10, b"bb").expect("append");
        s.append(11, 11, b"other").expect("append");
        assert!(!s.is_empty());
        let mut r = s.take(10).expect("take").expect("some");
        assert_eq!(drain(&mut r), vec![b"a".to_vec(), b"bb".to_vec()]);
        let mut r = s.take(11).expect("take").expect("some");
        assert_eq!(drain(&mut r), vec![b"other".to_vec()]);
        assert!(s.is_empty());
        assert!(s.take(12).expect("take").is_none());
        // The files were unlinked at creation.
        assert_eq!(std::fs::read_dir(s.dir()).expect("dir").count(), 0);
    }

    #[test]
    fn subxact_abort_truncates_only_its_part() {
        let (_d, mut s) = store();
        s.append(10, 10, b"top1").expect("append");
        s.append(10, 20, b"sub20").expect("append");
        s.append(10, 21, b"sub21-nested").expect("append");
        s.abort(10, 20).expect("abort");
        s.append(10, 10, b"top2").expect("append");
        s.append(10, 22, b"sub22").expect("append");
        s.abort(10, 99).expect("abort unknown subxact is a no-op");
        let mut r = s.take(10).expect("take").expect("some");
        assert_eq!(
            drain(&mut r),
            vec![b"top1".to_vec(), b"top2".to_vec(), b"sub22".to_vec()]
        );
    }

    #[test]
    fn top_level_abort_drops_everything() {
        let (_d, mut s) = store();
        s.append(10, 10, b"x").expect("append");
        s.append(10, 11, b"y").expect("append");
        s.abort(10, 10).expect("abort");
        assert!(s.is_empty());
        assert!(s.take(10).expect("take").is_none());
    }

    #[test]
    fn first_segment_restarts_the_file() {
        let (_d, mut s) = store();
        s.append(10, 10, b"old").expect("append");
        s.stream_start(10, true);
        s.append(10, 10, b"new").expect("append");
        s.stream_start(10, false);
        s.append(10, 10, b"more").expect("append");
        let mut r = s.take(10).expect("take").expect("some");
        assert_eq!(drain(&mut r), vec![b"new".to_vec(), b"more".to_vec()]);
    }

    #[test]
    fn large_transaction_round_trips() {
        let (_d, mut s) = store();
        let n = 100_000u32;
        for i in 0..n {
            s.append(5, 5, &i.to_be_bytes()).expect("append");
        }
        let mut r = s.take(5).expect("take").expect("some");
        let mut i = 0u32;
        while let Some(m) = r.next_message().expect("read") {
            assert_eq!(m, i.to_be_bytes());
            i += 1;
        }
        assert_eq!(i, n);
    }
}
