//! The protocol operations (claim, reservation, worker updates, may-i-run, return,
//! sign-off, queued Manager updates, un-assignment) without multi-document transactions.
//!
//! Each one reads the task, decides with the shared functions of [`crate::updates`], and
//! writes the task with ONE compare-and-set `update_one`/`find_one_and_update` whose
//! filter holds what the decision was based on (status and `worker_id`, see
//! [`tasks::save`]). If another writer (another request, another Manager on the same
//! database) changed the task in between, nothing is written and the operation reads
//! and decides again; a claim takes the best candidate still free instead (see
//! [`pick_and_take`]).
//!
//! The task write also queues the operation's updates in the task document
//! (`outbox_entries`): the change and its updates are stored together or not at all, so
//! no crash can leave one without the other. All writes use the store's write concern
//! (majority, journaled, unless the URL says otherwise), so an acknowledged update is
//! durable. The worker's log lines are appended after the task write (`logs::append`),
//! and only then is the worker answered; a crash in between leaves the update stored
//! and queued without its lines, and the worker, answered nothing, sends the update
//! again (stored and queued twice then: delivery is at-least-once).
//!
//! A claim whose worker is not answered (a crash after the take) leaves the task
//! `active` for the worker with its assignment queued; the worker's next `/task` finds it
//! as already assigned and gets it again (queued once more).

use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Bson, Document};

use super::batch::{self, Statement};
use super::claim_read::{self, CandidateBatch};
use super::codec::{date, oid};
use super::errors::Mongo;
use super::outbox_entries::{self as entries, Pending};
use super::MongoStore;
use super::{logs, outbox, tasks, workers, Db};
use crate::model::{ObjectId, Task, TaskStatus, TaskUpdate};
use crate::store::logs::LogEnd;
use crate::store::{ClaimRequest, Claimed, Seen, StoreError, StoreResult, TaskLogLimits, TaskPing};
use crate::updates::{
    self, check_worker_update, decide_return, local_status_after, MayIRun, ReturnOutcome,
    TaskRunState, WorkerUpdateOutcome,
};

/// How often an operation re-reads a task that changed under it before giving up with
/// `Unavailable` (the caller answers 503 and the worker tries again).
pub(super) const CAS_ATTEMPTS: usize = 16;

/// A claim reads the candidates at most this many times (each time after losing every
/// candidate of a batch to other claimers) before answering `Unavailable`.
const CLAIM_ROUNDS: usize = 64;

pub(super) fn kept_changing(task: ObjectId) -> StoreError {
    StoreError::Unavailable(format!(
        "task {task} kept changing while this request tried to update it; try again"
    ))
}

pub(super) use crate::updates::apply_locally;

// ---- claim ----

/// The two updates an assignment of task `task_id` queues (v2 §6.4 steps 2, 7).
fn assignment_updates(task_id: ObjectId, req: &ClaimRequest) -> Vec<TaskUpdate> {
    vec![
        updates::assignment_status_update(task_id, req.now),
        updates::assignment_log_update(task_id, &req.ident, req.now),
    ]
}

/// The task as assigned to the worker, and the two updates to queue with it. The
/// worker's `current_task` (v2 §6.4 step 3) is written with the deferred "seen"
/// (`crate::seen`, `Seen::current_task`).
fn assigned(before: &Task, req: &ClaimRequest) -> (Task, Vec<TaskUpdate>) {
    let mut task = before.clone();
    let queued = assignment_updates(task.id, req);
    for update in &queued {
        apply_locally(&mut task, update);
    }
    task.worker.clone_from(&req.nickname);
    task.worker_id = Some(req.worker_id);
    task.last_worker_ping = Some(req.now);
    (task, queued)
}

/// Save `after` and queue `update` in the same write (`tasks::save_queueing`).
async fn save_with(db: &Db, before: &Task, after: &Task, update: &TaskUpdate) -> StoreResult<bool> {
    let pending = entries::pending(db, std::slice::from_ref(update));
    tasks::save_queueing(db, before, after, Document::new(), &pending).await
}

