//! Upstream mode against the Flamenco Server test double (`flamenco-testserver`): the
//! Go Manager's cases 2, 4 and 18–20 (manager-v2.md §10), a full round trip over the real
//! worker HTTP API, cancellation of a running task, a Server outage, a Server that never
//! acknowledges one task's updates, gzip negotiation, downloads and kicks.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{oid, test_task, v2_test_config, wait_until, TestWorker};
use flamenco_core::clock::SystemClock;
use flamenco_core::config::{Config, UpstreamGzip};
use flamenco_core::model::{ObjectId, Task, TaskStatus};
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::upstream::{GzipState, UpstreamOptions, WATERMARK_KEY};
use flamenco_core::Manager;
use flamenco_testserver::{Endpoint, Fault, GzipMode, ManagerCreds, NewJob, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Generous: these waits only bound how long a broken build takes to fail.
const WAIT: Duration = Duration::from_secs(20);

/// Short intervals: pushes every 200 ms, cancel polls every 300 ms.
fn config_for(server: &TestServer, creds: &ManagerCreds) -> Config {
    let mut c = v2_test_config();
    c.flamenco = server.url();
    c.manager_id = creds.id.clone();
    c.manager_secret = creds.token.clone();
    c.own_url = "http://manager.test:8083/".into();
    c.task_update_push_max_interval = Duration::from_millis(200);
    c.task_update_push_max_count = 10;
    c.cancel_task_fetch_max_interval = Duration::from_millis(300);
    c.download_task_sleep = Duration::from_millis(500);
    c.download_task_recheck_throttle = Some(Duration::ZERO);
    c
}

fn options_for(config: &Config) -> UpstreamOptions {
    let mut o = UpstreamOptions::from_config(config);
    o.timeouts.total = Duration::from_secs(5);
    o.timeouts.refetch = Duration::from_secs(2);
    o.backoff_cap = Duration::from_millis(500);
    o
}

/// A Manager in upstream mode on a temporary store, served on a loopback port.
struct Farm {
    manager: Arc<Manager>,
    base: String,
    client: reqwest::Client,
    stop_http: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    stop_loops: CancellationToken,
    loops: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Farm {
    async fn start(config: Config) -> Farm {
        let options = options_for(&config);
        Self::start_with(config, options).await
    }

    async fn start_with(mut config: Config, options: UpstreamOptions) -> Farm {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        config.data_dir = dir.path().to_path_buf();
        let store = SqliteStore::open(dir.path()).expect("open store");
        let manager = Arc::new(
            Manager::with_upstream_options(config, Arc::new(store), Arc::new(SystemClock), options)
                .expect("upstream manager"),
        );
        assert!(manager.upstream().is_some());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(flamenco_serve::serve(manager.clone(), listener, async {
            let _ = rx.await;
        }));
        Farm {
            manager,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            stop_http: Some(tx),
            http: Some(http),
            stop_loops: CancellationToken::new(),
            loops: None,
            _dir: dir,
        }
    }

    /// Start the startup notifier, downloader and pusher.
    fn start_loops(&mut self) {
        self.loops = Some(flamenco_core::upstream::spawn(
            self.manager.clone(),
            self.stop_loops.clone(),
        ));
    }

    async fn register(&self, nickname: &str, types: &[&str]) -> TestWorker {
        let secret = format!("secret-of-{nickname}");
        let resp = self
            .client
            .post(format!("{}/register-worker", self.base))
            .header("User-Agent", "Flamenco-Worker/2.5")
            .json(&json!({"secret": secret, "platform": "linux",
                          "supported_task_types": types, "nickname": nickname}))
            .send()
            .await
            .expect("register");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        TestWorker {
            id: ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id"),
            secret,
            base: self.base.clone(),
            client: self.client.clone(),
            software: "Flamenco-Worker/2.5".into(),
        }
    }

    async fn task(&self, id: ObjectId) -> Task {
        self.manager
            .get_task(id)
            .await
            .expect("get task")
            .expect("task exists")
    }

    async fn maybe_task(&self, id: ObjectId) -> Option<Task> {
        self.manager.get_task(id).await.expect("get task")
    }

    async fn outbox_len(&self) -> u64 {
        self.manager.outbox_len().await.expect("outbox")
    }

    async fn stop(mut self) {
        self.stop_loops.cancel();
        if let Some(loops) = self.loops.take() {
            tokio::time::timeout(WAIT, loops)
                .await
                .expect("loops stop")
                .expect("join loops");
        }
        if let Some(tx) = self.stop_http.take() {
            let _ = tx.send(());
        }
        if let Some(http) = self.http.take() {
            http.await.expect("join").expect("serve");
        }
        self.manager.close().await.expect("close");
    }
}

/// A Server task document for `id`, managed by `mid`, as the v2 test fixture.
fn server_doc(id: &str, mid: &str, etag: &str, priority: i64, status: &str) -> Value {
    json!({
        "_id": oid(id).to_hex(), "_etag": etag, "job": "b".repeat(24), "manager": mid,
        "project": "d".repeat(24), "user": "e".repeat(24), "name": "Test task",
        "status": status, "priority": priority, "job_priority": 0, "job_type": "unittest",
        "task_type": "sleeping",
        "commands": [{"name": "echo", "settings": {"message": "Running Blender from {blender}"}},
                     {"name": "sleep", "settings": {"time_in_seconds": 3}}],
        "parents": ["f".repeat(24)],
    })
}

/// A worker that runs tasks over the real HTTP API until `stop`: take a task, report
/// `active` with a log line, progress, a second log line, then `completed`.
async fn run_worker(w: TestWorker, stop: CancellationToken) -> Vec<ObjectId> {
    let mut done = Vec::new();
    while !stop.is_cancelled() {
        let (status, body) = w.task().await;
        if status != StatusCode::OK {
            // The simulated worker's poll interval, as a real worker waits between asks.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let id = ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id");
        let name = body["name"].as_str().unwrap_or_default().to_string();
        for (i, update) in [
            json!({"task_status": "active", "activity": "starting",
                   "log": format!("{name}: line 1")}),
            json!({"activity": "working", "task_progress_percentage": 50,
                   "current_command_idx": 1, "command_progress_percentage": 20,
                   "log": format!("{name}: line 2")}),
            json!({"task_status": "completed", "activity": "done",
                   "task_progress_percentage": 100, "current_command_idx": 1,
                   "command_progress_percentage": 100, "log": format!("{name}: line 3")}),
        ]
        .into_iter()
        .enumerate()
        {
            let code = w.update(id, update).await;
            assert_eq!(code, StatusCode::NO_CONTENT, "update {i} of {name}");
        }
        done.push(id);
    }
    done
}

/// Task statuses the Server received for `task`, in arrival order.
fn statuses_received(server: &TestServer, task: &str) -> Vec<String> {
    server
        .received_updates()
        .iter()
        .filter(|u| u["task_id"] == task)
        .filter_map(|u| u["task_status"].as_str().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Go cases.

/// Case 2: the startup notification arrives soon after start, with the required keys,
/// our URL, the variables, the worker count and the workers' task types. The Server's
/// base URL keeps its path, and auth is Basic with the token and an empty password.
#[tokio::test]
async fn case02_startup_notification() {
    let server = TestServer::start_with_prefix("/flamenco-server").await;
    let creds = server.add_manager();
    let mut farm = Farm::start(config_for(&server, &creds)).await;
    farm.register("w1", &["sleep", "blender-render"]).await;
    farm.register("w2", &["sleep", "exr-merge"]).await;
    farm.start_loops();
    // The Manager records the notification after the Server's answer arrives, so wait
    // for the Manager's record, not for the double's receipt.
    wait_until("the Manager recorded the startup notification", || async {
        farm.manager
            .upstream_status()
            .await
            .expect("upstream")
            .startup_notified
            .is_some()
    })
    .await;
    let (mid, body) = &server.startups()[0];
    assert_eq!(mid, &creds.id);
    assert_eq!(body["manager_url"], "http://manager.test:8083/");
    assert_eq!(body["nr_of_workers"], 2);
    assert_eq!(
        body["worker_task_types"],
        json!(["blender-render", "exr-merge", "sleep"])
    );
    assert_eq!(
        body["variables"]["blender"]["linux"],
        "/opt/myblenderbuild/blender"
    );
    // Trailing slashes trimmed, as v2 reported them.
    assert_eq!(body["path_replacement"]["job_storage"]["linux"], "/shared");
    let req = &server.requests_to(Endpoint::Startup)[0];
    assert_eq!(
        req.full_path,
        format!(
            "/flamenco-server/api/flamenco/managers/{}/startup",
            creds.id
        )
    );
    let auth = req.header("authorization").expect("auth header");
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.strip_prefix("Basic ").expect("basic"))
        .expect("base64");
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        format!("{}:", creds.token)
    );
    // Sent once only: once the loops have stopped, nothing more can be sent.
    farm.stop().await;
    assert_eq!(server.startups().len(), 1);
}

/// The startup notification is retried (with backoff) until the Server takes it.
#[tokio::test]
async fn startup_notification_is_retried_after_failures() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    server.fail_times(Endpoint::Startup, Fault::Status(500), 2);
    server.fail_times(Endpoint::Startup, Fault::Drop, 1);
    let mut farm = Farm::start(config_for(&server, &creds)).await;
    farm.start_loops();
    wait_until("accepted after three failures", || async {
        !server.startups().is_empty()
    })
    .await;
    assert_eq!(server.requests_to(Endpoint::Startup).len(), 4);
    farm.stop().await;
}

/// Case 4: the first push comes at once (an empty `[]`); a task on the cancel list that
/// is not running here becomes `canceled` at once, and the Server hears it.
#[tokio::test]
async fn case04_cancel_running_tasks() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    server.insert_task(server_doc("2aaa", &creds.id, "x", 50, "cancel-requested"));
    let mut config = config_for(&server, &creds);
    config.task_update_push_max_interval = Duration::from_secs(30);
    config.task_update_push_max_count = 4000;
    config.cancel_task_fetch_max_interval = Duration::from_millis(300);
    let mut farm = Farm::start(config).await;
    farm.manager
        .enqueue_tasks(vec![
            test_task("1aaa", "testing"),
            test_task("2aaa", "sleeping"),
        ])
        .await
        .expect("enqueue");
    farm.start_loops();
    wait_until("a push", || async {
        !server.requests_to(Endpoint::TaskUpdateBatch).is_empty()
    })
    .await;
    let first = &server.requests_to(Endpoint::TaskUpdateBatch)[0];
    assert_eq!(
        first.json(),
        Some(json!([])),
        "an empty push is [], not null"
    );
    wait_until("2aaa canceled locally", || async {
        farm.task(oid("2aaa")).await.status == TaskStatus::Canceled
    })
    .await;
    assert_eq!(farm.task(oid("1aaa")).await.status, TaskStatus::Queued);
    wait_until("the Server heard `canceled`", || async {
        server.task_status(&oid("2aaa").to_hex()).as_deref() == Some("canceled")
    })
    .await;
    farm.stop().await;
}

/// The local setup of cases 18–20: 1aaa (priority 50) and 2aaa (priority 100), both
/// `sleeping`; the Server knows 1aaa unchanged (same etag).
async fn prio_case(server: &TestServer, creds: &ManagerCreds) -> (Farm, TestWorker) {
    server.insert_task(server_doc("1aaa", &creds.id, "1234567", 50, "queued"));
    let farm = Farm::start(config_for(server, creds)).await;
    let mut t1 = test_task("1aaa", "sleeping");
    t1.priority = 50;
    let mut t2 = test_task("2aaa", "sleeping");
    t2.priority = 100;
    farm.manager
        .enqueue_tasks(vec![t1, t2])
        .await
        .expect("enqueue");
    let w = farm.register("workerLnx", &["sleeping"]).await;
    (farm, w)
}

async fn assigned_id(w: &TestWorker) -> ObjectId {
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id")
}

/// Case 18: the Server canceled 2aaa: it is re-fetched, becomes `canceled`, and the
/// worker gets 1aaa.
#[tokio::test]
async fn case18_verify_upstream_canceled() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    server.insert_task(server_doc("2aaa", &creds.id, "other-etag", 100, "canceled"));
    let (farm, w) = prio_case(&server, &creds).await;
    assert_eq!(assigned_id(&w).await, oid("1aaa"));
    let gets = server.requests_to(Endpoint::Task);
    assert_eq!(gets[0].path, format!("/api/flamenco/tasks/{}", oid("2aaa")));
    assert_eq!(gets[0].header("if-none-match"), Some("1234567"));
    assert_eq!(farm.task(oid("2aaa")).await.status, TaskStatus::Canceled);
    let t1 = farm.task(oid("1aaa")).await;
    assert_eq!(t1.status, TaskStatus::Active);
    assert_eq!(t1.worker_id, Some(w.id));
    farm.stop().await;
}

