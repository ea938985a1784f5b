//! Bulk actions over HTTP (issue 16 item 5): `POST /api/jobs/bulk` and
//! `POST /api/workers/bulk` act on many objects in one request and report per object
//! (done, refused with the reason, not-found); bad requests, the 1,000-object cap included,
//! get a 400 naming the field and change nothing; the admin token and the cross-site
//! checks guard both routes.

mod common;

use common::{v2_test_config, TestManager, TestWorker};
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{Job, JobStatus, ObjectId, RequestedStatus, TaskStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

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

async fn submit(tm: &TestManager, frames: &str) -> ObjectId {
    let Value::Object(settings) = json!({"frames": frames, "chunk_size": 5, "time_in_seconds": 30})
    else {
        unreachable!("a JSON object")
    };
    tm.manager
        .submit_job(JobSubmission::new("sleep", settings))
        .await
        .expect("submit")
        .id
}

async fn job(tm: &TestManager, id: ObjectId) -> Job {
    tm.manager
        .get_job(id)
        .await
        .expect("get job")
        .expect("job exists")
}

/// The line for `id` in a report.
fn line<'a>(report: &'a Value, id: &ObjectId) -> &'a Value {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["id"] == id.to_hex())
        .unwrap_or_else(|| panic!("no line for {id} in {report}"))
}

