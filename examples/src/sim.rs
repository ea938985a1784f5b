//! The farm simulator behind `examples/farm_sim.rs`: N workers speaking exactly the v2
//! worker protocol over HTTP against any Manager URL, reporting per-endpoint rates and
//! latencies as one JSON object.
//!
//! ```text
//! cargo run --release --example farm_sim -- --manager http://127.0.0.1:8083 \
//!     --workers 64 --duration 30s [--scenario cycles|empty-polls|may-i-run|burst] \
//!     [--seed-config flamenco-manager.yaml --seed-tasks 100000] [--pid PID]
//! ```
//!
//! Scenarios:
//! * `cycles`: each worker loops `/task` → update `active` → may-i-run → update with a
//!   2 KB log → update `completed` (a task cycle is those 5 requests);
//! * `empty-polls`: `/task` on an empty queue;
//! * `may-i-run`: each worker takes one task, then asks may-i-run in a loop;
//! * `burst`: all workers poll an empty queue, then `--seed-tasks` tasks appear at once
//!   (seeded through the SDK); reports the time until the queue is drained.
//!
//! `--seed-config` opens the Manager's store through the SDK (the same file the daemon
//! uses) to enqueue `--seed-tasks` `sleep` tasks before the run (or, for `burst`, during it).
//! `--keep-queued` (with `cycles`) replaces every completed task with a new one, about
//! five times a second, so the queue stays near `--seed-tasks` for the whole run: how the
//! cycle rate depends on the queue's size is measured with it.
//! `--pid` samples the Manager's resident memory and reports the peak.
//! `--tags N` (needs `--seed-config`) spreads the tasks over N worker tags (`tag0` …): the
//! seeded ones in N consecutive blocks (as N jobs of one tag each would be), the refills
//! round-robin; after registering, worker `n` is tagged `tag{n % N}` through the SDK,
//! every fourth one also `tag{(n + 1) % N}` (docs/jobs.md, "Worker tags").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use flamenco_core::config::Config;
use flamenco_core::model::{Command, ObjectId, Task};
use flamenco_core::Manager;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::http1;

#[derive(Parser, Debug, Clone)]
#[command(about = "Simulate Flamenco Workers against a Manager")]
pub struct Args {
    /// Base URL of the Manager.
    #[arg(long, default_value = "http://127.0.0.1:8083")]
    pub manager: String,
    /// Number of simulated workers.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// How long to run (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value_t = Scenario::Cycles)]
    pub scenario: Scenario,
    /// The Manager's config file, to seed tasks through the SDK.
    #[arg(long)]
    pub seed_config: Option<PathBuf>,
    /// How many tasks to seed (needs --seed-config).
    #[arg(long, default_value_t = 0)]
    pub seed_tasks: usize,
    /// Bytes of log text in the second update of each cycle.
    #[arg(long, default_value_t = 2048)]
    pub log_bytes: usize,
    /// Register (and sign on) this many workers in all; those beyond `--workers` stay
    /// idle for the run, keeping their connection open (a farm's size, not its load).
    #[arg(long, default_value_t = 0)]
    pub registered_workers: usize,
    /// With `cycles`: keep the queue near `--seed-tasks` by enqueueing a new task for
    /// every completed one (needs --seed-config).
    #[arg(long)]
    pub keep_queued: bool,
    /// The Manager's process id, to report its peak resident memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Spread the tasks over this many worker tags and tag the workers (needs
    /// --seed-config); 0: no tags.
    #[arg(long, default_value_t = 0)]
    pub tags: usize,
    /// Soak mode (with `--scenario cycles`, needs --seed-config and --pid): run this many
    /// minutes with jobs submitted continuously and one row of figures per minute
    /// (`--duration` is ignored); 0: off.
    #[arg(long, default_value_t = 0)]
    pub soak_minutes: u64,
    /// The length of a soak "minute" in seconds (shorter in tests).
    #[arg(long, default_value_t = 60, hide = true)]
    pub soak_row_seconds: u64,
    /// With `--scenario restart-storm`: the shell command that starts the Manager again
    /// after `--pid` was stopped (it should `exec` the Manager; this run stops it at the end).
    #[arg(long)]
    pub restart_with: Option<String>,
    /// The seeded and refilled tasks belong to one job (needs --seed-config), so that the
    /// retry and blocklist rules apply to them (see `sim/retries.rs`).
    #[arg(long)]
    pub in_job: bool,
    /// Blocklist this many extra, idle workers for the job before the run (needs --in-job).
    #[arg(long, default_value_t = 0)]
    pub blocklist_others: usize,
    /// Blocklist this many of the simulated workers for the job before the run (needs
    /// --in-job): their claims skip all of its tasks.
    #[arg(long, default_value_t = 0)]
    pub blocklist_sim: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Cycles,
    EmptyPolls,
    MayIRun,
    Burst,
    /// `GET /healthz` on the workers' own connections: the HTTP stack alone.
    Ceiling,
    /// `GET /status-change`: the stack plus authentication, no store work.
    CeilingAuth,
    /// Stop and start the Manager under every registered worker's polls (see `storm`).
    RestartStorm,
}

