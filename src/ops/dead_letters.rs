//! `logtide dead-letters list|resend`: what a sink gave up on, and sending it again.
//!
//! [`read_dead_letters`] parses a file (the format: [`crate::sink::dead_letter`]);
//! [`resend`] delivers dead letters again through a configured sink (built fresh from its
//! config) in file order, and returns the ones that are rejected again instead of
//! appending them to the file. [`list`] and [`resend_sink`] are the
//! `logtide dead-letters list|resend` commands: `resend_sink` rewrites the file (temporary
//! file, `fsync`, `rename`) with the letters rejected again — carrying the new `time` and
//! `error` — plus any line appended meanwhile, and deletes it when nothing is left. When
//! the sink gives up (receiver down beyond `retry.max_retries`) the file is left as it was:
//! some letters may have been delivered, and re-sending them again later is safe for
//! consumers that de-duplicate by cursor (NATS drops them by `Nats-Msg-Id`).

use crate::config::{Config, SinkConfig};
use crate::sink::batch::permanent;
use crate::sink::dead_letter::{
    dead_letter_path, read_dead_letters, read_with_len, rewrite, DeadLetter, DeadLetterError,
    ResendReport,
};
use crate::sink::SinkError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Delivers `letters` again through the sink configured by `cfg` (http, segment or nats),
/// in order. Transient failures are retried as in normal delivery; `Err` means the sink
/// could not be built or gave up, and then nothing may be considered re-sent.
pub async fn resend(cfg: &SinkConfig, letters: &[DeadLetter]) -> Result<ResendReport, SinkError> {
    Resender::build(cfg).await?.resend(letters).await
}

/// A sink that takes re-sends.
enum Resender {
    Http(crate::sink::http::HttpSink),
    Segment(crate::sink::segment::SegmentSink),
    Nats(crate::sink::nats::NatsSink),
}

impl Resender {
    async fn build(cfg: &SinkConfig) -> Result<Resender, SinkError> {
        Ok(match cfg {
            SinkConfig::Http(c) => Resender::Http(crate::sink::http::HttpSink::build(c).await?),
            SinkConfig::Segment(c) => {
                Resender::Segment(crate::sink::segment::SegmentSink::build(c).await?)
            }
            SinkConfig::Nats(c) => Resender::Nats(crate::sink::nats::NatsSink::build(c).await?),
            SinkConfig::Stdout(_) | SinkConfig::File(_) => return Err(permanent(
                cfg.name(),
                "stdout and file sinks never reject events, so they take no re-sends: pick an http, segment or nats sink",
                None,
            )),
        })
    }

    async fn resend(&mut self, letters: &[DeadLetter]) -> Result<ResendReport, SinkError> {
        match self {
            Resender::Http(s) => s.resend(letters).await,
            Resender::Segment(s) => s.resend(letters).await,
            Resender::Nats(s) => s.resend(letters).await,
        }
    }
}

