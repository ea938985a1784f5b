//! The Go Manager's test cases (manager-v2.md §10) numbered 1, 5–17 and 21–26, black-box
//! over HTTP where the case is about HTTP.

mod common;

use std::time::Duration;

use axum::body::Body;
use chrono::Utc;
use common::{oid, test_task, wait_until, TestManager};
use flamenco_core::model::{TaskStatus, TaskUpdate};
use reqwest::StatusCode;
use serde_json::json;
use tower::ServiceExt;

/// Case 1: the build works and the server answers.
#[tokio::test]
async fn case01_canary() {
    let tm = TestManager::start().await;
    let resp = tm.client.post(tm.url("/task")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    tm.stop().await;
}

/// Case 5: the first worker to update an unassigned task claims it; the second gets 409.
#[tokio::test]
async fn case05_multiple_workers_for_one_task() {
    let tm = TestManager::start().await;
    let mut t = test_task("1aaa", "testing");
    t.worker = String::new();
    tm.enqueue(vec![t]).await;
    let w1 = tm.register("worker1", "linux", &["testing"]).await;
    let w2 = tm.register("worker2", "linux", &["testing"]).await;
    let id = oid("1aaa");
    assert_eq!(
        w1.update(
            id,
            json!({"task_id": id.to_hex(), "activity": "doing stuff by worker1"})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let task = tm.task(id).await;
    assert_eq!(task.worker_id, Some(w1.id));
    assert_eq!(task.activity, "doing stuff by worker1");
    assert_eq!(
        w2.update(
            id,
            json!({"task_id": id.to_hex(), "activity": "doing stuff by worker2"})
        )
        .await,
        StatusCode::CONFLICT
    );
    let task = tm.task(id).await;
    assert_eq!(task.worker_id, Some(w1.id));
    assert_eq!(task.activity, "doing stuff by worker1");
    tm.stop().await;
}

/// Case 6, changed on purpose (issue #11): v2 refused the update with 409; here the task's
/// own worker's update is accepted for its activity and log (its last words), and its
/// status is neither applied nor queued.
#[tokio::test]
async fn case06_update_for_cancel_requested_task() {
    let tm = TestManager::start().await;
    let w1 = tm.register("worker1", "linux", &["testing"]).await;
    let mut t = test_task("1aaa", "testing");
    t.status = TaskStatus::CancelRequested;
    t.worker_id = Some(w1.id);
    t.activity = "Cancel requested by unittest".into();
    tm.enqueue(vec![t]).await;
    let before = tm.outbox().await.len();
    let id = oid("1aaa");
    assert_eq!(
        w1.update(
            id,
            json!({"task_status": "active", "activity": "doing stuff by worker1"})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let task = tm.task(id).await;
    assert_eq!(task.status, TaskStatus::CancelRequested);
    assert_eq!(task.activity, "doing stuff by worker1");
    assert_eq!(task.worker_id, Some(w1.id));
    let queued = tm.outbox().await;
    assert_eq!(queued.len(), before + 1);
    assert_eq!(
        queued.last().unwrap().task_status,
        None,
        "queued without its status"
    );
    tm.stop().await;
}

/// Case 7: sign-off re-queues; another worker picks the task up and finishes it.
#[tokio::test]
async fn case07_task_rescheduling() {
    let tm = TestManager::start().await;
    tm.enqueue(vec![test_task("1aaa", "testing")]).await;
    let w1 = tm.register("worker1", "linux", &["testing"]).await;
    let w2 = tm.register("worker2", "linux", &["testing"]).await;
    let id = oid("1aaa");
    // (a)
    assert_eq!(
        w1.update(
            id,
            json!({"task_status": "active", "activity": "doing stuff by worker1"})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let task = tm.task(id).await;
    assert_eq!(task.worker_id, Some(w1.id));
    assert_eq!(task.activity, "doing stuff by worker1");
    // (b)
    assert_eq!(w1.sign_off().await, StatusCode::NO_CONTENT);
    assert_eq!(tm.task(id).await.status, TaskStatus::ClaimedByManager);
    let (status, body) = w2.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], id.to_hex());
    assert_eq!(tm.task(id).await.status, TaskStatus::Active);
    // (c) Not waits for an event: the clock must move on between the two workers' updates
    // (the Go test's 250 ms), as the order of their timestamps is what is checked.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let t_mid = Utc::now();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        w2.update(
            id,
            json!({"task_status": "failed", "activity": "doing stuff by worker2"})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let task = tm.task(id).await;
    assert_eq!(task.worker_id, Some(w2.id));
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.activity, "doing stuff by worker2");
    // The workers' `current_task_*` are written with the "seen" flush (every second in
    // the daemon, `flamenco_core::seen`).
    tm.manager.flush_seen().await.expect("flush");
    let wk1 = tm.worker(w1.id).await;
    let wk2 = tm.worker(w2.id).await;
    assert!(wk1.current_task_updated.unwrap() < t_mid);
    assert!(t_mid < wk2.current_task_updated.unwrap());
    assert_eq!(wk1.current_task_status, "active");
    assert_eq!(wk2.current_task_status, "failed");
    tm.stop().await;
}

async fn scheduled_settings(platform: &str) -> serde_json::Value {
    let tm = TestManager::start().await;
    let mut t = test_task("1aaa", "sleeping");
    t.commands = vec![
        flamenco_core::model::Command::new(
            "echo",
            json!({"message": "Running Blender from {blender} {blender}", "{blender}": 3}),
        ),
        flamenco_core::model::Command::new("sleep", json!({"time_in_seconds": 3})),
        flamenco_core::model::Command::new(
            "blender_render",
            json!({
                "filepath": "{job_storage}/_flamenco/storage/sybren/2017-06-08-181223.625800-sybren-flamenco-test.flamenco/flamenco-test.flamenco.blend",
                "render_output": "{render_long}/_flamenco/output/sybren/blender-cloud-addon/flamenco-test__intermediate/render-smpl-0001-0084-frm-######",
                "otherpath": "{hey}/haha",
                "format": "EXR", "frames": "47", "cycles_chunk": 1.0, "blender_cmd": "{blender}"
            }),
        ),
    ];
    tm.enqueue(vec![t]).await;
    let w = tm.register("w", platform, &["sleeping"]).await;
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK);
    // The stored task keeps its placeholders.
    let stored = tm.task(oid("1aaa")).await;
    assert_eq!(stored.commands[2].settings["blender_cmd"], "{blender}");
    tm.stop().await;
    body["commands"].clone()
}

/// Case 8: every occurrence replaced; keys and non-strings untouched.
#[tokio::test]
async fn case08_replace_variables() {
    let cmds = scheduled_settings("linux").await;
    assert_eq!(
        cmds[0]["settings"]["message"],
        "Running Blender from /opt/myblenderbuild/blender /opt/myblenderbuild/blender"
    );
    assert_eq!(cmds[0]["settings"]["{blender}"], 3);
}

/// Case 9
#[tokio::test]
async fn case09_replace_paths_linux() {
    let c = scheduled_settings("linux").await;
    let s = &c[2]["settings"];
    assert_eq!(s["filepath"], "/shared/_flamenco/storage/sybren/2017-06-08-181223.625800-sybren-flamenco-test.flamenco/flamenco-test.flamenco.blend");
    assert_eq!(s["render_output"], "/render/long/_flamenco/output/sybren/blender-cloud-addon/flamenco-test__intermediate/render-smpl-0001-0084-frm-######");
    assert_eq!(s["otherpath"], "{hey}/haha");
    assert_eq!(s["blender_cmd"], "/opt/myblenderbuild/blender");
    assert_eq!(s["cycles_chunk"], 1.0);
}

/// Case 10
#[tokio::test]
async fn case10_replace_paths_windows() {
    let c = scheduled_settings("windows").await;
    let s = &c[2]["settings"];
    assert_eq!(s["filepath"], "s:/_flamenco/storage/sybren/2017-06-08-181223.625800-sybren-flamenco-test.flamenco/flamenco-test.flamenco.blend");
    assert_eq!(s["render_output"], "r:/long/_flamenco/output/sybren/blender-cloud-addon/flamenco-test__intermediate/render-smpl-0001-0084-frm-######");
    assert_eq!(s["otherpath"], "{hey}/haha");
    assert_eq!(s["blender_cmd"], "c:/temp/blender.exe");
}

/// Case 11
#[tokio::test]
async fn case11_replace_paths_macos() {
    let c = scheduled_settings("darwin").await;
    let s = &c[2]["settings"];
    assert_eq!(s["filepath"], "/Volume/shared/_flamenco/storage/sybren/2017-06-08-181223.625800-sybren-flamenco-test.flamenco/flamenco-test.flamenco.blend");
    assert_eq!(s["render_output"], "/Volume/render/long/_flamenco/output/sybren/blender-cloud-addon/flamenco-test__intermediate/render-smpl-0001-0084-frm-######");
    assert_eq!(s["otherpath"], "{hey}/haha");
}

/// Case 12
#[tokio::test]
async fn case12_replace_paths_unknown_os() {
    let c = scheduled_settings("autumn").await;
    let s = &c[2]["settings"];
    assert_eq!(s["filepath"], "hey/_flamenco/storage/sybren/2017-06-08-181223.625800-sybren-flamenco-test.flamenco/flamenco-test.flamenco.blend");
    assert_eq!(s["render_output"], "{render_long}/_flamenco/output/sybren/blender-cloud-addon/flamenco-test__intermediate/render-smpl-0001-0084-frm-######");
    assert_eq!(s["otherpath"], "{hey}/haha");
    assert_eq!(s["blender_cmd"], "{blender}");
}

/// Case 13: may-i-run answers, always as JSON.
#[tokio::test]
async fn case13_worker_may_run() {
    let tm = TestManager::start().await;
    tm.enqueue(vec![test_task("aaaa", "sleeping")]).await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    let win = tm.register("workerWin", "windows", &["testing"]).await;
    let id = oid("aaaa");
    let (status, _) = lnx.task().await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = lnx.may_i_run(id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"may_keep_running": true}));

    let mut cancel = TaskUpdate::new(id, Utc::now());
    cancel.task_status = Some(TaskStatus::CancelRequested);
    tm.manager.store().queue_update(cancel).await.unwrap();
    let (_, body) = lnx.may_i_run(id).await;
    assert_eq!(body["may_keep_running"], false);
    assert_eq!(
        body["reason"],
        format!("task {id} in non-runnable status cancel-requested")
    );

    let mut task = tm.task(id).await;
    task.status = TaskStatus::Active;
    task.worker_id = Some(win.id);
    tm.manager.store().upsert_tasks(&[task]).await.unwrap();
    let (_, body) = lnx.may_i_run(id).await;
    assert_eq!(body["may_keep_running"], false);
    assert_eq!(
        body["reason"],
        format!("task {id} reassigned to another worker")
    );
    assert!(body.get("status_requested").is_none());

    let (_, body) = lnx.may_i_run(oid("9999")).await;
    assert_eq!(body["may_keep_running"], false);
    tm.stop().await;
}

/// Case 14: sign-on applies non-empty values only and clears current_task.
#[tokio::test]
async fn case14_worker_sign_on() {
    let tm = TestManager::start().await;
    let w = tm.register("workerLnx", "linux", &["sleeping"]).await;
    let check = |types: &'static [&'static str], nick: &'static str| {
        let tm = &tm;
        let id = w.id;
        async move {
            let wk = tm.worker(id).await;
            assert_eq!(wk.supported_task_types, types);
            assert_eq!(wk.nickname, nick);
        }
    };
    assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    check(&["sleeping"], "workerLnx").await;
    assert_eq!(
        w.sign_on(json!({"nickname": "new-and-sparkly"})).await,
        StatusCode::NO_CONTENT
    );
    check(&["sleeping"], "new-and-sparkly").await;
    assert_eq!(
        w.sign_on(json!({"supported_task_types": ["exr-merge", "unknown"]}))
            .await,
        StatusCode::NO_CONTENT
    );
    check(&["exr-merge", "unknown"], "new-and-sparkly").await;
    assert_eq!(
        w.sign_on(json!({"supported_task_types": ["blender-render"], "nickname": "another"}))
            .await,
        StatusCode::NO_CONTENT
    );
    check(&["blender-render"], "another").await;

    // A task assignment sets current_task (with the next "seen" flush); the next
    // sign-on removes it.
    tm.enqueue(vec![test_task(
        "1234567890ab1234567890ab",
        "blender-render",
    )])
    .await;
    assert_eq!(w.task().await.0, StatusCode::OK);
    tm.manager.flush_seen().await.expect("flush");
    assert_eq!(
        tm.worker(w.id).await.current_task,
        Some(oid("1234567890ab1234567890ab"))
    );
    assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    assert_eq!(tm.worker(w.id).await.current_task, None);
    assert_eq!(tm.worker(w.id).await.status, "awake");
    tm.stop().await;
}

