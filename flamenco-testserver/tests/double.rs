//! The test double against the checklist of server-protocol.md §7: what the real Server
//! 2.0.4 answers, status for status.

use std::io::Write;
use std::time::Duration;

use flamenco_testserver::{
    new_object_id, parse_since, Endpoint, Fault, GzipMode, ManagerCreds, NewJob, TestServer,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

struct Api {
    server: TestServer,
    creds: ManagerCreds,
    http: reqwest::Client,
}

impl Api {
    async fn new() -> Api {
        let server = TestServer::start().await;
        let creds = server.add_manager();
        Api {
            server,
            creds,
            http: client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path.trim_start_matches('/'))
    }

    fn mgr(&self, what: &str) -> String {
        self.url(&format!("api/flamenco/managers/{}/{what}", self.creds.id))
    }

    fn post(&self, url: String) -> reqwest::RequestBuilder {
        self.http.post(url).basic_auth(&self.creds.token, Some(""))
    }

    fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.http.get(url).basic_auth(&self.creds.token, Some(""))
    }

    async fn push(&self, body: Value) -> (StatusCode, Value) {
        let resp = self
            .post(self.mgr("task-update-batch"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn depsgraph(&self, since: Option<&str>) -> (StatusCode, Option<String>, Value) {
        let mut req = self.get(self.mgr("depsgraph"));
        if let Some(since) = since {
            req = req.header("X-Flamenco-If-Updated-Since", since);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let mark = resp
            .headers()
            .get("X-Flamenco-Last-Updated")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        (
            status,
            mark,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
}

fn startup_body() -> Value {
    json!({"manager_url": "http://m/", "variables": null, "path_replacement": null,
           "nr_of_workers": 1})
}

/// §1: 403 for no or unknown token (or a password), 400 for a bad manager id, 404 for an
/// unknown manager, 401 for another manager's token; 405 for a wrong method.
#[tokio::test]
async fn authentication_in_the_servers_order() {
    let api = Api::new().await;
    let other = api.server.add_manager();
    let url = api.mgr("startup");
    let send = |req: reqwest::RequestBuilder| async move {
        req.json(&startup_body()).send().await.unwrap().status()
    };
    assert_eq!(send(api.http.post(&url)).await, StatusCode::FORBIDDEN);
    assert_eq!(
        send(api.http.post(&url).basic_auth("SRVunknown", Some(""))).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(api.http.post(&url).basic_auth(&api.creds.token, Some("pw"))).await,
        StatusCode::FORBIDDEN
    );
    let user = api.server.add_user_token();
    assert_eq!(
        send(api.http.post(&url).basic_auth(&user, Some(""))).await,
        StatusCode::FORBIDDEN,
        "not a Manager's service account"
    );
    let resp = api
        .post(api.url("api/flamenco/managers/xyz/startup"))
        .json(&startup_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"_status": "ERR", "_error": {"code": 400, "message": "Invalid object ID 'xyz'"}})
    );
    assert_eq!(
        send(api.post(api.url(&format!(
            "api/flamenco/managers/{}/startup",
            new_object_id()
        ))))
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(api.http.post(&url).basic_auth(&other.token, Some(""))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get(url.clone()).send().await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(send(api.post(url)).await, StatusCode::NO_CONTENT);
}

/// §2.1: all four keys required (500 otherwise, also for no body); extra keys ignored
/// (`worker_task_types` kept for a newer Server's sake); 204.
#[tokio::test]
async fn startup_requires_four_keys() {
    let api = Api::new().await;
    for key in [
        "manager_url",
        "variables",
        "path_replacement",
        "nr_of_workers",
    ] {
        let mut body = startup_body();
        body.as_object_mut().unwrap().remove(key);
        let resp = api
            .post(api.mgr("startup"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{key}");
    }
    let resp = api.post(api.mgr("startup")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = startup_body();
    body["worker_task_types"] = json!(["sleep"]);
    body["extra"] = json!(1);
    let resp = api
        .post(api.mgr("startup"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.bytes().await.unwrap().is_empty());
    let doc = api.server.manager_doc(&api.creds.id).unwrap();
    assert_eq!(doc["url"], "http://m/");
    assert_eq!(doc["stats"]["nr_of_workers"], 1);
    assert_eq!(doc["worker_task_types"], json!(["sleep"]));
}

/// §2.2: 204 without runnable jobs; clean slate claims queued tasks without touching
/// `_updated`/`_etag`; the watermark is Python's isoformat of the newest `_updated`;
/// incremental: 304 when nothing changed, only queued/claimed tasks changed since;
/// garbage in the header is a 500; BSON on request.
#[tokio::test]
async fn depsgraph_semantics() {
    let api = Api::new().await;
    let (status, _, _) = api.depsgraph(None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let job = api.server.add_job(&api.creds.id, NewJob::sleep(3, 1));
    let before = api.server.task(&job.task_ids[0]).unwrap();

    let (status, mark, body) = api.depsgraph(None).await;
    assert_eq!(status, StatusCode::OK);
    let tasks = body["depsgraph"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|t| t["status"] == "claimed-by-manager"));
    let after = api.server.task(&job.task_ids[0]).unwrap();
    assert_eq!(after["status"], "claimed-by-manager");
    assert_eq!(after["_etag"], before["_etag"], "claiming keeps the etag");
    assert_eq!(after["_updated"], before["_updated"]);
    assert!(tasks[0]["_updated"].as_str().unwrap().ends_with(" GMT"));
    assert!(tasks[0].get("parents").is_none(), "only when non-empty");
    let mark = mark.expect("X-Flamenco-Last-Updated");
    assert!(mark.ends_with("+00:00"), "{mark}");
    assert!(parse_since(&mark).is_some());

    let (status, _, body) = api.depsgraph(Some(&mark)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(body, Value::Null);
    // Server-side changes come back incrementally (only queued/claimed-by-manager). The
    // clock moves on past the mark first (not a wait for an event): the changes must be
    // stamped after it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    api.server.set_task_status(&job.task_ids[1], "queued");
    api.server.set_task_status(&job.task_ids[2], "active");
    let (status, mark2, body) = api.depsgraph(Some(&mark)).await;
    assert_eq!(status, StatusCode::OK);
    let tasks = body["depsgraph"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["_id"], job.task_ids[1]);
    assert_eq!(tasks[0]["status"], "claimed-by-manager");
    assert_ne!(mark2.unwrap(), mark);

    let resp = api
        .get(api.mgr("depsgraph"))
        .header("X-Flamenco-If-Updated-Since", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let resp = api
        .get(api.mgr("depsgraph"))
        .header("Accept", "application/bson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/bson");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(
        i32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize,
        bytes.len()
    );
}

/// §2.3: per-update semantics, the cancel list only when non-empty, strict errors.
#[tokio::test]
async fn task_update_batch_semantics() {
    let api = Api::new().await;
    let other = api.server.add_manager();
    let job = api.server.add_job(&api.creds.id, NewJob::sleep(2, 1));
    let foreign = api.server.add_job(&other.id, NewJob::sleep(1, 1));
    let (t0, t1) = (&job.task_ids[0], &job.task_ids[1]);
    let etag = api.server.task(t0).unwrap()["_etag"].clone();

    let (status, body) = api.push(json!([])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"modified_count": 0, "handled_update_ids": []}));
    let (status, body) = api.push(Value::Null).await;
    assert_eq!(status, StatusCode::OK, "null means no updates");
    assert!(body.get("cancel_task_ids").is_none());

    let (u1, u2, u3, u4) = (
        new_object_id(),
        new_object_id(),
        new_object_id(),
        new_object_id(),
    );
    let (status, body) = api
        .push(json!([
            {"_id": u1, "task_id": t0, "task_status": "active", "received_on_manager": "2017-06-23T10:00:00Z",
             "activity": "rendering", "task_progress_percentage": 10, "current_command_idx": 1,
             "command_progress_percentage": 50, "log": "line 1", "worker": "w (1.2.3.4)"},
            {"_id": u2, "task_id": new_object_id(), "task_status": "active"},
            {"_id": u3, "task_id": foreign.task_ids[0], "task_status": "active"},
            {"_id": u4, "task_id": t1, "task_status": "no-such-status", "activity": "x"},
        ]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["handled_update_ids"], json!([u1, u2, u4]));
    assert_eq!(body["modified_count"], 2);
    let doc = api.server.task(t0).unwrap();
    assert_eq!(doc["status"], "active");
    assert_eq!(doc["activity"], "rendering");
    assert_eq!(doc["worker"], "w (1.2.3.4)");
    assert_eq!(
        doc["current_command_index"], 0,
        "current_command_idx is not read"
    );
    assert_eq!(doc["task_progress_percentage"], 10);
    assert_eq!(doc["_etag"], etag, "no etag bump");
    assert_eq!(api.server.task_status(t1).as_deref(), Some("queued"));
    assert_eq!(api.server.task_logs(t0)[0].log, "line 1");
    assert_eq!(api.server.job_status(&job.id).as_deref(), Some("active"));

    // Progress fields absent → reset to 0; a re-sent log is stored once.
    let (_, _) = api
        .push(
            json!([{"_id": u1, "task_id": t0, "received_on_manager": "2017-06-23T10:00:00Z",
                      "log": "line 1"}]),
        )
        .await;
    assert_eq!(api.server.task(t0).unwrap()["task_progress_percentage"], 0);
    assert_eq!(api.server.task_logs(t0).len(), 1);

    // The cancel list: computed after the batch, only when non-empty; the guard.
    api.server.set_job_status(&job.id, "cancel-requested");
    assert_eq!(
        api.server.task_status(t0).as_deref(),
        Some("cancel-requested")
    );
    assert_eq!(api.server.task_status(t1).as_deref(), Some("canceled"));
    let (_, body) = api.push(json!([])).await;
    assert_eq!(body["cancel_task_ids"], json!([t0]));
    let (_, body) = api
        .push(json!([{"_id": new_object_id(), "task_id": t0, "task_status": "active"}]))
        .await;
    assert_eq!(
        api.server.task_status(t0).as_deref(),
        Some("cancel-requested")
    );
    assert_eq!(body["cancel_task_ids"], json!([t0]));
    let (_, body) = api
        .push(json!([{"_id": new_object_id(), "task_id": t0, "task_status": "canceled"}]))
        .await;
    assert!(body.get("cancel_task_ids").is_none(), "{body}");
    assert_eq!(api.server.job_status(&job.id).as_deref(), Some("canceled"));

    // Strictness: log without received_on_manager → 500; bad id → 400; missing key → 500;
    // object → 500; invalid JSON → 400; GET → 405.
    let (status, _) = api
        .push(json!([{"_id": new_object_id(), "task_id": t1, "log": "x"}]))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = api.push(json!([{"_id": "nope", "task_id": t1}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.push(json!([{"task_id": t1}])).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = api.push(json!({"_id": new_object_id()})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let resp = api
        .post(api.mgr("task-update-batch"))
        .header("Content-Type", "application/json")
        .body("[{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = api.get(api.mgr("task-update-batch")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// §4.2: a job completes when all its tasks do; 10 % failed tasks fail it (and cancel the
/// rest, §4.3); a re-queued job re-queues its unfinished tasks.
#[tokio::test]
async fn status_cascades() {
    let api = Api::new().await;
    let job = api.server.add_job(&api.creds.id, NewJob::sleep(2, 1));
    for id in &job.task_ids {
        api.push(json!([{"_id": new_object_id(), "task_id": id, "task_status": "completed"}]))
            .await;
    }
    assert_eq!(api.server.job_status(&job.id).as_deref(), Some("completed"));
    api.server.set_job_status(&job.id, "queued");
    assert!(job
        .task_ids
        .iter()
        .all(|id| api.server.task_status(id).as_deref() == Some("queued")));

    let job = api.server.add_job(&api.creds.id, NewJob::sleep(10, 1));
    api.push(json!([
        {"_id": new_object_id(), "task_id": job.task_ids[1], "task_status": "active"},
        {"_id": new_object_id(), "task_id": job.task_ids[0], "task_status": "failed"},
    ]))
    .await;
    assert_eq!(api.server.job_status(&job.id).as_deref(), Some("failed"));
    assert_eq!(
        api.server.task_status(&job.task_ids[1]).as_deref(),
        Some("cancel-requested")
    );
    assert_eq!(
        api.server.task_status(&job.task_ids[2]).as_deref(),
        Some("canceled")
    );
    assert!(api.server.task(&job.task_ids[2]).unwrap()["activity"]
        .as_str()
        .unwrap()
        .contains("Server cancelled this task because the job got status 'failed'."));
}

/// §2.4: the Eve item: 403 without auth or for another manager, 404 unknown, 304 for a
/// matching etag (quoted or not) with a quoted `ETag`, 200 otherwise.
#[tokio::test]
async fn task_item_and_etags() {
    let api = Api::new().await;
    let other = api.server.add_manager();
    let job = api.server.add_job(&api.creds.id, NewJob::sleep(1, 1));
    let id = &job.task_ids[0];
    let url = api.url(&format!("api/flamenco/tasks/{id}"));
    assert_eq!(
        api.http.get(&url).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.http
            .get(&url)
            .basic_auth(&other.token, Some(""))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get(api.url(&format!("api/flamenco/tasks/{}", new_object_id())))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let resp = api.get(url.clone()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(format!("\"{}\"", body["_etag"].as_str().unwrap()), etag);
    for form in [etag.clone(), etag.trim_matches('"').to_string()] {
        let resp = api
            .get(url.clone())
            .header("If-None-Match", form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    }
    api.server.edit_task(id, |f| {
        f.insert("priority".into(), json!(5));
    });
    let resp = api
        .get(url)
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Gzip push bodies: ignored by default (invalid JSON → 400), inflated or refused on
/// request.
#[tokio::test]
async fn gzip_modes() {
    let api = Api::new().await;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b"[]").unwrap();
    let gz = enc.finish().unwrap();
    let send = || {
        api.post(api.mgr("task-update-batch"))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .body(gz.clone())
            .send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    api.server.set_gzip(GzipMode::Refuse(415));
    assert_eq!(
        send().await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    api.server.set_gzip(GzipMode::Accept);
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    let last = api
        .server
        .requests_to(Endpoint::TaskUpdateBatch)
        .pop()
        .unwrap();
    assert_eq!(last.json(), Some(json!([])));
}

/// Faults on purpose: statuses, dropped connections, hangs, and counted ones.
#[tokio::test]
async fn faults_on_purpose() {
    let api = Api::new().await;
    api.server
        .fail_times(Endpoint::TaskUpdateBatch, Fault::Status(503), 1);
    assert_eq!(api.push(json!([])).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.push(json!([])).await.0, StatusCode::OK);
    api.server.set_fault(Endpoint::TaskUpdateBatch, Fault::Drop);
    let resp = api
        .post(api.mgr("task-update-batch"))
        .json(&json!([]))
        .send()
        .await;
    match resp {
        Err(_) => {}
        Ok(r) => assert!(r.bytes().await.is_err(), "the body must break"),
    }
    api.server.clear_faults();
    api.server.set_fault(Endpoint::Depsgraph, Fault::Hang);
    let resp = api
        .get(api.mgr("depsgraph"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(resp.unwrap_err().is_timeout());
    // A never-acknowledged update is applied but not listed.
    let job = api.server.add_job(&api.creds.id, NewJob::sleep(1, 1));
    let u = new_object_id();
    api.server.never_acknowledge_update(&u);
    let (_, body) = api
        .push(json!([{"_id": u, "task_id": job.task_ids[0], "task_status": "active"}]))
        .await;
    assert_eq!(body["handled_update_ids"], json!([]));
    assert_eq!(
        api.server.task_status(&job.task_ids[0]).as_deref(),
        Some("active")
    );
}

/// The double serves below a path prefix, like a Server behind a reverse proxy.
#[tokio::test]
async fn serves_below_a_prefix() {
    let server = TestServer::start_with_prefix("/srv/flamenco").await;
    let creds = server.add_manager();
    assert!(server.url().ends_with("/srv/flamenco/"));
    let resp = client()
        .post(format!(
            "{}api/flamenco/managers/{}/startup",
            server.url(),
            creds.id
        ))
        .basic_auth(&creds.token, Some(""))
        .json(&startup_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let req = &server.requests_to(Endpoint::Startup)[0];
    assert_eq!(
        req.path,
        format!("/api/flamenco/managers/{}/startup", creds.id)
    );
    assert!(req.full_path.starts_with("/srv/flamenco/api/"));
}