/// The reservation that [`tasks::take_best`] writes, applied to `before`.
fn reserved(before: &Task, req: &ClaimRequest) -> Task {
    let mut task = before.clone();
    task.status = TaskStatus::Active;
    task.worker_id = Some(req.worker_id);
    task.last_worker_ping = Some(req.now);
    task.last_updated = Some(req.now);
    task
}

/// Choose the task for this worker and take it; `change` gives the task as it should be
/// stored (plus whatever the caller needs from it), and `taking` says the same to the
/// server for a task taken from the candidates. Returns the task as stored, that value,
/// and whether the worker already had the task.
///
/// 1. The worker's own `active` task, if any: `own`, as the caller read it (with
///    [`claim_read::own_and_first_batch`], which `super::claims` also asks for the
///    worker's stopped tasks), taken with one compare-and-set on its status and
///    `worker_id` (read again with [`tasks::active_for_worker`] if that fails).
/// 2. Otherwise the candidates, best first, [`claim_read::CLAIM_BATCH`] at a time: the
///    first batch `first`, read with `own` in the same command when the caller did so,
///    later ones with one sorted query with a limit and one query for their parents
///    ([`claim_read::candidate_batch`]). Then ONE
///    `find_one_and_update` ([`tasks::take_best`]), sorted like the claim, whose filter
///    holds the ids of the batch's unblocked candidates plus "still schedulable, of the
///    worker's types", takes the best of them that no other claimer took meanwhile
///    (compare-and-set over the batch: a candidate taken by another claimer no longer
///    matches, and the next one in order is taken instead; concurrent claimers do not
///    pile up on the same candidate). It writes everything a claim writes (`worker` and
///    the assignment activity included) and answers with the stored task. When the whole
///    batch was taken, the query is read again (taken tasks drop out of it; blocked ones
///    are skipped).
///
/// Two Managers on one database therefore never hand out the same task: only one
/// compare-and-set can move it out of its schedulable status.
pub(super) async fn pick_and_take(
    db: &Db,
    req: &ClaimRequest,
    own: Option<Task>,
    first: Option<CandidateBatch>,
    change: impl Fn(&Task) -> (Task, Vec<TaskUpdate>),
    taking: tasks::Taking<'_>,
) -> StoreResult<Option<Claimed>> {
    let mut own = own;
    for attempt in 0.. {
        let Some(before) = own.take() else {
            break;
        };
        let (after, queued) = change(&before);
        let pending = entries::pending(db, &queued);
        // The answer is the whole task as stored, also when `before` was a state read.
        if let Some(task) = tasks::save_returning(db, &before, &after, &pending).await? {
            return Ok(Some(Claimed {
                task,
                already_assigned: true,
            }));
        }
        if attempt + 1 >= CAS_ATTEMPTS {
            return Err(kept_changing(before.id));
        }
        own = tasks::active_for_worker(db, req.worker_id).await?;
    }
    if req.task_types.is_empty() {
        return Ok(None);
    }
    // Blocked candidates stay at the head of the query; taken ones drop out of it.
    let mut first = first;
    let mut blocked_seen = 0;
    for _ in 0..CLAIM_ROUNDS {
        let batch = match first.take() {
            Some(batch) => batch,
            None => claim_read::candidate_batch(db, req, blocked_seen).await?,
        };
        if batch.is_empty() {
            return Ok(None);
        }
        blocked_seen += batch.blocked;
        let free = batch.free;
        if free.is_empty() {
            continue;
        }
        let Some(task) = tasks::take_best(db, &free, req, taking).await? else {
            continue; // all of them were taken meanwhile
        };
        return Ok(Some(Claimed {
            task,
            already_assigned: false,
        }));
    }
    Err(StoreError::Unavailable(
        "every task this worker could get was taken by others meanwhile; try again".into(),
    ))
}

