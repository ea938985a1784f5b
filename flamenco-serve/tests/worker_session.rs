//! A scripted worker session, as the real Flamenco Worker 2.5 runs one (worker-protocol.md
//! appendix A): register → sign-on → task → updates with logs → completed → sign-off, with
//! the stored state checked at each step; plus the cancel path and status requests.

mod common;

use common::TestManager;
use flamenco_core::model::{Command, RequestedStatus, Task, TaskStatus};
use reqwest::StatusCode;
use serde_json::json;

fn echo_sleep_task(name: &str) -> Task {
    Task::new(
        name,
        "sleep",
        vec![
            Command::new("echo", json!({"message": "Hello from the manager"})),
            Command::new("sleep", json!({"time_in_seconds": 1})),
        ],
    )
}

#[tokio::test]
async fn full_session_stores_every_step() {
    let tm = TestManager::start().await;
    let task = echo_sleep_task("task-1");
    let id = task.id;
    tm.enqueue(vec![task]).await;

    // register: 200 with the worker document, no secret.
    let resp = tm
        .client
        .post(tm.url("/register-worker"))
        .header("User-Agent", "Flamenco-Worker/2.5")
        .json(&json!({"secret": "s".repeat(64), "platform": "linux",
                      "supported_task_types": ["sleep", "echo", "exec", "file-management", "debug"],
                      "nickname": "vm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    for key in [
        "_id",
        "nickname",
        "address",
        "status",
        "platform",
        "time_cost",
        "supported_task_types",
        "software",
    ] {
        assert!(
            body.get(key).is_some(),
            "registration answer lacks {key}: {body}"
        );
    }
    assert!(body.get("secret").is_none() && body.get("hashed_secret").is_none());
    assert_eq!(body["status"], "");
    let worker_id = flamenco_core::model::ObjectId::parse(body["_id"].as_str().unwrap()).unwrap();
    let stored = tm.worker(worker_id).await;
    assert!(
        stored.hashed_secret.starts_with("$2"),
        "secret stored as bcrypt hash"
    );
    assert!(!stored.hashed_secret.contains(&"s".repeat(64)));
    let w = common::TestWorker {
        id: worker_id,
        secret: "s".repeat(64),
        base: tm.base.clone(),
        client: tm.client.clone(),
        software: "Flamenco-Worker/2.5".into(),
    };

    // sign-on
    assert_eq!(
        w.sign_on(json!({"supported_task_types": ["sleep", "echo"], "nickname": "vm"}))
            .await,
        StatusCode::NO_CONTENT
    );
    let stored = tm.worker(worker_id).await;
    assert_eq!(stored.status, "awake");
    assert_eq!(stored.software, "Flamenco-Worker/2.5");
    assert_eq!(stored.address, "127.0.0.1");
    assert!(stored.last_activity.is_some());

    // task
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], id.to_hex());
    assert_eq!(body["status"], "active");
    assert_eq!(body["worker"], "vm");
    assert_eq!(body["commands"][0]["name"], "echo");
    let t = tm.task(id).await;
    assert_eq!(t.status, TaskStatus::Active);
    assert_eq!(t.worker_id, Some(worker_id));
    // The worker's `current_task` is written with the next "seen" flush.
    tm.manager.flush_seen().await.expect("flush");
    assert_eq!(tm.worker(worker_id).await.current_task, Some(id));
    let outbox = tm.outbox().await;
    assert_eq!(
        outbox.len(),
        2,
        "assignment queues the active update and the log line"
    );
    assert_eq!(outbox[0].task_status, Some(TaskStatus::Active));
    assert!(outbox[1].log.contains("Manager assigned task"));

    // first update: active
    assert_eq!(
        w.update(id, json!({"activity": "", "current_command_idx": 0, "task_progress_percentage": 0,
                            "command_progress_percentage": 0, "metrics": {"timing": {}}, "task_status": "active"}))
            .await,
        StatusCode::NO_CONTENT
    );
    // may-i-run
    let (_, body) = w.may_i_run(id).await;
    assert_eq!(body, json!({"may_keep_running": true}));
    // update with a log
    assert_eq!(
        w.update(id, json!({"activity": "starting sleep", "current_command_idx": 1,
                            "task_progress_percentage": 0, "command_progress_percentage": 0,
                            "task_status": "active",
                            "log": "2026-11-28T07:27:17.163166+00:00: echo: Starting\n2026-11-28T07:27:17.163236+00:00: Hello"}))
            .await,
        StatusCode::NO_CONTENT
    );
    let t = tm.task(id).await;
    assert_eq!(t.activity, "starting sleep");
    assert_eq!(t.log, "", "logs are forwarded, never stored on the task");
    // output-produced
    let resp = w
        .post_json(
            "/output-produced",
            &json!({"paths": ["/srv/farm/out/copied.txt"]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        tm.manager.produced_outputs().last().unwrap().paths,
        vec!["/srv/farm/out/copied.txt"]
    );
    // completed
    assert_eq!(
        w.update(id, json!({"activity": "Task completed", "current_command_idx": 1,
                            "command_progress_percentage": 100, "metrics": {"timing": {"total": 1.008}},
                            "task_status": "completed", "log": "sleep: Finished"}))
            .await,
        StatusCode::NO_CONTENT
    );
    let t = tm.task(id).await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.activity, "Task completed");
    // The worker's reported status is written with the next "seen" flush (every second
    // in the daemon, `flamenco_core::seen`).
    tm.manager.flush_seen().await.expect("flush");
    let stored = tm.worker(worker_id).await;
    assert_eq!(stored.current_task_status, "completed");

    // the outbox holds every update in arrival order, with the worker identifier
    let outbox = tm.outbox().await;
    assert_eq!(outbox.len(), 5);
    assert_eq!(outbox[2].worker, "127.0.0.1 (vm)");
    assert_eq!(
        outbox[3].log,
        "2026-11-28T07:27:17.163166+00:00: echo: Starting\n2026-11-28T07:27:17.163236+00:00: Hello"
    );
    assert_eq!(outbox[3].current_command_idx, 1);
    assert_eq!(outbox[4].task_status, Some(TaskStatus::Completed));
    assert_eq!(outbox[4].command_progress_percentage, 100);

    // nothing left: 204
    assert_eq!(w.task().await.0, StatusCode::NO_CONTENT);
    // sign-off
    assert_eq!(w.sign_off().await, StatusCode::NO_CONTENT);
    assert_eq!(tm.worker(worker_id).await.status, "down");
    assert_eq!(
        tm.task(id).await.status,
        TaskStatus::Completed,
        "finished tasks are not re-queued"
    );
    tm.stop().await;
}

/// The cancel path of appendix A: may-i-run says no, the worker's last log-only updates are
/// kept (204; v2 answered 409), the 2.5 worker returns the task; sign-off re-queues a task
/// still active.
#[tokio::test]
async fn cancel_and_return_path() {
    let tm = TestManager::start().await;
    let t1 = echo_sleep_task("task-2-to-be-cancelled");
    let id = t1.id;
    tm.enqueue(vec![t1]).await;
    let w = tm.register("vm", "linux", &["sleep"]).await;
    assert_eq!(w.task().await.0, StatusCode::OK);
    assert_eq!(
        w.update(id, json!({"task_status": "active"})).await,
        StatusCode::NO_CONTENT
    );

    let mut cancel = flamenco_core::model::TaskUpdate::new(id, chrono::Utc::now());
    cancel.task_status = Some(TaskStatus::CancelRequested);
    tm.manager.store().queue_update(cancel).await.unwrap();

    let (_, body) = w.may_i_run(id).await;
    assert_eq!(body["may_keep_running"], false);
    assert_eq!(
        body["reason"],
        format!("task {id} in non-runnable status cancel-requested")
    );
    // 2.5 sends log-only updates while stopping: kept as the task's last words.
    let resp = w
        .post_json(
            &format!("/tasks/{id}/update"),
            &json!({"log": "TERMinating subprocess"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // return: 204, the task is now canceled.
    assert_eq!(
        w.post_empty(&format!("/tasks/{id}/return")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(tm.task(id).await.status, TaskStatus::Canceled);
    // a second return is harmless
    assert_eq!(
        w.post_empty(&format!("/tasks/{id}/return")).await.status(),
        StatusCode::NO_CONTENT
    );
    // return of an unknown task: 404 with a JSON body
    let resp = w.post_empty("/tasks/aaaaaaaaaaaaaaaaaaaaaaaa/return").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = resp.json().await.expect("JSON error body");
    assert!(body["error"].as_str().unwrap().contains("unknown"));

    // an active task returned by its worker goes back to the queue for others
    let t2 = echo_sleep_task("task-3");
    let id2 = t2.id;
    tm.enqueue(vec![t2]).await;
    assert_eq!(w.task().await.1["_id"], id2.to_hex());
    assert_eq!(
        w.post_empty(&format!("/tasks/{id2}/return")).await.status(),
        StatusCode::NO_CONTENT
    );
    let t = tm.task(id2).await;
    assert_eq!(t.status, TaskStatus::ClaimedByManager);
    assert_eq!(t.worker_id, None);
    let other = tm.register("other", "linux", &["sleep"]).await;
    assert_eq!(other.task().await.1["_id"], id2.to_hex());
    // sign-off of the other worker re-queues its active task
    assert_eq!(other.sign_off().await, StatusCode::NO_CONTENT);
    let t = tm.task(id2).await;
    assert_eq!(t.status, TaskStatus::ClaimedByManager);
    let last = tm.outbox().await.pop().unwrap();
    assert_eq!(last.worker, "-");
    assert!(last.activity.starts_with("Re-queued task after worker"));
    tm.stop().await;
}

/// Worker states: 2.1+ workers get 423 / status_requested / status-change; 2.0.x never do.
#[tokio::test]
async fn status_requests_reach_new_workers_only() {
    let tm = TestManager::start().await;
    let new = tm.register("new", "linux", &["sleep"]).await;
    let old = tm
        .register_as("old", "linux", &["sleep"], "Flamenco-Worker/2.0.6")
        .await;
    tm.manager
        .request_worker_status(new.id, Some(RequestedStatus::Asleep))
        .await
        .unwrap();
    // A 2.0.x worker cannot obey: the SDK (and so the API and the CLI) refuses. A request
    // already in the store (a database from an older version) is never sent to it either.
    let refused = tm
        .manager
        .request_worker_status(old.id, Some(RequestedStatus::Asleep))
        .await
        .expect_err("a 2.0.x worker cannot be asked to sleep");
    assert!(
        matches!(&refused, flamenco_core::ApiError::Conflict(m) if m.contains("2.1")),
        "{refused:?}"
    );
    assert_eq!(tm.worker(old.id).await.status_requested, None);
    tm.manager
        .store()
        .set_worker_status_requested(old.id, Some(RequestedStatus::Asleep))
        .await
        .unwrap();

    let (status, body) = new.task().await;
    assert_eq!(status, StatusCode::LOCKED);
    assert_eq!(body, json!({"status_requested": "asleep"}));
    let (status, _) = old.task().await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "2.0.x workers are never sent a 423"
    );

    let resp = new.get("/status-change").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"status_requested": "asleep"})
    );
    assert_eq!(
        old.get("/status-change").await.status(),
        StatusCode::NO_CONTENT
    );

    // may-i-run while a request is pending: 2.1+ gets status_requested, 2.0.x never.
    let t = echo_sleep_task("t");
    let id = t.id;
    tm.enqueue(vec![t]).await;
    assert_eq!(old.task().await.0, StatusCode::OK);
    let (_, body) = old.may_i_run(id).await;
    assert_eq!(body, json!({"may_keep_running": true}));
    let (_, body) = new.may_i_run(id).await;
    assert_eq!(body["may_keep_running"], false);
    assert_eq!(body["status_requested"], "asleep");

    assert_eq!(
        new.post_empty("/ack-status-change/asleep").await.status(),
        StatusCode::NO_CONTENT
    );
    let stored = tm.worker(new.id).await;
    assert_eq!(stored.status, "asleep");
    assert_eq!(stored.status_requested, None);
    assert_eq!(
        new.get("/status-change").await.status(),
        StatusCode::NO_CONTENT
    );

    tm.manager
        .request_worker_status(new.id, Some(RequestedStatus::Awake))
        .await
        .unwrap();
    let resp = new.get("/status-change").await;
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"status_requested": "awake"})
    );
    assert_eq!(
        new.post_empty("/ack-status-change/awake").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(tm.worker(new.id).await.status, "awake");

    // shutdown: 423, then the worker signs off without an ack; the request is cleared.
    tm.manager
        .request_worker_status(new.id, Some(RequestedStatus::Shutdown))
        .await
        .unwrap();
    assert_eq!(
        new.task().await,
        (StatusCode::LOCKED, json!({"status_requested": "shutdown"}))
    );
    assert_eq!(new.sign_off().await, StatusCode::NO_CONTENT);
    assert_eq!(tm.worker(new.id).await.status_requested, None);
    assert_eq!(
        new.post_empty("/ack-status-change/bogus").await.status(),
        StatusCode::BAD_REQUEST
    );
    tm.stop().await;
}

