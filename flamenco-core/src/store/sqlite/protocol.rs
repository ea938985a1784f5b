//! The protocol operations (claim, worker updates, may-i-run, return, sign-off, queued
//! Manager updates, un-assignment, and the upstream ones: downloads, reservations, the
//! cancel list). Each runs as ONE write job, so it is one transaction:
//! it reads the task inside the transaction, decides with the shared functions of
//! [`crate::updates`], and writes the task, the outbox and the worker together.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::rows::{as_stored, blob, ms, Db};
use super::SqliteStore;
use super::{logs, outbox, retries, tasks, workers};
use crate::jobs::retry::{self, RetryPolicy};
use crate::model::{ObjectId, Task, TaskStatus, TaskUpdate};
use crate::store::{
    CancelReport, ClaimRequest, Claimed, MergeReport, Seen, StoreResult, TaskLogLimits, TaskPing,
    TaskReport,
};
use crate::updates::{
    self, apply_locally, check_worker_update, decide_return, MayIRun, Refetched, ReturnOutcome,
    TaskRunState, UpstreamCancel, WorkerUpdateOutcome,
};

/// Queue `update` and apply it to `task` in memory; the caller saves the task.
fn queue_for(conn: &Connection, task: &mut Task, update: &TaskUpdate) -> StoreResult<()> {
    outbox::insert(conn, update)?;
    apply_locally(task, update);
    Ok(())
}

/// The task a claim for this worker gets (v2 §6.2): its own `active` task again, or the
/// best schedulable one. The flag tells which.
pub(super) fn pick(conn: &Connection, req: &ClaimRequest) -> StoreResult<Option<(Task, bool)>> {
    if let Some(task) = tasks::active_for_worker(conn, req.worker_id)? {
        return Ok(Some((task, true)));
    }
    Ok(
        tasks::next_schedulable(conn, req.worker_id, &req.task_types, &req.worker_tags)?
            .map(|t| (t, false)),
    )
}

/// Assign `before` (loaded in this transaction) to the worker: v2 §6.4 steps 2, 3 and 7.
fn assign(
    conn: &Connection,
    before: Task,
    req: &ClaimRequest,
    already_assigned: bool,
) -> StoreResult<Claimed> {
    let mut task = before.clone();
    // v2 §6.4 step 2: the `active` update, with the assignment extras.
    let active = updates::assignment_status_update(task.id, req.now);
    outbox::insert(conn, &active)?;
    apply_locally(&mut task, &active);
    task.worker.clone_from(&req.nickname);
    task.worker_id = Some(req.worker_id);
    task.last_worker_ping = Some(req.now);
    // v2 §6.4 step 7: the "assigned" activity/log update.
    let assigned = updates::assignment_log_update(task.id, &req.ident, req.now);
    queue_for(conn, &mut task, &assigned)?;
    tasks::save_changes(conn, &before, &task)?;
    // v2 §6.4 step 3, the worker's `current_task`, is written with the deferred "seen"
    // (`crate::seen`, `Seen::current_task`).
    // Answer with the task as stored, times in whole milliseconds.
    task.last_worker_ping = task.last_worker_ping.map(as_stored);
    task.last_updated = task.last_updated.map(as_stored);
    Ok(Claimed {
        task,
        already_assigned,
    })
}

/// `WorkerProtocolStore::claim_task`.
pub(super) fn claim(conn: &Connection, req: &ClaimRequest) -> StoreResult<Option<Claimed>> {
    match pick(conn, req)? {
        Some((before, already_assigned)) => assign(conn, before, req, already_assigned).map(Some),
        None => Ok(None),
    }
}

/// `UpstreamStore::reserve_task`.
pub(super) fn reserve(conn: &Connection, req: &ClaimRequest) -> StoreResult<Option<Claimed>> {
    let Some((before, already_assigned)) = pick(conn, req)? else {
        return Ok(None);
    };
    let mut task = before.clone();
    task.status = TaskStatus::Active;
    task.worker_id = Some(req.worker_id);
    task.last_worker_ping = Some(as_stored(req.now));
    task.last_updated = Some(as_stored(req.now));
    tasks::save_changes(conn, &before, &task)?;
    Ok(Some(Claimed {
        task,
        already_assigned,
    }))
}

