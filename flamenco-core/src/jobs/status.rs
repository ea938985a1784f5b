//! How a job's status follows its tasks, and how a job's status change reaches its tasks:
//! pure functions, called by every store backend inside its operations so that all
//! backends decide the same way.
//!
//! The rules are the Flamenco Server's (server-protocol.md §4.2 and §4.3), with these
//! deliberate differences, all due to two facts: the job-status consumer works through the
//! outbox *after* the fact, and a standalone Manager has no Server to finish what it
//! starts.
//!
//! 1. **The task's current status drives the rule**, not the status an outbox update
//!    carried: an update is an event "this task changed"; by the time it is consumed the
//!    task may have moved on (a duplicate `active` after `completed`), and the counts are
//!    the current ones too. Rules applied to the current state are idempotent, so
//!    consuming an update twice (after a crash) changes nothing.
//! 2. **A `cancel-requested` job only ends**: once none of its tasks is still
//!    `cancel-requested` (or `active`), it becomes `canceled` — or `completed` if every
//!    task completed anyway. A stale `active` does not revive it; a worker that finishes
//!    a task instead of stopping does not leave the job `cancel-requested` for ever (2.0.4
//!    waited for a `canceled` that never came).
//! 3. **`failed` and `canceled` jobs only move when re-queued**: the tasks a failure
//!    cancels report `canceled` later, which in 2.0.4 turned a failed job into a canceled
//!    one.
//! 4. **`claimed-by-manager` tasks are canceled at once** when their job is canceled or
//!    fails: in standalone mode that status means "back in the queue" (a worker signed
//!    off), no worker runs such a task, so nobody would ever confirm a cancel request.
//! 5. **Re-queueing a job that is not `completed` re-queues its `failed` and `canceled`
//!    tasks** and leaves running ones alone (2.0.4 re-queued every unfinished task, taking
//!    active ones away from their workers). A `completed` job re-queues every task, as
//!    2.0.4 did. A `cancel-requested` job cannot be re-queued until it has stopped.
//! 6. **A derived `failed` or `canceled` cascades** to the tasks (the rest of the job is
//!    canceled, §4.3). The Server cascaded `failed` only: a job it derived `canceled` from
//!    one canceled task kept its other tasks queued, and a Manager kept running them under
//!    a canceled job. Here canceling one task (the dashboard's or `flamenco task cancel`)
//!    stops its job; re-queueing the job runs the canceled tasks again. The Server also
//!    cascaded a derived `queued` (a re-queued task of a completed job re-queued every
//!    task); here a job is re-queued by the re-queue action, which cascades itself.

use chrono::{DateTime, Utc};

use crate::model::{JobStatus, ObjectId, TaskCounts, TaskStatus, TaskUpdate};
use crate::updates::iso_log_time;

/// The job's status after one of its tasks changed (§4.2): `task` is the task's status
/// now, `counts` the job's task counts now. `None` when the job keeps its status.
pub fn job_status_after_task_change(
    job: &JobStatus,
    task: &TaskStatus,
    counts: &TaskCounts,
) -> Option<JobStatus> {
    use JobStatus as J;
    use TaskStatus as T;
    let total = counts.total();
    let all_completed = total > 0 && counts.get(&T::Completed) == total;
    let new = match job {
        J::CancelRequested => {
            if counts.get(&T::CancelRequested) > 0 || counts.get(&T::Active) > 0 {
                return None;
            }
            if all_completed {
                J::Completed
            } else {
                J::Canceled
            }
        }
        J::Failed | J::Canceled | J::Other(_) => return None,
        J::Queued | J::Active | J::Completed => match task {
            T::Queued if *job == J::Completed => J::Queued,
            T::Queued => return None,
            T::ClaimedByManager | T::CancelRequested | T::Other(_) => return None,
            T::Canceled if counts.get(&T::CancelRequested) == 0 => J::Canceled,
            T::Canceled => return None,
            T::Failed if counts.get(&T::Failed) * 10 >= total => J::Failed,
            T::Failed if *job == J::Queued => J::Active,
            T::Failed => return None,
            // 2019's `soft-failed` is runnable; the Server treated its job like `active`.
            T::Active | T::SoftFailed => J::Active,
            T::Completed if all_completed => J::Completed,
            T::Completed if *job == J::Queued => J::Active,
            T::Completed => return None,
        },
    };
    (new != *job).then_some(new)
}