/// The worker's oldest `active` task and the first batch of candidates: one command
/// ([`claim_read::own_and_first_batch`]).
async fn first_read(
    db: &Db,
    req: &ClaimRequest,
) -> StoreResult<(Option<Task>, Option<CandidateBatch>)> {
    let read =
        claim_read::own_and_first_batch(db, req, tasks::active_for_worker_filter(req.worker_id))
            .await?;
    Ok((read.own.into_iter().next(), read.batch))
}

/// `WorkerProtocolStore::claim_task`.
pub(super) async fn claim(db: &Db, req: &ClaimRequest) -> StoreResult<Option<Claimed>> {
    let (own, first) = first_read(db, req).await?;
    claim_with_own(db, req, own, first).await
}

/// [`claim`], the worker's own `active` task (the oldest, if any) and the first batch of
/// candidates already read.
pub(super) async fn claim_with_own(
    db: &Db,
    req: &ClaimRequest,
    own: Option<Task>,
    first: Option<CandidateBatch>,
) -> StoreResult<Option<Claimed>> {
    // The updates of an assignment of whichever candidate the take chooses.
    let placeholder = ObjectId::new();
    let queued = entries::pending(db, &assignment_updates(placeholder, req));
    let taking = tasks::Taking::Assignment {
        nickname: &req.nickname,
        ident: &req.ident,
        queued: &queued,
        placeholder,
    };
    let change = |before: &Task| assigned(before, req);
    pick_and_take(db, req, own, first, change, taking).await
}

/// `UpstreamStore::reserve_task`: the claim's choice and compare-and-set, with only `active`,
/// `worker_id` and the times written.
pub(super) async fn reserve(db: &Db, req: &ClaimRequest) -> StoreResult<Option<Claimed>> {
    let (own, first) = first_read(db, req).await?;
    pick_and_take(
        db,
        req,
        own,
        first,
        |before| (reserved(before, req), Vec::new()),
        tasks::Taking::Reservation,
    )
    .await
}

/// Is `task` still reserved (or assigned) to this worker?
fn held_by(task: &Task, worker_id: ObjectId) -> bool {
    task.status == TaskStatus::Active && task.worker_id == Some(worker_id)
}

/// `UpstreamStore::confirm_claim`.
pub(super) async fn confirm(
    db: &Db,
    task_id: ObjectId,
    req: &ClaimRequest,
) -> StoreResult<Option<Claimed>> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(before) = tasks::get(db, task_id).await? else {
            return Ok(None);
        };
        if !held_by(&before, req.worker_id) {
            return Ok(None);
        }
        let (after, queued) = assigned(&before, req);
        let pending = entries::pending(db, &queued);
        if let Some(task) = tasks::save_returning(db, &before, &after, &pending).await? {
            // Whether the worker had it before is what the reservation said.
            return Ok(Some(Claimed {
                task,
                already_assigned: false,
            }));
        }
    }
    Err(kept_changing(task_id))
}

/// `WorkerProtocolStore::unassign_task`.
pub(super) async fn unassign(db: &Db, worker_id: ObjectId, update: &TaskUpdate) -> StoreResult<()> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(before) = tasks::get_state(db, update.task_id).await? else {
            return Ok(());
        };
        if before.status != TaskStatus::Active || before.worker_id != Some(worker_id) {
            return Ok(());
        }
        let mut after = before.clone();
        apply_locally(&mut after, update);
        if save_with(db, &before, &after, update).await? {
            return Ok(());
        }
    }
    Err(kept_changing(update.task_id))
}

// ---- worker updates ----

/// The statuses for which a worker's update asking for `new` is decided differently from
/// "any other status": refused by [`check_worker_update`], or given another local status
/// by [`local_status_after`]. Found by asking those functions about every known status;
/// also returns the local status for all the others (`None`: the status is kept).
fn special_statuses(
    worker_id: ObjectId,
    new: Option<&TaskStatus>,
) -> (Vec<String>, Option<TaskStatus>) {
    let any_other = TaskStatus::Other(String::new());
    let generic = new.map(|n| local_status_after(&any_other, n));
    let mut special = Vec::new();
    for status in TaskStatus::KNOWN {
        let mut probe = Task::new("", "", Vec::new());
        probe.status = status.clone();
        probe.worker_id = Some(worker_id);
        let refused = check_worker_update(Some(&probe), worker_id) != WorkerUpdateOutcome::Applied;
        let differs = new.map(|n| local_status_after(&status, n)) != generic;
        if refused || differs {
            special.push(status.as_str().to_string());
        }
    }
    (special, generic.flatten())
}