/// Case 15: each worker gets a task of its type, substituted for its platform.
#[tokio::test]
async fn case15_scheduler_variable_replacement() {
    let tm = TestManager::start().await;
    tm.enqueue(vec![
        test_task("aaaa", "testing"),
        test_task("1aaa", "sleeping"),
    ])
    .await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    let win = tm.register("workerWin", "windows", &["testing"]).await;
    let (status, body) = lnx.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "active");
    assert_eq!(body["job_type"], "unittest");
    assert_eq!(body["task_type"], "sleeping");
    assert_eq!(
        body["commands"][0]["settings"]["message"],
        "Running Blender from /opt/myblenderbuild/blender"
    );
    let (status, body) = win.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["task_type"], "testing");
    assert_eq!(
        body["commands"][0]["settings"]["message"],
        "Running Blender from c:/temp/blender.exe"
    );
    tm.stop().await;
}

/// Case 16: higher priority first.
#[tokio::test]
async fn case16_order_by_priority() {
    let tm = TestManager::start().await;
    let mut t2 = test_task("2aaa", "sleeping");
    t2.priority = 100;
    tm.enqueue(vec![test_task("1aaa", "sleeping"), t2]).await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    assert_eq!(lnx.task().await.1["_id"], oid("2aaa").to_hex());
    tm.stop().await;
}

