//! The subcommands of the `logtide` binary, one module per noun; `main.rs` parses the
//! command line and dispatches here. Shared: loading the config with the exit code of a
//! bad one, the SSH tunnels a command needs, the checkpoint store.

pub mod backfill;
pub mod check;
pub mod dead_letters;
pub mod discover;
pub mod preview;
pub mod reset;
pub mod run;
pub mod status;

use crate::fail;
use logtide::checkpoint::CheckpointStore;
use logtide::config::Config;
use logtide::tunnel::Tunnels;
use std::process::ExitCode;

/// Loads the config and checks that `source` (if given) is defined; the error exit code.
pub(crate) fn load_for(path: &std::path::Path, source: Option<&str>) -> Result<Config, ExitCode> {
    let cfg = Config::load(path).map_err(|e| fail(2, &e))?;
    if let Some(n) = source {
        if cfg.source(n).is_none() {
            eprintln!("error: --source {n:?} is not defined in {}", path.display());
            return Err(ExitCode::from(2));
        }
    }
    Ok(cfg)
}

/// [`load_for`] for the commands that run the service: every secret's environment variable
/// must be set before anything binds a port, creates a file or connects.
pub(crate) fn load_to_run(path: &std::path::Path) -> Result<Config, ExitCode> {
    let cfg = load_for(path, None)?;
    cfg.check_secrets(path).map_err(|e| fail(2, &e))?;
    Ok(cfg)
}

/// Opens the SSH tunnels of the sources a command uses (`only`, else all), to keep while
/// the command runs; each source connects to [`Tunnels::endpoint`]. Exit code 3 when one
/// fails.
pub(crate) async fn tunneled(cfg: &Config, only: Option<&str>) -> Result<Tunnels, ExitCode> {
    logtide::tunnel::open(cfg, only)
        .await
        .map_err(|e| fail(3, &e))
}

/// [`load_for`] then [`tunneled`]: the config of a command that reaches the databases of
/// `source` (else every source), and their tunnels.
pub(crate) async fn load_tunneled(
    path: &std::path::Path,
    source: Option<&str>,
) -> Result<(Config, Tunnels), ExitCode> {
    let cfg = load_for(path, source)?;
    let tunnels = tunneled(&cfg, source).await?;
    Ok((cfg, tunnels))
}

/// Opens the checkpoint store of `cfg`; exit code 1 when it cannot be opened. `command` names
/// the command for the message when a running service holds the store.
pub(crate) fn open_store(cfg: &Config, command: &str) -> Result<CheckpointStore, ExitCode> {
    CheckpointStore::open(&cfg.state.path).map_err(|e| {
        if CheckpointStore::is_held_by_other(&e) {
            eprintln!(
                "error: `logtide {command}` needs the checkpoint store {}, which a running `logtide run` holds: stop the service first (it stores its checkpoint on SIGTERM), then run it again. `logtide status` works while the service runs.",
                cfg.state.path.display()
            );
            return ExitCode::from(1);
        }
        fail(1, &e)
    })
}
