//! Conformance cases for retries and per-job blocklists ([`crate::jobs::retry`],
//! [`crate::store::RetryStore`]): a worker's `failed` soft-fails the task until it failed
//! on N distinct workers, the claim skips the workers in the record and the blocklisted
//! ones, re-queueing clears records, and a job no worker can finish fails with a reason.

use std::sync::Arc;

use super::{
    add_worker, at, claimed_id, consume, job, nth_id, outbox, task, test_job, test_worker,
    worker_update,
};
use crate::jobs::retry::RetryPolicy;
use crate::jobs::status::{JobAction, TaskAction};
use crate::model::{worker_status, JobStatus, ObjectId, TaskStatus, Worker};
use crate::store::Store;
use crate::updates::WorkerUpdateOutcome;

/// An awake worker of these task types, stored.
async fn awake(store: &Arc<dyn Store>, n: u32, nickname: &str, types: &[&str]) -> Worker {
    let mut w = test_worker(nth_id(0x77, n), nickname, types);
    w.status = worker_status::AWAKE.into();
    add_worker(store, &w).await;
    w
}

/// `w` claims the best task for it; panics unless that is `want`.
async fn claim_expect(store: &Arc<dyn Store>, w: &Worker, at_ms: i64, want: Option<ObjectId>) {
    assert_eq!(
        claimed_id(store, w, at(at_ms)).await,
        want,
        "claim of worker {}",
        w.nickname
    );
}

/// `w` reports `failed` for `task`.
async fn fail(store: &Arc<dyn Store>, w: &Worker, task: ObjectId, at_ms: i64) {
    let outcome = store
        .apply_worker_update(
            w.id,
            worker_update(task, w, Some(TaskStatus::Failed), "exit code 1", at(at_ms)),
        )
        .await
        .expect("worker update");
    assert_eq!(
        outcome,
        WorkerUpdateOutcome::Applied,
        "failed from {}",
        w.nickname
    );
}

/// A task fails on one worker after the other: `soft-failed` (no worker, runnable, shown
/// in the record with who and when, its job still active) until the third distinct
/// worker, then `failed` for good and its job follows. The queued update carries the
/// local status, and the per-status counts see `soft-failed`.
pub async fn failed_tasks_soft_fail_until_n_distinct_workers(store: Arc<dyn Store>) {
    store.set_retry_policy(RetryPolicy::standalone(3, 100));
    let (j, tasks) = test_job(nth_id(0x71, 1), 0x72, 1);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let t = tasks[0].id;
    let ws = [
        awake(&store, 1, "w1", &["sleep"]).await,
        awake(&store, 2, "w2", &["sleep"]).await,
        awake(&store, 3, "w3", &["sleep"]).await,
        awake(&store, 4, "w4", &["sleep"]).await,
    ];
    for (i, w) in ws[..2].iter().enumerate() {
        let ms = 1000 * (i as i64 + 1);
        claim_expect(&store, w, ms, Some(t)).await;
        fail(&store, w, t, ms + 10).await;
        let now = task(&store, t).await;
        assert_eq!(
            now.status,
            TaskStatus::SoftFailed,
            "after {} failed",
            w.nickname
        );
        assert_eq!(now.worker_id, None, "a soft-failed task has no worker");
        assert!(
            now.activity
                .contains(&format!("({} of 3 workers); re-queued", i + 1)),
            "{}",
            now.activity
        );
        let record = store.task_failures(t).await.expect("failures");
        assert_eq!(record.len(), i + 1);
        assert_eq!(record[i].worker_id, w.id);
        assert_eq!(record[i].worker, w.nickname);
        assert_eq!(record[i].at, at(ms + 10));
        let last = outbox(&store).await.pop().expect("queued update");
        assert_eq!(last.task_status, Some(TaskStatus::SoftFailed));
        consume(&store, at(ms + 20)).await;
        assert_eq!(
            job(&store, j.id).await.status,
            JobStatus::Active,
            "a soft-failed task is not finished"
        );
        // The worker that failed it does not get it again.
        claim_expect(&store, w, ms + 30, None).await;
    }
    let counts = store.count_tasks_by_status().await.expect("counts");
    assert_eq!(counts.get("soft-failed"), Some(&1), "{counts:?}");
    claim_expect(&store, &ws[2], 5000, Some(t)).await;
    fail(&store, &ws[2], t, 5010).await;
    let now = task(&store, t).await;
    assert_eq!(now.status, TaskStatus::Failed, "third distinct worker");
    assert!(
        now.activity.ends_with("failed for good."),
        "{}",
        now.activity
    );
    assert_eq!(store.task_failures(t).await.expect("failures").len(), 3);
    claim_expect(&store, &ws[3], 5020, None).await;
    consume(&store, at(5030)).await;
    assert_eq!(job(&store, j.id).await.status, JobStatus::Failed);
}

