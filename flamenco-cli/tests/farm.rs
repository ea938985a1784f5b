//! One farm behind a load balancer (issue 17 item 2): three `flamenco serve` processes on
//! one MongoDB database (`FLAMENCO_TEST_MONGODB_URL`) behind a real HAProxy (Debian's
//! `haproxy`, started by the test, health-checking `/healthz`), with simulated workers
//! pointed at the balancer. While the workers claim and complete tasks, the leader is
//! killed with `kill -9`. The test shows:
//!
//! * no task is handed to two workers;
//! * every update a Manager acknowledged is in the outbox exactly once after the kill, and
//!   every acknowledged `completed` is the task's status;
//! * another Manager leads within the lease, and only one at a time;
//! * workers that lose their Manager mid-request retry through the balancer.
//!
//! The Managers run in upstream mode pointed at a closed port, so the outbox keeps every
//! update (nothing drains it). Without `haproxy` or `FLAMENCO_TEST_MONGODB_URL` the test
//! skips with a notice, except under `CI=true`, where it fails (.ci/run installs haproxy).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flamenco_core::config::Config;
use flamenco_core::model::{Command as TaskCommand, ObjectId, Task, TaskStatus, TaskUpdate};
use flamenco_core::store::mongo::testing::TestDatabase;
use flamenco_core::Manager;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(3);
const TASKS: usize = 80;
const WORKERS: usize = 6;

fn haproxy() -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join("haproxy");
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

struct Daemon {
    name: String,
    port: u16,
    child: Option<Child>,
}

impl Daemon {
    async fn start(dir: &Path, name: &str, url: &str, server_port: u16) -> Daemon {
        let port = support::free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, manager_config(dir, name, port, url, server_port))
            .expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_flamenco"))
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .arg("-c")
            .arg(&config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn flamenco serve");
        support::wait_until_listening(&mut child, WAIT).await;
        Daemon {
            name: name.to_string(),
            port,
            child: Some(child),
        }
    }

