//! `run` (the service) and `replay` (move a source's stored position, then run).

use super::{load_to_run, open_store, tunneled};
use crate::fail;
use logtide::checkpoint::CheckpointStore;
use logtide::config::Config;
use logtide::pipeline::Bounds;
use logtide::service::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

pub async fn run(
    config: PathBuf,
    source: Option<String>,
    until: Option<String>,
    max_events: Option<u64>,
) -> ExitCode {
    let cfg = match load_to_run(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    run_service(cfg, None, &config, source, until, max_events).await
}

pub async fn replay(
    config: PathBuf,
    source: String,
    from: String,
    until: Option<String>,
    max_events: Option<u64>,
) -> ExitCode {
    let cfg = match load_to_run(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open_store(&cfg, "replay") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let tunnels = match tunneled(&cfg, Some(&source)).await {
        Ok(t) => t,
        Err(code) => return code,
    };
    let Some(at) = cfg.source(&source).map(|s| tunnels.endpoint(s)) else {
        return fail(2, &logtide::replay::ReplayError::UnknownSource(source));
    };
    let prepared = logtide::replay::prepare(&cfg, &at, &store, &source, &from).await;
    drop(tunnels);
    match prepared {
        Ok(r) => tracing::info!(
            source = %source,
            from = %r.from,
            previous = ?r.previous.map(|p| p.to_string()),
            "replaying: stored position moved"
        ),
        Err(e) => return fail(e.exit_code(), &e),
    }
    run_service(cfg, Some(store), &config, Some(source), until, max_events).await
}

/// How long a stop (signal, failed source) may take before the process exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// `run` (and `replay` after moving the position): the service with its bounds.
pub(crate) async fn run_service(
    cfg: Config,
    store: Option<CheckpointStore>,
    config: &std::path::Path,
    source: Option<String>,
    until: Option<String>,
    max_events: Option<u64>,
) -> ExitCode {
    let until = match until {
        None => None,
        Some(u) => {
            let scfg = match (&source, cfg.sources.len()) {
                (Some(n), _) => cfg.source(n),
                (None, 1) => cfg.sources.first(),
                (None, _) => {
                    eprintln!("error: --until needs a single source: add --source <name>");
                    return ExitCode::from(2);
                }
            };
            let Some(scfg) = scfg else {
                eprintln!(
                    "error: --source {:?} is not defined in {}",
                    source.unwrap_or_default(),
                    config.display()
                );
                return ExitCode::from(2);
            };
            match logtide::source::parse_position(scfg, &u) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("error: --until: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(service::cancel_on_signal(cancel.clone()));
    let opts = RunOptions {
        only_source: source,
        bounds: Bounds { until, max_events },
        config_path: Some(config.to_owned()),
    };
    let service = async {
        match store {
            Some(store) => service::run_with_store(cfg, store, opts, cancel.clone()).await,
            None => service::run(cfg, opts, cancel.clone()).await,
        }
    };
    // Once a stop was requested (a signal, or a failed source), the service gets
    // SHUTDOWN_GRACE to finish its batches; a task stuck on a dead connection never holds
    // the process (what it did not checkpoint is delivered again after the restart).
    let deadline = async {
        cancel.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let res = tokio::select! {
        r = service => r,
        _ = deadline => {
            tracing::error!(grace_s = SHUTDOWN_GRACE.as_secs(), "shutdown did not finish in time (a connection stopped answering?); exiting without waiting further");
            return ExitCode::from(1);
        }
    };
    cancel.cancel();
    let _ = signals.await;
    match res {
        Ok(stats) => {
            for (name, s) in stats {
                tracing::info!(source = %name, events = s.events, checkpoint = ?s.last_checkpoint.map(|p| p.to_string()), "done");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.exit_code(), &e),
    }
}
