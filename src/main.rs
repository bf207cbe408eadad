//! The `logtide` command line: parse arguments, load config, start the service, map errors
//! to exit codes.
//!
//! Exit codes: 0 success (a clean stop on SIGINT/SIGTERM or a reached bound — never
//! after a source failure); 1 runtime failure (a sink, the checkpoint store, a crash, a
//! shutdown that did not finish in time, `--until` not reached; `check`: a sink check
//! failed); 2 bad command line or config; 3 a source failed permanently (credentials,
//! TLS verification, server settings, privileges, purged positions, undecodable data — the
//! message says what to fix; `check`: a source check failed). See the supervision rule in
//! `logtide::service`.

use clap::{Parser, Subcommand, ValueEnum};

/// See Cargo.toml: cross-thread frees of event memory are much cheaper than with glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use logtide::checkpoint::CheckpointStore;
use logtide::config::Config;
use logtide::error::ErrorChain;
use logtide::pipeline::Bounds;
use logtide::service::{self, RunOptions};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "logtide",
    version,
    about = "Change-data-capture from PostgreSQL and MySQL/MariaDB logs to JSON events"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), overrides RUST_LOG.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DiscoverFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Stream changes from every configured source to its sinks (the service).
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Run only this source.
        #[arg(long)]
        source: Option<String>,
        /// Stop once everything up to this position is delivered: an LSN (16/B374D848) for
        /// PostgreSQL, file:pos (mysql-bin.000012:4567) for MySQL. Needs a single source.
        #[arg(long)]
        until: Option<String>,
        /// Stop each source after it delivered this many events (backfill rows count).
        #[arg(long)]
        max_events: Option<u64>,
    },
    /// Re-deliver a source's changes from a position the server still holds, then keep
    /// streaming (or stop at --until / --max-events). MySQL: any binlog still on the server;
    /// PostgreSQL: the slot's confirmed position or later (a slot never moves back).
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        source: String,
        /// An event's cursor (that event is delivered again), a MySQL file:pos
        /// (mysql-bin.000012:4567) or GTID (0-1-42, uuid:42: starts after it), or a
        /// PostgreSQL LSN (16/B374D848).
        #[arg(long)]
        from: String,
        /// Stop once everything up to this position is delivered (as for `run`).
        #[arg(long)]
        until: Option<String>,
        /// Stop each source after it delivered this many events (backfill rows count).
        #[arg(long)]
        max_events: Option<u64>,
    },
    /// Print the stored positions, backfill progress and each source's lag.
    ///
    /// For PostgreSQL
    /// the slot (confirmed_flush_lsn, restart_lsn, bytes behind the current WAL, retained
    /// WAL, active); for MySQL the current binlog position, the oldest binlog on the server
    /// and whether the stored position's file is still there. Unreachable sources are
    /// reported and skipped.
    Status {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate every source and sink without changing anything.
    ///
    /// Connects to every source and sink and validates what `run` needs (server settings,
    /// slots, publication, replica identity, privileges). One line per check:
    /// `ok|warn|FAIL <source>: <what> — <what to fix>`. Exit 0 without FAIL, 3 when a source
    /// check failed, 1 when only a sink check failed, 2 for a bad config. Changes nothing.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Check only this source (and the sinks it feeds).
        #[arg(long)]
        source: Option<String>,
    },
    /// List tables and columns and what the filters capture.
    ///
    /// For each source: schemas, tables and columns (type, nullable, key, replica
    /// identity), marked `+` when the configured filters capture them, `-` when not.
    Discover {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Inspect only this source.
        #[arg(long)]
        source: Option<String>,
        /// Output format: `text` for people, `json` (one document) for tools.
        #[arg(long, value_enum, default_value_t = DiscoverFormat::Text)]
        format: DiscoverFormat,
    },
    /// Print a source's next events as JSON lines, changing nothing.
    ///
    /// Streams from the stored position (or the normal start) without delivering to any
    /// sink, storing a checkpoint or confirming anything to the server. Stops after --limit events or --timeout (not an error; the count goes to
    /// stderr). Query mode runs the query once.
    Preview {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The source to preview.
        #[arg(long)]
        source: String,
        /// Most events to print.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Longest wait for events, e.g. "10s", "500ms", "2m".
        #[arg(long, default_value = "10s", value_parser = logtide::config::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Backfill one table on demand while its source keeps streaming.
    ///
    /// Checks the table (captured by the source's filters, with a primary key) and hands
    /// the request to the running service through its admin endpoint; the service reads
    /// the table in keyset chunks between transactions of the stream and delivers them as
    /// `op = "r"` events (see the README, "On-demand backfill"). With no service running,
    /// the request is stored and the next `logtide run` performs it. Exit codes: 0
    /// requested / stored (with --wait: finished), 3 the table cannot be backfilled or the
    /// backfill failed, 1 the service could not be reached, 2 bad arguments or config.
    Backfill {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The source the table belongs to.
        #[arg(long)]
        source: String,
        /// `schema.table` (PostgreSQL; a bare name means `public.`) or `database.table`
        /// (MySQL; a bare name means the source's `database`).
        #[arg(long)]
        table: String,
        /// Follow the running service's progress until the backfill is done.
        #[arg(long)]
        wait: bool,
    },
    /// Forget a source's stored position and backfill progress (the service must be stopped).
    ///
    /// The next `run` starts as a first run: it backfills again when `backfill = "initial"`,
    /// then streams — PostgreSQL from the slot's confirmed position (the slot is kept; a
    /// logical slot never moves back), MySQL from the server's current binlog end.
    Reset {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        source: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// List or re-send dead letters (events a sink's receiver rejected for good).
    /// Exit codes: 0 ok, 1 dead letters rejected again remain (or the sink gave up), 2 bad
    /// config or arguments.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLettersAction,
    },
}

