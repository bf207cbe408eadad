//! Metrics and the live status of each source, read by the admin endpoint
//! ([`crate::admin`]).
//!
//! Owns: a small Prometheus registry (counters, gauges and the delivery-latency histogram,
//! rendered in the text exposition format 0.0.4) and, per source, its [`SourceStatus`]:
//! state, the pause switch, the last delivered cursor, the checkpoint and the lag. Does not
//! own: the HTTP server ([`crate::admin`]) or what is measured — the service, pipeline,
//! backfill and sources report through the handles they are given.
//!
//! One [`Metrics`] exists per `logtide run`, in an `Arc`; each source's parts get a
//! [`SourceObs`] (the registry plus that source's status). Sinks get no handle: every
//! delivery runs inside [`Metrics::scope`], and the two things only a sink sees — a request
//! retried, an event written to the dead letters — are reported with [`sink_retry`] and
//! [`sink_dead_letters`], which find the registry of the delivery in flight (a task-local)
//! and do nothing outside one (e.g. a `logtide dead-letters` re-send).
//!
//! The registry is a mutex-guarded map; a pipeline takes the lock once per batch, never
//! across an `.await`.

use crate::position::Position;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

tokio::task_local! {
    static CURRENT: Arc<Metrics>;
}

/// Upper bounds (seconds) of the `logtide_batch_seconds` buckets.
pub const BATCH_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric family: name, type, help. Rendered in this order.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "logtide_events_total",
        "counter",
        "Change events accepted by every sink, by source, table and op (c, u, d, t, r).",
    ),
    (
        "logtide_lag_seconds",
        "gauge",
        "Seconds between now and the commit time of the last delivered event (0 once the source reported it is idle past that event).",
    ),
    (
        "logtide_lag_bytes",
        "gauge",
        "Server WAL/binlog position minus the stored checkpoint, in bytes, at the last check.",
    ),
    (
        "logtide_batch_seconds",
        "histogram",
        "Time one sink took to accept a batch, retries included.",
    ),
    (
        "logtide_retries_total",
        "counter",
        "Delivery attempts repeated after a transient failure, by sink.",
    ),
    (
        "logtide_errors_total",
        "counter",
        "Failures by source and kind (source_transient, source_permanent, backfill_transient, backfill_permanent, pipeline).",
    ),
    (
        "logtide_dead_letters_total",
        "counter",
        "Events a sink wrote to its dead-letter file.",
    ),
    (
        "logtide_backfill_rows_total",
        "counter",
        "Rows delivered by the initial backfill in this process, by table.",
    ),
    (
        "logtide_backfill_tables_skipped_total",
        "counter",
        "Tables the backfill skipped because they were dropped while it ran, by table.",
    ),
    (
        "logtide_backfill_done",
        "gauge",
        "1 once the backfill of the table completed in this process.",
    ),
    (
        "logtide_checkpoint_info",
        "gauge",
        "Always 1; the position label is the last stored checkpoint.",
    ),
    (
        "logtide_checkpoint_timestamp_seconds",
        "gauge",
        "Unix time of the last stored checkpoint.",
    ),
    (
        "logtide_source_paused",
        "gauge",
        "1 while the source is paused through the admin endpoint.",
    ),
    (
        "logtide_source_up",
        "gauge",
        "1 while the source is connected and streaming or backfilling.",
    ),
    (
        "logtide_slot_retained_bytes",
        "gauge",
        "WAL the PostgreSQL replication slot retains (pg_current_wal_lsn() - restart_lsn).",
    ),
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Registry {
    /// `(family, labels) -> value` for counters and stored gauges.
    values: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

#[derive(Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket of [`BATCH_BUCKETS`]; the last slot is `+Inf`.
    counts: [u64; BATCH_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// The registry of one `logtide run` and the status of its sources.
pub struct Metrics {
    registry: Mutex<Registry>,
    sources: BTreeMap<String, Arc<SourceStatus>>,
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

/// A source's view: the run's registry and its own status.
#[derive(Clone)]
pub struct SourceObs {
    pub metrics: Arc<Metrics>,
    pub status: Arc<SourceStatus>,
}

impl SourceObs {
    /// A registry with only this source, for tests and tools outside `logtide run`.
    pub fn detached(source: &str) -> Self {
        let metrics = Metrics::new([(source.to_owned(), "postgres")]);
        let status = metrics
            .source(source)
            .cloned()
            .unwrap_or_else(|| Arc::new(SourceStatus::new(source.to_owned(), "postgres")));
        SourceObs { metrics, status }
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

impl Metrics {
    /// A registry for these `(source name, kind)` pairs.
    pub fn new(sources: impl IntoIterator<Item = (String, &'static str)>) -> Arc<Self> {
        Arc::new(Metrics {
            registry: Mutex::new(Registry::default()),
            sources: sources
                .into_iter()
                .map(|(n, k)| (n.clone(), Arc::new(SourceStatus::new(n, k))))
                .collect(),
        })
    }

    pub fn source(&self, name: &str) -> Option<&Arc<SourceStatus>> {
        self.sources.get(name)
    }

    pub fn sources(&self) -> impl Iterator<Item = &Arc<SourceStatus>> {
        self.sources.values()
    }

    /// The handle of one source (`None`: not registered).
    pub fn obs(self: &Arc<Self>, source: &str) -> Option<SourceObs> {
        Some(SourceObs {
            metrics: self.clone(),
            status: self.source(source)?.clone(),
        })
    }

    /// Runs `f` (a sink delivery) so that [`sink_retry`] and [`sink_dead_letters`] reach
    /// this registry.
    pub async fn scope<F: std::future::Future>(self: &Arc<Self>, f: F) -> F::Output {
        CURRENT.scope(self.clone(), f).await
    }

    fn add(&self, family: &'static str, labels: Labels, n: f64) {
        *lock(&self.registry)
            .values
            .entry((family, labels))
            .or_insert(0.0) += n;
    }

    fn set(&self, family: &'static str, labels: Labels, v: f64) {
        lock(&self.registry).values.insert((family, labels), v);
    }

    /// Counts delivered events: `(table, op) -> n` of one batch.
    pub fn events(&self, source: &str, counts: &BTreeMap<(String, &'static str), u64>) {
        let mut r = lock(&self.registry);
        for ((table, op), n) in counts {
            let labels = vec![
                ("source", source.to_owned()),
                ("table", table.clone()),
                ("op", (*op).to_owned()),
            ];
            *r.values
                .entry(("logtide_events_total", labels))
                .or_insert(0.0) += *n as f64;
        }
    }

    pub fn batch_seconds(&self, sink: &str, secs: f64) {
        let mut r = lock(&self.registry);
        let h = r
            .histograms
            .entry(("logtide_batch_seconds", vec![("sink", sink.to_owned())]))
            .or_default();
        let slot = BATCH_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BATCH_BUCKETS.len());
        if let Some(c) = h.counts.get_mut(slot) {
            *c += 1;
        }
        h.sum += secs;
        h.count += 1;
    }

    pub fn retry(&self, sink: &str) {
        self.add(
            "logtide_retries_total",
            vec![("sink", sink.to_owned())],
            1.0,
        );
    }

    pub fn dead_letters(&self, sink: &str, n: u64) {
        self.add(
            "logtide_dead_letters_total",
            vec![("sink", sink.to_owned())],
            n as f64,
        );
    }

    pub fn error(&self, source: &str, kind: &'static str) {
        self.add(
            "logtide_errors_total",
            vec![("source", source.to_owned()), ("kind", kind.to_owned())],
            1.0,
        );
    }

    pub fn backfill_rows(&self, source: &str, table: &str, n: u64) {
        self.add(
            "logtide_backfill_rows_total",
            vec![("source", source.to_owned()), ("table", table.to_owned())],
            n as f64,
        );
    }

    /// A table was dropped during the backfill and skipped.
    pub fn backfill_skipped(&self, source: &str, table: &str) {
        self.add(
            "logtide_backfill_tables_skipped_total",
            vec![("source", source.to_owned()), ("table", table.to_owned())],
            1.0,
        );
    }

    pub fn backfill_done(&self, source: &str, table: &str, done: bool) {
        self.set(
            "logtide_backfill_done",
            vec![("source", source.to_owned()), ("table", table.to_owned())],
            if done { 1.0 } else { 0.0 },
        );
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut computed: Vec<(&'static str, Labels, f64)> = Vec::new();
        for s in self.sources.values() {
            let snap = s.snapshot();
            let src = || vec![("source", s.name.clone())];
            if let Some(l) = snap.lag_seconds {
                computed.push(("logtide_lag_seconds", src(), l));
            }
            if let Some(b) = snap.lag_bytes {
                computed.push(("logtide_lag_bytes", src(), b as f64));
            }
            if let Some(b) = snap.slot_retained_bytes {
                computed.push(("logtide_slot_retained_bytes", src(), b as f64));
            }
            if let Some(p) = &snap.checkpoint {
                let mut l = src();
                l.push(("position", p.clone()));
                computed.push(("logtide_checkpoint_info", l, 1.0));
            }
            if let Some(ms) = lock(&s.inner).checkpoint_ms {
                computed.push((
                    "logtide_checkpoint_timestamp_seconds",
                    src(),
                    ms as f64 / 1000.0,
                ));
            }
            computed.push((
                "logtide_source_paused",
                src(),
                if snap.paused { 1.0 } else { 0.0 },
            ));
            computed.push((
                "logtide_source_up",
                src(),
                if snap.state.is_up() { 1.0 } else { 0.0 },
            ));
        }
        let r = lock(&self.registry);
        let mut out = String::with_capacity(4096);
        for (family, kind, help) in FAMILIES {
            let stored = r.values.iter().filter(|((f, _), _)| f == family);
            let hists = r.histograms.iter().filter(|((f, _), _)| f == family);
            let comp = computed.iter().filter(|(f, _, _)| f == family);
            let mut header = false;
            let mut head = |out: &mut String| {
                if !header {
                    header = true;
                    let _ = writeln!(out, "# HELP {family} {help}");
                    let _ = writeln!(out, "# TYPE {family} {kind}");
                }
            };
            for ((_, labels), v) in stored {
                head(&mut out);
                sample(&mut out, family, labels, None, *v);
            }
            for (_, labels, v) in comp {
                head(&mut out);
                sample(&mut out, family, labels, None, *v);
            }
            for ((_, labels), h) in hists {
                head(&mut out);
                let bucket = format!("{family}_bucket");
                let mut cum = 0u64;
                for (i, c) in h.counts.iter().enumerate() {
                    cum += c;
                    let le = BATCH_BUCKETS
                        .get(i)
                        .map_or_else(|| "+Inf".to_owned(), |b| format!("{b}"));
                    sample(&mut out, &bucket, labels, Some(&le), cum as f64);
                }
                sample(&mut out, &format!("{family}_sum"), labels, None, h.sum);
                sample(
                    &mut out,
                    &format!("{family}_count"),
                    labels,
                    None,
                    h.count as f64,
                );
            }
        }
        out
    }
}

/// Waits until the pause switch `rx` reads `paused` (at once if it does already).
pub async fn wait_pause(rx: &mut watch::Receiver<bool>, paused: bool) {
    // The guard `wait_for` returns is dropped here, never held across an await.
    let _ = rx.wait_for(|p| *p == paused).await;
}

/// A sink retried a request (reported from inside the sink; see the module docs).
pub fn sink_retry(sink: &str) {
    let _ = CURRENT.try_with(|m| m.retry(sink));
}

/// A sink wrote `n` events to its dead-letter file.
pub fn sink_dead_letters(sink: &str, n: u64) {
    let _ = CURRENT.try_with(|m| m.dead_letters(sink, n));
}

fn sample(out: &mut String, name: &str, labels: &Labels, le: Option<&str>, v: f64) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, val) in labels
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(le.map(|l| ("le", l)))
        {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            for c in val.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        writeln!(out, " {}", v as i64)
    } else {
        writeln!(out, " {v}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_labels_and_histograms() {
        let m = Metrics::new([("app".to_owned(), "postgres")]);
        let mut counts = BTreeMap::new();
        counts.insert(("public.t".to_owned(), "c"), 3);
        m.events("app", &counts);
        m.events("app", &counts);
        m.batch_seconds("out", 0.003);
        m.batch_seconds("out", 100.0);
        m.error("app", "source_transient");
        m.dead_letters("we\"ird\\", 2);
        let text = m.render();
        assert!(
            text.contains("logtide_events_total{source=\"app\",table=\"public.t\",op=\"c\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("logtide_batch_seconds_bucket{sink=\"out\",le=\"0.001\"} 0\n"));
        assert!(text.contains("logtide_batch_seconds_bucket{sink=\"out\",le=\"0.005\"} 1\n"));
        assert!(text.contains("logtide_batch_seconds_bucket{sink=\"out\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("logtide_batch_seconds_count{sink=\"out\"} 2\n"));
        assert!(text.contains("logtide_dead_letters_total{sink=\"we\\\"ird\\\\\"} 2\n"));
        assert!(text.contains("# TYPE logtide_batch_seconds histogram\n"));
        assert!(text.contains("logtide_source_paused{source=\"app\"} 0\n"));
        // One HELP/TYPE per family.
        assert_eq!(text.matches("# TYPE logtide_events_total ").count(), 1);
    }

    #[test]
    fn pause_switch_and_lag() {
        let m = Metrics::new([("app".to_owned(), "mysql")]);
        let s = m.source("app").expect("registered").clone();
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
    async fn sink_hooks_reach_the_scoped_registry_only() {
        let m = Metrics::new([]);
        sink_retry("x");
        m.scope(async { sink_retry("x") }).await;
        m.scope(async { sink_dead_letters("x", 3) }).await;
        let text = m.render();
        assert!(
            text.contains("logtide_retries_total{sink=\"x\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("logtide_dead_letters_total{sink=\"x\"} 3\n"),
            "{text}"
        );
    }
}
