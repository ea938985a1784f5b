//! Timeouts and cleanup through the Manager, driven by a manual clock: a worker goes
//! silent, its task fails through the outbox and it becomes `timeout`; finished tasks age
//! out of the store while queued and active ones stay.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{oid, test_task, TestManager};
use flamenco_core::clock::ManualClock;
use flamenco_core::model::TaskStatus;
use reqwest::StatusCode;
use serde_json::json;

fn config() -> flamenco_core::config::Config {
    let mut c = common::v2_test_config();
    c.active_task_timeout_interval = Duration::from_secs(60);
    c.active_worker_timeout_interval = Duration::from_secs(300);
    c.task_cleanup_max_age = Duration::from_secs(3600);
    c
}

#[tokio::test]
async fn silent_worker_times_out_and_its_task_fails() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let tm = TestManager::start_with_clock(config(), clock.clone()).await;
    tm.enqueue(vec![
        test_task("1aaa", "sleeping"),
        test_task("2aaa", "sleeping"),
    ])
    .await;
    let silent = tm.register("silent", "linux", &["sleeping"]).await;
    let busy = tm.register("busy", "linux", &["sleeping"]).await;
    assert_eq!(silent.task().await.0, StatusCode::OK);
    let (_, body) = busy.task().await;
    let busy_task = flamenco_core::model::ObjectId::parse(body["_id"].as_str().unwrap()).unwrap();

    // 59 s later nothing has timed out; the busy worker keeps pinging.
    clock.advance(chrono::Duration::seconds(59));
    assert_eq!(busy.may_i_run(busy_task).await.1["may_keep_running"], true);
    let report = tm.manager.check_timeouts_now().await.unwrap();
    assert!(report.failed_tasks.is_empty());

    clock.advance(chrono::Duration::seconds(2));
    let report = tm.manager.check_timeouts_now().await.unwrap();
    let silent_task = if busy_task == oid("1aaa") {
        oid("2aaa")
    } else {
        oid("1aaa")
    };
    assert_eq!(report.failed_tasks, vec![silent_task]);
    let t = tm.task(silent_task).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert!(t
        .activity
        .starts_with("Task timed out on worker 127.0.0.1 (silent)"));
    assert_eq!(tm.worker(silent.id).await.status, "timeout");
    assert_eq!(tm.task(busy_task).await.status, TaskStatus::Active);
    let last = tm.outbox().await.pop().unwrap();
    assert_eq!(last.task_status, Some(TaskStatus::Failed));
    assert!(last
        .log
        .contains("timed out, was active but untouched since"));

    // The silent worker comes back: its updates for the failed task are recorded but the
    // task stays failed; contact makes it awake again.
    assert_eq!(
        silent
            .update(silent_task, json!({"task_status": "active"}))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(tm.task(silent_task).await.status, TaskStatus::Failed);
    assert_eq!(tm.worker(silent.id).await.status, "awake");

    // Five minutes of silence from everyone: the busy worker's task fails too (which marks
    // that worker `timeout`), and the other worker times out on its own.
    clock.advance(chrono::Duration::seconds(301));
    let report = tm.manager.check_timeouts_now().await.unwrap();
    assert_eq!(report.failed_tasks, vec![busy_task]);
    assert_eq!(report.timed_out_workers, vec![silent.id]);
    assert_eq!(tm.worker(silent.id).await.status, "timeout");
    assert_eq!(tm.worker(busy.id).await.status, "timeout");
    tm.stop().await;
}

#[tokio::test]
async fn cleanup_removes_old_finished_tasks_only() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let tm = TestManager::start_with_clock(config(), clock.clone()).await;
    tm.enqueue(vec![
        test_task("1aaa", "sleeping"),
        test_task("2aaa", "sleeping"),
        test_task("3aaa", "sleeping"),
    ])
    .await;
    let w = tm.register("w", "linux", &["sleeping"]).await;
    let (_, body) = w.task().await;
    let done = flamenco_core::model::ObjectId::parse(body["_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        w.update(done, json!({"task_status": "completed"})).await,
        StatusCode::NO_CONTENT
    );
    let (_, body) = w.task().await;
    let running = flamenco_core::model::ObjectId::parse(body["_id"].as_str().unwrap()).unwrap();

    clock.advance(chrono::Duration::minutes(59));
    assert_eq!(tm.manager.cleanup_now().await.unwrap(), 0);
    clock.advance(chrono::Duration::minutes(2));
    assert_eq!(tm.manager.cleanup_now().await.unwrap(), 1);
    assert!(tm.manager.get_task(done).await.unwrap().is_none());
    assert_eq!(tm.task(running).await.status, TaskStatus::Active);
    let remaining = tm.manager.task_counts().await.unwrap();
    assert_eq!(
        remaining.values().sum::<u64>(),
        2,
        "queued and active tasks stay"
    );
    // The worker's update for a cleaned-up task: 404, which 2.2+ workers drop.
    assert_eq!(
        w.update(done, json!({"log": "late"})).await,
        StatusCode::NOT_FOUND
    );
    tm.stop().await;
}

/// Standalone mode with `job_cleanup_max_age`: a finished job and its tasks go once old
/// enough; an unfinished job stays.
#[tokio::test]
async fn cleanup_removes_old_finished_jobs_when_enabled() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let mut c = config();
    c.job_cleanup_max_age = Some(Duration::from_secs(24 * 3600));
    let tm = TestManager::start_with_clock(c, clock.clone()).await;
    let submit = |frames: &str| flamenco_core::jobs::JobSubmission {
        name: None,
        job_type: "sleep".into(),
        priority: None,
        settings: serde_json::from_value(
            json!({"frames": frames, "chunk_size": 1, "time_in_seconds": 1}),
        )
        .unwrap(),
        worker_tag: None,
    };
    let done = tm.manager.submit_job(submit("1")).await.unwrap();
    let waiting = tm.manager.submit_job(submit("2")).await.unwrap();
    let w = tm.register("w", "linux", &["sleep"]).await;
    let (_, body) = w.task().await;
    let task = flamenco_core::model::ObjectId::parse(body["_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        w.update(task, json!({"task_status": "completed"})).await,
        StatusCode::NO_CONTENT
    );
    tm.manager.consume_outbox_now(1000).await.unwrap();
    let finished = if tm.task(task).await.job == Some(done.id) {
        done.id
    } else {
        waiting.id
    };
    let unfinished = if finished == done.id {
        waiting.id
    } else {
        done.id
    };
    assert_eq!(
        tm.manager
            .get_job(finished)
            .await
            .unwrap()
            .unwrap()
            .status
            .to_string(),
        "completed"
    );

    clock.advance(chrono::Duration::hours(23));
    tm.manager.cleanup_now().await.unwrap();
    assert!(tm.manager.get_job(finished).await.unwrap().is_some());
    clock.advance(chrono::Duration::hours(2));
    tm.manager.cleanup_now().await.unwrap();
    assert!(tm.manager.get_job(finished).await.unwrap().is_none());
    assert!(tm.manager.get_task(task).await.unwrap().is_none());
    assert!(tm.manager.get_job(unfinished).await.unwrap().is_some());
    tm.stop().await;
}
