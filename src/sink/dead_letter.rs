//! Dead letters: events a receiver rejected for good, kept in a JSONL file so the stream can
//! go on, and so they can be inspected and re-sent.
//!
//! # When an event becomes a dead letter
//!
//! * http: a request holding only that event was answered with a 4xx that rejects content
//!   (400, 409, 413, 422, …; not 401/403/404/405/407, which stop the sink as a
//!   configuration error, and not 408/425/429, which are retried). A rejected multi-event
//!   request is split until the rejected events are isolated ([`crate::sink::batch`]).
//! * segment: the row lacks a field its call type requires, the call exceeds
//!   `max_call_bytes`, or the endpoint rejects the single call as above.
//! * nats: the server refuses the single message for good (e.g. larger than its max payload).
//!
//! With `on_permanent_failure = "stop"` the sink fails instead and nothing is checkpointed.
//!
//! # File format
//!
//! One JSON object per line, appended to `dead_letter_path` (default
//! `<sink name>.dead-letters.jsonl`), in stream order:
//!
//! ```json
//! {"time":"2026-11-21T22:13:57.123Z","time_ms":1795385637123,"sink":"hooks","kind":"http",
//!  "source":"app","cursor":"00000000016B3748:0000000000000001",
//!  "error":"HTTP 400 Bad Request: {\"error\":\"bad email\"}",
//!  "event":{"op":"c","before":null,"after":{...},"key":{...},"source":{...},"ts_ms":...}}
//! ```
//!
//! * `time`/`time_ms`: when the event was rejected (UTC).
//! * `sink`/`kind`: the configured sink name and kind that rejected it.
//! * `source`/`cursor`: the event's `source.name` and `source.cursor` (duplicated from
//!   `event` for `grep`/`jq`).
//! * `error`: the receiver's status and (truncated) answer, or the mapping problem.
//! * `event`: the complete change event, exactly as the sinks encode it.
//!
//! The lines of one batch are written with one `write` and `fdatasync`ed **before** the batch
//! counts as accepted (and is checkpointed); a crash before that re-delivers the batch, so a
//! dead letter may appear twice, never zero times. Several pipelines feeding one sink append
//! whole lines (`O_APPEND`), so lines never interleave. Appends and the rewrite after a
//! re-send hold an exclusive `flock` on `<dead_letter_path>.lock`, so a re-send while the
//! service runs loses no new dead letter. A line cut short by a crash is skipped on reading
//! (and dropped by the next rewrite); the next append starts on a fresh line.
//!
//! Owns the file format, the appending writer ([`DeadLetters`]) and the reading and
//! rewriting of a file. Does not own re-sending or listing (`logtide dead-letters`), which
//! build sinks from their config: [`crate::ops::dead_letters`].

use super::batch::{iso8601_ms, permanent, transient, Records, Rejection};
use super::SinkError;
use crate::config::{OnPermanentFailure, SinkConfig};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One line of a dead-letter file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was rejected, ISO 8601 UTC.
    pub time: String,
    pub time_ms: i64,
    /// Name of the sink that rejected it.
    pub sink: String,
    /// Kind of that sink (`http`, `segment`, `nats`).
    pub kind: String,
    /// `source.name` of the event.
    pub source: String,
    /// `source.cursor` of the event.
    pub cursor: String,
    /// Why it was rejected.
    pub error: String,
    /// The change event as JSON.
    pub event: serde_json::Value,
}

/// A dead-letter file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot read dead-letter file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dead-letter file {path}, line {line}: not a dead letter")]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot rewrite dead-letter file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dead-letter file {path} shrank from {was} to {now} bytes while re-sending (another re-send?); left as it is")]
    Changed { path: PathBuf, was: u64, now: u64 },
}

/// The dead-letter file a sink config appends to: `dead_letter_path`, or
/// `<sink name>.dead-letters.jsonl` (a relative path is relative to the working directory,
/// for the service and the `dead-letters` command alike). `None` for stdout and file sinks,
/// which never reject events.
pub fn dead_letter_path(cfg: &SinkConfig) -> Option<PathBuf> {
    let (name, path) = match cfg {
        SinkConfig::Http(c) => (&c.name, c.dead_letter_path.as_deref()),
        SinkConfig::Segment(c) => (&c.name, c.dead_letter_path.as_deref()),
        SinkConfig::Nats(c) => (&c.name, c.dead_letter_path.as_deref()),
        SinkConfig::Stdout(_) | SinkConfig::File(_) => return None,
    };
    Some(path.map_or_else(|| default_path(name), Path::to_path_buf))
}

