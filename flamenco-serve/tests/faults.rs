//! Fault tests over HTTP (issue #9): a full disk or a read-only database answers 503 with
//! the reason and changes nothing, and the Manager works again once the condition clears
//! (the database passing `PRAGMA integrity_check`); a jump of the wall clock does not fire
//! timeouts. The faults are SQLite's own error conditions, made on purpose through
//! `SqliteStore::simulate_fault` (see flamenco-core's `store::sqlite::faults`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{oid, test_task, v2_test_config, TestManager};
use flamenco_core::clock::ManualClock;
use flamenco_core::model::TaskStatus;
use flamenco_core::store::sqlite::{SimulatedFault, SqliteStore};
use flamenco_core::store::Store;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A served Manager on a store the test can break, with one worker running task `1aaa`.
async fn running_task() -> (
    TestManager,
    Arc<SqliteStore>,
    common::TestWorker,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("open the store"));
    let tm = TestManager::start_with_store(v2_test_config(), store.clone() as Arc<dyn Store>).await;
    tm.enqueue(vec![
        test_task("1aaa", "sleeping"),
        test_task("2aaa", "sleeping"),
    ])
    .await;
    let w = tm.register("w", "linux", &["sleeping"]).await;
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], "1aaaaaaaaaaaaaaaaaaaaaaa");
    (tm, store, w, dir)
}

/// Send an update with a log big enough to need new database pages.
async fn big_update(w: &common::TestWorker, marker: &str) -> (StatusCode, Option<String>, Value) {
    let log = format!("{marker}\n{}", "log line of a busy render\n".repeat(10_000));
    let resp = w
        .post_json(
            "/tasks/1aaaaaaaaaaaaaaaaaaaaaaa/update",
            &json!({"task_status": "completed", "activity": marker, "log": log}),
        )
        .await;
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, retry, body)
}

async fn fault_answers_503_and_changes_nothing(fault: SimulatedFault, reason: &[&str]) {
    let (tm, store, w, _dir) = running_task().await;
    let outbox_before = tm.outbox().await;
    let task_before = tm.task(oid("1aaa")).await;
    assert_eq!(task_before.status, TaskStatus::Active);

    store.simulate_fault(Some(fault)).await.expect("simulate");
    let (status, retry, body) = big_update(&w, "during the fault").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    let error = body["error"].as_str().expect("a JSON error");
    for text in reason {
        assert!(error.contains(text), "{text:?} not in {error:?}");
    }
    // Nothing of the refused update was applied: same outbox, same task.
    let outbox = tm.outbox().await;
    assert_eq!(outbox.len(), outbox_before.len());
    assert!(outbox.iter().all(|u| u.activity != "during the fault"));
    let task = tm.task(oid("1aaa")).await;
    assert_eq!(task.status, TaskStatus::Active);
    assert_eq!(task.activity, task_before.activity);
    assert_eq!(task.last_updated, task_before.last_updated);

    // The condition clears: the same update goes through, and the database is sound.
    store.simulate_fault(None).await.expect("clear");
    let (status, _, body) = big_update(&w, "after the fault").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let outbox = tm.outbox().await;
    assert_eq!(outbox.len(), outbox_before.len() + 1);
    let last = outbox.last().expect("an update");
    assert_eq!(last.activity, "after the fault");
    assert!(last.log.starts_with("after the fault\n"));
    assert_eq!(tm.task(oid("1aaa")).await.status, TaskStatus::Completed);
    assert_eq!(
        store.integrity_check().await.expect("integrity check"),
        Vec::<String>::new()
    );
    // The queue goes on.
    let (status, body) = w.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], "2aaaaaaaaaaaaaaaaaaaaaaa");
    tm.stop().await;
}

