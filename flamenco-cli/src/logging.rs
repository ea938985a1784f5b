//! Log setup: text or JSON lines on stderr, level from the flags or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Default: warnings from everything, info from Flamenco's own crates.
/// `--verbose`: info from everything. `--debug`: debug from everything.
/// `RUST_LOG`, when set, wins.
pub fn init(verbose: bool, debug: bool, json: bool) {
    let default = if debug {
        "debug,hyper=info,h2=info"
    } else if verbose {
        "info"
    } else {
        "warn,flamenco_core=info,flamenco_serve=info,flamenco=info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