/// Case 19: the Server lowered 2aaa's priority: it takes the Server's version and stays
/// queued; the worker gets 1aaa.
#[tokio::test]
async fn case19_verify_upstream_prio_change() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    server.insert_task(server_doc("2aaa", &creds.id, "other-etag", 5, "queued"));
    let (farm, w) = prio_case(&server, &creds).await;
    assert_eq!(assigned_id(&w).await, oid("1aaa"));
    let t2 = farm.task(oid("2aaa")).await;
    assert_eq!(t2.status, TaskStatus::Queued);
    assert_eq!(t2.priority, 5);
    assert_eq!(t2.etag, "other-etag");
    assert_eq!(t2.worker_id, None);
    let t1 = farm.task(oid("1aaa")).await;
    assert_eq!(t1.status, TaskStatus::Active);
    assert_eq!(t1.priority, 50);
    // Nothing about 2aaa was queued for the Server: the reservation was never confirmed.
    let outbox = farm.manager.outbox_peek(100).await.expect("outbox");
    assert!(
        outbox.iter().all(|u| u.task_id == oid("1aaa")),
        "{outbox:?}"
    );
    farm.stop().await;
}

/// Case 20: the Server no longer has 2aaa (404): it becomes `canceled` with its priority
/// kept; the worker gets 1aaa.
#[tokio::test]
async fn case20_verify_upstream_deleted() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let (farm, w) = prio_case(&server, &creds).await;
    assert_eq!(assigned_id(&w).await, oid("1aaa"));
    let t2 = farm.task(oid("2aaa")).await;
    assert_eq!(t2.status, TaskStatus::Canceled);
    assert_eq!(t2.priority, 100);
    let t1 = farm.task(oid("1aaa")).await;
    assert_eq!(t1.status, TaskStatus::Active);
    assert_eq!(t1.priority, 50);
    farm.stop().await;
}