#[derive(Subcommand)]
enum DeadLettersAction {
    /// Print time, sink, cursor, error and event summary of every dead letter.
    List {
        #[arg(long, short)]
        config: PathBuf,
        /// Only this sink's dead letters (default: every http, segment and nats sink).
        #[arg(long)]
        sink: Option<String>,
    },
    /// Re-send a sink's dead letters through it; accepted ones leave the file.
    Resend {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        sink: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// `println!` for command output: a reader that went away (`logtide status | head -1`, EPIPE)
/// ends the command normally (exit 0) instead of a panic; any other write error is exit 1.
macro_rules! outln {
    ($($arg:tt)*) => {
        out_result(writeln!(std::io::stdout(), $($arg)*))
    };
}

/// `print!` with the same EPIPE rule as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        out_result(write!(std::io::stdout(), $($arg)*))
    };
}

fn out_result(r: std::io::Result<()>) {
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Standard output for commands that write through `io::Write` (preview, dead-letters list),
/// with the EPIPE rule of [`outln!`].
struct Out(std::io::Stdout);

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.0.write(buf);
        if let Err(e) = &r {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.0.flush();
        if let Err(e) = &r {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
        r
    }
}

fn init_logs(format: LogFormat, level: Option<&str>) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// Loads the config and checks that `source` (if given) is defined; the error exit code.
fn load_for(path: &std::path::Path, source: Option<&str>) -> Result<Config, ExitCode> {
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
fn load_to_run(path: &std::path::Path) -> Result<Config, ExitCode> {
    let cfg = load_for(path, None)?;
    cfg.check_secrets(path).map_err(|e| fail(2, &e))?;
    Ok(cfg)
}

/// Opens the SSH tunnels of the sources a command uses (`only`, else all): a copy of `cfg`
/// pointing at them, and the tunnels to keep while it is used; exit code 3 when one fails.
async fn tunneled(
    cfg: &Config,
    only: Option<&str>,
) -> Result<(Config, Vec<logtide::tunnel::Keeper>), ExitCode> {
    logtide::tunnel::open(cfg, only)
        .await
        .map_err(|e| fail(3, &e))
}

/// Opens the checkpoint store of `cfg`; exit code 1 when it cannot be opened. `command` names
/// the command for the message when a running service holds the store.
fn open_store(cfg: &Config, command: &str) -> Result<CheckpointStore, ExitCode> {
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

/// The lag lines of `status`: each source's server side against its stored position.
async fn status_lag(cfg: &Config, stored: &[Option<logtide::position::Position>]) -> ExitCode {
    for (s, p) in cfg.sources.iter().zip(stored) {
        let (tcfg, _tunnels) = match logtide::tunnel::open(cfg, Some(s.name())).await {
            Ok(t) => t,
            Err(e) => {
                outln!("{}\tunreachable: {}", s.name(), ErrorChain(&e));
                continue;
            }
        };
        let s = tcfg.source(s.name()).unwrap_or(s);
        match logtide::ops::status::lag(s, p.as_ref()).await {
            Ok(line) => outln!("{}\tlag {line}", s.name()),
            Err(why) => outln!("{}\tunreachable: {why}", s.name()),
        }
    }
    ExitCode::SUCCESS
}

/// `status` while `run` holds the store: the stored positions as the running service reports
/// them on its admin endpoint (`GET /sources`), one line per source.
async fn status_from_service(cfg: &Config) -> Result<Vec<(String, Option<String>)>, String> {
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

fn fail(code: u8, err: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", ErrorChain(err));
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format, cli.log_level.as_deref());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &e),
    };
    let code = rt.block_on(async_main(cli.command));
    // A blocking task stuck on a dead connection must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// How long a stop (signal, failed source) may take before the process exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

async fn async_main(cmd: Command) -> ExitCode {
    match cmd {
        Command::Run {
            config,
            source,
            until,
            max_events,
        } => {
            let cfg = match load_to_run(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            run_service(cfg, None, &config, source, until, max_events).await
        }
        Command::Replay {
            config,
            source,
            from,
            until,
            max_events,
        } => {
            let cfg = match load_to_run(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let store = match open_store(&cfg, "replay") {
                Ok(s) => s,
                Err(code) => return code,
            };
            let (tcfg, tunnels) = match tunneled(&cfg, Some(&source)).await {
                Ok(t) => t,
                Err(code) => return code,
            };
            let prepared = logtide::replay::prepare(&tcfg, &store, &source, &from).await;
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
        Command::Backfill {
            config,
            source,
            table,
            wait,
        } => {
            let cfg = match load_for(&config, Some(&source)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // The table is checked on the database, through the source's tunnel if any.
            let (cfg, _tunnels) = match tunneled(&cfg, Some(&source)).await {
                Ok(t) => t,
                Err(code) => return code,
            };
            let Some(scfg) = cfg.source(&source).cloned() else {
                return ExitCode::from(2);
            };
            if matches!(scfg, logtide::config::SourceConfig::Query(_)) {
                eprintln!("error: source {source:?} is a query source: it has no backfill (its runs read from the stored cursor)");
                return ExitCode::from(2);
            }
            use logtide::ops::backfill::Outcome;
            match logtide::ops::backfill::request(&cfg, &scfg, &table, wait).await {
                Ok(Outcome::Requested { table, admin }) => {
                    outln!("backfill of {table} requested from the running service ({admin}); follow it on /sources/{source} or with --wait");
                    ExitCode::SUCCESS
                }
                Ok(Outcome::Stored { table }) => {
                    outln!("no running service answered: backfill of {table} stored; it runs when `logtide run` starts");
                    ExitCode::SUCCESS
                }
                Ok(Outcome::AlreadyStored { table }) => {
                    outln!(
                        "backfill of {table} is already stored; it runs when `logtide run` starts"
                    );
                    ExitCode::SUCCESS
                }
                Ok(Outcome::Done { table, rows }) => {
                    outln!("backfill of {table} done: {rows} rows");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e.exit_code(), &e),
            }
        }
        Command::Status { config } => {
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
        Command::Check { config, source } => {
            let cfg = match load_for(&config, source.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let (cfg, _tunnels) = match tunneled(&cfg, source.as_deref()).await {
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
                for f in logtide::ops::check::check_source(s, stored.as_ref()).await {
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
        Command::Discover {
            config,
            source,
            format,
        } => {
            let cfg = match load_for(&config, source.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let (cfg, _tunnels) = match tunneled(&cfg, source.as_deref()).await {
                Ok(t) => t,
                Err(code) => return code,
            };
            let mut all = Vec::new();
            for s in cfg
                .sources
                .iter()
                .filter(|s| source.as_deref().is_none_or(|n| n == s.name()))
            {
                let st = logtide::ops::discover::discover(s).await;
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
        Command::Preview {
            config,
            source,
            limit,
            timeout,
        } => {
            let cfg = match load_for(&config, Some(&source)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let (cfg, _tunnels) = match tunneled(&cfg, Some(&source)).await {
                Ok(t) => t,
                Err(code) => return code,
            };
            let opts = logtide::ops::preview::PreviewOptions { limit, timeout };
            let mut out = Out(std::io::stdout());
            match logtide::ops::preview::preview(&cfg, &source, opts, &mut out).await {
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
        Command::Reset {
            config,
            source,
            yes,
        } => {
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
                if std::io::stdin().read_line(&mut line).is_err()
                    || !line.trim().eq_ignore_ascii_case("y")
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
        Command::DeadLetters { action } => dead_letters(action).await,
    }
}

async fn dead_letters(action: DeadLettersAction) -> ExitCode {
    use logtide::sink::dead_letter as dl;
    let fail_cmd = |e: dl::DeadLetterCmdError| fail(if e.is_usage() { 2 } else { 1 }, &e);
    let config = match &action {
        DeadLettersAction::List { config, .. } | DeadLettersAction::Resend { config, .. } => config,
    };
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    match action {
        DeadLettersAction::List { sink, .. } => {
            match dl::list(
                &cfg,
                sink.as_deref(),
                &mut Out(std::io::stdout()),
                &mut std::io::stderr(),
            ) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail_cmd(e),
            }
        }
        DeadLettersAction::Resend { sink, yes, .. } => {
            if !yes {
                let n = match dl::sink_file(&cfg, &sink)
                    .and_then(|(_, p)| dl::load(&p).map_err(Into::into))
                {
                    Ok(l) => l.len(),
                    Err(e) => return fail_cmd(e),
                };
                eprint!("re-send {n} dead letters through sink {sink:?}? [y/N] ");
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line).is_err()
                    || !line.trim().eq_ignore_ascii_case("y")
                {
                    eprintln!("not re-sent");
                    return ExitCode::from(1);
                }
            }
            match dl::resend_sink(&cfg, &sink).await {
                Ok(o) => {
                    outln!(
                        "sink {sink}: {} dead letters read, {} re-sent, {} rejected again; {} left in {}",
                        o.read,
                        o.sent,
                        o.failed,
                        o.left,
                        o.path.display()
                    );
                    if o.failed > 0 {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => fail_cmd(e),
            }
        }
    }
}

/// `run` (and `replay` after moving the position): the service with its bounds.
async fn run_service(
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
