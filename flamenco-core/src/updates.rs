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
    /// The task is `canceled` or `cancel-requested` and this is not its worker.
    NotRunnable(TaskStatus),
    /// The task is `canceled` or `cancel-requested` (the status given) and this is its own
    /// worker: the update's log lines and activity are kept (204), its status is not
    /// applied and not queued ([`without_status`]). A departure from v2, which answered 409
    /// and so lost the last lines of every canceled task.
    LastWords(TaskStatus),
}

impl WorkerUpdateOutcome {
    /// The update is stored (204): [`WorkerUpdateOutcome::Applied`] or
    /// [`WorkerUpdateOutcome::LastWords`].
    pub fn is_accepted(&self) -> bool {
        matches!(
            self,
            WorkerUpdateOutcome::Applied | WorkerUpdateOutcome::LastWords(_)
        )
    }
}

/// Check a worker's update against the stored task (v2 §4.4 steps 5–7), keeping the last
/// words of a canceled task from its own worker ([`WorkerUpdateOutcome::LastWords`]).
pub fn check_worker_update(task: Option<&Task>, worker_id: ObjectId) -> WorkerUpdateOutcome {
    let Some(task) = task else {
        return WorkerUpdateOutcome::NotFound;
    };
    if task.worker_id.is_some_and(|w| w != worker_id) {
        return WorkerUpdateOutcome::AssignedToOther;
    }
    if task.status.is_cancel() {
        if task.worker_id == Some(worker_id) {
            return WorkerUpdateOutcome::LastWords(task.status.clone());
        }
        return WorkerUpdateOutcome::NotRunnable(task.status.clone());
    }
    WorkerUpdateOutcome::Applied
}

/// The update as stored and queued for `outcome`: a [`WorkerUpdateOutcome::LastWords`]
/// update loses its status (so neither the local task nor the Flamenco Server, which
/// refuses most statuses on a `cancel-requested` task, sees a change); other outcomes
/// keep it whole.
pub fn without_status(outcome: &WorkerUpdateOutcome, mut update: TaskUpdate) -> TaskUpdate {
    if matches!(outcome, WorkerUpdateOutcome::LastWords(_)) {
        update.task_status = None;
    }
    update
}

/// The local status after an update that asks for `new`, or `None` when the local status
/// stays as it is (the update is still queued for the job source).
///
/// * `canceled`, `failed`, `completed` always apply (v2), except `canceled` on a
///   `completed` task.
/// * Nothing leaves `cancel-requested` except those three (v2).
/// * Unlike v2, a task in a final status (`completed`, `failed`, `canceled`) is not moved
///   back to a non-final one by an update: only an explicit re-queue does that.
/// * Unlike v2, `completed` stays when `canceled` is reported: the work is done. This
///   happens after a Manager restart: a worker whose `completed` update is still in its
///   queue asks for a task, gets its own `active` task again (v2's already-assigned rule),
///   its queued `completed` arrives, may-i-run then tells it to stop the second run, and
///   Flamenco Worker 2.0.x reports that as `canceled` (which would cancel the whole job in
///   standalone mode). Found by the real-worker tests (flamenco-cli/tests/real_worker.rs).
pub fn local_status_after(current: &TaskStatus, new: &TaskStatus) -> Option<TaskStatus> {
    if *current == TaskStatus::Completed && *new == TaskStatus::Canceled {
        return None;
    }
    if new.is_final() {
        return Some(new.clone());
    }
    if *current == TaskStatus::CancelRequested || current.is_final() {
        return None;
    }
    Some(new.clone())
}

