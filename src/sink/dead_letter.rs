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
//! whole lines (`O_APPEND`), so lines never interleave.
//!
//! # Re-sending
//!
//! [`read_dead_letters`] parses a file; [`resend`] delivers dead letters again through a
//! configured sink (built fresh from its config) in file order, and returns the ones that
//! are rejected again instead of appending them to the file, so the caller (the
//! `logtide dead-letters` command) can rewrite the file with what is left.

use super::batch::{iso8601_ms, permanent, transient, Records, Rejection};
use super::SinkError;
use crate::config::{OnPermanentFailure, SinkConfig};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{BufRead, Write};
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
}

/// Reads every dead letter of `path`, in file order. Empty lines are skipped; a torn last
/// line (a crash while writing, before the batch was accepted) is skipped with a warning.
pub fn read_dead_letters(path: &Path) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let file = std::fs::File::open(path).map_err(|source| DeadLetterError::Read {
        path: path.to_owned(),
        source,
    })?;
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| DeadLetterError::Read {
            path: path.to_owned(),
            source,
        })?;
    let last = lines.len();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(d) => out.push(d),
            Err(e) if i + 1 == last && e.is_eof() => {
                tracing::warn!(path = %path.display(), line = i + 1, "skipping a torn last line of the dead-letter file");
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
    Ok(out)
}

/// What a [`resend`] did.
#[derive(Debug, Default)]
pub struct ResendReport {
    /// Dead letters the sink accepted this time.
    pub sent: usize,
    /// Dead letters rejected again (with the new error and time), in input order.
    pub rejected: Vec<DeadLetter>,
}

/// Delivers `letters` again through the sink configured by `cfg` (http, segment or nats),
/// in order. Transient failures are retried as in normal delivery; `Err` means the sink
/// could not be built or gave up, and then nothing may be considered re-sent.
pub async fn resend(cfg: &SinkConfig, letters: &[DeadLetter]) -> Result<ResendReport, SinkError> {
    match cfg {
        SinkConfig::Http(c) => super::http::HttpSink::build(c).await?.resend(letters).await,
        SinkConfig::Segment(c) => {
            super::segment::SegmentSink::build(c)
                .await?
                .resend(letters)
                .await
        }
        SinkConfig::Nats(c) => super::nats::NatsSink::build(c).await?.resend(letters).await,
        SinkConfig::Stdout(_) | SinkConfig::File(_) => Err(permanent(
            cfg.name(),
            "stdout and file sinks never reject events, so they take no re-sends: pick an http, segment or nats sink",
            None,
        )),
    }
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
            path: path.map_or_else(
                || PathBuf::from(format!("{sink}.dead-letters.jsonl")),
                Path::to_path_buf,
            ),
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
            let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
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
        crate::metrics::sink_dead_letters(&self.sink, n as u64);
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
}
