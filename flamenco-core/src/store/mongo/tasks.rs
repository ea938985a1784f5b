//! The `flamenco_tasks` collection: insert, upsert, read, list, count, the claim's
//! candidate search, and the compare-and-set that saves a task's local bookkeeping.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use mongodb::Cursor;

use super::codec::{self, date, oid, oid_or_null, task_from_doc, task_to_doc};
use super::errors::{duplicate_index, map_err, Mongo};
use super::outbox_entries::{self as entries, Pending};
use super::Db;
use super::MongoStore;
use crate::model::{ObjectId, Task, TaskStatus};
use crate::store::{StoreError, StoreResult, TaskOrder, TaskQuery};
use crate::updates::TaskRunState;

/// Leaves out the bulky fields: enough for status decisions (like SQLite's
/// `TASK_STATE_COLUMNS`). Such a task is only saved with [`save`], which writes the
/// bookkeeping fields that changed.
pub(super) fn state_projection() -> Document {
    let mut hide = doc! { "commands": 0, "log": 0, "parents": 0 };
    hide.extend(without_outbox());
    hide
}

/// Leaves out the updates waiting in the task (`outbox_entries`), which no task read
/// needs.
pub(super) fn without_outbox() -> Document {
    doc! { entries::FIELD: 0, entries::AT: 0, entries::BYTES: 0 }
}

async fn collect(cursor: Cursor<Document>) -> StoreResult<Vec<Document>> {
    cursor.try_collect().await.db()
}

/// Insert new tasks. A duplicate id (already stored, or twice in the batch) fails the
/// whole call with `Duplicate` and leaves nothing inserted: ids are checked first, and if
/// another writer inserts one of them in between, the ones this call already inserted
/// are deleted again (no multi-document transaction needed).
pub(super) async fn insert(db: &Db, tasks: &[Task]) -> StoreResult<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    let mut seen = BTreeSet::new();
    for t in tasks {
        if !seen.insert(t.id) {
            return Err(StoreError::Duplicate(t.id));
        }
    }
    let ids: Vec<Bson> = tasks.iter().map(|t| oid(t.id)).collect();
    let existing: BTreeSet<ObjectId> = collect(
        db.tasks
            .find(doc! { "_id": { "$in": ids } })
            .projection(doc! { "_id": 1 })
            .await
            .db()?,
    )
    .await?
    .iter()
    .map(|d| codec::Fields::new(d, codec::TASKS).id("_id"))
    .collect::<StoreResult<_>>()?;
    if let Some(t) = tasks.iter().find(|t| existing.contains(&t.id)) {
        return Err(StoreError::Duplicate(t.id));
    }
    let docs: Vec<Document> = tasks.iter().map(task_to_doc).collect();
    match db.tasks.insert_many(docs).ordered(true).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let failed_at = duplicate_index(&e);
            // An ordered insert stops at the first failure: the documents before it are
            // ours (they did not exist a moment ago). Take them out again.
            let inserted = failed_at.unwrap_or(tasks.len()).min(tasks.len());
            if inserted > 0 {
                let ours: Vec<Bson> = tasks[..inserted].iter().map(|t| oid(t.id)).collect();
                if let Err(cleanup) = db.tasks.delete_many(doc! { "_id": { "$in": ours } }).await {
                    tracing::error!(
                        "inserting tasks failed and removing the partial insert failed too: {}",
                        super::errors::reason(&cleanup)
                    );
                }
            }
            match failed_at.and_then(|i| tasks.get(i)) {
                Some(t) => Err(StoreError::Duplicate(t.id)),
                None => Err(map_err(e)),
            }
        }
    }
}

/// The fields [`task_to_doc`] leaves out when they are empty.
const OPTIONAL_FIELDS: [&str; 13] = [
    "_etag",
    "job",
    "manager",
    "project",
    "user",
    "log",
    "activity",
    "parents",
    "worker",
    "worker_id",
    "last_worker_ping",
    "last_updated",
    "worker_tag",
];