/// Is `task` still reserved (or assigned) to this worker?
fn held_by(task: &Task, worker_id: ObjectId) -> bool {
    task.status == TaskStatus::Active && task.worker_id == Some(worker_id)
}

/// `UpstreamStore::confirm_claim`.
pub(super) fn confirm(
    conn: &Connection,
    task_id: ObjectId,
    req: &ClaimRequest,
) -> StoreResult<Option<Claimed>> {
    match tasks::get(conn, task_id)? {
        // Whether the worker had it before is what the reservation said.
        Some(before) if held_by(&before, req.worker_id) => {
            assign(conn, before, req, false).map(Some)
        }
        _ => Ok(None),
    }
}

/// `UpstreamStore::release_claim`.
pub(super) fn release(
    conn: &Connection,
    task_id: ObjectId,
    worker_id: ObjectId,
    verdict: &Refetched,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    match tasks::get(conn, task_id)? {
        Some(before) if held_by(&before, worker_id) => {
            let after = updates::after_refetch(&before, verdict, now);
            tasks::upsert(conn, std::slice::from_ref(&after))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// `UpstreamStore::merge_downloaded_tasks`.
pub(super) fn merge_downloaded(
    conn: &Connection,
    downloaded: &[Task],
    now: DateTime<Utc>,
) -> StoreResult<MergeReport> {
    let mut report = MergeReport::default();
    for server in downloaded {
        let local = tasks::get_state(conn, server.id)?;
        let merged = updates::merge_downloaded(local.as_ref(), server.clone(), now);
        match &local {
            None => report.inserted += 1,
            Some(l) => {
                report.updated += 1;
                if l.status == TaskStatus::Active && merged.status == TaskStatus::Active {
                    report.kept_running += 1;
                }
            }
        }
        tasks::upsert(conn, std::slice::from_ref(&merged))?;
    }
    Ok(report)
}

/// `UpstreamStore::apply_upstream_cancels`.
pub(super) fn apply_upstream_cancels(
    conn: &Connection,
    ids: &[ObjectId],
    now: DateTime<Utc>,
) -> StoreResult<CancelReport> {
    let mut report = CancelReport::default();
    for &id in ids {
        let local = tasks::get_state(conn, id)?;
        let pending = outbox::final_update_pending(conn, id)?;
        match updates::upstream_cancel(id, local.as_ref(), pending, now) {
            UpstreamCancel::RequestCancel => {
                if let Some(before) = local {
                    let mut after = before.clone();
                    after.status = TaskStatus::CancelRequested;
                    after.last_updated = Some(now);
                    tasks::save_changes(conn, &before, &after)?;
                    report.cancel_requested.push(id);
                }
            }
            UpstreamCancel::Queue(update) => {
                match local {
                    Some(before) => {
                        let mut after = before.clone();
                        queue_for(conn, &mut after, &update)?;
                        tasks::save_changes(conn, &before, &after)?;
                    }
                    None => outbox::insert(conn, &update)?,
                }
                report.queued.push(id);
            }
            UpstreamCancel::AlreadyPending => report.already_pending += 1,
        }
    }
    Ok(report)
}

/// `WorkerProtocolStore::unassign_task`.
pub(super) fn unassign(
    conn: &Connection,
    worker_id: ObjectId,
    update: &TaskUpdate,
) -> StoreResult<()> {
    let Some(before) = tasks::get_state(conn, update.task_id)? else {
        return Ok(());
    };
    if before.status != TaskStatus::Active || before.worker_id != Some(worker_id) {
        return Ok(());
    }
    let mut task = before.clone();
    queue_for(conn, &mut task, update)?;
    tasks::save_changes(conn, &before, &task)
}

/// `WorkerProtocolStore::apply_worker_update`: the update's log lines are appended to the task's log in
/// the same transaction (`logs::append`). With retries in effect (`policy.enabled`), a
/// `failed` of a job's task is recorded and decided by [`crate::jobs::retry`] in the same
/// transaction (`retries::record_failure`): the task becomes `soft-failed` (no worker) or
/// `failed` for good, and a job left without workers is marked to fail (its reason; the
/// consumer fails it). The late words of a worker
/// that failed a `soft-failed` task keep their log but change nothing else.
pub(super) fn apply_worker_update(
    conn: &Connection,
    worker_id: ObjectId,
    update: TaskUpdate,
    log_limits: TaskLogLimits,
    policy: RetryPolicy,
) -> StoreResult<WorkerUpdateOutcome> {
    let loaded = tasks::get_state(conn, update.task_id)?;
    let mut outcome = check_worker_update(loaded.as_ref(), worker_id);
    let (true, Some(before)) = (outcome.is_accepted(), loaded) else {
        return Ok(outcome);
    };
    let late = policy.enabled
        && before.status == TaskStatus::SoftFailed
        && retry::is_late_word(
            &before.status,
            &retries::failures(conn, before.id)?,
            worker_id,
        );
    if late {
        outcome = WorkerUpdateOutcome::LastWords(TaskStatus::SoftFailed);
    }
    let mut update = updates::without_status(&outcome, update);
    logs::append(conn, update.task_id, &update.log, log_limits)?;
    let mut task = before.clone();
    let now = update.received_on_manager;
    if !late {
        // v2 §4.4 step 8: the ping.
        task.last_worker_ping = Some(now);
        task.worker_id = Some(worker_id);
    }
    // The worker's `current_task_updated`/`current_task_status` are the caller's, written
    // with the next "seen" flush (`crate::seen`).
    let mut stranded = None;
    if let (true, Some(job), Some(TaskStatus::Failed)) =
        (policy.enabled, before.job, update.task_status.as_ref())
    {
        // Retries are for the Manager's own jobs (standalone mode): a task whose job is
        // not stored here (a job source's) keeps v2's rule.
        if !before.status.is_final() && super::jobs::get(conn, job)?.is_some() {
            let decided = retries::record_failure(conn, &before, job, worker_id, now, &policy)?;
            if decided.status == TaskStatus::SoftFailed {
                // Runnable again, by another worker.
                task.worker_id = None;
                task.worker.clear();
            }
            stranded = decided.stranded.clone().map(|reason| (job, reason));
            update = retry::failure_update(update, &decided);
        }
    }
    // Step 9: queue it.
    queue_for(conn, &mut task, &update)?;
    tasks::save_changes(conn, &before, &task)?;
    if let Some((job, reason)) = stranded {
        retries::mark_stranded(conn, job, &reason)?;
    }
    Ok(outcome)
}

/// `WorkerProtocolStore::may_i_run`.
pub(super) fn may_i_run(
    conn: &Connection,
    task_id: ObjectId,
    worker_id: ObjectId,
    now: DateTime<Utc>,
) -> StoreResult<MayIRun> {
    let loaded = tasks::get_state(conn, task_id)?;
    let answer = MayIRun::decide(loaded.as_ref(), worker_id);
    if let (MayIRun::Yes, Some(before)) = (&answer, loaded) {
        let mut task = before.clone();
        task.last_worker_ping = Some(now);
        task.worker_id = Some(worker_id);
        tasks::save_changes(conn, &before, &task)?;
        workers::ping(conn, worker_id, now, None)?;
    }
    Ok(answer)
}

/// `WorkerProtocolStore::record_pings`: one statement per ping, only while the task is still runnable and
/// assigned to that worker, never moving `last_worker_ping` back.
pub(super) fn record_pings(conn: &Connection, pings: &[TaskPing]) -> StoreResult<()> {
    let mut task_stmt = conn
        .prepare_cached(
            "UPDATE tasks SET last_worker_ping = ?3 \
             WHERE id = ?1 AND worker_id = ?2 \
               AND status IN ('queued', 'claimed-by-manager', 'active') \
               AND COALESCE(last_worker_ping, 0) < ?3",
        )
        .db()?;
    for ping in pings {
        let changed = task_stmt
            .execute(params![
                blob(ping.task_id),
                blob(ping.worker_id),
                ms(ping.at)
            ])
            .db()?;
        if changed > 0 {
            let report = TaskReport {
                at: ping.at,
                status: None,
            };
            workers::report_task(conn, ping.worker_id, &report)?;
        }
    }
    Ok(())
}

/// `WorkerProtocolStore::return_task`.
pub(super) fn return_task(
    conn: &Connection,
    task_id: ObjectId,
    worker_id: ObjectId,
    ident: &str,
    now: DateTime<Utc>,
) -> StoreResult<ReturnOutcome> {
    let loaded = tasks::get_state(conn, task_id)?;
    let outcome = decide_return(loaded.as_ref(), worker_id);
    if let (Some(update), Some(before)) = (
        updates::return_update(task_id, ident, &outcome, now),
        loaded,
    ) {
        let mut task = before.clone();
        if outcome == ReturnOutcome::Requeued {
            task.worker_id = None;
        }
        queue_for(conn, &mut task, &update)?;
        tasks::save_changes(conn, &before, &task)?;
    }
    Ok(outcome)
}

/// `WorkerProtocolStore::sign_off_worker`.
pub(super) fn sign_off(
    conn: &Connection,
    worker_id: ObjectId,
    now: DateTime<Utc>,
) -> StoreResult<Vec<ObjectId>> {
    let ident = match workers::get(conn, worker_id)? {
        Some(worker) => worker.identifier(),
        None => worker_id.to_string(),
    };
    let mut requeued = Vec::new();
    for before in tasks::active_states_for_worker(conn, worker_id)? {
        let mut task = before.clone();
        let update = updates::sign_off_requeue_update(task.id, &ident, now);
        queue_for(conn, &mut task, &update)?;
        tasks::save_changes(conn, &before, &task)?;
        requeued.push(task.id);
    }
    workers::signed_off(conn, worker_id)?;
    Ok(requeued)
}

/// `WorkerProtocolStore::queue_update`: a missing task only gets the outbox entry.
pub(super) fn queue_update(conn: &Connection, update: &TaskUpdate) -> StoreResult<()> {
    match tasks::get_state(conn, update.task_id)? {
        Some(before) => {
            let mut task = before.clone();
            queue_for(conn, &mut task, update)?;
            tasks::save_changes(conn, &before, &task)
        }
        None => outbox::insert(conn, update),
    }
}

#[async_trait::async_trait]
impl crate::store::WorkerProtocolStore for SqliteStore {
    async fn claim_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>> {
        let req = req.clone();
        self.writer
            .run(move |c| super::protocol::claim(c, &req))
            .await
    }

    async fn unassign_task(&self, worker_id: ObjectId, update: TaskUpdate) -> StoreResult<()> {
        self.writer
            .run(move |c| super::protocol::unassign(c, worker_id, &update))
            .await
    }

    async fn apply_worker_update(
        &self,
        worker_id: ObjectId,
        update: TaskUpdate,
    ) -> StoreResult<WorkerUpdateOutcome> {
        let limits = crate::store::TaskLogStore::task_log_limits(self);
        let policy = crate::store::RetryStore::retry_policy(self);
        self.writer
            .run(move |c| {
                super::protocol::apply_worker_update(c, worker_id, update, limits, policy)
            })
            .await
    }

    async fn may_i_run(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<MayIRun> {
        self.writer
            .run(move |c| super::protocol::may_i_run(c, task_id, worker_id, now))
            .await
    }

    async fn get_task_state(&self, id: ObjectId) -> StoreResult<Option<TaskRunState>> {
        // A primary-key lookup behind every may-i-run: read on the calling thread.
        self.readers
            .run_here(move |c| super::tasks::run_state(c, id))
            .await
    }

    async fn record_pings(&self, pings: &[TaskPing]) -> StoreResult<()> {
        let pings = pings.to_vec();
        self.writer
            .run(move |c| super::protocol::record_pings(c, &pings))
            .await
    }

    async fn write_deferred(
        &self,
        seen: &[(ObjectId, Seen)],
        pings: &[TaskPing],
    ) -> StoreResult<()> {
        let (seen, pings) = (seen.to_vec(), pings.to_vec());
        self.writer
            .run(move |c| {
                for (id, contact) in &seen {
                    workers::seen(c, *id, contact)?;
                }
                super::protocol::record_pings(c, &pings)
            })
            .await
    }

    async fn return_task(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        ident: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ReturnOutcome> {
        let ident = ident.to_string();
        self.writer
            .run(move |c| super::protocol::return_task(c, task_id, worker_id, &ident, now))
            .await
    }

    async fn sign_off_worker(
        &self,
        worker_id: ObjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>> {
        self.writer
            .run(move |c| super::protocol::sign_off(c, worker_id, now))
            .await
    }

    async fn queue_update(&self, update: TaskUpdate) -> StoreResult<()> {
        self.writer
            .run(move |c| super::protocol::queue_update(c, &update))
            .await
    }
}
