//! Log setup: text or JSON lines on stderr, level from the flags or `RUST_LOG`, colour only
//! on a terminal.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Levels: `serve` logs warnings from everything and info from Flamenco's own crates; the
/// other commands only warnings, so their output is not mixed with log lines.
/// `--verbose`: info from everything. `--debug`: debug from everything. `RUST_LOG`, when
/// set, wins.
pub fn init(serving: bool, verbose: bool, debug: bool, format: LogFormat) {
    let default = if debug {
        "debug,hyper=info,h2=info"
    } else if verbose {
        "info"
    } else if serving {
        "warn,flamenco_core=info,flamenco_serve=info,flamenco=info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Colour only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
fn colour_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}
