//! `status`: stored positions (from the store, or from the running service's admin
//! endpoint when it holds the store) and each source's lag.

use super::load_for;
use crate::fail;
use logtide::checkpoint::CheckpointStore;
use logtide::config::Config;
use logtide::error::ErrorChain;
use std::path::PathBuf;
use std::process::ExitCode;

pub async fn status(config: PathBuf) -> ExitCode {
    let cfg = match load_for(&config, None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match CheckpointStore::open(&cfg.state.path) {
        Ok(s) => s,
        Err(e) if CheckpointStore::is_held_by_other(&e) => {
            // The service runs: its admin endpoint reports what it stored.
            let lines = match status_from_service(&cfg).await {
                Ok(l) => l,
                Err(why) => {
                    eprintln!("error: the checkpoint store {} is held by a running `logtide run`, which cannot be asked: {why}", cfg.state.path.display());
                    return ExitCode::from(1);
                }
            };
            let mut stored = Vec::new();
            for (name, line) in lines {
                let line = line.unwrap_or_else(|| "not run by the service".into());
                outln!("{name}\t{line}");
                stored.push(None);
            }
            return status_lag(&cfg, &stored).await;
        }
        Err(e) => return fail(1, &e),
    };
    let rows = match store.dump() {
        Ok(rows) => rows,
        Err(e) => return fail(1, &e),
    };
    let mut stored = Vec::new();
    for s in &cfg.sources {
        match store.load(s.name()) {
            Ok(Some(p)) => {
                outln!("{}\tposition {}\tcursor {}", s.name(), p, p.cursor());
                stored.push(Some(p));
            }
            Ok(None) => {
                outln!("{}\tno stored position", s.name());
                stored.push(None);
            }
            Err(e) => return fail(1, &e),
        }
    }
    for (k, v) in rows.iter().filter(|(k, _)| k.starts_with("backfill/")) {
        outln!("{k}\t{v}");
    }
    drop(store);
    status_lag(&cfg, &stored).await
}

/// The lag lines of `status`: each source's server side against its stored position.
pub(crate) async fn status_lag(
    cfg: &Config,
    stored: &[Option<logtide::position::Position>],
) -> ExitCode {
    for (s, p) in cfg.sources.iter().zip(stored) {
        let tunnels = match logtide::tunnel::open(cfg, Some(s.name())).await {
            Ok(t) => t,
            Err(e) => {
                outln!("{}\tunreachable: {}", s.name(), ErrorChain(&e));
                continue;
            }
        };
        match logtide::ops::status::lag(s, &tunnels.endpoint(s), p.as_ref()).await {
            Ok(line) => outln!("{}\tlag {line}", s.name()),
            Err(why) => outln!("{}\tunreachable: {why}", s.name()),
        }
    }
    ExitCode::SUCCESS
}

/// `status` while `run` holds the store: the stored positions as the running service reports
/// them on its admin endpoint (`GET /sources`), one line per source.
pub(crate) async fn status_from_service(
    cfg: &Config,
) -> Result<Vec<(String, Option<String>)>, String> {
    if !cfg.admin.enabled {
        return Err("its admin endpoint is disabled ([admin] enabled = false)".into());
    }
    let url = format!("http://{}/sources", cfg.admin.listen);
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{url} did not answer: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url} answered something else than JSON: {e}"))?;
    let list = body.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for s in &cfg.sources {
        let found = list
            .iter()
            .find(|v| v.get("name").and_then(|n| n.as_str()) == Some(s.name()));
        let line = found.map(|v| {
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
            let state = v
                .get("state")
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| x.to_string())
                })
                .unwrap_or_default();
            let mut line = format!(
                "position {}\tcursor {}\tstate {state} (from the running service)",
                field("checkpoint"),
                field("checkpoint_cursor")
            );
            if let Some(e) = v.get("error").and_then(|x| x.as_str()) {
                line.push_str(&format!("\terror {e}"));
            }
            line
        });
        out.push((s.name().to_owned(), line));
    }
    Ok(out)
}