#[tokio::test]
async fn a_full_disk_answers_503_with_the_reason_and_changes_nothing() {
    fault_answers_503_and_changes_nothing(
        SimulatedFault::DiskFull,
        &[
            "the store is unavailable",
            "disk",
            "full",
            "free disk space",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_read_only_database_answers_503_with_the_reason_and_changes_nothing() {
    fault_answers_503_and_changes_nothing(
        SimulatedFault::ReadOnly,
        &["the store is unavailable", "read-only", "permissions"],
    )
    .await;
}

/// A task claim during the fault is refused as well, and leaves the task queued.
#[tokio::test]
async fn a_claim_on_a_read_only_database_is_503_and_leaves_the_task_queued() {
    let (tm, store, _w, _dir) = running_task().await;
    let other = tm.register("other", "linux", &["sleeping"]).await;
    store
        .simulate_fault(Some(SimulatedFault::ReadOnly))
        .await
        .expect("simulate");
    let (status, body) = other.task().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("read-only")));
    assert_eq!(tm.task(oid("2aaa")).await.status, TaskStatus::Queued);
    store.simulate_fault(None).await.expect("clear");
    let (status, body) = other.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"], "2aaaaaaaaaaaaaaaaaaaaaaa");
    tm.stop().await;
}

/// One round of the daemon's timeout loop at monotonic time `mono`.
async fn round(
    tm: &TestManager,
    guard: &mut flamenco_core::clock::JumpGuard,
    mono: tokio::time::Instant,
) -> Option<flamenco_core::maintenance::TimeoutReport> {
    tm.manager
        .check_timeouts_guarded(guard, mono)
        .await
        .expect("timeout check")
}

/// The wall clock jumps forward two hours, then back one, between rounds of the
/// daemon's timeout loop: no round fires because of a jump; a worker that keeps working
/// keeps its task, and a task nobody pings still fails once a full timeout interval of
/// real (monotonic) time has passed since the jump.
#[tokio::test]
async fn clock_jumps_do_not_fire_timeouts() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let mut config = v2_test_config();
    config.active_task_timeout_interval = Duration::from_secs(60);
    config.active_worker_timeout_interval = Duration::from_secs(300);
    let tm = TestManager::start_with_clock(config, clock.clone()).await;
    tm.enqueue(vec![
        test_task("1aaa", "sleeping"),
        test_task("2aaa", "sleeping"),
    ])
    .await;
    let busy = tm.register("busy", "linux", &["sleeping"]).await;
    let silent = tm.register("silent", "linux", &["sleeping"]).await;
    assert_eq!(busy.task().await.0, StatusCode::OK);
    assert_eq!(silent.task().await.0, StatusCode::OK);
    let (busy_task, silent_task) = (oid("1aaa"), oid("2aaa"));
    assert_eq!(tm.task(busy_task).await.worker_id, Some(busy.id));

    let mut guard = tm.manager.timeout_jump_guard();
    let m0 = tokio::time::Instant::now();
    let mut mono = m0;
    let report = round(&tm, &mut guard, mono).await;
    assert_eq!(report.expect("the first round runs").failed_tasks, vec![]);

    for (jump, label) in [
        (chrono::Duration::hours(2), "forward"),
        (chrono::Duration::hours(-1), "backward"),
    ] {
        // One minute of real time, but the wall clock jumped.
        clock.advance(chrono::Duration::seconds(60) + jump);
        mono += Duration::from_secs(60);
        let report = round(&tm, &mut guard, mono).await;
        assert!(report.is_none(), "{label} jump: the round must be skipped");
        // The busy worker keeps reporting; rounds stay deferred for the grace period
        // (the longer timeout, 300 s).
        for minute in 1..5 {
            clock.advance(chrono::Duration::seconds(60));
            mono += Duration::from_secs(60);
            assert_eq!(busy.may_i_run(busy_task).await.0, StatusCode::OK);
            let report = round(&tm, &mut guard, mono).await;
            assert!(report.is_none(), "{label} jump, minute {minute}: deferred");
            assert_eq!(tm.task(busy_task).await.status, TaskStatus::Active);
        }
        clock.advance(chrono::Duration::seconds(60));
        mono += Duration::from_secs(60);
        assert_eq!(busy.may_i_run(busy_task).await.0, StatusCode::OK);
        let report = round(&tm, &mut guard, mono).await;
        let report = report.expect("rounds run again after the grace period");
        assert!(
            !report.failed_tasks.contains(&busy_task),
            "{label} jump: the busy worker's task must not time out"
        );
        assert_eq!(tm.task(busy_task).await.status, TaskStatus::Active);
    }
    // The silent worker's task did time out, after the forward jump's grace period.
    assert_eq!(tm.task(silent_task).await.status, TaskStatus::Failed);
    tm.stop().await;
}
