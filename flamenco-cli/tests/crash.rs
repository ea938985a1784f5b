//! Crash tests of the real `flamenco serve` process (issue #9, fault tests):
//!
//! * `kill -9` while simulated workers send task updates, then restart: every update that
//!   was answered 2xx is in the outbox exactly once, and the tasks show its effect — on
//!   the embedded store and on MongoDB (`FLAMENCO_TEST_MONGODB_URL`);
//! * a second daemon on the same data directory refuses to start, naming the directory,
//!   the lock file and the first daemon's pid, while the CLI's readers keep working.
//!
//! The Manager runs in upstream mode pointed at a Flamenco Server that is not there (a
//! closed port), so nothing drains the outbox: after the crash it must still hold every
//! acknowledged update (in standalone mode the job consumer would acknowledge them).

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flamenco_core::config::Config;
use flamenco_core::model::{Command as TaskCommand, ObjectId, Task, TaskStatus, TaskUpdate};
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::store::Store;
use flamenco_core::Manager;
use serde_json::{json, Value};
use support::{flamenco_process, kill_9, serve, terminate};
use tokio::process::Child;

const WAIT: Duration = Duration::from_secs(60);

/// Upstream mode against a closed port: pushes fail, so the outbox keeps everything. The
/// data directory is absolute: the test process (which seeds and checks the store) runs
/// elsewhere than the daemon.
fn write_config(dir: &Path, name: &str, port: u16, database_url: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    let mut text = format!(
        "listen: '127.0.0.1:{port}'\ndata_dir: '{}'\nflamenco: http://127.0.0.1:{}/\n\
         manager_id: {}\nmanager_secret: crash-test\nown_url: http://127.0.0.1:{port}/\n",
        dir.join("data").display(),
        support::free_port(),
        ObjectId::new().to_hex()
    );
    if let Some(url) = database_url {
        text.push_str(&format!("database_url: '{url}'\n"));
    }
    std::fs::write(&path, text).expect("write config");
    path
}

/// Wait until the daemon on `port` answers HTTP (after "listening on", its signal
/// handlers are installed by the time it serves).
async fn until_answers(port: u16) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = http
            .post(format!("http://127.0.0.1:{port}/task"))
            .send()
            .await;
        match answer {
            Ok(resp) => {
                assert_eq!(
                    resp.status().as_u16(),
                    401,
                    "POST /task without credentials"
                );
                return;
            }
            Err(e) if Instant::now() > deadline => panic!("the daemon does not answer: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn sleep_tasks(n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| {
            Task::new(
                format!("crash-{i}"),
                "sleep",
                vec![TaskCommand::new("sleep", json!({"time_in_seconds": 1}))],
            )
        })
        .collect()
}

/// Put `n` tasks into the store the config names, through the SDK, before the daemon runs.
async fn seed(config: &Path, n: usize) {
    let (config, _) = Config::load(Some(config)).expect("load config");
    let manager = Manager::open(config)
        .await
        .expect("open the store to seed it");
    manager
        .enqueue_tasks(sleep_tasks(n))
        .await
        .expect("enqueue");
    manager.close().await.expect("close");
}

/// An update the Manager answered 2xx.
#[derive(Clone, Debug)]
struct Acked {
    task: ObjectId,
    status: TaskStatus,
    /// Unique over the whole test.
    log: String,
}