/// Case 17: job priority is compared before priority.
#[tokio::test]
async fn case17_order_by_job_priority() {
    let tm = TestManager::start().await;
    let mut t1 = test_task("1aaa", "sleeping");
    t1.job_priority = 10;
    let mut t2 = test_task("2aaa", "sleeping");
    t2.priority = 100;
    t2.job_priority = 5;
    tm.enqueue(vec![t1, t2]).await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    assert_eq!(lnx.task().await.1["_id"], oid("1aaa").to_hex());
    tm.stop().await;
}

/// Case 21: a parent that is not completed blocks its child.
#[tokio::test]
async fn case21_parent_task_not_completed() {
    let tm = TestManager::start().await;
    let win = tm.register("workerWin", "windows", &["testing"]).await;
    let mut t1 = test_task("1aaa", "sleeping");
    t1.status = TaskStatus::Active;
    t1.worker_id = Some(win.id);
    let mut t2 = test_task("2aaa", "sleeping");
    t2.status = TaskStatus::ClaimedByManager;
    t2.priority = 100;
    t2.parents = vec![oid("1aaa")];
    tm.enqueue(vec![t1, t2]).await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    assert_eq!(lnx.task().await.0, StatusCode::NO_CONTENT);
    tm.stop().await;
}

/// Case 22: a completed parent lets the child run; the child's JSON lists its parents.
#[tokio::test]
async fn case22_parent_task_completed() {
    let tm = TestManager::start().await;
    let mut t1 = test_task("1aaa", "sleeping");
    t1.status = TaskStatus::Completed;
    let mut t2 = test_task("2aaa", "sleeping");
    t2.status = TaskStatus::ClaimedByManager;
    t2.parents = vec![oid("1aaa")];
    tm.enqueue(vec![t1, t2]).await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    let (status, body) = lnx.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], oid("2aaa").to_hex());
    assert_eq!(body["parents"], json!([oid("1aaa").to_hex()]));
    tm.stop().await;
}

