//! `preview`: the next events of one source on standard output, nothing stored.

use super::load_tunneled;
use crate::{fail, Out};
use std::path::PathBuf;
use std::process::ExitCode;

pub async fn preview(
    config: PathBuf,
    source: String,
    limit: usize,
    timeout: std::time::Duration,
) -> ExitCode {
    let (cfg, tunnels) = match load_tunneled(&config, Some(&source)).await {
        Ok(t) => t,
        Err(code) => return code,
    };
    let Some(at) = cfg.source(&source).map(|s| tunnels.endpoint(s)) else {
        return ExitCode::from(2);
    };
    let opts = logtide::ops::preview::PreviewOptions { limit, timeout };
    let mut out = Out(std::io::stdout());
    match logtide::ops::preview::preview(&cfg, &source, &at, opts, &mut out).await {
        Ok(o) => {
            if o.timed_out {
                eprintln!(
                    "preview: {} of {limit} events before the {timeout:?} timeout",
                    o.events
                );
            } else {
                eprintln!("preview: {} events", o.events);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(if e.is_source_side() { 3 } else { 1 }, &e),
    }
}