/// Without the policy (upstream mode, v2) a `failed` fails the task at once and records
/// nothing.
pub async fn retries_off_fail_at_once(store: Arc<dyn Store>) {
    assert!(
        !store.retry_policy().enabled,
        "off until the Manager sets it"
    );
    let (j, tasks) = test_job(nth_id(0x71, 2), 0x73, 1);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let w = awake(&store, 1, "w1", &["sleep"]).await;
    claim_expect(&store, &w, 1000, Some(tasks[0].id)).await;
    fail(&store, &w, tasks[0].id, 1010).await;
    assert_eq!(task(&store, tasks[0].id).await.status, TaskStatus::Failed);
    assert!(store
        .task_failures(tasks[0].id)
        .await
        .expect("failures")
        .is_empty());
}

/// The claim never hands a task to a worker in its failure record (it gets the job's next
/// task instead), but another worker gets it first in the queue's order; the failing
/// worker's late log lines keep the task free.
pub async fn claim_skips_workers_in_the_failure_record(store: Arc<dyn Store>) {
    store.set_retry_policy(RetryPolicy::standalone(3, 100));
    let (j, tasks) = test_job(nth_id(0x71, 3), 0x74, 2);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let (t1, t2) = (tasks[0].id, tasks[1].id);
    let w1 = awake(&store, 1, "w1", &["sleep"]).await;
    let w2 = awake(&store, 2, "w2", &["sleep"]).await;
    claim_expect(&store, &w1, 1000, Some(t1)).await;
    fail(&store, &w1, t1, 1010).await;
    // Late words of w1: the log only; the task stays soft-failed and free.
    let mut late = worker_update(t1, &w1, None, "uploading the log", at(1015));
    late.log = "last line\n".into();
    let outcome = store
        .apply_worker_update(w1.id, late)
        .await
        .expect("late words");
    assert!(outcome.is_accepted(), "{outcome:?}");
    let after = task(&store, t1).await;
    assert_eq!(after.status, TaskStatus::SoftFailed);
    assert_eq!(after.worker_id, None);
    claim_expect(&store, &w1, 1020, Some(t2)).await;
    claim_expect(&store, &w2, 1030, Some(t1)).await;
}

/// Re-queueing a task, or its job, clears its failure record: the worker that failed it
/// may run it again. Re-queueing the job also clears its blocklist.
pub async fn requeue_clears_the_failure_record(store: Arc<dyn Store>) {
    store.set_retry_policy(RetryPolicy::standalone(1, 1));
    let (j, tasks) = test_job(nth_id(0x71, 4), 0x75, 20);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let t = tasks[0].id;
    let w1 = awake(&store, 1, "w1", &["sleep"]).await;
    let _w2 = awake(&store, 2, "w2", &["sleep"]).await;
    claim_expect(&store, &w1, 1000, Some(t)).await;
    fail(&store, &w1, t, 1010).await;
    assert_eq!(
        task(&store, t).await.status,
        TaskStatus::Failed,
        "fail_after 1"
    );
    assert_eq!(store.task_failures(t).await.expect("failures").len(), 1);
    assert_eq!(store.job_blocklist(j.id).await.expect("blocklist").len(), 1);
    store
        .task_action(t, TaskAction::Requeue, at(1020))
        .await
        .expect("requeue task");
    assert!(store.task_failures(t).await.expect("failures").is_empty());
    assert_eq!(
        store.job_blocklist(j.id).await.expect("blocklist").len(),
        1,
        "a task's re-queue keeps its job's blocklist"
    );
    // Fail it again with w2 (w1 is blocklisted), then re-queue the whole job.
    let w2 = test_worker(nth_id(0x77, 2), "w2", &["sleep"]);
    claim_expect(&store, &w1, 1025, None).await;
    claim_expect(&store, &w2, 1030, Some(t)).await;
    fail(&store, &w2, t, 1040).await;
    consume(&store, at(1050)).await;
    store
        .job_action(j.id, JobAction::Requeue, at(1060))
        .await
        .expect("requeue job");
    assert!(store.task_failures(t).await.expect("failures").is_empty());
    assert!(store
        .job_blocklist(j.id)
        .await
        .expect("blocklist")
        .is_empty());
    assert_eq!(store.job_status_reason(j.id).await.expect("reason"), None);
    claim_expect(&store, &w1, 1070, Some(t)).await;
}

