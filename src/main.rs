//! The `logtide` command line: parse arguments, set up logging and the runtime, and
//! dispatch to the subcommand (one module per command in `commands/`), which loads the
//! config, does its work and maps errors to exit codes.
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
use logtide::error::ErrorChain;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

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
        $crate::out_result(std::io::Write::write_fmt(
            &mut std::io::stdout(),
            format_args!("{}\n", format_args!($($arg)*)),
        ))
    };
}

/// `print!` with the same EPIPE rule as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out_result(std::io::Write::write_fmt(
            &mut std::io::stdout(),
            format_args!($($arg)*),
        ))
    };
}

mod commands;

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

async fn async_main(cmd: Command) -> ExitCode {
    match cmd {
        Command::Run {
            config,
            source,
            until,
            max_events,
        } => commands::run::run(config, source, until, max_events).await,
        Command::Replay {
            config,
            source,
            from,
            until,
            max_events,
        } => commands::run::replay(config, source, from, until, max_events).await,
        Command::Backfill {
            config,
            source,
            table,
            wait,
        } => commands::backfill::backfill(config, source, table, wait).await,
        Command::Status { config } => commands::status::status(config).await,
        Command::Check { config, source } => commands::check::check(config, source).await,
        Command::Discover {
            config,
            source,
            format,
        } => commands::discover::discover(config, source, format).await,
        Command::Preview {
            config,
            source,
            limit,
            timeout,
        } => commands::preview::preview(config, source, limit, timeout).await,
        Command::Reset {
            config,
            source,
            yes,
        } => commands::reset::reset(config, source, yes).await,
        Command::DeadLetters { action } => commands::dead_letters::dead_letters(action).await,
    }
}