/// An unreachable Server or one that hangs counts as "unchanged" (v2), within the short
/// re-fetch timeout, and later `/task`s skip the re-fetch for a while.
#[tokio::test]
async fn refetch_failures_count_as_unchanged_without_stalling_workers() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    server.set_fault(Endpoint::Task, Fault::Hang);
    let mut config = config_for(&server, &creds);
    config.download_task_recheck_throttle = None;
    let mut options = options_for(&config);
    options.timeouts.refetch = Duration::from_millis(300);
    options.refetch_pause_after_failure = Duration::from_secs(60);
    let farm = Farm::start_with(config, options).await;
    farm.manager
        .enqueue_tasks(vec![
            test_task("1aaa", "sleeping"),
            test_task("2aaa", "sleeping"),
        ])
        .await
        .expect("enqueue");
    let w1 = farm.register("w1", &["sleeping"]).await;
    let w2 = farm.register("w2", &["sleeping"]).await;
    let started = Instant::now();
    let a = assigned_id(&w1).await;
    let b = assigned_id(&w2).await;
    assert_ne!(a, b);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The second /task did not ask the hanging Server again.
    assert_eq!(server.requests_to(Endpoint::Task).len(), 1);
    let status = farm.manager.upstream_status().await.expect("status");
    assert!(status.last_error.is_some());
    farm.stop().await;

    // A Server that cannot be reached at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = config_for(&server, &creds);
    config.flamenco = format!("http://127.0.0.1:{port}/");
    let farm = Farm::start(config).await;
    farm.manager
        .enqueue_tasks(vec![test_task("1aaa", "sleeping")])
        .await
        .expect("enqueue");
    let w = farm.register("w", &["sleeping"]).await;
    assert_eq!(assigned_id(&w).await, oid("1aaa"));
    farm.stop().await;
}

