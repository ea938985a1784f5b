//! The pieces of a real farm on loopback for the end-to-end tests: a `flamenco serve`
//! process with its own data directory and port ([`Farm`]), the real Python Flamenco
//! Worker 2.0.6 or 2.5 ([`Worker`], installed by scripts/install-workers.sh into
//! `.venv-worker-<version>/`), waiting on observable conditions with a deadline, and the
//! after-run checks: no traceback in any worker's log, and no answer from the Manager to a
//! worker outside the documented set (docs/worker-api.md), read from its `/metrics`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::support;

/// How long any single condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(120);

/// The Flamenco `flamenco` binary under test: the one cargo built for this test run, or
/// `FLAMENCO_E2E_BIN` (e.g. `target/release/flamenco`) to test another build.
pub fn flamenco_bin() -> PathBuf {
    match std::env::var_os("FLAMENCO_E2E_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_flamenco")),
    }
}

/// The repository root (the worker venvs live there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("flamenco-cli has a parent folder")
        .to_path_buf()
}

/// The worker versions under test.
pub const V2_0_6: &str = "2.0.6";
pub const V2_5: &str = "2.5";

/// Whether the worker `version` is installed. When it is not: a visible skip outside CI
/// (then `false`), a failure under `CI=true`.
pub fn worker_available(version: &str, test: &str) -> bool {
    let exe = worker_exe(version);
    if exe.is_file() {
        return true;
    }
    flamenco_core::testing::skip_or_fail(
        "real Flamenco Worker",
        test,
        &format!("{} is not installed", exe.display()),
        "run scripts/install-workers.sh (scripts/test.sh does); it needs Python 3.6 and 3.7, \
         e.g. from pyenv, and ../shared/real-worker",
    );
    false
}

fn worker_exe(version: &str) -> PathBuf {
    repo_root()
        .join(format!(".venv-worker-{version}"))
        .join("bin/flamenco-worker")
}

/// Wait until `check` returns `Some`, polling every 100 ms, for at most `wait`; panic with
/// `what` and `context()` (logs) otherwise.
pub async fn wait_for<T, F, Fut>(what: &str, wait: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("not within {wait:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Send SIGTERM (or SIGKILL) to a child by its pid.
pub async fn signal(child: &Child, sig: &str) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .await;
    }
}

/// The last `n` lines of a text file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One `flamenco serve` on loopback, in standalone mode unless the extra configuration
/// says otherwise, with its own data directory.
pub struct Farm {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
    serve: Option<Child>,
    starts: usize,
    pub http: reqwest::Client,
}