fn default_path(sink: &str) -> PathBuf {
    PathBuf::from(format!("{sink}.dead-letters.jsonl"))
}

/// Takes the exclusive lock that serialises appends to `path` and its rewrite; released when
/// the returned file is dropped.
fn lock(path: &Path) -> std::io::Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))?;
    // Named through the trait: on Rust >= 1.89 `f.lock()` would be std's inherent method.
    fs4::FileExt::lock(&f)?;
    Ok(f)
}

/// Reads every dead letter of `path`, in file order. Empty lines are skipped; a line cut
/// short by a crash (before its batch was accepted) is skipped with a warning.
pub fn read_dead_letters(path: &Path) -> Result<Vec<DeadLetter>, DeadLetterError> {
    read_with_len(path).map(|(letters, _)| letters)
}

/// [`read_dead_letters`] and the number of bytes read.
pub(crate) fn read_with_len(path: &Path) -> Result<(Vec<DeadLetter>, u64), DeadLetterError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| DeadLetterError::Read {
            path: path.to_owned(),
            source,
        })?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(d) => out.push(d),
            Err(e) if e.is_eof() => {
                tracing::warn!(path = %path.display(), line = i + 1, "skipping a dead-letter line cut short by a crash");
            }
            Err(source) => {
                return Err(DeadLetterError::Parse {
                    path: path.to_owned(),
                    line: i + 1,
                    source,
                })
            }
        }
    }
    Ok((out, bytes.len() as u64))
}

/// Replaces the first `read_len` bytes of `path` (the letters a re-send read) by `keep`,
/// keeping whatever was appended since; deletes the file when nothing is left. Returns how
/// many dead letters the file holds now.
pub(crate) fn rewrite(
    path: &Path,
    read_len: u64,
    keep: &[DeadLetter],
) -> Result<usize, DeadLetterError> {
    let io = |source| DeadLetterError::Write {
        path: path.to_owned(),
        source,
    };
    let _lock = lock(path).map_err(io)?;
    let mut tail = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            let now = f.metadata().map_err(io)?.len();
            if now < read_len {
                return Err(DeadLetterError::Changed {
                    path: path.to_owned(),
                    was: read_len,
                    now,
                });
            }
            f.seek(SeekFrom::Start(read_len)).map_err(io)?;
            f.read_to_end(&mut tail).map_err(io)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && read_len == 0 => {}
        Err(e) => return Err(io(e)),
    }
    let appended = tail
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    if keep.is_empty() && appended == 0 {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(0),
        };
    }
    let mut buf = Vec::with_capacity(keep.len() * 512 + tail.len());
    for l in keep {
        // A DeadLetter (strings and a JSON value) always serialises.
        let _ = serde_json::to_writer(&mut buf, l);
        buf.push(b'\n');
    }
    if !tail.is_empty() && tail.first() != Some(&b'\n') && buf.last() != Some(&b'\n') {
        buf.push(b'\n');
    }
    buf.extend_from_slice(&tail);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&buf).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename durable; not every platform can open a directory.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(keep.len() + appended)
}

/// What a [`resend`] did.
#[derive(Debug, Default)]
pub struct ResendReport {
    /// Dead letters the sink accepted this time.
    pub sent: usize,
    /// Dead letters rejected again (with the new error and time), in input order.
    pub rejected: Vec<DeadLetter>,
}

/// The dead-letter file of one sink and what to do with rejected events.
#[derive(Debug)]
pub struct DeadLetters {
    sink: String,
    kind: &'static str,
    path: PathBuf,
    policy: OnPermanentFailure,
}

