//! The live state of each source and the controls an operator has over it: what
//! `/sources`, `/health` and `/ready` show ([`crate::admin`]), the pause switch, and the
//! queue of on-demand backfill requests.
//!
//! Owns, per source, its [`SourceStatus`]: state, the pause switch ([`wait_pause`]), the
//! last delivered cursor, the checkpoint, the lag, the last error and the on-demand
//! backfills, plus the [`Reporter`] a running source tells "streaming" through. The service
//! builds one [`StatusBoard`] per `logtide run` and hands each source's parts (pipeline,
//! backfill, lag and retention checks) that source's `Arc<SourceStatus>`; the admin endpoint
//! reads and flips it. Does not own: metrics ([`crate::metrics`] turns a snapshot into
//! gauges at scrape time), the HTTP server ([`crate::admin`]), or what pausing does (the
//! pipeline). Depends on nothing above it (no service, pipeline or sink).
//!
//! Every method takes a lock briefly and never across an `.await`.

use crate::position::Position;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// The status of every source of one `logtide run`, by name.
pub struct StatusBoard {
    sources: BTreeMap<String, Arc<SourceStatus>>,
}

impl StatusBoard {
    /// A board for these `(source name, kind)` pairs.
    pub fn new(sources: impl IntoIterator<Item = (String, &'static str)>) -> Arc<Self> {
        Arc::new(StatusBoard {
            sources: sources
                .into_iter()
                .map(|(n, k)| (n.clone(), Arc::new(SourceStatus::new(n, k))))
                .collect(),
        })
    }

    pub fn source(&self, name: &str) -> Option<&Arc<SourceStatus>> {
        self.sources.get(name)
    }

    /// Every source, in name order.
    pub fn sources(&self) -> impl Iterator<Item = &Arc<SourceStatus>> {
        self.sources.values()
    }
}

/// What a source is doing, as `/sources` and `/ready` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// Not started yet.
    Starting,
    /// Copying existing rows: connected, with the stream's start position fixed.
    Backfilling,
    /// The source task runs but has not reported a live stream yet.
    Connecting,
    /// Connected and streaming.
    Streaming,
    /// Waiting to reconnect after a transient failure.
    Reconnecting,
    /// Stopped by a permanent failure.
    Failed,
    /// Finished (shutdown or a reached bound).
    Stopped,
}

impl SourceState {
    /// Ready: connected and moving data (a paused source still counts).
    pub fn is_up(self) -> bool {
        matches!(self, SourceState::Backfilling | SourceState::Streaming)
    }
}

/// The live status of one source. Cheap to update; every method takes the lock briefly.
pub struct SourceStatus {
    pub name: String,
    /// `postgres`, `mysql` or `query`.
    pub kind: &'static str,
    inner: Mutex<StatusInner>,
    paused: watch::Sender<bool>,
    /// Tables asked for an on-demand backfill, not yet taken by the pipeline.
    backfill_requests: Mutex<Vec<String>>,
    backfill_notify: tokio::sync::Notify,
}

/// An on-demand backfill as `/sources` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnDemandSnapshot {
    pub table: String,
    /// Rows delivered so far.
    pub rows: u64,
    /// `queued`, `running`, `done` or `failed`.
    pub state: &'static str,
    pub error: Option<String>,
}

#[derive(Default)]
struct StatusInner {
    state: Option<SourceState>,
    cursor: Option<String>,
    checkpoint: Option<Position>,
    checkpoint_ms: Option<i64>,
    /// Commit time of the last delivered event, or when the source was last known idle.
    lag_ref_ms: Option<i64>,
    lag_bytes: Option<u64>,
    retained_bytes: Option<u64>,
    error: Option<String>,
    ondemand: Vec<OnDemandSnapshot>,
}

