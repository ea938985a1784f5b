//! Soak mode (`--soak-minutes N`, issue 18 item 3): `--workers` busy workers run task
//! cycles for N minutes while the others of `--registered-workers` stay signed on and idle,
//! and `sleep` jobs of 100 tasks are submitted continuously through the SDK, so that about
//! `--seed-tasks` (at least 1,000) tasks stay queued. Task logs and the cleanup are whatever
//! the Manager's configuration says (scripts/perf.sh turns both on). Every minute one row:
//! cycles and requests per second, p50/p99/max latency over every endpoint, errors, and the
//! Manager's resident memory, open file descriptors, data-directory and WAL size, and its
//! CPU: the process's own (user and kernel time, and per task cycle) and, when it is pinned
//! to one core, how busy that core was in all (the process, kernel threads and interrupts
//! that ran there), so that a change in the cost per cycle can be told apart from other
//! work on its core; and the simulator's own CPU per cycle, whose work per cycle does not
//! depend on the database (apart from the job submissions), as a control for the machine.
//! A row is also printed to stderr as it is taken, so a long soak shows progress.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use flamenco_core::config::Config;
use flamenco_core::jobs::JobSubmission;
use flamenco_core::Manager;

use super::{cpu_user_kernel, Args, Bodies, SimWorker, Window};

/// Tasks per submitted job.
const JOB_TASKS: u64 = 100;
/// How often the submitter tops the queue up.
const SUBMIT_EVERY: Duration = Duration::from_millis(500);

