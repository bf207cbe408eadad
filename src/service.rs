//! The service: wires each configured source to its pipeline and sinks, owns every task,
//! reconnects sources after transient failures, and shuts down cleanly on a signal.
//!
//! Each source runs as a pair: the source task (protocol and decoding) and its pipeline
//! (delivery and checkpoint), joined by a bounded channel. When the source fails
//! transiently, the pair is rebuilt and resumes from the stored checkpoint: events still in
//! the old channel are dropped (they were never checkpointed, so the new connection sends
//! them again).
//!
//! Alongside the sources it owns the admin endpoint ([`crate::admin`]), per PostgreSQL
//! source the WAL-retention check ([`crate::source::postgres::retention`]), per MySQL
//! source the binlog lag check ([`crate::source::mysql::lag`]), and the SIGHUP config
//! reload ([`reload_on_sighup`]: applies changed `paused` values, names other changes);
//! all stop with the sources. It keeps each source's state in [`crate::status`] for
//! `/ready` and `/sources`, counts failures by kind ([`crate::metrics`]), and installs the
//! process's metrics recorder when the admin endpoint is enabled.
//!
//! # Supervision: one rule for every source kind
//!
//! A source (PostgreSQL, MySQL, query mode) is in one of three conditions:
//!
//! * **running** (`connecting`, `backfilling`, `streaming`): it delivers.
//! * **retrying** (`reconnecting`): a transient failure ([`ErrorClass::Transient`], decided
//!   in [`crate::source::classify`]); the pair is rebuilt after a backoff
//!   (`[pipeline] reconnect_initial_backoff`, doubling with jitter up to
//!   `reconnect_max_backoff`, back to the start after a connection that lived
//!   [`HEALTHY_AFTER`]) and resumes from the stored checkpoint — forever. Logged at WARN,
//!   shown in `/sources`.
//! * **failed**: a permanent failure. Logged at ERROR with what to fix, `/health` 503,
//!   `/sources` shows the error, `logtide_source_up` 0. With `on_source_failure = "exit"`
//!   (default) the other sources are stopped — each finishes and checkpoints its batch in
//!   flight — and `logtide run` exits 3; with `"keep_running"` they go on.
//!
//! A failure is never a clean stop:
//! * The source's cancellation token means only "the operator asked to stop" (a signal, a
//!   reached bound, another source's failure under `"exit"`). When a source closes its
//!   channel by itself, the service awaits its result *without* cancelling it, so its
//!   error is kept; a source that returns `Ok(())` unasked is [`SourceError::Ended`]
//!   (transient, retried). A source that met a permanent error while being stopped still
//!   reports it.
//! * A panic in a source or its pipeline is a failure of that source (exit 1).
//! * `--until` that was not reached (stopped earlier) is an error (exit 1), never exit 0.
//!
//! Dead connections (a server that stops answering without closing the socket) are
//! detected by the sources themselves within a documented bound and reported as transient
//! errors (see [`crate::source::postgres::dead_after`] and the MySQL binlog read timeout);
//! shutdown itself is bounded in `main` (a task stuck on a dead socket never holds the
//! process).
//!
//! A source with `ssh` connects to its tunnel's local end ([`crate::tunnel`]): the source
//! owns its [`crate::tunnel::Keeper`], which (re)starts ssh before every connection
//! attempt, so a dropped tunnel is retried with the source's backoff; a permanent tunnel
//! failure (host key, refused key) stops the source like a permanent source error.