// ---------------------------------------------------------------------------------------
// End to end.

/// A job's tasks go from the Server to workers over the real worker API, and the Server
/// sees every status and every log line, in order; the job completes there.
#[tokio::test]
async fn full_round_trip() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let job = server.add_job(&creds.id, NewJob::sleep(6, 1));
    let mut farm = Farm::start(config_for(&server, &creds)).await;
    farm.start_loops();
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for n in 0..2 {
        let w = farm.register(&format!("w{n}"), &["sleep"]).await;
        workers.push(tokio::spawn(run_worker(w, stop.clone())));
    }
    wait_until("the job is completed on the Server", || async {
        server.job_status(&job.id).as_deref() == Some("completed")
    })
    .await;
    stop.cancel();
    let mut done = Vec::new();
    for w in workers {
        done.extend(w.await.expect("worker"));
    }
    assert_eq!(done.len(), 6, "each task ran once");
    wait_until("the outbox is empty", || async {
        farm.outbox_len().await == 0
    })
    .await;

    for (i, id) in job.task_ids.iter().enumerate() {
        let name = format!("sleep-{}", i + 1);
        let doc = server.task(id).expect("task");
        assert_eq!(doc["status"], "completed");
        assert_eq!(doc["task_progress_percentage"], 100);
        // Read by the Server only under its own name.
        assert_eq!(doc["current_command_index"], 1);
        assert_eq!(doc["activity"], "done");
        // Statuses in order: the Manager's `active`, the worker's, then `completed`.
        let statuses = statuses_received(&server, id);
        assert_eq!(statuses.first().map(String::as_str), Some("active"));
        assert_eq!(statuses.last().map(String::as_str), Some("completed"));
        assert_eq!(
            statuses.iter().filter(|s| *s == "completed").count(),
            1,
            "{statuses:?}"
        );
        // Every log line, in order: the Manager's assignment line, then the worker's.
        let logs: Vec<String> = server.task_logs(id).into_iter().map(|l| l.log).collect();
        assert_eq!(logs.len(), 4, "{logs:?}");
        assert!(logs[0].contains("Manager assigned task"), "{logs:?}");
        assert_eq!(
            logs[1..],
            [
                format!("{name}: line 1"),
                format!("{name}: line 2"),
                format!("{name}: line 3")
            ]
        );
    }
    let status = farm.manager.upstream_status().await.expect("status");
    assert_eq!(status.backlog, 0);
    assert_eq!(status.set_aside, 0);
    assert!(status.totals.updates_acknowledged >= 6 * 5);
    farm.stop().await;
}

