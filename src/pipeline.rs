//! The one loop: receive a batch -> deliver to every sink -> checkpoint -> confirm to the
//! source.
//!
//! Owns batching, sink retries and the checkpoint rule; knows no protocol. Rules:
//! * A batch is what is waiting in the channel (up to `max_batch_events`), so latency is one
//!   sink round trip when traffic is light and batches grow under load.
//! * Events inside a transaction may be delivered before its end (a huge transaction streams
//!   through), but only `Boundary` positions are checkpointed, and only after every sink
//!   accepted every event before them.
//! * The checkpoint is stored (flushed) before it is published to the source on the `watch`
//!   channel; the source confirms nothing newer upstream.
//! * Pause (the admin endpoint's switch in [`SourceStatus`](crate::status::SourceStatus)):
//!   between batches, a paused pipeline stores its pending checkpoint (first taking the
//!   boundary of the transaction it delivered last, if the source already sent it; the
//!   same at shutdown) and stops taking messages from the channel. The channel fills and the source stops reading — the same
//!   backpressure as a slow sink, so PostgreSQL keeps getting status updates (see
//!   [`crate::source::postgres`]) and the stored checkpoint stays valid.
//! * Rows read outside the log travel the same way: the initial backfill's reader sends
//!   [`Chunk`]s on the channel, and an on-demand backfill's chunk (read here, between two
//!   transactions, because its snapshot must sit at a delivered boundary — see
//!   [`crate::backfill::ondemand`]) is handed to the same `accept_chunk`. Either way this is
//!   the only place that delivers, retries, counts and stores progress; a chunk's record is
//!   stored only after the sinks accepted its rows, like a checkpoint.

use crate::backfill::ondemand::OnDemand;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::error::Backoff;
use crate::event::ChangeEvent;
use crate::position::Position;
use crate::sink::{AnySink, Sink, SinkError};
use crate::source::{Chunk, SourceMessage};
use crate::status::SourceStatus;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest time a pending checkpoint waits to be stored, and the shortest time between two
/// stores (each one flushes the store to disk).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// How long a run that reached `--max-events` waits for the boundary of the transaction it
/// delivered last.
const BOUNDARY_GRACE: Duration = Duration::from_secs(2);
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Optional bounds for finite runs (replays, benchmarks, demos).
#[derive(Debug, Clone, Default)]
pub struct Bounds {
    /// Stop once everything up to this position is delivered and checkpointed.
    pub until: Option<Position>,
    /// Stop after delivering this many events.
    pub max_events: Option<u64>,
}

/// Why the pipeline stopped without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The source closed its channel (it stopped or failed; the source's result says which).
    SourceEnded,
    /// Shutdown was requested.
    Cancelled,
    /// A bound was reached.
    BoundReached,
}

