//! The local task status machine and the texts of Manager-made task updates.
//!
//! Store backends call these pure functions inside their transactions, so both backends
//! decide the same way: which worker may update a task, which status changes are applied
//! locally, what may-i-run answers, and what a returned task becomes.

use chrono::{DateTime, Utc};

use crate::model::{ObjectId, Task, TaskStatus, TaskUpdate};

/// Why a worker's update was (not) accepted. Maps to 204 / 404 / 409 / 409.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerUpdateOutcome {
    /// Stored locally and queued in the outbox.
    Applied,
    /// The task is not in the store.
    NotFound,
    /// The task is assigned to another worker.
    AssignedToOther,
    /// The task is `canceled` or `cancel-requested`.
    NotRunnable(TaskStatus),
}

/// Check a worker's update against the stored task (v2 §4.4 steps 5–7).
pub fn check_worker_update(task: Option<&Task>, worker_id: ObjectId) -> WorkerUpdateOutcome {
    let Some(task) = task else {
        return WorkerUpdateOutcome::NotFound;
    };
    if task.worker_id.is_some_and(|w| w != worker_id) {
        return WorkerUpdateOutcome::AssignedToOther;
    }
    if task.status.is_cancel() {
        return WorkerUpdateOutcome::NotRunnable(task.status.clone());
    }
    WorkerUpdateOutcome::Applied
}

/// The local status after an update that asks for `new`, or `None` when the local status
/// stays as it is (the update is still queued for the job source).
///
/// * `canceled`, `failed`, `completed` always apply (v2).
/// * Nothing leaves `cancel-requested` except those three (v2).
/// * Unlike v2, a task in a final status (`completed`, `failed`, `canceled`) is not moved
///   back to a non-final one by an update: only an explicit re-queue does that.
pub fn local_status_after(current: &TaskStatus, new: &TaskStatus) -> Option<TaskStatus> {
    if new.is_final() {
        return Some(new.clone());
    }
    if *current == TaskStatus::CancelRequested || current.is_final() {
        return None;
    }
    Some(new.clone())
}

/// The answer to `GET /may-i-run/{id}` as far as the task is concerned (v2 §4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MayIRun {
    /// Keep running; the store pinged the task.
    Yes,
    UnknownTask,
    Reassigned,
    NotRunnable(TaskStatus),
}

impl MayIRun {
    /// Decide from the stored task.
    pub fn decide(task: Option<&Task>, worker_id: ObjectId) -> MayIRun {
        let Some(task) = task else {
            return MayIRun::UnknownTask;
        };
        if task.worker_id.is_some_and(|w| w != worker_id) {
            return MayIRun::Reassigned;
        }
        if !task.status.is_runnable() {
            return MayIRun::NotRunnable(task.status.clone());
        }
        MayIRun::Yes
    }

    /// v2's reason text, `None` for a yes.
    pub fn reason(&self, task_id: ObjectId) -> Option<String> {
        match self {
            MayIRun::Yes => None,
            MayIRun::UnknownTask => Some(format!("unable to find task {task_id}")),
            MayIRun::Reassigned => Some(format!("task {task_id} reassigned to another worker")),
            MayIRun::NotRunnable(st) => Some(format!("task {task_id} in non-runnable status {st}")),
        }
    }
}

/// What `POST /tasks/{id}/return` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReturnOutcome {
    /// The active task went back to the queue (`claimed-by-manager`, no worker).
    Requeued,
    /// The task was `cancel-requested`; the worker has stopped, so it is now `canceled`.
    Canceled,
    /// Nothing to do (already queued, finished or canceled): a repeated return is harmless.
    Unchanged,
    NotFound,
    AssignedToOther,
}

/// Decide what a worker's return does to the stored task.
pub fn decide_return(task: Option<&Task>, worker_id: ObjectId) -> ReturnOutcome {
    let Some(task) = task else {
        return ReturnOutcome::NotFound;
    };
    if task.worker_id.is_some_and(|w| w != worker_id) {
        return ReturnOutcome::AssignedToOther;
    }
    match task.status {
        TaskStatus::Active => ReturnOutcome::Requeued,
        TaskStatus::CancelRequested => ReturnOutcome::Canceled,
        _ => ReturnOutcome::Unchanged,
    }
}