/// A simulated worker: claims tasks and sends `updates_per_task` updates for each (the
/// last one `completed`), each with a log line of its own; records every 2xx.
async fn worker_loop(
    base: String,
    n: usize,
    updates_per_task: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let secret = format!("crash-worker-secret-{n}-{}", ObjectId::new());
    let Ok(resp) = http
        .post(format!("{base}/register-worker"))
        .json(&json!({"secret": secret, "platform": "linux",
                      "supported_task_types": ["sleep"], "nickname": format!("crash-{n}")}))
        .send()
        .await
    else {
        return;
    };
    assert!(resp.status().is_success(), "register: {}", resp.status());
    let body: Value = resp.json().await.expect("register body");
    let id = body["_id"].as_str().expect("_id").to_string();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(resp) = http
            .post(format!("{base}/task"))
            .basic_auth(&id, Some(&secret))
            .header("Content-Length", "0")
            .send()
            .await
        else {
            return;
        };
        if resp.status().as_u16() == 204 {
            // A simulated worker's poll interval: part of the load under test, not a wait.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if resp.status().as_u16() != 200 {
            // 503 while the store is busy, say: try again.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let Ok(task) = resp.json::<Value>().await else {
            return;
        };
        let task_id = ObjectId::parse(task["_id"].as_str().expect("task _id")).expect("task id");
        for k in 0..updates_per_task {
            seq += 1;
            let last = k + 1 == updates_per_task;
            let status = if last {
                TaskStatus::Completed
            } else {
                TaskStatus::Active
            };
            let log = format!("crash-test worker {n} update {seq} task {task_id}\n");
            let body = json!({
                "task_status": status.as_str(),
                "activity": format!("step {k}"),
                "current_command_idx": 0,
                "task_progress_percentage": (k * 100 / updates_per_task),
                "command_progress_percentage": 0,
                "log": log,
            });
            let Ok(resp) = http
                .post(format!("{base}/tasks/{task_id}/update"))
                .basic_auth(&id, Some(&secret))
                .json(&body)
                .send()
                .await
            else {
                return;
            };
            if resp.status().is_success() {
                acked.lock().unwrap_or_else(|e| e.into_inner()).push(Acked {
                    task: task_id,
                    status: status.clone(),
                    log,
                });
            } else {
                break;
            }
        }
    }
}

