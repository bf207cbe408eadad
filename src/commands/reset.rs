//! `reset`: forget a source's stored position (asks first unless `--yes`).

use super::{load_for, open_store};
use crate::fail;
use std::path::PathBuf;
use std::process::ExitCode;

pub async fn reset(config: PathBuf, source: String, yes: bool) -> ExitCode {
    let cfg = match load_for(&config, None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.source(&source).is_none() {
        eprintln!(
            "error: --source {source:?} is not defined in {}",
            config.display()
        );
        return ExitCode::from(2);
    }
    if !yes {
        eprint!("forget the stored position of source {source:?}? [y/N] ");
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() || !line.trim().eq_ignore_ascii_case("y")
        {
            eprintln!("not reset");
            return ExitCode::from(1);
        }
    }
    let store = match open_store(&cfg, "reset") {
        Ok(s) => s,
        Err(code) => return code,
    };
    match store.reset(&source).await {
        Ok(()) => {
            outln!("reset {source}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}