/// A task canceled on the Server while a worker runs it: the push answer makes it
/// `cancel-requested` here, may-i-run tells the worker, the worker's last update is kept
/// for its log and activity (204; v2 answered 409) and forwarded without its status, and
/// the Manager reports `canceled`; the job ends canceled.
#[tokio::test]
async fn cancel_of_a_running_task_reaches_its_worker() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let job = server.add_job(&creds.id, NewJob::sleep(1, 60));
    let task_hex = job.task_ids[0].clone();
    let task_id = ObjectId::parse(&task_hex).unwrap();
    let mut farm = Farm::start(config_for(&server, &creds)).await;
    farm.start_loops();
    let w = farm.register("w", &["sleep"]).await;
    wait_until("the task was downloaded", || async {
        farm.maybe_task(task_id).await.is_some()
    })
    .await;
    assert_eq!(assigned_id(&w).await, task_id);
    assert_eq!(
        w.update(
            task_id,
            json!({"task_status": "active", "activity": "sleeping"})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    wait_until("the Server has it active", || async {
        server.task_status(&task_hex).as_deref() == Some("active")
    })
    .await;

    server.set_job_status(&job.id, "cancel-requested");
    assert_eq!(
        server.task_status(&task_hex).as_deref(),
        Some("cancel-requested")
    );
    wait_until("may-i-run says no", || async {
        let (code, body) = w.may_i_run(task_id).await;
        code == StatusCode::OK && body["may_keep_running"] == false
    })
    .await;
    // The worker stops and says so: its last words are kept (v2 answered 409 and lost
    // them) and reach the Server, without the status the worker asked for.
    let last_words = "exec: TERMinating subprocess pid=30889";
    assert_eq!(
        w.update(
            task_id,
            json!({"task_status": "failed", "activity": "Task was canceled", "log": last_words})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        farm.task(task_id).await.status,
        TaskStatus::CancelRequested,
        "the status stays"
    );
    wait_until("the Server has it canceled", || async {
        server.task_status(&task_hex).as_deref() == Some("canceled")
    })
    .await;
    let logs: Vec<String> = server
        .task_logs(&task_hex)
        .into_iter()
        .map(|l| l.log)
        .collect();
    assert!(
        logs.iter().any(|l| l == last_words),
        "the last words reached the Server: {logs:?}"
    );
    let carried: Vec<Value> = server
        .received_updates()
        .into_iter()
        .filter(|u| u["log"] == last_words)
        .collect();
    assert!(!carried.is_empty());
    for u in &carried {
        assert!(u.get("task_status").is_none(), "sent without a status: {u}");
        assert_eq!(u["activity"], "Task was canceled");
    }
    assert_eq!(server.job_status(&job.id).as_deref(), Some("canceled"));
    assert_eq!(farm.task(task_id).await.status, TaskStatus::Canceled);
    farm.stop().await;
}

/// The Server is down (connections dropped, then 503) for many push intervals while the
/// workers keep working; the state is visible; afterwards everything is flushed.
#[tokio::test]
async fn server_outage_then_complete_flush() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let job = server.add_job(&creds.id, NewJob::sleep(8, 1));
    let mut farm = Farm::start(config_for(&server, &creds)).await;
    farm.start_loops();
    wait_until("tasks downloaded", || async {
        farm.manager
            .task_counts()
            .await
            .unwrap()
            .values()
            .sum::<u64>()
            == 8
    })
    .await;
    server.set_fault(Endpoint::TaskUpdateBatch, Fault::Drop);
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for n in 0..2 {
        let w = farm.register(&format!("w{n}"), &["sleep"]).await;
        workers.push(tokio::spawn(run_worker(w, stop.clone())));
    }
    wait_until("every task completed locally", || async {
        let counts = farm.manager.task_counts().await.unwrap();
        counts.get("completed").copied() == Some(8)
    })
    .await;
    stop.cancel();
    for w in workers {
        w.await.expect("worker");
    }
    // Keep the Server down for several pushes with dropped connections, then several
    // answered 503. Pushes are sequential, so once two requests arrived under the 503
    // fault, the first of them has failed and been counted.
    let push_failures = || async {
        farm.manager
            .upstream_status()
            .await
            .expect("status")
            .consecutive_push_failures
    };
    wait_until("three pushes failed on dropped connections", || async {
        push_failures().await >= 3
    })
    .await;
    server.clear_faults();
    server.set_fault(Endpoint::TaskUpdateBatch, Fault::Status(503));
    let pushes_before_503 = server.requests_to(Endpoint::TaskUpdateBatch).len();
    wait_until("two pushes were answered 503", || async {
        server.requests_to(Endpoint::TaskUpdateBatch).len() >= pushes_before_503 + 2
    })
    .await;
    let status = farm.manager.upstream_status().await.expect("status");
    assert!(status.consecutive_push_failures >= 4, "{status:?}");
    assert!(status.last_error.is_some());
    assert!(status.backlog >= 8 * 5, "{status:?}");
    let waiting: Vec<String> = farm
        .manager
        .outbox_peek(10_000)
        .await
        .unwrap()
        .iter()
        .map(|u| u.id.to_hex())
        .collect();
    assert!(job
        .task_ids
        .iter()
        .all(|id| server.task_status(id).as_deref() != Some("completed")));

    server.clear_faults();
    wait_until("the outbox is flushed", || async {
        farm.outbox_len().await == 0
    })
    .await;
    let received: std::collections::HashSet<String> = server
        .received_updates()
        .iter()
        .filter_map(|u| u["_id"].as_str().map(str::to_string))
        .collect();
    for id in &waiting {
        assert!(
            received.contains(id),
            "update {id} never reached the Server"
        );
    }
    wait_until("the job is completed on the Server", || async {
        server.job_status(&job.id).as_deref() == Some("completed")
    })
    .await;
    let status = farm.manager.upstream_status().await.expect("status");
    assert_eq!(status.consecutive_push_failures, 0);
    farm.stop().await;
}

/// A Server that never acknowledges one task's updates: they are retried a few times,
/// then set aside (visible, counted), and never hold up the other tasks' updates.
#[tokio::test]
async fn never_acknowledged_updates_are_set_aside() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let job = server.add_job(&creds.id, NewJob::sleep(4, 1));
    let stuck = job.task_ids[0].clone();
    server.never_acknowledge_task(&stuck);
    let mut config = config_for(&server, &creds);
    // Small batches, so the stuck updates fill the head of every batch.
    config.task_update_push_max_count = 3;
    let mut farm = Farm::start(config).await;
    farm.start_loops();
    let stop = CancellationToken::new();
    let w = farm.register("w", &["sleep"]).await;
    let worker = tokio::spawn(run_worker(w, stop.clone()));
    for id in &job.task_ids[1..] {
        wait_until("the other tasks complete on the Server", || async {
            server.task_status(id).as_deref() == Some("completed")
        })
        .await;
    }
    stop.cancel();
    worker.await.expect("worker");
    wait_until("only set-aside updates are left", || async {
        farm.outbox_len().await == 0
    })
    .await;
    let aside = farm.manager.store().outbox_set_aside(100).await.unwrap();
    assert_eq!(aside.len(), 5, "2 assignment + 3 worker updates: {aside:?}");
    assert!(aside.iter().all(|a| a.update.task_id.to_hex() == stuck));
    assert!(aside.iter().all(|a| a.attempts == 5));
    let status = farm.manager.upstream_status().await.expect("status");
    assert_eq!(status.set_aside, 5);
    assert_eq!(status.totals.updates_set_aside, 5);
    // The Server did apply them; it only never said so.
    assert_eq!(server.task_status(&stuck).as_deref(), Some("completed"));
    farm.stop().await;
}

