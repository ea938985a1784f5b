//! The restart storm (`--scenario restart-storm`, issue 18 item 4): every registered worker
//! polls `/task` about once a second; once all have been served, the Manager (`--pid`) is
//! stopped with SIGTERM and started again with `--restart-with` (a shell command that
//! `exec`s the Manager on the same configuration). The workers retry every 100 ms while it
//! is away or busy (connection refused, 429, 503), as the real ones do only more slowly.
//! Reported: the stop time, the time from the start command until the first answer and
//! until every worker had a 2xx answer again, and the latencies of the storm (from the
//! start command until all are served) next to those before and after.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{Args, SimWorker, Window};

/// How often a served worker polls.
const POLL: Duration = Duration::from_secs(1);
/// How soon a worker that was not served tries again.
const RETRY: Duration = Duration::from_millis(100);
/// How long to give the storm before giving up.
const STORM_LIMIT: Duration = Duration::from_secs(120);

/// Latency figures of one window, in ms.
fn summary(w: &Window, seconds: f64) -> Value {
    let q = |p: f64| w.latency_us.value_at_quantile(p) as f64 / 1000.0;
    json!({
        "requests": w.latency_us.len(),
        "per_second": w.latency_us.len() as f64 / seconds.max(1e-9),
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": w.latency_us.max() as f64 / 1000.0},
        "transport_errors": w.errors,
        "not_2xx": w.not_2xx,
    })
}

fn take(window: &Mutex<Window>) -> Window {
    std::mem::take(&mut *window.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Has process `pid` exited (gone, or a zombie waiting for its parent)?
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(true),
    }
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed ({status})");
    }
    Ok(())
}

/// Poll until `cond` holds or `limit` passes; false on timeout.
async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

pub(super) async fn run(args: &Args, workers: Vec<SimWorker>) -> Result<Value> {
    let (Some(pid), Some(restart)) = (args.pid, args.restart_with.clone()) else {
        bail!("--scenario restart-storm needs --pid (the Manager to stop) and --restart-with (a shell command that starts it again)");
    };
    let n = workers.len();
    let origin = Instant::now();
    let nanos = move || origin.elapsed().as_nanos() as u64;
    // When each worker was last served (a 2xx), in ns since `origin`; 0: never.
    let served: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let window = Arc::new(Mutex::new(Window::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(n);
    for (i, mut w) in workers.into_iter().enumerate() {
        w.window = Some(window.clone());
        let served = served.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            // Spread the polls over the second.
            tokio::time::sleep(POLL.mul_f64(i as f64 / n as f64)).await;
            while !stop.load(Ordering::Relaxed) {
                match w.poll().await {
                    Some(s) if (200..300).contains(&s) => {
                        served[i].store(nanos().max(1), Ordering::Relaxed);
                        tokio::time::sleep(POLL).await;
                    }
                    _ => tokio::time::sleep(RETRY).await,
                }
            }
            w.stats
        }));
    }
    let all_served_since = |t: u64| served.iter().all(|s| s.load(Ordering::Relaxed) > t);

    // Steady state first: everyone served, then a few seconds more.
    if !wait_for(STORM_LIMIT, || all_served_since(0)).await {
        bail!("not every worker was served before the restart");
    }
    let _ = take(&window);
    let before_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = take(&window);
    let before_secs = before_start.elapsed().as_secs_f64();

    // Stop.
    let stop_sent = Instant::now();
    signal(pid, "TERM")?;
    if !wait_for(Duration::from_secs(60), || exited(pid)).await {
        bail!("the Manager (pid {pid}) did not stop within 60 s of SIGTERM");
    }
    let stopped = stop_sent.elapsed();

    // Start.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&restart)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the Manager again with {restart:?}"))?;
    let started = Instant::now();
    let t0 = nanos();
    let _ = take(&window);
    let first = wait_for(STORM_LIMIT, || {
        served.iter().any(|s| s.load(Ordering::Relaxed) > t0)
    })
    .await;
    let first_answer = started.elapsed();
    let all = first && wait_for(STORM_LIMIT, || all_served_since(t0)).await;
    let all_served = started.elapsed();
    let storm = take(&window);
    let never = served
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) <= t0)
        .count();

    // Steady state after.
    let after_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = take(&window);
    let after_secs = after_start.elapsed().as_secs_f64();

    stop.store(true, Ordering::Relaxed);
    let mut total = super::Stats::default();
    for h in handles {
        total.merge(h.await?);
    }
    // The Manager started here is this run's to stop.
    if let Some(new_pid) = child.id() {
        let _ = signal(new_pid, "TERM");
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;

    let storm_secs = all_served.as_secs_f64();
    Ok(json!({
        "scenario": "RestartStorm",
        "workers": n,
        "stop_seconds": stopped.as_secs_f64(),
        "first_answer_seconds": first_answer.as_secs_f64(),
        "all_served_seconds": if all { json!(storm_secs) } else { Value::Null },
        "not_served": never,
        "storm": summary(&storm, storm_secs),
        "before": summary(&before, before_secs),
        "after": summary(&after, after_secs),
        // For scripts/perf.sh's table (no cycles in this scenario).
        "requests_per_second": storm.latency_us.len() as f64 / storm_secs.max(1e-9),
        "task_cycles_per_second": 0.0,
        "endpoints": super::endpoint_report(&total, origin.elapsed().as_secs_f64()).0,
    }))
}