    async fn leads(&self, http: &reqwest::Client) -> Option<bool> {
        let text = http
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
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

    async fn kill_9(&mut self) {
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

fn manager_config(dir: &Path, name: &str, port: u16, url: &str, server_port: u16) -> String {
    format!(
        "listen: '127.0.0.1:{port}'\ndata_dir: '{}'\ndatabase_url: '{url}'\n\
         flamenco: http://127.0.0.1:{server_port}/\nmanager_id: 5f0000000000000000000001\n\
         manager_secret: farm-test\nown_url: http://127.0.0.1:{port}/\n\
         leader_lease: 3s\ninstance_name: {name}\n",
        dir.join(format!("data-{name}")).display()
    )
}

/// HAProxy in front of `ports`: round robin, health checks on `/healthz` every 300 ms,
/// and a request whose connection fails is sent to another Manager. Only connection
/// failures: a request that reached a Manager must not be sent again by the balancer (a
/// worker's update that was stored before its Manager died would be stored twice; with
/// `retry-on empty-response` this test saw exactly that). Workers retry by themselves.
fn haproxy_config(listen: u16, ports: &[u16]) -> String {
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
    text
}

/// An update the farm answered 2xx.
#[derive(Clone, Debug)]
struct Acked {
    task: ObjectId,
    status: TaskStatus,
    log: String,
}

#[derive(Default)]
struct Record {
    /// (task, worker) for every task handed out.
    claims: Vec<(ObjectId, usize)>,
    acked: Vec<Acked>,
    /// Requests that failed at the connection (or with a 502/503 from the balancer) and
    /// were sent again.
    retries: u64,
}

/// A simulated worker behind the balancer: claims tasks, sends an `active` and a
/// `completed` update for each; a request that fails is sent again, as workers do.
async fn worker(base: String, n: usize, stop: Arc<AtomicBool>, rec: Arc<Mutex<Record>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let secret = format!("farm-worker-secret-{n}-{}", ObjectId::new());
    let id = loop {
        let resp = http
            .post(format!("{base}/register-worker"))
            .json(&json!({"secret": secret, "platform": "linux",
                          "supported_task_types": ["sleep"], "nickname": format!("farm-{n}")}))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.expect("register body");
                break body["_id"].as_str().expect("_id").to_string();
            }
            _ => {
                rec.lock().unwrap_or_else(|e| e.into_inner()).retries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let resp = http
            .post(format!("{base}/task"))
            .basic_auth(&id, Some(&secret))
            .header("Content-Length", "0")
            .send()
            .await;
        let resp = match resp {
            Ok(r) if r.status().as_u16() == 200 => r,
            Ok(r) if r.status().as_u16() == 204 => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                continue;
            }
            _ => {
                rec.lock().unwrap_or_else(|e| e.into_inner()).retries += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
                continue;
            }
        };
        let Ok(task) = resp.json::<Value>().await else {
            continue;
        };
        let task_id = ObjectId::parse(task["_id"].as_str().expect("task _id")).expect("task id");
        rec.lock()
            .unwrap_or_else(|e| e.into_inner())
            .claims
            .push((task_id, n));
        'updates: for status in [TaskStatus::Active, TaskStatus::Completed] {
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                seq += 1;
                // Each attempt has a log line of its own: an unanswered attempt may or may
                // not be stored, an answered one exactly once.
                let log = format!("farm worker {n} update {seq} task {task_id}\n");
                let resp = http
                    .post(format!("{base}/tasks/{task_id}/update"))
                    .basic_auth(&id, Some(&secret))
                    .json(&json!({"task_status": status.as_str(), "activity": "farm",
                                  "current_command_idx": 0, "task_progress_percentage": 0,
                                  "command_progress_percentage": 0, "log": log}))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        rec.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .acked
                            .push(Acked {
                                task: task_id,
                                status: status.clone(),
                                log,
                            });
                        break;
                    }
                    Ok(r) if r.status().is_client_error() => break 'updates,
                    _ => {
                        rec.lock().unwrap_or_else(|e| e.into_inner()).retries += 1;
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_behind_haproxy_survive_kill_9_of_the_leader() {
    let test = "three_managers_behind_haproxy_survive_kill_9_of_the_leader";
    let Some(haproxy) = haproxy() else {
        flamenco_core::testing::skip_or_fail(
            "HAProxy",
            test,
            "haproxy is not installed",
            "install Debian's haproxy package (.ci/run does)",
        );
        return;
    };
    let Some(db) = TestDatabase::new(test) else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let server_port = support::free_port();

    // Seed the queue through the SDK.
    let seed_config = Config {
        database_url: db.url.clone(),
        ..Config::default()
    };
    let seeder = Manager::open(seed_config).await.expect("open to seed");
    let tasks: Vec<Task> = (0..TASKS)
        .map(|i| {
            Task::new(
                format!("farm-{i}"),
                "sleep",
                vec![TaskCommand::new("sleep", json!({"time_in_seconds": 1}))],
            )
        })
        .collect();
    seeder.enqueue_tasks(tasks).await.expect("enqueue");

    let mut managers = Vec::new();
    for name in ["m1", "m2", "m3"] {
        managers.push(Daemon::start(dir.path(), name, &db.url, server_port).await);
    }
    let lb_port = support::free_port();
    let lb_config = dir.path().join("haproxy.cfg");
    let ports: Vec<u16> = managers.iter().map(|m| m.port).collect();
    std::fs::write(&lb_config, haproxy_config(lb_port, &ports)).expect("haproxy.cfg");
    let mut lb = Command::new(&haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&lb_config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{lb_port}");
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Ok(Some(exit)) = lb.try_wait() {
            panic!("haproxy exited: {exit:?}");
        }
        assert!(start.elapsed() < WAIT, "haproxy does not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Who leads (one at a time).
    let leader = {
        let start = Instant::now();
        loop {
            let mut leaders = Vec::new();
            for (i, m) in managers.iter().enumerate() {
                if m.leads(&http).await == Some(true) {
                    leaders.push(i);
                }
            }
            assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
            if let [i] = leaders[..] {
                break i;
            }
            assert!(start.elapsed() < WAIT, "nobody leads");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|n| tokio::spawn(worker(base.clone(), n, stop.clone(), rec.clone())))
        .collect();
    let acks = || rec.lock().unwrap_or_else(|e| e.into_inner()).acked.len();
    let start = Instant::now();
    while acks() < TASKS / 2 {
        assert!(start.elapsed() < WAIT, "too few updates acknowledged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // kill -9 the leader while the workers are busy.
    let killed = Instant::now();
    managers[leader].kill_9().await;
    let new_leader = loop {
        let mut leaders = Vec::new();
        for (i, m) in managers.iter().enumerate() {
            if i != leader && m.leads(&http).await == Some(true) {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
        if let [i] = leaders[..] {
            break i;
        }
        assert!(killed.elapsed() < WAIT, "nobody took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = killed.elapsed();
    assert!(
        took < LEASE + Duration::from_secs(3),
        "takeover took {took:?} (lease {LEASE:?})"
    );
    // The workers finish the queue through the two Managers left.
    let completed = || {
        rec.lock()
            .unwrap_or_else(|e| e.into_inner())
            .acked
            .iter()
            .filter(|a| a.status == TaskStatus::Completed)
            .map(|a| a.task)
            .collect::<HashSet<_>>()
            .len()
    };
    let start = Instant::now();
    while completed() < TASKS {
        assert!(
            start.elapsed() < WAIT * 2,
            "only {} of {TASKS} tasks completed after the kill",
            completed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a simulated worker panicked");
    }
    let rec = std::mem::take(&mut *rec.lock().unwrap_or_else(|e| e.into_inner()));
    eprintln!(
        "farm: {TASKS} tasks, {WORKERS} workers, 3 Managers; leader {} killed, {} took over in {took:?}; \
         {} updates acknowledged, {} requests retried through the balancer",
        managers[leader].name,
        managers[new_leader].name,
        rec.acked.len(),
        rec.retries
    );

    // No task handed to two workers.
    let mut by_task: HashMap<ObjectId, HashSet<usize>> = HashMap::new();
    for (task, w) in &rec.claims {
        by_task.entry(*task).or_default().insert(*w);
    }
    let doubles: Vec<_> = by_task.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(
        doubles.is_empty(),
        "tasks handed to two workers: {doubles:?}"
    );

    // Every acknowledged update stored exactly once; every acknowledged `completed` holds.
    let store = seeder.store();
    let mut stored: Vec<TaskUpdate> = store.outbox_peek(100_000).await.expect("outbox");
    stored.extend(
        store
            .outbox_set_aside(100_000)
            .await
            .expect("set-aside updates")
            .into_iter()
            .map(|s| s.update),
    );
    let mut by_log: HashMap<&str, usize> = HashMap::new();
    for u in &stored {
        *by_log.entry(u.log.as_str()).or_default() += 1;
    }
    for a in &rec.acked {
        assert_eq!(
            by_log.get(a.log.as_str()).copied(),
            Some(1),
            "{a:?} is not stored exactly once"
        );
    }
    for a in rec
        .acked
        .iter()
        .filter(|a| a.status == TaskStatus::Completed)
    {
        let task = store.get_task(a.task).await.expect("get").expect("task");
        assert_eq!(task.status, TaskStatus::Completed, "{a:?}");
    }
    let _ = lb.kill().await;
    seeder.close().await.ok();
}