/// A worker that runs the first task it gets (`active`).
async fn running(w: &TestWorker) -> ObjectId {
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let task = ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id");
    let st = w
        .update(
            task,
            json!({"task_status": "active", "activity": "napping"}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    task
}

#[tokio::test]
async fn bulk_job_actions_report_per_job() {
    let tm = TestManager::start().await;
    let busy = submit(&tm, "1-10").await;
    let idle = submit(&tm, "1-10").await;
    let third = submit(&tm, "1-5").await;
    let w = tm.register("render-01", "linux", &["sleep"]).await;
    let task = running(&w).await;
    assert_eq!(tm.task(task).await.job, Some(busy));
    let unknown = ObjectId::new();

    // Priority by ids: the job and its tasks.
    let (status, report) = post(
        &tm,
        "/api/jobs/bulk",
        &json!({"action": "priority", "priority": 90, "ids": [third.to_hex()]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["done"], 1);
    assert_eq!(line(&report, &third)["tasks"], 1);
    assert_eq!(job(&tm, third).await.priority, 90);
    let tasks = tm
        .manager
        .job_tasks(third, Vec::new(), None, 0)
        .await
        .expect("tasks");
    assert!(tasks.iter().all(|t| t.job_priority == 90), "{tasks:?}");

    // Cancel two jobs and an unknown one, the busy job twice: once each.
    let (status, report) = post(
        &tm,
        "/api/jobs/bulk",
        &json!({"action": "cancel",
                "ids": [busy.to_hex(), idle.to_hex(), unknown.to_hex(), busy.to_hex()]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["action"], "cancel");
    assert_eq!(report["results"].as_array().expect("results").len(), 3);
    assert_eq!(
        (report["done"].as_u64(), report["not_found"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(line(&report, &busy)["status"], "cancel-requested");
    assert_eq!(line(&report, &idle)["status"], "canceled");
    assert_eq!(line(&report, &unknown)["outcome"], "not-found");
    assert_eq!(job(&tm, idle).await.status, JobStatus::Canceled);
    assert_eq!(tm.task(task).await.status, TaskStatus::CancelRequested);

    // Delete: the canceled job goes, the one still stopping is refused with the reason.
    let (status, report) = post(
        &tm,
        "/api/jobs/bulk",
        &json!({"action": "delete", "ids": [busy.to_hex(), idle.to_hex()]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(line(&report, &idle)["outcome"], "done");
    assert_eq!(line(&report, &idle)["tasks"], 2);
    let refusal = line(&report, &busy);
    assert_eq!(refusal["outcome"], "refused", "{report}");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap_or("")
            .contains("cancel-requested"),
        "{refusal}"
    );
    assert!(tm.manager.get_job(idle).await.expect("get").is_none());
    assert_eq!(job(&tm, busy).await.status, JobStatus::CancelRequested);

    // By filter: re-queue every canceled job (none yet: the busy one is still stopping),
    // then cancel every queued one.
    let (status, report) = post(
        &tm,
        "/api/jobs/bulk",
        &json!({"action": "requeue", "filter": {"status": "canceled"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["results"], json!([]));
    let (status, report) = post(
        &tm,
        "/api/jobs/bulk",
        &json!({"action": "cancel", "filter": {"status": ["queued", "active"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["done"], 1, "{report}");
    assert_eq!(line(&report, &third)["status"], "canceled");
    let (status, report) = post(
        &tm,
        "/api/jobs/bulk",
        &json!({"action": "requeue", "filter": {"status": "canceled"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(line(&report, &third)["status"], "queued");
    assert_eq!(job(&tm, third).await.status, JobStatus::Queued);
    tm.stop().await;
}

#[tokio::test]
async fn bad_bulk_requests_change_nothing() {
    let tm = TestManager::start().await;
    let j = submit(&tm, "1-10").await;
    let w = tm.register("render-01", "linux", &["sleep"]).await;
    let id = j.to_hex();
    let too_many: Vec<String> = (0..1001).map(|_| ObjectId::new().to_hex()).collect();
    let job_cases = [
        (json!({"action": "pause", "ids": [id]}), "action"),
        (json!({"action": "priority", "ids": [id]}), "priority"),
        (
            json!({"action": "priority", "priority": 0, "ids": [id]}),
            "priority",
        ),
        (
            json!({"action": "priority", "priority": 101, "ids": [id]}),
            "priority",
        ),
        (
            json!({"action": "priority", "priority": "high", "ids": [id]}),
            "priority",
        ),
        (
            json!({"action": "cancel", "priority": 50, "ids": [id]}),
            "priority",
        ),
        (json!({"action": "cancel"}), "ids"),
        (json!({"action": "cancel", "ids": []}), "ids"),
        (
            json!({"action": "cancel", "ids": [id], "filter": {"status": "queued"}}),
            "filter",
        ),
        (json!({"action": "cancel", "ids": [id, "nope"]}), "ids"),
        (json!({"action": "cancel", "ids": too_many}), "ids"),
        (
            json!({"action": "cancel", "filter": {"status": "sleeping"}}),
            "filter",
        ),
        (json!({"action": "cancel", "filter": {}}), "filter"),
        (
            json!({"action": "cancel", "filter": {"all": true}}),
            "filter",
        ),
        (
            json!({"action": "cancel", "ids": [id], "add": ["gpu"]}),
            "add",
        ),
    ];
    for (body, field) in &job_cases {
        let (status, answer) = post(&tm, "/api/jobs/bulk", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["field"], *field, "{body}: {answer}");
        assert!(
            !answer["error"].as_str().unwrap_or("").is_empty(),
            "{answer}"
        );
    }
    // Not JSON objects, unknown fields.
    for raw in [
        json!(["cancel"]),
        json!({"action": "cancel", "ids": [id], "also": 1}),
        json!({"ids": [id]}),
    ] {
        let (status, answer) = post(&tm, "/api/jobs/bulk", &raw).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}: {answer}");
    }
    let worker_cases = [
        (
            json!({"action": "shutdown", "ids": [w.id.to_hex()]}),
            "action",
        ),
        (
            json!({"action": "sleep", "ids": [w.id.to_hex()], "add": ["gpu"]}),
            "add",
        ),
        (json!({"action": "tag", "ids": [w.id.to_hex()]}), "add"),
        (
            json!({"action": "tag", "ids": [w.id.to_hex()], "add": ["bad tag!"]}),
            "add",
        ),
        (
            json!({"action": "tag", "filter": {"all": true}, "remove": [""]}),
            "remove",
        ),
        (
            json!({"action": "sleep", "filter": {"status": "napping"}}),
            "status",
        ),
        (
            json!({"action": "sleep", "filter": {"status": "awake", "all": true}}),
            "filter",
        ),
        (json!({"action": "sleep", "filter": {}}), "filter"),
        (
            json!({"action": "sleep", "ids": [w.id.to_hex(), "x"]}),
            "ids",
        ),
        (json!({"action": "forget", "ids": too_many}), "ids"),
        (
            json!({"action": "forget", "priority": 5, "ids": [w.id.to_hex()]}),
            "priority",
        ),
    ];
    for (body, field) in &worker_cases {
        let (status, answer) = post(&tm, "/api/workers/bulk", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["field"], *field, "{body}: {answer}");
    }
    // Nothing changed.
    assert_eq!(job(&tm, j).await.status, JobStatus::Queued);
    assert_eq!(job(&tm, j).await.priority, 50);
    let worker = tm.worker(w.id).await;
    assert_eq!(worker.status_requested, None);
    tm.stop().await;
}

#[tokio::test]
async fn bulk_worker_actions_report_per_worker() {
    let tm = TestManager::start().await;
    submit(&tm, "1-10").await;
    let new = tm.register("new", "linux", &["sleep"]).await;
    let old = tm
        .register_as("old", "linux", &["sleep"], "Flamenco-Worker/2.0.6")
        .await;
    let busy = tm.register("busy", "linux", &["sleep"]).await;
    // Each signs on, so the Manager knows their software.
    for w in [&new, &old, &busy] {
        assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    }
    let task = running(&busy).await;
    let unknown = ObjectId::new();

    let (status, report) = post(
        &tm,
        "/api/workers/bulk",
        &json!({"action": "sleep",
                "ids": [new.id.to_hex(), old.id.to_hex(), unknown.to_hex()]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(line(&report, &new.id)["outcome"], "done");
    let refused = line(&report, &old.id);
    assert_eq!(refused["outcome"], "refused");
    assert!(
        refused["message"].as_str().unwrap_or("").contains("2.0.6"),
        "{refused}"
    );
    assert_eq!(line(&report, &unknown)["outcome"], "not-found");
    assert_eq!(
        tm.worker(new.id).await.status_requested,
        Some(RequestedStatus::Asleep)
    );
    assert_eq!(tm.worker(old.id).await.status_requested, None);

    // Wake every worker: the 2.0 one is refused again, the others are asked.
    let (status, report) = post(
        &tm,
        "/api/workers/bulk",
        &json!({"action": "wake", "filter": {"all": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["done"].as_u64(), report["refused"].as_u64()),
        (Some(2), Some(1))
    );

    // Tag: every known worker in one operation; the unknown one is reported.
    let (status, report) = post(
        &tm,
        "/api/workers/bulk",
        &json!({"action": "tag", "add": ["gpu", "win"],
                "ids": [new.id.to_hex(), old.id.to_hex(), unknown.to_hex()]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["done"].as_u64(), report["not_found"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(tm.worker(new.id).await.tags, ["gpu", "win"]);
    assert_eq!(tm.worker(old.id).await.tags, ["gpu", "win"]);
    let (status, report) = post(
        &tm,
        "/api/workers/bulk",
        &json!({"action": "tag", "remove": ["win"], "filter": {"status": "awake"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["done"], 3, "{report}");
    assert_eq!(tm.worker(new.id).await.tags, ["gpu"]);
    assert!(tm.worker(busy.id).await.tags.is_empty());

    // Forget: the idle 2.0 worker goes (and is refused at its next call), the busy awake
    // one is refused and keeps its task.
    let (status, report) = post(
        &tm,
        "/api/workers/bulk",
        &json!({"action": "forget", "ids": [old.id.to_hex(), busy.id.to_hex()]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(line(&report, &old.id)["outcome"], "done");
    let refused = line(&report, &busy.id);
    assert_eq!(refused["outcome"], "refused", "{report}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains(&task.to_hex()),
        "{refused}"
    );
    assert!(tm.manager.get_worker(old.id).await.expect("get").is_none());
    let (status, _) = old.task().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(tm.task(task).await.status, TaskStatus::Active);
    let (status, _) = busy.may_i_run(task).await;
    assert_eq!(status, StatusCode::OK);
    tm.stop().await;
}

#[tokio::test]
async fn the_admin_token_and_intent_checks_guard_bulk_routes() {
    let mut config = v2_test_config();
    config.admin_token = "t0ken".into();
    let tm = TestManager::start_with(config).await;
    let j = submit(&tm, "1-5").await;
    let body = json!({"action": "cancel", "ids": [j.to_hex()]});
    let (status, _) = post(&tm, "/api/jobs/bulk", &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        &tm,
        "/api/workers/bulk",
        &json!({"action": "wake", "filter": {"all": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // With the token but from another site: 403.
    let resp = tm
        .client
        .post(tm.url("/api/jobs/bulk"))
        .bearer_auth("t0ken")
        .header("Origin", "http://evil.example")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(job(&tm, j).await.status, JobStatus::Queued);
    let resp = tm
        .client
        .post(tm.url("/api/jobs/bulk"))
        .bearer_auth("t0ken")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(job(&tm, j).await.status, JobStatus::Canceled);
    tm.stop().await;
}

/// The cap applies to filters too (refused, not cut, nothing changed). A worker running a
/// task is refused while awake; once timed out it is forgotten and its active task goes
/// back to the queue, and its credentials get 401.
#[tokio::test]
async fn filter_cap_and_forgetting_a_timed_out_worker() {
    use flamenco_core::bulk::{JobBulkAction, JobSelection, WorkerBulkAction, WorkerSelection};
    use flamenco_core::ApiError;
    let tm = TestManager::start().await;
    let jobs = [
        submit(&tm, "1-10").await,
        submit(&tm, "1-10").await,
        submit(&tm, "1-5").await,
    ];
    let queued = JobSelection::Statuses(vec![JobStatus::Queued]);
    match tm
        .manager
        .bulk_jobs(JobBulkAction::Cancel, &queued, Some(2))
        .await
    {
        Err(ApiError::InvalidField { field, message }) => {
            assert_eq!(field, "filter");
            assert!(message.contains("at most 2"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    for j in jobs {
        assert_eq!(job(&tm, j).await.status, JobStatus::Queued);
    }

    // A worker runs a task, which is canceled; at its next /task the Manager takes the
    // canceled task as stopped, and it gets a second one that keeps running.
    let w = tm.register("render-09", "linux", &["sleep"]).await;
    let first = running(&w).await;
    tm.manager.cancel_task(first).await.expect("cancel task");
    assert_eq!(tm.task(first).await.status, TaskStatus::CancelRequested);
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id");
    assert_eq!(tm.task(first).await.status, TaskStatus::Canceled);
    let all = WorkerSelection::All;
    let report = tm
        .manager
        .bulk_workers(&WorkerBulkAction::Forget, &all, Some(1))
        .await
        .expect("valid");
    assert_eq!(report.refused, 1, "awake and running: {report:?}");
    // It goes silent: timed out.
    let later = tm.manager.now() + chrono::Duration::hours(1);
    tm.manager
        .store()
        .time_out_workers(later)
        .await
        .expect("time out");
    assert_eq!(tm.worker(w.id).await.status, "timeout");
    let report = tm
        .manager
        .bulk_workers(&WorkerBulkAction::Forget, &all, Some(1))
        .await
        .expect("valid");
    assert_eq!(report.done, 1, "{report:?}");
    assert_eq!(report.results[0].tasks, Some(1));
    assert!(tm.manager.get_worker(w.id).await.expect("get").is_none());
    assert_eq!(tm.task(second).await.status, TaskStatus::ClaimedByManager);
    let (status, _) = w.task().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    tm.stop().await;
}
