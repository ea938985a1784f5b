//! Retries and the per-job blocklist over HTTP (issue 16, items 1 and 2): a worker's
//! `failed` soft-fails the task, `GET /api/tasks/{id}` shows the failure record, the job's
//! blocklist is listed and edited with `GET`/`DELETE /api/jobs/{id}/blocklist`, and bad
//! requests get a clear 4xx and change nothing.

mod common;

use common::{v2_test_config, TestManager, TestWorker};
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{ObjectId, TaskStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn get(tm: &TestManager, path: &str) -> (StatusCode, Value) {
    let resp = tm.client.get(tm.url(path)).send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `DELETE path` with a JSON body, as the dashboard sends it.
async fn delete(tm: &TestManager, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = tm
        .client
        .delete(tm.url(path))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn id_of(body: &Value) -> ObjectId {
    ObjectId::parse(body["_id"].as_str().expect("_id")).expect("an id")
}

/// A worker claims a task and fails it; returns the task.
async fn claim_and_fail(w: &TestWorker) -> ObjectId {
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let task = id_of(&body);
    let st = w
        .update(
            task,
            json!({"task_status": "failed", "activity": "exit code 1", "log": "boom\n"}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    task
}

#[tokio::test]
async fn failure_record_and_blocklist_over_http() {
    let mut config = v2_test_config();
    config.blocklist_threshold = 1;
    let tm = TestManager::start_with(config).await;
    let Value::Object(settings) = json!({"frames": "1-15", "chunk_size": 5, "time_in_seconds": 30})
    else {
        unreachable!("a JSON object")
    };
    let job = tm
        .manager
        .submit_job(JobSubmission::new("sleep", settings))
        .await
        .expect("submit")
        .id;
    let w1 = tm.register("render-01", "linux", &["sleep"]).await;
    let w2 = tm.register("render-02", "linux", &["sleep"]).await;
    // w2 asks first (nothing for it to do yet but to be awake), then w1 fails a task.
    let (status, _) = w2.task().await;
    assert_eq!(status, StatusCode::OK);
    let failed = claim_and_fail(&w1).await;

    // The task view: soft-failed, no worker, the record.
    let (status, task) = get(&tm, &format!("/api/tasks/{failed}")).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["status"], "soft-failed", "{task}");
    let failures = task["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{task}");
    assert_eq!(failures[0]["worker_id"], w1.id.to_string());
    assert_eq!(failures[0]["worker"], "render-01");
    assert!(failures[0]["at"].is_string(), "{task}");
    // A task nobody failed has an empty record.
    let (_, other) = get(
        &tm,
        &format!("/api/tasks/{}", w2_task(&tm, job, failed).await),
    )
    .await;
    assert_eq!(other["failures"], json!([]), "{other}");

    // Threshold 1: w1 is blocklisted for the job's sleep tasks, and gets none of them.
    let path = format!("/api/jobs/{job}/blocklist");
    let (status, list) = get(&tm, &path).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["job"], job.to_string());
    let entries = list["blocklist"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["worker_id"], w1.id.to_string());
    assert_eq!(entries[0]["task_type"], "sleep");
    assert_eq!(entries[0]["worker"], "render-01");
    let (status, body) = w1.task().await;
    assert_eq!(status, StatusCode::NO_CONTENT, "w1 is blocklisted: {body}");

    // Bad requests: 4xx, and nothing changes.
    let w1_body = json!({"worker_id": w1.id.to_string(), "task_type": "sleep"}).to_string();
    let cases: Vec<(String, String, StatusCode, Option<&str>)> = vec![
        (
            "/api/jobs/nope/blocklist".into(),
            w1_body.clone(),
            StatusCode::BAD_REQUEST,
            Some("job_id"),
        ),
        (path.clone(), "[1, 2]".into(), StatusCode::BAD_REQUEST, None),
        (path.clone(), "{".into(), StatusCode::BAD_REQUEST, None),
        (path.clone(), "{}".into(), StatusCode::BAD_REQUEST, None),
        (
            path.clone(),
            json!({"worker_id": w1.id.to_string(), "extra": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            path.clone(),
            json!({"worker_id": "w1"}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("worker_id"),
        ),
        (
            path.clone(),
            json!({"worker_id": w1.id.to_string(), "task_type": " "}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("task_type"),
        ),
        (
            path.clone(),
            json!({"worker_id": w1.id.to_string(), "task_type": "x".repeat(300)}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("task_type"),
        ),
        (
            "/api/jobs/0123456789abcdef01234567/blocklist".into(),
            w1_body.clone(),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            path.clone(),
            json!({"worker_id": w2.id.to_string()}).to_string(),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            path.clone(),
            json!({"worker_id": w1.id.to_string(), "task_type": "blender"}).to_string(),
            StatusCode::NOT_FOUND,
            None,
        ),
    ];
    for (url, body, want, field) in cases {
        let (status, answer) = delete(&tm, &url, &body).await;
        assert_eq!(status, want, "DELETE {url} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{answer}");
        }
    }
    // Cross-site and not-JSON requests are refused before the handler (403).
    let resp = tm
        .client
        .delete(tm.url(&path))
        .header("Content-Type", "text/plain")
        .body(w1_body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = tm
        .client
        .delete(tm.url(&path))
        .header("Content-Type", "application/json")
        .header("Origin", "https://evil.example")
        .body(w1_body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (_, list) = get(&tm, &path).await;
    assert_eq!(
        list["blocklist"].as_array().map(Vec::len),
        Some(1),
        "unchanged: {list}"
    );
    let (status, body) = get(&tm, "/api/jobs/0123456789abcdef01234567/blocklist").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Remove the entry: w1 gets the job's tasks again, but never the one it failed (the
    // soft-failed task comes first in the queue; w1 gets the third task).
    let (status, answer) = delete(&tm, &path, &w1_body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["removed"], 1);
    let (_, list) = get(&tm, &path).await;
    assert_eq!(list["blocklist"], json!([]), "{list}");
    let (status, body) = w1.task().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(id_of(&body), failed, "never the task it failed");
    assert_ne!(id_of(&body), w2_task(&tm, job, failed).await);
    assert_eq!(tm.task(failed).await.status, TaskStatus::SoftFailed);

    // The job is active, with no failure reason.
    let (_, shown) = get(&tm, &format!("/api/jobs/{job}")).await;
    assert!(shown.get("status_reason").is_none(), "{shown}");
    tm.stop().await;
}

/// The job's task w2 got when it first asked: its first, before the `failed` one.
async fn w2_task(tm: &TestManager, job: ObjectId, failed: ObjectId) -> ObjectId {
    let tasks = tm
        .manager
        .job_tasks(job, Vec::new(), None, 0)
        .await
        .expect("tasks");
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[1].id, failed, "w1 got the second task");
    tasks[0].id
}
