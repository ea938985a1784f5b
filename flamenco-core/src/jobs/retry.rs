//! Retries of failed tasks and per-job blocklists in standalone mode (issue 16, items 1
//! and 2): pure rules, called by every store backend inside the operation that applies a
//! worker's `failed`, so that all backends decide the same way.
//!
//! A task that fails on a worker is kept runnable as `soft-failed` (the 2019 Server status,
//! spec/server-protocol.md §6) and handed to another worker, until it has failed on
//! `task_fail_after_softfail_count` distinct workers; only then it is `failed` for good
//! and its job follows ([`super::status::job_status_after_task_change`]). Each failure is
//! recorded ([`TaskFailure`]): which worker and when. A worker in the record is not given
//! the task again ([`excluded_workers`]). Re-queueing the task or its job clears the record
//! ([`cleared_on_requeue`]).
//!
//! A worker that failed `blocklist_threshold` tasks of one task type in one job is
//! blocklisted for that job and type ([`reaches_blocklist`], [`BlocklistEntry`]): the claim
//! no longer gives it those tasks.
//!
//! "No worker left" ([`no_worker_left`]): a task no known worker may ever take — none
//! supports its type, carries its job's tag and is outside its failure record and its
//! job's blocklist; a worker's status does not matter, only forgetting it does — fails for
//! good, and the store marks its job with the reason (`status_reason`); the consumer then
//! fails the job ([`job_status_after_task_change`]), with the `job-status` webhook of any
//! job status change. Checked when a failure is applied and periodically by the
//! maintenance loop ([`stranded_tasks`]: tasks with a failure record, of a blocklisted job
//! and type, or of a job with a tag).
//!
//! Upstream mode keeps v2's behaviour (a `failed` from a worker is `failed`): the Flamenco
//! Server 2.0.4 does not know `soft-failed` (server-protocol.md §4.1), so it is never
//! reported there ([`RetryPolicy::enabled`] is false, [`status_after_failure`] with
//! `standalone == false`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{JobStatus, ObjectId, TaskStatus, TaskUpdate, Worker};
use crate::updates::iso_log_time;

/// The default of `task_fail_after_softfail_count`: a task fails for good once it failed
/// on this many distinct workers (Flamenco 2.4's default).
pub const DEFAULT_TASK_FAIL_AFTER_SOFTFAIL_COUNT: u32 = 3;

/// The default of `blocklist_threshold`: a worker that failed this many tasks of one type
/// in one job is blocklisted for that job and type (Flamenco 3's default).
pub const DEFAULT_BLOCKLIST_THRESHOLD: u32 = 3;

/// How a store applies a worker's `failed` (set by the Manager from its configuration; see
/// `RetryStore::set_retry_policy`). The default is v2's: `enabled` false.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries and blocklists are in effect (standalone mode). When false a worker's
    /// `failed` fails the task at once and nothing is recorded (upstream mode, v2).
    pub enabled: bool,
    /// `task_fail_after_softfail_count` (at least 1).
    pub fail_after: u32,
    /// `blocklist_threshold` (at least 1).
    pub blocklist_threshold: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            enabled: false,
            fail_after: DEFAULT_TASK_FAIL_AFTER_SOFTFAIL_COUNT,
            blocklist_threshold: DEFAULT_BLOCKLIST_THRESHOLD,
        }
    }
}

impl RetryPolicy {
    /// Retries in effect with these limits (standalone mode).
    pub fn standalone(fail_after: u32, blocklist_threshold: u32) -> RetryPolicy {
        RetryPolicy {
            enabled: true,
            fail_after: fail_after.max(1),
            blocklist_threshold: blocklist_threshold.max(1),
        }
    }

    /// The policy of a Manager with this configuration: in effect in standalone mode only.
    pub fn from_config(config: &crate::config::Config) -> RetryPolicy {
        RetryPolicy {
            enabled: !config.is_upstream(),
            ..RetryPolicy::standalone(
                config.task_fail_after_softfail_count,
                config.blocklist_threshold,
            )
        }
    }
}

/// One entry of a job's blocklist: this worker gets none of the job's tasks of this type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlocklistEntry {
    pub job: ObjectId,
    pub task_type: String,
    pub worker_id: ObjectId,
    /// The worker's nickname when it was blocklisted, for people; may be empty.
    pub worker: String,
    /// When it was blocklisted.
    pub added: DateTime<Utc>,
}

