//! The `flamenco` binary in upstream mode, against the Flamenco Server test double running
//! in this test process: `kill -9` during a push loses no acknowledged update, and the
//! `push` / `queue outbox` commands.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use flamenco_core::config::Config;
use flamenco_core::model::{ObjectId, Task, TaskStatus, TaskUpdate};
use flamenco_core::Manager;
use flamenco_testserver::{Endpoint, Fault, ManagerCreds, NewJob, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{flamenco_process, kill_9, serve, terminate, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn write_config(dir: &Path, server: &TestServer, creds: &ManagerCreds, port: u16) -> PathBuf {
    let path = dir.join("flamenco-manager.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: '127.0.0.1:{port}'\ndata_dir: ./data\nflamenco: {}\nmanager_id: {}\nmanager_secret: {}\nown_url: http://127.0.0.1:{port}/\ntask_update_push_max_interval: 200ms\ntask_update_push_max_count: 10\ncancel_task_fetch_max_interval: 300ms\ndownload_task_sleep: 300ms\n",
            server.url(),
            creds.id,
            creds.token
        ),
    )
    .unwrap();
    path
}

struct Worker {
    id: String,
    secret: String,
    base: String,
    http: reqwest::Client,
}

impl Worker {
    async fn register(base: &str, nickname: &str) -> Worker {
        let http = reqwest::Client::new();
        let secret = format!("secret-{nickname}");
        let resp = http
            .post(format!("{base}/register-worker"))
            .json(&json!({"secret": secret, "platform": "linux",
                          "supported_task_types": ["sleep"], "nickname": nickname}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        Worker {
            id: body["_id"].as_str().unwrap().to_string(),
            secret,
            base: base.to_string(),
            http,
        }
    }

    async fn next_task(&self) -> Option<String> {
        let resp = self
            .http
            .post(format!("{}/task", self.base))
            .basic_auth(&self.id, Some(&self.secret))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        if resp.status() != StatusCode::OK {
            return None;
        }
        let body: Value = resp.json().await.unwrap();
        Some(body["_id"].as_str().unwrap().to_string())
    }

    async fn update(&self, task: &str, body: Value) -> StatusCode {
        self.http
            .post(format!("{}/tasks/{task}/update", self.base))
            .basic_auth(&self.id, Some(&self.secret))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// `kill -9` while a push is in flight (the Server applied it but had not answered), then
/// a restart: every worker update the Manager acknowledged reaches the Server (some
/// twice, none lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_push_loses_no_acknowledged_update() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let job = server.add_job(&creds.id, NewJob::sleep(4, 1));
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    write_config(dir.path(), &server, &creds, port);
    let base = format!("http://127.0.0.1:{port}");

    let mut child = serve(dir.path(), None, WAIT).await;
    wait_until("the tasks were claimed by the Manager", || async {
        job.task_ids
            .iter()
            .all(|id| server.task_status(id).as_deref() == Some("claimed-by-manager"))
    })
    .await;

    // From now on the Server applies each push but answers only after 10 s.
    server.set_fault(
        Endpoint::TaskUpdateBatch,
        Fault::DelayAfter(Duration::from_secs(10)),
    );
    let pushes_before = server.requests_to(Endpoint::TaskUpdateBatch).len();
    let w = Worker::register(&base, "w").await;
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    while let Some(task) = w.next_task().await {
        for (n, status) in ["active", "", "completed"].into_iter().enumerate() {
            let line = format!("{task} line {n}");
            let mut body = json!({"log": line, "activity": format!("step {n}")});
            if !status.is_empty() {
                body["task_status"] = json!(status);
            }
            assert_eq!(w.update(&task, body).await, StatusCode::NO_CONTENT);
            acknowledged.push((task.clone(), line));
        }
    }
    assert_eq!(acknowledged.len(), 4 * 3);
    wait_until("a push with worker updates is in flight", || async {
        server.requests_to(Endpoint::TaskUpdateBatch)[pushes_before..]
            .iter()
            .any(|r| {
                r.json()
                    .and_then(|v| v.as_array().map(|a| !a.is_empty()))
                    .unwrap_or(false)
            })
    })
    .await;
    kill_9(&mut child).await;

    server.clear_faults();
    let child = serve(dir.path(), None, WAIT).await;
    for (task, line) in &acknowledged {
        wait_until(&format!("{line:?} reached the Server"), || async {
            server.task_logs(task).iter().any(|l| &l.log == line)
        })
        .await;
    }
    wait_until("the job completed on the Server", || async {
        server.job_status(&job.id).as_deref() == Some("completed")
    })
    .await;
    // Each log line is stored once (logs are keyed by update id), whatever was re-sent.
    for task in &job.task_ids {
        let logs = server.task_logs(task);
        let worker_lines = logs.iter().filter(|l| l.log.contains(" line ")).count();
        assert_eq!(worker_lines, 3, "{logs:?}");
    }
    terminate(child, WAIT).await;
}

async fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = flamenco_process(dir).args(args).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `flamenco queue outbox`, `flamenco push --dry-run [--json]`, `flamenco push` (with a
/// Server that never acknowledges one task: set aside after repeated pushes) and
/// `flamenco push --retry-set-aside`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_outbox_commands() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let job = server.add_job(&creds.id, NewJob::sleep(2, 1));
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &server, &creds, support::free_port());

    // Standalone: push explains itself.
    let standalone = tempfile::tempdir().unwrap();
    std::fs::write(
        standalone.path().join("flamenco-manager.yaml"),
        "data_dir: ./data\n",
    )
    .unwrap();
    let (code, _, err) = run(standalone.path(), &["push"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not in upstream mode"), "{err}");

    // Queue 30 updates for the Server's first task and 2 for its second, through the SDK.
    let (mut config, _) = Config::load(Some(&path)).unwrap();
    config.data_dir = dir.path().join("data");
    let manager = Manager::open(config).await.unwrap();
    let t0 = ObjectId::parse(&job.task_ids[0]).unwrap();
    let t1 = ObjectId::parse(&job.task_ids[1]).unwrap();
    let mut task = Task::new("sleep-1", "sleep", vec![]);
    task.id = t0;
    manager.enqueue_tasks(vec![task]).await.unwrap();
    for n in 0..30 {
        let mut u = TaskUpdate::new(t0, manager.now());
        u.log = format!("line {n}");
        if n == 0 {
            u.task_status = Some(TaskStatus::Active);
        }
        manager.store().queue_update(u).await.unwrap();
    }
    for n in 0..2 {
        let mut u = TaskUpdate::new(t1, manager.now());
        u.activity = format!("stuck {n}");
        manager.store().queue_update(u).await.unwrap();
    }
    manager.close().await.unwrap();
    server.never_acknowledge_task(&job.task_ids[1]);

    let (code, out, err) = run(dir.path(), &["queue", "outbox"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("outbox: 32 waiting, 0 set aside"), "{out}");
    let (code, out, _) = run(dir.path(), &["queue", "outbox", "--json", "--limit", "3"]).await;
    assert_eq!(code, 0);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["waiting"], 32);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["state"], "waiting");

    let (code, out, _) = run(dir.path(), &["push", "--dry-run"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("would push 32 update(s) in 4 batch(es) of at most 10"),
        "{out}"
    );
    let (code, out, _) = run(dir.path(), &["push", "--dry-run", "--json"]).await;
    assert_eq!(code, 0);
    let bodies: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(bodies.len(), 4);
    assert_eq!(bodies[0].as_array().unwrap().len(), 10);
    assert!(bodies[0][0].get("current_command_index").is_some());
    assert!(
        server.requests_to(Endpoint::TaskUpdateBatch).is_empty(),
        "dry run sent nothing"
    );

    let (code, out, err) = run(dir.path(), &["push"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sent 32, acknowledged 30"), "{out}");
    assert_eq!(server.task_logs(&job.task_ids[0]).len(), 30);
    // The two unacknowledged updates wait; after enough pushes they are set aside.
    for _ in 0..5 {
        let (code, _, err) = run(dir.path(), &["push"]).await;
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, _) = run(dir.path(), &["queue", "outbox"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("outbox: 0 waiting, 2 set aside"), "{out}");
    assert!(out.contains("stuck 0"), "{out}");

    let (code, out, err) = run(dir.path(), &["push", "--retry-set-aside"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("put 2 set-aside update(s) back"), "{err}");
    assert!(out.contains("sent 2, acknowledged 0"), "{out}");

    // A Server that is down: exit status 1 and a message naming it.
    server.set_fault(Endpoint::TaskUpdateBatch, Fault::Status(503));
    let (code, _, err) = run(dir.path(), &["push"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("503"), "{err}");
    assert!(err.contains(&server.url()), "{err}");
}

/// `config check` names a bad upstream setting; `serve` refuses to start with it.
#[tokio::test]
async fn bad_upstream_settings_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        "data_dir: ./data\nflamenco: http://127.0.0.1:9/prefix\nmanager_id: abc\nmanager_secret: s\n",
    )
    .unwrap();
    let (code, _, err) = run(dir.path(), &["config", "check"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("manager_id"), "{err}");
    let (code, _, err) = run(dir.path(), &["serve"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("manager_id"), "{err}");
}