/// The common case in one compare-and-set, without reading the task first: the task is
/// not assigned to another worker (`worker_id` missing, null or this worker) and its
/// status is none of the [`special_statuses`]. False when that does not hold (or the task
/// does not exist, or its outbox has no room for `queued`). The same write queues
/// `queued` (the update) in the task and, when the update has log lines, takes their
/// place at the end of the task's log (`logs::reserve`; the write then answers with
/// where the log ended before it, for `logs::append_at`).
async fn quick_update(
    db: &Db,
    worker_id: ObjectId,
    update: &TaskUpdate,
    queued: &Pending,
    log_limits: TaskLogLimits,
) -> StoreResult<Quick> {
    let now = update.received_on_manager;
    let (mut special, status) = special_statuses(worker_id, update.task_status.as_ref());
    // A `soft-failed` task may get the late words of a worker that failed it
    // (`retries`): always the checked path.
    special.push(TaskStatus::SoftFailed.as_str().to_string());
    let mut filter = doc! {
        "_id": oid(update.task_id),
        "worker_id": { "$in": [Bson::Null, oid(worker_id)] },
        "status": { "$nin": special },
    };
    filter.extend(queued.room());
    let mut set = doc! {
        "last_worker_ping": date(now),
        "worker_id": oid(worker_id),
        "last_updated": date(now),
    };
    if !update.activity.is_empty() {
        set.insert("activity", update.activity.as_str());
    }
    if let Some(status) = status {
        set.insert("status", status.as_str());
    }
    let mut write = doc! { "$set": set };
    write.extend(queued.ops());
    let Some(log_place) = logs::reserve(&update.log, log_limits) else {
        let result = db.tasks.update_one(filter, write).await.db()?;
        return Ok(if result.matched_count > 0 {
            Quick::Applied { log_at: None }
        } else {
            Quick::NotApplied
        });
    };
    match write.get_document_mut("$inc") {
        Ok(inc) => inc.extend(log_place),
        Err(_) => {
            write.insert("$inc", log_place);
        }
    }
    let before = db
        .tasks
        .find_one_and_update(filter, write)
        .projection(logs::end_projection())
        .return_document(mongodb::options::ReturnDocument::Before)
        .await
        .db()?;
    Ok(match before {
        Some(task) => Quick::Applied {
            log_at: Some(logs::end_in_task(&task)?),
        },
        None => Quick::NotApplied,
    })
}

/// What [`quick_update`] did.
enum Quick {
    /// The task did not match: the checked path decides.
    NotApplied,
    /// Written and queued; `log_at`: where the update's log lines go.
    Applied { log_at: Option<LogEnd> },
}

/// Save `after` and queue `update` in the same write if the task is as in `before` and
/// its outbox has room; a full outbox is `Unavailable` ([`entries::full`]).
async fn save_worker_update(
    db: &Db,
    before: &Task,
    after: &Task,
    update: &TaskUpdate,
) -> StoreResult<bool> {
    let queued = entries::pending(db, std::slice::from_ref(update));
    if tasks::save_queueing(db, before, after, queued.room(), &queued).await? {
        return Ok(true);
    }
    if entries::is_full(db, before.id, &queued).await? {
        return Err(entries::full(before.id));
    }
    Ok(false)
}