impl Farm {
    /// Write the configuration (`extra` is appended YAML, `{port}` in it replaced by the
    /// Manager's port) and start the Manager.
    pub async fn start(name: &str, extra: &str) -> Farm {
        let dir = tempfile::Builder::new()
            .prefix(&format!("e2e-{name}-"))
            .tempdir()
            .expect("temp dir");
        let port = support::free_port();
        let config = dir.path().join("flamenco-manager.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: '127.0.0.1:{port}'\ndata_dir: '{}'\n{}",
                dir.path().join("data").display(),
                extra.replace("{port}", &port.to_string())
            ),
        )
        .expect("write the Manager's configuration");
        let mut farm = Farm {
            name: name.to_string(),
            dir,
            port,
            config,
            serve: None,
            starts: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        };
        farm.start_serve().await;
        farm
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn serve_log(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("serve-{n}.log"))
    }

    /// The Manager's log of its current (last) run, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.serve_log(self.starts), 60)
    }

    /// Start `flamenco serve` and wait until it answers.
    pub async fn start_serve(&mut self) {
        assert!(self.serve.is_none(), "the Manager already runs");
        self.starts += 1;
        let log = std::fs::File::create(self.serve_log(self.starts)).expect("serve log");
        let child = Command::new(flamenco_bin())
            .arg("-c")
            .arg(&self.config)
            .arg("serve")
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn flamenco serve");
        self.serve = Some(child);
        let url = format!("{}/api/status", self.url());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            let exited = self
                .serve
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "[{}] flamenco serve did not start ({exited:?}); its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9` the Manager.
    pub async fn kill_9(&mut self) {
        let mut child = self.serve.take().expect("the Manager runs");
        signal(&child, "KILL").await;
        child.wait().await.expect("wait for the killed Manager");
    }

    /// SIGTERM, and wait for a clean exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.serve.take() {
            signal(&child, "TERM").await;
            let exit = tokio::time::timeout(WAIT, child.wait())
                .await
                .unwrap_or_else(|_| panic!("[{}] serve did not stop after SIGTERM", self.name))
                .expect("wait");
            assert!(
                exit.success(),
                "[{}] serve exited with {exit} after SIGTERM; log:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Run `flamenco -c <config> <args>`; returns (success, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(flamenco_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run flamenco");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Run the CLI and panic unless it succeeds; returns stdout.
    pub async fn cli_ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.cli(args).await;
        assert!(
            ok,
            "[{}] flamenco {args:?} failed:\n{stdout}\n{stderr}",
            self.name
        );
        stdout
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("[{}] GET {path}: {e}", self.name));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "[{}] GET {path}: {status} {text}",
            self.name
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("[{}] GET {path}: not JSON ({e}): {text}", self.name))
    }

    /// POST JSON; returns (status, body).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url()))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("[{}] POST {path}: {e}", self.name));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Submit a job through the API; returns its id.
    pub async fn submit(&self, job_type: &str, settings: Value) -> String {
        let (status, job) = self
            .post(
                "/api/jobs",
                json!({"name": format!("e2e {job_type}"), "job_type": job_type, "settings": settings}),
            )
            .await;
        assert_eq!(status, 201, "[{}] submit {job_type}: {job}", self.name);
        job["_id"].as_str().expect("the job's _id").to_string()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/jobs/{id}")).await
    }

    pub async fn tasks(&self, job: &str) -> Vec<Value> {
        self.get(&format!("/api/jobs/{job}/tasks"))
            .await
            .get("tasks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// Wait until the job has status `status` (panics early when it reaches another final
    /// status).
    pub async fn wait_job_status(&self, id: &str, status: &str, wait: Duration) -> Value {
        let what = format!("[{}] job {id} becomes {status}", self.name);
        wait_for(&what, wait, || async {
            let job = self.job(id).await;
            let now = job["status"].as_str().unwrap_or_default().to_string();
            if now == status {
                return Some(job);
            }
            if ["completed", "failed", "canceled"].contains(&now.as_str()) {
                let tasks = self.tasks(id).await;
                panic!(
                    "[{}] job {id} became {now}, not {status}: {job}\ntasks: {tasks:#?}\nManager log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            None
        })
        .await
    }

    /// The dashboard API's view of one worker.
    pub async fn worker_status(&self, id: &str) -> Option<Value> {
        let all = self.get("/api/status/workers?group=all&limit=500").await;
        all["workers"]
            .as_array()?
            .iter()
            .find(|w| w["id"] == id)
            .cloned()
    }

    /// A task's log as `flamenco task log ID` prints it.
    pub async fn task_log(&self, task: &str) -> String {
        self.cli_ok(&["task", "log", task]).await
    }

    /// A task's log as `GET /api/tasks/{id}/log` gives it (the body as text).
    pub async fn task_log_api(&self, task: &str) -> String {
        let resp = self
            .http
            .get(format!("{}/api/tasks/{task}/log", self.url()))
            .send()
            .await
            .expect("GET task log");
        assert!(resp.status().is_success(), "GET /api/tasks/{task}/log");
        resp.text().await.unwrap_or_default()
    }

    /// Every `flamenco_http_requests_total` series: (method, route, status) → count.
    pub async fn responses(&self) -> BTreeMap<(String, String, String), f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("flamenco_http_requests_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let mut map = BTreeMap::new();
            for pair in labels.split("\",") {
                if let Some((k, v)) = pair.split_once("=\"") {
                    map.insert(k.trim().to_string(), v.trim_end_matches('"').to_string());
                }
            }
            out.insert(
                (
                    map.remove("method").unwrap_or_default(),
                    map.remove("route").unwrap_or_default(),
                    map.remove("status").unwrap_or_default(),
                ),
                value.trim().parse().unwrap_or(0.0),
            );
        }
        out
    }

    /// Fail on any answer to a worker outside the documented set (docs/worker-api.md),
    /// any 5xx on any route, and any request no route matched.
    ///
    /// No 409 is allowed on task updates: in these scenarios every update comes from the
    /// task's own worker. That includes the last words of a cancelled task (204 since the
    /// Manager keeps them; v2 answered 409) and 2.5's log-only update "returned this task
    /// to the Manager queue" after a return, which finds the task either `canceled` with
    /// the same worker (last words) or back in the queue with no worker (accepted as any
    /// update to an unassigned task). A 409 would still be right for that trailing update
    /// if another worker had claimed the task in between; no scenario here has a second
    /// worker that could.
    pub async fn check_responses(&self) {
        let mut bad = Vec::new();
        for ((method, route, status), count) in self.responses().await {
            let allowed: &[&str] = match route.as_str() {
                "/register-worker" => &["200"],
                "/sign-on" | "/sign-off" | "/output-produced" => &["204"],
                "/task" => &["200", "204", "423"],
                "/tasks/{task_id}/update" | "/tasks/{task_id}/return" => &["204"],
                "/may-i-run/{task_id}" => &["200"],
                "/status-change" => &["200", "204"],
                "/ack-status-change/{status}" => &["204"],
                "unmatched" => &[],
                _ if status.starts_with('5') => &[],
                _ => continue,
            };
            if !allowed.contains(&status.as_str()) {
                bad.push(format!("{method} {route} → {status} ×{count}"));
            }
        }
        assert!(
            bad.is_empty(),
            "[{}] the Manager gave answers outside the documented set: {bad:?}\nManager log:\n{}",
            self.name,
            self.log_tail()
        );
    }
}

impl Drop for Farm {
    /// A failed scenario keeps its folder (Manager and worker logs, data) for a look.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            crate::report(&format!(
                "[{}] failed: its Manager and worker logs are kept in {}",
                self.name,
                dir.keep().display()
            ));
        }
    }
}