/// The local effect of queueing `update` on `task` (v2 §7.2 step 2): the status per
/// [`local_status_after`], a non-empty activity, and `last_updated`. The log and the
/// progress fields are never stored on the task. Every backend applies updates this way.
pub fn apply_locally(task: &mut Task, update: &TaskUpdate) {
    if let Some(new) = &update.task_status {
        if let Some(status) = local_status_after(&task.status, new) {
            task.status = status;
        }
    }
    if !update.activity.is_empty() {
        task.activity.clone_from(&update.activity);
    }
    task.last_updated = Some(update.received_on_manager);
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

/// The two fields of a task that may-i-run decides on: what
/// [`crate::store::WorkerProtocolStore::get_task_state`] reads for every may-i-run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRunState {
    pub status: TaskStatus,
    pub worker_id: Option<ObjectId>,
}

impl TaskRunState {
    /// The run state of a whole task.
    pub fn of(task: &Task) -> TaskRunState {
        TaskRunState {
            status: task.status.clone(),
            worker_id: task.worker_id,
        }
    }
}

impl MayIRun {
    /// Decide from the stored task.
    pub fn decide(task: Option<&Task>, worker_id: ObjectId) -> MayIRun {
        MayIRun::decide_on(task.map(TaskRunState::of).as_ref(), worker_id)
    }

