//! The pieces of one farm behind a load balancer, for the farm tests (issue 17 items 2
//! and 5): `flamenco serve` processes on one MongoDB database ([`Daemon`]), a real HAProxy
//! in front of them ([`Balancer`], Debian's `haproxy`, health-checking `/healthz`), a
//! watcher of every Manager's leader flag and of the lease document ([`LeaderWatch`]), and
//! simulated workers pointed at the balancer ([`worker`]) that record every answer.
//!
//! Include it with `#[path = "balancer/mod.rs"] mod balancer;` next to `mod support;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flamenco_core::model::{ObjectId, TaskStatus};
use flamenco_core::store::mongo::MongoStore;
use flamenco_core::store::{CoordinationStore, LEADER_LEASE};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::support;

/// How long a single condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Debian's `haproxy`, if installed.
pub fn haproxy() -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join("haproxy");
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// `haproxy`, or a visible skip (a failure under `CI=true`).
pub fn haproxy_or_skip(test: &str) -> Option<PathBuf> {
    let found = haproxy();
    if found.is_none() {
        flamenco_core::testing::skip_or_fail(
            "HAProxy",
            test,
            "haproxy is not installed",
            "install Debian's haproxy package (.ci/run does)",
        );
    }
    found
}

/// A private SecantusDB (the program in `FLAMENCO_TEST_SECANTUSD`) on its own port with
/// its data on disk, so that it can be stopped, killed and started again with the same
/// data. Killed when dropped.
pub struct DbServer {
    program: String,
    pub port: u16,
    storage: PathBuf,
    log: PathBuf,
    child: Option<std::process::Child>,
}

impl DbServer {
    /// Start it in `dir` and wait until it listens. `--sync-on-commit`: a write
    /// acknowledged as journaled (the store asks for `j: true`) is on disk, as with
    /// MongoDB, so it survives `kill -9` of the server.
    pub fn start(program: &str, dir: &Path) -> DbServer {
        let mut server = DbServer {
            program: program.to_string(),
            port: support::free_port(),
            storage: dir.join("db"),
            log: dir.join("db.log"),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/{database}?retryWrites=false",
            self.port
        )
    }