/// The task types every test worker declares.
pub const TASK_TYPES: &str = "sleep exec blender-render file-management";

/// A real Flamenco Worker process with its own working directory and `HOME` (so its own
/// identity and update queue).
pub struct Worker {
    pub version: &'static str,
    pub name: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Worker {
    /// Start a worker of `version` against `farm`, in `<farm dir>/worker-<name>`.
    pub fn start(farm: &Farm, version: &'static str, name: &str) -> Worker {
        Self::start_with(farm, version, name, TASK_TYPES)
    }

    pub fn start_with(farm: &Farm, version: &'static str, name: &str, task_types: &str) -> Worker {
        let dir = farm.path().join(format!("worker-{name}"));
        Self::start_at(&dir, &farm.url(), &farm.name, version, name, task_types)
    }

    /// Start a worker of `version` in `dir` against the Manager (or load balancer) at
    /// `url`; `farm` names the farm in messages.
    pub fn start_at(
        dir: &Path,
        url: &str,
        farm: &str,
        version: &'static str,
        name: &str,
        task_types: &str,
    ) -> Worker {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir).expect("worker dir");
        let log = dir.join("flamenco-worker.log");
        // The logging sections are required (without them: KeyError 'formatters').
        let cfg = format!(
            "[flamenco-worker]\n\
             manager_url = {url}/\n\
             task_types = {task_types}\n\
             task_update_queue_db = flamenco-worker.db\n\
             may_i_run_interval_seconds = 2\n\
             push_log_max_interval_seconds = 1\n\
             push_log_max_entries = 200\n\
             push_act_max_interval_seconds = 1\n\
             \n\
             [loggers]\nkeys = root,flamenco_worker\n\
             [logger_root]\nlevel = WARNING\nhandlers = file\n\
             [logger_flamenco_worker]\nlevel = INFO\nqualname = flamenco_worker\nhandlers = file\npropagate = 0\n\
             [handlers]\nkeys = file\n\
             [handler_file]\nclass = logging.FileHandler\nformatter = flamenco\nargs = ('{log}', 'a', 'utf8')\n\
             [formatters]\nkeys = flamenco\n\
             [formatter_flamenco]\nformat = %(asctime)-15s %(levelname)8s %(name)s %(message)s\n",
            log = log.display(),
        );
        std::fs::write(dir.join("flamenco-worker.cfg"), cfg).expect("worker config");
        let mut w = Worker {
            version,
            name: format!("{farm}/{name} ({version})"),
            dir,
            child: None,
        };
        w.spawn();
        w
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .expect("worker stderr file");
        let child = Command::new(worker_exe(self.version))
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup"))
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn flamenco-worker");
        self.child = Some(child);
    }