impl DeadLetters {
    pub fn new(
        sink: &str,
        kind: &'static str,
        path: Option<&Path>,
        policy: OnPermanentFailure,
    ) -> Self {
        DeadLetters {
            sink: sink.to_owned(),
            kind,
            path: path.map_or_else(|| default_path(sink), Path::to_path_buf),
            policy,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deals with the rejected events of one delivery: appends and fsyncs them (the stream
    /// goes on), or fails with the first one under `on_permanent_failure = "stop"`.
    pub async fn settle(&self, records: &Records, rejected: &[Rejection]) -> Result<(), SinkError> {
        if rejected.is_empty() {
            return Ok(());
        }
        if self.policy == OnPermanentFailure::Stop {
            let first = &rejected[0];
            let cursor = records.item(first.index).map_or("?", |i| i.cursor.as_str());
            return Err(permanent(
                &self.sink,
                format!(
                    "the receiver rejected the event at cursor {cursor} for good ({}); stopping because on_permanent_failure = \"stop\" (set it to \"dead_letter\" to skip such events)",
                    first.error
                ),
                None,
            ));
        }
        let now = crate::event::now_ms();
        let mut buf = Vec::with_capacity(rejected.len() * 512);
        for r in rejected {
            self.line(&mut buf, records, r, now);
        }
        let path = self.path.clone();
        let n = rejected.len();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let _lock = lock(&path)?;
            let mut f = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)?;
            // Start on a fresh line after a line cut short by a crash.
            let len = f.metadata()?.len();
            if len > 0 {
                let mut last = [0u8];
                f.seek(SeekFrom::Start(len - 1))?;
                f.read_exact(&mut last)?;
                if last[0] != b'\n' {
                    buf.insert(0, b'\n');
                }
            }
            f.write_all(&buf)?;
            f.sync_data()
        })
        .await;
        let io = match res {
            Ok(r) => r,
            Err(e) => {
                return Err(transient(
                    &self.sink,
                    "dead-letter writer task failed",
                    Some(Box::new(e)),
                ))
            }
        };
        io.map_err(|e| {
            transient(
                &self.sink,
                format!("cannot append to dead-letter file {}", self.path.display()),
                Some(Box::new(e)),
            )
        })?;
        ::metrics::counter!(crate::metrics::DEAD_LETTERS_TOTAL, "sink" => self.sink.clone())
            .increment(n as u64);
        tracing::warn!(sink = %self.sink, events = n, path = %self.path.display(), "events rejected for good, written to the dead-letter file");
        Ok(())
    }

    /// Rejected events as [`DeadLetter`]s (for a re-send, which does not append them).
    pub fn to_letters(&self, records: &Records, rejected: &[Rejection]) -> Vec<DeadLetter> {
        let now = crate::event::now_ms();
        rejected
            .iter()
            .filter_map(|r| {
                let mut buf = Vec::new();
                self.line(&mut buf, records, r, now);
                serde_json::from_slice(&buf).ok()
            })
            .collect()
    }

