//! Sinks: where events go. A sink knows nothing about databases.
//!
//! Every sink has the same anatomy: an `XxxConfig` in [`crate::config`] (serde,
//! `deny_unknown_fields`), a constructor that validates and connects, `deliver`, and a
//! classification of its failures into [`SinkError::Transient`] (retry) or
//! [`SinkError::Permanent`] (stop and say what to fix).

pub mod batch;
pub mod dead_letter;
pub mod file;
pub mod http;
pub mod nats;
pub mod segment;
pub mod stdout;

use crate::config::SinkConfig;
use crate::event::ChangeEvent;

/// A sink failure, classified.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Retrying the same batch may succeed (I/O hiccup, timeout, 5xx, 429).
    #[error("sink {sink}: {what} (will retry)")]
    Transient {
        sink: String,
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Retrying cannot help; the message says what to fix.
    #[error("sink {sink}: {what}")]
    Permanent {
        sink: String,
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl SinkError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient { .. })
    }
}

/// The contract every sink fulfils.
///
/// * `deliver` receives a batch of events of one source in order; the sink must keep that
///   order in what it writes or sends.
/// * Returning `Ok(())` means **accepted**: the events are durably written (file: fsynced;
///   network sinks: acknowledged by the receiver). Only then does the pipeline checkpoint.
/// * Returning an error means the batch was **not** accepted as a whole. The pipeline may call
///   `deliver` again with the same batch (after a transient error), so a sink may see events
///   twice; a sink must not leave a torn record behind (the file sink truncates a partial
///   write away). Consumers de-duplicate by `source.cursor`.
/// * `deliver` is never called concurrently on one sink.
pub trait Sink {
    /// The configured sink name, for logs and metrics.
    fn name(&self) -> &str;
    /// Delivers one ordered batch; see the trait docs for what `Ok` promises.
    fn deliver(
        &mut self,
        batch: &[ChangeEvent],
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send;
}

/// Every configured sink, dispatched statically.
pub enum AnySink {
    Stdout(stdout::StdoutSink),
    File(file::FileSink),
    Http(http::HttpSink),
    Segment(segment::SegmentSink),
    Nats(nats::NatsSink),
}

impl AnySink {
    /// Builds (and opens/connects) a sink from its config.
    pub async fn build(cfg: &SinkConfig) -> Result<AnySink, SinkError> {
        Ok(match cfg {
            SinkConfig::Stdout(c) => AnySink::Stdout(stdout::StdoutSink::new(c)),
            SinkConfig::File(c) => AnySink::File(file::FileSink::open(c).await?),
            SinkConfig::Http(c) => AnySink::Http(http::HttpSink::build(c).await?),
            SinkConfig::Segment(c) => AnySink::Segment(segment::SegmentSink::build(c).await?),
            SinkConfig::Nats(c) => AnySink::Nats(nats::NatsSink::build(c).await?),
        })
    }
}

impl Sink for AnySink {
    fn name(&self) -> &str {
        match self {
            AnySink::Stdout(s) => s.name(),
            AnySink::File(s) => s.name(),
            AnySink::Http(s) => s.name(),
            AnySink::Segment(s) => s.name(),
            AnySink::Nats(s) => s.name(),
        }
    }

    async fn deliver(&mut self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        match self {
            AnySink::Stdout(s) => s.deliver(batch).await,
            AnySink::File(s) => s.deliver(batch).await,
            AnySink::Http(s) => s.deliver(batch).await,
            AnySink::Segment(s) => s.deliver(batch).await,
            AnySink::Nats(s) => s.deliver(batch).await,
        }
    }
}

/// Encodes a batch as JSON lines into `buf` (cleared first).
pub fn encode_jsonl(batch: &[ChangeEvent], buf: &mut Vec<u8>) {
    buf.clear();
    let now = crate::event::now_ms();
    for e in batch {
        // Writing into a Vec<u8> cannot fail.
        let _ = e.write_json_line(buf, now);
    }
}