/// The log timestamp layout used in Manager-made log lines: `YYYY-MM-DDTHH:MM:SS+0000`
/// (v2's "IsoFormat"; we always write UTC).
pub fn iso_log_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%z").to_string()
}

fn manager_update(
    task_id: ObjectId,
    now: DateTime<Utc>,
    status: Option<TaskStatus>,
    worker: &str,
    activity: String,
    log: String,
) -> TaskUpdate {
    let mut u = TaskUpdate::new(task_id, now);
    u.task_status = status;
    u.worker = worker.to_string();
    u.activity = activity;
    u.log = log;
    u
}

/// The scheduler's `active` update (v2 §6.4 step 2).
pub fn assignment_status_update(task_id: ObjectId, now: DateTime<Utc>) -> TaskUpdate {
    manager_update(
        task_id,
        now,
        Some(TaskStatus::Active),
        "",
        String::new(),
        String::new(),
    )
}

/// The scheduler's "assigned" activity/log update (v2 §6.4 step 7).
pub fn assignment_log_update(task_id: ObjectId, ident: &str, now: DateTime<Utc>) -> TaskUpdate {
    let text = format!("Manager assigned task {task_id} to worker {ident}");
    let log = format!("{}: {text}", iso_log_time(now));
    manager_update(task_id, now, None, "", text, log)
}

/// The re-queue update for a task whose worker signed off (v2 §4.7).
pub fn sign_off_requeue_update(task_id: ObjectId, ident: &str, now: DateTime<Utc>) -> TaskUpdate {
    manager_update(
        task_id,
        now,
        Some(TaskStatus::ClaimedByManager),
        "-",
        format!("Re-queued task after worker {ident} signed off"),
        format!(
            "{}: Manager re-queued task after worker {ident} signed off",
            iso_log_time(now)
        ),
    )
}

/// The re-queue update for a task that could not be sent to its worker (v2 §6.4 step 6).
pub fn unassign_update(
    task_id: ObjectId,
    ident: &str,
    error: &str,
    now: DateTime<Utc>,
) -> TaskUpdate {
    manager_update(
        task_id,
        now,
        Some(TaskStatus::ClaimedByManager),
        "-",
        format!("Re-queued task after unassigning from worker {ident} "),
        format!(
            "{}: Manager re-queued task after there was an error sending it to worker {ident}:\n{error}",
            iso_log_time(now)
        ),
    )
}

/// The update for a task a worker returned (`POST /tasks/{id}/return`).
pub fn return_update(
    task_id: ObjectId,
    ident: &str,
    outcome: &ReturnOutcome,
    now: DateTime<Utc>,
) -> Option<TaskUpdate> {
    let (status, text) = match outcome {
        ReturnOutcome::Requeued => (
            TaskStatus::ClaimedByManager,
            format!("Re-queued task after worker {ident} returned it"),
        ),
        ReturnOutcome::Canceled => (
            TaskStatus::Canceled,
            format!("Task canceled; worker {ident} stopped running it"),
        ),
        _ => return None,
    };
    let log = format!("{}: {text}", iso_log_time(now));
    Some(manager_update(task_id, now, Some(status), "-", text, log))
}

/// The update that fails a task whose worker went silent (v2 §8.1). `last_ping` is the
/// task's last worker ping, if any.
pub fn timeout_update(
    task: &Task,
    ident: &str,
    last_ping: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> TaskUpdate {
    let since = last_ping
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "<nil>".to_string());
    manager_update(
        task.id,
        now,
        Some(TaskStatus::Failed),
        "",
        format!("Task timed out on worker {ident}"),
        format!(
            "{} Task {} ({}) timed out, was active but untouched since {since}. Was handled by worker {ident}",
            iso_log_time(now),
            task.name,
            task.id
        ),
    )
}