// ---------------------------------------------------------------------------------------
// Gzip.

async fn gzip_case(
    gzip: UpstreamGzip,
    mode: GzipMode,
) -> (TestServer, Vec<Option<String>>, GzipState) {
    let server = TestServer::start().await;
    server.set_gzip(mode);
    let creds = server.add_manager();
    let job = server.add_job(&creds.id, NewJob::sleep(2, 1));
    let mut config = config_for(&server, &creds);
    config.upstream_gzip = gzip;
    let mut farm = Farm::start(config).await;
    farm.start_loops();
    let stop = CancellationToken::new();
    let w = farm.register("w", &["sleep"]).await;
    let worker = tokio::spawn(run_worker(w, stop.clone()));
    wait_until("the job completes on the Server", || async {
        server.job_status(&job.id).as_deref() == Some("completed")
    })
    .await;
    stop.cancel();
    worker.await.expect("worker");
    let encodings = server
        .requests_to(Endpoint::TaskUpdateBatch)
        .iter()
        .map(|r| r.header("content-encoding").map(str::to_string))
        .collect();
    let state = farm.manager.upstream_status().await.expect("status").gzip;
    farm.stop().await;
    (server, encodings, state)
}

/// `auto` with a Server 2.0.4 (a compressed body is invalid JSON to it: 400): one
/// attempt, then plain JSON for good, and nothing lost.
#[tokio::test]
async fn gzip_auto_falls_back_when_the_server_does_not_inflate() {
    let (_server, encodings, state) = gzip_case(UpstreamGzip::Auto, GzipMode::Ignored).await;
    assert_eq!(encodings[0].as_deref(), Some("gzip"));
    assert_eq!(
        encodings.iter().filter(|e| e.is_some()).count(),
        1,
        "{encodings:?}"
    );
    assert_eq!(state, GzipState::FellBack);
}