/// What `GET /sources` shows of one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSnapshot {
    pub name: String,
    pub kind: &'static str,
    pub state: SourceState,
    pub paused: bool,
    /// Cursor of the last event every sink accepted.
    pub cursor: Option<String>,
    /// The last stored checkpoint (`Display` of the position) and its cursor.
    pub checkpoint: Option<String>,
    pub checkpoint_cursor: Option<String>,
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<u64>,
    pub slot_retained_bytes: Option<u64>,
    /// The failure that stopped the source (state `failed`) or the last transient one.
    pub error: Option<String>,
    /// On-demand backfills of this run (`logtide backfill`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backfills: Vec<OnDemandSnapshot>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain numbers behind: keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SourceStatus {
    /// The status of a source outside `logtide run` (tests and one-shot tools): nobody
    /// reads it but the code it is given to.
    pub fn detached(name: &str) -> Arc<Self> {
        Arc::new(SourceStatus::new(name.to_owned(), "postgres"))
    }

    fn new(name: String, kind: &'static str) -> Self {
        SourceStatus {
            name,
            kind,
            inner: Mutex::new(StatusInner::default()),
            paused: watch::Sender::new(false),
            backfill_requests: Mutex::new(Vec::new()),
            backfill_notify: tokio::sync::Notify::new(),
        }
    }

    /// Asks the source's pipeline for an on-demand backfill of `table`.
    pub fn request_backfill(&self, table: String) {
        lock(&self.inner).ondemand.push(OnDemandSnapshot {
            table: table.clone(),
            rows: 0,
            state: "queued",
            error: None,
        });
        lock(&self.backfill_requests).push(table);
        self.backfill_notify.notify_one();
    }

    /// The tables requested since the last call.
    pub fn take_backfill_requests(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.backfill_requests))
    }

    /// Completes when a backfill was requested (at once if one is waiting).
    pub async fn backfill_requested(&self) {
        self.backfill_notify.notified().await
    }

    /// The pipeline's view of its on-demand backfills.
    pub fn set_ondemand(&self, jobs: Vec<OnDemandSnapshot>) {
        lock(&self.inner).ondemand = jobs;
    }

    pub fn state(&self) -> SourceState {
        lock(&self.inner).state.unwrap_or(SourceState::Starting)
    }

    pub fn set_state(&self, s: SourceState) {
        let mut i = lock(&self.inner);
        if s == SourceState::Streaming || s == SourceState::Backfilling {
            i.error = None;
        }
        i.state = Some(s);
    }

    /// Marks the source failed (or, for `transient`, reconnecting) with the error text.
    pub fn set_error(&self, error: String, transient: bool) {
        let mut i = lock(&self.inner);
        i.state = Some(if transient {
            SourceState::Reconnecting
        } else {
            SourceState::Failed
        });
        i.error = Some(error);
    }

    /// Sets the pause switch; returns whether it changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.paused.send_if_modified(|p| {
            let changed = *p != paused;
            *p = paused;
            changed
        })
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// A receiver of the pause switch, for the pipeline and the backfill.
    pub fn pause_watch(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    /// Every sink accepted events up to `cursor`; the last one committed at `commit_ts_ms`.
    pub fn delivered(&self, cursor: String, commit_ts_ms: Option<i64>) {
        let mut i = lock(&self.inner);
        i.cursor = Some(cursor);
        if let Some(ts) = commit_ts_ms {
            i.lag_ref_ms = Some(ts);
        }
    }

    /// The source moved past everything delivered without new events: it is idle, so the
    /// lag restarts from now.
    pub fn idle(&self) {
        lock(&self.inner).lag_ref_ms = Some(crate::event::now_ms());
    }

    pub fn checkpointed(&self, p: &Position) {
        let mut i = lock(&self.inner);
        i.checkpoint = Some(p.clone());
        i.checkpoint_ms = Some(crate::event::now_ms());
    }

    /// The stored checkpoint a (re)started source resumes from, until the pipeline stores
    /// a newer one: the lag checks measure from it (a paused source has no other).
    pub fn resumed_from(&self, p: &Position) {
        let mut i = lock(&self.inner);
        if i.checkpoint.is_none() {
            i.checkpoint = Some(p.clone());
        }
    }

    pub fn checkpoint(&self) -> Option<Position> {
        lock(&self.inner).checkpoint.clone()
    }

    /// When the pipeline last stored a checkpoint (Unix milliseconds; `None` before its
    /// first one in this process).
    pub fn checkpoint_ms(&self) -> Option<i64> {
        lock(&self.inner).checkpoint_ms
    }

    pub fn set_lag_bytes(&self, bytes: Option<u64>) {
        lock(&self.inner).lag_bytes = bytes;
    }

    pub fn set_retained_bytes(&self, bytes: Option<u64>) {
        lock(&self.inner).retained_bytes = bytes;
    }

    pub fn snapshot(&self) -> SourceSnapshot {
        let i = lock(&self.inner);
        let now = crate::event::now_ms();
        SourceSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            state: i.state.unwrap_or(SourceState::Starting),
            paused: self.is_paused(),
            cursor: i.cursor.clone(),
            checkpoint: i.checkpoint.as_ref().map(ToString::to_string),
            checkpoint_cursor: i.checkpoint.as_ref().map(Position::cursor),
            lag_seconds: i
                .lag_ref_ms
                .map(|r| (now.saturating_sub(r)).max(0) as f64 / 1000.0),
            lag_bytes: i.lag_bytes,
            slot_retained_bytes: i.retained_bytes,
            error: i.error.clone(),
            backfills: i.ondemand.clone(),
        }
    }
}

