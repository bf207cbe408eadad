//! `logtide preview`: the first N events a source would deliver, as JSON lines, with no
//! side effect on the stream's state.
//!
//! The ordinary source ([`crate::source::run`]) is driven exactly as the service drives it,
//! with three differences: the messages go to the given writer instead of a pipeline and
//! sinks; nothing is checkpointed; and the `checkpointed` watch the source confirms from is
//! left empty, so PostgreSQL is sent `flush_lsn = 0/0`, which the server ignores (the slot's
//! `confirmed_flush_lsn` stays put). The stream starts from the stored checkpoint like
//! `run` (or, without one, at the normal start: the slot's position / the current binlog
//! end). There is no backfill. A MySQL preview registers with a server id different from
//! the source's, so a running `logtide run` keeps its binlog connection.

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{Config, SourceConfig};
use crate::event::{Connector, SourceInfo};
use crate::source::{self, SourceContext, SourceError, SourceMessage};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What can stop a preview.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no source named {0:?} in the config")]
    UnknownSource(String),
    #[error("cannot read the stored position (is `logtide run` holding the state directory?)")]
    Checkpoint(#[from] CheckpointError),
    #[error("source {name} failed")]
    Source {
        name: String,
        #[source]
        source: SourceError,
    },
    #[error("cannot write the events")]
    Output(#[from] std::io::Error),
    #[error("the source task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl PreviewError {
    /// Whether the source (server, settings, credentials) is at fault.
    pub fn is_source_side(&self) -> bool {
        matches!(self, PreviewError::Source { .. })
    }
}

/// How much to preview.
#[derive(Debug, Clone, Copy)]
pub struct PreviewOptions {
    pub limit: usize,
    pub timeout: Duration,
}

/// How a preview ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewOutcome {
    pub events: usize,
    /// The timeout passed before `limit` events arrived (not an error).
    pub timed_out: bool,
}

/// Streams up to `opts.limit` events of source `name`, connecting to `at`, into `out`,
/// one JSON line each.
pub async fn preview(
    cfg: &Config,
    name: &str,
    at: &crate::endpoint::Endpoint,
    opts: PreviewOptions,
    out: &mut (dyn Write + Send),
) -> Result<PreviewOutcome, PreviewError> {
    let scfg = cfg
        .source(name)
        .cloned()
        .ok_or_else(|| PreviewError::UnknownSource(name.to_owned()))?;
    // Read the stored position without creating a store where there is none.
    let resume = if cfg.state.path.exists() {
        CheckpointStore::open(&cfg.state.path)?.load(name)?
    } else {
        None
    };
    let scfg = match scfg {
        SourceConfig::Mysql(mut c) => {
            c.server_id = Some(c.server_id() ^ 0x0000_8000);
            SourceConfig::Mysql(c)
        }
        other => other,
    };
    let is_query = matches!(scfg, SourceConfig::Query(_));
    let info = Arc::new(SourceInfo {
        connector: match scfg {
            SourceConfig::Postgres(_) => Connector::Postgres,
            SourceConfig::Mysql(_) => Connector::Mysql,
            SourceConfig::Query(_) => Connector::Query,
        },
        name: name.to_owned(),
    });
    let (tx, mut rx) = mpsc::channel(opts.limit.clamp(1, 1024));
    // Never updated: the source has nothing to confirm.
    let (_checkpointed_tx, checkpointed) = watch::channel(None);
    let cancel = CancellationToken::new();
    let ctx = SourceContext {
        tx,
        checkpointed,
        resume_from: resume,
        filter: Arc::new(scfg.filter()),
        cancel: cancel.clone(),
        // A preview reports to no admin endpoint.
        report: Default::default(),
        store: None,
    };
    let mut tasks = JoinSet::new();
    let (run_cfg, at) = (scfg.clone(), at.clone());
    tasks.spawn(async move { source::run(&run_cfg, &at, info, ctx).await });

    let deadline = tokio::time::sleep(opts.timeout);
    tokio::pin!(deadline);
    let mut outcome = PreviewOutcome {
        events: 0,
        timed_out: false,
    };
    let mut buf = Vec::new();
    while outcome.events < opts.limit {
        tokio::select! {
            _ = &mut deadline => {
                outcome.timed_out = true;
                break;
            }
            m = rx.recv() => match m {
                Some(SourceMessage::Change(ev)) => {
                    buf.clear();
                    ev.write_json_line(&mut buf, crate::event::now_ms())?;
                    out.write_all(&buf)?;
                    out.flush()?;
                    outcome.events += 1;
                }
                // A query-mode run ends with a boundary: that is "the query once".
                Some(SourceMessage::Boundary(_)) if is_query => break,
                // Only the backfill sends chunks, and preview runs no backfill.
                Some(SourceMessage::Boundary(_) | SourceMessage::Chunk(_)) => {}
                // The source stopped (an error, collected below).
                None => break,
            }
        }
    }
    cancel.cancel();
    drop(rx);
    let result = match tokio::time::timeout(Duration::from_secs(15), tasks.join_next()).await {
        Ok(Some(r)) => r?,
        Ok(None) => Ok(()),
        Err(_) => {
            tasks.abort_all();
            Ok(())
        }
    };
    match result {
        Ok(()) => Ok(outcome),
        Err(source) => Err(PreviewError::Source {
            name: name.to_owned(),
            source,
        }),
    }
}