mod retries;
mod soak;
mod storm;

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("bad duration unit in {s:?}; use ms, s or m")),
    })
}

/// Per-endpoint latency histograms and status counts, shared by the workers.
#[derive(Default)]
struct Stats {
    endpoints: BTreeMap<&'static str, Endpoint>,
    cycles: u64,
}

struct Endpoint {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            statuses: BTreeMap::new(),
            errors: 0,
        }
    }
}

impl Stats {
    fn record(&mut self, endpoint: &'static str, elapsed: Duration, status: Option<u16>) {
        let e = self.endpoints.entry(endpoint).or_default();
        let _ = e.latency_us.record((elapsed.as_micros() as u64).max(1));
        match status {
            Some(s) => *e.statuses.entry(s).or_default() += 1,
            None => e.errors += 1,
        }
    }

    fn merge(&mut self, other: Stats) {
        self.cycles += other.cycles;
        for (name, e) in other.endpoints {
            let mine = self.endpoints.entry(name).or_default();
            let _ = mine.latency_us.add(&e.latency_us);
            for (s, n) in e.statuses {
                *mine.statuses.entry(s).or_default() += n;
            }
            mine.errors += e.errors;
        }
    }
}

/// How a simulated worker talks HTTP: the light keep-alive client ([`crate::http1`]) for
/// `http://` Managers, reqwest for `https://`.
enum Transport {
    Raw(Box<http1::Conn>),
    Reqwest(reqwest::Client),
}

/// One simulated worker: its credentials and HTTP connection.
pub(crate) struct SimWorker {
    base: String,
    id: String,
    secret: String,
    transport: Transport,
    stats: Stats,
    /// Also record into this shared window (per-minute figures of a soak or storm).
    window: Option<Arc<Mutex<Window>>>,
}

/// Request bodies built once per run and shared by every worker (no JSON encoding in the
/// hot loop).
pub(crate) struct Bodies {
    active: Vec<u8>,
    log: Vec<u8>,
    completed: Vec<u8>,
}

impl Bodies {
    pub(crate) fn new(log_bytes: usize) -> Bodies {
        let log = "x".repeat(log_bytes.saturating_sub(1)) + "\n";
        let enc = |v: Value| serde_json::to_vec(&v).unwrap_or_default();
        Bodies {
            active: enc(json!({"activity": "", "current_command_idx": 0,
                "task_progress_percentage": 0, "command_progress_percentage": 0,
                "task_status": "active"})),
            log: enc(
                json!({"activity": "starting sleep", "current_command_idx": 1,
                "task_progress_percentage": 0, "command_progress_percentage": 0,
                "task_status": "active", "log": log}),
            ),
            completed: enc(
                json!({"activity": "Task completed", "current_command_idx": 1,
                "command_progress_percentage": 100, "task_status": "completed"}),
            ),
        }
    }
}

