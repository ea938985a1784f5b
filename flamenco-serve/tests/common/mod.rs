//! Shared harness for the black-box tests: a Manager on a temporary embedded store, served
//! on a loopback port, and workers that speak the v2 protocol with reqwest.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use flamenco_core::clock::SystemClock;
use flamenco_core::config::Config;
use flamenco_core::model::{Command, ObjectId, Task, TaskStatus};
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::Manager;
use reqwest::StatusCode;
use serde_json::{json, Value};

// Not every test binary that includes this module waits.
#[allow(unused_imports)]
pub use flamenco_core::testing::wait_until;

pub struct TestManager {
    pub manager: Arc<Manager>,
    pub base: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The unit-test configuration of manager-v2.md §1.6 (variables and path replacement).
pub fn v2_test_config() -> Config {
    let yaml = r#"
variables:
    blender:
        windows: c:/temp/blender.exe
        linux: /opt/myblenderbuild/blender
        darwin: /opt/myblenderbuild/blender
path_replacement:
    render:
        windows: r:/
        linux: /render
        darwin: /Volume/render
    render_long:
        windows: r:/long
        linux: /render/long
        darwin: /Volume/render/long
    job_storage:
        windows: s:/
        linux: /shared/
        darwin: /Volume/shared/
        autumn: hey
"#;
    Config::from_yaml(yaml, std::path::Path::new("test-config.yaml")).expect("test config")
}

impl TestManager {
    pub async fn start() -> TestManager {
        Self::start_with(v2_test_config()).await
    }

    pub async fn start_with(config: Config) -> TestManager {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// A manager whose clock the test moves (timeouts, cleanup).
    pub async fn start_with_clock(
        mut config: Config,
        clock: Arc<dyn flamenco_core::clock::Clock>,
    ) -> TestManager {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        config.data_dir = dir.path().to_path_buf();
        let store = SqliteStore::open(dir.path()).expect("open store");
        let manager = Arc::new(Manager::with_store(config, Arc::new(store), clock));
        // The daemon's own bind (its listen backlog), as `flamenco serve` does.
        let listener = flamenco_serve::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(flamenco_serve::serve(manager.clone(), listener, async {
            let _ = rx.await;
        }));
        TestManager {
            manager,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            _dir: dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// A manager over a store the test opened (e.g. a MongoDB store), served like the others.
    pub async fn start_with_store(
        mut config: Config,
        store: Arc<dyn flamenco_core::store::Store>,
    ) -> TestManager {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        config.data_dir = dir.path().to_path_buf();
        let manager = Arc::new(Manager::with_store(config, store, Arc::new(SystemClock)));
        // The daemon's own bind (its listen backlog), as `flamenco serve` does.
        let listener = flamenco_serve::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(flamenco_serve::serve(manager.clone(), listener, async {
            let _ = rx.await;
        }));
        TestManager {
            manager,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            _dir: dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Register a worker over HTTP, as the real worker does.
    pub async fn register(&self, nickname: &str, platform: &str, types: &[&str]) -> TestWorker {
        self.register_as(nickname, platform, types, "Flamenco-Worker/2.5")
            .await
    }

    pub async fn register_as(
        &self,
        nickname: &str,
        platform: &str,
        types: &[&str],
        software: &str,
    ) -> TestWorker {
        let secret = format!("secret-of-{nickname}-{}", ObjectId::new());
        let resp = self
            .client
            .post(self.url("/register-worker"))
            .header("User-Agent", software)
            .json(&json!({"secret": secret, "platform": platform,
                          "supported_task_types": types, "nickname": nickname}))
            .send()
            .await
            .expect("register");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        let id = ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id");
        TestWorker {
            id,
            secret,
            base: self.base.clone(),
            client: self.client.clone(),
            software: software.to_string(),
        }
    }

    /// Put tasks straight into the store.
    pub async fn enqueue(&self, tasks: Vec<Task>) {
        self.manager.enqueue_tasks(tasks).await.expect("enqueue");
    }

    pub async fn task(&self, id: ObjectId) -> Task {
        self.manager
            .get_task(id)
            .await
            .expect("get task")
            .expect("task exists")
    }

    pub async fn worker(&self, id: ObjectId) -> flamenco_core::model::Worker {
        self.manager
            .get_worker(id)
            .await
            .expect("get worker")
            .expect("worker exists")
    }

    pub async fn outbox(&self) -> Vec<flamenco_core::model::TaskUpdate> {
        self.manager.outbox_peek(100_000).await.expect("outbox")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("join").expect("serve");
        }
        self.manager.close().await.expect("close");
    }
}

/// A worker speaking the v2 protocol.
#[derive(Clone)]
pub struct TestWorker {
    pub id: ObjectId,
    pub secret: String,
    pub base: String,
    pub client: reqwest::Client,
    pub software: String,
}

impl TestWorker {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base, path))
            .basic_auth(self.id.to_hex(), Some(&self.secret))
            .header("User-Agent", &self.software)
    }

    pub async fn post_empty(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::POST, path)
            .header("Content-Length", "0")
            .send()
            .await
            .expect("send")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("send")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("send")
    }

