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
    let store = match open_store(&cfg, "reset") {
        Ok(s) => s,
        Err(code) => return code,
    };
    // A source no longer in the config can be forgotten too (the warning `run` gives about
    // it says to): what it has stored is enough to name it.
    let stored = match store.load(&source) {
        Ok(p) => p.is_some(),
        Err(e) => return fail(1, &e),
    };
    if cfg.source(&source).is_none() && !stored {
        eprintln!(
            "error: --source {source:?} is not defined in {} and the state directory has nothing stored for it",
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
    match store.reset(&source).await {
        Ok(()) => {
            outln!("reset {source}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}