    /// Start it again on the same port and data (after [`DbServer::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the database server runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let child = std::process::Command::new(&self.program)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(&self.storage)
            .args(["--log-level", "WARNING", "--sync-on-commit"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program));
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the test database server did not listen on port {} within {WAIT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send a signal (`STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the database server runs");
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL (no clean shutdown; works on a stopped process too), and wait until it is
    /// gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `flamenco serve` process of the farm.
pub struct Daemon {
    pub name: String,
    pub port: u16,
    pub config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Write `<dir>/<name>.yaml` (listen, data_dir, `database_url`, `instance_name`, then
    /// `extra` YAML with `{port}` replaced by this Manager's port) and start it.
    pub async fn start(dir: &Path, name: &str, url: &str, extra: &str) -> Daemon {
        let port = support::free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "listen: '127.0.0.1:{port}'\ndata_dir: '{}'\ndatabase_url: '{url}'\n\
                 instance_name: {name}\n{}",
                dir.join(format!("data-{name}")).display(),
                extra.replace("{port}", &port.to_string())
            ),
        )
        .expect("write config");
        let mut d = Daemon {
            name: name.to_string(),
            port,
            config,
            dir: dir.to_path_buf(),
            child: None,
        };
        d.spawn().await;
        d
    }

    async fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flamenco"))
            .current_dir(&self.dir)
            .env_remove("RUST_LOG")
            .arg("-c")
            .arg(&self.config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn flamenco serve");
        support::wait_until_listening(&mut child, WAIT).await;
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// `Some(true|false)` from `flamenco_leader{instance=…}` in `/metrics`; `None` when it
    /// does not answer.
    pub async fn leads(&self, http: &reqwest::Client) -> Option<bool> {
        let text = http
            .get(self.url("/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("flamenco_leader{{instance=\"{}\"}} ", self.name);
        let line = text.lines().find(|l| l.starts_with(&prefix))?;
        Some(line.ends_with(" 1"))
    }

    /// `/healthz`: (status code, body); `None` when it does not answer.
    pub async fn healthz(&self, http: &reqwest::Client) -> Option<(u16, Value)> {
        let resp = http
            .get(self.url("/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.ok()?))
    }

    /// `kill -9`, and wait until it is gone.
    pub async fn kill_9(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("pid").to_string();
        let status = Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success());
        child.wait().await.expect("wait");
    }
}

/// HAProxy in front of `ports`: round robin, health checks on `/healthz` every 300 ms,
/// and a request whose connection fails is sent to another Manager. Only connection
/// failures: a request that reached a Manager must not be sent again by the balancer (a
/// worker's update that was stored before its Manager died would be stored twice; with
/// `retry-on empty-response` the farm test saw exactly that). Workers retry by themselves.
/// docs/operations.md shows the same configuration.
pub fn haproxy_config(listen: u16, ports: &[u16]) -> String {
    let mut text = format!(
        "global\n  maxconn 512\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
         \x20 retries 3\n  option redispatch\n  retry-on conn-failure\n\
         frontend farm\n  bind 127.0.0.1:{listen}\n  default_backend managers\n\
         backend managers\n  balance roundrobin\n  option httpchk GET /healthz\n\
         \x20 default-server inter 300ms fall 2 rise 1\n"
    );
    for (i, p) in ports.iter().enumerate() {
        text.push_str(&format!("  server m{} 127.0.0.1:{p} check\n", i + 1));
    }
    // For the tests only: a request with `x-farm-server: m2` goes to m2 (see
    // [`FORCE_SERVER`]), so that a test can hold a request at a Manager it then kills.
    for i in 1..=ports.len() {
        text.push_str(&format!(
            "  use-server m{i} if {{ req.hdr({FORCE_SERVER}) -m str m{i} }}\n"
        ));
    }
    text
}

/// The header that sends a request to one Manager (`m1`, `m2`, … in the order of the
/// ports given to [`haproxy_config`]); tests only, not in the documented configuration.
pub const FORCE_SERVER: &str = "x-farm-server";

/// A running HAProxy, killed when dropped.
pub struct Balancer {
    pub port: u16,
    child: Child,
}

impl Balancer {
    /// Start HAProxy in front of `ports` and wait until it answers `/healthz`.
    pub async fn start(haproxy: &Path, dir: &Path, ports: &[u16]) -> Balancer {
        let port = support::free_port();
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, haproxy_config(port, ports)).expect("haproxy.cfg");
        let mut child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy");
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await
            {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("haproxy exited: {exit:?}");
            }
            assert!(start.elapsed() < WAIT, "haproxy does not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Balancer { port, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Wait until exactly one running Manager says it leads (never two); its index.
pub async fn one_leader(http: &reqwest::Client, daemons: &[Daemon]) -> usize {
    let start = Instant::now();
    loop {
        let mut leaders = Vec::new();
        for (i, m) in daemons.iter().enumerate() {
            if m.running() && m.leads(http).await == Some(true) {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
        if let [i] = leaders[..] {
            return i;
        }
        assert!(start.elapsed() < WAIT, "nobody leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What [`LeaderWatch`] saw.
#[derive(Debug, Default, Clone)]
pub struct LeaderLog {
    /// Rounds in which every Manager was asked.
    pub rounds: u64,
    /// Rounds in which two or more Managers said they lead: (elapsed, names).
    pub overlaps: Vec<(Duration, Vec<String>)>,
    /// Each change of who says it leads: (elapsed, names; empty when nobody).
    pub changes: Vec<(Duration, Vec<String>)>,
    /// Every distinct (term, holder) the lease document showed, in order.
    pub terms: Vec<(i64, String)>,
    /// Lease reads that failed (the database was away).
    pub lease_read_errors: u64,
    /// Every `/healthz` answer: status → count (0: no answer).
    pub health: BTreeMap<u16, u64>,
}

/// Asks every Manager's `/healthz` whether it leads, round after round, and reads the
/// lease document in between, until stopped.
pub struct LeaderWatch {
    /// When it started: the times in its [`LeaderLog`] count from here.
    pub started: Instant,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<LeaderLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderWatch {
    /// `ports`: (instance name, port) of each Manager; `lease_store`: a connection of its
    /// own to the farm's database.
    pub fn start(managers: Vec<(String, u16)>, lease_store: MongoStore) -> LeaderWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(LeaderLog::default()));
        let (s, l) = (stop.clone(), log.clone());
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client");
            let mut last: Option<Vec<String>> = None;
            let mut round = 0u64;
            while !s.load(Ordering::Relaxed) {
                let asks = managers.iter().map(|(name, port)| {
                    let http = http.clone();
                    async move {
                        let Ok(resp) = http
                            .get(format!("http://127.0.0.1:{port}/healthz"))
                            .send()
                            .await
                        else {
                            return (0, None);
                        };
                        let status = resp.status().as_u16();
                        let leads = resp
                            .json::<Value>()
                            .await
                            .is_ok_and(|body| body["leader"] == true);
                        (status, leads.then(|| name.clone()))
                    }
                });
                let answers = futures::future::join_all(asks).await;
                let at = started.elapsed();
                let mut leaders = Vec::new();
                {
                    let mut log = l.lock().unwrap_or_else(|e| e.into_inner());
                    for (status, leader) in answers {
                        *log.health.entry(status).or_default() += 1;
                        leaders.extend(leader);
                    }
                    log.rounds += 1;
                    if leaders.len() > 1 {
                        log.overlaps.push((at, leaders.clone()));
                    }
                    if last.as_ref() != Some(&leaders) {
                        log.changes.push((at, leaders.clone()));
                        last = Some(leaders);
                    }
                }
                round += 1;
                // The lease document every fifth round (a read costs the database a
                // command; the flags are read from memory).
                if round.is_multiple_of(5) {
                    let read = tokio::time::timeout(
                        Duration::from_secs(2),
                        lease_store.lease_current(LEADER_LEASE),
                    )
                    .await;
                    let mut log = l.lock().unwrap_or_else(|e| e.into_inner());
                    match read {
                        Ok(Ok(Some(lease))) => {
                            let entry = (lease.term, lease.holder);
                            if log.terms.last() != Some(&entry) {
                                log.terms.push(entry);
                            }
                        }
                        Ok(Ok(None)) => {}
                        _ => log.lease_read_errors += 1,
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        LeaderWatch {
            started,
            stop,
            log,
            task,
        }
    }

    pub fn log(&self) -> LeaderLog {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn stop(self) -> LeaderLog {
        self.stop.store(true, Ordering::Relaxed);
        let log = self.log.clone();
        let _ = self.task.await;
        let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        log
    }
}

/// An update the farm answered 2xx.
#[derive(Clone, Debug)]
pub struct Acked {
    pub task: ObjectId,
    pub status: TaskStatus,
    pub log: String,
}

/// What the simulated workers did and saw.
#[derive(Default)]
pub struct Record {
    /// (task, worker) for every task handed out.
    pub claims: Vec<(ObjectId, usize)>,
    pub acked: Vec<Acked>,
    /// Requests that failed (no answer, or a 5xx) and were sent again.
    pub retries: u64,
    /// Every answer: (route, HTTP status) → count; status 0: no answer (connection
    /// failure or timeout).
    pub answers: BTreeMap<(&'static str, u16), u64>,
    /// The longest wait for an answer, by status (0: no answer).
    pub slowest: BTreeMap<u16, Duration>,
}

impl Record {
    fn answer(&mut self, route: &'static str, status: u16, took: Duration) {
        *self.answers.entry((route, status)).or_default() += 1;
        let slowest = self.slowest.entry(status).or_default();
        *slowest = (*slowest).max(took);
    }

    /// Every answer with status `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.answers
            .iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every 5xx answer other than 503; 502 and 504 (the balancer's, when a Manager died
    /// mid-request) are left out too when `allow_gateway_errors`.
    pub fn server_errors(&self, allow_gateway_errors: bool) -> Vec<((&'static str, u16), u64)> {
        self.answers
            .iter()
            .filter(|((_, s), _)| {
                (500..600).contains(s)
                    && *s != 503
                    && !(allow_gateway_errors && (*s == 502 || *s == 504))
            })
            .map(|(k, n)| (*k, *n))
            .collect()
    }
}

fn lock(rec: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
    rec.lock().unwrap_or_else(|e| e.into_inner())
}

/// A simulated worker behind the balancer (`base`): registers, claims tasks, sends an
/// `active` and a `completed` update for each, each attempt with a log line of its own; a
/// request that fails (no answer or a 5xx) is sent again after `pause`, as workers do.
/// Stops when `stop` is set.
pub async fn worker(
    base: String,
    n: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let secret = format!("farm-worker-secret-{n}-{}", ObjectId::new());
    let id = loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let sent = Instant::now();
        let resp = http
            .post(format!("{base}/register-worker"))
            .json(&json!({"secret": secret, "platform": "linux",
                          "supported_task_types": ["sleep"], "nickname": format!("farm-{n}")}))
            .send()
            .await;
        let status = resp.as_ref().map_or(0, |r| r.status().as_u16());
        lock(&rec).answer("/register-worker", status, sent.elapsed());
        if let Ok(r) = resp {
            if r.status().is_success() {
                let body: Value = r.json().await.expect("register body");
                break body["_id"].as_str().expect("_id").to_string();
            }
        }
        lock(&rec).retries += 1;
        tokio::time::sleep(pause).await;
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let resp = http
            .post(format!("{base}/task"))
            .basic_auth(&id, Some(&secret))
            .header("Content-Length", "0")
            .send()
            .await;
        let status = resp.as_ref().map_or(0, |r| r.status().as_u16());
        lock(&rec).answer("/task", status, sent.elapsed());
        let resp = match resp {
            Ok(r) if status == 200 => r,
            Ok(_) if status == 204 => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                continue;
            }
            _ => {
                lock(&rec).retries += 1;
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let Ok(task) = resp.json::<Value>().await else {
            continue;
        };
        let task_id = ObjectId::parse(task["_id"].as_str().expect("task _id")).expect("task id");
        lock(&rec).claims.push((task_id, n));
        'updates: for status in [TaskStatus::Active, TaskStatus::Completed] {
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                seq += 1;
                // Each attempt has a log line of its own: an unanswered attempt may or may
                // not be stored, an answered one exactly once.
                let log = format!("farm worker {n} update {seq} task {task_id}\n");
                let sent = Instant::now();
                let resp = http
                    .post(format!("{base}/tasks/{task_id}/update"))
                    .basic_auth(&id, Some(&secret))
                    .json(&json!({"task_status": status.as_str(), "activity": "farm",
                                  "current_command_idx": 0, "task_progress_percentage": 0,
                                  "command_progress_percentage": 0, "log": log}))
                    .send()
                    .await;
                let code = resp.as_ref().map_or(0, |r| r.status().as_u16());
                lock(&rec).answer("/tasks/{task_id}/update", code, sent.elapsed());
                match code {
                    200..=299 => {
                        lock(&rec).acked.push(Acked {
                            task: task_id,
                            status: status.clone(),
                            log,
                        });
                        break;
                    }
                    400..=499 => break 'updates,
                    _ => {
                        lock(&rec).retries += 1;
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }
}
