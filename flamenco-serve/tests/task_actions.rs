//! Per-task actions and a worker's recent tasks over HTTP (issue 14): cancel and re-queue
//! of one task with their 400/404/409 refusals that change nothing, the cross-site (403)
//! and admin-token (401) checks, and `GET /api/workers/{id}/tasks`.

mod common;

use common::{v2_test_config, TestManager, TestWorker};
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{ObjectId, TaskStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `POST` `{}` as the dashboard sends it (JSON, same origin).
async fn post(tm: &TestManager, path: &str) -> (StatusCode, Value) {
    let resp = tm
        .client
        .post(tm.url(path))
        .json(&json!({}))
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

/// A 2-task sleep job, and a worker that runs its first task (`active`).
async fn job_with_a_running_task(tm: &TestManager) -> (TestWorker, ObjectId, ObjectId) {
    let Value::Object(settings) = json!({"frames": "1-10", "chunk_size": 5, "time_in_seconds": 30})
    else {
        unreachable!("a JSON object")
    };
    let job = tm
        .manager
        .submit_job(JobSubmission::new("sleep", settings))
        .await
        .expect("submit")
        .id;
    let w = tm.register("render-01", "linux", &["sleep"]).await;
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let running = ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id");
    let st = w
        .update(
            running,
            json!({"task_status": "active", "activity": "napping"}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let tasks = tm
        .manager
        .job_tasks(job, Vec::new(), None, 0)
        .await
        .expect("tasks");
    let queued = tasks
        .iter()
        .find(|t| t.id != running)
        .expect("a second task")
        .id;
    (w, running, queued)
}

#[tokio::test]
async fn cancel_and_requeue_one_task() {
    let tm = TestManager::start().await;
    let (w, running, queued) = job_with_a_running_task(&tm).await;

    // Bad ids and unknown tasks.
    let (status, body) = post(&tm, "/api/tasks/nope/cancel").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "task_id");
    let unknown = "0123456789abcdef01234567";
    for action in ["cancel", "requeue"] {
        let (status, body) = post(&tm, &format!("/api/tasks/{unknown}/{action}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains(unknown),
            "{body}"
        );
    }

    // Refused: re-queue a running task, or a queued one. Nothing changes.
    let outbox_before = tm.outbox().await.len();
    let (status, body) = post(&tm, &format!("/api/tasks/{running}/requeue")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("cancel it first"),
        "{body}"
    );
    let (status, _) = post(&tm, &format!("/api/tasks/{queued}/requeue")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(tm.task(running).await.status, TaskStatus::Active);
    assert_eq!(tm.task(queued).await.status, TaskStatus::Queued);
    assert_eq!(
        tm.outbox().await.len(),
        outbox_before,
        "refusals queue nothing"
    );

    // A cross-site request is refused (403) before it changes anything.
    let resp = tm
        .client
        .post(tm.url(&format!("/api/tasks/{queued}/cancel")))
        .header("Origin", "https://evil.example")
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(tm.task(queued).await.status, TaskStatus::Queued);

    // Cancel the queued task: canceled at once.
    let (status, body) = post(&tm, &format!("/api/tasks/{queued}/cancel")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "canceled");
    assert_eq!(tm.task(queued).await.status, TaskStatus::Canceled);
    // Cancel the running task: its worker hears it at may-i-run.
    let (status, body) = post(&tm, &format!("/api/tasks/{running}/cancel")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancel-requested");
    let (_, answer) = w.may_i_run(running).await;
    assert_eq!(answer["may_keep_running"], false, "{answer}");
    // A finished task cannot be canceled.
    let (status, body) = post(&tm, &format!("/api/tasks/{queued}/cancel")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Re-queue the canceled task: queued again, and a worker can get it.
    let (status, body) = post(&tm, &format!("/api/tasks/{queued}/requeue")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");
    let stored = tm.task(queued).await;
    assert_eq!(stored.status, TaskStatus::Queued);
    assert_eq!(stored.worker_id, None);
    let statuses: Vec<_> = tm
        .outbox()
        .await
        .iter()
        .skip(outbox_before)
        .map(|u| (u.task_id, u.task_status.clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            (queued, Some(TaskStatus::Canceled)),
            (running, Some(TaskStatus::CancelRequested)),
            (queued, Some(TaskStatus::Queued)),
        ],
        "every change went through the outbox"
    );
    tm.stop().await;
}

#[tokio::test]
async fn a_workers_recent_tasks() {
    let tm = TestManager::start().await;
    let (w, running, queued) = job_with_a_running_task(&tm).await;

    let (status, body) = get(&tm, &format!("/api/workers/{}/tasks", w.id)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["worker"]["nickname"], "render-01");
    assert_eq!(body["limit"], 50);
    let tasks = body["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "only the worker's task: {body}");
    assert_eq!(tasks[0]["_id"], running.to_hex());
    assert_eq!(tasks[0]["status"], "active");
    assert!(tasks[0]["last_updated"].is_string(), "{body}");
    assert!(!tasks.iter().any(|t| t["_id"] == queued.to_hex()));

    let (status, body) = get(&tm, &format!("/api/workers/{}/tasks?limit=0", w.id)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "limit");
    let (status, body) = get(&tm, &format!("/api/workers/{}/tasks?sort=x", w.id)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = get(&tm, "/api/workers/0123456789abcdef01234567/tasks").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = get(&tm, "/api/workers/zz/tasks").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "worker_id");

    // The job's task listing carries `last_updated` too (the dashboard's job page).
    let job = tm.task(running).await.job.expect("a job");
    let (status, body) = get(&tm, &format!("/api/jobs/{job}/tasks")).await;
    assert_eq!(status, StatusCode::OK);
    let listed = body["tasks"].as_array().expect("tasks");
    let row = listed
        .iter()
        .find(|t| t["_id"] == running.to_hex())
        .expect("the running task");
    assert!(row["last_updated"].is_string(), "{row}");
    tm.stop().await;
}

#[tokio::test]
async fn the_admin_token_guards_the_new_routes() {
    let mut config = v2_test_config();
    config.admin_token = "t0ken".into();
    let tm = TestManager::start_with(config).await;
    let (w, running, _) = job_with_a_running_task(&tm).await;
    let (status, _) = post(&tm, &format!("/api/tasks/{running}/cancel")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(tm.task(running).await.status, TaskStatus::Active);
    let (status, _) = get(&tm, &format!("/api/workers/{}/tasks", w.id)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = tm
        .client
        .post(tm.url(&format!("/api/tasks/{running}/cancel")))
        .bearer_auth("t0ken")
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(tm.task(running).await.status, TaskStatus::CancelRequested);
    tm.stop().await;
}