/// Requests, latencies and cycles since the window was last taken.
pub(crate) struct Window {
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) errors: u64,
    pub(crate) not_2xx: u64,
    pub(crate) cycles: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            errors: 0,
            not_2xx: 0,
            cycles: 0,
        }
    }
}

/// The only field of a task answer the simulator needs.
#[derive(serde::Deserialize)]
struct TaskId<'a> {
    #[serde(borrow, rename = "_id")]
    id: std::borrow::Cow<'a, str>,
}

impl SimWorker {
    fn new(base: &str) -> Result<SimWorker> {
        let transport = match http1::http_authority(base) {
            Some(authority) => {
                Transport::Raw(Box::new(http1::Conn::new(authority, "Flamenco-Worker/2.5")))
            }
            None => Transport::Reqwest(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .user_agent("Flamenco-Worker/2.5")
                    .build()?,
            ),
        };
        Ok(SimWorker {
            base: base.to_string(),
            id: String::new(),
            secret: String::new(),
            transport,
            stats: Stats::default(),
            window: None,
        })
    }

    pub(crate) async fn register(base: &str, n: usize) -> Result<SimWorker> {
        let mut w = SimWorker::new(base)?;
        w.secret = format!("{:064}", n);
        let body = serde_json::to_vec(&json!({"secret": w.secret, "platform": "linux",
                          "supported_task_types": ["sleep"], "nickname": format!("sim-{n}")}))?;
        let (status, answer) = w
            .send("POST", &["/register-worker"], Some(&body))
            .await
            .context("register-worker")?;
        if !(200..300).contains(&status) {
            bail!("register-worker answered {status}");
        }
        let answer: Value = serde_json::from_slice(&answer)?;
        w.id = answer["_id"].as_str().context("no _id")?.to_string();
        if let Transport::Raw(conn) = &mut w.transport {
            conn.set_basic_auth(&w.id, &w.secret);
        }
        w.sign_on(n).await?;
        Ok(w)
    }

    pub(crate) async fn sign_on(&mut self, n: usize) -> Result<()> {
        let body = serde_json::to_vec(
            &json!({"supported_task_types": ["sleep"], "nickname": format!("sim-{n}")}),
        )?;
        let (status, _) = self
            .send("POST", &["/sign-on"], Some(&body))
            .await
            .context("sign-on")?;
        if !(200..300).contains(&status) {
            bail!("sign-on answered {status}");
        }
        Ok(())
    }

    /// One request, not recorded.
    async fn send(
        &mut self,
        method: &str,
        path: &[&str],
        body: Option<&[u8]>,
    ) -> Result<(u16, bytes::Bytes)> {
        match &mut self.transport {
            Transport::Raw(conn) => {
                let (status, answer) = conn.send(method, path, body).await?;
                Ok((status, bytes::Bytes::copy_from_slice(answer)))
            }
            Transport::Reqwest(client) => {
                let method = reqwest::Method::from_bytes(method.as_bytes())?;
                let mut req = client.request(method, format!("{}{}", self.base, path.concat()));
                if !self.id.is_empty() {
                    req = req.basic_auth(&self.id, Some(&self.secret));
                }
                req = match body {
                    Some(b) => req
                        .header("Content-Type", "application/json")
                        .body(b.to_vec()),
                    None => req.header("Content-Length", "0"),
                };
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                Ok((status, resp.bytes().await?))
            }
        }
    }