/// Is a worker that has now failed `failed_tasks` distinct tasks of one type in one job
/// blocklisted for that job and type?
pub fn reaches_blocklist(failed_tasks: u64, threshold: u32) -> bool {
    failed_tasks >= u64::from(threshold.max(1))
}

/// May `worker` ever take a task of `task_type` whose job requires `worker_tag`, given
/// the task's failure record `failed_by` and its job's blocklist `blocked` for that type?
/// The worker's status does not matter (docs/jobs.md, "No worker left"): an asleep,
/// offline or timed-out worker may come back; only a forgotten one (no longer stored)
/// will not.
pub fn may_ever_take(
    worker: &Worker,
    task_type: &str,
    worker_tag: Option<&str>,
    failed_by: &[ObjectId],
    blocked: &[ObjectId],
) -> bool {
    worker.supported_task_types.iter().any(|t| t == task_type)
        && worker_tag.is_none_or(|tag| worker.tags.iter().any(|t| t == tag))
        && !failed_by.contains(&worker.id)
        && !blocked.contains(&worker.id)
}

/// Why a task cannot run anywhere, or `None` when some worker can still take it: the "no
/// worker left" rule (docs/jobs.md). `workers` are every known worker, whatever their
/// status; a task can run when one of them supports `task_type`, carries `worker_tag`
/// (its job's tag, if any) and is neither in `failed_by` (the task's failure record) nor
/// in `blocked` (its job's blocklist for that type). The text is the job's failure reason
/// and says what to do.
pub fn no_worker_left(
    task_type: &str,
    worker_tag: Option<&str>,
    failed_by: &[ObjectId],
    blocked: &[ObjectId],
    workers: &[Worker],
) -> Option<String> {
    if workers
        .iter()
        .any(|w| may_ever_take(w, task_type, worker_tag, failed_by, blocked))
    {
        return None;
    }
    let tagged: Vec<&Worker> = workers
        .iter()
        .filter(|w| worker_tag.is_none_or(|tag| w.tags.iter().any(|t| t == tag)))
        .collect();
    if let Some(tag) = worker_tag {
        if tagged.is_empty() {
            return Some(format!(
                "no worker has tag '{tag}': tag a worker with `flamenco worker tag WORKER \
                 --add {tag}` and re-queue the job"
            ));
        }
    }
    let with_tag = worker_tag
        .map(|tag| format!(" with tag '{tag}'"))
        .unwrap_or_default();
    let able: Vec<&&Worker> = tagged
        .iter()
        .filter(|w| w.supported_task_types.iter().any(|t| t == task_type))
        .collect();
    if able.is_empty() {
        return Some(format!(
            "no worker{with_tag} supports task type '{task_type}' ({} worker(s){with_tag} are \
             known); start a worker that supports it{}, then re-queue the job",
            tagged.len(),
            worker_tag
                .map(|tag| format!(" and tag it with `flamenco worker tag WORKER --add {tag}`"))
                .unwrap_or_default(),
        ));
    }
    let failed = able.iter().filter(|w| failed_by.contains(&w.id)).count();
    let blocklisted = able
        .iter()
        .filter(|w| !failed_by.contains(&w.id) && blocked.contains(&w.id))
        .count();
    Some(format!(
        "no worker{with_tag} that supports task type '{task_type}' is left for this job \
         ({} support it; {failed} failed the task, {blocklisted} are blocklisted for this \
         job); fix the workers, or take one off the blocklist (`flamenco job unblock`), \
         then re-queue the job",
        able.len(),
    ))
}

/// A schedulable task whose candidates are narrowed (it has a failure record, or its job
/// has a blocklist for its type): what the "no worker left" check needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarrowedTask {
    pub task_id: ObjectId,
    pub job: ObjectId,
    pub task_type: String,
    /// Its job's `worker_tag`, copied onto it: only workers with this tag may take it.
    pub worker_tag: Option<String>,
    /// [`excluded_workers`] of its failure record.
    pub failed_by: Vec<ObjectId>,
}

/// What a task asks of a worker, besides not being in its failure record or its job's
/// blocklist: its type, and its job's tag if the job has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskNeeds<'a> {
    pub task_type: &'a str,
    pub worker_tag: Option<&'a str>,
}