/// The update that makes a task's document `task_to_doc(t)` but keeps the updates
/// waiting in it (`outbox_entries`): a replacement would drop them.
fn replacement(t: &Task) -> Document {
    let mut set = task_to_doc(t);
    set.remove("_id");
    let unset: Document = OPTIONAL_FIELDS
        .iter()
        .filter(|f| !set.contains_key(**f))
        .map(|f| (f.to_string(), Bson::String(String::new())))
        .collect();
    let mut update = doc! { "$set": set };
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    update
}

/// Insert tasks, replacing existing documents wholly (except for the updates waiting in
/// them).
pub(super) async fn upsert(db: &Db, tasks: &[Task]) -> StoreResult<()> {
    for t in tasks {
        db.tasks
            .update_one(doc! { "_id": oid(t.id) }, replacement(t))
            .upsert(true)
            .await
            .db()?;
    }
    Ok(())
}

/// The ids of the tasks that match `filter`, in `order` (or in no order, so that the
/// server need not sort), after the first `skip`.
pub(super) async fn ids(
    db: &Db,
    filter: Document,
    order: Option<Document>,
    skip: u64,
    limit: Option<usize>,
) -> StoreResult<Vec<ObjectId>> {
    let mut find = db
        .tasks
        .find(filter)
        .skip(skip)
        .projection(doc! { "_id": 1 });
    if let Some(order) = order {
        find = find.sort(order);
    }
    if let Some(limit) = limit {
        find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    let docs: Vec<Document> = find.await.db()?.try_collect().await.db()?;
    docs.iter()
        .map(|d| codec::Fields::new(d, codec::TASKS).id("_id"))
        .collect()
}

pub(super) async fn get(db: &Db, id: ObjectId) -> StoreResult<Option<Task>> {
    let found = db
        .tasks
        .find_one(doc! { "_id": oid(id) })
        .projection(without_outbox())
        .await
        .db()?;
    match found {
        Some(d) => task_from_doc(&d).map(Some),
        None => Ok(None),
    }
}

/// The task without `commands`, `log` and `parents`.
pub(super) async fn get_state(db: &Db, id: ObjectId) -> StoreResult<Option<Task>> {
    let found = db
        .tasks
        .find_one(doc! { "_id": oid(id) })
        .projection(state_projection())
        .await
        .db()?;
    match found {
        Some(d) => task_from_doc(&d).map(Some),
        None => Ok(None),
    }
}

/// A task's status and worker: may-i-run's one read, two fields by `_id`.
pub(super) async fn run_state(db: &Db, id: ObjectId) -> StoreResult<Option<TaskRunState>> {
    let found = db
        .tasks
        .find_one(doc! { "_id": oid(id) })
        .projection(doc! { "_id": 0, "status": 1, "worker_id": 1 })
        .await
        .db()?;
    let Some(d) = found else {
        return Ok(None);
    };
    let f = codec::Fields::new(&d, codec::TASKS);
    Ok(Some(TaskRunState {
        status: codec::task_status(&f)?,
        worker_id: f.opt_id("worker_id")?,
    }))
}

/// The filter for an `active` task of this worker (served by `{status, worker_id, _id}`).
pub(super) fn active_for_worker_filter(worker: ObjectId) -> Document {
    doc! { "status": TaskStatus::Active.as_str(), "worker_id": oid(worker) }
}

/// The (oldest) `active` task assigned to this worker.
pub(super) async fn active_for_worker(db: &Db, worker: ObjectId) -> StoreResult<Option<Task>> {
    let found = db
        .tasks
        .find_one(active_for_worker_filter(worker))
        .sort(doc! { "_id": 1 })
        .await
        .db()?;
    match found {
        Some(d) => task_from_doc(&d).map(Some),
        None => Ok(None),
    }
}

/// Every `active` task of this worker, without the bulky fields.
pub(super) async fn active_states_for_worker(db: &Db, worker: ObjectId) -> StoreResult<Vec<Task>> {
    let docs = collect(
        db.tasks
            .find(active_for_worker_filter(worker))
            .sort(doc! { "_id": 1 })
            .projection(state_projection())
            .await
            .db()?,
    )
    .await?;
    docs.iter().map(task_from_doc).collect()
}

/// The claim's candidate query: schedulable tasks of these types that require no tag or
/// one of the worker's tags, best first (`job_priority` desc, `priority` desc, `_id`
/// asc). The index `{status: 1, worker_tag: 1, task_type: 1, job_priority: -1,
/// priority: -1, _id: 1}` serves both the filter and the order (MongoDB merges one index
/// scan per status × tag × type, no in-memory sort), so the cost does not grow with the
/// number of finished tasks, nor with the tasks of tags the worker lacks. A task without
/// `worker_tag` (every task from a Flamenco Server, every untagged job) matches `null`.
pub(super) fn candidates_query(
    task_types: &[String],
    worker_tags: &[String],
) -> (Document, Document) {
    let statuses = [TaskStatus::Queued, TaskStatus::ClaimedByManager];
    let mut tags: Vec<Bson> = vec![Bson::Null];
    tags.extend(worker_tags.iter().map(|t| Bson::String(t.clone())));
    let filter = doc! {
        "status": { "$in": statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>() },
        "worker_tag": { "$in": tags },
        "task_type": { "$in": task_types },
    };
    let sort = doc! { "job_priority": -1, "priority": -1, "_id": 1 };
    (filter, sort)
}

/// This worker's [`candidates_query`] with what retries add: its own failures and
/// blocklisted jobs left out (the blocklist is read only for a worker known to have
/// entries, [`super::retries::blocked_jobs`]).
pub(super) async fn candidates_for(
    db: &Db,
    req: &crate::store::ClaimRequest,
) -> StoreResult<(Document, Document)> {
    let (mut filter, sort) = candidates_query(&req.task_types, &req.worker_tags);
    super::retries::exclusions(db, &mut filter, req.worker_id);
    let blocked = super::retries::blocked_jobs(db, req.worker_id, &req.task_types).await?;
    if !blocked.is_empty() {
        filter.insert("job", doc! { "$nin": blocked });
    }
    Ok((filter, sort))
}

/// Up to `limit` candidates, best first, after skipping `skip`.
pub(super) async fn candidates(
    db: &Db,
    req: &crate::store::ClaimRequest,
    skip: usize,
    limit: usize,
) -> StoreResult<Vec<Task>> {
    let (filter, sort) = candidates_for(db, req).await?;
    let docs = collect(
        db.tasks
            .find(filter)
            .sort(sort)
            .skip(u64::try_from(skip).unwrap_or(u64::MAX))
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .db()?,
    )
    .await?;
    docs.iter().map(task_from_doc).collect()
}

/// How [`take_best`] takes a task.
#[derive(Clone, Copy)]
pub(super) enum Taking<'a> {
    /// Reserve it (upstream mode, before the Server's re-validation): `active`,
    /// `worker_id` and both times.
    Reservation,
    /// Assign it (a claim): the reservation plus `worker` (the nickname) and the
    /// assignment activity naming the task and the worker `ident` (v2 §6.4 step 7), and
    /// queue `queued` in it, made for the task id `placeholder`
    /// ([`Pending::stage_for_chosen`]).
    Assignment {
        nickname: &'a str,
        ident: &'a str,
        queued: &'a Pending,
        placeholder: ObjectId,
    },
}