/// A worker that failed `blocklist_threshold` tasks of one type in one job gets none of
/// that job's tasks of that type any more (other types and other jobs still); the entry
/// is listed with who and when, and removing it lets the worker back in.
pub async fn blocklist_after_threshold_and_unblock(store: Arc<dyn Store>) {
    store.set_retry_policy(RetryPolicy::standalone(5, 2));
    let (j, tasks) = test_job(nth_id(0x71, 5), 0x76, 4);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let (other, other_tasks) = test_job(nth_id(0x71, 6), 0x78, 1);
    let mut other = other;
    other.priority = 10;
    let mut other_tasks = other_tasks;
    other_tasks[0].job_priority = 10;
    store
        .insert_job(&other, &other_tasks)
        .await
        .expect("insert other job");
    let w1 = awake(&store, 1, "w1", &["sleep"]).await;
    let _w2 = awake(&store, 2, "w2", &["sleep"]).await;
    claim_expect(&store, &w1, 1000, Some(tasks[0].id)).await;
    fail(&store, &w1, tasks[0].id, 1010).await;
    assert!(store.job_blocklist(j.id).await.expect("list").is_empty());
    claim_expect(&store, &w1, 1020, Some(tasks[1].id)).await;
    fail(&store, &w1, tasks[1].id, 1030).await;
    let list = store.job_blocklist(j.id).await.expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (list[0].job, list[0].task_type.as_str(), list[0].worker_id),
        (j.id, "sleep", w1.id)
    );
    assert_eq!(list[0].worker, "w1");
    assert_eq!(list[0].added, at(1030));
    // w1 skips the job's two queued tasks and gets the other job's task.
    claim_expect(&store, &w1, 1040, Some(other_tasks[0].id)).await;
    claim_expect(&store, &w1, 1050, Some(other_tasks[0].id)).await;
    assert_eq!(
        store
            .unblock_worker(j.id, w1.id, Some("render"))
            .await
            .expect("unblock other type"),
        0,
        "not blocklisted for that type"
    );
    assert_eq!(
        store
            .unblock_worker(j.id, w1.id, Some("sleep"))
            .await
            .expect("unblock"),
        1
    );
    assert!(store.job_blocklist(j.id).await.expect("list").is_empty());
    // Done with the other job's task; now w1 gets the job's tasks again.
    let mut done = worker_update(
        other_tasks[0].id,
        &w1,
        Some(TaskStatus::Completed),
        "",
        at(1060),
    );
    done.log.clear();
    store
        .apply_worker_update(w1.id, done)
        .await
        .expect("complete");
    claim_expect(&store, &w1, 1070, Some(tasks[2].id)).await;
}

/// `w` reports `completed` for `task` (no log lines).
async fn complete(store: &Arc<dyn Store>, w: &Worker, task: ObjectId, at_ms: i64) {
    let mut done = worker_update(task, w, Some(TaskStatus::Completed), "", at(at_ms));
    done.log.clear();
    let outcome = store
        .apply_worker_update(w.id, done)
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        WorkerUpdateOutcome::Applied,
        "completed from {}",
        w.nickname
    );
}