/// A task that no worker can take, and the reason its job fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stranded {
    pub task_id: ObjectId,
    pub job: ObjectId,
    pub reason: String,
}

/// Of `tasks`, those no worker can take ([`no_worker_left`]), at most one per job (the
/// job fails with the first one's reason). `blocked` gives a job's blocklist for a type.
pub fn stranded_tasks(
    tasks: &[NarrowedTask],
    blocked: impl Fn(ObjectId, &str) -> Vec<ObjectId>,
    workers: &[Worker],
) -> Vec<Stranded> {
    let mut out: Vec<Stranded> = Vec::new();
    for t in tasks {
        if out.iter().any(|s| s.job == t.job) {
            continue;
        }
        if let Some(reason) = no_worker_left(
            &t.task_type,
            t.worker_tag.as_deref(),
            &t.failed_by,
            &blocked(t.job, &t.task_type),
            workers,
        ) {
            out.push(Stranded {
                task_id: t.task_id,
                job: t.job,
                reason,
            });
        }
    }
    out
}

/// The job status the standalone consumer derives from a task's change, with the "no
/// worker left" rule: a job the Manager found stranded (its `status_reason` is set, in the
/// same operation that failed the task) fails with that task's `failed`, whatever share of
/// its tasks failed; otherwise [`super::status::job_status_after_task_change`]. So a
/// stranded job's failure is one more job status change made by the consumer, with its
/// cascade, its `job-status` webhook and its log line like any other.
pub fn job_status_after_task_change(
    job: &JobStatus,
    task: &TaskStatus,
    counts: &crate::model::TaskCounts,
    stranded: bool,
) -> Option<JobStatus> {
    if stranded
        && *task == TaskStatus::Failed
        && matches!(job, JobStatus::Queued | JobStatus::Active)
    {
        return Some(JobStatus::Failed);
    }
    super::status::job_status_after_task_change(job, task, counts)
}

/// The activity of a task failed for good because no worker is left to take it.
pub fn stranded_activity(reason: &str) -> String {
    format!("Failed: {reason}.")
}

/// What a worker's `failed` does to a task in standalone mode: the decision every backend
/// applies in the operation that stores the failure ([`decide_failure`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureOutcome {
    /// `soft-failed` (runnable again, for another worker) or `failed` for good.
    pub status: TaskStatus,
    /// The task's activity (and the queued update's); empty: the worker's own stays
    /// (`task_fail_after_softfail_count` 1, failed for good at once as in v2).
    pub activity: String,
    /// Add the worker to the job's blocklist for the task's type.
    pub blocklist: bool,
    /// No worker is left for the task (or, after this blocklisting, for the job's tasks of
    /// its type): the job fails with this reason.
    pub stranded: Option<String>,
}

/// Decide a worker's `failed` (standalone mode, `policy.enabled`). `failures` is the
/// task's record *including* this failure; `worker_failed_tasks` how many distinct tasks of
/// this type in this job the worker has failed, this one included; `blocked` the job's
/// blocklist for the type before this failure; `workers` every known worker.
pub fn decide_failure(
    policy: &RetryPolicy,
    failures: &[TaskFailure],
    needs: TaskNeeds<'_>,
    worker_id: ObjectId,
    worker_failed_tasks: u64,
    blocked: &[ObjectId],
    workers: &[Worker],
) -> FailureOutcome {
    let blocklist = reaches_blocklist(worker_failed_tasks, policy.blocklist_threshold)
        && !blocked.contains(&worker_id);
    let mut blocked = blocked.to_vec();
    if blocklist {
        blocked.push(worker_id);
    }
    let mut status = status_after_failure(failures, policy.fail_after, true);
    let mut activity = failure_activity(failures, policy.fail_after, &status);
    let mut stranded = None;
    if status == TaskStatus::SoftFailed {
        stranded = no_worker_left(
            needs.task_type,
            needs.worker_tag,
            &excluded_workers(failures),
            &blocked,
            workers,
        );
    } else if blocklist {
        // The job's other tasks of this type: is anyone left for them?
        stranded = no_worker_left(needs.task_type, needs.worker_tag, &[], &blocked, workers);
    }
    if let Some(reason) = &stranded {
        status = TaskStatus::Failed;
        activity = format!(
            "Failed on worker {}; {}",
            failures
                .last()
                .map(|f| if f.worker.is_empty() {
                    f.worker_id.to_string()
                } else {
                    f.worker.clone()
                })
                .unwrap_or_default(),
            stranded_activity(reason)
        );
    }
    if policy.fail_after <= 1 && stranded.is_none() {
        // No retries asked for (v2's rule): the worker's own activity stays.
        activity.clear();
    }
    FailureOutcome {
        status,
        activity,
        blocklist,
        stranded,
    }
}