/// A pipeline failure.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("delivery failed")]
    Sink(#[from] SinkError),
    #[error("checkpoint failed")]
    Checkpoint(#[from] CheckpointError),
}

/// How sink failures are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts after the first one; `None` retries transient failures forever.
    pub max_retries: Option<u32>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: Some(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Counters, for logs and the final summary.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub events: u64,
    pub batches: u64,
    pub checkpoints: u64,
    pub last_checkpoint: Option<Position>,
}

/// One source's pipeline.
pub struct Pipeline {
    pub source: String,
    pub rx: mpsc::Receiver<SourceMessage>,
    pub sinks: Vec<AnySink>,
    pub store: CheckpointStore,
    pub checkpointed: watch::Sender<Option<Position>>,
    pub bounds: Bounds,
    pub max_batch_events: usize,
    pub retry: RetryPolicy,
    pub cancel: CancellationToken,
    /// The source's status and its pause switch.
    pub status: Arc<SourceStatus>,
    /// On-demand backfills, read between transactions ([`crate::backfill::ondemand`]);
    /// `None` for sources without a log (query mode) and finite tools.
    pub ondemand: Option<OnDemand>,
}

/// What woke the pipeline.
enum Wake {
    Messages(usize),
    Chunk,
    Requested,
    Again,
    /// The pending checkpoint is due (the channel went quiet after a batch).
    Store,
}

impl Pipeline {
    /// Runs until the source ends, a bound is reached, or cancellation. On cancellation the
    /// batch in flight is finished and checkpointed first.
    pub async fn run(&mut self) -> Result<(Finish, Stats), PipelineError> {
        let mut stats = Stats::default();
        let mut msgs: Vec<SourceMessage> = Vec::with_capacity(self.max_batch_events);
        let mut events: Vec<ChangeEvent> = Vec::with_capacity(self.max_batch_events);
        if let Some(until) = &self.bounds.until {
            if let Some(ck) = self.checkpointed.borrow().as_ref() {
                if ck.reached(until) {
                    return Ok((Finish::BoundReached, stats));
                }
            }
        }
        let mut pending: Option<Position> = None;
        let mut last_save = Instant::now();
        let mut pause = self.status.pause_watch();
        // The last transaction boundary seen, and whether events after it were delivered:
        // an on-demand backfill chunk is read only at a boundary (see `backfill::ondemand`).
        let mut at: Option<Position> = self.checkpointed.borrow().clone();
        let mut in_tx = false;
        let mut chunk_last = false;
        // A message taken from the channel while looking for a boundary, not yet handled.
        let mut held: Option<SourceMessage> = None;
        loop {
            if self.status.is_paused() {
                if in_tx && self.bounds.until.is_none() {
                    in_tx = !self.take_boundary(&mut held, &mut at, &mut pending);
                }
                self.store_pending(&mut pending, &mut stats).await?;
                match self.wait_resumed().await {
                    Some(true) => {}
                    Some(false) => return Ok((Finish::Cancelled, stats)),
                    None => return Ok((Finish::SourceEnded, stats)),
                }
            }
            if let Some(od) = self.ondemand.as_mut() {
                od.take_requests(&self.store, &self.status).await?;
            }
            // A chunk alternates with batches while messages wait; back to back when idle.
            // Not once the source has ended (its channel closed): the pipeline must return
            // so the source is reconnected, not finish the whole job first.
            let chunk_now = !in_tx
                && !self.rx.is_closed()
                && (!chunk_last || self.rx.is_empty())
                && self
                    .ondemand
                    .as_ref()
                    .is_some_and(|od| od.ready(at.as_ref()));
            // Only a retry time still ahead arms the timer: a past one with no chunk due now
            // (inside a transaction) would win the biased select over the messages forever.
            let retry_at = self
                .ondemand
                .as_ref()
                .and_then(OnDemand::retry_at)
                .filter(|t| *t > Instant::now());
            let listening = self.ondemand.is_some();
            // A pending checkpoint is stored CHECKPOINT_EVERY after the last one at the
            // latest, whether messages keep coming or not.
            let store_at = pending.as_ref().map(|_| last_save + CHECKPOINT_EVERY);
            msgs.clear();
            // A message taken to look for a boundary (pause) goes first.
            if let Some(m) = held.take() {
                msgs.push(m);
            }
            let wake = tokio::select! {
                biased;
                _ = std::future::ready(()), if !msgs.is_empty() => Wake::Messages(msgs.len()),
                _ = self.cancel.cancelled() => {
                    if in_tx && self.bounds.until.is_none() {
                        self.take_boundary(&mut held, &mut at, &mut pending);
                    }
                    self.store_pending(&mut pending, &mut stats).await?;
                    return Ok((Finish::Cancelled, stats));
                }
                // A pause while waiting for messages takes effect before the next batch
                // (`recv_many` is cancel safe).
                _ = crate::status::wait_pause(&mut pause, true) => Wake::Again,
                _ = std::future::ready(()), if chunk_now => Wake::Chunk,
                _ = self.status.backfill_requested(), if listening => Wake::Requested,
                _ = sleep_until(retry_at), if retry_at.is_some() && !chunk_now => Wake::Again,
                _ = sleep_until(store_at), if store_at.is_some() => Wake::Store,
                n = self.rx.recv_many(&mut msgs, self.max_batch_events) => Wake::Messages(n),
            };
            let n = match wake {
                Wake::Messages(n) => n,
                Wake::Requested | Wake::Again => continue,
                Wake::Store => {
                    self.store_pending(&mut pending, &mut stats).await?;
                    last_save = Instant::now();
                    continue;
                }
                Wake::Chunk => {
                    // Everything up to `at` is delivered: store it, then read at it.
                    self.store_pending(&mut pending, &mut stats).await?;
                    last_save = Instant::now();
                    let read = match (self.ondemand.as_mut(), at.as_ref()) {
                        // Boxed: the chunk read's future is large and rarely alive.
                        (Some(od), Some(b)) => {
                            Box::pin(od.next_chunk(b, &self.store, &self.status)).await?
                        }
                        _ => None,
                    };
                    if let Some(chunk) = read {
                        if self.accept_chunk(chunk, &mut stats).await? {
                            return Ok((Finish::BoundReached, stats));
                        }
                        if let Some(od) = self.ondemand.as_mut() {
                            od.accepted(&self.status);
                        }
                    }
                    chunk_last = true;
                    continue;
                }
            };
            chunk_last = false;
            if n == 0 {
                self.store_pending(&mut pending, &mut stats).await?;
                return Ok((Finish::SourceEnded, stats));
            }
            events.clear();
            let mut boundary: Option<Position> = None;
            let mut bound_hit = false;
            for m in msgs.drain(..) {
                match m {
                    SourceMessage::Change(e) => {
                        in_tx = true;
                        if let Some(until) = &self.bounds.until {
                            if e.position.beyond(until) {
                                bound_hit = true;
                                break;
                            }
                        }
                        if let Some(max) = self.bounds.max_events {
                            if stats.events + events.len() as u64 >= max {
                                bound_hit = true;
                                break;
                            }
                        }
                        events.push(e);
                    }
                    SourceMessage::Chunk(c) => {
                        // In order: the changes before it first.
                        self.deliver_events(&mut events, &mut stats).await?;
                        if self.accept_chunk(c, &mut stats).await? {
                            bound_hit = true;
                            break;
                        }
                    }
                    SourceMessage::Boundary(p) => {
                        in_tx = false;
                        let reached = self.bounds.until.as_ref().is_some_and(|u| p.reached(u));
                        boundary = Some(p);
                        if reached {
                            bound_hit = true;
                            break;
                        }
                    }
                }
            }
            if !events.is_empty() {
                self.deliver_events(&mut events, &mut stats).await?;
            } else if boundary.is_some() && self.rx.is_empty() {
                // The source moved past everything delivered and has nothing else: idle.
                self.status.idle();
            }
            if let Some(p) = boundary {
                at = Some(p.clone());
                pending = Some(p);
            }
            let max_hit = self.bounds.max_events.is_some_and(|m| stats.events >= m);
            if max_hit && !bound_hit && in_tx && self.bounds.until.is_none() {
                // `--max-events` fell on an event whose transaction's boundary has not come
                // yet: if it is the transaction's last event, its boundary follows at once,
                // and taking it lets the run's checkpoint cover what it delivered. Anything
                // else (more of the transaction, nothing within the grace) ends the run
                // without it.
                let next = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => None,
                    m = tokio::time::timeout(BOUNDARY_GRACE, self.rx.recv()) => m.ok().flatten(),
                };
                if let Some(SourceMessage::Boundary(p)) = next {
                    at = Some(p.clone());
                    pending = Some(p);
                }
            }
            // The checkpoint is stored at most every CHECKPOINT_EVERY (a store is a flush of
            // the store to disk: per transaction it capped small-transaction workloads), and
            // at the latest CHECKPOINT_EVERY after it became pending (`Wake::Store`). Either
            // way only after the sinks accepted everything before it.
            if bound_hit || max_hit || last_save.elapsed() >= CHECKPOINT_EVERY {
                self.store_pending(&mut pending, &mut stats).await?;
                last_save = Instant::now();
            }
            if bound_hit || max_hit {
                return Ok((Finish::BoundReached, stats));
            }
        }
    }

    /// Before a pause or a shutdown inside a transaction whose events were all delivered:
    /// if the source already sent its boundary, takes it, so the checkpoint covers what was
    /// delivered (otherwise a restart would deliver the transaction again). Looks only at
    /// what is in the channel; the first message that is not a boundary is kept in `held`
    /// for the next batch. Returns whether a boundary was taken.
    fn take_boundary(
        &mut self,
        held: &mut Option<SourceMessage>,
        at: &mut Option<Position>,
        pending: &mut Option<Position>,
    ) -> bool {
        if held.is_some() {
            return false;
        }
        match self.rx.try_recv() {
            Ok(SourceMessage::Boundary(p)) => {
                *at = Some(p.clone());
                *pending = Some(p);
                true
            }
            Ok(m) => {
                *held = Some(m);
                false
            }
            Err(_) => false,
        }
    }

    /// Stores and publishes the pending checkpoint, if any.
    async fn store_pending(
        &mut self,
        pending: &mut Option<Position>,
        stats: &mut Stats,
    ) -> Result<(), PipelineError> {
        if let Some(p) = pending.take() {
            if self.store.save(&self.source, &p).await? {
                stats.checkpoints += 1;
            }
            self.checkpointed.send_replace(Some(p.clone()));
            self.status.checkpointed(&p);
            stats.last_checkpoint = Some(p);
        }
        Ok(())
    }

    async fn deliver_all(&mut self, events: &[ChangeEvent]) -> Result<(), PipelineError> {
        deliver_with_retry(&mut self.sinks, events, &self.retry).await
    }

    /// Delivers the changes gathered so far (if any) as one batch and empties `events`.
    async fn deliver_events(
        &mut self,
        events: &mut Vec<ChangeEvent>,
        stats: &mut Stats,
    ) -> Result<(), PipelineError> {
        if events.is_empty() {
            return Ok(());
        }
        self.deliver_all(events).await?;
        stats.events += events.len() as u64;
        stats.batches += 1;
        self.count(events);
        if let Some(od) = self.ondemand.as_mut() {
            od.note(events);
        }
        events.clear();
        Ok(())
    }

    /// Delivers a chunk of rows read outside the log, then stores its record: the record
    /// follows the same rule as the checkpoint (durable only after the sinks accepted).
    /// Returns whether `max_events` ended the run inside the chunk: then only the rows up
    /// to the bound are delivered and the record is not stored (the chunk is read again
    /// next time).
    async fn accept_chunk(
        &mut self,
        mut c: Chunk,
        stats: &mut Stats,
    ) -> Result<bool, PipelineError> {
        let room = self
            .bounds
            .max_events
            .map(|m| usize::try_from(m.saturating_sub(stats.events)).unwrap_or(usize::MAX));
        let cut = room.is_some_and(|r| c.events.len() > r);
        if let (true, Some(r)) = (cut, room) {
            c.events.truncate(r);
        }
        if c.skipped {
            crate::metrics::backfill_skipped(&self.source, &c.table);
        }
        if !c.events.is_empty() {
            self.deliver_all(&c.events).await?;
            stats.events += c.events.len() as u64;
            stats.batches += 1;
            self.count(&c.events);
        }
        crate::metrics::backfill_rows(&self.source, &c.table, c.events.len() as u64);
        if cut {
            return Ok(true);
        }
        self.store
            .save_backfill(&self.source, &c.key, &c.record)
            .await?;
        crate::metrics::backfill_done(&self.source, &c.table, c.done);
        Ok(false)
    }

    /// Counts an accepted batch and notes its last cursor and commit time.
    fn count(&self, events: &[ChangeEvent]) {
        count_events(&self.status, events);
    }

    /// Waits until resumed (`Some(true)`), cancelled (`Some(false)`) or the source ended
    /// meanwhile (`None`: its connection failed; what it left in the channel is after the
    /// checkpoint and comes again after the reconnect).
    async fn wait_resumed(&self) -> Option<bool> {
        let mut rx = self.status.pause_watch();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tracing::info!(source = %self.source, "paused: not taking events from the source");
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Some(false),
                _ = crate::status::wait_pause(&mut rx, false) => {
                    tracing::info!(source = %self.source, "resumed");
                    return Some(true);
                }
                _ = tick.tick() => {
                    if self.rx.is_closed() {
                        return None;
                    }
                }
            }
        }
    }
}