/// Take for the worker the best of `candidates` that is still schedulable and of its
/// types: ONE `find_one_and_update` sorted like [`candidates_query`], whose answer is the
/// task as stored afterwards (no second write, no read after it); `None` when every
/// candidate was taken meanwhile.
///
/// An assignment's activity contains the task's own id, so it is written with an
/// update pipeline (`$concat` of `$_id`; MongoDB 4.2 or later), which also queues the
/// assignment's two updates in the task (the claim is then this command and the read
/// before it). The caller's strings go in as `$literal`, so a nickname starting with `$`
/// is not read as a field path.
pub(super) async fn take_best(
    db: &Db,
    candidates: &[Task],
    req: &crate::store::ClaimRequest,
    taking: Taking<'_>,
) -> StoreResult<Option<Task>> {
    let ids: Vec<Bson> = candidates.iter().map(|t| oid(t.id)).collect();
    let (mut filter, sort) = candidates_query(&req.task_types, &req.worker_tags);
    super::retries::exclusions(db, &mut filter, req.worker_id);
    filter.insert("_id", doc! { "$in": ids });
    let mut set = doc! {
        "status": TaskStatus::Active.as_str(),
        "worker_id": oid(req.worker_id),
        "last_worker_ping": date(req.now),
        "last_updated": date(req.now),
    };
    let found = match taking {
        Taking::Reservation => {
            db.tasks
                .find_one_and_update(filter, doc! { "$set": set })
                .sort(sort)
                .projection(without_outbox())
                .return_document(ReturnDocument::After)
                .await
        }
        Taking::Assignment {
            nickname,
            ident,
            queued,
            placeholder,
        } => {
            // `updates::assignment_log_update`'s activity, built by the server.
            set.insert(
                "activity",
                doc! { "$concat": [
                    { "$literal": "Manager assigned task " },
                    { "$toString": "$_id" },
                    { "$literal": format!(" to worker {ident}") },
                ] },
            );
            let mut pipeline = Vec::new();
            if nickname.is_empty() {
                // An empty field is omitted, as v2 did.
                pipeline.push(doc! { "$unset": "worker" });
            } else {
                set.insert("worker", doc! { "$literal": nickname });
            }
            pipeline.insert(0, doc! { "$set": set });
            if !queued.is_empty() {
                pipeline.push(queued.stage_for_chosen(placeholder));
            }
            db.tasks
                .find_one_and_update(filter, pipeline)
                .sort(sort)
                .projection(without_outbox())
                .return_document(ReturnDocument::After)
                .await
        }
    }
    .db()?;
    match found {
        Some(d) => task_from_doc(&d).map(Some),
        None => Ok(None),
    }
}

