//! Conformance cases for a user's action on one task ([`crate::store::JobStore::task_action`]):
//! cancel and re-queue follow [`crate::jobs::status::plan_task_action`], each change goes
//! through the outbox, refusals change nothing, and a re-queue revives a finished job.

use std::sync::Arc;

use super::{
    add_worker, at, claimed_id, consume, counts_of, job, nth_id, oid, outbox, task, test_job,
    test_worker, with_counts,
};
use crate::jobs::status::{JobAction, TaskAction};
use crate::model::{JobStatus, ObjectId, Task, TaskStatus};
use crate::store::{Store, TaskActionOutcome};

async fn act(
    store: &Arc<dyn Store>,
    id: ObjectId,
    what: TaskAction,
    at_ms: i64,
) -> TaskActionOutcome {
    store
        .task_action(id, what, at(at_ms))
        .await
        .expect("task action")
}

fn done(outcome: TaskActionOutcome) -> (Task, bool) {
    match outcome {
        TaskActionOutcome::Done { task, changed } => (*task, changed),
        other => panic!("expected the task action to be done, got {other:?}"),
    }
}

fn refused(outcome: &TaskActionOutcome) -> bool {
    matches!(outcome, TaskActionOutcome::Refused(reason) if !reason.is_empty())
}

/// Cancel: queued → canceled, active → cancel-requested (keeping its worker), again →
/// nothing; finished tasks refuse. Re-queue: failed/completed → queued without a worker;
/// running tasks refuse, and so does a task of a cancel-requested job. Every change is one
/// outbox update; a completed job becomes queued when one of its tasks is re-queued.
pub async fn task_actions_follow_the_status_rules(store: Arc<dyn Store>) {
    let w = test_worker(oid("a3a3a3a3a3a3a3a3a3a3a3a3"), "workerTA", &["sleep"]);
    add_worker(&store, &w).await;
    let (j, mut tasks) = test_job(nth_id(0x14, 1), 0x41, 4);
    tasks[1].priority = 90; // claimed first
    tasks[2].status = TaskStatus::Failed;
    tasks[3].status = TaskStatus::Completed;
    let j = with_counts(j, &tasks);
    store.insert_job(&j, &tasks).await.expect("insert job");
    assert_eq!(claimed_id(&store, &w, at(1)).await, Some(tasks[1].id));
    consume(&store, at(2)).await;
    assert_eq!(job(&store, j.id).await.status, JobStatus::Active);

    // Unknown task.
    assert_eq!(
        act(&store, nth_id(0x14, 99), TaskAction::Cancel, 3).await,
        TaskActionOutcome::NotFound
    );

    // Refusals change nothing and queue nothing.
    let before_active = task(&store, tasks[1].id).await;
    assert!(refused(
        &act(&store, tasks[1].id, TaskAction::Requeue, 3).await
    ));
    assert!(refused(
        &act(&store, tasks[3].id, TaskAction::Cancel, 3).await
    ));
    assert!(refused(
        &act(&store, tasks[2].id, TaskAction::Cancel, 3).await
    ));
    assert!(refused(
        &act(&store, tasks[0].id, TaskAction::Requeue, 3).await
    ));
    assert_eq!(task(&store, tasks[1].id).await, before_active);
    assert!(outbox(&store).await.is_empty(), "refusals queue nothing");

    // Cancel a queued task: canceled at once.
    let (t0, changed) = done(act(&store, tasks[0].id, TaskAction::Cancel, 4).await);
    assert!(changed);
    assert_eq!(t0.status, TaskStatus::Canceled);
    assert_eq!(t0.last_updated, Some(at(4)));
    assert_eq!(task(&store, tasks[0].id).await.status, TaskStatus::Canceled);
    // Cancel the active task: cancel-requested, still its worker's.
    let (t1, changed) = done(act(&store, tasks[1].id, TaskAction::Cancel, 5).await);
    assert!(changed);
    assert_eq!(t1.status, TaskStatus::CancelRequested);
    assert_eq!(t1.worker_id, Some(w.id));
    // Again: nothing to do, nothing queued.
    let (_, changed) = done(act(&store, tasks[1].id, TaskAction::Cancel, 6).await);
    assert!(
        !changed,
        "canceling a cancel-requested task changes nothing"
    );
    let queued = outbox(&store).await;
    let statuses: Vec<(ObjectId, Option<TaskStatus>)> = queued
        .iter()
        .map(|u| (u.task_id, u.task_status.clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            (tasks[0].id, Some(TaskStatus::Canceled)),
            (tasks[1].id, Some(TaskStatus::CancelRequested)),
        ],
        "one outbox update per change, in order"
    );
    assert!(queued
        .iter()
        .all(|u| !u.activity.is_empty() && !u.log.is_empty()));

    // Re-queue the failed task: queued, no worker.
    let (t2, changed) = done(act(&store, tasks[2].id, TaskAction::Requeue, 7).await);
    assert!(changed);
    assert_eq!(t2.status, TaskStatus::Queued);
    assert_eq!(t2.worker_id, None);
    // The consumer: a task is still cancel-requested, so the job stays active.
    consume(&store, at(8)).await;
    assert_eq!(job(&store, j.id).await.status, JobStatus::Active);

    // A cancel-requested job: its tasks cannot be re-queued until it stopped.
    store
        .job_action(j.id, JobAction::Cancel, at(9))
        .await
        .expect("cancel the job");
    assert_eq!(job(&store, j.id).await.status, JobStatus::CancelRequested);
    ack_outbox(&store).await;
    assert!(refused(
        &act(&store, tasks[0].id, TaskAction::Requeue, 10).await
    ));
    assert!(outbox(&store).await.is_empty());

    // A completed job becomes queued when one of its tasks is re-queued, with fresh counts.
    let (mut j2, mut done_tasks) = test_job(nth_id(0x14, 2), 0x42, 2);
    for t in &mut done_tasks {
        t.status = TaskStatus::Completed;
    }
    j2.status = JobStatus::Completed;
    let j2 = with_counts(j2, &done_tasks);
    store
        .insert_job(&j2, &done_tasks)
        .await
        .expect("insert job");
    let (t, _) = done(act(&store, done_tasks[0].id, TaskAction::Requeue, 11).await);
    assert_eq!(t.status, TaskStatus::Queued);
    let revived = job(&store, j2.id).await;
    assert_eq!(revived.status, JobStatus::Queued);
    assert_eq!(revived.updated, at(11));
    assert_eq!(
        revived.task_counts,
        counts_of(&[(TaskStatus::Queued, 1), (TaskStatus::Completed, 1)])
    );
    // ... and the consumer leaves it queued.
    consume(&store, at(12)).await;
    assert_eq!(job(&store, j2.id).await.status, JobStatus::Queued);
}

