//! `discover`: the tables and columns each source can capture, as text or JSON.

use super::load_tunneled;
use crate::{fail, DiscoverFormat};
use std::path::PathBuf;
use std::process::ExitCode;

pub async fn discover(config: PathBuf, source: Option<String>, format: DiscoverFormat) -> ExitCode {
    let (cfg, tunnels) = match load_tunneled(&config, source.as_deref()).await {
        Ok(t) => t,
        Err(code) => return code,
    };
    let mut all = Vec::new();
    for s in cfg
        .sources
        .iter()
        .filter(|s| source.as_deref().is_none_or(|n| n == s.name()))
    {
        let st = logtide::ops::discover::discover(s, &tunnels.endpoint(s)).await;
        if format == DiscoverFormat::Text {
            out!("{}", logtide::ops::discover::render_text(&st));
        }
        all.push(st);
    }
    if format == DiscoverFormat::Json {
        match serde_json::to_string_pretty(&all) {
            Ok(j) => outln!("{j}"),
            Err(e) => return fail(1, &e),
        }
    }
    if all.iter().any(|s| s.error.is_some()) {
        if format == DiscoverFormat::Json {
            for s in all.iter().filter(|s| s.error.is_some()) {
                eprintln!(
                    "error: source {}: {}",
                    s.source,
                    s.error.as_deref().unwrap_or("")
                );
            }
        }
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