/// Of these parent ids, the ones that exist and are not `completed` (v2 §6.3).
pub(super) async fn blocking_parents(
    db: &Db,
    parents: &BTreeSet<ObjectId>,
) -> StoreResult<BTreeSet<ObjectId>> {
    if parents.is_empty() {
        return Ok(BTreeSet::new());
    }
    let ids: Vec<Bson> = parents.iter().map(|id| oid(*id)).collect();
    let docs = collect(
        db.tasks
            .find(doc! {
                "_id": { "$in": ids },
                "status": { "$ne": TaskStatus::Completed.as_str() },
            })
            .projection(doc! { "_id": 1 })
            .await
            .db()?,
    )
    .await?;
    docs.iter()
        .map(|d| codec::Fields::new(d, codec::TASKS).id("_id"))
        .collect()
}

/// Of the tasks `ids`, those in one of `statuses`, as (task, `worker_id`) pairs (tasks
/// without a worker left out): which deferred may-i-run pings still hold.
pub(super) async fn pingable(
    db: &Db,
    ids: Vec<Bson>,
    statuses: &[&str],
) -> StoreResult<BTreeSet<(ObjectId, ObjectId)>> {
    let docs = collect(
        db.tasks
            .find(doc! { "_id": { "$in": ids }, "status": { "$in": statuses.to_vec() } })
            .projection(doc! { "_id": 1, "worker_id": 1 })
            .await
            .db()?,
    )
    .await?;
    let mut held = BTreeSet::new();
    for d in &docs {
        let fields = codec::Fields::new(d, codec::TASKS);
        if let Some(worker) = fields.opt_id("worker_id")? {
            held.insert((fields.id("_id")?, worker));
        }
    }
    Ok(held)
}