/// A worker blocklisted for job A gets job B's task of the same job priority although
/// A's tasks come before it in the queue's order (and one of A's after it), then the task
/// of a job of lower priority before the rest of A's; a job of higher priority whose task
/// it cannot run does not stop it. A worker that is not blocklisted gets A's tasks in
/// order.
pub async fn blocklisted_worker_gets_the_next_jobs_task(store: Arc<dyn Store>) {
    store.set_retry_policy(RetryPolicy::standalone(5, 1));
    let (a, mut a_tasks) = test_job(nth_id(0x71, 20), 0x7a, 3);
    a_tasks[0].priority = 5;
    a_tasks[1].priority = 5;
    a_tasks[2].priority = 0;
    let (b, mut b_tasks) = test_job(nth_id(0x71, 21), 0x7b, 1);
    b_tasks[0].priority = 3;
    let (mut c, mut c_tasks) = test_job(nth_id(0x71, 22), 0x7c, 1);
    c.priority = 40;
    c_tasks[0].job_priority = 40;
    let (mut d, mut d_tasks) = test_job(nth_id(0x71, 23), 0x7d, 1);
    d.priority = 60;
    d_tasks[0].job_priority = 60;
    d_tasks[0].task_type = "blender".into();
    for (job, tasks) in [
        (&a, &a_tasks),
        (&b, &b_tasks),
        (&c, &c_tasks),
        (&d, &d_tasks),
    ] {
        store.insert_job(job, tasks).await.expect("insert job");
    }
    let w1 = awake(&store, 1, "w1", &["sleep"]).await;
    let w2 = awake(&store, 2, "w2", &["sleep"]).await;
    claim_expect(&store, &w1, 1000, Some(a_tasks[0].id)).await;
    fail(&store, &w1, a_tasks[0].id, 1010).await;
    let list = store.job_blocklist(a.id).await.expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    // The queue for w1: A0 (failed by w1), A1 (blocklisted), B0, A2, then C0.
    claim_expect(&store, &w1, 1020, Some(b_tasks[0].id)).await;
    claim_expect(&store, &w2, 1030, Some(a_tasks[0].id)).await;
    complete(&store, &w1, b_tasks[0].id, 1040).await;
    claim_expect(&store, &w1, 1050, Some(c_tasks[0].id)).await;
    complete(&store, &w1, c_tasks[0].id, 1060).await;
    claim_expect(&store, &w1, 1070, None).await;
    complete(&store, &w2, a_tasks[0].id, 1080).await;
    claim_expect(&store, &w2, 1090, Some(a_tasks[1].id)).await;
}

/// Blocklisted for job A's type `sleep` only, a worker still gets A's `blender` task,
/// although A's `sleep` tasks come first in the queue's order.
pub async fn blocklisted_for_one_type_gets_the_jobs_other_type(store: Arc<dyn Store>) {
    store.set_retry_policy(RetryPolicy::standalone(5, 1));
    let (a, mut tasks) = test_job(nth_id(0x71, 24), 0x7e, 4);
    tasks[3].task_type = "blender".into();
    store.insert_job(&a, &tasks).await.expect("insert job");
    let w1 = awake(&store, 1, "w1", &["sleep", "blender"]).await;
    let w2 = awake(&store, 2, "w2", &["sleep"]).await;
    claim_expect(&store, &w1, 1000, Some(tasks[0].id)).await;
    fail(&store, &w1, tasks[0].id, 1010).await;
    let list = store.job_blocklist(a.id).await.expect("list");
    assert_eq!(
        list.iter()
            .map(|e| (e.task_type.as_str(), e.worker_id))
            .collect::<Vec<_>>(),
        vec![("sleep", w1.id)]
    );
    claim_expect(&store, &w1, 1020, Some(tasks[3].id)).await;
    claim_expect(&store, &w2, 1030, Some(tasks[0].id)).await;
}