    /// Decide from the task's run state (`None`: the task is unknown).
    pub fn decide_on(state: Option<&TaskRunState>, worker_id: ObjectId) -> MayIRun {
        let Some(state) = state else {
            return MayIRun::UnknownTask;
        };
        if state.worker_id.is_some_and(|w| w != worker_id) {
            return MayIRun::Reassigned;
        }
        if !state.status.is_runnable() {
            return MayIRun::NotRunnable(state.status.clone());
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

// ---- the job source (upstream mode) ----

/// The task type given to a downloaded task that has none (v2 §5.3).
pub const UNKNOWN_TASK_TYPE: &str = "unknown";

/// A task as the job source sent it, merged with the local copy (v2 §5.3, fixing §11 #10).
///
/// The job source's fields win (name, priorities, commands, etag, …), but a download never
/// takes a task away from the worker running it: when the local task is `active`, it keeps
/// its status, worker and activity unless the job source says `canceled` or
/// `cancel-requested`. The local bookkeeping (`worker_id`, `last_worker_ping`) is never
/// wiped. A task the job source believes `active` but that is not active here is
/// `claimed-by-manager` (no worker of ours runs it). `last_updated` becomes `now`; an empty
/// task type becomes [`UNKNOWN_TASK_TYPE`].
pub fn merge_downloaded(local: Option<&Task>, mut server: Task, now: DateTime<Utc>) -> Task {
    if server.task_type.is_empty() {
        server.task_type = UNKNOWN_TASK_TYPE.to_string();
    }
    server.last_updated = Some(now);
    server.worker_id = local.and_then(|l| l.worker_id);
    server.last_worker_ping = local.and_then(|l| l.last_worker_ping);
    match local {
        Some(l) if l.status == TaskStatus::Active && !server.status.is_cancel() => {
            server.status = TaskStatus::Active;
            server.worker.clone_from(&l.worker);
            server.activity.clone_from(&l.activity);
        }
        Some(l) if server.status == TaskStatus::Active => server.status = l.status.clone(),
        None if server.status == TaskStatus::Active => {
            server.status = TaskStatus::ClaimedByManager;
        }
        _ => {}
    }
    server
}

/// What re-validating a task with the job source found out (v2 §5.4).
#[derive(Clone, Debug, PartialEq)]
pub enum Refetched {
    /// The job source has a newer version of the task.
    Changed(Box<Task>),
    /// The job source no longer has the task for us (204, 4xx, or an undecodable answer).
    Gone,
}

/// A task reserved for a worker, after re-validation found it changed (v2 §5.4): the
/// reservation is released (`worker_id` cleared) and the task takes the job source's
/// version. A task that is gone becomes `canceled` and keeps its other fields (v2 case
/// 20). A changed task takes the job source's fields as in [`merge_downloaded`], its status
/// as given, except that `active` becomes `claimed-by-manager` (the reserving worker never
/// got it).
pub fn after_refetch(local: &Task, verdict: &Refetched, now: DateTime<Utc>) -> Task {
    let mut task = match verdict {
        Refetched::Gone => {
            let mut t = local.clone();
            t.status = TaskStatus::Canceled;
            t
        }
        Refetched::Changed(server) => {
            let mut t = (**server).clone();
            t.id = local.id;
            if t.task_type.is_empty() {
                t.task_type = UNKNOWN_TASK_TYPE.to_string();
            }
            if t.status == TaskStatus::Active {
                t.status = TaskStatus::ClaimedByManager;
            }
            t.last_worker_ping = local.last_worker_ping;
            t
        }
    };
    task.worker_id = None;
    task.last_updated = Some(now);
    task
}

/// What to do with one id of the job source's cancel list (v2 §5.6).
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamCancel {
    /// A worker runs it: make it `cancel-requested` locally; the worker learns it through
    /// may-i-run. Nothing is queued.
    RequestCancel,
    /// Queue this update (and apply it locally): `canceled`, or the task's own final
    /// status when it already finished here.
    Queue(TaskUpdate),
    /// A final status for this task is already waiting in the outbox: nothing to add.
    AlreadyPending,
}

/// Decide what a cancel request for `task_id` does (v2 §5.6). `final_update_pending` tells
/// whether the outbox already holds an update with a final status for this task (then the
/// job source will hear the end of the task without another update; v2 queued one per
/// push answer).
pub fn upstream_cancel(
    task_id: ObjectId,
    local: Option<&Task>,
    final_update_pending: bool,
    now: DateTime<Utc>,
) -> UpstreamCancel {
    if local.is_some_and(|t| t.status == TaskStatus::Active) {
        return UpstreamCancel::RequestCancel;
    }
    if final_update_pending {
        return UpstreamCancel::AlreadyPending;
    }
    // A task that finished here reports how it finished; anything else is canceled.
    let status = match local {
        Some(t) if t.status.is_final() => t.status.clone(),
        _ => TaskStatus::Canceled,
    };
    UpstreamCancel::Queue(manager_update(
        task_id,
        now,
        Some(status),
        "",
        String::new(),
        String::new(),
    ))
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
            WorkerUpdateOutcome::LastWords(TaskStatus::CancelRequested)
        );
        let t = task(TaskStatus::Canceled, None);
        assert_eq!(
            check_worker_update(Some(&t), me),
            WorkerUpdateOutcome::NotRunnable(TaskStatus::Canceled)
        );
        let t = task(TaskStatus::Queued, None);
        assert_eq!(
            check_worker_update(Some(&t), me),
            WorkerUpdateOutcome::Applied
        );
    }

    #[test]
    fn last_words_keep_log_and_activity_but_not_the_status() {
        let mut update = TaskUpdate::new(ObjectId::new(), Utc::now());
        update.task_status = Some(TaskStatus::Canceled);
        update.activity = "Task was canceled".into();
        update.log = "killed".into();
        let whole = without_status(&WorkerUpdateOutcome::Applied, update.clone());
        assert_eq!(whole, update);
        let words = without_status(
            &WorkerUpdateOutcome::LastWords(TaskStatus::CancelRequested),
            update,
        );
        assert_eq!(words.activity, "Task was canceled");
        assert_eq!(words.task_status, None);
        assert_eq!(words.log, "killed");
        assert!(WorkerUpdateOutcome::LastWords(TaskStatus::Canceled).is_accepted());
        assert!(!WorkerUpdateOutcome::NotRunnable(TaskStatus::Canceled).is_accepted());
    }

    #[test]
    fn final_statuses_are_sticky_except_for_final_reports() {
        use TaskStatus::*;
        assert_eq!(local_status_after(&Active, &Completed), Some(Completed));
        assert_eq!(local_status_after(&Completed, &Active), None);
        assert_eq!(local_status_after(&Failed, &Active), None);
        assert_eq!(local_status_after(&Completed, &Failed), Some(Failed));
        assert_eq!(local_status_after(&Completed, &Canceled), None);
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

    #[test]
    fn downloads_merge_without_taking_running_tasks_away() {
        let me = ObjectId::new();
        let now = Utc::now();
        let mut local = task(TaskStatus::Active, Some(me));
        local.worker = "node1".into();
        local.activity = "rendering".into();
        let mut server = local.clone();
        server.worker_id = None;
        server.status = TaskStatus::ClaimedByManager;
        server.priority = 7;
        server.worker = String::new();
        let merged = merge_downloaded(Some(&local), server.clone(), now);
        assert_eq!(merged.status, TaskStatus::Active);
        assert_eq!(merged.worker_id, Some(me));
        assert_eq!(merged.worker, "node1");
        assert_eq!(merged.activity, "rendering");
        assert_eq!(merged.priority, 7);
        assert_eq!(merged.last_updated, Some(now));
        for cancel in [TaskStatus::CancelRequested, TaskStatus::Canceled] {
            server.status = cancel.clone();
            let merged = merge_downloaded(Some(&local), server.clone(), now);
            assert_eq!(merged.status, cancel);
            assert_eq!(merged.worker_id, Some(me));
        }
        // The Server's `active` for a task nobody runs here.
        server.status = TaskStatus::Active;
        server.task_type.clear();
        let merged = merge_downloaded(None, server.clone(), now);
        assert_eq!(merged.status, TaskStatus::ClaimedByManager);
        assert_eq!(merged.task_type, UNKNOWN_TASK_TYPE);
        let done = task(TaskStatus::Completed, Some(me));
        assert_eq!(
            merge_downloaded(Some(&done), server, now).status,
            TaskStatus::Completed
        );
    }

    #[test]
    fn refetch_verdicts_release_the_reservation() {
        let me = ObjectId::new();
        let now = Utc::now();
        let mut local = task(TaskStatus::Active, Some(me));
        local.priority = 100;
        let gone = after_refetch(&local, &Refetched::Gone, now);
        assert_eq!(gone.status, TaskStatus::Canceled);
        assert_eq!(gone.priority, 100);
        assert_eq!(gone.worker_id, None);
        let mut server = local.clone();
        server.status = TaskStatus::Active;
        server.priority = 5;
        let changed = after_refetch(&local, &Refetched::Changed(Box::new(server)), now);
        assert_eq!(changed.status, TaskStatus::ClaimedByManager);
        assert_eq!(changed.priority, 5);
        assert_eq!(changed.worker_id, None);
    }

    #[test]
    fn cancel_list_decisions() {
        let id = ObjectId::new();
        let now = Utc::now();
        let running = task(TaskStatus::Active, Some(ObjectId::new()));
        assert_eq!(
            upstream_cancel(id, Some(&running), true, now),
            UpstreamCancel::RequestCancel
        );
        let queued = task(TaskStatus::Queued, None);
        assert_eq!(
            upstream_cancel(id, Some(&queued), true, now),
            UpstreamCancel::AlreadyPending
        );
        let UpstreamCancel::Queue(u) = upstream_cancel(id, Some(&queued), false, now) else {
            panic!("queue an update");
        };
        assert_eq!(u.task_status, Some(TaskStatus::Canceled));
        assert_eq!(u.worker, "");
        let failed = task(TaskStatus::Failed, None);
        let UpstreamCancel::Queue(u) = upstream_cancel(id, Some(&failed), false, now) else {
            panic!("queue an update");
        };
        assert_eq!(u.task_status, Some(TaskStatus::Failed));
        let UpstreamCancel::Queue(u) = upstream_cancel(id, None, false, now) else {
            panic!("queue an update");
        };
        assert_eq!(u.task_status, Some(TaskStatus::Canceled));
    }
}