/// A failure of the `logtide dead-letters` command.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterCmdError {
    #[error("no sink named {name:?} in the config (sinks: {known})")]
    UnknownSink { name: String, known: String },
    #[error("sink {sink:?} is a {kind} sink, which never rejects events and has no dead letters: pick an http, segment or nats sink")]
    NoDeadLetters { sink: String, kind: &'static str },
    #[error(transparent)]
    File(#[from] DeadLetterError),
    #[error("cannot write the listing")]
    Output(#[source] std::io::Error),
    /// The sink cannot be built from its config (a missing secret variable, a bad URL).
    #[error("cannot set up the sink")]
    Build(#[source] SinkError),
    /// The sink gave up; the file is left as it was.
    #[error("re-sending the dead letters of {path} failed; the file is left as it was")]
    Resend {
        path: PathBuf,
        #[source]
        source: SinkError,
    },
}

impl DeadLetterCmdError {
    /// A mistake in the command line or the config (exit code 2), as opposed to a failure
    /// while doing the work.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            DeadLetterCmdError::UnknownSink { .. }
                | DeadLetterCmdError::NoDeadLetters { .. }
                | DeadLetterCmdError::Build(_)
        )
    }
}

/// The dead-letter file of sink `name`, and its config.
pub fn sink_file<'a>(
    cfg: &'a Config,
    name: &str,
) -> Result<(&'a SinkConfig, PathBuf), DeadLetterCmdError> {
    let Some(sink) = cfg.sinks.iter().find(|s| s.name() == name) else {
        return Err(DeadLetterCmdError::UnknownSink {
            name: name.to_owned(),
            known: cfg
                .sinks
                .iter()
                .map(SinkConfig::name)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    match dead_letter_path(sink) {
        Some(p) => Ok((sink, p)),
        None => Err(DeadLetterCmdError::NoDeadLetters {
            sink: name.to_owned(),
            kind: match sink {
                SinkConfig::Stdout(_) => "stdout",
                _ => "file",
            },
        }),
    }
}

/// The dead letters of `path`; none when the file does not exist.
pub fn load(path: &Path) -> Result<Vec<DeadLetter>, DeadLetterError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    read_dead_letters(path)
}

/// `logtide dead-letters list`: one tab-separated line per dead letter on `out` (time,
/// sink, cursor, error, event summary), and per file a count on `summary`. With `sink`,
/// only that sink's file; otherwise every http, segment and nats sink's. Returns the total.
pub fn list(
    cfg: &Config,
    sink: Option<&str>,
    out: &mut dyn Write,
    summary: &mut dyn Write,
) -> Result<usize, DeadLetterCmdError> {
    let files: Vec<(String, PathBuf)> = match sink {
        Some(name) => vec![(name.to_owned(), sink_file(cfg, name)?.1)],
        None => cfg
            .sinks
            .iter()
            .filter_map(|s| dead_letter_path(s).map(|p| (s.name().to_owned(), p)))
            .collect(),
    };
    let mut total = 0;
    for (name, path) in files {
        let letters = load(&path)?;
        for l in &letters {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                l.time,
                l.sink,
                l.cursor,
                one_line(&l.error, 200),
                summary_of(&l.event)
            )
            .map_err(DeadLetterCmdError::Output)?;
        }
        writeln!(
            summary,
            "sink {name}: {} dead letter{} in {}",
            letters.len(),
            if letters.len() == 1 { "" } else { "s" },
            path.display()
        )
        .map_err(DeadLetterCmdError::Output)?;
        total += letters.len();
    }
    Ok(total)
}

/// What `logtide dead-letters resend` did.
#[derive(Debug)]
pub struct ResendOutcome {
    pub path: PathBuf,
    /// Dead letters in the file when the re-send started.
    pub read: usize,
    /// Accepted by the sink this time, and removed from the file.
    pub sent: usize,
    /// Rejected again, kept in the file with the new error.
    pub failed: usize,
    /// Dead letters in the file now (`failed` plus any appended meanwhile).
    pub left: usize,
}

/// `logtide dead-letters resend`: re-sends the dead letters of sink `name` through that sink
/// (built from its config, with its batching and retries) and rewrites the file with those
/// rejected again. When the sink gives up, the file is left as it was.
pub async fn resend_sink(cfg: &Config, name: &str) -> Result<ResendOutcome, DeadLetterCmdError> {
    let (sink, path) = sink_file(cfg, name)?;
    let (letters, len) = if path.exists() {
        read_with_len(&path)?
    } else {
        (Vec::new(), 0)
    };
    if letters.is_empty() {
        return Ok(ResendOutcome {
            path,
            read: 0,
            sent: 0,
            failed: 0,
            left: 0,
        });
    }
    let mut sender = Resender::build(sink)
        .await
        .map_err(DeadLetterCmdError::Build)?;
    let report = match sender.resend(&letters).await {
        Ok(r) => r,
        Err(source) => return Err(DeadLetterCmdError::Resend { path, source }),
    };
    let left = rewrite(&path, len, &report.rejected)?;
    tracing::info!(sink = %name, sent = report.sent, failed = report.rejected.len(), path = %path.display(), "dead letters re-sent");
    Ok(ResendOutcome {
        read: letters.len(),
        sent: report.sent,
        failed: report.rejected.len(),
        left,
        path,
    })
}

/// `s` on one line, at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// `<op> <schema or db>.<table> key=<key JSON>` of an event.
fn summary_of(event: &serde_json::Value) -> String {
    let src = &event["source"];
    let schema = src["schema"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| src["db"].as_str())
        .unwrap_or("?");
    let key = match &event["key"] {
        serde_json::Value::Null => String::from("-"),
        k => one_line(&k.to_string(), 80),
    };
    format!(
        "{} {}.{} key={}",
        event["op"].as_str().unwrap_or("?"),
        schema,
        src["table"].as_str().unwrap_or("?"),
        key
    )
}