/// The compare-and-set filter: the task still has the status and `worker_id` it had when
/// `before` was read (`null` also matches a missing field).
pub(super) fn unchanged_filter(before: &Task) -> Document {
    doc! {
        "_id": oid(before.id),
        "status": before.status.as_str(),
        "worker_id": oid_or_null(before.worker_id),
    }
}

/// The update that writes the bookkeeping fields (status, activity, worker, worker_id,
/// last_worker_ping, last_updated) of `after` that differ from `before`; an empty one is
/// removed, as v2 omitted empty fields. `None` when nothing changed. Other fields are
/// never written here.
pub(super) fn changes(before: &Task, after: &Task) -> Option<Document> {
    let mut set = Document::new();
    let mut unset = Document::new();
    let mut put = |field: &str, changed: bool, value: Option<Bson>| {
        if changed {
            match value {
                Some(v) => set.insert(field, v),
                None => unset.insert(field, ""),
            };
        }
    };
    put(
        "status",
        before.status != after.status,
        Some(Bson::String(after.status.as_str().to_string())),
    );
    let text = |s: &str| (!s.is_empty()).then(|| Bson::String(s.to_string()));
    put(
        "activity",
        before.activity != after.activity,
        text(&after.activity),
    );
    put("worker", before.worker != after.worker, text(&after.worker));
    put(
        "worker_id",
        before.worker_id != after.worker_id,
        after.worker_id.map(oid),
    );
    put(
        "last_worker_ping",
        before.last_worker_ping != after.last_worker_ping,
        after.last_worker_ping.map(date),
    );
    put(
        "last_updated",
        before.last_updated != after.last_updated,
        after.last_updated.map(date),
    );
    let mut update = Document::new();
    if !set.is_empty() {
        update.insert("$set", set);
    }
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    (!update.is_empty()).then_some(update)
}

/// Compare-and-set: save the changes from `before` to `after` if the task is unchanged
/// since `before` was read (see [`unchanged_filter`], plus `extra` conditions). One
/// `update_one`; false when another writer got there first.
pub(super) async fn save(
    db: &Db,
    before: &Task,
    after: &Task,
    extra: Document,
) -> StoreResult<bool> {
    save_queueing(db, before, after, extra, &Pending::none()).await
}

/// The update document for the changes from `before` to `after` plus the updates to
/// queue in the task (`outbox_entries`); `None` when it would change nothing.
fn changes_queueing(before: &Task, after: &Task, queue: &Pending) -> Option<Document> {
    let mut update = changes(before, after).unwrap_or_default();
    update.extend(queue.ops());
    (!update.is_empty()).then_some(update)
}

/// [`save`], queueing `queue` in the same write: the task's change and its updates are
/// stored together or not at all, in ONE command.
pub(super) async fn save_queueing(
    db: &Db,
    before: &Task,
    after: &Task,
    extra: Document,
    queue: &Pending,
) -> StoreResult<bool> {
    let mut filter = unchanged_filter(before);
    filter.extend(extra);
    match changes_queueing(before, after, queue) {
        Some(update) => Ok(db
            .tasks
            .update_one(filter, update)
            .await
            .db()?
            .matched_count
            > 0),
        // Nothing to write: still check that the decision was taken on current data.
        None => Ok(db
            .tasks
            .find_one(filter)
            .projection(doc! { "_id": 1 })
            .await
            .db()?
            .is_some()),
    }
}

/// Like [`save_queueing`], returning the whole task as stored afterwards (for claims).
pub(super) async fn save_returning(
    db: &Db,
    before: &Task,
    after: &Task,
    queue: &Pending,
) -> StoreResult<Option<Task>> {
    let filter = unchanged_filter(before);
    let Some(update) = changes_queueing(before, after, queue) else {
        let found = db
            .tasks
            .find_one(filter)
            .projection(without_outbox())
            .await
            .db()?;
        return match found {
            Some(d) => task_from_doc(&d).map(Some),
            None => Ok(None),
        };
    };
    let found = db
        .tasks
        .find_one_and_update(filter, update)
        .projection(without_outbox())
        .return_document(ReturnDocument::After)
        .await
        .db()?;
    match found {
        Some(d) => task_from_doc(&d).map(Some),
        None => Ok(None),
    }
}