/// A worker's status is what it acknowledged: a 2.5 worker that acknowledged `asleep` and
/// then pushes the stopped task's last log lines, or asks may-i-run, stays `asleep` (the
/// dashboard keeps offering Wake); only its next acknowledgement or sign-on changes it.
#[tokio::test]
async fn task_updates_never_wake_an_asleep_worker() {
    let tm = TestManager::start().await;
    let w = tm.register("w", "linux", &["sleep"]).await;
    let t = echo_sleep_task("t");
    let id = t.id;
    tm.enqueue(vec![t]).await;
    assert_eq!(w.task().await.0, StatusCode::OK);
    assert_eq!(
        w.update(id, json!({"task_status": "active", "log": "starting"}))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(tm.worker(w.id).await.status, "awake");

    // Asked to sleep: may-i-run says stop, the worker acknowledges, then sends the log
    // of the task it stopped, and fails it: whatever the answers, it stays asleep.
    tm.manager
        .request_worker_status(w.id, Some(RequestedStatus::Asleep))
        .await
        .unwrap();
    let (_, body) = w.may_i_run(id).await;
    assert_eq!(body["status_requested"], "asleep");
    assert_eq!(
        w.post_empty("/ack-status-change/asleep").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(tm.worker(w.id).await.status, "asleep");
    let code = w
        .update(
            id,
            json!({"log": "TERMinating subprocess", "activity": "stopping"}),
        )
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "its own task's log is taken");
    assert_eq!(tm.worker(w.id).await.status, "asleep", "after a {code}");
    let code = w.update(id, json!({"task_status": "failed"})).await;
    assert_eq!(tm.worker(w.id).await.status, "asleep", "after a {code}");
    let code = w
        .update(common::oid("9"), json!({"log": "a task that is not here"}))
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    w.may_i_run(id).await;
    assert_eq!(tm.worker(w.id).await.status, "asleep");
    // The contact is still noted (no timeout for a sleeping worker that talks).
    let seen = tm.worker(w.id).await.last_activity;
    assert!(seen.is_some());

    // `shutdown` acknowledged: a late update does not bring it back either.
    assert_eq!(
        w.post_empty("/ack-status-change/shutdown").await.status(),
        StatusCode::NO_CONTENT
    );
    w.update(id, json!({"log": "bye"})).await;
    assert_eq!(tm.worker(w.id).await.status, "shutdown");

    // Its acknowledgement wakes it; so does a sign-on.
    assert_eq!(
        w.post_empty("/ack-status-change/asleep").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    assert_eq!(tm.worker(w.id).await.status, "awake");
    tm.stop().await;
}

/// A request does not outlive a sign-off: a worker asked to sleep that signs off before
/// obeying starts afresh when it comes back (v2.0.6 → 2.5 with the same id, in the issue),
/// instead of going straight to sleep.
/// A sign-on removes `current_task` (v2 §4.6), also when the claim before it was not
/// written yet; the next claim (the same task, still assigned) sets it again.
#[tokio::test]
async fn sign_on_after_a_claim_removes_current_task() {
    let tm = TestManager::start().await;
    let task = echo_sleep_task("assigned");
    let id = task.id;
    tm.enqueue(vec![task]).await;
    let w = tm.register("w", "linux", &["sleep"]).await;
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], id.to_hex());
    assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    tm.manager.flush_seen().await.expect("flush");
    assert_eq!(tm.worker(w.id).await.current_task, None);
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], id.to_hex(), "still its task");
    tm.manager.flush_seen().await.expect("flush");
    assert_eq!(tm.worker(w.id).await.current_task, Some(id));
    tm.stop().await;
}

#[tokio::test]
async fn sign_off_withdraws_a_pending_request() {
    let tm = TestManager::start().await;
    let w = tm.register("w", "linux", &["sleep"]).await;
    tm.manager
        .request_worker_status(w.id, Some(RequestedStatus::Asleep))
        .await
        .unwrap();
    assert_eq!(w.sign_off().await, StatusCode::NO_CONTENT);
    let stored = tm.worker(w.id).await;
    assert_eq!(stored.status, "down");
    assert_eq!(stored.status_requested, None);
    assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    assert_eq!(w.task().await.0, StatusCode::NO_CONTENT, "no 423: it works");
    assert_eq!(
        w.get("/status-change").await.status(),
        StatusCode::NO_CONTENT
    );
    tm.stop().await;
}