/// The update queued for a worker's `failed` once decided: the worker's update (its log
/// and progress) with the local status and activity, so that the job-status consumer,
/// the webhooks and the task view see what happened (`soft-failed` is not `failed`).
pub fn failure_update(mut update: TaskUpdate, outcome: &FailureOutcome) -> TaskUpdate {
    update.task_status = Some(outcome.status.clone());
    if !outcome.activity.is_empty() {
        update.activity.clone_from(&outcome.activity);
    }
    update
}

/// The Manager-made update of a task whose worker went silent (the active-task timeout,
/// [`crate::updates::timeout_update`]) once the timeout is decided as a failure of that
/// worker with retries in effect ([`decide_failure`], like a worker's own `failed`): its
/// status (`soft-failed` until the limit), and an activity that says both, e.g. "Task
/// timed out on worker w1: Failed on worker w1 (1 of 3 workers); re-queued for another
/// worker." The log line stays the timeout's.
pub fn timeout_failure_update(mut timeout: TaskUpdate, outcome: &FailureOutcome) -> TaskUpdate {
    timeout.task_status = Some(outcome.status.clone());
    if !outcome.activity.is_empty() {
        timeout.activity = format!("{}: {}", timeout.activity, outcome.activity);
    }
    timeout
}

/// The Manager-made update that fails a stranded task for good (the maintenance check).
pub fn stranded_update(task_id: ObjectId, reason: &str, now: DateTime<Utc>) -> TaskUpdate {
    let mut u = TaskUpdate::new(task_id, now);
    u.task_status = Some(TaskStatus::Failed);
    u.activity = stranded_activity(reason);
    u.log = format!("{}: Manager failed this task: {reason}", iso_log_time(now));
    u
}

/// Is an update from `worker_id` to a `soft-failed` task one of the late words of a worker
/// that failed it (its last log lines, sent after its `failed`)? Then its log is kept but
/// its status is not applied and it does not make the worker the task's again.
pub fn is_late_word(status: &TaskStatus, failures: &[TaskFailure], worker_id: ObjectId) -> bool {
    *status == TaskStatus::SoftFailed && failures.iter().any(|f| f.worker_id == worker_id)
}

/// One failed attempt of a task: the worker that reported `failed`, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The failing worker's id.
    pub worker_id: ObjectId,
    /// Its identifier (nickname) at the time, for people; may be empty.
    pub worker: String,
    /// When the Manager received the failure.
    pub at: DateTime<Utc>,
}

/// How many distinct workers appear in `failures`.
pub fn distinct_failed_workers(failures: &[TaskFailure]) -> usize {
    excluded_workers(failures).len()
}

/// The workers that must not be given the task again: each worker in the record, once, in
/// the order of their first failure. The claim excludes them in its one query (`NOT IN` /
/// `$nin` on the task's failed worker ids).
pub fn excluded_workers(failures: &[TaskFailure]) -> Vec<ObjectId> {
    let mut ids: Vec<ObjectId> = Vec::with_capacity(failures.len());
    for f in failures {
        if !ids.contains(&f.worker_id) {
            ids.push(f.worker_id);
        }
    }
    ids
}

/// The record after `failure` is added: every attempt is kept (a worker appears once per
/// attempt it failed; normally once, as it is not given the task again).
pub fn record_failure(failures: &[TaskFailure], failure: TaskFailure) -> Vec<TaskFailure> {
    let mut out = failures.to_vec();
    out.push(failure);
    out
}