    /// Start the same worker again (same identity, same queue).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} still runs", self.name);
        self.spawn();
    }

    /// Its log file and stderr together.
    pub fn log(&self) -> String {
        let mut text =
            std::fs::read_to_string(self.dir.join("flamenco-worker.log")).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default());
        text
    }

    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The worker id it registered with (from `$HOME/.flamenco-worker.cfg`).
    pub async fn id(&self) -> String {
        let home_cfg = self.dir.join(".flamenco-worker.cfg");
        let what = format!("{} registers (writes its id)", self.name);
        wait_for(&what, WAIT, || async {
            let text = std::fs::read_to_string(&home_cfg).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("worker_id = "))
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
        })
        .await
    }

    /// Whether the process has exited (with its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten();
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Wait until the process exits by itself.
    pub async fn wait_exit(&mut self, wait: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("worker runs");
        let status = tokio::time::timeout(wait, child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit; log:\n{}", self.name, self.log_tail()))
            .expect("wait for the worker");
        self.child = None;
        status
    }

    /// SIGTERM: the worker signs off and exits.
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            signal(child, "TERM").await;
            let status = self.wait_exit(WAIT).await;
            assert!(
                status.success(),
                "{} exited with {status} after SIGTERM; log:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Count of rows still waiting in the worker's update queue.
    pub fn queued_updates(&self) -> usize {
        queue_rows(&self.dir.join("flamenco-worker.db"))
            .unwrap_or_else(|e| panic!("{}: cannot read its update queue: {e}", self.name))
    }

    /// Fail on tracebacks and on logged answers outside the documented set, including
    /// "discarding update" (a 404 or 409 to an update: see [`Farm::check_responses`]).
    pub fn check_log(&self) {
        let log = self.log();
        let mut bad = Vec::new();
        for line in log.lines() {
            // Each pattern is a log line of the worker (both versions) that reports a
            // crash or an answer outside the documented set.
            let refused = [
                "Traceback",
                "Unexpected exception",
                "Uncaught exception",
                "crashed",
                "did not accept our updates",
                "rejected our output notification",
                "Unable to sign on",
                "Unable to register",
            ];
            // "Error 500 fetching new task", "Error 404 returning task …": an HTTP status.
            // (A connection error while the Manager is down reads "Error fetching new task,
            // will retry…": expected in the kill -9 scenario.)
            let error_answer = line.split("Error ").skip(1).any(|rest| {
                let code = rest.split(' ').next().unwrap_or_default();
                !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit())
            });
            if error_answer
                || refused.iter().any(|p| line.contains(p))
                || line.contains("discarding update")
            {
                bad.push(line.to_string());
            }
        }
        assert!(
            bad.is_empty(),
            "{}: its log shows errors:\n{}\n--- log tail:\n{}",
            self.name,
            bad.join("\n"),
            self.log_tail()
        );
    }
}

/// Rows in a worker's `fworker_queue`, read with Python's sqlite3 module.
fn queue_rows(db: &Path) -> Result<usize, String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print(c.execute('select count(*) from fworker_queue').fetchone()[0])",
        ])
        .arg(db)
        .output()
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))
}