/// The value of a `Key:   123 kB` line of /proc/PID/status, in bytes.
fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The one core process `pid` may run on (`Cpus_allowed_list` of a single number, as
/// `taskset -c N` leaves it), if it is pinned.
fn pinned_core(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Busy and total clock ticks of core `core` so far, from /proc/stat (busy: everything
/// but idle and iowait).
fn core_ticks(core: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{core}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A `sleep` job of [`JOB_TASKS`] tasks that finish at once.
fn job(n: u64) -> JobSubmission {
    let mut settings = Map::new();
    settings.insert("frames".into(), json!(format!("1-{JOB_TASKS}")));
    settings.insert("chunk_size".into(), json!(1));
    settings.insert("time_in_seconds".into(), json!(0));
    let mut s = JobSubmission::new("sleep", settings);
    s.name = Some(format!("soak-{n}"));
    s
}

/// Submit jobs so that `submitted − completed` stays at `target` tasks, until `stop`. A
/// submission that fails (the store refused it: "locked by another process", say) is
/// counted in `failures`, printed, and tried again at the next round: a soak whose
/// submitter stopped would go on measuring an idle farm.
async fn submit(
    manager: Arc<Manager>,
    completed: Arc<AtomicU64>,
    submitted: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    target: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut jobs = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let queued = submitted
            .load(Ordering::Relaxed)
            .saturating_sub(completed.load(Ordering::Relaxed));
        if queued < target {
            for _ in 0..(target - queued).div_ceil(JOB_TASKS) {
                if let Err(e) = manager.submit_job(job(jobs)).await {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak: submitting a job failed (trying again): {e}");
                    break;
                }
                jobs += 1;
                submitted.fetch_add(JOB_TASKS, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(SUBMIT_EVERY).await;
    }
    jobs
}

pub(super) async fn run(
    args: &Args,
    workers: Vec<SimWorker>,
    idle: Vec<SimWorker>,
    bodies: Arc<Bodies>,
) -> Result<Value> {
    let (Some(cfg), Some(pid)) = (args.seed_config.clone(), args.pid) else {
        bail!("--soak-minutes needs --seed-config (to submit jobs and find the data directory) and --pid (the Manager, for its memory and file descriptors)");
    };
    let (config, _) = Config::load(Some(&cfg))?;
    let data_dir: PathBuf = config.data_dir.clone();
    let wal = data_dir.join("flamenco.sqlite-wal");
    let manager = Arc::new(
        Manager::open(config)
            .await
            .context("opening the store to submit jobs")?,
    );
    let target = (args.seed_tasks as u64).max(1000);
    let completed = Arc::new(AtomicU64::new(0));
    let submitted = Arc::new(AtomicU64::new(0));
    let submit_failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = tokio::spawn(submit(
        manager.clone(),
        completed.clone(),
        submitted.clone(),
        submit_failures.clone(),
        target,
        stop.clone(),
    ));
    // The first jobs before the workers start.
    let ready = Instant::now();
    while submitted.load(Ordering::Relaxed) < target && ready.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let window = Arc::new(Mutex::new(Window::default()));
    let mut handles = Vec::new();
    for mut w in workers {
        w.window = Some(window.clone());
        let bodies = bodies.clone();
        let completed = completed.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if w.cycle(&bodies).await {
                    completed.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            w.stats
        }));
    }

    let minutes = args.soak_minutes;
    let period = Duration::from_secs(args.soak_row_seconds.max(1));
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut last = Instant::now();
    let _ = std::mem::take(&mut *window.lock().unwrap_or_else(|e| e.into_inner()));
    let core = pinned_core(pid);
    let me = std::process::id();
    let mut cpu_before = cpu_user_kernel(pid);
    let mut sim_before = cpu_user_kernel(me);
    let mut core_before = core.and_then(core_ticks);
    for minute in 1..=minutes {
        tokio::time::sleep_until((start + period * minute as u32).into()).await;
        let w = std::mem::take(&mut *window.lock().unwrap_or_else(|e| e.into_inner()));
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let q = |p: f64| w.latency_us.value_at_quantile(p) as f64 / 1000.0;
        let cpu_now = cpu_user_kernel(pid);
        let core_now = core.and_then(core_ticks);
        let (cpu_user, cpu_kernel) = cpu_before
            .zip(cpu_now)
            .map(|((u0, k0), (u1, k1))| (u1 - u0, k1 - k0))
            .unzip();
        let core_busy = core_before
            .zip(core_now)
            .filter(|((_, t0), (_, t1))| t1 > t0)
            .map(|((b0, t0), (b1, t1))| (b1 - b0) as f64 / (t1 - t0) as f64);
        let sim_now = cpu_user_kernel(me);
        let sim_cpu = sim_before
            .zip(sim_now)
            .map(|((u0, k0), (u1, k1))| u1 + k1 - u0 - k0);
        (cpu_before, core_before, sim_before) = (cpu_now, core_now, sim_now);
        let cpu = cpu_user.zip(cpu_kernel).map(|(u, k)| u + k);
        let per_cycle = |c: f64| 1e6 * c / w.cycles.max(1) as f64;
        let row = json!({
            "minute": minute,
            "cycles_per_second": w.cycles as f64 / secs,
            "requests_per_second": w.latency_us.len() as f64 / secs,
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
            "max_ms": w.latency_us.max() as f64 / 1000.0,
            "transport_errors": w.errors,
            "not_2xx": w.not_2xx,
            "rss_bytes": proc_status_kb(pid, "VmRSS:"),
            // VmRSS includes the database file's pages mapped by SQLite (`mmap_size`,
            // 1 GiB at most): RssAnon is the process's own heap and stacks.
            "rss_anon_bytes": proc_status_kb(pid, "RssAnon:"),
            "rss_file_bytes": proc_status_kb(pid, "RssFile:"),
            "open_fds": open_fds(pid),
            "data_dir_bytes": dir_bytes(&data_dir),
            "wal_bytes": file_bytes(&wal),
            "queued_estimate": submitted.load(Ordering::Relaxed).saturating_sub(completed.load(Ordering::Relaxed)),
            "submit_failures": submit_failures.load(Ordering::Relaxed),
            "manager_cpu_user_share": cpu_user.map(|u| u / secs),
            "manager_cpu_kernel_share": cpu_kernel.map(|k| k / secs),
            "manager_cpu_us_per_cycle": cpu.map(per_cycle),
            "manager_core": core,
            "manager_core_busy_share": core_busy,
            "simulator_cpu_us_per_cycle": sim_cpu.map(per_cycle),
        });
        eprintln!("soak {row}");
        rows.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = super::Stats::default();
    for h in handles {
        total.merge(h.await?);
    }
    let jobs = submitter.await?;
    drop(idle);
    if let Ok(manager) = Arc::try_unwrap(manager) {
        manager.close().await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let max = |key: &str| {
        rows.iter()
            .filter_map(|r| r[key].as_f64())
            .fold(0.0, f64::max)
    };
    let first = |key: &str| rows.first().and_then(|r| r[key].as_f64()).unwrap_or(0.0);
    let lastv = |key: &str| rows.last().and_then(|r| r[key].as_f64()).unwrap_or(0.0);
    Ok(json!({
        "scenario": "Soak",
        "workers": args.workers,
        "idle_workers": args.registered_workers.saturating_sub(args.workers),
        "seconds": elapsed,
        "task_cycles": total.cycles,
        "task_cycles_per_second": total.cycles as f64 / elapsed,
        "requests_per_second": rows.iter().filter_map(|r| r["requests_per_second"].as_f64()).sum::<f64>() / rows.len().max(1) as f64,
        "jobs_submitted": jobs,
        "submit_failures": submit_failures.load(Ordering::Relaxed),
        "minutes": rows,
        "summary": {
            "cycles_per_second_first_minute": first("cycles_per_second"),
            "cycles_per_second_last_minute": lastv("cycles_per_second"),
            "p99_ms_worst_minute": max("p99_ms"),
            "rss_bytes_max": max("rss_bytes"),
            "rss_anon_bytes_max": max("rss_anon_bytes"),
            "open_fds_max": max("open_fds"),
            "data_dir_bytes_max": max("data_dir_bytes"),
            "wal_bytes_max": max("wal_bytes"),
        },
        "endpoints": super::endpoint_report(&total, elapsed).0,
    }))
}