/// The task's local status after a worker reported `failed`, with `failures` the record
/// *including* this failure and `fail_after` the configured
/// `task_fail_after_softfail_count` (at least 1; 0 is treated as 1). In upstream mode
/// (`standalone == false`) it is always `failed`, as in v2.
pub fn status_after_failure(
    failures: &[TaskFailure],
    fail_after: u32,
    standalone: bool,
) -> TaskStatus {
    if !standalone {
        return TaskStatus::Failed;
    }
    let limit = usize::try_from(fail_after.max(1)).unwrap_or(usize::MAX);
    if distinct_failed_workers(failures) >= limit {
        TaskStatus::Failed
    } else {
        TaskStatus::SoftFailed
    }
}

/// The activity shown on a task that just soft-failed or failed for good, e.g.
/// "Failed on worker render-03 (2 of 3 workers); re-queued for another worker."
pub fn failure_activity(failures: &[TaskFailure], fail_after: u32, status: &TaskStatus) -> String {
    let who = failures
        .last()
        .map(|f| {
            if f.worker.is_empty() {
                f.worker_id.to_string()
            } else {
                f.worker.clone()
            }
        })
        .unwrap_or_else(|| "an unknown worker".to_string());
    let n = distinct_failed_workers(failures);
    let limit = fail_after.max(1);
    match status {
        TaskStatus::SoftFailed => format!(
            "Failed on worker {who} ({n} of {limit} workers); re-queued for another worker."
        ),
        _ => format!("Failed on worker {who} ({n} of {limit} workers); failed for good."),
    }
}