/// When the last worker that supports a task's type fails it, nobody is left: the task
/// fails for good at once, and its job is marked with a reason that says so; the consumer
/// then fails the job (a job status change like any other: the `job-status` webhook is
/// sent from it) and cancels the rest. A worker of another type does not count.
pub async fn no_worker_left_fails_the_job(store: Arc<dyn Store>) {
    store.set_retry_policy(RetryPolicy::standalone(3, 1));
    let (j, tasks) = test_job(nth_id(0x71, 7), 0x79, 3);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let w1 = awake(&store, 1, "w1", &["sleep"]).await;
    let w2 = awake(&store, 2, "w2", &["sleep"]).await;
    let _blender = awake(&store, 3, "b", &["blender"]).await;
    claim_expect(&store, &w1, 1000, Some(tasks[0].id)).await;
    fail(&store, &w1, tasks[0].id, 1010).await;
    assert_eq!(
        task(&store, tasks[0].id).await.status,
        TaskStatus::SoftFailed,
        "w2 is left"
    );
    assert_eq!(job(&store, j.id).await.status, JobStatus::Queued);
    assert_eq!(store.job_status_reason(j.id).await.expect("reason"), None);
    claim_expect(&store, &w2, 1020, Some(tasks[0].id)).await;
    fail(&store, &w2, tasks[0].id, 1030).await;
    let t = task(&store, tasks[0].id).await;
    assert_eq!(t.status, TaskStatus::Failed, "nobody is left");
    assert!(
        t.activity
            .contains("no worker that supports task type 'sleep' is left for this job"),
        "{}",
        t.activity
    );
    let reason = store
        .job_status_reason(j.id)
        .await
        .expect("reason")
        .expect("a stranded job says why");
    assert!(
        reason.contains("no worker that supports task type 'sleep' is left for this job"),
        "{reason}"
    );
    // The consumer fails the job: 1 failed task of 3 would not, by the share rule.
    let changes = consume(&store, at(1040)).await;
    let last = changes.last().expect("a job status change");
    assert_eq!(
        (last.job, &last.to),
        (j.id, &JobStatus::Failed),
        "{changes:?}"
    );
    assert_eq!(job(&store, j.id).await.status, JobStatus::Failed);
    for other in &tasks[1..] {
        assert_eq!(task(&store, other.id).await.status, TaskStatus::Canceled);
    }
    assert!(
        consume(&store, at(1050)).await.is_empty(),
        "consumed twice, changed once"
    );
}

/// A worker's status does not make it unavailable: a task failed by every awake worker
/// waits for an asleep, offline or timed-out one (it may come back). Forgetting the last
/// such worker strands it: the maintenance check fails it and marks its job, once, and
/// the consumer fails the job.
pub async fn maintenance_fails_stranded_tasks(store: Arc<dyn Store>) {
    store.set_retry_policy(RetryPolicy::standalone(3, 3));
    let (j, tasks) = test_job(nth_id(0x71, 8), 0x7a, 2);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let w1 = awake(&store, 1, "w1", &["sleep"]).await;
    let w2 = awake(&store, 2, "w2", &["sleep"]).await;
    let mut zz = test_worker(nth_id(0x77, 3), "zz", &["sleep"]);
    zz.status = worker_status::ASLEEP.into();
    add_worker(&store, &zz).await;
    claim_expect(&store, &w1, 1000, Some(tasks[0].id)).await;
    fail(&store, &w1, tasks[0].id, 1010).await;
    claim_expect(&store, &w2, 1020, Some(tasks[0].id)).await;
    fail(&store, &w2, tasks[0].id, 1030).await;
    assert_eq!(
        task(&store, tasks[0].id).await.status,
        TaskStatus::SoftFailed,
        "the asleep worker may still take it"
    );
    assert!(store
        .fail_stranded_tasks(at(1040))
        .await
        .expect("check")
        .is_empty());
    // The awake workers go silent: still somebody (they may come back).
    let gone = store
        .time_out_workers(at(1_000_000))
        .await
        .expect("timeout");
    assert_eq!(gone.len(), 2);
    assert!(store
        .fail_stranded_tasks(at(1050))
        .await
        .expect("check")
        .is_empty());
    assert_eq!(
        task(&store, tasks[0].id).await.status,
        TaskStatus::SoftFailed
    );
    // The asleep worker is forgotten: nobody is left who has not failed it.
    store.forget_worker(zz.id, at(1060)).await.expect("forget");
    let stranded = store.fail_stranded_tasks(at(1070)).await.expect("check");
    assert_eq!(stranded.len(), 1, "{stranded:?}");
    assert_eq!((stranded[0].task_id, stranded[0].job), (tasks[0].id, j.id));
    assert_eq!(task(&store, tasks[0].id).await.status, TaskStatus::Failed);
    assert!(store
        .job_status_reason(j.id)
        .await
        .expect("reason")
        .is_some_and(|r| r.contains("(2 support it; 2 failed the task, 0 are blocklisted")));
    consume(&store, at(1080)).await;
    assert_eq!(job(&store, j.id).await.status, JobStatus::Failed);
    assert_eq!(task(&store, tasks[1].id).await.status, TaskStatus::Canceled);
    assert!(store
        .fail_stranded_tasks(at(1090))
        .await
        .expect("check again")
        .is_empty());
}