    pub async fn sign_on(&self, body: Value) -> StatusCode {
        self.post_json("/sign-on", &body).await.status()
    }

    pub async fn sign_off(&self) -> StatusCode {
        self.post_empty("/sign-off").await.status()
    }

    /// `POST /task`: (status, body or Null).
    pub async fn task(&self) -> (StatusCode, Value) {
        let resp = self.post_empty("/task").await;
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    pub async fn update(&self, task: ObjectId, body: Value) -> StatusCode {
        self.post_json(&format!("/tasks/{task}/update"), &body)
            .await
            .status()
    }

    pub async fn may_i_run(&self, task: ObjectId) -> (StatusCode, Value) {
        let resp = self.get(&format!("/may-i-run/{task}")).await;
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert_eq!(ct, "application/json", "may-i-run content type");
        (status, resp.json().await.expect("json"))
    }
}

/// v2's `ConstructTestTask(id, type)` fixture (manager-v2.md §10), priority 50.
pub fn test_task(id: &str, task_type: &str) -> Task {
    let mut t = Task::new(
        "Test task",
        task_type,
        vec![
            Command::new("echo", json!({"message": "Running Blender from {blender}"})),
            Command::new("sleep", json!({"time_in_seconds": 3})),
        ],
    );
    t.id = oid(id);
    t.etag = "1234567".into();
    t.job = Some(oid(&"b".repeat(24)));
    t.manager = Some(oid(&"c".repeat(24)));
    t.project = Some(oid(&"d".repeat(24)));
    t.user = Some(oid(&"e".repeat(24)));
    t.status = TaskStatus::Queued;
    t.priority = 50;
    t.job_priority = 0;
    t.job_type = "unittest".into();
    t.parents = vec![oid(&"f".repeat(24))];
    t.worker = "worker1".into();
    t
}

/// An id like v2's test ids: `"1aaa…"` = "1" followed by "a"s up to 24 characters.
pub fn oid(prefix: &str) -> ObjectId {
    let mut s = prefix.to_string();
    while s.len() < 24 {
        s.push('a');
    }
    ObjectId::parse(&s).expect("test id")
}

pub fn counts(map: &BTreeMap<String, u64>, status: &str) -> u64 {
    map.get(status).copied().unwrap_or(0)
}

/// Log output kept in memory: the writer of a `tracing_subscriber::fmt` subscriber.
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    /// Capture every event up to `level`, as plain text, with this test binary's global
    /// subscriber (there is one per binary: a second call panics).
    pub fn install_global(level: tracing::Level) -> CapturedLog {
        let log = CapturedLog::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only subscriber in this test binary");
        log
    }

    /// A subscriber writing every event up to `level` here, as plain text, for
    /// `tracing::subscriber::set_default`.
    pub fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish()
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The lines logged so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Forget what was logged so far.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