/// `auto` with a Server that refuses gzip with 415: the same fallback.
#[tokio::test]
async fn gzip_auto_falls_back_on_415() {
    let (_server, encodings, state) = gzip_case(UpstreamGzip::Auto, GzipMode::Refuse(415)).await;
    assert_eq!(encodings.iter().filter(|e| e.is_some()).count(), 1);
    assert_eq!(state, GzipState::FellBack);
}

/// `auto` with a Server that inflates: every push is compressed.
#[tokio::test]
async fn gzip_auto_keeps_compressing_when_accepted() {
    let (_server, encodings, state) = gzip_case(UpstreamGzip::Auto, GzipMode::Accept).await;
    assert!(encodings.len() >= 2);
    assert!(
        encodings.iter().all(|e| e.as_deref() == Some("gzip")),
        "{encodings:?}"
    );
    assert_eq!(state, GzipState::Auto);
}

/// `false`: never compressed.
#[tokio::test]
async fn gzip_off_never_compresses() {
    let (_server, encodings, state) = gzip_case(UpstreamGzip::Off, GzipMode::Accept).await;
    assert!(encodings.iter().all(Option::is_none), "{encodings:?}");
    assert_eq!(state, GzipState::Off);
}

// ---------------------------------------------------------------------------------------
// Downloads and kicks.

/// A clean slate first (no header), then incremental downloads with the saved watermark;
/// 304 changes nothing.
#[tokio::test]
async fn downloads_clean_slate_then_incremental() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let job = server.add_job(&creds.id, NewJob::sleep(2, 1));
    let mut config = config_for(&server, &creds);
    config.download_task_sleep = Duration::from_millis(200);
    let mut farm = Farm::start(config).await;
    farm.start_loops();
    wait_until("two incremental downloads", || async {
        server.requests_to(Endpoint::Depsgraph).len() >= 3
    })
    .await;
    let reqs = server.requests_to(Endpoint::Depsgraph);
    assert_eq!(reqs[0].header("x-flamenco-if-updated-since"), None);
    let mark = farm
        .manager
        .store()
        .get_setting(WATERMARK_KEY)
        .await
        .unwrap()
        .expect("watermark saved");
    assert!(mark.ends_with("+00:00"), "{mark}");
    assert_eq!(
        reqs[1].header("x-flamenco-if-updated-since"),
        Some(mark.as_str())
    );
    for id in &job.task_ids {
        let t = farm.task(ObjectId::parse(id).unwrap()).await;
        assert_eq!(t.status, TaskStatus::ClaimedByManager);
        assert_eq!(t.task_type, "sleep");
    }
    // The Server changes a task: the next incremental download brings it.
    server.edit_task(&job.task_ids[1], |f| {
        f.insert("priority".into(), json!(77));
    });
    let second = ObjectId::parse(&job.task_ids[1]).unwrap();
    wait_until("the change arrives", || async {
        farm.task(second).await.priority == 77
    })
    .await;
    farm.stop().await;
}

