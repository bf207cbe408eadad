//! The `logtide` command line: parse arguments, load config, start the service, map errors
//! to exit codes.
//!
//! Exit codes: 0 success (also a clean stop on SIGINT/SIGTERM or a reached bound);
//! 1 runtime failure (a sink or the checkpoint store); 2 bad command line or config;
//! 3 a source failed permanently (server settings, privileges, purged positions,
//! undecodable data — the message says what to fix).

use clap::{Parser, Subcommand, ValueEnum};
use logtide::checkpoint::CheckpointStore;
use logtide::config::Config;
use logtide::pipeline::Bounds;
use logtide::service::{self, ErrorChain, RunOptions, ServiceError};
use std::io::IsTerminal;
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
        /// Stop after delivering this many events.
        #[arg(long)]
        max_events: Option<u64>,
    },
    /// Print the stored positions and backfill progress.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Forget the stored position of a source (it restarts from the slot / binlog start).
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
    rt.block_on(async_main(cli.command))
}

async fn async_main(cmd: Command) -> ExitCode {
    match cmd {
        Command::Run {
            config,
            source,
            until,
            max_events,
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(2, &e),
            };
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
            };
            let res = service::run(cfg, opts, cancel.clone()).await;
            cancel.cancel();
            let _ = signals.await;
            match res {
                Ok(stats) => {
                    for (name, s) in stats {
                        tracing::info!(source = %name, events = s.events, checkpoint = ?s.last_checkpoint.map(|p| p.to_string()), "done");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let code = match &e {
                        ServiceError::Source { .. } => 3,
                        ServiceError::Backfill { source, .. } if source.is_source_side() => 3,
                        ServiceError::UnknownSource(_) => 2,
                        _ => 1,
                    };
                    fail(code, &e)
                }
            }
        }
        Command::Status { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(2, &e),
            };
            let store = match CheckpointStore::open(&cfg.state.path) {
                Ok(s) => s,
                Err(e) => return fail(1, &e),
            };
            match store.dump() {
                Ok(rows) => {
                    for s in &cfg.sources {
                        match store.load(s.name()) {
                            Ok(Some(p)) => {
                                println!("{}\tposition {}\tcursor {}", s.name(), p, p.cursor())
                            }
                            Ok(None) => println!("{}\tno stored position", s.name()),
                            Err(e) => return fail(1, &e),
                        }
                    }
                    for (k, v) in rows.iter().filter(|(k, _)| k.starts_with("backfill/")) {
                        println!("{k}\t{v}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e),
            }
        }
        Command::Reset {
            config,
            source,
            yes,
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(2, &e),
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
            let store = match CheckpointStore::open(&cfg.state.path) {
                Ok(s) => s,
                Err(e) => return fail(1, &e),
            };
            match store.reset(&source).await {
                Ok(()) => {
                    println!("reset {source}");
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
                &mut std::io::stdout(),
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
                    println!(
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
