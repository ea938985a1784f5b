//! Conformance cases for the bulk actions' store operations ([`crate::store::BulkStore`]):
//! a job's priority reaches its tasks (and so the claim order), and forgetting a worker
//! follows [`crate::bulk::forget_refusal`], handing a gone worker's tasks back to the queue.

use std::sync::Arc;

use super::{add_worker, at, claimed_id, job, nth_id, oid, outbox, task, test_job, test_worker};
use crate::model::{worker_status, ObjectId, TaskStatus};
use crate::store::{ForgetOutcome, Store, TaskQuery};

/// Setting a job's priority changes the job and every one of its tasks' `job_priority`
/// (not another job's), bumps `_updated`, and changes what a worker claims first; an
/// unknown job is `None`.
pub async fn set_job_priority_reaches_tasks(store: Arc<dyn Store>) {
    let (a, a_tasks) = test_job(nth_id(0x31, 1), 0x51, 3);
    let (b, b_tasks) = test_job(nth_id(0x31, 2), 0x52, 2);
    store.insert_job(&a, &a_tasks).await.expect("insert a");
    store.insert_job(&b, &b_tasks).await.expect("insert b");

    let (changed, n) = store
        .set_job_priority(b.id, 90, at(5))
        .await
        .expect("set priority")
        .expect("job b exists");
    assert_eq!((changed.priority, n), (90, 2));
    assert_eq!(changed.updated, at(5));
    let stored = job(&store, b.id).await;
    assert_eq!((stored.priority, stored.updated), (90, at(5)));
    assert_eq!(stored.status, b.status, "the status is left alone");
    for t in &b_tasks {
        assert_eq!(task(&store, t.id).await.job_priority, 90, "{}", t.id);
    }
    for t in &a_tasks {
        assert_eq!(task(&store, t.id).await.job_priority, 50, "{}", t.id);
    }
    assert_eq!(job(&store, a.id).await.priority, 50);

    // Job a's tasks have lower ids, so without the change they would be claimed first.
    let w = test_worker(oid("b1b1b1b1b1b1b1b1b1b1b1b1"), "workerPR", &["sleep"]);
    add_worker(&store, &w).await;
    assert_eq!(claimed_id(&store, &w, at(6)).await, Some(b_tasks[0].id));

    // Lowered again: the rest of b goes after a.
    store
        .set_job_priority(b.id, 10, at(7))
        .await
        .expect("set priority")
        .expect("job b exists");
    let w2 = test_worker(oid("b2b2b2b2b2b2b2b2b2b2b2b2"), "workerPR2", &["sleep"]);
    add_worker(&store, &w2).await;
    assert_eq!(claimed_id(&store, &w2, at(8)).await, Some(a_tasks[0].id));

    assert_eq!(
        store
            .set_job_priority(nth_id(0x31, 99), 70, at(9))
            .await
            .expect("set priority"),
        None
    );
}

async fn forget(store: &Arc<dyn Store>, id: ObjectId, at_ms: i64) -> ForgetOutcome {
    store.forget_worker(id, at(at_ms)).await.expect("forget")
}

/// Forget: an idle worker goes, whatever its status (none yet included); a working one (`awake`) is refused
/// and nothing changes; a timed-out one goes and its `active` task is back in the queue
/// (`claimed-by-manager`, one outbox update naming the worker). Unknown: `NotFound`.
pub async fn forget_worker_follows_the_rule(store: Arc<dyn Store>) {
    let (j, tasks) = test_job(nth_id(0x32, 1), 0x53, 3);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let mut idle = test_worker(oid("c1c1c1c1c1c1c1c1c1c1c1c1"), "idle", &["sleep"]);
    idle.status = worker_status::AWAKE.into();
    let mut busy = test_worker(oid("c2c2c2c2c2c2c2c2c2c2c2c2"), "busy", &["sleep"]);
    busy.status = worker_status::AWAKE.into();
    let mut gone = test_worker(oid("c3c3c3c3c3c3c3c3c3c3c3c3"), "gone", &["sleep"]);
    gone.status = worker_status::TIMEOUT.into();
    for w in [&idle, &busy, &gone] {
        add_worker(&store, w).await;
    }
    let busy_task = claimed_id(&store, &busy, at(1)).await.expect("busy claims");
    let gone_task = claimed_id(&store, &gone, at(2)).await.expect("gone claims");
    assert_eq!(
        store
            .get_worker(gone.id)
            .await
            .expect("get")
            .map(|w| w.status),
        Some(worker_status::TIMEOUT.to_string()),
        "a claim leaves the worker's status alone"
    );
    let outbox_before = outbox(&store).await.len();

    // Idle: forgotten, nothing handed back.
    match forget(&store, idle.id, 10).await {
        ForgetOutcome::Forgotten { worker, requeued } => {
            assert_eq!(worker.id, idle.id);
            assert!(requeued.is_empty());
        }
        other => panic!("idle worker: {other:?}"),
    }
    assert_eq!(store.get_worker(idle.id).await.expect("get"), None);
    assert_eq!(forget(&store, idle.id, 11).await, ForgetOutcome::NotFound);
    // One that never signed on (no status stored yet) goes too.
    let fresh = test_worker(oid("c5c5c5c5c5c5c5c5c5c5c5c5"), "fresh", &["sleep"]);
    add_worker(&store, &fresh).await;
    assert!(matches!(
        forget(&store, fresh.id, 11).await,
        ForgetOutcome::Forgotten { .. }
    ));
    assert_eq!(store.get_worker(fresh.id).await.expect("get"), None);

    // Busy and awake: refused, with the task named; nothing changed.
    match forget(&store, busy.id, 12).await {
        ForgetOutcome::Refused(why) => {
            assert!(why.contains(&busy_task.to_string()), "{why}")
        }
        other => panic!("busy worker: {other:?}"),
    }
    assert!(store.get_worker(busy.id).await.expect("get").is_some());
    let t = task(&store, busy_task).await;
    assert_eq!((t.status, t.worker_id), (TaskStatus::Active, Some(busy.id)));
    assert_eq!(outbox(&store).await.len(), outbox_before);

    // Timed out with a task: forgotten, the task back in the queue through the outbox.
    match forget(&store, gone.id, 13).await {
        ForgetOutcome::Forgotten { worker, requeued } => {
            assert_eq!(worker.status, worker_status::TIMEOUT);
            assert_eq!(requeued, vec![gone_task]);
        }
        other => panic!("timed-out worker: {other:?}"),
    }
    assert_eq!(store.get_worker(gone.id).await.expect("get"), None);
    let t = task(&store, gone_task).await;
    assert_eq!(t.status, TaskStatus::ClaimedByManager);
    assert!(t.activity.contains("was forgotten"), "{}", t.activity);
    let updates = outbox(&store).await;
    assert_eq!(updates.len(), outbox_before + 1);
    let last = updates.last().expect("an update");
    assert_eq!(
        (last.task_id, last.task_status.clone()),
        (gone_task, Some(TaskStatus::ClaimedByManager))
    );
    // Another worker gets it.
    let active = store
        .list_tasks(&TaskQuery {
            statuses: vec![TaskStatus::Active],
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(active.len(), 1, "only the busy worker's task runs");
    let next = test_worker(oid("c4c4c4c4c4c4c4c4c4c4c4c4"), "next", &["sleep"]);
    add_worker(&store, &next).await;
    assert_eq!(claimed_id(&store, &next, at(14)).await, Some(gone_task));
    assert_eq!(
        store.list_workers().await.expect("list").len(),
        2,
        "busy and next are left"
    );
}