    fn line(&self, buf: &mut Vec<u8>, records: &Records, r: &Rejection, now: i64) {
        #[derive(Serialize)]
        struct Head<'a> {
            time: String,
            time_ms: i64,
            sink: &'a str,
            kind: &'a str,
            source: &'a str,
            cursor: &'a str,
            error: &'a str,
        }
        let item = records.item(r.index);
        let head = Head {
            time: iso8601_ms(now),
            time_ms: now,
            sink: &self.sink,
            kind: self.kind,
            source: item.map_or("", |i| i.source.as_str()),
            cursor: item.map_or("", |i| i.cursor.as_str()),
            error: &r.error,
        };
        let start = buf.len();
        if serde_json::to_writer(&mut *buf, &head).is_err() {
            buf.truncate(start);
            return;
        }
        // Replace the closing brace by the event.
        buf.pop();
        buf.extend_from_slice(b",\"event\":");
        let ev = records.event_json(r.index);
        if ev.is_empty() {
            buf.extend_from_slice(b"null");
        } else {
            buf.extend_from_slice(ev);
        }
        buf.extend_from_slice(b"}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock excludes a second holder (another open of the lock file, as a `resend`
    /// process would make) until the first is dropped.
    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dl.jsonl");
        let first = lock(&path).expect("first lock");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let second = std::thread::spawn(move || {
            let held = lock(&p).expect("second lock");
            tx.send(()).expect("send");
            drop(held);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "a second holder got the lock while the first held it"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second holder gets the lock once the first is dropped");
        second.join().expect("join");
    }

    #[tokio::test]
    async fn written_lines_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dl.jsonl");
        let dl = DeadLetters::new("hooks", "http", Some(&path), OnPermanentFailure::DeadLetter);
        let mut r = Records::default();
        for i in 0..3 {
            r.push_with(format!("c{i}"), "app".into(), None, |b| {
                b.extend_from_slice(format!("{{\"n\":{i}}}").as_bytes())
            });
        }
        let rej = vec![
            Rejection {
                index: 1,
                error: "HTTP 400: \"bad\"".into(),
            },
            Rejection {
                index: 2,
                error: "x".into(),
            },
        ];
        dl.settle(&r, &rej).await.expect("settle");
        let back = read_dead_letters(&path).expect("read");
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].cursor, "c1");
        assert_eq!(back[0].sink, "hooks");
        assert_eq!(back[0].source, "app");
        assert_eq!(back[0].error, "HTTP 400: \"bad\"");
        assert_eq!(back[0].event, serde_json::json!({"n": 1}));
        assert_eq!(back[1].event, serde_json::json!({"n": 2}));
        // A torn last line is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"time\":\"20"))
            .expect("append");
        assert_eq!(read_dead_letters(&path).expect("read").len(), 2);
    }

    #[tokio::test]
    async fn stop_policy_fails_with_the_cursor() {
        let dl = DeadLetters::new("hooks", "http", None, OnPermanentFailure::Stop);
        let mut r = Records::default();
        r.push_with("c0".into(), "app".into(), None, |b| {
            b.extend_from_slice(b"{}")
        });
        let err = dl
            .settle(
                &r,
                &[Rejection {
                    index: 0,
                    error: "HTTP 422".into(),
                }],
            )
            .await
            .expect_err("must fail");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("c0"), "{err}");
    }

    #[tokio::test]
    async fn rewrite_keeps_rejected_and_appended_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dl.jsonl");
        let dl = DeadLetters::new("hooks", "http", Some(&path), OnPermanentFailure::DeadLetter);
        let mut r = Records::default();
        for i in 0..4 {
            r.push_with(format!("c{i}"), "app".into(), None, |b| {
                b.extend_from_slice(format!("{{\"n\":{i}}}").as_bytes())
            });
        }
        let rej = |i: usize| Rejection {
            index: i,
            error: format!("e{i}"),
        };
        dl.settle(&r, &[rej(0), rej(1), rej(2)])
            .await
            .expect("settle");
        let (letters, len) = read_with_len(&path).expect("read");
        assert_eq!(letters.len(), 3);
        // While c0..c2 are re-sent, the service appends c3.
        dl.settle(&r, &[rej(3)]).await.expect("settle");
        let mut again = letters[1].clone();
        again.error = "still bad".into();
        assert_eq!(rewrite(&path, len, &[again]).expect("rewrite"), 2);
        let back = read_dead_letters(&path).expect("read");
        assert_eq!(
            back.iter()
                .map(|l| (l.cursor.as_str(), l.error.as_str()))
                .collect::<Vec<_>>(),
            vec![("c1", "still bad"), ("c3", "e3")]
        );
        // Nothing left: the file goes away.
        let (_, len) = read_with_len(&path).expect("read");
        assert_eq!(rewrite(&path, len, &[]).expect("rewrite"), 0);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn append_after_a_torn_line_starts_a_fresh_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dl.jsonl");
        std::fs::write(&path, b"{\"time\":\"20").expect("write");
        let dl = DeadLetters::new("hooks", "http", Some(&path), OnPermanentFailure::DeadLetter);
        let mut r = Records::default();
        r.push_with("c0".into(), "app".into(), None, |b| {
            b.extend_from_slice(b"{}")
        });
        dl.settle(
            &r,
            &[Rejection {
                index: 0,
                error: "x".into(),
            }],
        )
        .await
        .expect("settle");
        let back = read_dead_letters(&path).expect("read");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].cursor, "c0");
    }
}
