//! Retries and per-job blocklists on MongoDB (docs/jobs.md, "Retries" and "Blocklist"):
//! a task's failure record is its `failures` array (`{worker_id, worker, at}`), a job's
//! blocklist the `flamenco_job_blocklist` collection, copied onto the job's tasks of that
//! type as `blocked_workers` so that the claim excludes both with `$ne` conditions of its
//! one query. A worker's `failed` is recorded with one compare-and-set on the task (the
//! decision from [`crate::jobs::retry`] on the record as read), like every protocol write.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::codec::{self, date, oid};
use super::errors::Mongo;
use super::protocol::{kept_changing, CAS_ATTEMPTS};
use super::{jobs, logs, outbox, tasks, workers, Db};
use crate::jobs::retry::{
    self, BlocklistEntry, NarrowedTask, RetryPolicy, Stranded, TaskFailure, TaskNeeds,
};
use crate::model::{ObjectId, TaskStatus, TaskUpdate};
use crate::store::retries::{MAX_BLOCKLIST_LISTED, MAX_STRANDED_SCAN};
use crate::store::{StoreResult, TaskLogLimits};
use crate::updates::{self, check_worker_update, WorkerUpdateOutcome};

/// The blocklist collection.
pub(super) const BLOCKLIST: &str = "flamenco_job_blocklist";

/// The statuses a claim may take (`tasks::candidates_query`).
const CLAIMABLE: [&str; 3] = ["queued", "claimed-by-manager", "soft-failed"];

fn failure_from_doc(d: &Document) -> StoreResult<TaskFailure> {
    let f = codec::Fields::new(d, codec::TASKS);
    Ok(TaskFailure {
        worker_id: f.id("worker_id")?,
        worker: f.opt_string("worker")?.unwrap_or_default(),
        at: f
            .opt_time("at")?
            .ok_or_else(|| f.corrupt("failures.at", "missing"))?,
    })
}