/// What a running source reports to the service: that its stream is live.
#[derive(Clone, Default)]
pub struct Reporter(Option<Arc<SourceStatus>>);

impl Reporter {
    pub fn new(status: Arc<SourceStatus>) -> Self {
        Reporter(Some(status))
    }

    /// Connected and streaming (replication started, binlog dump running, first query run).
    pub fn streaming(&self) {
        if let Some(s) = &self.0 {
            s.set_state(SourceState::Streaming);
        }
    }

    /// Queues an on-demand backfill of `table` (e.g. a table the source just added to its
    /// publication); the pipeline runs it while streaming.
    pub fn request_backfill(&self, table: String) {
        if let Some(s) = &self.0 {
            s.request_backfill(table);
        }
    }
}

/// Waits until the pause switch `rx` reads `paused` (at once if it does already).
pub async fn wait_pause(rx: &mut watch::Receiver<bool>, paused: bool) {
    // The guard `wait_for` returns is dropped here, never held across an await.
    let _ = rx.wait_for(|p| *p == paused).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_switch_and_lag() {
        let board = StatusBoard::new([("app".to_owned(), "mysql")]);
        let s = board.source("app").expect("registered").clone();
        assert!(s.set_paused(true));
        assert!(!s.set_paused(true));
        assert!(s.is_paused());
        let now = crate::event::now_ms();
        s.delivered("c1".into(), Some(now - 5_000));
        let lag = s.snapshot().lag_seconds.expect("lag");
        assert!((4.5..60.0).contains(&lag), "{lag}");
        s.idle();
        assert!(s.snapshot().lag_seconds.expect("lag") < 4.0);
        assert_eq!(s.snapshot().cursor.as_deref(), Some("c1"));
    }

    #[tokio::test]
    async fn backfill_requests_queue_and_wake() {
        let s = SourceStatus::detached("app");
        let waiting = {
            let s = s.clone();
            tokio::spawn(async move { s.backfill_requested().await })
        };
        s.request_backfill("public.t".into());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(s.take_backfill_requests(), vec!["public.t".to_owned()]);
        assert!(s.take_backfill_requests().is_empty());
        assert_eq!(
            s.snapshot().backfills.first().map(|j| j.state),
            Some("queued")
        );
    }
}