/// The failure record after the task (or its job) is re-queued by a user: empty, so every
/// worker may run it again and it gets `task_fail_after_softfail_count` fresh attempts.
pub fn cleared_on_requeue(_failures: &[TaskFailure]) -> Vec<TaskFailure> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn id(n: u8) -> ObjectId {
        let mut b = [0u8; 12];
        b[11] = n;
        ObjectId::from_bytes(b)
    }

    fn fail(worker: u8, secs: i64) -> TaskFailure {
        TaskFailure {
            worker_id: id(worker),
            worker: format!("w{worker}"),
            at: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
        }
    }

    #[test]
    fn soft_fails_until_the_limit_of_distinct_workers() {
        let one = record_failure(&[], fail(1, 0));
        assert_eq!(status_after_failure(&one, 3, true), TaskStatus::SoftFailed);
        let two = record_failure(&one, fail(2, 1));
        assert_eq!(status_after_failure(&two, 3, true), TaskStatus::SoftFailed);
        let three = record_failure(&two, fail(3, 2));
        assert_eq!(status_after_failure(&three, 3, true), TaskStatus::Failed);
        assert_eq!(three.len(), 3);
        assert_eq!(three[1].worker_id, id(2));
    }

    #[test]
    fn the_same_worker_twice_counts_once() {
        let twice = record_failure(&record_failure(&[], fail(1, 0)), fail(1, 5));
        assert_eq!(distinct_failed_workers(&twice), 1);
        assert_eq!(excluded_workers(&twice), vec![id(1)]);
        assert_eq!(
            status_after_failure(&twice, 2, true),
            TaskStatus::SoftFailed
        );
        // Both attempts stay in the record, with their times.
        assert_eq!(twice.len(), 2);
    }

    #[test]
    fn a_limit_of_one_fails_at_once_and_zero_is_treated_as_one() {
        let one = record_failure(&[], fail(1, 0));
        assert_eq!(status_after_failure(&one, 1, true), TaskStatus::Failed);
        assert_eq!(status_after_failure(&one, 0, true), TaskStatus::Failed);
    }

    #[test]
    fn upstream_mode_fails_at_once_as_v2() {
        let one = record_failure(&[], fail(1, 0));
        assert_eq!(status_after_failure(&one, 3, false), TaskStatus::Failed);
    }

    #[test]
    fn requeue_clears_the_record() {
        let two = record_failure(&record_failure(&[], fail(1, 0)), fail(2, 1));
        let cleared = cleared_on_requeue(&two);
        assert!(cleared.is_empty());
        assert!(excluded_workers(&cleared).is_empty());
    }

    #[test]
    fn activity_names_the_worker_and_the_count() {
        let one = record_failure(&[], fail(1, 0));
        assert_eq!(
            failure_activity(&one, 3, &TaskStatus::SoftFailed),
            "Failed on worker w1 (1 of 3 workers); re-queued for another worker."
        );
        let mut anon = fail(2, 0);
        anon.worker.clear();
        let two = record_failure(&one, anon);
        let text = failure_activity(&two, 2, &TaskStatus::Failed);
        assert!(text.contains(&id(2).to_string()), "{text}");
        assert!(
            text.ends_with("(2 of 2 workers); failed for good."),
            "{text}"
        );
    }

    fn worker(n: u8, status: &str, types: &[&str]) -> Worker {
        let mut w = crate::store::conformance::test_worker(id(n), &format!("w{n}"), types);
        w.status = status.to_string();
        w
    }

    fn tagged(mut w: Worker, tags: &[&str]) -> Worker {
        w.tags = tags.iter().map(|t| t.to_string()).collect();
        w
    }

    #[test]
    fn no_worker_left_counts_known_workers_of_the_type_outside_both_lists() {
        let ws = vec![
            worker(1, "awake", &["sleep"]),
            worker(2, "awake", &["sleep", "blender"]),
            worker(3, "asleep", &["sleep"]),
            worker(4, "awake", &["ffmpeg"]),
        ];
        assert_eq!(no_worker_left("sleep", None, &[id(1)], &[], &ws), None);
        assert_eq!(no_worker_left("sleep", None, &[], &[id(2)], &ws), None);
        // The asleep worker may be woken: it counts, whatever its status.
        assert_eq!(no_worker_left("sleep", None, &[id(1)], &[id(2)], &ws), None);
        let reason =
            no_worker_left("sleep", None, &[id(1), id(3)], &[id(2)], &ws).expect("nobody left");
        assert!(
            reason.starts_with("no worker that supports task type 'sleep' is left for this job"),
            "{reason}"
        );
        assert!(
            reason.contains("(3 support it; 2 failed the task, 1 are blocklisted"),
            "{reason}"
        );
        assert!(reason.contains("flamenco job unblock"), "{reason}");
        // No worker of the type at all.
        let reason = no_worker_left("cycles", None, &[], &[], &ws).expect("nobody");
        assert!(
            reason.starts_with("no worker supports task type 'cycles' (4 worker(s) are known)"),
            "{reason}"
        );
        // Offline and timed-out workers count too; forgotten ones are not in the list.
        let gone = vec![
            worker(5, "offline", &["sleep"]),
            worker(6, "timeout", &["sleep"]),
        ];
        assert_eq!(no_worker_left("sleep", None, &[id(5)], &[], &gone), None);
        assert!(no_worker_left("sleep", None, &[], &[], &[]).is_some());
    }

    #[test]
    fn no_worker_left_follows_the_jobs_tag() {
        let ws = vec![
            tagged(worker(1, "awake", &["sleep"]), &["cpu"]),
            tagged(worker(2, "asleep", &["blender"]), &["gpu"]),
            tagged(worker(3, "offline", &["sleep"]), &["gpu", "win"]),
        ];
        // Nobody has the tag: the reason says how to fix it.
        let reason = no_worker_left("sleep", Some("mac"), &[], &[], &ws).expect("no tag");
        assert_eq!(
            reason,
            "no worker has tag 'mac': tag a worker with `flamenco worker tag WORKER --add mac` \
             and re-queue the job"
        );
        // Tag matching is exact.
        assert!(no_worker_left("sleep", Some("GPU"), &[], &[], &ws).is_some());
        // An offline worker with the tag and the type keeps the job waiting.
        assert_eq!(no_worker_left("sleep", Some("gpu"), &[], &[], &ws), None);
        assert_eq!(no_worker_left("blender", Some("gpu"), &[], &[], &ws), None);
        // Tagged workers, but none runs the type.
        let reason = no_worker_left("ffmpeg", Some("gpu"), &[], &[], &ws).expect("no type");
        assert!(
            reason.starts_with(
                "no worker with tag 'gpu' supports task type 'ffmpeg' (2 worker(s) with tag 'gpu' are known)"
            ),
            "{reason}"
        );
        assert!(reason.contains("--add gpu"), "{reason}");
        // Every tagged worker of the type failed it or is blocklisted.
        let reason = no_worker_left("sleep", Some("gpu"), &[id(3)], &[], &ws).expect("left");
        assert!(
            reason.starts_with("no worker with tag 'gpu' that supports task type 'sleep'"),
            "{reason}"
        );
        // An untagged worker never takes a tagged job's task; a tagged one takes untagged.
        assert!(no_worker_left("sleep", Some("gpu"), &[], &[id(3)], &ws).is_some());
        assert_eq!(no_worker_left("sleep", None, &[id(1)], &[], &ws), None);
        assert!(may_ever_take(&ws[2], "sleep", None, &[], &[]));
        assert!(!may_ever_take(&ws[0], "sleep", Some("gpu"), &[], &[]));
    }

    #[test]
    fn decide_failure_soft_fails_blocklists_and_strands() {
        let policy = RetryPolicy::standalone(3, 2);
        let ws = vec![
            worker(1, "awake", &["sleep"]),
            worker(2, "awake", &["sleep"]),
        ];
        let one = record_failure(&[], fail(1, 0));
        let sleep = TaskNeeds {
            task_type: "sleep",
            worker_tag: None,
        };
        let d = decide_failure(&policy, &one, sleep, id(1), 1, &[], &ws);
        assert_eq!(d.status, TaskStatus::SoftFailed);
        assert!(!d.blocklist);
        assert_eq!(d.stranded, None);
        // The worker's second failed task of the type in the job: blocklisted; w2 is left.
        let d = decide_failure(&policy, &one, sleep, id(1), 2, &[], &ws);
        assert!(d.blocklist);
        assert_eq!(d.stranded, None);
        // Already blocklisted: no second entry.
        let d = decide_failure(&policy, &one, sleep, id(1), 3, &[id(1)], &ws);
        assert!(!d.blocklist);
        // w2 failed it too: nobody is left, so it fails for good and the job with it.
        let two = record_failure(&one, fail(2, 1));
        let d = decide_failure(&policy, &two, sleep, id(2), 1, &[], &ws);
        assert_eq!(d.status, TaskStatus::Failed);
        assert!(d.stranded.is_some());
        assert!(
            d.activity
                .contains("no worker that supports task type 'sleep' is left"),
            "{}",
            d.activity
        );
        // Failed for good by the count, and the blocklisting leaves the job nobody.
        let policy = RetryPolicy::standalone(1, 1);
        let d = decide_failure(&policy, &one, sleep, id(1), 1, &[id(2)], &ws);
        assert_eq!(d.status, TaskStatus::Failed);
        assert!(d.blocklist);
        assert!(d.stranded.is_some(), "w2 was blocklisted before");
        let update = failure_update(TaskUpdate::new(id(9), Utc::now()), &d);
        assert_eq!(update.task_status, Some(TaskStatus::Failed));
        assert_eq!(update.activity, d.activity);
    }

    #[test]
    fn a_timeout_is_a_failure_of_the_silent_worker() {
        let policy = RetryPolicy::standalone(3, 3);
        let ws = vec![
            worker(1, "timeout", &["sleep"]),
            worker(2, "awake", &["sleep"]),
        ];
        let sleep = TaskNeeds {
            task_type: "sleep",
            worker_tag: None,
        };
        let mut timeout = TaskUpdate::new(id(9), Utc::now());
        timeout.task_status = Some(TaskStatus::Failed);
        timeout.activity = "Task timed out on worker w1".into();
        timeout.log = "timed out".into();
        let one = record_failure(&[], fail(1, 0));
        let d = decide_failure(&policy, &one, sleep, id(1), 1, &[], &ws);
        let u = timeout_failure_update(timeout.clone(), &d);
        assert_eq!(u.task_status, Some(TaskStatus::SoftFailed));
        assert_eq!(
            u.activity,
            "Task timed out on worker w1: Failed on worker w1 (1 of 3 workers); re-queued \
             for another worker."
        );
        assert_eq!(u.log, "timed out");
        // No retries asked for: failed at once, the timeout's own activity.
        let d = decide_failure(
            &RetryPolicy::standalone(1, 3),
            &one,
            sleep,
            id(1),
            1,
            &[],
            &ws,
        );
        let u = timeout_failure_update(timeout, &d);
        assert_eq!(u.task_status, Some(TaskStatus::Failed));
        assert_eq!(u.activity, "Task timed out on worker w1");
    }

    #[test]
    fn stranded_tasks_fail_each_job_once() {
        let ws = vec![worker(1, "awake", &["sleep"])];
        let narrowed = vec![
            NarrowedTask {
                task_id: id(10),
                job: id(20),
                task_type: "sleep".into(),
                worker_tag: None,
                failed_by: vec![id(1)],
            },
            NarrowedTask {
                task_id: id(11),
                job: id(20),
                task_type: "sleep".into(),
                worker_tag: None,
                failed_by: vec![id(1)],
            },
            NarrowedTask {
                task_id: id(12),
                job: id(21),
                task_type: "sleep".into(),
                worker_tag: None,
                failed_by: vec![],
            },
        ];
        let out = stranded_tasks(&narrowed, |_, _| Vec::new(), &ws);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].task_id, out[0].job), (id(10), id(20)));
        let out = stranded_tasks(
            &narrowed,
            |job, _| if job == id(21) { vec![id(1)] } else { vec![] },
            &ws,
        );
        assert_eq!(out.len(), 2);
        // A tagged job's task nobody carries the tag for is stranded without any failure.
        let gpu = NarrowedTask {
            task_id: id(13),
            job: id(22),
            task_type: "sleep".into(),
            worker_tag: Some("gpu".into()),
            failed_by: vec![],
        };
        let out = stranded_tasks(std::slice::from_ref(&gpu), |_, _| Vec::new(), &ws);
        assert_eq!(out.len(), 1);
        assert!(
            out[0].reason.starts_with("no worker has tag 'gpu'"),
            "{out:?}"
        );
        let ws = vec![tagged(worker(1, "offline", &["sleep"]), &["gpu"])];
        assert!(stranded_tasks(&[gpu], |_, _| Vec::new(), &ws).is_empty());
    }

    #[test]
    fn a_stranded_job_fails_with_its_first_failed_task() {
        use crate::model::TaskCounts;
        let mut counts = TaskCounts::default();
        counts.add(&TaskStatus::Queued, 19);
        counts.add(&TaskStatus::Failed, 1);
        // 1 of 20 failed: not enough for the 10 % rule, unless the job is stranded.
        assert_eq!(
            job_status_after_task_change(&JobStatus::Active, &TaskStatus::Failed, &counts, false),
            None
        );
        for job in [JobStatus::Queued, JobStatus::Active] {
            assert_eq!(
                job_status_after_task_change(&job, &TaskStatus::Failed, &counts, true),
                Some(JobStatus::Failed)
            );
        }
        // Finished or canceling jobs keep their rules.
        for job in [
            JobStatus::Failed,
            JobStatus::Canceled,
            JobStatus::CancelRequested,
        ] {
            assert_eq!(
                job_status_after_task_change(&job, &TaskStatus::Failed, &counts, true),
                crate::jobs::status::job_status_after_task_change(
                    &job,
                    &TaskStatus::Failed,
                    &counts
                )
            );
        }
        // Other task statuses follow the ordinary rule.
        assert_eq!(
            job_status_after_task_change(&JobStatus::Queued, &TaskStatus::Active, &counts, true),
            Some(JobStatus::Active)
        );
    }

    #[test]
    fn late_words_and_policy_defaults() {
        let one = record_failure(&[], fail(1, 0));
        assert!(is_late_word(&TaskStatus::SoftFailed, &one, id(1)));
        assert!(!is_late_word(&TaskStatus::SoftFailed, &one, id(2)));
        assert!(!is_late_word(&TaskStatus::Active, &one, id(1)));
        assert!(!RetryPolicy::default().enabled);
        let p = RetryPolicy::from_config(&crate::config::Config::default());
        assert!(p.enabled, "standalone by default");
        assert_eq!((p.fail_after, p.blocklist_threshold), (3, 3));
        assert_eq!(RetryPolicy::standalone(0, 0).blocklist_threshold, 1);
        assert!(reaches_blocklist(3, 3));
        assert!(!reaches_blocklist(2, 3));
        let u = stranded_update(id(3), "nobody", Utc::now());
        assert_eq!(u.task_status, Some(TaskStatus::Failed));
        assert_eq!(u.activity, "Failed: nobody.");
    }

    #[test]
    fn the_record_round_trips_as_json() {
        let rec = record_failure(&[], fail(7, 3));
        let json = serde_json::to_string(&rec).expect("serialises");
        let back: Vec<TaskFailure> = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, rec);
    }
}
