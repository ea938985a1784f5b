//! The cost of `database_synchronous: full` (issue #8, item 4): commit throughput and
//! latency of worker task updates on the embedded store, `normal` against `full`, on the
//! disk of the data directory.
//!
//! Each run opens a fresh store in a new directory under `--dir`, then queues `--updates`
//! task updates (a worker's update as the outbox stores it: status or activity, progress,
//! a few log lines) with `--writers` concurrent callers, each awaiting its commit before
//! sending the next, as HTTP handlers do. One writer shows the price of one commit (with
//! `full`, one fsync of the WAL per commit); many writers show how the store's group commit
//! (one transaction for the writes waiting together) shares that price.
//!
//! ```text
//! cargo run --release --example commit_sync -- [--dir /tmp] [--updates 3000]
//!     [--writers 1,32] [--runs 3]
//! ```
//!
//! Prints one JSON object per (synchronous, writers): the median of the runs' commit rates
//! and latencies, the runs themselves, and the data directory's filesystem.

use flamenco_core::store::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use flamenco_core::model::{ObjectId, TaskStatus, TaskUpdate};
use flamenco_core::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use flamenco_core::store::Store;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Measure commit throughput of the embedded store, synchronous NORMAL vs FULL")]
struct Args {
    /// Where to create the (temporary) data directories; its disk is what is measured.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Updates per run.
    #[arg(long, default_value_t = 3000)]
    updates: usize,
    /// Comma-separated numbers of concurrent writers to measure.
    #[arg(long, default_value = "1,32")]
    writers: String,
    /// Runs per setting (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

struct Run {
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

fn update(i: usize, task: ObjectId) -> TaskUpdate {
    let mut u = TaskUpdate::new(task, chrono::Utc::now());
    u.worker = format!("worker-{:03}", i % 64);
    if i.is_multiple_of(10) {
        u.task_status = Some(TaskStatus::Active);
    }
    u.activity = format!("Rendering frame {}", i % 250);
    u.task_progress_percentage = (i % 101) as i64;
    u.log = format!(
        "Fra:{f} Mem:{m}.12M (Peak {p}.40M) | Time:00:{s:02}.{c:02} | Remaining:01:{r:02}.07 | Scene, ViewLayer | Sample {n}/128\n",
        f = i % 250,
        m = 300 + i % 977,
        p = 900 + i % 331,
        s = i % 60,
        c = i % 100,
        r = (i * 7) % 60,
        n = 1 + i % 128
    );
    u
}

async fn one_run(base: &Path, sync: Synchronous, writers: usize, n: usize) -> anyhow::Result<Run> {
    let dir = tempfile::Builder::new()
        .prefix("commit-sync-")
        .tempdir_in(base)
        .with_context(|| format!("creating a data directory under {}", base.display()))?;
    let options = SqliteOptions {
        synchronous: sync,
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open_with(dir.path(), options).context("opening the store")?);
    let tasks: Vec<ObjectId> = (0..100).map(|_| ObjectId::new()).collect();
    let per_writer = n.div_ceil(writers);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        let tasks = tasks.clone();
        set.spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            for k in 0..per_writer {
                let i = w * per_writer + k;
                if i >= n {
                    break;
                }
                let t = Instant::now();
                store
                    .queue_update(update(i, tasks[i % tasks.len()]))
                    .await?;
                hist.record(t.elapsed().as_micros() as u64)?;
            }
            Ok::<_, anyhow::Error>(hist)
        });
    }
    let mut hist = Histogram::<u64>::new(3)?;
    while let Some(h) = set.join_next().await {
        hist.add(h.context("a writer task")??)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let len = store.outbox_len().await?;
    if len != n as u64 {
        bail!("the outbox holds {len} updates, not {n}");
    }
    store.close().await.context("closing the store")?;
    Ok(Run {
        per_second: n as f64 / seconds,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
    })
}

/// The filesystem type and device of the mount holding `path` (from /proc/mounts).
fn filesystem(path: &Path) -> String {
    let Ok(abs) = std::fs::canonicalize(path) else {
        return "unknown".into();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && abs.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[1], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.updates == 0 || args.runs == 0 {
        bail!("--updates and --runs must be at least 1");
    }
    let writers: Vec<usize> = args
        .writers
        .split(',')
        .map(|w| w.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--writers {:?}: expected numbers like 1,32", args.writers))?;
    if writers.contains(&0) {
        bail!("--writers: each number must be at least 1");
    }
    let fs = filesystem(&args.dir);
    for &w in &writers {
        for sync in [Synchronous::Normal, Synchronous::Full] {
            let mut runs = Vec::new();
            for _ in 0..args.runs {
                runs.push(one_run(&args.dir, sync, w, args.updates).await?);
            }
            let report = json!({
                "synchronous": sync.as_str(),
                "writers": w,
                "updates": args.updates,
                "filesystem": fs,
                "commits_per_second_median": median(runs.iter().map(|r| r.per_second).collect()).round(),
                "latency_p50_us_median": median(runs.iter().map(|r| r.p50_us as f64).collect()),
                "latency_p99_us_median": median(runs.iter().map(|r| r.p99_us as f64).collect()),
                "runs_per_second": runs.iter().map(|r| r.per_second.round()).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}