/// The general case: read the task, decide, compare-and-set; again if it changed.
async fn checked_update(
    db: &Db,
    worker_id: ObjectId,
    update: &TaskUpdate,
) -> StoreResult<WorkerUpdateOutcome> {
    for _ in 0..CAS_ATTEMPTS {
        let loaded = tasks::get_state(db, update.task_id).await?;
        let outcome = check_worker_update(loaded.as_ref(), worker_id);
        let (true, Some(before)) = (outcome.is_accepted(), loaded) else {
            return Ok(outcome);
        };
        if before.status == TaskStatus::SoftFailed
            && crate::jobs::retry::is_late_word(
                &before.status,
                &super::retries::failures(db, before.id).await?,
                worker_id,
            )
        {
            // The late words of a worker that failed it: the log only (no ping, no
            // status, the task stays free for another worker).
            let outcome = WorkerUpdateOutcome::LastWords(TaskStatus::SoftFailed);
            let queued = updates::without_status(&outcome, update.clone());
            if save_worker_update(db, &before, &before, &queued).await? {
                return Ok(outcome);
            }
            continue;
        }
        let mut after = before.clone();
        // v2 §4.4 step 8: the ping; step 9: the local effect (last words: no status).
        after.last_worker_ping = Some(update.received_on_manager);
        after.worker_id = Some(worker_id);
        let queued = updates::without_status(&outcome, update.clone());
        apply_locally(&mut after, &queued);
        if save_worker_update(db, &before, &after, &queued).await? {
            return Ok(outcome);
        }
    }
    Err(kept_changing(update.task_id))
}

/// `WorkerProtocolStore::apply_worker_update`: the task write, which also queues the update
/// in the task, then the log lines (`logs::append`); success is returned only after both.
/// The last words of a canceled task are stored and queued without their status.
pub(super) async fn apply_worker_update(
    db: &Db,
    worker_id: ObjectId,
    update: TaskUpdate,
    log_limits: TaskLogLimits,
    policy: crate::jobs::retry::RetryPolicy,
) -> StoreResult<WorkerUpdateOutcome> {
    if policy.enabled && update.task_status == Some(TaskStatus::Failed) {
        return super::retries::apply_failed(db, worker_id, update, log_limits, &policy).await;
    }
    apply_worker_update_plain(db, worker_id, update, log_limits).await
}

/// [`apply_worker_update`] without retries: v2's rules.
pub(super) async fn apply_worker_update_plain(
    db: &Db,
    worker_id: ObjectId,
    update: TaskUpdate,
    log_limits: TaskLogLimits,
) -> StoreResult<WorkerUpdateOutcome> {
    let queued = entries::pending(db, std::slice::from_ref(&update));
    match quick_update(db, worker_id, &update, &queued, log_limits).await? {
        Quick::Applied { log_at: Some(at) } => {
            logs::append_at(db, update.task_id, at, &update.log, log_limits).await?;
        }
        Quick::Applied { log_at: None } => {}
        Quick::NotApplied => {
            let outcome = checked_update(db, worker_id, &update).await?;
            if outcome.is_accepted() {
                logs::append(db, update.task_id, &update.log, log_limits).await?;
            }
            return Ok(outcome);
        }
    }
    // The worker's `current_task_updated`/`current_task_status` are the caller's, written
    // with the next "seen" flush (`crate::seen`, `write_deferred`).
    Ok(WorkerUpdateOutcome::Applied)
}

/// `WorkerProtocolStore::may_i_run`.
pub(super) async fn may_i_run(
    db: &Db,
    task_id: ObjectId,
    worker_id: ObjectId,
    now: DateTime<Utc>,
) -> StoreResult<MayIRun> {
    for _ in 0..CAS_ATTEMPTS {
        let loaded = tasks::get_state(db, task_id).await?;
        let answer = MayIRun::decide(loaded.as_ref(), worker_id);
        let (MayIRun::Yes, Some(before)) = (&answer, loaded) else {
            return Ok(answer);
        };
        let mut after = before.clone();
        after.last_worker_ping = Some(now);
        after.worker_id = Some(worker_id);
        if tasks::save(db, &before, &after, Document::new()).await? {
            workers::ping(db, worker_id, now, None).await?;
            return Ok(answer);
        }
    }
    Err(kept_changing(task_id))
}

/// The statuses in which a ping is written (the task is still runnable).
const PINGABLE: [&str; 3] = ["queued", "claimed-by-manager", "active"];