/// Sleeps until `t` (forever without one; the caller guards the branch).
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Counts accepted events in the metrics (`logtide_events_total`) and notes the last
/// cursor and commit time in the source's status.
fn count_events(status: &SourceStatus, events: &[ChangeEvent]) {
    let counts = tally(events);
    crate::metrics::events(&status.name, &counts);
    if let Some(last) = events.last() {
        let ts = events.iter().rev().find_map(|e| e.commit_ts_ms);
        status.delivered(last.position.cursor(), ts);
    }
}

/// Events per (table, operation). Runs of one table and operation are counted together:
/// the table's name is built once per run, not per event.
fn tally(events: &[ChangeEvent]) -> BTreeMap<(String, &'static str), u64> {
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    let mut rest = events;
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .take_while(|e| Arc::ptr_eq(&e.table, &first.table) && e.op == first.op)
            .count();
        *counts
            .entry((first.table.qualified_name(), first.op.code()))
            .or_insert(0) += run as u64;
        rest = rest.get(run..).unwrap_or_default();
    }
    counts
}

/// Delivers `events` to every sink in turn, retrying transient failures with backoff.
/// Each sink's time to accept the batch goes into `logtide_batch_seconds`, each retry
/// into `logtide_retries_total`.
async fn deliver_with_retry(
    sinks: &mut [AnySink],
    events: &[ChangeEvent],
    retry: &RetryPolicy,
) -> Result<(), PipelineError> {
    for sink in sinks.iter_mut() {
        let mut attempt: u32 = 0;
        let mut backoff = Backoff::new(retry.initial_backoff, retry.max_backoff);
        let started = Instant::now();
        loop {
            match sink.deliver(events).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && retry.max_retries.is_none_or(|m| attempt < m) => {
                    attempt += 1;
                    crate::metrics::retry(sink.name());
                    tracing::warn!(sink = sink.name(), attempt, error = %crate::error::ErrorChain(&e), "delivery failed, retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        crate::metrics::batch_seconds(sink.name(), started.elapsed().as_secs_f64());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileSinkConfig;
    use crate::event::{Connector, Op, SourceInfo, TableSchema};
    use crate::position::{Lsn, PgPosition};
    use crate::sink::file::FileSink;
    use crate::value::Value;
    use std::sync::Arc;

    fn ev(lsn: u64, ord: u64) -> SourceMessage {
        let t = Arc::new(TableSchema {
            source: Arc::new(SourceInfo {
                connector: Connector::Postgres,
                name: "s".into(),
            }),
            db: "d".into(),
            schema: "public".into(),
            name: "t".into(),
            columns: vec!["id".into()],
            key: vec![0],
            encoded: Default::default(),
        });
        SourceMessage::Change(ChangeEvent {
            op: Op::Create,
            table: t,
            before: None,
            after: Some(vec![Some(Value::Int(ord as i64))]),
            position: Position::Postgres(PgPosition {
                lsn: Lsn(lsn),
                ordinal: ord,
            }),
            txid: None,
            commit_ts_ms: None,
        })
    }

    #[test]
    fn tally_counts_per_table_and_operation_across_runs() {
        let change = |m: SourceMessage| match m {
            SourceMessage::Change(e) => e,
            _ => unreachable!("ev builds changes"),
        };
        let t = change(ev(1, 1));
        let mut u = change(ev(1, 2));
        u.table = Arc::new(TableSchema {
            name: "u".into(),
            ..(*u.table).clone()
        });
        let with = |base: &ChangeEvent, op: Op| ChangeEvent { op, ..base.clone() };
        // t c, t c, u c, t u, t c, u c, and a t c with its own (equal) schema value.
        let events = vec![
            with(&t, Op::Create),
            with(&t, Op::Create),
            with(&u, Op::Create),
            with(&t, Op::Update),
            with(&t, Op::Create),
            with(&u, Op::Create),
            change(ev(2, 1)),
        ];
        let got = tally(&events);
        let want: BTreeMap<(String, &'static str), u64> = [
            (("public.t".to_string(), "c"), 4),
            (("public.t".to_string(), "u"), 1),
            (("public.u".to_string(), "c"), 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
        assert!(tally(&[]).is_empty());
    }

    fn ck(lsn: u64) -> SourceMessage {
        SourceMessage::Boundary(Position::Postgres(PgPosition::checkpoint(Lsn(lsn))))
    }

    async fn setup(
        bounds: Bounds,
    ) -> (
        Pipeline,
        mpsc::Sender<SourceMessage>,
        watch::Receiver<Option<Position>>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::open(&dir.path().join("state")).expect("store");
        let sink = FileSink::open(&FileSinkConfig {
            name: "f".into(),
            path: dir.path().join("out.jsonl"),
            fsync: true,
            sources: vec![],
        })
        .await
        .expect("sink");
        let (tx, rx) = mpsc::channel(64);
        let (wtx, wrx) = watch::channel(None);
        let p = Pipeline {
            source: "s".into(),
            rx,
            sinks: vec![AnySink::File(sink)],
            store,
            checkpointed: wtx,
            bounds,
            max_batch_events: 3,
            retry: RetryPolicy::default(),
            cancel: CancellationToken::new(),
            status: SourceStatus::detached("s"),
            ondemand: None,
        };
        (p, tx, wrx, dir)
    }

    fn lines(dir: &tempfile::TempDir) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path().join("out.jsonl"))
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[tokio::test]
    async fn checkpoints_only_boundaries_after_delivery() {
        let (mut p, tx, wrx, dir) = setup(Bounds::default()).await;
        let store = p.store.clone();
        for m in [ev(0x10, 1), ev(0x10, 2), ck(0x20), ev(0x30, 1), ev(0x30, 2)] {
            tx.send(m).await.expect("send");
        }
        drop(tx);
        let (finish, stats) = p.run().await.expect("run");
        assert_eq!(finish, Finish::SourceEnded);
        assert_eq!(stats.events, 4);
        // The open transaction at 0x30 was delivered but not checkpointed.
        let expect = Some(Position::Postgres(PgPosition::checkpoint(Lsn(0x20))));
        assert_eq!(store.load("s").expect("load"), expect);
        assert_eq!(*wrx.borrow(), expect);
        let l = lines(&dir);
        assert_eq!(l.len(), 4);
        let cursors: Vec<&str> = l
            .iter()
            .map(|j| j["source"]["cursor"].as_str().expect("cursor"))
            .collect();
        let mut sorted = cursors.clone();
        sorted.sort();
        assert_eq!(cursors, sorted);
    }

    #[tokio::test]
    async fn max_events_stops_exactly() {
        let (mut p, tx, _wrx, dir) = setup(Bounds {
            until: None,
            max_events: Some(2),
        })
        .await;
        for m in [ev(0x10, 1), ck(0x20), ev(0x30, 1), ev(0x30, 2), ck(0x40)] {
            tx.send(m).await.expect("send");
        }
        let (finish, stats) = p.run().await.expect("run");
        assert_eq!(finish, Finish::BoundReached);
        assert_eq!(stats.events, 2);
        assert_eq!(lines(&dir).len(), 2);
        // Only the complete transaction before the cut is checkpointed.
        assert_eq!(
            stats.last_checkpoint,
            Some(Position::Postgres(PgPosition::checkpoint(Lsn(0x20))))
        );
    }

    #[tokio::test]
    async fn until_stops_at_position() {
        let until = Position::Postgres(PgPosition::checkpoint(Lsn(0x20)));
        let (mut p, tx, _wrx, dir) = setup(Bounds {
            until: Some(until),
            max_events: None,
        })
        .await;
        for m in [ev(0x10, 1), ev(0x10, 2), ck(0x20), ev(0x30, 1)] {
            tx.send(m).await.expect("send");
        }
        let (finish, _) = p.run().await.expect("run");
        assert_eq!(finish, Finish::BoundReached);
        assert_eq!(lines(&dir).len(), 2);
    }

    fn chunk(table: &str, lsns: &[u64], last: u64) -> SourceMessage {
        let events = lsns
            .iter()
            .map(|&l| match ev(l, 1) {
                SourceMessage::Change(e) => e,
                _ => unreachable!(),
            })
            .collect();
        SourceMessage::Chunk(Chunk {
            table: table.into(),
            events,
            key: table.into(),
            record: serde_json::json!({ "last": last }),
            done: false,
            skipped: false,
        })
    }

    #[tokio::test]
    async fn a_chunk_is_delivered_in_order_then_its_record_stored() {
        let (mut p, tx, _wrx, dir) = setup(Bounds::default()).await;
        let store = p.store.clone();
        for m in [ev(0x10, 1), chunk("t", &[0x11, 0x12], 7), ev(0x13, 1)] {
            tx.send(m).await.expect("send");
        }
        drop(tx);
        let (finish, stats) = p.run().await.expect("run");
        assert_eq!(finish, Finish::SourceEnded);
        assert_eq!(stats.events, 4);
        // In the order sent: the change before the chunk, its rows, the change after.
        let lsns: Vec<String> = lines(&dir)
            .iter()
            .map(|j| j["source"]["lsn"].to_string())
            .collect();
        let want: Vec<String> = [0x10u64, 0x11, 0x12, 0x13]
            .iter()
            .map(|l| format!("\"0/{l:X}\""))
            .collect();
        assert_eq!(lsns, want);
        let rec: Option<serde_json::Value> = store.load_backfill("s", "t").expect("load");
        assert_eq!(rec, Some(serde_json::json!({ "last": 7 })));
    }

    #[tokio::test]
    async fn a_bound_inside_a_chunk_delivers_up_to_it_and_stores_no_record() {
        let (mut p, tx, _wrx, dir) = setup(Bounds {
            until: None,
            max_events: Some(3),
        })
        .await;
        let store = p.store.clone();
        for m in [chunk("t", &[0x11, 0x12], 1), chunk("t", &[0x13, 0x14], 2)] {
            tx.send(m).await.expect("send");
        }
        let (finish, stats) = p.run().await.expect("run");
        assert_eq!(finish, Finish::BoundReached);
        assert_eq!(stats.events, 3);
        assert_eq!(lines(&dir).len(), 3);
        // The first chunk is accepted whole; the second only in part: read again next time.
        let rec: Option<serde_json::Value> = store.load_backfill("s", "t").expect("load");
        assert_eq!(rec, Some(serde_json::json!({ "last": 1 })));
    }

    #[tokio::test]
    async fn a_boundary_already_sent_is_taken_before_a_pause_and_nothing_else() {
        let (mut p, tx, _wrx, _dir) = setup(Bounds::default()).await;
        let (mut held, mut at, mut pending) = (None, None, None);
        // The transaction's boundary waits in the channel: taken.
        tx.send(ck(0x20)).await.expect("send");
        tx.send(ev(0x30, 1)).await.expect("send");
        assert!(p.take_boundary(&mut held, &mut at, &mut pending));
        let want = Some(Position::Postgres(PgPosition::checkpoint(Lsn(0x20))));
        assert_eq!((&at, &pending), (&want, &want));
        assert!(held.is_none());
        // A change comes next: kept for the next batch, not skipped, no boundary taken.
        tx.send(ck(0x40)).await.expect("send");
        assert!(!p.take_boundary(&mut held, &mut at, &mut pending));
        assert!(matches!(held, Some(SourceMessage::Change(_))));
        // With a message held, nothing more is taken (it would jump over the held one).
        assert!(!p.take_boundary(&mut held, &mut at, &mut pending));
        assert_eq!(pending, want);
        assert_eq!(p.rx.len(), 1);
    }

    #[tokio::test]
    async fn max_events_on_a_transactions_last_event_checkpoints_its_boundary() {
        let (mut p, tx, _wrx, _dir) = setup(Bounds {
            until: None,
            max_events: Some(1),
        })
        .await;
        // One message per batch: the boundary comes after the bound is reached.
        p.max_batch_events = 1;
        for m in [ev(0x10, 1), ck(0x20), ev(0x30, 1)] {
            tx.send(m).await.expect("send");
        }
        let (finish, stats) = p.run().await.expect("run");
        assert_eq!(finish, Finish::BoundReached);
        assert_eq!(stats.events, 1);
        assert_eq!(
            stats.last_checkpoint,
            Some(Position::Postgres(PgPosition::checkpoint(Lsn(0x20))))
        );
    }
}