/// How v2 names the worker of a timed-out task: the worker's identifier when it is
/// known, else the task's `worker` field, else `-no worker-`.
pub fn timeout_ident(task: &Task, worker: Option<&crate::model::Worker>) -> String {
    match (worker, task.worker_id) {
        (Some(w), _) => w.identifier(),
        (None, Some(id)) => format!("{id} (unknown worker)"),
        (None, None) if !task.worker.is_empty() => task.worker.clone(),
        (None, None) => "-no worker-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Task;

    fn task(status: TaskStatus, worker: Option<ObjectId>) -> Task {
        let mut t = Task::new("t", "sleep", vec![]);
        t.status = status;
        t.worker_id = worker;
        t
    }

    #[test]
    fn worker_update_checks_in_v2_order() {
        let me = ObjectId::new();
        let other = ObjectId::new();
        assert_eq!(check_worker_update(None, me), WorkerUpdateOutcome::NotFound);
        let t = task(TaskStatus::CancelRequested, Some(other));
        assert_eq!(
            check_worker_update(Some(&t), me),
            WorkerUpdateOutcome::AssignedToOther
        );
        let t = task(TaskStatus::CancelRequested, Some(me));
        assert_eq!(
            check_worker_update(Some(&t), me),
            WorkerUpdateOutcome::NotRunnable(TaskStatus::CancelRequested)
        );
        let t = task(TaskStatus::Queued, None);
        assert_eq!(
            check_worker_update(Some(&t), me),
            WorkerUpdateOutcome::Applied
        );
    }

    #[test]
    fn final_statuses_are_sticky_except_for_final_reports() {
        use TaskStatus::*;
        assert_eq!(local_status_after(&Active, &Completed), Some(Completed));
        assert_eq!(local_status_after(&Completed, &Active), None);
        assert_eq!(local_status_after(&Failed, &Active), None);
        assert_eq!(local_status_after(&Completed, &Failed), Some(Failed));
        assert_eq!(local_status_after(&CancelRequested, &Active), None);
        assert_eq!(
            local_status_after(&CancelRequested, &Canceled),
            Some(Canceled)
        );
        assert_eq!(local_status_after(&Queued, &Active), Some(Active));
    }

    #[test]
    fn may_i_run_reasons() {
        let me = ObjectId::new();
        let id = ObjectId::new();
        assert_eq!(
            MayIRun::decide(None, me).reason(id).unwrap(),
            format!("unable to find task {id}")
        );
        let t = task(TaskStatus::CancelRequested, Some(me));
        assert_eq!(
            MayIRun::decide(Some(&t), me).reason(id).unwrap(),
            format!("task {id} in non-runnable status cancel-requested")
        );
        let t = task(TaskStatus::Active, Some(ObjectId::new()));
        assert_eq!(MayIRun::decide(Some(&t), me), MayIRun::Reassigned);
        let t = task(TaskStatus::Active, Some(me));
        assert_eq!(MayIRun::decide(Some(&t), me), MayIRun::Yes);
        assert_eq!(MayIRun::Yes.reason(id), None);
    }

    #[test]
    fn return_decisions() {
        let me = ObjectId::new();
        assert_eq!(decide_return(None, me), ReturnOutcome::NotFound);
        let t = task(TaskStatus::Active, Some(me));
        assert_eq!(decide_return(Some(&t), me), ReturnOutcome::Requeued);
        let t = task(TaskStatus::CancelRequested, Some(me));
        assert_eq!(decide_return(Some(&t), me), ReturnOutcome::Canceled);
        let t = task(TaskStatus::Active, Some(ObjectId::new()));
        assert_eq!(decide_return(Some(&t), me), ReturnOutcome::AssignedToOther);
        let t = task(TaskStatus::Completed, Some(me));
        assert_eq!(decide_return(Some(&t), me), ReturnOutcome::Unchanged);
    }

    #[test]
    fn manager_update_texts() {
        let id = ObjectId::new();
        let now = Utc::now();
        let u = sign_off_requeue_update(id, "10.0.0.5 (node1)", now);
        assert_eq!(u.task_status, Some(TaskStatus::ClaimedByManager));
        assert_eq!(u.worker, "-");
        assert_eq!(
            u.activity,
            "Re-queued task after worker 10.0.0.5 (node1) signed off"
        );
        assert!(u
            .log
            .ends_with("Manager re-queued task after worker 10.0.0.5 (node1) signed off"));
        let u = unassign_update(id, "w", "broken pipe", now);
        assert_eq!(
            u.activity,
            "Re-queued task after unassigning from worker w "
        );
    }
}
