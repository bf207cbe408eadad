//! `check`: every source's and sink's preflight checks; exit 3 when a source check FAILs,
//! 1 when only a sink's does.

use super::load_tunneled;
use logtide::checkpoint::CheckpointStore;
use logtide::error::ErrorChain;
use std::path::PathBuf;
use std::process::ExitCode;

pub async fn check(config: PathBuf, source: Option<String>) -> ExitCode {
    let (cfg, tunnels) = match load_tunneled(&config, source.as_deref()).await {
        Ok(t) => t,
        Err(code) => return code,
    };
    // Stored positions, when the store exists. A running service holds it: its
    // stored positions are then not checked, and the output says so.
    let store = if cfg.state.path.exists() {
        match CheckpointStore::open(&cfg.state.path) {
            Ok(st) => Some(st),
            Err(e) => {
                let why = if CheckpointStore::is_held_by_other(&e) {
                    "a running `logtide run` holds the checkpoint store".to_owned()
                } else {
                    ErrorChain(&e).to_string()
                };
                outln!("warn state: stored positions not checked ({why}) — run `logtide check` with the service stopped to check them against the servers");
                None
            }
        }
    } else {
        None
    };
    let mut source_failed = false;
    let mut sink_failed = false;
    for s in cfg
        .sources
        .iter()
        .filter(|s| source.as_deref().is_none_or(|n| n == s.name()))
    {
        let stored = store
            .as_ref()
            .and_then(|st| st.load(s.name()).ok().flatten());
        for f in logtide::ops::check::check_source(s, &tunnels.endpoint(s), stored.as_ref()).await {
            source_failed |= f.level == logtide::ops::Level::Fail;
            outln!("{f}");
        }
    }
    for k in cfg.sinks.iter().filter(|k| match source.as_deref() {
        None => true,
        Some(n) => k.sources().is_empty() || k.sources().iter().any(|s| s == n),
    }) {
        let fed: Vec<&str> = cfg
            .sources
            .iter()
            .map(|s| s.name())
            .filter(|n| k.sources().is_empty() || k.sources().iter().any(|s| s == n))
            .filter(|n| source.as_deref().is_none_or(|only| only == *n))
            .collect();
        for f in logtide::ops::check::check_sink(k, &fed).await {
            sink_failed |= f.level == logtide::ops::Level::Fail;
            outln!("{f}");
        }
    }
    if source_failed {
        ExitCode::from(3)
    } else if sink_failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
