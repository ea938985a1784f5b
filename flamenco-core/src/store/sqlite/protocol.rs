//! The protocol operations (claim, worker updates, may-i-run, return, sign-off, queued
//! Manager updates, un-assignment). Each runs as ONE write job, so it is one transaction:
//! it reads the task inside the transaction, decides with the shared functions of
//! [`crate::updates`], and writes the task, the outbox and the worker together.

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::rows::as_stored;
use super::{outbox, tasks, workers};
use crate::model::{ObjectId, Task, TaskStatus, TaskUpdate};
use crate::store::{ClaimRequest, Claimed, StoreResult};
use crate::updates::{
    self, check_worker_update, decide_return, local_status_after, MayIRun, ReturnOutcome,
    WorkerUpdateOutcome,
};

/// The local effect of queueing `update` (v2 §7.2 step 2): the status per
/// [`local_status_after`], a non-empty activity, and `last_updated`. The log and the
/// progress fields are never stored on the task.
fn apply_locally(task: &mut Task, update: &TaskUpdate) {
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

/// Queue `update` and apply it to `task` in memory; the caller saves the task.
fn queue_for(conn: &Connection, task: &mut Task, update: &TaskUpdate) -> StoreResult<()> {
    outbox::insert(conn, update)?;
    apply_locally(task, update);
    Ok(())
}

/// `Store::claim_task`.
pub(super) fn claim(conn: &Connection, req: &ClaimRequest) -> StoreResult<Option<Claimed>> {
    let (before, already_assigned) = match tasks::active_for_worker(conn, req.worker_id)? {
        Some(task) => (task, true),
        None => match tasks::next_schedulable(conn, &req.task_types)? {
            Some(task) => (task, false),
            None => return Ok(None),
        },
    };
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
    // v2 §6.4 step 3.
    workers::set_current_task(conn, req.worker_id, task.id)?;
    // Answer with the task as stored, times in whole milliseconds.
    task.last_worker_ping = task.last_worker_ping.map(as_stored);
    task.last_updated = task.last_updated.map(as_stored);
    Ok(Some(Claimed {
        task,
        already_assigned,
    }))
}

/// `Store::unassign_task`.
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

/// `Store::apply_worker_update`.
pub(super) fn apply_worker_update(
    conn: &Connection,
    worker_id: ObjectId,
    update: &TaskUpdate,
) -> StoreResult<WorkerUpdateOutcome> {
    let loaded = tasks::get_state(conn, update.task_id)?;
    let outcome = check_worker_update(loaded.as_ref(), worker_id);
    let (WorkerUpdateOutcome::Applied, Some(before)) = (&outcome, loaded) else {
        return Ok(outcome);
    };
    let mut task = before.clone();
    let now = update.received_on_manager;
    // v2 §4.4 step 8: the ping.
    task.last_worker_ping = Some(now);
    task.worker_id = Some(worker_id);
    workers::ping(
        conn,
        worker_id,
        now,
        update.task_status.as_ref().map(|s| s.as_str()),
    )?;
    // Step 9: queue it.
    queue_for(conn, &mut task, update)?;
    tasks::save_changes(conn, &before, &task)?;
    Ok(outcome)
}

/// `Store::may_i_run`.
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

/// `Store::return_task`.
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

/// `Store::sign_off_worker`.
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

/// `Store::queue_update`: a missing task only gets the outbox entry.
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
