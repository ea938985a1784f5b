//! A farm simulator: N workers speaking exactly the v2 worker protocol over HTTP against any
//! Manager URL (ours or any other implementation), printing one JSON object with
//! per-endpoint request counts, rates, latency percentiles, errors by status, task cycles
//! per second and, given `--pid`, the Manager's peak resident memory.
//!
//! ```text
//! cargo run --release --example farm_sim -- --manager http://127.0.0.1:8083 \
//!     --workers 64 --duration 30s [--scenario cycles|empty-polls|may-i-run|burst] \
//!     [--seed-config flamenco-manager.yaml --seed-tasks 100000] [--pid PID]
//! ```
//!
//! See `examples/src/sim.rs` for the scenarios.

use clap::Parser;
use flamenco_examples::sim::{run, Args};

fn main() -> anyhow::Result<()> {
    // On one core (`taskset -c 0`, scripts/perf.sh --pin) one thread without work stealing
    // costs the least per request; otherwise a thread per core.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut runtime = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let report = runtime.enable_all().build()?.block_on(run(Args::parse()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