/// Does a job that just got `derived` (from [`job_status_after_task_change`]) pass it on
/// to its tasks? `failed` and `canceled` do (difference 6).
pub fn derived_status_cascades(derived: &JobStatus) -> bool {
    matches!(derived, JobStatus::Failed | JobStatus::Canceled)
}

/// The status a task gets when its job goes from `from` to `to` (§4.3, differences 4
/// and 5), or `None` when the task keeps its status.
pub fn task_status_for_job_change(
    from: &JobStatus,
    to: &JobStatus,
    task: &TaskStatus,
) -> Option<TaskStatus> {
    use JobStatus as J;
    use TaskStatus as T;
    match to {
        J::CancelRequested | J::Failed | J::Canceled => match task {
            T::Queued | T::ClaimedByManager | T::SoftFailed => Some(T::Canceled),
            T::Active => Some(T::CancelRequested),
            _ => None,
        },
        J::Queued if *from == J::Completed => match task {
            T::Completed | T::Failed | T::Canceled | T::SoftFailed | T::ClaimedByManager => {
                Some(T::Queued)
            }
            _ => None,
        },
        J::Queued => match task {
            T::Failed | T::Canceled | T::SoftFailed => Some(T::Queued),
            _ => None,
        },
        _ => None,
    }
}

/// The job's status once the cascade to `to` was applied (`counts` after it): a
/// `cancel-requested` job none of whose tasks needed a cancel request is `canceled` at
/// once (§4.3), or `completed` when every task had completed already.
pub fn job_status_after_cascade(to: &JobStatus, counts: &TaskCounts) -> JobStatus {
    if *to == JobStatus::CancelRequested
        && counts.get(&TaskStatus::CancelRequested) == 0
        && counts.get(&TaskStatus::Active) == 0
    {
        let total = counts.total();
        if total > 0 && counts.get(&TaskStatus::Completed) == total {
            return JobStatus::Completed;
        }
        return JobStatus::Canceled;
    }
    to.clone()
}

/// What a user can do to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobAction {
    /// Stop it: queued tasks are canceled, running ones asked to stop (through may-i-run).
    Cancel,
    /// Run its failed and canceled tasks again (every task, for a completed job).
    Requeue,
    /// Remove a finished job and its tasks.
    Delete,
}

impl JobAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobAction::Cancel => "cancel",
            JobAction::Requeue => "requeue",
            JobAction::Delete => "delete",
        }
    }
}

/// What an accepted [`JobAction`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionPlan {
    /// Give the job this status and cascade it to the tasks
    /// ([`task_status_for_job_change`], then [`job_status_after_cascade`]).
    ChangeStatus(JobStatus),
    /// Nothing to do (canceling a job that is being canceled).
    Nothing,
    /// Delete the job and its tasks.
    Delete,
}

/// Decide whether `action` may be done to a job in status `job` whose tasks are counted
/// by `counts`; `Err` says why not (the text is shown to the user).
pub fn plan_action(
    job: &JobStatus,
    action: JobAction,
    counts: &TaskCounts,
) -> Result<ActionPlan, String> {
    use JobStatus as J;
    match (action, job) {
        (JobAction::Cancel, J::Queued | J::Active) => {
            Ok(ActionPlan::ChangeStatus(J::CancelRequested))
        }
        (JobAction::Cancel, J::CancelRequested) => Ok(ActionPlan::Nothing),
        (JobAction::Cancel, other) => Err(format!(
            "the job is {other}; only a queued or active job can be canceled"
        )),
        (JobAction::Requeue, J::CancelRequested) => Err(
            "the job is cancel-requested; wait until its running tasks have stopped \
             (the job becomes canceled), then re-queue it"
                .into(),
        ),
        (JobAction::Requeue, J::Other(s)) => Err(format!(
            "the job has status {s:?}, which this Manager does not know; it cannot be re-queued"
        )),
        (JobAction::Requeue, _) => Ok(ActionPlan::ChangeStatus(J::Queued)),
        (JobAction::Delete, s) if s.is_final() => {
            let running =
                counts.get(&TaskStatus::Active) + counts.get(&TaskStatus::CancelRequested);
            if running > 0 {
                Err(format!(
                    "{running} task(s) of the job are still running; wait until they stopped, \
                     then delete the job"
                ))
            } else {
                Ok(ActionPlan::Delete)
            }
        }
        (JobAction::Delete, other) => Err(format!(
            "the job is {other}; only a finished job (completed, failed or canceled) can be \
             deleted: cancel it first"
        )),
    }
}