async fn ack_outbox(store: &Arc<dyn Store>) {
    let ids: Vec<ObjectId> = outbox(store).await.iter().map(|u| u.id).collect();
    store.outbox_ack(&ids).await.expect("ack");
}

/// Canceling one task of a running job cancels the job, and with it the rest of the job
/// (difference 6 in [`crate::jobs::status`]): its queued tasks are canceled and its running
/// ones asked to stop, so no work runs under a canceled job. A re-queue of the job runs
/// the canceled tasks again.
pub async fn canceling_one_task_stops_its_job(store: Arc<dyn Store>) {
    let w = test_worker(oid("a4a4a4a4a4a4a4a4a4a4a4a4"), "workerTB", &["sleep"]);
    add_worker(&store, &w).await;
    let (j, mut tasks) = test_job(nth_id(0x15, 1), 0x43, 4);
    tasks[1].priority = 90; // claimed first
    tasks[3].status = TaskStatus::Completed;
    let j = with_counts(j, &tasks);
    store.insert_job(&j, &tasks).await.expect("insert job");
    assert_eq!(claimed_id(&store, &w, at(1)).await, Some(tasks[1].id));
    consume(&store, at(2)).await;
    assert_eq!(job(&store, j.id).await.status, JobStatus::Active);

    let (t0, _) = done(act(&store, tasks[0].id, TaskAction::Cancel, 3).await);
    assert_eq!(t0.status, TaskStatus::Canceled);
    consume(&store, at(4)).await;
    assert_eq!(job(&store, j.id).await.status, JobStatus::Canceled);
    assert_eq!(
        task(&store, tasks[2].id).await.status,
        TaskStatus::Canceled,
        "the job's other queued task is canceled with it"
    );
    assert_eq!(
        task(&store, tasks[1].id).await.status,
        TaskStatus::CancelRequested,
        "its running task is asked to stop"
    );
    assert_eq!(
        task(&store, tasks[3].id).await.status,
        TaskStatus::Completed
    );
    assert_eq!(
        claimed_id(&store, &w, at(5)).await,
        None,
        "no task of the canceled job is handed out"
    );
}
