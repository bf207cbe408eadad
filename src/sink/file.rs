//! `kind = "file"`: JSON lines appended to a file, fsynced before a batch is accepted.
//!
//! A failed write is rolled back by truncating the file to its length before the batch, so
//! a retry never leaves a torn line behind.

use super::{encode_jsonl, Sink, SinkError};
use crate::config::FileSinkConfig;
use crate::event::ChangeEvent;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

pub struct FileSink {
    name: String,
    path: PathBuf,
    fsync: bool,
    /// Taken while a blocking write runs.
    file: Option<File>,
    buf: Vec<u8>,
}

impl FileSink {
    /// Opens (creating, appending) the file.
    pub async fn open(cfg: &FileSinkConfig) -> Result<FileSink, SinkError> {
        let path = cfg.path.clone();
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| SinkError::Permanent {
                sink: cfg.name.clone(),
                what: format!(
                    "cannot open {} for appending (check the directory exists and is writable)",
                    path.display()
                ),
                source: Some(Box::new(e)),
            })?;
        drop_torn_tail(&file).map_err(|e| SinkError::Permanent {
            sink: cfg.name.clone(),
            what: format!("cannot repair the end of {}", path.display()),
            source: Some(Box::new(e)),
        })?;
        Ok(FileSink {
            name: cfg.name.clone(),
            path,
            fsync: cfg.fsync,
            file: Some(file),
            buf: Vec::with_capacity(1 << 20),
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

fn write_batch(file: &File, buf: &[u8], fsync: bool) -> std::io::Result<()> {
    let before = file.metadata()?.len();
    let mut w = file;
    let res = w
        .write_all(buf)
        .and_then(|()| if fsync { file.sync_data() } else { Ok(()) });
    if res.is_err() {
        // Roll the partial batch back so no torn line stays in the file.
        let _ = file.set_len(before);
    }
    res
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
        encode_jsonl(batch, &mut self.buf);
        let Some(file) = self.file.take() else {
            return Err(SinkError::Permanent {
                sink: self.name.clone(),
                what: "file handle lost after an earlier failure".into(),
                source: None,
            });
        };
        let buf = std::mem::take(&mut self.buf);
        let fsync = self.fsync;
        let joined = tokio::task::spawn_blocking(move || {
            let r = write_batch(&file, &buf, fsync);
            (file, buf, r)
        })
        .await;
        let (file, buf, res) = joined.map_err(|e| SinkError::Permanent {
            sink: self.name.clone(),
            what: "file writer task failed".into(),
            source: Some(Box::new(e)),
        })?;
        self.file = Some(file);
        self.buf = buf;
        res.map_err(|e| SinkError::Transient {
            sink: self.name.clone(),
            what: format!("write to {} failed", self.path.display()),
            source: Some(Box::new(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
