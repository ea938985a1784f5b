//! The dashboard over HTTP: the page and its embedded assets, `/as-json` (manager-v2.md
//! §9.2), the JSON status API the page polls, and the admin-protected worker actions.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode as AxumStatus};
use chrono::{Duration, Utc};
use common::{test_task, v2_test_config, TestManager};
use flamenco_core::clock::{ManualClock, SystemClock};
use flamenco_core::config::Config;
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{ObjectId, RequestedStatus, TaskStatus};
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::Manager;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn get(tm: &TestManager, path: &str) -> (StatusCode, Value) {
    let resp = tm.client.get(tm.url(path)).send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(tm: &TestManager, path: &str) -> (StatusCode, Value) {
    let resp = tm.client.post(tm.url(path)).send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

/// The ids and attributes the browser tests rely on (docs/dashboard.md).
const ELEMENT_IDS: &[&str] = &[
    "fm-version",
    "fm-mode",
    "fm-store",
    "fm-leader",
    "task-counts",
    "tasks-total",
    "workers-table",
    "old-workers",
    "workers-pager",
    "jobs",
    "upstream-link",
    "latest-image",
    "last-refresh",
    "error-banner",
    "admin-token-form",
    "admin-token",
];

#[tokio::test]
async fn page_is_served_from_the_binary_without_external_urls() {
    let tm = TestManager::start().await;
    let resp = tm.client.get(tm.url("/")).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert!(resp.headers().contains_key("content-security-policy"));
    let html = resp.text().await.expect("body");
    for id in ELEMENT_IDS {
        assert!(html.contains(&format!("id=\"{id}\"")), "the page has #{id}");
    }
    assert!(
        html.contains(&format!(
            "<span id=\"fm-version\">{}</span>",
            flamenco_core::VERSION
        )),
        "the version is filled in"
    );
    assert!(html.contains("<span id=\"fm-mode\" class=\"pill\">standalone</span>"));
    assert!(html.contains("<body data-mode=\"standalone\">"));
    assert!(!html.contains("{{"), "no placeholder left");
    assert!(html.contains("src=\"/assets/dashboard.js\""));
    assert!(html.contains("href=\"/assets/dashboard.css\""));
    // No CDN: nothing in the page or its assets points off the Manager.
    for (name, _, content) in flamenco_serve::dashboard::ASSETS {
        // An SVG's namespace is a name, not a download.
        let content = content.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for text in [html.as_str(), content.as_str()] {
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{name} or the page refers to another site"
            );
        }
    }
    // The contract's attributes are produced by the script.
    let js = flamenco_serve::dashboard::ASSETS
        .iter()
        .find(|(n, _, _)| *n == "dashboard.js")
        .expect("dashboard.js")
        .2;
    for needle in [
        "'data-worker-id'",
        "'data-job-id'",
        "'data-status'",
        "'data-action'",
        "class: 'count'",
        "status-requested",
        "job-status",
        "sessionStorage",
        "/imagewatch",
        "/latest-image.jpg?v=",
    ] {
        assert!(js.contains(needle), "dashboard.js uses {needle}");
    }
    assert!(!js.contains("prompt("), "the token is asked with a form");
    tm.stop().await;
}

#[tokio::test]
async fn assets_have_types_etags_and_unknown_ones_are_404() {
    let tm = TestManager::start().await;
    for (file, ctype) in [
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("dashboard.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let resp = tm
            .client
            .get(tm.url(&format!("/assets/{file}")))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "{file}");
        assert_eq!(resp.headers()["content-type"], ctype);
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        assert!(
            etag.starts_with(&format!("\"{}-", flamenco_core::VERSION)),
            "{etag}"
        );
        assert!(!resp.text().await.unwrap().is_empty());
        // Revalidation: the same ETag answers 304 without a body.
        let again = tm
            .client
            .get(tm.url(&format!("/assets/{file}")))
            .header("If-None-Match", &etag)
            .send()
            .await
            .expect("send");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again.text().await.unwrap().is_empty());
        let stale = tm
            .client
            .get(tm.url(&format!("/assets/{file}")))
            .header("If-None-Match", "\"0.0.0-0000\"")
            .send()
            .await
            .expect("send");
        assert_eq!(stale.status(), StatusCode::OK);
    }
    for missing in [
        "nothing.js",
        "dashboard.html",
        "..%2Fsrc%2Flib.rs",
        "Dashboard.js",
    ] {
        let (status, body) = get(&tm, &format!("/assets/{missing}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert!(
            body["error"].as_str().unwrap().contains("dashboard.js"),
            "{body}"
        );
    }
    tm.stop().await;
}

#[tokio::test]
async fn as_json_has_v2_fields_order_and_omissions() {
    let tm = TestManager::start().await;

    // No workers: `workers` is null.
    let resp = tm.client.get(tm.url("/as-json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"nr_of_workers": 0, "nr_of_tasks": 0, "version": flamenco_core::VERSION,
               "workers": null, "server": ""})
    );

    // Two workers registered in reverse order; one runs a task.
    let zed = tm.register("zed", "linux", &["sleep"]).await;
    let alpha = tm.register("alpha", "windows", &["unittest"]).await;
    assert_eq!(alpha.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    tm.enqueue(vec![test_task("1", "unittest"), test_task("2", "sleep")])
        .await;
    let (status, task) = alpha.task().await;
    assert_eq!(status, StatusCode::OK);
    let task_id = task["_id"].as_str().unwrap().to_string();
    let update = json!({"task_status": "active", "activity": "rendering"});
    assert_eq!(
        alpha
            .update(ObjectId::parse(&task_id).unwrap(), update)
            .await,
        StatusCode::NO_CONTENT
    );
    // The worker's reported status shows after the next "seen" flush (every second in
    // the daemon, `flamenco_core::seen`).
    tm.manager.flush_seen().await.expect("flush");

    let (status, body) = get(&tm, "/as-json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&body),
        [
            "nr_of_tasks",
            "nr_of_workers",
            "server",
            "version",
            "workers"
        ]
    );
    assert_eq!(body["nr_of_workers"], 2);
    assert_eq!(body["nr_of_tasks"], 2);
    let workers = body["workers"].as_array().unwrap();
    assert_eq!(workers[0]["nickname"], "alpha", "sorted by nickname");
    assert_eq!(workers[1]["nickname"], "zed");

    // The worker with a task has every field, including the starred ones.
    let a = &workers[0];
    assert_eq!(
        keys(a),
        [
            "_id",
            "address",
            "current_task",
            "current_task_status",
            "current_task_updated",
            "last_activity",
            "nickname",
            "platform",
            "software",
            "status",
            "supported_task_types",
            "time_cost"
        ]
    );
    assert_eq!(a["_id"], alpha.id.to_hex());
    assert_eq!(a["current_task"], task_id);
    assert_eq!(a["current_task_status"], "active");
    assert_eq!(a["status"], "awake");
    assert_eq!(a["time_cost"], 0);
    assert_eq!(a["platform"], "windows");
    assert_eq!(a["software"], "Flamenco-Worker/2.5");
    assert_eq!(a["supported_task_types"], json!(["unittest"]));
    assert!(a["address"].as_str().unwrap().starts_with("127.0.0.1"));

    // The idle, never-seen worker omits them; status_requested is never in the report.
    let z = &workers[1];
    assert_eq!(
        keys(z),
        [
            "_id",
            "address",
            "nickname",
            "platform",
            "software",
            "status",
            "supported_task_types",
            "time_cost"
        ]
    );
    assert_eq!(z["_id"], zed.id.to_hex());
    assert_eq!(z["status"], "");
    tm.manager
        .request_worker_status(zed.id, Some(RequestedStatus::Asleep))
        .await
        .unwrap();
    let (_, body) = get(&tm, "/as-json").await;
    assert!(body["workers"][1].get("status_requested").is_none());
    tm.stop().await;
}

#[tokio::test]
async fn as_json_sorts_equal_nicknames_by_status_and_names_the_server() {
    let mut config = v2_test_config();
    config.flamenco = "http://127.0.0.1:9/".into();
    config.manager_id = "5852bc5198377351f95d103e".into();
    config.manager_secret = "s3cret".into();
    let tm = TestManager::start_with(config).await;
    let first = tm.register("twin", "linux", &["sleep"]).await;
    let second = tm.register("twin", "linux", &["sleep"]).await;
    // `second` becomes "awake", `first` stays "" (registered): "" sorts first.
    assert_eq!(second.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    let (status, body) = get(&tm, "/as-json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["server"], "http://127.0.0.1:9/");
    assert_eq!(body["workers"][0]["_id"], first.id.to_hex());
    assert_eq!(body["workers"][1]["_id"], second.id.to_hex());
    assert_eq!(body["workers"][1]["status"], "awake");

    // Upstream mode: the status says so and shows the link; there are no local jobs.
    let (status, s) = get(&tm, "/api/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["mode"], "upstream");
    assert_eq!(s["server"], "http://127.0.0.1:9/");
    assert_eq!(s["upstream"]["server"], "http://127.0.0.1:9/");
    assert_eq!(s["upstream"]["backlog"], 0);
    let (status, jobs) = get(&tm, "/api/status/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jobs["mode"], "upstream");
    assert_eq!(jobs["jobs"], json!([]));
    let resp = tm.client.get(tm.url("/")).send().await.unwrap();
    let html = resp.text().await.unwrap();
    assert!(html.contains("<body data-mode=\"upstream\">"));
    tm.stop().await;
}

#[tokio::test]
async fn as_json_answers_503_with_json_when_the_database_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let manager = Arc::new(Manager::with_store(
        Config::default(),
        Arc::new(store),
        Arc::new(SystemClock),
    ));
    let app = flamenco_serve::router(manager.clone());
    manager.close().await.unwrap();
    let resp = app
        .oneshot(Request::get("/as-json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), AxumStatus::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).expect("a JSON body, not an empty one");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("database"), "{message}");
}

#[tokio::test]
async fn status_counts_tasks_workers_and_outbox() {
    let tm = TestManager::start().await;
    let mut tasks = Vec::new();
    for (i, status) in [
        TaskStatus::Queued,
        TaskStatus::Queued,
        TaskStatus::Queued,
        TaskStatus::Completed,
        TaskStatus::Failed,
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = test_task(&format!("{}", i + 1), "sleep");
        t.status = status;
        t.parents.clear();
        tasks.push(t);
    }
    tm.enqueue(tasks).await;
    let w = tm.register("w1", "linux", &["sleep"]).await;
    tm.register("w2", "linux", &["sleep"]).await;
    assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    let (status, _) = w.task().await;
    assert_eq!(status, StatusCode::OK);

    let resp = tm.client.get(tm.url("/api/status")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let s: Value = resp.json().await.unwrap();
    assert_eq!(s["version"], flamenco_core::VERSION);
    assert_eq!(s["mode"], "standalone");
    assert!(s["store"].as_str().unwrap().starts_with("sqlite:"), "{s}");
    assert_eq!(s["server"], Value::Null);
    assert_eq!(s["upstream"], Value::Null);
    assert_eq!(s["tasks"]["queued"], 2);
    assert_eq!(s["tasks"]["active"], 1);
    assert_eq!(s["tasks"]["completed"], 1);
    assert_eq!(s["tasks"]["failed"], 1);
    assert_eq!(s["tasks"]["canceled"], 0, "every known status is listed");
    assert_eq!(s["tasks_total"], 5);
    assert_eq!(s["workers"]["total"], 2);
    assert_eq!(
        s["workers"]["by_status"],
        json!({"awake": 1, "registered": 1})
    );
    assert_eq!(s["workers"]["old"], 1, "the never-seen worker is old");
    assert_eq!(s["outbox"]["set_aside"], 0);
    assert!(s["outbox"]["depth"].as_u64().is_some());
    assert!(chrono::DateTime::parse_from_rfc3339(s["now"].as_str().unwrap()).is_ok());
    // The embedded store is not shared: this Manager is the holder, with no lease.
    assert_eq!(s["leader"]["shared"], false, "{s}");
    assert_eq!(s["leader"]["holder"], s["leader"]["instance"], "{s}");
    assert_eq!(s["leader"]["term"], Value::Null, "{s}");
    tm.stop().await;
}

#[tokio::test]
async fn workers_are_paged_sorted_grouped_and_params_checked() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let tm = TestManager::start_with_clock(v2_test_config(), clock.clone()).await;
    // Five workers seen now; "old-one" was last seen 15 days ago.
    let ancient = tm.register("old-one", "linux", &["sleep"]).await;
    assert_eq!(ancient.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    clock.advance(Duration::days(15));
    let mut ids = Vec::new();
    for (name, platform) in [
        ("delta", "linux"),
        ("Bravo", "windows"),
        ("echo", "darwin"),
        ("alpha", "linux"),
    ] {
        let w = tm
            .register_as(name, platform, &["sleep"], "Flamenco-Worker/2.2")
            .await;
        assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
        ids.push(w.id);
        clock.advance(Duration::seconds(10));
    }
    let names = |v: &Value| -> Vec<String> {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["nickname"].as_str().unwrap().to_string())
            .collect()
    };

    let (status, page) = get(&tm, "/api/status/workers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 4, "current workers only");
    assert_eq!(page["limit"], 50);
    assert_eq!(page["groups"], json!({"current": 4, "old": 1}));
    assert_eq!(names(&page), ["alpha", "Bravo", "delta", "echo"]);
    let first = &page["workers"][0];
    assert_eq!(
        keys(first),
        [
            "address",
            "current_task",
            "current_task_status",
            "current_task_updated",
            "id",
            "last_activity",
            "nickname",
            "old",
            "platform",
            "software",
            "status",
            "status_requested",
            "supported_task_types",
            "supports_status_requests",
            "tags"
        ]
    );
    assert_eq!(first["supports_status_requests"], true);
    assert_eq!(first["tags"], json!([]), "no tags given");
    assert_eq!(first["old"], false);

    let (_, page) = get(&tm, "/api/status/workers?limit=2&offset=2").await;
    assert_eq!(names(&page), ["delta", "echo"]);
    assert_eq!(page["total"], 4);
    let (_, page) = get(&tm, "/api/status/workers?limit=2&offset=4").await;
    assert_eq!(names(&page), Vec::<String>::new());
    let (_, page) = get(&tm, "/api/status/workers?sort=nickname&order=desc").await;
    assert_eq!(names(&page), ["echo", "delta", "Bravo", "alpha"]);
    let (_, page) = get(&tm, "/api/status/workers?sort=last_activity&order=desc").await;
    assert_eq!(names(&page), ["alpha", "echo", "Bravo", "delta"]);
    let (_, page) = get(&tm, "/api/status/workers?sort=platform").await;
    assert_eq!(names(&page), ["echo", "alpha", "delta", "Bravo"]);

    let (_, page) = get(&tm, "/api/status/workers?group=old").await;
    assert_eq!(names(&page), ["old-one"]);
    assert_eq!(page["workers"][0]["old"], true);
    assert_eq!(page["workers"][0]["supports_status_requests"], true);
    let (_, page) = get(&tm, "/api/status/workers?group=all&limit=500").await;
    assert_eq!(page["total"], 5);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("sort=address", "sort"),
        ("order=up", "order"),
        ("group=new", "group"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = get(&tm, &format!("/api/status/workers?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().len() > 10);
    }
    tm.stop().await;
}

#[tokio::test]
async fn worker_actions_from_loopback_set_the_request() {
    let tm = TestManager::start().await;
    let new = tm.register("new", "linux", &["sleep"]).await;
    let old = tm
        .register_as("old", "linux", &["sleep"], "Flamenco-Worker/2.0.6")
        .await;

    for (action, want) in [
        ("sleep", RequestedStatus::Asleep),
        ("wake", RequestedStatus::Awake),
        ("shutdown", RequestedStatus::Shutdown),
    ] {
        let (status, body) = post(&tm, &format!("/api/workers/{}/{action}", new.id)).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        assert_eq!(body["status_requested"], want.as_str());
        assert_eq!(tm.worker(new.id).await.status_requested, Some(want));
    }

    // A 2.0.x worker cannot obey: refused, nothing recorded.
    let (status, body) = post(&tm, &format!("/api/workers/{}/sleep", old.id)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"].as_str().unwrap().contains("2.1"),
        "the message says which version is needed: {body}"
    );
    assert_eq!(tm.worker(old.id).await.status_requested, None);
    let (_, page) = get(&tm, "/api/status/workers?group=all").await;
    let listed = page["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == old.id.to_hex())
        .expect("listed")
        .clone();
    assert_eq!(listed["supports_status_requests"], false);

    let unknown = ObjectId::new();
    let (status, body) = post(&tm, &format!("/api/workers/{unknown}/sleep")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("unknown"));
    let (status, body) = post(&tm, "/api/workers/not-an-id/wake").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "worker_id");
    let (status, _) = post(&tm, &format!("/api/workers/{}/explode", new.id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Reading needs no token; actions are POST only.
    let resp = tm
        .client
        .get(tm.url(&format!("/api/workers/{}/sleep", new.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    tm.stop().await;
}

/// A request through the router with a fake peer address and an optional token.
async fn call_as(
    manager: &Arc<Manager>,
    peer: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> AxumStatus {
    let addr: SocketAddr = peer.parse().unwrap();
    let app = flamenco_serve::router(manager.clone()).layer(MockConnectInfo(addr));
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    app.oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

async fn manager_with_worker(config: Config) -> (Arc<Manager>, ObjectId, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let manager = Arc::new(Manager::with_store(
        config,
        Arc::new(store),
        Arc::new(SystemClock),
    ));
    let worker = flamenco_core::model::Worker {
        id: ObjectId::new(),
        hashed_secret: String::new(),
        secret_sha256: String::new(),
        nickname: "w".into(),
        address: "10.0.0.5:4000".into(),
        status: "awake".into(),
        platform: "linux".into(),
        time_cost: 0,
        supported_task_types: vec!["sleep".into()],
        software: "Flamenco-Worker/2.5".into(),
        current_task: None,
        last_activity: Some(Utc::now()),
        current_task_status: String::new(),
        current_task_updated: None,
        status_requested: None,
        tags: Vec::new(),
    };
    manager.store().insert_worker(&worker).await.unwrap();
    (manager, worker.id, dir)
}

#[tokio::test]
async fn worker_actions_need_admin_access_but_reading_does_not() {
    // No admin_token: loopback only.
    let (manager, id, _dir) = manager_with_worker(Config::default()).await;
    let action = format!("/api/workers/{id}/sleep");
    assert_eq!(
        call_as(&manager, "10.1.2.3:5000", "POST", &action, None).await,
        AxumStatus::FORBIDDEN
    );
    assert_eq!(
        manager
            .get_worker(id)
            .await
            .unwrap()
            .unwrap()
            .status_requested,
        None
    );
    for path in [
        "/",
        "/as-json",
        "/api/status",
        "/api/status/workers",
        "/api/status/jobs",
        "/assets/dashboard.js",
    ] {
        assert_eq!(
            call_as(&manager, "10.1.2.3:5000", "GET", path, None).await,
            AxumStatus::OK,
            "{path} is readable from anywhere"
        );
    }
    assert_eq!(
        call_as(&manager, "127.0.0.1:5000", "POST", &action, None).await,
        AxumStatus::OK
    );
    assert_eq!(
        manager
            .get_worker(id)
            .await
            .unwrap()
            .unwrap()
            .status_requested,
        Some(RequestedStatus::Asleep)
    );
    manager.close().await.unwrap();

    // With admin_token: the right Bearer token, from anywhere.
    let config = Config {
        admin_token: "t0ken".into(),
        ..Config::default()
    };
    let (manager, id, _dir2) = manager_with_worker(config).await;
    let action = format!("/api/workers/{id}/shutdown");
    assert_eq!(
        call_as(&manager, "127.0.0.1:5000", "POST", &action, None).await,
        AxumStatus::UNAUTHORIZED
    );
    assert_eq!(
        call_as(&manager, "10.1.2.3:5000", "POST", &action, Some("wrong")).await,
        AxumStatus::UNAUTHORIZED
    );
    assert_eq!(
        manager
            .get_worker(id)
            .await
            .unwrap()
            .unwrap()
            .status_requested,
        None
    );
    assert_eq!(
        call_as(&manager, "10.1.2.3:5000", "GET", "/api/status", None).await,
        AxumStatus::OK
    );
    assert_eq!(
        call_as(&manager, "10.1.2.3:5000", "POST", &action, Some("t0ken")).await,
        AxumStatus::OK
    );
    assert_eq!(
        manager
            .get_worker(id)
            .await
            .unwrap()
            .unwrap()
            .status_requested,
        Some(RequestedStatus::Shutdown)
    );
    manager.close().await.unwrap();
}

#[tokio::test]
async fn jobs_show_progress_and_are_paged() {
    let tm = TestManager::start().await;
    let mut settings = serde_json::Map::new();
    settings.insert("frames".into(), json!("1-20"));
    settings.insert("chunk_size".into(), json!(5));
    settings.insert("time_in_seconds".into(), json!(1));
    tm.manager
        .submit_job(JobSubmission::new("sleep", settings.clone()).named("first"))
        .await
        .unwrap();
    let second = tm
        .manager
        .submit_job(
            JobSubmission::new("sleep", settings)
                .named("second")
                .with_priority(70),
        )
        .await
        .unwrap();

    let (status, page) = get(&tm, "/api/status/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["mode"], "standalone");
    assert_eq!(page["has_more"], false);
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    let listed = jobs
        .iter()
        .find(|j| j["id"] == second.id.to_hex())
        .expect("second job listed");
    assert_eq!(
        keys(listed),
        ["created", "id", "job_type", "name", "priority", "status", "tasks", "updated"]
    );
    assert_eq!(listed["name"], "second");
    assert_eq!(listed["job_type"], "sleep");
    assert_eq!(listed["priority"], 70);
    assert_eq!(listed["status"], "queued");
    assert_eq!(listed["tasks"], json!({"total": 4, "queued": 4}));

    // Job actions update the counts at once.
    tm.manager.cancel_job(second.id).await.unwrap();
    let (_, page) = get(&tm, "/api/status/jobs?status=canceled").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["id"], second.id.to_hex());
    assert_eq!(page["jobs"][0]["tasks"], json!({"total": 4, "canceled": 4}));

    let (_, page) = get(&tm, "/api/status/jobs?limit=1").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], true);
    let (_, page) = get(&tm, "/api/status/jobs?limit=1&offset=1").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], false);

    for (query, field) in [
        ("limit=0", "limit"),
        ("status=sleeping", "status"),
        ("sort=name", "sort"),
    ] {
        let (status, body) = get(&tm, &format!("/api/status/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["field"], field, "{query}");
    }
    tm.stop().await;
}
