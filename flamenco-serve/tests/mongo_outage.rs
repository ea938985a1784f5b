//! A MongoDB outage under a running Manager: worker requests answer 503 with a short
//! reason within a few seconds (no hanging request), the daemon keeps running, and it
//! recovers by itself when the database is back. First the server hangs (SIGSTOP), then
//! it is gone (SIGKILL) and comes back.
//!
//! The test runs a private SecantusDB (the program in `FLAMENCO_TEST_SECANTUSD`, which
//! `scripts/test.sh` sets) on its own port with its data on disk, kills it, and starts it
//! again on the same port and data. Without that variable the test skips with a notice,
//! except under `CI=true`, where it fails.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{test_task, v2_test_config, TestManager, TestWorker};
use flamenco_core::store::mongo::testing::{required_env, SERVER_VAR};
use flamenco_core::store::mongo::MongoStore;
use reqwest::StatusCode;
use serde_json::Value;

/// A 503 must come within this (server selection gives up after 2 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(6);

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The database server, killed when dropped.
struct Server(Child);

impl Server {
    fn start(program: &str, port: u16, storage: &Path, log: &Path) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("server log");
        let child = Command::new(program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(storage)
            .args(["--log-level", "WARNING"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the test database server did not listen on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Send a signal (`STOP`, `CONT`).
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Kill it (SIGKILL: no clean shutdown) and wait until it is gone.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `POST /task`, with a bound on how long the answer may take.
async fn ask_for_task(w: &TestWorker) -> (StatusCode, Option<String>, Value, Duration) {
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(30), w.post_empty("/task"))
        .await
        .expect("the request hung");
    let took = started.elapsed();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, retry_after, body, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_requests_get_503_during_a_database_outage_and_then_recover() {
    let Some(program) = required_env(
        SERVER_VAR,
        "worker_requests_get_503_during_a_database_outage_and_then_recover",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("data");
    let log = dir.path().join("server.log");
    let port = free_port();
    let mut server = Server::start(&program, port, &storage, &log);

    let url = format!("mongodb://127.0.0.1:{port}/flamenco_outage?retryWrites=false");
    let store = MongoStore::connect(&url).await.expect("connect");
    let tm = TestManager::start_with_store(v2_test_config(), Arc::new(store)).await;
    tm.enqueue(vec![test_task("1", "sleeping"), test_task("2", "sleeping")])
        .await;
    let w = tm.register("node1", "linux", &["sleeping"]).await;
    let (status, _, body, _) = ask_for_task(&w).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = body["_id"].as_str().expect("task id").to_string();

    // The database hangs: requests waiting on it are interrupted when the driver's next
    // heartbeat fails (5 s + 2 s); at worst the store's operation timeout (15 s) ends them.
    server.signal("STOP");
    let (status, _, body, took) = ask_for_task(&w).await;
    eprintln!("outage: /task answered {status} in {took:?} while the server hung");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took < Duration::from_secs(16), "took {took:?}");
    let (status, _, body, took) = ask_for_task(&w).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took < ANSWER_WITHIN, "took {took:?}");
    server.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body, _) = ask_for_task(&w).await;
        if status == StatusCode::OK {
            assert_eq!(
                body["_id"].as_str(),
                Some(first.as_str()),
                "the same task again"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after SIGCONT: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The database goes away.
    server.kill();
    for n in 0..3 {
        let (status, retry_after, body, took) = ask_for_task(&w).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "request {n}: {body}"
        );
        assert!(took < ANSWER_WITHIN, "request {n} took {took:?}");
        eprintln!("outage: /task answered 503 in {took:?}");
        assert_eq!(retry_after.as_deref(), Some("5"));
        let reason = body["error"].as_str().expect("a JSON error with a reason");
        assert!(reason.contains("unavailable"), "{reason}");
        assert!(reason.len() < 400, "a short reason: {reason}");
    }
    // Other requests fail the same way, in parallel, without hanging.
    let started = Instant::now();
    let may_i_run = format!("/may-i-run/{}", common::oid("1"));
    let (a, b) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(30), w.get(&may_i_run)),
        tokio::time::timeout(Duration::from_secs(30), w.post_empty("/task")),
    );
    assert_eq!(
        a.expect("may-i-run hung").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        b.expect("/task hung").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(started.elapsed() < ANSWER_WITHIN, "{:?}", started.elapsed());

    // It comes back on the same port with the same data: the Manager recovers by itself,
    // and the worker gets its task again.
    let mut server = Server::start(&program, port, &storage, &log);
    let back = Instant::now();
    let deadline = back + Duration::from_secs(30);
    let body = loop {
        let (status, _, body, _) = ask_for_task(&w).await;
        if status == StatusCode::OK {
            break body;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            Instant::now() < deadline,
            "no recovery within 30 s of the database coming back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "outage: recovered {:?} after the server listened again",
        back.elapsed()
    );
    assert_eq!(
        body["_id"].as_str(),
        Some(first.as_str()),
        "the same task again"
    );
    let first = flamenco_core::model::ObjectId::parse(&first).expect("id");
    let (status, may) = w.may_i_run(first).await;
    assert_eq!(status, StatusCode::OK, "{may}");

    tm.stop().await;
    server.kill();
}
