//! The job API over HTTP: submit, list, show, tasks, cancel, re-queue, delete; errors that
//! name the field; the admin protection (token, loopback rule); the OpenAPI document.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode as AxumStatus};
use common::{v2_test_config, TestManager};
use flamenco_core::clock::SystemClock;
use flamenco_core::config::Config;
use flamenco_core::model::ObjectId;
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::Manager;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tower::ServiceExt;

fn sleep_job(frames: &str) -> Value {
    json!({"name": "nap", "job_type": "sleep",
           "settings": {"frames": frames, "chunk_size": 5, "time_in_seconds": 1}})
}

async fn post(tm: &TestManager, path: &str, body: &Value) -> (StatusCode, Value) {
    let resp = tm
        .client
        .post(tm.url(path))
        .json(body)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(tm: &TestManager, path: &str) -> (StatusCode, Value) {
    let resp = tm.client.get(tm.url(path)).send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post_empty(tm: &TestManager, path: &str) -> (StatusCode, Value) {
    let resp = tm.client.post(tm.url(path)).send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn submit_list_show_and_tasks() {
    let tm = TestManager::start().await;
    let resp = tm
        .client
        .post(tm.url("/api/jobs"))
        .json(&sleep_job("1-20"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut job: Value = resp.json().await.expect("json");
    // The submit answer is the job plus `warnings` (none here: sleep uses no variables).
    assert_eq!(job["warnings"], json!([]));
    job.as_object_mut().expect("object").remove("warnings");
    let id = job["_id"].as_str().expect("id").to_string();
    assert_eq!(job["name"], "nap");
    assert_eq!(job["job_type"], "sleep");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["priority"], 50);
    assert_eq!(job["task_counts"], json!({"queued": 4}));
    assert_eq!(job["settings"]["frames"], "1-20");

    let (status, shown) = get(&tm, &format!("/api/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, job);

    let (_, other) = post(
        &tm,
        "/api/jobs",
        &json!({"type": "exec-command", "priority": 90, "settings": {"cmd": ["true", "false"]}}),
    )
    .await;
    assert_eq!(other["name"], "exec-command");
    let (status, list) = get(&tm, "/api/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [other["_id"].as_str().unwrap(), id.as_str()],
        "newest first"
    );
    assert_eq!(
        (list["limit"].clone(), list["offset"].clone()),
        (json!(100), json!(0))
    );
    let (_, page) = get(&tm, "/api/jobs?limit=1&offset=1").await;
    assert_eq!(page["jobs"][0]["_id"], id.as_str());
    let (_, filtered) = get(&tm, "/api/jobs?status=completed,failed&status=canceled").await;
    assert_eq!(filtered["jobs"], json!([]));
    let (_, filtered) = get(&tm, "/api/jobs?status=queued").await;
    assert_eq!(filtered["jobs"].as_array().unwrap().len(), 2);

    let (status, tasks) = get(&tm, &format!("/api/jobs/{id}/tasks")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["sleep-1-5", "sleep-6-10", "sleep-11-15", "sleep-16-20"]
    );
    assert_eq!(tasks["tasks"][0]["job"], id.as_str());
    assert_eq!(tasks["tasks"][0]["task_type"], "sleep");
    let (_, page) = get(
        &tm,
        &format!("/api/jobs/{id}/tasks?limit=2&offset=1&status=queued"),
    )
    .await;
    let names: Vec<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sleep-6-10", "sleep-11-15"]);

    let (status, types) = get(&tm, "/api/job-types").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = types["job_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blender-render", "exec-command", "sleep"]);
    tm.stop().await;
}

#[tokio::test]
async fn bad_requests_are_4xx_naming_the_field() {
    let tm = TestManager::start().await;
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (
            json!({"job_type": "render"}),
            Some("job_type"),
            "unknown job type",
        ),
        (json!({"settings": {}}), Some("job_type"), "required"),
        (
            json!({"job_type": "sleep", "settings": {"frames": "1-x", "time_in_seconds": 1}}),
            Some("settings.frames"),
            "1-x",
        ),
        (
            json!({"job_type": "sleep", "settings": {"frames": "5-1", "time_in_seconds": 1}}),
            Some("settings.frames"),
            "empty range",
        ),
        (
            json!({"job_type": "sleep", "settings": {"frames": "1"}}),
            Some("settings.time_in_seconds"),
            "required",
        ),
        (
            json!({"job_type": "blender-render", "settings": {"filepath": "a", "frames": "1"}}),
            Some("settings.render_output"),
            "required",
        ),
        (
            json!({"job_type": "sleep", "priority": 0, "settings": {"frames": "1", "time_in_seconds": 1}}),
            Some("priority"),
            "1 to 100",
        ),
        (
            json!({"job_type": "sleep", "colour": "red"}),
            None,
            "unknown field `colour`",
        ),
        (
            json!(["not", "an", "object"]),
            None,
            "Unable to decode JSON",
        ),
    ];
    for (body, field, text) in cases {
        let (status, answer) = post(&tm, "/api/jobs", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let msg = answer["error"].as_str().expect("error text");
        assert!(msg.contains(text), "{body}: {msg:?} lacks {text:?}");
        match field {
            Some(f) => assert_eq!(answer["field"], f, "{body}"),
            None => assert!(answer.get("field").is_none(), "{answer}"),
        }
    }
    let resp = tm
        .client
        .post(tm.url("/api/jobs"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let unknown = ObjectId::new();
    for (path, status, field) in [
        (
            "/api/jobs/xyz".to_string(),
            StatusCode::BAD_REQUEST,
            Some("job_id"),
        ),
        (format!("/api/jobs/{unknown}"), StatusCode::NOT_FOUND, None),
        (
            format!("/api/jobs/{unknown}/tasks"),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "/api/jobs?status=done".to_string(),
            StatusCode::BAD_REQUEST,
            Some("status"),
        ),
        (
            "/api/jobs?limit=0".to_string(),
            StatusCode::BAD_REQUEST,
            Some("limit"),
        ),
        (
            "/api/jobs?limit=5000".to_string(),
            StatusCode::BAD_REQUEST,
            Some("limit"),
        ),
        (
            "/api/jobs?offset=-1".to_string(),
            StatusCode::BAD_REQUEST,
            Some("offset"),
        ),
        (
            "/api/jobs?sort=name".to_string(),
            StatusCode::BAD_REQUEST,
            Some("sort"),
        ),
    ] {
        let (got, answer) = get(&tm, &path).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
        assert_eq!(answer.get("field").and_then(Value::as_str), field, "{path}");
    }
    for action in ["cancel", "requeue"] {
        let (got, _) = post_empty(&tm, &format!("/api/jobs/{unknown}/{action}")).await;
        assert_eq!(got, StatusCode::NOT_FOUND);
    }
    assert!(tm
        .manager
        .list_jobs(&Default::default())
        .await
        .unwrap()
        .is_empty());
    tm.stop().await;
}

#[tokio::test]
async fn cancel_requeue_delete() {
    let tm = TestManager::start().await;
    let (_, job) = post(&tm, "/api/jobs", &sleep_job("1-10")).await;
    let id = job["_id"].as_str().unwrap();
    let (status, answer) = tm_delete(&tm, &format!("/api/jobs/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "a queued job is not deleted");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("cancel it first"));

    let (status, canceled) = post_empty(&tm, &format!("/api/jobs/{id}/cancel")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        canceled["status"], "canceled",
        "nothing ran, so canceled at once"
    );
    assert_eq!(canceled["task_counts"], json!({"canceled": 2}));
    let (status, answer) = post_empty(&tm, &format!("/api/jobs/{id}/cancel")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");

    let (status, requeued) = post_empty(&tm, &format!("/api/jobs/{id}/requeue")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(requeued["status"], "queued");
    assert_eq!(requeued["task_counts"], json!({"queued": 2}));

    post_empty(&tm, &format!("/api/jobs/{id}/cancel")).await;
    let resp = tm
        .client
        .delete(tm.url(&format!("/api/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, _) = get(&tm, &format!("/api/jobs/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(tm
        .manager
        .list_tasks(&Default::default())
        .await
        .unwrap()
        .is_empty());
    tm.stop().await;
}

async fn tm_delete(tm: &TestManager, path: &str) -> (StatusCode, Value) {
    let resp = tm.client.delete(tm.url(path)).send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_token_is_required_when_configured() {
    let mut config = v2_test_config();
    config.admin_token = "0p3n-s3same".into();
    let tm = TestManager::start_with(config).await;
    let url = tm.url("/api/jobs");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer 0p3n-s3same0"),
        Some("Basic MHAzbi1zM3NhbWU6"),
    ] {
        let mut req = tm.client.get(&url);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer realm=\"Flamenco Manager\""
        );
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("admin_token"));
    }
    // Refused before anything is stored.
    let resp = tm
        .client
        .post(&url)
        .json(&sleep_job("1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(tm
        .manager
        .list_jobs(&Default::default())
        .await
        .unwrap()
        .is_empty());

    let resp = tm
        .client
        .post(&url)
        .bearer_auth("0p3n-s3same")
        .json(&sleep_job("1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = tm
        .client
        .get(&url)
        .header("Authorization", "bearer   0p3n-s3same ")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "scheme case and spaces do not matter"
    );

    // The worker API and the OpenAPI document need no admin token.
    tm.register("w", "linux", &["sleep"]).await;
    let (status, _) = get(&tm, "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    tm.stop().await;
}

/// The router served with a fake peer address (or none).
async fn call_from(peer: Option<&str>, config: Config) -> AxumStatus {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let manager = Arc::new(Manager::with_store(
        config,
        Arc::new(store),
        Arc::new(SystemClock),
    ));
    let mut app = flamenco_serve::router(manager.clone());
    if let Some(peer) = peer {
        let addr: SocketAddr = peer.parse().unwrap();
        app = app.layer(MockConnectInfo(addr));
    }
    let resp = app
        .oneshot(Request::get("/api/jobs").body(Body::empty()).unwrap())
        .await
        .unwrap();
    manager.close().await.unwrap();
    resp.status()
}

#[tokio::test]
async fn without_a_token_only_loopback_clients_are_served() {
    for (peer, want) in [
        (Some("127.0.0.1:5000"), AxumStatus::OK),
        (Some("[::1]:5000"), AxumStatus::OK),
        (Some("[::ffff:127.0.0.1]:5000"), AxumStatus::OK),
        (Some("10.1.2.3:5000"), AxumStatus::FORBIDDEN),
        (Some("[2001:db8::1]:5000"), AxumStatus::FORBIDDEN),
        (None, AxumStatus::FORBIDDEN),
    ] {
        assert_eq!(call_from(peer, Config::default()).await, want, "{peer:?}");
    }
    // With a token, the address does not matter.
    let config = Config {
        admin_token: "t".into(),
        ..Config::default()
    };
    assert_eq!(
        call_from(Some("127.0.0.1:5000"), config.clone()).await,
        AxumStatus::UNAUTHORIZED
    );
    assert_eq!(
        call_from(Some("10.1.2.3:5000"), config).await,
        AxumStatus::UNAUTHORIZED
    );

    // Over a real connection from 127.0.0.1 the body says why a remote client is refused.
    let refusal =
        flamenco_serve::admin::AdminRefusal::NotLoopback(Some("10.1.2.3".parse().unwrap()));
    let resp = axum::response::IntoResponse::into_response(refusal);
    assert_eq!(resp.status(), AxumStatus::FORBIDDEN);
}

/// `(METHOD, path)` pairs of the OpenAPI document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `path` with every `{param}` replaced by `value`.
fn fill_params(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push_str(value);
                rest = &rest[start + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let tm = TestManager::start().await;
    let resp = tm
        .client
        .get(tm.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.expect("the document parses as JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(flamenco_serve::openapi::DOCUMENT).unwrap(),
        "the served document is docs/openapi.json"
    );

    // The routes the router was built with (recorded as they were registered, so a new
    // route is checked here without being listed anywhere), `ANY` standing for GET and
    // POST.
    let mut routes = BTreeSet::new();
    let table = flamenco_serve::route_table(tm.manager.clone());
    assert!(table.len() > 20, "the whole application: {table:?}");
    for route in table {
        let methods = match route.method {
            "ANY" => vec!["GET", "POST"],
            m => vec![m],
        };
        for m in methods {
            assert!(
                routes.insert((m.to_string(), route.path.to_string())),
                "{m} {} is registered twice",
                route.path
            );
        }
    }
    assert_eq!(
        documented(&doc),
        routes,
        "docs/openapi.json and the router differ"
    );

    // Every listed route is served (no 404 "no such route", no 405).
    let id = ObjectId::new().to_hex();
    for (method, path) in &routes {
        let concrete = path
            .replace("{job_id}", &id)
            .replace("{task_id}", &id)
            .replace("{worker_id}", &id)
            .replace("{file}", "dashboard.js")
            .replace("{status}", "awake");
        // Any other parameter: an id.
        let concrete = fill_params(&concrete, &id);
        let resp = tm
            .client
            .request(method.parse().unwrap(), tm.url(&concrete))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        let status = resp.status();
        // An event stream never ends: its status is enough.
        let body = if path == "/imagewatch" {
            String::new()
        } else {
            resp.text().await.unwrap_or_default()
        };
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            status != StatusCode::NOT_FOUND || body.contains("\"error\""),
            "{method} {path} is not served ({status} {body:?})"
        );
    }
    // And a route that is not listed is not served.
    let resp = tm
        .client
        .get(tm.url("/api/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    tm.stop().await;
}

/// A job whose commands use a `{variable}` the configuration defines for no platform is
/// stored, and the answer warns about it by name (a zero-config `blender-render`).
#[tokio::test]
async fn submit_warns_about_undefined_variables() {
    let tm = TestManager::start_with(Config::default()).await;
    let (status, job) = post(
        &tm,
        "/api/jobs",
        &json!({"job_type": "blender-render", "settings": {
            "filepath": "/shared/shot.blend", "render_output": "/render/shot/frame-######",
            "frames": "1-4", "chunk_size": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let warnings = job["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{job}");
    assert!(
        warnings[0].as_str().unwrap_or("").contains("{blender}"),
        "{job}"
    );
    assert_eq!(job["status"], "queued", "the job is stored all the same");

    let mut config = Config::default();
    config
        .variables
        .entry("blender".into())
        .or_default()
        .insert("linux".into(), "/usr/bin/blender".into());
    let tm = TestManager::start_with(config).await;
    let (status, job) = post(
        &tm,
        "/api/jobs",
        &json!({"job_type": "blender-render", "settings": {
            "filepath": "/shared/shot.blend", "render_output": "/render/shot/frame-######",
            "frames": "1-4", "chunk_size": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(
        job["warnings"],
        json!([]),
        "defined for one platform: no warning"
    );
}