/// The task half of [`record_pings`]: one batched update of the tasks (still runnable,
/// still this worker's; `$max` never moves the ping back). Returns the workers' halves
/// of the pings that held, as statements for the workers' batch. When every ping
/// matched (the common case) that is all of them; otherwise one read finds which held.
async fn ping_tasks(db: &Db, pings: &[TaskPing]) -> StoreResult<Vec<Statement>> {
    if pings.is_empty() {
        return Ok(Vec::new());
    }
    let statements = pings
        .iter()
        .map(|ping| Statement {
            filter: doc! {
                "_id": oid(ping.task_id),
                "worker_id": oid(ping.worker_id),
                "status": { "$in": PINGABLE.to_vec() },
            },
            update: doc! { "$max": { "last_worker_ping": date(ping.at) } },
        })
        .collect();
    let matched = batch::update_each(&db.tasks, statements).await?;
    let held: Vec<&TaskPing> = if usize::try_from(matched).ok() == Some(pings.len()) {
        pings.iter().collect()
    } else {
        let ids: Vec<Bson> = pings.iter().map(|p| oid(p.task_id)).collect();
        let still = tasks::pingable(db, ids, &PINGABLE).await?;
        pings
            .iter()
            .filter(|p| still.contains(&(p.task_id, p.worker_id)))
            .collect()
    };
    Ok(held
        .into_iter()
        .map(|p| workers::ping_statement(p.worker_id, p.at))
        .collect())
}

/// `WorkerProtocolStore::record_pings`: two commands for any number of pings (one
/// batched update of the tasks, one of the workers; a read between them when some
/// task changed meanwhile).
pub(super) async fn record_pings(db: &Db, pings: &[TaskPing]) -> StoreResult<()> {
    let worker_pings = ping_tasks(db, pings).await?;
    if !worker_pings.is_empty() {
        batch::update_each(&db.workers, worker_pings).await?;
    }
    Ok(())
}

/// `WorkerProtocolStore::write_deferred`: the pings' task half first, then ONE batched
/// update of the workers with every contact (and task report) and the pings' worker
/// half. Two commands per flush (one without pings).
pub(super) async fn write_deferred(
    db: &Db,
    seen: &[(ObjectId, Seen)],
    pings: &[TaskPing],
) -> StoreResult<()> {
    let mut statements: Vec<Statement> = seen
        .iter()
        .map(|(id, contact)| workers::seen_statement(*id, contact))
        .collect();
    statements.extend(ping_tasks(db, pings).await?);
    if !statements.is_empty() {
        batch::update_each(&db.workers, statements).await?;
    }
    Ok(())
}

/// `WorkerProtocolStore::return_task`.
pub(super) async fn return_task(
    db: &Db,
    task_id: ObjectId,
    worker_id: ObjectId,
    ident: &str,
    now: DateTime<Utc>,
) -> StoreResult<ReturnOutcome> {
    for _ in 0..CAS_ATTEMPTS {
        let loaded = tasks::get_state(db, task_id).await?;
        let outcome = decide_return(loaded.as_ref(), worker_id);
        let (Some(update), Some(before)) = (
            updates::return_update(task_id, ident, &outcome, now),
            loaded,
        ) else {
            return Ok(outcome);
        };
        let mut after = before.clone();
        if outcome == ReturnOutcome::Requeued {
            after.worker_id = None;
        }
        apply_locally(&mut after, &update);
        if save_with(db, &before, &after, &update).await? {
            return Ok(outcome);
        }
    }
    Err(kept_changing(task_id))
}