/// A job whose tag no known worker carries fails at the maintenance check with a reason
/// that says how to fix it, even though none of its tasks ever failed; a tagged worker
/// that is asleep keeps it waiting, and re-queueing after tagging a worker runs it.
pub async fn tagged_job_without_worker_fails(store: Arc<dyn Store>) {
    use crate::tags::TagChange;
    store.set_retry_policy(RetryPolicy::standalone(3, 3));
    let (mut j, mut tasks) = test_job(nth_id(0x71, 9), 0x7b, 2);
    j.worker_tag = Some("gpu".into());
    for t in &mut tasks {
        t.worker_tag = Some("gpu".into());
    }
    store.insert_job(&j, &tasks).await.expect("insert job");
    let (plain, untagged_tasks) = test_job(nth_id(0x71, 10), 0x7c, 1);
    store
        .insert_job(&plain, &untagged_tasks)
        .await
        .expect("insert untagged job");
    let cpu = awake(&store, 1, "cpu", &["sleep"]).await;
    let mut gpu = test_worker(nth_id(0x77, 2), "gpu", &["sleep"]);
    gpu.status = worker_status::ASLEEP.into();
    add_worker(&store, &gpu).await;
    let gpu_tag = TagChange::new(&["gpu".to_string()], &[]).expect("a valid change");
    store
        .tag_workers(&[gpu.id], &gpu_tag)
        .await
        .expect("tag the asleep worker");
    assert!(
        store
            .fail_stranded_tasks(at(1000))
            .await
            .expect("check")
            .is_empty(),
        "an asleep worker with the tag keeps the job waiting"
    );
    // The tag is taken off: nobody has it any more.
    let untag = TagChange::new(&[], &["gpu".to_string()]).expect("a valid change");
    store.tag_workers(&[gpu.id], &untag).await.expect("untag");
    let stranded = store.fail_stranded_tasks(at(1010)).await.expect("check");
    assert_eq!(stranded.len(), 1, "one per job: {stranded:?}");
    assert_eq!(stranded[0].job, j.id);
    assert!(
        stranded[0].reason.starts_with(
            "no worker has tag 'gpu': tag a worker with `flamenco worker tag WORKER --add gpu`"
        ),
        "{}",
        stranded[0].reason
    );
    let changes = consume(&store, at(1020)).await;
    assert!(
        changes
            .iter()
            .any(|c| c.job == j.id && c.to == JobStatus::Failed),
        "{changes:?}"
    );
    for t in &tasks {
        assert!(task(&store, t.id).await.status.is_final());
    }
    assert_eq!(
        store.job_status_reason(j.id).await.expect("reason"),
        Some(stranded[0].reason.clone())
    );
    // The untagged job is left alone and still goes to the untagged worker.
    assert_eq!(job(&store, plain.id).await.status, JobStatus::Queued);
    // Tag a worker, re-queue the job: it runs.
    store.tag_workers(&[cpu.id], &gpu_tag).await.expect("tag");
    store
        .job_action(j.id, JobAction::Requeue, at(1030))
        .await
        .expect("requeue");
    assert_eq!(store.job_status_reason(j.id).await.expect("reason"), None);
    assert!(store
        .fail_stranded_tasks(at(1040))
        .await
        .expect("check")
        .is_empty());
    let cpu = super::worker(&store, cpu.id).await;
    claim_expect(&store, &cpu, 1050, Some(tasks[0].id)).await;
}