use crate::backfill::ondemand::OnDemand;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{Config, OnSourceFailure, SourceConfig};
use crate::endpoint::Endpoint;
use crate::error::{Backoff, ErrorChain};
use crate::event::{Connector, SourceInfo};
use crate::pipeline::{Bounds, Finish, Pipeline, PipelineError, RetryPolicy, Stats};
use crate::sink::{AnySink, SinkError};
use crate::source::{self, ErrorClass, SourceContext, SourceError};
use crate::status::{Reporter, SourceState, SourceStatus, StatusBoard};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What can stop the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("source {name} failed")]
    Source {
        name: String,
        #[source]
        source: SourceError,
    },
    #[error("sink setup failed")]
    Sink(#[from] SinkError),
    #[error("pipeline of source {name} failed")]
    Pipeline {
        name: String,
        #[source]
        source: PipelineError,
    },
    #[error("backfill of source {name} failed")]
    Backfill {
        name: String,
        #[source]
        source: crate::backfill::BackfillError,
    },
    #[error(transparent)]
    Tunnel(#[from] crate::tunnel::TunnelError),
    #[error("no source named {0:?} in the config")]
    UnknownSource(String),
    #[error("internal task failed")]
    Join(#[from] tokio::task::JoinError),
    #[error("source {name} crashed (a bug: please report it with the log): {message}")]
    Panicked { name: String, message: String },
    #[error("source {name} stopped before reaching --until {until} (last checkpoint: {reached}): the run is incomplete")]
    UntilNotReached {
        name: String,
        until: String,
        reached: String,
    },
}

impl ServiceError {
    /// The process exit code for this failure: 2 configuration, 3 a source failed
    /// permanently (the message says what to fix), 1 anything else (internal, sink,
    /// checkpoint store, an unreached `--until`).
    pub fn exit_code(&self) -> u8 {
        match self {
            ServiceError::Source { .. } => 3,
            ServiceError::Tunnel(t) if t.is_permanent() => 3,
            ServiceError::Backfill { source, .. } if source.is_source_side() => 3,
            ServiceError::UnknownSource(_) => 2,
            _ => 1,
        }
    }

    /// The source this failure belongs to, if any.
    fn source_name(&self) -> Option<&str> {
        match self {
            ServiceError::Source { name, .. }
            | ServiceError::Pipeline { name, .. }
            | ServiceError::Backfill { name, .. }
            | ServiceError::Panicked { name, .. }
            | ServiceError::UntilNotReached { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Options of one `logtide run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run only this source.
    pub only_source: Option<String>,
    pub bounds: Bounds,
    /// The config file: when set, SIGHUP re-reads it (see [`reload_on_sighup`]).
    pub config_path: Option<std::path::PathBuf>,
}

/// Warns, once per start, about each position in the state directory whose source the
/// config no longer has. A renamed source looks exactly like that: the new name starts as a
/// first run (a new slot or the binlog's current end, a backfill of what is there now), so
/// what changed since the old name's checkpoint, deletes included, is never streamed. A
/// removed PostgreSQL source also leaves its slot behind, holding WAL.
fn warn_orphans(cfg: &Config, store: &CheckpointStore) -> Result<(), CheckpointError> {
    for (name, pos) in store.positions()? {
        if cfg.source(&name).is_some() {
            continue;
        }
        let slot = match &pos {
            crate::position::Position::Postgres(_) => format!(
                "; its PostgreSQL replication slot (by default logtide_{name}) still holds WAL on the server until you drop it: SELECT pg_drop_replication_slot('logtide_{name}')"
            ),
            _ => String::new(),
        };
        tracing::warn!(
            source = %name,
            position = %pos,
            "the state directory has a checkpoint for source {name:?}, which the config no longer defines. If you renamed it, rename it back: a source with a new name starts from scratch and never streams what changed since {name:?} stopped (deletes included). If you removed it on purpose, forget it with `logtide reset --source {name}`{slot}"
        );
    }
    Ok(())
}

/// Runs every selected source until shutdown, a bound, or a permanent failure.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    cancel: CancellationToken,
) -> Result<Vec<(String, Stats)>, ServiceError> {
    let store = CheckpointStore::open(&cfg.state.path)?;
    run_with_store(cfg, store, opts, cancel).await
}

/// [`run`] on an already opened store (a command that changed the store first keeps its
/// handle: sled releases its directory lock only after its background threads let go).
pub async fn run_with_store(
    cfg: Config,
    store: CheckpointStore,
    opts: RunOptions,
    cancel: CancellationToken,
) -> Result<Vec<(String, Stats)>, ServiceError> {
    let selected: Vec<SourceConfig> = match &opts.only_source {
        Some(n) => vec![cfg
            .source(n)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownSource(n.clone()))?],
        None => cfg.sources.clone(),
    };
    if opts.only_source.is_none() {
        warn_orphans(&cfg, &store)?;
    }
    // Sources behind an SSH tunnel connect to its local end (ports picked now, ssh started
    // by each source before it connects).
    let mut keepers = std::collections::HashMap::new();
    for s in &selected {
        if let Some(k) = crate::tunnel::Keeper::for_source(s)? {
            keepers.insert(s.name().to_owned(), k);
        }
    }
    let endpoint = |s: &SourceConfig| {
        keepers
            .get(s.name())
            .map_or_else(|| s.endpoint(), crate::tunnel::Keeper::endpoint)
    };
    let board = StatusBoard::new(selected.iter().map(|s| {
        let kind = match s {
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mysql(_) => "mysql",
            SourceConfig::Query(_) => "query",
        };
        (s.name().to_owned(), kind)
    }));
    for s in selected.iter().filter(|s| s.paused()) {
        if let Some(status) = board.source(s.name()) {
            status.set_paused(true);
            tracing::info!(source = %s.name(), "starting paused (paused = true in the config)");
        }
    }
    // The admin endpoint and the WAL checks: owned here, stopped when the sources are done.
    let aux_cancel = cancel.child_token();
    let mut aux = JoinSet::new();
    if cfg.admin.enabled {
        match cfg.admin.listen_addr() {
            Ok(addr) => match crate::admin::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(listen = %addr, "admin endpoint listening (/metrics, /health, /ready, /sources)");
                    let recorded = crate::metrics::install();
                    aux.spawn(crate::admin::serve(
                        listener,
                        board.clone(),
                        recorded.clone(),
                        aux_cancel.clone(),
                    ));
                    aux.spawn(metrics_upkeep(recorded, aux_cancel.clone()));
                }
                // Capture goes on without the endpoint: losing metrics must not stop data.
                Err(error) => {
                    tracing::error!(listen = %addr, %error, "cannot start the admin endpoint; streaming continues without it: free the port, or set [admin] listen to another address or enabled = false")
                }
            },
            Err(problem) => tracing::error!(%problem, "admin.listen"),
        }
    }
    for scfg in &selected {
        if let (SourceConfig::Postgres(pg), Some(status)) = (scfg, board.source(scfg.name())) {
            aux.spawn(crate::source::postgres::retention::watch(
                pg.clone(),
                endpoint(scfg),
                cfg.admin.wal_check_interval,
                cfg.admin.wal_retention_warn_mb,
                status.clone(),
                aux_cancel.clone(),
            ));
        }
        if let (SourceConfig::Mysql(my), Some(status)) = (scfg, board.source(scfg.name())) {
            aux.spawn(crate::source::mysql::lag::watch(
                my.clone(),
                endpoint(scfg),
                cfg.admin.wal_check_interval,
                status.clone(),
                aux_cancel.clone(),
            ));
        }
    }
    if let Some(path) = &opts.config_path {
        aux.spawn(reload_on_sighup(
            path.clone(),
            cfg.clone(),
            board.clone(),
            aux_cancel.clone(),
        ));
    }
    let result = run_sources(&cfg, selected, keepers, &opts, &store, &board, &cancel).await;
    aux_cancel.cancel();
    while aux.join_next().await.is_some() {}
    result
}

async fn run_sources(
    cfg: &Config,
    selected: Vec<SourceConfig>,
    mut keepers: std::collections::HashMap<String, crate::tunnel::Keeper>,
    opts: &RunOptions,
    store: &CheckpointStore,
    board: &StatusBoard,
    cancel: &CancellationToken,
) -> Result<Vec<(String, Stats)>, ServiceError> {
    let mut tasks = JoinSet::new();
    let mut names = std::collections::HashMap::new();
    for scfg in selected {
        let Some(status) = board.source(scfg.name()).cloned() else {
            return Err(ServiceError::UnknownSource(scfg.name().to_owned()));
        };
        let mut sinks = Vec::new();
        for k in &cfg.sinks {
            if k.sources().is_empty() || k.sources().iter().any(|s| s == scfg.name()) {
                sinks.push(AnySink::build(k).await?);
            }
        }
        let name = scfg.name().to_owned();
        let tunnel = keepers.remove(scfg.name());
        let pair = SourcePair {
            at: tunnel
                .as_ref()
                .map_or_else(|| scfg.endpoint(), crate::tunnel::Keeper::endpoint),
            tunnel,
            cfg: scfg,
            sinks,
            store: store.clone(),
            bounds: opts.bounds.clone(),
            max_batch_events: cfg.pipeline.max_batch_events,
            channel_capacity: cfg.pipeline.channel_capacity,
            cancel: cancel.child_token(),
            status,
            // One per source, each with its own jitter: sources that fail together (one
            // server down) do not reconnect in lockstep.
            backoff: Backoff::new(
                cfg.pipeline.reconnect_initial_backoff,
                cfg.pipeline.reconnect_max_backoff,
            ),
            bound_reached: false,
        };
        let id = tasks.spawn(pair.run()).id();
        names.insert(id, name);
    }
    let keep_running = cfg.pipeline.on_source_failure == OnSourceFailure::KeepRunning;
    let mut results = Vec::new();
    let mut first_failure: Option<ServiceError> = None;
    while let Some(joined) = tasks.join_next_with_id().await {
        let failure = match joined {
            Ok((_, Ok((name, stats, reached)))) => {
                if let (Some(until), false) = (&opts.bounds.until, reached) {
                    let e = ServiceError::UntilNotReached {
                        reached: stats
                            .last_checkpoint
                            .as_ref()
                            .map_or_else(|| "none".to_owned(), ToString::to_string),
                        name,
                        until: until.to_string(),
                    };
                    tracing::error!(error = %ErrorChain(&e), "run incomplete");
                    first_failure.get_or_insert(e);
                } else {
                    results.push((name, stats));
                }
                continue;
            }
            Ok((_, Err(e))) => e,
            // A panic in a pair (pipeline or sink code): that source failed.
            Err(join) => {
                let name = names.get(&join.id()).cloned().unwrap_or_default();
                if let Some(st) = board.source(&name) {
                    st.set_error(format!("crashed: {}", panic_message(&join)), false);
                }
                crate::metrics::error(&name, "panic");
                ServiceError::Panicked {
                    message: panic_message(&join),
                    name,
                }
            }
        };
        let name = failure.source_name().unwrap_or("?").to_owned();
        if keep_running && !cancel.is_cancelled() {
            tracing::error!(source = %name, error = %ErrorChain(&failure), "source failed; the other sources keep running (on_source_failure = \"keep_running\"): /health answers 503 until the cause is fixed and logtide restarted");
        } else if !cancel.is_cancelled() {
            tracing::error!(source = %name, error = %ErrorChain(&failure), "source failed; stopping the other sources after their checkpoint (on_source_failure = \"exit\")");
            cancel.cancel();
        }
        first_failure.get_or_insert(failure);
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// The text of a panic (or why the task ended otherwise).
fn panic_message(e: &tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "the task was cancelled".into();
    }
    e.to_string()
}

/// A connection that lived this long was healthy: the next failure waits
/// `reconnect_initial_backoff` again.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

struct SourcePair {
    cfg: SourceConfig,
    sinks: Vec<AnySink>,
    store: CheckpointStore,
    bounds: Bounds,
    max_batch_events: usize,
    channel_capacity: usize,
    /// Cancelled only when the operator asked to stop (or another source's permanent
    /// failure stops the process).
    cancel: CancellationToken,
    status: Arc<SourceStatus>,
    /// Where the source connects: `cfg`'s `host:port`, or its tunnel's local end.
    at: Endpoint,
    /// The source's SSH tunnel, if it has one.
    tunnel: Option<crate::tunnel::Keeper>,
    backoff: Backoff,
    /// A bound (`--until`, `--max-events`) was reached.
    bound_reached: bool,
}

/// How one connection of a source ended.
enum Ended {
    /// The operator asked to stop, or a bound was reached.
    Stopped,
    /// A failure: transient ones are retried.
    Failed(SourceError),
}

impl SourcePair {
    /// Runs the source until the operator stops it, a bound is reached, or a permanent
    /// failure; returns its name, counters and whether a bound was reached.
    async fn run(mut self) -> Result<(String, Stats, bool), ServiceError> {
        let name = self.cfg.name().to_owned();
        let mut total = Stats::default();
        let r = Box::pin(self.run_inner(&mut total)).await;
        let status = &self.status;
        match r {
            Ok(()) => {
                status.set_state(SourceState::Stopped);
                tracing::info!(source = %name, events = total.events, "source stopped");
                Ok((name, total, self.bound_reached))
            }
            Err(e) => {
                // Failed is final: /health answers 503 and /sources shows the error.
                if status.state() != SourceState::Failed {
                    status.set_error(ErrorChain(&e).to_string(), false);
                }
                Err(e)
            }
        }
    }

    /// A pipeline for this source's sinks (taken from `self` until it is done).
    fn pipeline(
        &mut self,
        rx: mpsc::Receiver<source::SourceMessage>,
        checkpointed: watch::Sender<Option<crate::position::Position>>,
        bounds: Bounds,
        ondemand: Option<OnDemand>,
    ) -> Pipeline {
        Pipeline {
            source: self.cfg.name().to_owned(),
            rx,
            sinks: std::mem::take(&mut self.sinks),
            store: self.store.clone(),
            checkpointed,
            bounds,
            max_batch_events: self.max_batch_events,
            retry: RetryPolicy::default(),
            cancel: self.cancel.clone(),
            status: self.status.clone(),
            ondemand,
        }
    }

    /// Takes in how a pipeline ended. A delivery failure is final (the sink named in the
    /// error needs fixing); otherwise its counters join `total`, and `--max-events` counts
    /// across pipelines (backfill, then each reconnect): the next one delivers the rest.
    /// Returns whether a bound ended the run.
    fn tally(
        &mut self,
        outcome: Result<(Finish, Stats), PipelineError>,
        total: &mut Stats,
    ) -> Result<bool, PipelineError> {
        let (finish, stats) = match outcome {
            Ok(r) => r,
            Err(e) => {
                let name = self.cfg.name();
                crate::metrics::error(name, "pipeline");
                self.status.set_error(ErrorChain(&e).to_string(), false);
                tracing::error!(source = %name, error = %ErrorChain(&e), "delivery failed permanently: fix the sink named here and restart logtide");
                return Err(e);
            }
        };
        total.events += stats.events;
        total.batches += stats.batches;
        total.checkpoints += stats.checkpoints;
        if stats.last_checkpoint.is_some() {
            total.last_checkpoint = stats.last_checkpoint;
        }
        let mut over = finish == Finish::BoundReached;
        if let Some(m) = self.bounds.max_events.as_mut() {
            *m = m.saturating_sub(stats.events);
            over |= *m == 0;
        }
        if over {
            self.bound_reached = true;
        }
        Ok(over)
    }

    async fn run_inner(&mut self, total: &mut Stats) -> Result<(), ServiceError> {
        let name = self.cfg.name().to_owned();
        let info = Arc::new(SourceInfo {
            connector: match self.cfg {
                SourceConfig::Postgres(_) => Connector::Postgres,
                SourceConfig::Mysql(_) => Connector::Mysql,
                SourceConfig::Query(_) => Connector::Query,
            },
            name: name.clone(),
        });
        let filter = Arc::new(self.cfg.filter());
        let status = self.status.clone();
        // The initial backfill runs before streaming, retried like the source on failure.
        loop {
            // The backfill says `Backfilling` once connected with its start fixed.
            status.set_state(SourceState::Connecting);
            if !self.tunnel_up().await? {
                return Ok(());
            }
            let started = Instant::now();
            // The reader sends its chunks to a pipeline of their own (the stream's has not
            // started): the same delivery, retries, bounds and pause as the stream.
            let (tx, rx) = mpsc::channel(2);
            let read_cancel = self.cancel.child_token();
            let bounds = Bounds {
                until: None,
                max_events: self.bounds.max_events,
            };
            let mut pipeline = self.pipeline(rx, watch::channel(None).0, bounds, None);
            let read = crate::backfill::run_initial(
                &self.cfg,
                &self.at,
                &info,
                &filter,
                &self.store,
                tx,
                &read_cancel,
                &self.status,
            );
            let deliver = async {
                let outcome = pipeline.run().await;
                // A pipeline that stopped early takes no more chunks: the read stops too.
                read_cancel.cancel();
                outcome
            };
            let (read, outcome) = tokio::join!(read, deliver);
            self.sinks = std::mem::take(&mut pipeline.sinks);
            drop(pipeline);
            let over = self.tally(outcome, total);
            if over.map_err(|source| ServiceError::Pipeline {
                name: name.clone(),
                source,
            })? {
                return Ok(());
            }
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            match read {
                Ok(crate::backfill::Read::Nothing) => break,
                Ok(crate::backfill::Read::All) => {
                    crate::backfill::finished(&self.store, &name)
                        .await
                        .map_err(|e| ServiceError::Backfill {
                            name: name.clone(),
                            source: e.into(),
                        })?;
                    break;
                }
                // Not cancelled and no bound: the pipeline ended because the channel
                // closed, which happens only after the read returned.
                Ok(crate::backfill::Read::Stopped) => return Ok(()),
                Err(e) if backfill_transient(&e) => {
                    if started.elapsed() >= HEALTHY_AFTER {
                        self.backoff.reset();
                    }
                    crate::metrics::error(&name, "backfill_transient");
                    status.set_error(ErrorChain(&e).to_string(), true);
                    let wait = self.backoff.next_wait();
                    tracing::warn!(source = %name, error = %ErrorChain(&e), retry_in_ms = wait.as_millis() as u64, "backfill failed, retrying");
                    if !self.sleep(wait).await {
                        return Ok(());
                    }
                }
                Err(e) => {
                    crate::metrics::error(&name, "backfill_permanent");
                    status.set_error(ErrorChain(&e).to_string(), false);
                    tracing::error!(source = %name, error = %ErrorChain(&e), "backfill failed permanently: fix the cause named here and restart logtide");
                    return Err(ServiceError::Backfill { name, source: e });
                }
            }
        }
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        let mut ondemand = OnDemand::load(&self.store, &self.cfg, &self.at, &info, &filter)?;
        loop {
            if !self.tunnel_up().await? {
                return Ok(());
            }
            let resume = self.store.load(&name)?;
            tracing::info!(source = %name, resume = ?resume.as_ref().map(ToString::to_string), "starting source");
            if let Some(p) = &resume {
                status.resumed_from(p);
            }
            let (tx, rx) = mpsc::channel(self.channel_capacity);
            let (wtx, wrx) = watch::channel(resume.clone());
            let src_cancel = self.cancel.child_token();
            let ctx = SourceContext {
                tx,
                checkpointed: wrx,
                resume_from: resume,
                filter: filter.clone(),
                cancel: src_cancel.clone(),
                report: Reporter::new(status.clone()),
                store: Some(self.store.clone()),
            };
            status.set_state(SourceState::Connecting);
            let mut pipeline = self.pipeline(rx, wtx, self.bounds.clone(), ondemand.take());
            let started = Instant::now();
            let mut src_task = JoinSet::new();
            let cfg = self.cfg.clone();
            let at = self.at.clone();
            let info2 = info.clone();
            src_task.spawn(async move { source::run(&cfg, &at, info2, ctx).await });
            let outcome = pipeline.run().await;
            self.sinks = std::mem::take(&mut pipeline.sinks);
            ondemand = pipeline.ondemand.take();
            drop(pipeline);
            let ended = self
                .collect_source(&mut src_task, &src_cancel, &outcome)
                .await;
            let over = self.tally(outcome, total);
            if over.map_err(|source| ServiceError::Pipeline {
                name: name.clone(),
                source,
            })? {
                return Ok(());
            }
            let e = match ended {
                Ok(Ended::Stopped) => return Ok(()),
                Ok(Ended::Failed(e)) => e,
                Err(panic) => return Err(panic),
            };
            if e.class() == ErrorClass::Transient {
                if started.elapsed() >= HEALTHY_AFTER {
                    self.backoff.reset();
                }
                crate::metrics::error(&name, "source_transient");
                status.set_error(ErrorChain(&e).to_string(), true);
                let wait = self.backoff.next_wait();
                tracing::warn!(source = %name, error = %ErrorChain(&e), retry_in_ms = wait.as_millis() as u64, "source failed, reconnecting from the last checkpoint");
                if !self.sleep(wait).await {
                    return Ok(());
                }
            } else {
                crate::metrics::error(&name, "source_permanent");
                status.set_error(ErrorChain(&e).to_string(), false);
                tracing::error!(source = %name, error = %ErrorChain(&e), "source failed permanently: fix the cause named here and restart logtide");
                return Err(ServiceError::Source { name, source: e });
            }
        }
    }

    /// Collects the source task after its pipeline returned. The source is cancelled only
    /// when that is what happened (shutdown, a bound, a failed pipeline); when the source
    /// closed its channel by itself, its own result is awaited uncancelled, so an error it
    /// met keeps its error, and a plain return is [`SourceError::Ended`]. A panic in the
    /// source is a failure of the source.
    async fn collect_source(
        &self,
        src_task: &mut JoinSet<Result<(), SourceError>>,
        src_cancel: &CancellationToken,
        outcome: &Result<(Finish, Stats), PipelineError>,
    ) -> Result<Ended, ServiceError> {
        let ended_by_source = matches!(outcome, Ok((Finish::SourceEnded, _)));
        if !ended_by_source {
            src_cancel.cancel();
        }
        let joined = if ended_by_source {
            tokio::select! {
                biased;
                r = src_task.join_next() => r,
                // Shutdown while waiting: now the source is asked to stop.
                _ = self.cancel.cancelled() => {
                    src_cancel.cancel();
                    src_task.join_next().await
                }
            }
        } else {
            src_task.join_next().await
        };
        let name = self.cfg.name();
        let asked_to_stop = !ended_by_source || self.cancel.is_cancelled();
        match joined {
            None | Some(Ok(Ok(()))) if asked_to_stop => Ok(Ended::Stopped),
            None | Some(Ok(Ok(()))) => Ok(Ended::Failed(SourceError::Ended)),
            // A stopped source returns `Ok(())` (the `Source` contract): an error is real.
            Some(Ok(Err(e))) => {
                if asked_to_stop && e.class() == ErrorClass::Transient {
                    // Lost the connection while being stopped: retrying is moot, but the
                    // error is not hidden.
                    tracing::warn!(source = %name, error = %ErrorChain(&e), "source failed while stopping");
                    return Ok(Ended::Stopped);
                }
                Ok(Ended::Failed(e))
            }
            Some(Err(join)) => {
                crate::metrics::error(name, "panic");
                let message = panic_message(&join);
                tracing::error!(source = %name, error = %message, "source crashed");
                Err(ServiceError::Panicked {
                    name: name.to_owned(),
                    message,
                })
            }
        }
    }

    /// Waits `d` (a [`Backoff`] wait, jitter included) before the next attempt; `false` when
    /// the operator asked to stop meanwhile.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Brings the source's SSH tunnel up (restarting a dead ssh), retrying transient
    /// failures with the source's backoff. `Ok(false)`: cancelled while waiting.
    async fn tunnel_up(&mut self) -> Result<bool, ServiceError> {
        if self.tunnel.is_none() {
            return Ok(true);
        }
        let name = self.cfg.name().to_owned();
        loop {
            let Some(keeper) = self.tunnel.as_mut() else {
                return Ok(true);
            };
            let up = tokio::select! {
                _ = self.cancel.cancelled() => return Ok(false),
                r = keeper.ensure() => r,
            };
            match up {
                Ok(()) => return Ok(true),
                Err(e) if !e.is_permanent() => {
                    crate::metrics::error(&name, "tunnel_transient");
                    self.status.set_error(ErrorChain(&e).to_string(), true);
                    let wait = self.backoff.next_wait();
                    tracing::warn!(source = %name, error = %ErrorChain(&e), retry_in_ms = wait.as_millis() as u64, "ssh tunnel failed, retrying");
                    if !self.sleep(wait).await {
                        return Ok(false);
                    }
                }
                Err(e) => {
                    crate::metrics::error(&name, "tunnel_permanent");
                    self.status.set_error(ErrorChain(&e).to_string(), false);
                    tracing::error!(source = %name, error = %ErrorChain(&e), "ssh tunnel failed permanently: fix the cause named here and restart logtide");
                    return Err(ServiceError::Tunnel(e));
                }
            }
        }
    }
}

/// How often recorded histogram samples are folded into their buckets when nobody scrapes
/// `/metrics` (a scrape does it too), so they do not pile up in memory.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(10);

/// Runs the metrics recorder's upkeep until `cancel`.
async fn metrics_upkeep(
    recorded: metrics_exporter_prometheus::PrometheusHandle,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => recorded.run_upkeep(),
        }
    }
}

/// On SIGHUP, re-reads the config file at `path`: changed `paused` values of running
/// sources are applied through their pause switch (the same as the admin endpoint's
/// pause/resume); other changes are named in a warning (they need a restart); an invalid
/// file is reported and the running config kept. Runs until `cancel`.
pub async fn reload_on_sighup(
    path: std::path::PathBuf,
    mut current: Config,
    board: Arc<StatusBoard>,
    cancel: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install the SIGHUP handler: config reload is off");
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            tracing::info!(config = %path.display(), "sighup received, reloading the config");
            match Config::load(&path) {
                Ok(new) => {
                    apply_reload(&current, &new, &board);
                    current = new;
                }
                Err(e) => {
                    tracing::error!(error = %ErrorChain(&e), "the changed config is invalid: fix it and send SIGHUP again; running on with the previous config")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, &mut current, board);
        cancel.cancelled().await;
    }
}

/// Applies the `paused` changes from `old` to `new` to the running sources on `board`;
/// returns the names of the other changed settings (logged: they need a restart).
pub fn apply_reload(old: &Config, new: &Config, board: &StatusBoard) -> Vec<String> {
    let mut restart = Vec::new();
    for n in &new.sources {
        let name = n.name();
        let Some(o) = old.source(name) else {
            restart.push(format!("sources.{name} (added)"));
            continue;
        };
        if o.paused() != n.paused() {
            if let Some(status) = board.source(name) {
                status.set_paused(n.paused());
                tracing::info!(source = %name, paused = n.paused(), "config reload: source {}", if n.paused() { "paused" } else { "resumed" });
            }
        }
        let (mut a, mut b) = (o.clone(), n.clone());
        a.set_paused(false);
        b.set_paused(false);
        if format!("{a:?}") != format!("{b:?}") {
            restart.push(format!("sources.{name}"));
        }
    }
    for o in &old.sources {
        if new.source(o.name()).is_none() {
            restart.push(format!("sources.{} (removed)", o.name()));
        }
    }
    for (section, a, b) in [
        (
            "sinks",
            format!("{:?}", old.sinks),
            format!("{:?}", new.sinks),
        ),
        (
            "pipeline",
            format!("{:?}", old.pipeline),
            format!("{:?}", new.pipeline),
        ),
        (
            "state",
            format!("{:?}", old.state),
            format!("{:?}", new.state),
        ),
        (
            "admin",
            format!("{:?}", old.admin),
            format!("{:?}", new.admin),
        ),
    ] {
        if a != b {
            restart.push(section.to_owned());
        }
    }
    if !restart.is_empty() {
        tracing::warn!(changed = %restart.join(", "), "config reload: these changes apply only after a restart (restart to apply); only `paused` is applied live");
    }
    restart
}

/// Whether a backfill failure may succeed on retry (connection trouble, not SQL errors of
/// ours or a permanent sink failure).
fn backfill_transient(e: &crate::backfill::BackfillError) -> bool {
    e.is_transient()
}

/// Cancels `token` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("sigterm received, finishing the batch in flight"),
            _ = int.recv() => tracing::info!("sigint received, finishing the batch in flight"),
            _ = token.cancelled() => return,
        }
        token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_supervision_rule() {
        let source = ServiceError::Source {
            name: "s".into(),
            source: SourceError::Ended,
        };
        assert_eq!(source.exit_code(), 3);
        let until = ServiceError::UntilNotReached {
            name: "s".into(),
            until: "0/10".into(),
            reached: "none".into(),
        };
        assert_eq!(until.exit_code(), 1);
        let panic = ServiceError::Panicked {
            name: "s".into(),
            message: "boom".into(),
        };
        assert_eq!(panic.exit_code(), 1);
        assert_eq!(ServiceError::UnknownSource("x".into()).exit_code(), 2);
    }
}