/// A download never takes a task away from its worker: the Server re-queues the job
/// while a worker runs a task; the task stays active for that worker here, and its
/// completion reaches the Server.
#[tokio::test]
async fn download_keeps_running_tasks_with_their_worker() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let job = server.add_job(&creds.id, NewJob::sleep(1, 60));
    let task_hex = job.task_ids[0].clone();
    let task_id = ObjectId::parse(&task_hex).unwrap();
    let mut config = config_for(&server, &creds);
    config.download_task_sleep = Duration::from_millis(100);
    let mut farm = Farm::start(config).await;
    farm.start_loops();
    let w = farm.register("w", &["sleep"]).await;
    let other = farm.register("other", &["sleep"]).await;
    wait_until("downloaded", || async {
        farm.maybe_task(task_id).await.is_some()
    })
    .await;
    assert_eq!(assigned_id(&w).await, task_id);
    assert_eq!(
        w.update(task_id, json!({"task_status": "active"})).await,
        StatusCode::NO_CONTENT
    );
    wait_until("active on the Server", || async {
        server.task_status(&task_hex).as_deref() == Some("active")
    })
    .await;
    let downloads = server.requests_to(Endpoint::Depsgraph).len();
    server.set_job_status(&job.id, "queued");
    wait_until("the re-queued task was downloaded again", || async {
        server.requests_to(Endpoint::Depsgraph)[downloads..]
            .iter()
            .any(|r| r.header("x-flamenco-if-updated-since").is_some())
            && server.task_status(&task_hex).as_deref() == Some("claimed-by-manager")
    })
    .await;
    // Downloads are sequential: once the next one has started, the Manager has applied
    // the one that brought the re-queued task.
    let redownloaded = server.requests_to(Endpoint::Depsgraph).len();
    wait_until("the next download started", || async {
        server.requests_to(Endpoint::Depsgraph).len() > redownloaded
    })
    .await;
    let t = farm.task(task_id).await;
    assert_eq!(t.status, TaskStatus::Active);
    assert_eq!(t.worker_id, Some(w.id));
    let (code, body) = w.may_i_run(task_id).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["may_keep_running"], true);
    // Nobody else gets it.
    assert_eq!(other.task().await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        w.update(task_id, json!({"task_status": "completed"})).await,
        StatusCode::NO_CONTENT
    );
    wait_until("completed on the Server", || async {
        server.task_status(&task_hex).as_deref() == Some("completed")
    })
    .await;
    farm.stop().await;
}

/// `/kick` and an empty queue start a download at once, without waiting for it; the
/// regular period is an hour here.
#[tokio::test]
async fn kick_and_empty_queue_trigger_downloads() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let mut config = config_for(&server, &creds);
    config.download_task_sleep = Duration::from_secs(3600);
    let mut farm = Farm::start(config).await;
    farm.start_loops();
    wait_until("the first download", || async {
        !server.requests_to(Endpoint::Depsgraph).is_empty()
    })
    .await;

    // /kick, while the Server takes 6 s to answer: the kick does not wait.
    let job = server.add_job(&creds.id, NewJob::sleep(1, 1));
    server.fail_times(
        Endpoint::Depsgraph,
        Fault::DelayBefore(Duration::from_secs(6)),
        1,
    );
    let started = Instant::now();
    let resp = farm
        .client
        .get(format!("{}/kick", farm.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(started.elapsed() < Duration::from_secs(4));
    let id = ObjectId::parse(&job.task_ids[0]).unwrap();
    wait_until("kicked download stored the task", || async {
        farm.maybe_task(id).await.is_some()
    })
    .await;

    // An empty queue for this worker's type kicks a download too.
    let w = farm.register("w", &["render"]).await;
    let mut job2 = NewJob::sleep(1, 1);
    job2.tasks[0].task_type = "render".into();
    let job2 = server.add_job(&creds.id, job2);
    let before = server.requests_to(Endpoint::Depsgraph).len();
    assert_eq!(w.task().await.0, StatusCode::NO_CONTENT);
    wait_until("the empty queue kicked a download", || async {
        server.requests_to(Endpoint::Depsgraph).len() > before
    })
    .await;
    let id2 = ObjectId::parse(&job2.task_ids[0]).unwrap();
    wait_until("the worker gets the new task", || async {
        let (code, body) = w.task().await;
        code == StatusCode::OK && body["_id"] == id2.to_hex()
    })
    .await;
    farm.stop().await;
}

/// Stopping the loops lets a push in progress finish (its answer is applied).
#[tokio::test]
async fn shutdown_completes_the_push_in_progress() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let mut farm = Farm::start(config_for(&server, &creds)).await;
    farm.manager
        .enqueue_tasks(vec![test_task("1aaa", "sleeping")])
        .await
        .unwrap();
    let w = farm.register("w", &["sleeping"]).await;
    server.insert_task(server_doc("1aaa", &creds.id, "1234567", 50, "queued"));
    assert_eq!(assigned_id(&w).await, oid("1aaa"));
    server.set_fault(
        Endpoint::TaskUpdateBatch,
        Fault::DelayAfter(Duration::from_secs(3)),
    );
    farm.start_loops();
    wait_until("a push is in progress", || async {
        !server.requests_to(Endpoint::TaskUpdateBatch).is_empty()
    })
    .await;
    let loops_stopped = Instant::now();
    farm.stop_loops.cancel();
    let loops = farm.loops.take().unwrap();
    loops.await.unwrap();
    assert!(loops_stopped.elapsed() >= Duration::from_secs(1));
    // The in-progress push completed: its updates left the outbox.
    assert_eq!(farm.outbox_len().await, 0);
    farm.stop().await;
}