/// The filter for "every bookkeeping field is as in `before`" (status, `worker_id`,
/// `worker`, `activity`, `last_worker_ping`, `last_updated`): for writes that replace the
/// whole document, so that no concurrent claim, ping or update is overwritten.
pub(super) fn exact_filter(before: &Task) -> Document {
    let text = |s: &str| {
        if s.is_empty() {
            Bson::Document(doc! { "$in": [Bson::Null, ""] })
        } else {
            Bson::String(s.to_string())
        }
    };
    let mut filter = unchanged_filter(before);
    filter.insert("worker", text(&before.worker));
    filter.insert("activity", text(&before.activity));
    filter.insert(
        "last_worker_ping",
        before.last_worker_ping.map_or(Bson::Null, date),
    );
    filter.insert("last_updated", before.last_updated.map_or(Bson::Null, date));
    filter
}

/// Replace the whole document with `after` (except for the updates waiting in it) if its
/// bookkeeping is still as in `before` ([`exact_filter`]). False when another writer
/// changed it first.
pub(super) async fn replace_if_unchanged(
    db: &Db,
    before: &Task,
    after: &Task,
) -> StoreResult<bool> {
    let result = db
        .tasks
        .update_one(exact_filter(before), replacement(after))
        .await
        .db()?;
    Ok(result.matched_count > 0)
}

/// Insert one task; false when its id exists (another writer was first).
pub(super) async fn insert_new(db: &Db, task: &Task) -> StoreResult<bool> {
    match db.tasks.insert_one(task_to_doc(task)).await {
        Ok(_) => Ok(true),
        Err(e) if duplicate_index(&e).is_some() => Ok(false),
        Err(e) => Err(map_err(e)),
    }
}

/// Tasks matching `q`, in the query's order.
pub(super) async fn list(db: &Db, q: &TaskQuery) -> StoreResult<Vec<Task>> {
    if q.limit == Some(0) {
        // MongoDB reads a limit of 0 as "no limit".
        return Ok(Vec::new());
    }
    let mut filter = Document::new();
    if !q.statuses.is_empty() {
        let statuses: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
        filter.insert("status", doc! { "$in": statuses });
    }
    if let Some(task_type) = &q.task_type {
        filter.insert("task_type", task_type.as_str());
    }
    if let Some(job) = q.job {
        filter.insert("job", oid(job));
    }
    if let Some(worker) = q.worker_id {
        filter.insert("worker_id", oid(worker));
    }
    let sort = match q.order {
        TaskOrder::Id => doc! { "_id": 1 },
        TaskOrder::Schedule => doc! { "job_priority": -1, "priority": -1, "_id": 1 },
        // Missing and null sort lowest, so descending puts never-updated tasks last.
        TaskOrder::RecentlyUpdated => doc! { "last_updated": -1, "_id": 1 },
    };
    let mut find = db
        .tasks
        .find(filter)
        .sort(sort)
        .projection(without_outbox())
        .skip(u64::try_from(q.offset).unwrap_or(u64::MAX));
    if let Some(limit) = q.limit {
        find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    let docs = collect(find.await.db()?).await?;
    docs.iter().map(task_from_doc).collect()
}

/// Number of tasks per status string.
/// Task counts per (status, task type): one `$group` aggregation.
pub(super) async fn count_by_status_and_type(
    db: &Db,
) -> StoreResult<BTreeMap<(String, String), u64>> {
    // Sorted and projected on the claim index's prefix (`status`, `task_type`), so the
    // server can read the index alone instead of every task document.
    let pipeline = vec![
        doc! { "$sort": { "status": 1, "task_type": 1 } },
        doc! { "$project": { "_id": 0, "status": 1, "task_type": 1 } },
        doc! { "$group": {
            "_id": { "status": "$status", "task_type": "$task_type" },
            "n": { "$sum": 1 },
        } },
    ];
    let docs = collect(db.tasks.aggregate(pipeline).await.db()?).await?;
    let mut counts = BTreeMap::new();
    for d in &docs {
        let key = d.get_document("_id").map_err(|e| {
            StoreError::Corrupt(format!("task count by status and type: no _id group: {e}"))
        })?;
        // A task without a task_type (never written by this program) counts as "".
        let status = key.get_str("status").unwrap_or_default().to_string();
        let task_type = key.get_str("task_type").unwrap_or_default().to_string();
        let f = codec::Fields::new(d, codec::TASKS);
        let n = u64::try_from(f.i64("n")?).unwrap_or_default();
        *counts.entry((status, task_type)).or_insert(0) += n;
    }
    Ok(counts)
}

pub(super) async fn count_by_status(db: &Db) -> StoreResult<BTreeMap<String, u64>> {
    let pipeline = vec![doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } }];
    let docs = collect(db.tasks.aggregate(pipeline).await.db()?).await?;
    let mut counts = BTreeMap::new();
    for d in &docs {
        let f = codec::Fields::new(d, codec::TASKS);
        let status = f.string("_id")?;
        let n = u64::try_from(f.i64("n")?).unwrap_or_default();
        *counts.entry(status).or_insert(0) += n;
    }
    Ok(counts)
}