/// The Manager-made update that carries a cascade's change of one task to `task_status`,
/// because its job got `job_status`. It goes through the outbox like every other update.
pub fn cascade_update(
    task_id: ObjectId,
    task_status: &TaskStatus,
    job_status: &JobStatus,
    now: DateTime<Utc>,
) -> TaskUpdate {
    let (activity, worker) = match task_status {
        TaskStatus::Queued => (
            "Manager re-queued this task because the job was re-queued.".to_string(),
            "-",
        ),
        TaskStatus::CancelRequested => (
            format!("Manager asked to cancel this task because the job got status '{job_status}'."),
            "",
        ),
        other => (
            format!("Manager set this task {other} because the job got status '{job_status}'."),
            "",
        ),
    };
    let mut u = TaskUpdate::new(task_id, now);
    u.task_status = Some(task_status.clone());
    u.log = format!("{}: {activity}", iso_log_time(now));
    u.activity = activity;
    u.worker = worker.to_string();
    u
}

/// What a user can do to one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskAction {
    /// Stop it: a queued task is canceled, a running one asked to stop (through
    /// may-i-run).
    Cancel,
    /// Run a finished task (failed, canceled or completed) again.
    Requeue,
}

impl TaskAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskAction::Cancel => "cancel",
            TaskAction::Requeue => "requeue",
        }
    }
}

/// Decide what `action` does to a task in status `task` whose job is `job` (`None` for a
/// task without a job): `Ok(Some(status))` is the task's new status, `Ok(None)` nothing
/// to do (canceling a task that is being canceled), `Err` says why not (shown to the
/// user).
pub fn plan_task_action(
    task: &TaskStatus,
    job: Option<&JobStatus>,
    action: TaskAction,
) -> Result<Option<TaskStatus>, String> {
    use TaskStatus as T;
    match (action, task) {
        (TaskAction::Cancel, T::Queued | T::ClaimedByManager | T::SoftFailed) => {
            Ok(Some(T::Canceled))
        }
        (TaskAction::Cancel, T::Active) => Ok(Some(T::CancelRequested)),
        (TaskAction::Cancel, T::CancelRequested) => Ok(None),
        (TaskAction::Cancel, other) => Err(format!(
            "the task is {other}; only a queued or active task can be canceled"
        )),
        (TaskAction::Requeue, _) if job == Some(&JobStatus::CancelRequested) => Err(
            "its job is cancel-requested; wait until the job's running tasks have stopped \
             (the job becomes canceled), then re-queue"
                .into(),
        ),
        (TaskAction::Requeue, T::Failed | T::Canceled | T::Completed | T::SoftFailed) => {
            Ok(Some(T::Queued))
        }
        (TaskAction::Requeue, T::Active | T::CancelRequested) => Err(format!(
            "the task is {task}: a worker is running it; cancel it first and re-queue it \
             once it has stopped"
        )),
        (TaskAction::Requeue, other) => Err(format!(
            "the task is {other}; only a failed, canceled or completed task can be re-queued"
        )),
    }
}

/// The job's status after one of its tasks was re-queued by a user: a finished job
/// (completed, failed, canceled) becomes `queued` again so its re-queued task is run;
/// `None` when the job keeps its status (the consumer follows the task from there).
pub fn job_status_after_task_requeue(job: &JobStatus) -> Option<JobStatus> {
    job.is_final().then_some(JobStatus::Queued)
}