fn failures_from_task_doc(d: &Document) -> StoreResult<Vec<TaskFailure>> {
    match d.get("failures") {
        Some(Bson::Array(items)) => items
            .iter()
            .filter_map(|b| b.as_document())
            .map(failure_from_doc)
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// With retries in effect, the claim's candidate query (`tasks::candidates_query`) also
/// takes `soft-failed` tasks, and skips the tasks whose failure record names this worker
/// and those of a job and type it is blocklisted for. Without (upstream mode, the default
/// until the Manager sets the policy) the query is left as it is: no task is soft-failed
/// then, and the extra `$in` range costs a slow server time on every claim.
pub(super) fn exclusions(db: &Db, filter: &mut Document, worker_id: ObjectId) {
    if !db.retries.load(std::sync::atomic::Ordering::Acquire) {
        return;
    }
    filter.insert("status", doc! { "$in": CLAIMABLE.to_vec() });
    filter.insert("failures.worker_id", doc! { "$ne": oid(worker_id) });
    filter.insert("blocked_workers", doc! { "$ne": oid(worker_id) });
}

/// Workers this Manager knows to have blocklist entries: a hint, so that only their
/// claims read the blocklist (one `find`) to leave out their blocked jobs by `job`
/// ([`blocked_jobs`]), and every other claim sends the commands it sent before. Filled
/// at connect ([`load_hint`]) and by this Manager's own blocklisting; a worker whose read
/// finds no entry leaves it. An entry another Manager adds later is honoured all the same
/// (the claim's `blocked_workers` condition), only without the shortcut until this
/// Manager connects again.
#[derive(Default)]
pub(super) struct BlockedHint(std::sync::Mutex<HashSet<ObjectId>>);

impl BlockedHint {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<ObjectId>> {
        // A panic while holding the lock cannot leave the set half-changed.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn contains(&self, worker: ObjectId) -> bool {
        self.lock().contains(&worker)
    }
}

/// At most this many blocked jobs go into one claim's `$nin` (more is not a real farm:
/// each is a job in which this worker failed `blocklist_threshold` tasks).
const MAX_NIN_JOBS: i64 = 1_000;

/// Fill the hint with every worker that has a blocklist entry: one `distinct` at connect.
pub(super) async fn load_hint(db: &Db) -> StoreResult<()> {
    let workers = db
        .blocklist
        .distinct("worker_id", Document::new())
        .await
        .db()?;
    let mut hint = db.blocked_hint.lock();
    hint.extend(workers.iter().filter_map(|b| match b {
        Bson::ObjectId(o) => Some(ObjectId::from_bytes(o.bytes())),
        _ => None,
    }));
    Ok(())
}

/// The jobs the claiming worker is blocklisted for in every one of its task types, for
/// the claim's `job: {$nin: …}`: read only for a worker in the hint (one `find` of its
/// entries, served by `{worker_id, job, task_type}`); empty for every other worker, and
/// with retries off. A job blocked for some of its types only is left to the
/// `blocked_workers` condition, which is exact in every case; `$nin` on `job` (a key of
/// the candidates' index) lets the server pass a blocked job's tasks on the index keys
/// alone instead of fetching and filtering each document.
pub(super) async fn blocked_jobs(
    db: &Db,
    worker_id: ObjectId,
    task_types: &[String],
) -> StoreResult<Vec<Bson>> {
    if !db.retries.load(std::sync::atomic::Ordering::Acquire)
        || !db.blocked_hint.contains(worker_id)
    {
        return Ok(Vec::new());
    }
    let docs: Vec<Document> = db
        .blocklist
        .find(doc! { "worker_id": oid(worker_id) })
        .projection(doc! { "_id": 0, "job": 1, "task_type": 1 })
        .limit(MAX_NIN_JOBS * 8)
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    if docs.is_empty() {
        db.blocked_hint.lock().remove(&worker_id);
        return Ok(Vec::new());
    }
    let mut types_by_job: BTreeMap<ObjectId, HashSet<String>> = BTreeMap::new();
    for d in &docs {
        let f = codec::Fields::new(d, BLOCKLIST);
        types_by_job
            .entry(f.id("job")?)
            .or_default()
            .insert(f.string("task_type")?);
    }
    Ok(types_by_job
        .into_iter()
        .filter(|(_, types)| task_types.iter().all(|t| types.contains(t)))
        .take(usize::try_from(MAX_NIN_JOBS).unwrap_or(usize::MAX))
        .map(|(job, _)| oid(job))
        .collect())
}

/// A task's failure record, oldest first.
pub(super) async fn failures(db: &Db, task_id: ObjectId) -> StoreResult<Vec<TaskFailure>> {
    let found = db
        .tasks
        .find_one(doc! { "_id": oid(task_id) })
        .projection(doc! { "failures": 1 })
        .await
        .db()?;
    match found {
        Some(d) => failures_from_task_doc(&d),
        None => Ok(Vec::new()),
    }
}

/// Forget a task's failure record (it was re-queued).
pub(super) async fn clear_task(db: &Db, task_id: ObjectId) -> StoreResult<()> {
    db.tasks
        .update_one(
            doc! { "_id": oid(task_id) },
            doc! { "$unset": { "failures": "" } },
        )
        .await
        .db()?;
    Ok(())
}

/// Forget a job's blocklist and its failure reason (the job was re-queued).
pub(super) async fn clear_job(db: &Db, job: ObjectId) -> StoreResult<()> {
    db.blocklist
        .delete_many(doc! { "job": oid(job) })
        .await
        .db()?;
    db.tasks
        .update_many(
            doc! { "job": oid(job), "blocked_workers": { "$exists": true } },
            doc! { "$unset": { "blocked_workers": "" } },
        )
        .await
        .db()?;
    db.jobs
        .update_one(
            doc! { "_id": oid(job) },
            doc! { "$unset": { "status_reason": "" } },
        )
        .await
        .db()?;
    Ok(())
}

fn entry_from_doc(d: &Document) -> StoreResult<BlocklistEntry> {
    let f = codec::Fields::new(d, BLOCKLIST);
    Ok(BlocklistEntry {
        job: f.id("job")?,
        task_type: f.string("task_type")?,
        worker_id: f.id("worker_id")?,
        worker: f.opt_string("worker")?.unwrap_or_default(),
        added: f
            .opt_time("added")?
            .ok_or_else(|| f.corrupt("added", "missing"))?,
    })
}

/// `RetryStore::job_blocklist`.
pub(super) async fn blocklist(db: &Db, job: ObjectId) -> StoreResult<Vec<BlocklistEntry>> {
    let docs: Vec<Document> = db
        .blocklist
        .find(doc! { "job": oid(job) })
        .sort(doc! { "task_type": 1, "worker_id": 1 })
        .limit(i64::try_from(MAX_BLOCKLIST_LISTED).unwrap_or(i64::MAX))
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    docs.iter().map(entry_from_doc).collect()
}

async fn blocked_for(db: &Db, job: ObjectId, task_type: &str) -> StoreResult<Vec<ObjectId>> {
    let docs: Vec<Document> = db
        .blocklist
        .find(doc! { "job": oid(job), "task_type": task_type })
        .projection(doc! { "worker_id": 1 })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    docs.iter()
        .map(|d| codec::Fields::new(d, BLOCKLIST).id("worker_id"))
        .collect()
}

/// Add a blocklist entry and copy it onto the job's tasks of that type.
async fn block(db: &Db, entry: &BlocklistEntry) -> StoreResult<()> {
    db.blocklist
        .update_one(
            doc! {
                "job": oid(entry.job),
                "task_type": entry.task_type.as_str(),
                "worker_id": oid(entry.worker_id),
            },
            doc! { "$setOnInsert": {
                "worker": entry.worker.as_str(),
                "added": date(entry.added),
            } },
        )
        .upsert(true)
        .await
        .db()?;
    db.blocked_hint.lock().insert(entry.worker_id);
    db.tasks
        .update_many(
            doc! { "job": oid(entry.job), "task_type": entry.task_type.as_str() },
            doc! { "$addToSet": { "blocked_workers": oid(entry.worker_id) } },
        )
        .await
        .db()?;
    Ok(())
}

/// `RetryStore::unblock_worker`.
pub(super) async fn unblock(
    db: &Db,
    job: ObjectId,
    worker_id: ObjectId,
    task_type: Option<&str>,
) -> StoreResult<u64> {
    let mut filter = doc! { "job": oid(job), "worker_id": oid(worker_id) };
    let mut tasks_filter = doc! { "job": oid(job) };
    if let Some(t) = task_type {
        filter.insert("task_type", t);
        tasks_filter.insert("task_type", t);
    }
    let n = db.blocklist.delete_many(filter).await.db()?.deleted_count;
    if n > 0 {
        db.tasks
            .update_many(
                tasks_filter,
                doc! { "$pull": { "blocked_workers": oid(worker_id) } },
            )
            .await
            .db()?;
    }
    Ok(n)
}

/// `RetryStore::job_status_reason`.
pub(super) async fn status_reason(db: &Db, job: ObjectId) -> StoreResult<Option<String>> {
    let found = db
        .jobs
        .find_one(doc! { "_id": oid(job) })
        .projection(doc! { "status_reason": 1 })
        .await
        .db()?;
    Ok(found
        .and_then(|d| d.get_str("status_reason").ok().map(str::to_string))
        .filter(|r| !r.is_empty()))
}

/// Mark job `job` stranded: its `status_reason` says why no worker is left (see the SQLite
/// twin); the consumer fails it when it takes the failed task's update. Called after the
/// task's compare-and-set and BEFORE that update is queued, so the consumer cannot see
/// the update without the mark. A finished or canceling job is left alone.
pub(super) async fn mark_stranded(db: &Db, job: ObjectId, reason: &str) -> StoreResult<()> {
    db.jobs
        .update_one(
            doc! {
                "_id": oid(job),
                "status": { "$nin": ["completed", "failed", "canceled", "cancel-requested"] },
            },
            doc! { "$set": { "status_reason": reason } },
        )
        .await
        .db()?;
    Ok(())
}

/// Forget a job's `status_reason` (it left `failed` by a task's re-queue).
pub(super) async fn clear_status_reason(db: &Db, job: ObjectId) -> StoreResult<()> {
    db.jobs
        .update_one(
            doc! { "_id": oid(job), "status_reason": { "$exists": true } },
            doc! { "$unset": { "status_reason": "" } },
        )
        .await
        .db()?;
    Ok(())
}

/// How many distinct tasks of this type in this job the worker has failed.
async fn tasks_failed_by(
    db: &Db,
    job: ObjectId,
    task_type: &str,
    worker_id: ObjectId,
) -> StoreResult<u64> {
    db.tasks
        .count_documents(doc! {
            "job": oid(job),
            "task_type": task_type,
            "failures.worker_id": oid(worker_id),
        })
        .await
        .db()
}

/// A worker's `failed` of a job's task with retries in effect: read the task and its
/// record, decide ([`retry::decide_failure`]), and write status, activity, worker and the
/// new failure with one compare-and-set; then the outbox, the log, the worker's ping, the
/// blocklist entry and (stranded) the job's failure.
pub(super) async fn apply_failed(
    db: &Db,
    worker_id: ObjectId,
    update: TaskUpdate,
    log_limits: TaskLogLimits,
    policy: &RetryPolicy,
) -> StoreResult<WorkerUpdateOutcome> {
    let now = update.received_on_manager;
    let nickname = workers::get(db, worker_id)
        .await?
        .map(|w| w.nickname)
        .unwrap_or_default();
    for _ in 0..CAS_ATTEMPTS {
        let loaded = tasks::get_state(db, update.task_id).await?;
        let outcome = check_worker_update(loaded.as_ref(), worker_id);
        let (true, Some(before)) = (outcome.is_accepted(), loaded) else {
            return Ok(outcome);
        };
        let update = updates::without_status(&outcome, update.clone());
        let record = failures(db, before.id).await?;
        // Retries are for the Manager's own jobs (standalone mode): a task whose job is
        // not stored here (a job source's) keeps v2's rule.
        let own_job = match before.job {
            Some(job) if jobs::get(db, job).await?.is_some() => Some(job),
            _ => None,
        };
        let (Some(job), false) = (
            own_job,
            before.status.is_final()
                || update.task_status.is_none()
                || retry::is_late_word(&before.status, &record, worker_id),
        ) else {
            // Not a retry (no job, last words, a final task): the ordinary path.
            return super::protocol::apply_worker_update_plain(db, worker_id, update, log_limits)
                .await;
        };
        let (failure, decided) =
            decide_worker_failure(db, &before, job, worker_id, &nickname, &record, policy, now)
                .await?;
        let queued = retry::failure_update(update, &decided);
        let mut after = before.clone();
        after.last_worker_ping = Some(now);
        after.worker_id = Some(worker_id);
        updates::apply_locally(&mut after, &queued);
        if decided.status == TaskStatus::SoftFailed {
            after.worker_id = None;
            after.worker.clear();
        }
        let mut write = tasks::changes(&before, &after).unwrap_or_default();
        write.insert(
            "$push",
            doc! { "failures": {
                "worker_id": oid(failure.worker_id),
                "worker": failure.worker.as_str(),
                "at": date(failure.at),
            } },
        );
        let matched = db
            .tasks
            .update_one(tasks::unchanged_filter(&before), write)
            .await
            .db()?
            .matched_count;
        if matched == 0 {
            continue;
        }
        if let Some(reason) = &decided.stranded {
            mark_stranded(db, job, reason).await?;
        }
        outbox::insert(db, std::slice::from_ref(&queued)).await?;
        logs::append(db, queued.task_id, &queued.log, log_limits).await?;
        if decided.blocklist {
            block(
                db,
                &BlocklistEntry {
                    job,
                    task_type: before.task_type.clone(),
                    worker_id,
                    worker: nickname.clone(),
                    added: failure.at,
                },
            )
            .await?;
        }
        return Ok(outcome);
    }
    Err(kept_changing(update.task_id))
}

/// `worker_id` failed `before` (a task of job `job` whose failure record is `record`):
/// this failure, and what it means ([`retry::decide_failure`] with the worker's failed
/// tasks in the job, the job's blocklist and every known worker). Shared by a worker's own
/// `failed` and the Manager's timeout, so both follow one rule.
#[allow(clippy::too_many_arguments)]
async fn decide_worker_failure(
    db: &Db,
    before: &crate::model::Task,
    job: ObjectId,
    worker_id: ObjectId,
    nickname: &str,
    record: &[TaskFailure],
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> StoreResult<(TaskFailure, retry::FailureOutcome)> {
    let failure = TaskFailure {
        worker_id,
        worker: nickname.to_string(),
        at: DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now),
    };
    let already = record.iter().any(|f| f.worker_id == worker_id);
    let full = retry::record_failure(record, failure.clone());
    let failed_tasks =
        tasks_failed_by(db, job, &before.task_type, worker_id).await? + u64::from(!already);
    let blocked = blocked_for(db, job, &before.task_type).await?;
    let all_workers = workers::list(db).await?;
    let decided = retry::decide_failure(
        policy,
        &full,
        TaskNeeds {
            task_type: &before.task_type,
            worker_tag: before.worker_tag.as_deref(),
        },
        worker_id,
        failed_tasks,
        &blocked,
        &all_workers,
    );
    Ok((failure, decided))
}

/// A timed-out task's silent worker, as a failure with retries in effect (standalone
/// mode, a task of a job stored here): the record as read, and the decision
/// ([`retry::decide_failure`], as for a worker's own `failed`). `None`: v2's rule (the
/// task is failed).
pub(super) struct TimeoutFailure {
    pub job: ObjectId,
    pub failure: TaskFailure,
    pub decided: retry::FailureOutcome,
}

/// Decide the timeout of `before` (an `active` task of `worker_id`) as that worker's
/// failure ([`TimeoutFailure`]); `None` when retries do not apply to it.
pub(super) async fn decide_timeout(
    db: &Db,
    before: &crate::model::Task,
    nickname: &str,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> StoreResult<Option<TimeoutFailure>> {
    let (true, Some(job), Some(worker_id)) = (policy.enabled, before.job, before.worker_id) else {
        return Ok(None);
    };
    if jobs::get(db, job).await?.is_none() {
        return Ok(None);
    }
    let record = failures(db, before.id).await?;
    let (failure, decided) =
        decide_worker_failure(db, before, job, worker_id, nickname, &record, policy, now).await?;
    Ok(Some(TimeoutFailure {
        job,
        failure,
        decided,
    }))
}

/// The `$push` of a timeout's failure onto the task's record (with its compare-and-set).
pub(super) fn push_failure(failure: &TaskFailure) -> Document {
    doc! { "failures": {
        "worker_id": oid(failure.worker_id),
        "worker": failure.worker.as_str(),
        "at": date(failure.at),
    } }
}

/// After a timeout's failure was stored with the task: mark the job stranded (before its
/// update is queued, see [`mark_stranded`]) and add the blocklist entry when due. The
/// caller queues the update next.
pub(super) async fn after_timeout_failure(
    db: &Db,
    task_type: &str,
    t: &TimeoutFailure,
) -> StoreResult<()> {
    if let Some(reason) = &t.decided.stranded {
        mark_stranded(db, t.job, reason).await?;
    }
    if t.decided.blocklist {
        block(
            db,
            &BlocklistEntry {
                job: t.job,
                task_type: task_type.to_string(),
                worker_id: t.failure.worker_id,
                worker: t.failure.worker.clone(),
                added: t.failure.at,
            },
        )
        .await?;
    }
    Ok(())
}

/// `RetryStore::fail_stranded_tasks`.
pub(super) async fn fail_stranded(db: &Db, now: DateTime<Utc>) -> StoreResult<Vec<Stranded>> {
    let limit = i64::try_from(MAX_STRANDED_SCAN).unwrap_or(i64::MAX);
    let docs: Vec<Document> = db
        .tasks
        .find(doc! {
            "status": { "$in": CLAIMABLE.to_vec() },
            "job": { "$ne": Bson::Null },
            "failures.0": { "$exists": true },
        })
        .projection(doc! { "job": 1, "task_type": 1, "worker_tag": 1, "failures": 1 })
        .limit(limit)
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    let mut narrowed: Vec<NarrowedTask> = Vec::new();
    for d in &docs {
        let f = codec::Fields::new(d, codec::TASKS);
        let Some(job) = f.opt_id("job")? else {
            continue;
        };
        narrowed.push(NarrowedTask {
            task_id: f.id("_id")?,
            job,
            task_type: f.string("task_type")?,
            worker_tag: f.opt_string("worker_tag")?.filter(|t| !t.is_empty()),
            failed_by: retry::excluded_workers(&failures_from_task_doc(d)?),
        });
    }
    let entries: Vec<Document> = db
        .blocklist
        .find(doc! {})
        .limit(limit)
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    let mut blocked: HashMap<(ObjectId, String), Vec<ObjectId>> = HashMap::new();
    for d in &entries {
        let e = entry_from_doc(d)?;
        blocked
            .entry((e.job, e.task_type))
            .or_default()
            .push(e.worker_id);
    }
    let pairs: BTreeMap<(ObjectId, String), ()> = blocked.keys().map(|k| (k.clone(), ())).collect();
    for (job, task_type) in pairs.keys() {
        let found = db
            .tasks
            .find_one(doc! {
                "job": oid(*job),
                "task_type": task_type.as_str(),
                "status": { "$in": CLAIMABLE.to_vec() },
            })
            .projection(doc! { "_id": 1, "worker_tag": 1 })
            .await
            .db()?;
        if let Some(d) = found {
            let f = codec::Fields::new(&d, codec::TASKS);
            narrowed.push(NarrowedTask {
                task_id: f.id("_id")?,
                job: *job,
                task_type: task_type.clone(),
                worker_tag: f.opt_string("worker_tag")?.filter(|t| !t.is_empty()),
                failed_by: Vec::new(),
            });
        }
    }
    // One schedulable task of each type of each job with a tag: the tag narrows them all.
    let tagged: Vec<Document> = db
        .jobs
        .find(doc! {
            "worker_tag": { "$exists": true, "$nin": [Bson::Null, ""] },
            "status": { "$nin": ["completed", "failed", "canceled", "cancel-requested"] },
        })
        .projection(doc! { "_id": 1 })
        .limit(limit)
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    for d in &tagged {
        let job = codec::Fields::new(d, codec::JOBS).id("_id")?;
        let per_type: Vec<Document> = db
            .tasks
            .aggregate([
                doc! { "$match": {
                    "job": oid(job),
                    "status": { "$in": CLAIMABLE.to_vec() },
                } },
                doc! { "$group": {
                    "_id": "$task_type",
                    "task": { "$min": "$_id" },
                    "worker_tag": { "$first": "$worker_tag" },
                } },
            ])
            .await
            .db()?
            .try_collect()
            .await
            .db()?;
        for g in &per_type {
            let (Ok(task_type), Ok(task_id)) = (g.get_str("_id"), g.get_object_id("task")) else {
                continue;
            };
            narrowed.push(NarrowedTask {
                task_id: ObjectId::from_bytes(task_id.bytes()),
                job,
                task_type: task_type.to_string(),
                worker_tag: g
                    .get_str("worker_tag")
                    .ok()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
                failed_by: Vec::new(),
            });
        }
    }
    if narrowed.is_empty() {
        return Ok(Vec::new());
    }
    let all_workers = workers::list(db).await?;
    let stranded = retry::stranded_tasks(
        &narrowed,
        |job, t| {
            blocked
                .get(&(job, t.to_string()))
                .cloned()
                .unwrap_or_default()
        },
        &all_workers,
    );
    for s in &stranded {
        let update = retry::stranded_update(s.task_id, &s.reason, now);
        for _ in 0..CAS_ATTEMPTS {
            let Some(before) = tasks::get_state(db, s.task_id).await? else {
                break;
            };
            if !CLAIMABLE.contains(&before.status.as_str()) {
                break;
            }
            let mut after = before.clone();
            updates::apply_locally(&mut after, &update);
            if tasks::save(db, &before, &after, Document::new()).await? {
                mark_stranded(db, s.job, &s.reason).await?;
                outbox::insert(db, std::slice::from_ref(&update)).await?;
                break;
            }
        }
    }
    Ok(stranded)
}