#[async_trait::async_trait]
impl crate::store::TaskStore for MongoStore {
    async fn insert_tasks(&self, new: &[Task]) -> StoreResult<()> {
        self.run(super::tasks::insert(&self.db, new)).await
    }

    async fn upsert_tasks(&self, new: &[Task]) -> StoreResult<()> {
        self.run(super::tasks::upsert(&self.db, new)).await
    }

    async fn get_task(&self, id: ObjectId) -> StoreResult<Option<Task>> {
        self.run(super::tasks::get(&self.db, id)).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<Vec<Task>> {
        self.run(super::tasks::list(&self.db, query)).await
    }

    async fn count_tasks_by_status(&self) -> StoreResult<BTreeMap<String, u64>> {
        self.run(super::tasks::count_by_status(&self.db)).await
    }

    async fn count_tasks_by_status_and_type(&self) -> StoreResult<BTreeMap<(String, String), u64>> {
        self.run(super::tasks::count_by_status_and_type(&self.db))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// `OPTIONAL_FIELDS` are exactly the fields an empty task leaves out, so a
    /// replacement unsets every field the new task does not have.
    #[test]
    fn a_replacement_sets_or_unsets_every_field() {
        let empty = Task::new("", "", Vec::new());
        let mut full = empty.clone();
        full.etag = "e".into();
        full.job = Some(ObjectId::new());
        full.manager = Some(ObjectId::new());
        full.project = Some(ObjectId::new());
        full.user = Some(ObjectId::new());
        full.log = "l".into();
        full.activity = "a".into();
        full.parents = vec![ObjectId::new()];
        full.worker = "w".into();
        full.worker_id = Some(ObjectId::new());
        full.last_worker_ping = Some(Utc::now());
        full.last_updated = Some(Utc::now());
        full.worker_tag = Some("t".into());
        let keys = |t: &Task| -> BTreeSet<String> { task_to_doc(t).keys().cloned().collect() };
        let optional: BTreeSet<String> = keys(&full).difference(&keys(&empty)).cloned().collect();
        let listed: BTreeSet<String> = OPTIONAL_FIELDS.iter().map(|f| f.to_string()).collect();
        assert_eq!(optional, listed);

        let update = replacement(&empty);
        let unset: BTreeSet<String> = update
            .get_document("$unset")
            .expect("$unset")
            .keys()
            .cloned()
            .collect();
        assert_eq!(unset, listed);
        assert!(!update
            .get_document("$set")
            .expect("$set")
            .contains_key("_id"));
        assert!(replacement(&full).get("$unset").is_none());
    }
}