/// The Manager-made update that carries a user's task action (the task's change to
/// `task_status`); it goes through the outbox like every other update.
pub fn task_action_update(
    task_id: ObjectId,
    task_status: &TaskStatus,
    now: DateTime<Utc>,
) -> TaskUpdate {
    let (activity, worker) = match task_status {
        TaskStatus::Queued => (
            "Manager re-queued this task on a user's request.".to_string(),
            "-",
        ),
        TaskStatus::CancelRequested => (
            "Manager asked to cancel this task on a user's request.".to_string(),
            "",
        ),
        other => (
            format!("Manager set this task {other} on a user's request."),
            "",
        ),
    };
    let mut u = TaskUpdate::new(task_id, now);
    u.task_status = Some(task_status.clone());
    u.log = format!("{}: {activity}", iso_log_time(now));
    u.activity = activity;
    u.worker = worker.to_string();
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus as J;
    use TaskStatus as T;

    /// Counts from `(status, n)` pairs.
    fn counts(pairs: &[(TaskStatus, u64)]) -> TaskCounts {
        let mut c = TaskCounts::default();
        for (s, n) in pairs {
            c.add(s, *n);
        }
        c
    }

    /// (task status, its job's status, action, the planned status or a refusal).
    type TaskActionCase<'a> = (T, Option<&'a J>, TaskAction, Result<Option<T>, ()>);

    /// A user's action on one task: what each task status (and its job's) allows.
    #[test]
    fn task_actions_per_status() {
        use TaskAction::{Cancel, Requeue};
        let active_job = Some(&J::Active);
        #[rustfmt::skip]
        let cases: Vec<TaskActionCase> = vec![
            (T::Queued, active_job, Cancel, Ok(Some(T::Canceled))),
            (T::ClaimedByManager, active_job, Cancel, Ok(Some(T::Canceled))),
            (T::SoftFailed, active_job, Cancel, Ok(Some(T::Canceled))),
            (T::Active, active_job, Cancel, Ok(Some(T::CancelRequested))),
            (T::CancelRequested, active_job, Cancel, Ok(None)),
            (T::Completed, active_job, Cancel, Err(())),
            (T::Failed, active_job, Cancel, Err(())),
            (T::Canceled, active_job, Cancel, Err(())),
            (T::Failed, active_job, Requeue, Ok(Some(T::Queued))),
            (T::Canceled, Some(&J::Canceled), Requeue, Ok(Some(T::Queued))),
            (T::Completed, Some(&J::Completed), Requeue, Ok(Some(T::Queued))),
            (T::Failed, None, Requeue, Ok(Some(T::Queued))),
            (T::Active, active_job, Requeue, Err(())),
            (T::CancelRequested, active_job, Requeue, Err(())),
            (T::Queued, active_job, Requeue, Err(())),
            (T::Canceled, Some(&J::CancelRequested), Requeue, Err(())),
        ];
        for (task, job, action, want) in cases {
            let got = plan_task_action(&task, job, action);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{action:?} of a {task} task, job {job:?}"),
                (Err(reason), Err(())) => assert!(!reason.is_empty()),
                _ => panic!("{action:?} of a {task} task, job {job:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(job_status_after_task_requeue(&J::Failed), Some(J::Queued));
        assert_eq!(job_status_after_task_requeue(&J::Active), None);
    }

    /// §4.2, case by case: (job status, task's new status, counts, expected job status).
    #[test]
    fn job_status_follows_tasks_per_section_4_2() {
        #[rustfmt::skip]
        let cases: Vec<(J, T, TaskCounts, Option<J>, &str)> = vec![
            // queued: job completed → queued, otherwise nothing
            (J::Completed, T::Queued, counts(&[(T::Queued, 1), (T::Completed, 9)]), Some(J::Queued), "requeued task of a completed job"),
            (J::Active, T::Queued, counts(&[(T::Queued, 1), (T::Active, 1)]), None, "queued task of an active job"),
            (J::Queued, T::Queued, counts(&[(T::Queued, 2)]), None, "queued task of a queued job"),
            // claimed-by-manager, cancel-requested: nothing
            (J::Active, T::ClaimedByManager, counts(&[(T::ClaimedByManager, 1), (T::Active, 1)]), None, "claimed-by-manager"),
            (J::Queued, T::ClaimedByManager, counts(&[(T::ClaimedByManager, 1)]), None, "claimed-by-manager of queued job"),
            (J::Active, T::CancelRequested, counts(&[(T::CancelRequested, 1)]), None, "cancel-requested task"),
            // canceled: job canceled when no task is cancel-requested any more
            (J::Active, T::Canceled, counts(&[(T::Canceled, 1), (T::Queued, 3)]), Some(J::Canceled), "canceled, none cancel-requested"),
            (J::Queued, T::Canceled, counts(&[(T::Canceled, 1), (T::Queued, 3)]), Some(J::Canceled), "canceled task of a queued job"),
            (J::Completed, T::Canceled, counts(&[(T::Canceled, 1), (T::Completed, 3)]), Some(J::Canceled), "canceled regardless of job status"),
            (J::Active, T::Canceled, counts(&[(T::Canceled, 1), (T::CancelRequested, 1)]), None, "canceled but another still cancel-requested"),
            // failed: ≥ 10 % failed → job failed; else queued → active
            (J::Active, T::Failed, counts(&[(T::Failed, 1), (T::Queued, 9)]), Some(J::Failed), "1 of 10 failed is 10 %"),
            (J::Queued, T::Failed, counts(&[(T::Failed, 1), (T::Queued, 9)]), Some(J::Failed), "10 % from queued"),
            (J::Active, T::Failed, counts(&[(T::Failed, 1), (T::Queued, 10)]), None, "1 of 11 is under 10 %"),
            (J::Queued, T::Failed, counts(&[(T::Failed, 1), (T::Queued, 10)]), Some(J::Active), "under 10 %: queued → active"),
            (J::Active, T::Failed, counts(&[(T::Failed, 2), (T::Completed, 18)]), Some(J::Failed), "2 of 20"),
            (J::Completed, T::Failed, counts(&[(T::Failed, 1), (T::Completed, 1)]), Some(J::Failed), "failed after completion"),
            // active: job → active unless it is
            (J::Queued, T::Active, counts(&[(T::Active, 1), (T::Queued, 1)]), Some(J::Active), "first active task"),
            (J::Active, T::Active, counts(&[(T::Active, 2)]), None, "already active"),
            (J::Completed, T::Active, counts(&[(T::Active, 1), (T::Completed, 1)]), Some(J::Active), "active again after completion"),
            (J::Queued, T::SoftFailed, counts(&[(T::SoftFailed, 1), (T::Queued, 1)]), Some(J::Active), "soft-failed is treated like active"),
            // completed: all completed → completed; else queued → active
            (J::Active, T::Completed, counts(&[(T::Completed, 4)]), Some(J::Completed), "last task completed"),
            (J::Queued, T::Completed, counts(&[(T::Completed, 1)]), Some(J::Completed), "single-task job from queued"),
            (J::Active, T::Completed, counts(&[(T::Completed, 3), (T::Queued, 1)]), None, "not all completed"),
            (J::Queued, T::Completed, counts(&[(T::Completed, 3), (T::Queued, 1)]), Some(J::Active), "not all completed: queued → active"),
            (J::Completed, T::Completed, counts(&[(T::Completed, 4)]), None, "already completed"),
            // unknown task statuses change nothing
            (J::Active, T::Other("paused".into()), counts(&[(T::Other("paused".into()), 1)]), None, "unknown task status"),
        ];
        for (job, task, c, want, why) in cases {
            assert_eq!(
                job_status_after_task_change(&job, &task, &c),
                want,
                "{why}: job {job}, task {task}, counts {c:?}"
            );
        }
    }

    /// Differences 2 and 3: jobs being canceled, canceled or failed.
    #[test]
    fn ending_jobs_only_end() {
        #[rustfmt::skip]
        let cases: Vec<(J, T, TaskCounts, Option<J>, &str)> = vec![
            (J::CancelRequested, T::Canceled, counts(&[(T::Canceled, 3)]), Some(J::Canceled), "last cancel-requested task canceled"),
            (J::CancelRequested, T::Canceled, counts(&[(T::Canceled, 2), (T::CancelRequested, 1)]), None, "one still stopping"),
            (J::CancelRequested, T::Completed, counts(&[(T::Canceled, 2), (T::Completed, 1)]), Some(J::Canceled), "the last running one completed instead"),
            (J::CancelRequested, T::Failed, counts(&[(T::Canceled, 2), (T::Failed, 1)]), Some(J::Canceled), "the last running one failed instead"),
            (J::CancelRequested, T::Completed, counts(&[(T::Completed, 3)]), Some(J::Completed), "every task completed after all"),
            (J::CancelRequested, T::Active, counts(&[(T::CancelRequested, 1), (T::Canceled, 1)]), None, "a stale active does not revive it"),
            (J::CancelRequested, T::Active, counts(&[(T::Active, 1), (T::Canceled, 1)]), None, "a task still active"),
            (J::Failed, T::Canceled, counts(&[(T::Failed, 1), (T::Canceled, 3)]), None, "cancellations a failure caused"),
            (J::Failed, T::Active, counts(&[(T::Failed, 1), (T::Active, 1)]), None, "stale active of a failed job"),
            (J::Failed, T::Completed, counts(&[(T::Completed, 2)]), None, "a failed job is only re-queued"),
            (J::Canceled, T::Active, counts(&[(T::Canceled, 2)]), None, "stale active of a canceled job"),
            (J::Canceled, T::Completed, counts(&[(T::Completed, 2)]), None, "a canceled job is only re-queued"),
            (J::Other("archived".into()), T::Completed, counts(&[(T::Completed, 1)]), None, "unknown job status"),
        ];
        for (job, task, c, want, why) in cases {
            assert_eq!(
                job_status_after_task_change(&job, &task, &c),
                want,
                "{why}: job {job}, task {task}, counts {c:?}"
            );
        }
    }

    /// §4.3, case by case: (job from, job to, task status, expected task status).
    #[test]
    fn job_changes_cascade_per_section_4_3() {
        #[rustfmt::skip]
        let cases: Vec<(J, J, T, Option<T>)> = vec![
            // cancel-requested and failed: queued → canceled; active → cancel-requested
            (J::Active, J::CancelRequested, T::Queued, Some(T::Canceled)),
            (J::Active, J::CancelRequested, T::ClaimedByManager, Some(T::Canceled)),
            (J::Active, J::CancelRequested, T::SoftFailed, Some(T::Canceled)),
            (J::Active, J::CancelRequested, T::Active, Some(T::CancelRequested)),
            (J::Active, J::CancelRequested, T::Completed, None),
            (J::Active, J::CancelRequested, T::Failed, None),
            (J::Active, J::CancelRequested, T::Canceled, None),
            (J::Active, J::CancelRequested, T::CancelRequested, None),
            (J::Active, J::Failed, T::Queued, Some(T::Canceled)),
            (J::Active, J::Failed, T::Active, Some(T::CancelRequested)),
            (J::Active, J::Failed, T::Completed, None),
            (J::Active, J::Failed, T::Failed, None),
            // canceled (derived from a canceled task, difference 6): like failed
            (J::Active, J::Canceled, T::Queued, Some(T::Canceled)),
            (J::Active, J::Canceled, T::Active, Some(T::CancelRequested)),
            (J::Active, J::Canceled, T::Completed, None),
            (J::CancelRequested, J::Canceled, T::Canceled, None),
            // completed, active: nothing
            (J::Active, J::Completed, T::Queued, None),
            (J::Queued, J::Active, T::Queued, None),
            // queued from completed: every task except cancel-requested
            (J::Completed, J::Queued, T::Completed, Some(T::Queued)),
            (J::Completed, J::Queued, T::Failed, Some(T::Queued)),
            (J::Completed, J::Queued, T::Canceled, Some(T::Queued)),
            (J::Completed, J::Queued, T::ClaimedByManager, Some(T::Queued)),
            (J::Completed, J::Queued, T::CancelRequested, None),
            (J::Completed, J::Queued, T::Queued, None),
            // queued from anything else: failed and canceled tasks
            (J::Failed, J::Queued, T::Failed, Some(T::Queued)),
            (J::Failed, J::Queued, T::Canceled, Some(T::Queued)),
            (J::Failed, J::Queued, T::Completed, None),
            (J::Failed, J::Queued, T::Active, None),
            (J::Canceled, J::Queued, T::Canceled, Some(T::Queued)),
            (J::Canceled, J::Queued, T::Completed, None),
            (J::Active, J::Queued, T::Failed, Some(T::Queued)),
            (J::Active, J::Queued, T::Active, None),
            (J::Active, J::Queued, T::ClaimedByManager, None),
            (J::Active, J::Queued, T::CancelRequested, None),
        ];
        for (from, to, task, want) in cases {
            assert_eq!(
                task_status_for_job_change(&from, &to, &task),
                want,
                "job {from} → {to}, task {task}"
            );
        }
    }

    #[test]
    fn cancel_without_running_tasks_is_immediate() {
        assert_eq!(
            job_status_after_cascade(&J::CancelRequested, &counts(&[(T::Canceled, 3)])),
            J::Canceled
        );
        assert_eq!(
            job_status_after_cascade(
                &J::CancelRequested,
                &counts(&[(T::Canceled, 3), (T::CancelRequested, 1)])
            ),
            J::CancelRequested
        );
        assert_eq!(
            job_status_after_cascade(&J::CancelRequested, &counts(&[(T::Completed, 2)])),
            J::Completed
        );
        assert_eq!(
            job_status_after_cascade(&J::Failed, &counts(&[(T::Canceled, 2)])),
            J::Failed
        );
        assert_eq!(
            job_status_after_cascade(&J::Queued, &counts(&[(T::Queued, 2)])),
            J::Queued
        );
    }

    #[test]
    fn only_derived_failure_and_cancel_cascade() {
        assert!(derived_status_cascades(&J::Failed));
        assert!(derived_status_cascades(&J::Canceled));
        for s in [J::Queued, J::Active, J::Completed] {
            assert!(!derived_status_cascades(&s), "{s}");
        }
    }

    #[test]
    fn actions_allowed_per_status() {
        let idle = counts(&[(T::Completed, 2)]);
        let running = counts(&[(T::Active, 1), (T::Canceled, 1)]);
        #[rustfmt::skip]
        let cases: Vec<(JobAction, J, &TaskCounts, Result<ActionPlan, ()>)> = vec![
            (JobAction::Cancel, J::Queued, &idle, Ok(ActionPlan::ChangeStatus(J::CancelRequested))),
            (JobAction::Cancel, J::Active, &running, Ok(ActionPlan::ChangeStatus(J::CancelRequested))),
            (JobAction::Cancel, J::CancelRequested, &running, Ok(ActionPlan::Nothing)),
            (JobAction::Cancel, J::Completed, &idle, Err(())),
            (JobAction::Cancel, J::Failed, &idle, Err(())),
            (JobAction::Cancel, J::Canceled, &idle, Err(())),
            (JobAction::Requeue, J::Completed, &idle, Ok(ActionPlan::ChangeStatus(J::Queued))),
            (JobAction::Requeue, J::Failed, &idle, Ok(ActionPlan::ChangeStatus(J::Queued))),
            (JobAction::Requeue, J::Canceled, &idle, Ok(ActionPlan::ChangeStatus(J::Queued))),
            (JobAction::Requeue, J::Active, &running, Ok(ActionPlan::ChangeStatus(J::Queued))),
            (JobAction::Requeue, J::Queued, &idle, Ok(ActionPlan::ChangeStatus(J::Queued))),
            (JobAction::Requeue, J::CancelRequested, &running, Err(())),
            (JobAction::Requeue, J::Other("archived".into()), &idle, Err(())),
            (JobAction::Delete, J::Completed, &idle, Ok(ActionPlan::Delete)),
            (JobAction::Delete, J::Failed, &idle, Ok(ActionPlan::Delete)),
            (JobAction::Delete, J::Canceled, &idle, Ok(ActionPlan::Delete)),
            (JobAction::Delete, J::Canceled, &running, Err(())),
            (JobAction::Delete, J::Active, &running, Err(())),
            (JobAction::Delete, J::Queued, &idle, Err(())),
            (JobAction::Delete, J::CancelRequested, &running, Err(())),
        ];
        for (action, job, c, want) in cases {
            let got = plan_action(&job, action, c);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{action:?} on {job}"),
                (Err(msg), Err(())) => assert!(!msg.is_empty()),
                _ => panic!("{action:?} on {job}: got {got:?}, want {want:?}"),
            }
        }
        let msg = plan_action(&J::Active, JobAction::Delete, &running).unwrap_err();
        assert!(msg.contains("cancel it first"), "{msg}");
    }

    #[test]
    fn cascade_update_texts() {
        let id = ObjectId::new();
        let now = Utc::now();
        let u = cascade_update(id, &T::Canceled, &J::CancelRequested, now);
        assert_eq!(u.task_status, Some(T::Canceled));
        assert_eq!(u.worker, "");
        assert_eq!(
            u.activity,
            "Manager set this task canceled because the job got status 'cancel-requested'."
        );
        assert!(u.log.ends_with(&u.activity));
        let u = cascade_update(id, &T::Queued, &J::Queued, now);
        assert_eq!(u.worker, "-", "re-queue updates carry worker \"-\"");
        let u = cascade_update(id, &T::CancelRequested, &J::Failed, now);
        assert!(u.activity.contains("'failed'"));
    }
}