/// Run `workers` simulated workers against `base` until at least `min_acks` updates were
/// acknowledged and at least `min_load` passed (or `max_load`), then `kill -9` the daemon
/// while they are still sending. Returns the acknowledged updates.
async fn load_then_kill(
    child: &mut Child,
    base: &str,
    workers: usize,
    updates_per_task: usize,
    min_acks: usize,
) -> Vec<Acked> {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..workers)
        .map(|n| {
            tokio::spawn(worker_loop(
                base.to_string(),
                n,
                updates_per_task,
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    let acks = || acked.lock().unwrap_or_else(|e| e.into_inner()).len();
    // The load starts with the first acknowledged update (registrations cost bcrypt).
    let deadline = Instant::now() + WAIT;
    while acks() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then the load runs for at least 1.5 s (the kill must land under load, the thing
    // tested) and until enough updates were acknowledged; the sleep is the sampling step.
    let started = Instant::now();
    let min_load = Duration::from_millis(1500);
    let max_load = Duration::from_secs(30);
    while (started.elapsed() < min_load || acks() < min_acks) && started.elapsed() < max_load {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_kill = acks();
    kill_9(child).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("a simulated worker panicked");
    }
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        acked.len() >= min_acks,
        "only {} updates were acknowledged under load (wanted {min_acks})",
        acked.len()
    );
    eprintln!(
        "crash test: {workers} workers, {} updates acknowledged ({before_kill} before the kill signal)",
        acked.len()
    );
    acked
}

/// Every acknowledged update is in the outbox (pending or set aside) exactly once, with
/// its status, and every acknowledged `completed` is the task's status.
async fn assert_all_acked_are_stored(store: &dyn Store, acked: &[Acked]) {
    let mut stored: Vec<TaskUpdate> = store.outbox_peek(10_000_000).await.expect("outbox");
    stored.extend(
        store
            .outbox_set_aside(10_000_000)
            .await
            .expect("set-aside updates")
            .into_iter()
            .map(|s| s.update),
    );
    let mut by_log: HashMap<&str, Vec<&TaskUpdate>> = HashMap::new();
    for u in &stored {
        if !u.log.is_empty() {
            by_log.entry(u.log.as_str()).or_default().push(u);
        }
    }
    let mut missing = Vec::new();
    for a in acked {
        match by_log.get(a.log.as_str()).map(Vec::as_slice) {
            Some([u]) => {
                assert_eq!(u.task_id, a.task, "{a:?} stored for another task");
                assert_eq!(u.task_status.as_ref(), Some(&a.status), "{a:?}");
            }
            Some(more) => panic!("{a:?} stored {} times", more.len()),
            None => missing.push(a.clone()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged updates are not in the outbox after the crash, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    for a in acked.iter().filter(|a| a.status == TaskStatus::Completed) {
        let task = store
            .get_task(a.task)
            .await
            .expect("get task")
            .expect("task kept");
        assert_eq!(task.status, TaskStatus::Completed, "{a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_update_sqlite() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let config = write_config(dir.path(), "flamenco-manager.yaml", port, None);
    seed(&config, 5_000).await;
    let mut child = serve(dir.path(), Some(&config), WAIT).await;
    let base = format!("http://127.0.0.1:{port}");
    let acked = load_then_kill(&mut child, &base, 64, 5, 300).await;

    // The restarted daemon gets the lock (the kernel dropped the dead one's) and serves.
    let child = serve(dir.path(), Some(&config), WAIT).await;
    until_answers(port).await;
    // Read the store as the CLI does, while the daemon runs.
    let store = SqliteStore::open(&dir.path().join("data")).expect("open the store");
    assert_eq!(
        store.integrity_check().await.expect("integrity check"),
        Vec::<String>::new()
    );
    assert_all_acked_are_stored(&store, &acked).await;
    store.close().await.expect("close");
    terminate(child, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_update_mongodb() {
    use flamenco_core::store::mongo::testing::TestDatabase;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(db) = TestDatabase::new("kill_9_under_load_loses_no_acknowledged_update_mongodb")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let config = write_config(dir.path(), "flamenco-manager.yaml", port, Some(&db.url));
    seed(&config, 400).await;
    let mut child = serve(dir.path(), Some(&config), WAIT).await;
    let base = format!("http://127.0.0.1:{port}");
    let acked = load_then_kill(&mut child, &base, 16, 4, 150).await;

    let child = serve(dir.path(), Some(&config), WAIT).await;
    until_answers(port).await;
    let (loaded, _) = Config::load(Some(&config)).expect("load config");
    let manager = Manager::open(loaded).await.expect("open the MongoDB store");
    assert_all_acked_are_stored(manager.store().as_ref(), &acked).await;
    manager.close().await.expect("close");
    terminate(child, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_refuses_to_start() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let (first_port, second_port) = (support::free_port(), support::free_port());
    let first_config = write_config(dir.path(), "first.yaml", first_port, None);
    let second_config = write_config(dir.path(), "second.yaml", second_port, None);
    seed(&first_config, 3).await;
    let first = serve(dir.path(), Some(&first_config), WAIT).await;
    until_answers(first_port).await;
    let first_pid = first.id().expect("pid");

    let out = tokio::time::timeout(
        WAIT,
        flamenco_process(dir.path())
            .arg("-c")
            .arg(&second_config)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("the second daemon exits by itself")
    .expect("run the second daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let data_dir = std::path::absolute(dir.path().join("data")).expect("absolute");
    for expected in [
        "another Flamenco Manager is already using the data directory".to_string(),
        data_dir.display().to_string(),
        data_dir.join("flamenco.lock").display().to_string(),
        format!("pid {first_pid}"),
        "stop that one first, or give this one a different data_dir".to_string(),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Readers are not locked out.
    let out = flamenco_process(dir.path())
        .arg("-c")
        .arg(&second_config)
        .args(["queue", "list"])
        .output()
        .await
        .expect("queue list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("crash-2"));

    // Once the first stops, the second starts.
    terminate(first, WAIT).await;
    let second = serve(dir.path(), Some(&second_config), WAIT).await;
    until_answers(second_port).await;
    terminate(second, WAIT).await;
}