    /// Send a request, record its latency and status; `f` gets the status and the body.
    async fn call<T>(
        &mut self,
        endpoint: &'static str,
        method: &str,
        path: &[&str],
        body: Option<&[u8]>,
        f: impl FnOnce(u16, &[u8]) -> T,
    ) -> Option<T> {
        let start = Instant::now();
        let result = match &mut self.transport {
            Transport::Raw(conn) => conn
                .send(method, path, body)
                .await
                .map(|(status, answer)| (status, f(status, answer)))
                .ok(),
            Transport::Reqwest(_) => self
                .send(method, path, body)
                .await
                .map(|(status, answer)| (status, f(status, &answer)))
                .ok(),
        };
        let elapsed = start.elapsed();
        let status = result.as_ref().map(|(s, _)| *s);
        self.stats.record(endpoint, elapsed, status);
        if let Some(window) = &self.window {
            let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
            let _ = w.latency_us.record((elapsed.as_micros() as u64).max(1));
            match status {
                None => w.errors += 1,
                Some(s) if !(200..300).contains(&s) => w.not_2xx += 1,
                Some(_) => {}
            }
        }
        result.map(|(_, t)| t)
    }

    pub(crate) async fn get_task(&mut self) -> Option<String> {
        self.call("/task", "POST", &["/task"], None, |status, body| {
            if status != 200 {
                return None;
            }
            let t: TaskId = serde_json::from_slice(body).ok()?;
            Some(t.id.into_owned())
        })
        .await
        .flatten()
    }

    /// `POST /task` that is answered at all (any status); false on a transport error.
    pub(crate) async fn poll(&mut self) -> Option<u16> {
        self.call("/task", "POST", &["/task"], None, |status, _| status)
            .await
    }

    async fn update(&mut self, task: &str, body: &[u8]) {
        self.call(
            "/tasks/{id}/update",
            "POST",
            &["/tasks/", task, "/update"],
            Some(body),
            |_, _| (),
        )
        .await;
    }

    async fn may_i_run(&mut self, task: &str) {
        self.call(
            "/may-i-run/{id}",
            "GET",
            &["/may-i-run/", task],
            None,
            |_, _| (),
        )
        .await;
    }

    /// `GET /healthz` with the worker's own connection and headers: the ceiling (no
    /// authentication, no store).
    async fn healthz(&mut self) {
        self.call("/healthz", "GET", &["/healthz"], None, |_, _| ())
            .await;
    }

    /// `GET /status-change`: authenticated, and no store work while nothing changes.
    async fn status_change(&mut self) {
        self.call(
            "/status-change",
            "GET",
            &["/status-change"],
            None,
            |_, _| (),
        )
        .await;
    }

    pub(crate) async fn cycle(&mut self, bodies: &Bodies) -> bool {
        let Some(task) = self.get_task().await else {
            return false;
        };
        self.update(&task, &bodies.active).await;
        self.may_i_run(&task).await;
        self.update(&task, &bodies.log).await;
        self.update(&task, &bodies.completed).await;
        self.stats.cycles += 1;
        if let Some(window) = &self.window {
            window.lock().unwrap_or_else(|e| e.into_inner()).cycles += 1;
        }
        true
    }
}

async fn seed(config_path: &std::path::Path, n: usize, tags: usize) -> Result<()> {
    let (config, _) = Config::load(Some(config_path))?;
    let manager = Manager::open(config).await?;
    // N consecutive blocks, one per tag.
    enqueue(&manager, n, |i| {
        (tags > 0).then(|| format!("tag{}", i * tags / n.max(1)))
    })
    .await?;
    manager.close().await?;
    Ok(())
}

/// Replace completed tasks until `deadline`: every 200 ms, enqueue as many tasks as
/// cycles completed since the last round.
async fn keep_queued(
    config_path: PathBuf,
    completed: Arc<AtomicU64>,
    deadline: Instant,
    tags: usize,
) -> Result<u64> {
    let (config, _) = Config::load(Some(&config_path))?;
    let manager = Manager::open(config).await?;
    let mut replaced = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = completed.load(Ordering::Relaxed);
        if done > replaced {
            let start = replaced as usize;
            enqueue(&manager, (done - replaced) as usize, |i| {
                (tags > 0).then(|| format!("tag{}", (start + i) % tags))
            })
            .await?;
            replaced = done;
        }
    }
    manager.close().await?;
    Ok(replaced)
}

