//! `kind = "stdout"`: JSON lines on standard output (logs go to stderr).

use super::{encode_jsonl, Sink, SinkError};
use crate::config::StdoutSinkConfig;
use crate::event::ChangeEvent;
use tokio::io::AsyncWriteExt;

pub struct StdoutSink {
    name: String,
    out: tokio::io::Stdout,
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new(cfg: &StdoutSinkConfig) -> Self {
        StdoutSink {
            name: cfg.name.clone(),
            out: tokio::io::stdout(),
            buf: Vec::with_capacity(1 << 16),
        }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Accepted = written and flushed to the stdout pipe (a pipe has no fsync).
    async fn deliver(&mut self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        encode_jsonl(batch, &mut self.buf);
        let res = async {
            self.out.write_all(&self.buf).await?;
            self.out.flush().await
        }
        .await;
        res.map_err(|e| SinkError::Permanent {
            sink: self.name.clone(),
            what: "cannot write to standard output (closed pipe?)".into(),
            source: Some(Box::new(e)),
        })
    }
}
