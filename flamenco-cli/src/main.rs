//! `flamenco`: the Flamenco Manager command line.
//!
//! A thin shell over `flamenco-core` and `flamenco-serve`: `serve` runs the daemon; the
//! other commands open the same store the daemon uses and call the SDK directly.
//!
//! Conventions (docs/cli.md): data goes to stdout (`--json` for JSON), logs and notes to
//! stderr (warnings only, unless `-v`; no colour unless stderr is a terminal and `NO_COLOR`
//! is unset); a closed stdout (`| head`) ends the command quietly with status 0.
//!
//! Exit status: 0 success, 1 an error (printed to stderr with what to do), 2 bad usage.

/// `println!` for command output: a closed pipe ends the process quietly (status 0)
/// instead of panicking (see [`output::write_stdout`]).
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for command output (see [`outln!`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

mod bulk;
mod commands;
mod config_cmd;
mod erase;
mod ids;
mod job;
mod logging;
mod output;
mod push;
mod queue;
mod retries;
mod serve;
mod task;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "Exit status:\n  0    success\n  1    an error (the message on stderr says what went wrong and what to do)\n  2    bad usage (unknown command or option)\n  130  `serve` stopped by a second signal during shutdown\n\nEnvironment:\n  FLAMENCO_CONFIG  the configuration file, as --config\n  NO_COLOR         set (non-empty): no colour in logs (there is none anyway unless stderr is a terminal)\n  RUST_LOG         log levels, e.g. RUST_LOG=flamenco_core=debug (wins over -v/--debug)\n  COLUMNS          the table width when stdout is not a terminal\n\nSee docs/cli.md.";

/// Flamenco Manager: a render-farm task queue for Flamenco Workers.
#[derive(Parser, Debug)]
#[command(name = "flamenco", version, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Configuration file (default: flamenco-manager.yaml in the working directory, if
    /// any). Relative paths in it are relative to its directory.
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "PATH",
        env = "FLAMENCO_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// Log more: info level for every component (commands other than `serve` log only
    /// warnings by default).
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
    /// Log everything (debug level); wins over --verbose.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Print data as JSON: one object per line for lists, one document otherwise.
    /// (For `serve`, which prints no data, it also selects JSON logs, as it used to.)
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    pub log_format: logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the Manager: serve the worker API until SIGINT/SIGTERM.
    Serve,
    /// Submit and manage jobs (standalone mode): submit, list, show, cancel, requeue, delete.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Inspect the task queue.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Inspect workers, ask them to sleep, wake up or shut down, forget them.
    #[command(subcommand)]
    Worker(worker::WorkerCommand),
    /// Show a task's log (`task log ID [--tail N] [--follow]`), cancel or re-queue a task.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Erase every cached task and the download watermark (workers and the outbox stay).
    Cleanslate(erase::EraseArgs),
    /// Erase the task-update outbox.
    PurgeUpdates(erase::EraseArgs),
    /// Push the task-update outbox to the Flamenco Server now (upstream mode).
    Push(push::PushArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve);
    let format = if serving && cli.json {
        logging::LogFormat::Json
    } else {
        cli.log_format
    };
    logging::init(serving, cli.verbose, cli.debug, format);
    // TLS everywhere uses rustls with ring's provider (no aws-lc C code).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Blocking work is store reads (a pool of a few connections) and bcrypt; a small
        // pool keeps threads, and the memory each holds, bounded.
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Dropping the runtime would wait for every blocking thread, one stuck on a hung file
    // system included; the work that matters is done (the store is closed), so give the
    // rest a bounded time and exit.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// How long the process waits at exit for blocking threads still running.
const RUNTIME_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