/// Enqueue `n` tasks; `tag(i)` is the worker tag the `i`-th requires.
async fn enqueue(manager: &Manager, n: usize, tag: impl Fn(usize) -> Option<String>) -> Result<()> {
    let mut left = n;
    while left > 0 {
        let batch = left.min(10_000);
        let first = n - left;
        let tasks: Vec<Task> = (0..batch)
            .map(|i| {
                let mut task = Task::new(
                    format!("sim-{i}"),
                    "sleep",
                    vec![
                        Command::new("echo", json!({"message": "simulated"})),
                        Command::new("sleep", json!({"time_in_seconds": 0})),
                    ],
                );
                task.worker_tag = tag(first + i);
                task.job = retries::job();
                task
            })
            .collect();
        manager.enqueue_tasks(tasks).await?;
        left -= batch;
    }
    Ok(())
}

/// Tag worker `n` with `tag{n % tags}`, every fourth also with `tag{(n + 1) % tags}`
/// (one `tag_workers` call per tag set), then wait out the Manager's one-second worker
/// cache so the first claims see the tags.
async fn tag_workers(
    config_path: &std::path::Path,
    workers: &[SimWorker],
    tags: usize,
) -> Result<()> {
    let (config, _) = Config::load(Some(config_path))?;
    let manager = Manager::open(config).await?;
    let mut groups: BTreeMap<Vec<String>, Vec<ObjectId>> = BTreeMap::new();
    for (n, w) in workers.iter().enumerate() {
        let mut set = vec![format!("tag{}", n % tags)];
        if n % 4 == 3 && tags > 1 {
            set.push(format!("tag{}", (n + 1) % tags));
        }
        groups
            .entry(set)
            .or_default()
            .push(ObjectId::parse(&w.id).context("a worker id")?);
    }
    for (set, ids) in groups {
        manager
            .tag_workers(&ids, &set, &[])
            .await
            .map_err(|e| anyhow::anyhow!("tagging workers: {e}"))?;
    }
    manager.close().await?;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    Ok(())
}

/// CPU time (user + system, every thread) a process has used, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_user_kernel(pid).map(|(user, kernel)| user + kernel)
}

/// User and kernel CPU seconds of process `pid` so far: `utime` and `stime` of
/// /proc/PID/stat, the 12th and 13th fields after the command name (in parentheses), in
/// clock ticks of 100 per second.
fn cpu_user_kernel(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let seconds =
        |i: usize| -> Option<f64> { Some(fields.get(i)?.parse::<u64>().ok()? as f64 / 100.0) };
    Some((seconds(11)?, seconds(12)?))
}

/// Peak resident memory (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Per-endpoint counts, rates, latency percentiles and statuses; and the request total.
fn endpoint_report(total: &Stats, elapsed: f64) -> (serde_json::Map<String, Value>, u64) {
    let mut endpoints = serde_json::Map::new();
    let mut all_requests = 0u64;
    for (name, e) in &total.endpoints {
        let count = e.latency_us.len();
        all_requests += count;
        let q = |p: f64| e.latency_us.value_at_quantile(p) as f64 / 1000.0;
        endpoints.insert(
            name.to_string(),
            json!({
                "requests": count,
                "per_second": count as f64 / elapsed,
                "latency_ms": {"p50": q(0.50), "p95": q(0.95), "p99": q(0.99),
                               "max": e.latency_us.max() as f64 / 1000.0},
                "statuses": e.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "errors": e.errors,
            }),
        );
    }
    (endpoints, all_requests)
}