/// A task whose worker went silent (the Manager's active-task timeout) goes through the
/// same retry rule as a worker's own `failed`: it counts as a failure of that worker, the
/// task is `soft-failed` (no worker, runnable by another) until the limit of distinct
/// workers, then failed for good; the silent worker is not given it again, and its late
/// words change nothing.
pub async fn timed_out_tasks_are_retried(store: Arc<dyn Store>) {
    store.set_retry_policy(RetryPolicy::standalone(2, 100));
    let (j, tasks) = test_job(nth_id(0x71, 11), 0x7d, 2);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let (t1, t2) = (tasks[0].id, tasks[1].id);
    let w1 = awake(&store, 1, "w1", &["sleep"]).await;
    let w2 = awake(&store, 2, "w2", &["sleep"]).await;
    claim_expect(&store, &w1, 1000, Some(t1)).await;
    let failed = store
        .fail_timed_out_tasks(at(5000), at(6000))
        .await
        .expect("timeouts");
    assert_eq!(failed, vec![t1]);
    let now = task(&store, t1).await;
    assert_eq!(now.status, TaskStatus::SoftFailed, "1 of 2 workers");
    assert_eq!(now.worker_id, None, "a soft-failed task has no worker");
    assert!(
        now.activity.starts_with("Task timed out on worker")
            && now
                .activity
                .ends_with("(1 of 2 workers); re-queued for another worker."),
        "{}",
        now.activity
    );
    let record = store.task_failures(t1).await.expect("failures");
    assert_eq!(record.len(), 1, "{record:?}");
    assert_eq!((record[0].worker_id, record[0].at), (w1.id, at(6000)));
    let last = outbox(&store).await.pop().expect("queued update");
    assert_eq!(
        (last.task_id, last.task_status),
        (t1, Some(TaskStatus::SoftFailed))
    );
    assert_eq!(
        super::worker(&store, w1.id).await.status,
        worker_status::TIMEOUT
    );
    // The silent worker comes back: its late words are kept but change nothing, and it
    // gets the job's other task, not this one.
    let late = store
        .apply_worker_update(
            w1.id,
            worker_update(t1, &w1, Some(TaskStatus::Active), "still here", at(6010)),
        )
        .await
        .expect("late words");
    assert!(late.is_accepted(), "{late:?}");
    assert_eq!(task(&store, t1).await.status, TaskStatus::SoftFailed);
    claim_expect(&store, &w1, 6020, Some(t2)).await;
    // Another worker takes it and goes silent too: 2 of 2, failed for good.
    claim_expect(&store, &w2, 6030, Some(t1)).await;
    let failed = store
        .fail_timed_out_tasks(at(9000), at(10_000))
        .await
        .expect("timeouts");
    assert!(failed.contains(&t1), "{failed:?}");
    let now = task(&store, t1).await;
    assert_eq!(now.status, TaskStatus::Failed, "2 of 2 workers");
    assert!(
        now.activity.ends_with("failed for good."),
        "{}",
        now.activity
    );
    assert_eq!(store.task_failures(t1).await.expect("failures").len(), 2);
    // Re-queueing clears the record, as for any failure.
    store
        .task_action(t1, TaskAction::Requeue, at(10_010))
        .await
        .expect("requeue");
    assert!(store.task_failures(t1).await.expect("failures").is_empty());
}

/// Without retries (upstream mode, v2), a timed-out task fails at once and records
/// nothing.
pub async fn timed_out_tasks_fail_without_retries(store: Arc<dyn Store>) {
    let (j, tasks) = test_job(nth_id(0x71, 12), 0x7e, 1);
    store.insert_job(&j, &tasks).await.expect("insert job");
    let w1 = awake(&store, 1, "w1", &["sleep"]).await;
    claim_expect(&store, &w1, 1000, Some(tasks[0].id)).await;
    store
        .fail_timed_out_tasks(at(5000), at(6000))
        .await
        .expect("timeouts");
    let now = task(&store, tasks[0].id).await;
    assert_eq!(now.status, TaskStatus::Failed);
    assert_eq!(
        now.activity,
        format!("Task timed out on worker {}", w1.identifier())
    );
    assert!(store
        .task_failures(tasks[0].id)
        .await
        .expect("failures")
        .is_empty());
}