/// `WorkerProtocolStore::sign_off_worker`.
pub(super) async fn sign_off(
    db: &Db,
    worker_id: ObjectId,
    now: DateTime<Utc>,
) -> StoreResult<Vec<ObjectId>> {
    let ident = match workers::get(db, worker_id).await? {
        Some(worker) => worker.identifier(),
        None => worker_id.to_string(),
    };
    let mut requeued = Vec::new();
    for listed in tasks::active_states_for_worker(db, worker_id).await? {
        let id = listed.id;
        let mut current = Some(listed);
        let mut attempts = 0;
        while let Some(before) = current.take() {
            if before.status != TaskStatus::Active || before.worker_id != Some(worker_id) {
                break; // no longer this worker's active task
            }
            attempts += 1;
            if attempts > CAS_ATTEMPTS {
                return Err(kept_changing(id));
            }
            let update = updates::sign_off_requeue_update(id, &ident, now);
            let mut after = before.clone();
            apply_locally(&mut after, &update);
            if save_with(db, &before, &after, &update).await? {
                requeued.push(id);
                break;
            }
            current = tasks::get_state(db, id).await?;
        }
    }
    workers::signed_off(db, worker_id).await?;
    Ok(requeued)
}

/// `WorkerProtocolStore::queue_update`: a missing task only gets the outbox entry.
pub(super) async fn queue_update(db: &Db, update: &TaskUpdate) -> StoreResult<()> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(before) = tasks::get_state(db, update.task_id).await? else {
            return outbox::insert(db, std::slice::from_ref(update)).await;
        };
        let mut after = before.clone();
        apply_locally(&mut after, update);
        if save_with(db, &before, &after, update).await? {
            return Ok(());
        }
    }
    Err(kept_changing(update.task_id))
}

#[async_trait::async_trait]
impl crate::store::WorkerProtocolStore for MongoStore {
    async fn claim_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>> {
        self.run(super::protocol::claim(&self.db, req)).await
    }

    async fn unassign_task(&self, worker_id: ObjectId, update: TaskUpdate) -> StoreResult<()> {
        self.run(super::protocol::unassign(&self.db, worker_id, &update))
            .await
    }

    async fn apply_worker_update(
        &self,
        worker_id: ObjectId,
        update: TaskUpdate,
    ) -> StoreResult<WorkerUpdateOutcome> {
        let limits = crate::store::TaskLogStore::task_log_limits(self);
        let policy = crate::store::RetryStore::retry_policy(self);
        self.run(super::protocol::apply_worker_update(
            &self.db, worker_id, update, limits, policy,
        ))
        .await
    }

    async fn may_i_run(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<MayIRun> {
        self.run(super::protocol::may_i_run(
            &self.db, task_id, worker_id, now,
        ))
        .await
    }

    async fn get_task_state(&self, id: ObjectId) -> StoreResult<Option<TaskRunState>> {
        self.run(super::tasks::run_state(&self.db, id)).await
    }

    async fn record_pings(&self, pings: &[TaskPing]) -> StoreResult<()> {
        self.run(super::protocol::record_pings(&self.db, pings))
            .await
    }

    async fn write_deferred(
        &self,
        seen: &[(ObjectId, Seen)],
        pings: &[TaskPing],
    ) -> StoreResult<()> {
        self.run(super::protocol::write_deferred(&self.db, seen, pings))
            .await
    }

    async fn return_task(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        ident: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ReturnOutcome> {
        self.run(super::protocol::return_task(
            &self.db, task_id, worker_id, ident, now,
        ))
        .await
    }

    async fn sign_off_worker(
        &self,
        worker_id: ObjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>> {
        self.run(super::protocol::sign_off(&self.db, worker_id, now))
            .await
    }

    async fn queue_update(&self, update: TaskUpdate) -> StoreResult<()> {
        self.run(super::protocol::queue_update(&self.db, &update))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_statuses_follow_the_shared_rules() {
        let w = ObjectId::new();
        let (special, status) = special_statuses(w, None);
        assert_eq!(special, vec!["canceled", "cancel-requested"]);
        assert_eq!(status, None);
        let (special, status) = special_statuses(w, Some(&TaskStatus::Active));
        assert_eq!(
            special,
            vec!["completed", "failed", "canceled", "cancel-requested"]
        );
        assert_eq!(status, Some(TaskStatus::Active));
        let (special, status) = special_statuses(w, Some(&TaskStatus::Completed));
        assert_eq!(special, vec!["canceled", "cancel-requested"]);
        assert_eq!(status, Some(TaskStatus::Completed));
    }
}