/// Run the simulation described by `args` and return the report.
pub async fn run(args: Args) -> Result<Value> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = args.manager.trim_end_matches('/').to_string();
    if args.seed_tasks > 0 && args.seed_config.is_none() {
        bail!("--seed-tasks needs --seed-config (the Manager's config file)");
    }
    if args.tags > 0 && args.seed_config.is_none() {
        bail!("--tags needs --seed-config (the Manager's config file, to tag the workers)");
    }
    if args.keep_queued && (args.scenario != Scenario::Cycles || args.seed_config.is_none()) {
        bail!("--keep-queued needs --scenario cycles and --seed-config");
    }
    if args.scenario == Scenario::RestartStorm
        && (args.pid.is_none() || args.restart_with.is_none())
    {
        bail!("--scenario restart-storm needs --pid (the Manager to stop) and --restart-with (a shell command that starts it again)");
    }
    if args.soak_minutes > 0 && args.scenario != Scenario::Cycles {
        bail!("--soak-minutes needs --scenario cycles");
    }
    if (args.blocklist_others > 0 || args.blocklist_sim > 0) && !args.in_job {
        bail!("--blocklist-others and --blocklist-sim need --in-job");
    }
    if args.in_job {
        let Some(cfg) = &args.seed_config else {
            bail!("--in-job needs --seed-config (the Manager's config file)");
        };
        retries::create_job(cfg).await?;
    }
    // The soak submits its own jobs (about --seed-tasks tasks queued).
    if args.scenario != Scenario::Burst && args.seed_tasks > 0 && args.soak_minutes == 0 {
        if let Some(cfg) = &args.seed_config {
            seed(cfg, args.seed_tasks, args.tags).await?;
        }
    }

    // Register (bcrypt on the Manager's side) a few workers at a time.
    let total_workers = args.workers.max(args.registered_workers);
    let mut workers = Vec::with_capacity(total_workers);
    let mut registering = tokio::task::JoinSet::new();
    for n in 0..total_workers {
        if registering.len() >= 8 {
            if let Some(done) = registering.join_next().await {
                workers.push(done??);
            }
        }
        let base = base.clone();
        registering.spawn(async move { SimWorker::register(&base, n).await });
    }
    while let Some(done) = registering.join_next().await {
        workers.push(done??);
    }
    if let (Some(cfg), true) = (&args.seed_config, args.tags > 0) {
        tag_workers(cfg, &workers, args.tags).await?;
    }
    let blocklisted = match &args.seed_config {
        Some(cfg) if args.blocklist_others > 0 || args.blocklist_sim > 0 => {
            let sim = &workers[..args.blocklist_sim.min(workers.len())];
            retries::blocklist(cfg, args.blocklist_others, sim).await?
        }
        _ => 0,
    };
    let bodies = Arc::new(Bodies::new(args.log_bytes));
    if args.scenario == Scenario::RestartStorm {
        return storm::run(&args, workers).await;
    }
    // The idle ones: registered and signed on, their connections open, no requests.
    let idle: Vec<SimWorker> = workers.split_off(args.workers.min(workers.len()));
    if args.soak_minutes > 0 {
        return soak::run(&args, workers, idle, bodies).await;
    }

    let deadline = Instant::now() + args.duration;
    let drained_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let cpu_at_start = (
        args.pid.and_then(cpu_seconds),
        cpu_seconds(std::process::id()),
    );
    let start = Instant::now();
    let burst_at = start + args.duration / 4;

    if args.scenario == Scenario::Burst {
        let cfg = args.seed_config.clone();
        let n = args.seed_tasks;
        tokio::spawn(async move {
            tokio::time::sleep_until(burst_at.into()).await;
            if let Some(cfg) = cfg {
                if let Err(e) = seed(&cfg, n, 0).await {
                    eprintln!("seeding the burst failed: {e:#}");
                }
            }
        });
    }

    let completed = Arc::new(AtomicU64::new(0));
    let refill = match (&args.seed_config, args.keep_queued) {
        (Some(cfg), true) => Some(tokio::spawn(keep_queued(
            cfg.clone(),
            completed.clone(),
            deadline,
            args.tags,
        ))),
        _ => None,
    };

    let mut handles = Vec::new();
    for mut w in workers {
        let bodies = bodies.clone();
        let completed = completed.clone();
        let scenario = args.scenario;
        let drained_at = drained_at.clone();
        handles.push(tokio::spawn(async move {
            let mut held: Option<String> = None;
            while Instant::now() < deadline {
                match scenario {
                    Scenario::Cycles => {
                        if w.cycle(&bodies).await {
                            completed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Scenario::EmptyPolls => {
                        w.get_task().await;
                    }
                    Scenario::Ceiling => w.healthz().await,
                    Scenario::CeilingAuth => w.status_change().await,
                    // Returned earlier (storm::run).
                    Scenario::RestartStorm => break,
                    Scenario::MayIRun => match &held {
                        Some(task) => {
                            let task = task.clone();
                            w.may_i_run(&task).await;
                        }
                        None => {
                            held = w.get_task().await;
                            if held.is_none() {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    },
                    Scenario::Burst => {
                        let did = w.cycle(&bodies).await;
                        if !did {
                            if Instant::now() > burst_at + Duration::from_millis(500) {
                                let mut d = drained_at.lock().unwrap_or_else(|e| e.into_inner());
                                if d.is_none() {
                                    *d = Some(Instant::now());
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            w.stats
        }));
    }

    let rss_peak = Arc::new(Mutex::new(0u64));
    if let Some(pid) = args.pid {
        let rss_peak = rss_peak.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                if let Some(rss) = peak_rss(pid) {
                    let mut p = rss_peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = (*p).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    let mut total = Stats::default();
    for h in handles {
        total.merge(h.await?);
    }
    let idle_workers = idle.len();
    drop(idle);
    let elapsed = start.elapsed().as_secs_f64();
    let replaced = match refill {
        Some(refill) => Some(refill.await??),
        None => None,
    };
    let (endpoints, all_requests) = endpoint_report(&total, elapsed);
    let mut report = json!({
        "scenario": format!("{:?}", args.scenario),
        "workers": args.workers,
        "idle_workers": idle_workers,
        "seconds": elapsed,
        "requests": all_requests,
        "requests_per_second": all_requests as f64 / elapsed,
        "task_cycles": total.cycles,
        "task_cycles_per_second": total.cycles as f64 / elapsed,
        "worker_tags": args.tags,
        "endpoints": endpoints,
    });
    if let Some(replaced) = replaced {
        report["tasks_replaced"] = json!(replaced);
    }
    if args.in_job {
        report["in_job"] = json!(true);
        report["blocklisted_workers"] = json!(blocklisted);
    }
    // CPU time per request: a figure that other load on the machine disturbs far less
    // than the rates.
    let per_request = |cpu: f64| json!(1e6 * cpu / all_requests.max(1) as f64);
    if let (Some(a), Some(b)) = (cpu_at_start.0, args.pid.and_then(cpu_seconds)) {
        report["manager_cpu_seconds"] = json!(b - a);
        report["manager_cpu_us_per_request"] = per_request(b - a);
    }
    if let (Some(a), Some(b)) = (cpu_at_start.1, cpu_seconds(std::process::id())) {
        report["simulator_cpu_seconds"] = json!(b - a);
        report["simulator_cpu_us_per_request"] = per_request(b - a);
    }
    if let Some(pid) = args.pid {
        let sampled = *rss_peak.lock().unwrap_or_else(|e| e.into_inner());
        report["manager_peak_rss_bytes"] = json!(peak_rss(pid).unwrap_or(sampled).max(sampled));
    }
    if args.scenario == Scenario::Burst {
        let drained = *drained_at.lock().unwrap_or_else(|e| e.into_inner());
        report["burst_tasks"] = json!(args.seed_tasks);
        report["burst_drain_seconds"] = json!(drained.map(|d| (d - burst_at).as_secs_f64()));
    }
    Ok(report)
}