/// Case 23: one parent done, one not: blocked.
#[tokio::test]
async fn case23_parent_one_completed_one_not() {
    let tm = TestManager::start().await;
    let win = tm.register("workerWin", "windows", &["testing"]).await;
    let mut t1 = test_task("1aaa", "sleeping");
    t1.status = TaskStatus::Active;
    t1.worker_id = Some(win.id);
    let mut t2 = test_task("2aaa", "sleeping");
    t2.status = TaskStatus::Completed;
    let mut t3 = test_task("3aaa", "sleeping");
    t3.status = TaskStatus::ClaimedByManager;
    t3.priority = 100;
    t3.parents = vec![oid("1aaa"), oid("2aaa")];
    tm.enqueue(vec![t1, t2, t3]).await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    assert_eq!(lnx.task().await.0, StatusCode::NO_CONTENT);
    tm.stop().await;
}

/// Case 24: the answer could not be delivered; the task goes back to the queue, still
/// naming the worker.
#[tokio::test]
async fn case24_communication_error() {
    let tm = TestManager::start().await;
    tm.enqueue(vec![test_task("aaaa", "sleeping")]).await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    let app = flamenco_serve::router(tm.manager.clone());
    let req = axum::http::Request::post("/task")
        .header(
            "Authorization",
            format!(
                "Basic {}",
                base64_encode(&format!("{}:{}", lnx.id, lnx.secret))
            ),
        )
        .body(Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(tm.task(oid("aaaa")).await.status, TaskStatus::Active);
    drop(resp); // the connection broke before the body was written
    wait_until("the task is no longer active", || async {
        tm.task(oid("aaaa")).await.status != TaskStatus::Active
    })
    .await;
    let task = tm.task(oid("aaaa")).await;
    assert_eq!(task.status, TaskStatus::ClaimedByManager);
    assert_eq!(task.worker, "workerLnx");
    assert_eq!(task.worker_id, Some(lnx.id));
    tm.stop().await;
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Case 25: a worker with an active task gets that one again, not a new one.
#[tokio::test]
async fn case25_request_new_when_assigned() {
    let tm = TestManager::start().await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    let mut t1 = test_task("1aaa", "sleeping");
    t1.status = TaskStatus::Active;
    t1.worker_id = Some(lnx.id);
    t1.worker = "workerLnx".into();
    let mut t2 = test_task("2aaa", "sleeping");
    t2.priority = 55;
    t2.worker = String::new();
    tm.enqueue(vec![t1, t2]).await;
    let (status, body) = lnx.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], oid("1aaa").to_hex());
    let t2 = tm.task(oid("2aaa")).await;
    assert_eq!(t2.status, TaskStatus::Queued);
    assert_eq!(t2.worker, "");
    assert_eq!(t2.worker_id, None);
    tm.stop().await;
}

/// Case 26: assigned tasks that are no longer active are ignored.
#[tokio::test]
async fn case26_request_new_when_assigned_but_not_active() {
    let tm = TestManager::start().await;
    let lnx = tm.register("workerLnx", "linux", &["sleeping"]).await;
    let mut tasks = Vec::new();
    for (id, st) in [
        ("1aaa", TaskStatus::Failed),
        ("2aaa", TaskStatus::Completed),
        ("3aaa", TaskStatus::Other("cancelled".into())),
    ] {
        let mut t = test_task(id, "sleeping");
        t.status = st;
        t.worker_id = Some(lnx.id);
        tasks.push(t);
    }
    let mut t4 = test_task("4aaa", "sleeping");
    t4.priority = 30;
    tasks.push(t4);
    tm.enqueue(tasks).await;
    let (status, body) = lnx.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], oid("4aaa").to_hex());
    tm.stop().await;
}
