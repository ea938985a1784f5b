//! The outbox of task updates: what waits in the task documents (`outbox_entries`) and
//! in the `task_update_queue` collection, read as one queue.
//!
//! Order: a task's own updates in the order they were queued, and across tasks by
//! `seq` (`outbox_entries` explains the stamps). The reader merges the tasks' lists and
//! the collection's (read by `seq`, then `_id`) by their heads' `seq`, never taking a
//! list's later entry before its earlier one.
//!
//! * The collection holds v2's queued updates (no `seq`: they sort first, in `_id`
//!   order, v2's queueing order), those an earlier version numbered from the counter
//!   `flamenco_counters` (small numbers: they come next), updates whose task does not
//!   exist, the waiting updates of deleted tasks, and the set-aside ones.
//! * Updates the job source never acknowledges are counted (`attempts`) and eventually
//!   set aside (`set_aside_at`): moved to the collection, kept, but skipped by [`len`]
//!   and [`peek`]. Both fields are ours and absent on waiting updates, so v2's documents
//!   are waiting updates. Retrying puts them back at the end of their task's outbox.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;

use super::codec::{self, date, oid, update_from_doc};
use super::errors::Mongo;
use super::outbox_entries::{self as entries, FIELD};
use super::Db;
use super::MongoStore;
use crate::model::{ObjectId, TaskStatus, TaskUpdate};
use crate::store::{SetAsideUpdate, StoreResult};

pub(super) use super::outbox_entries::insert;

/// The collection's order.
pub(super) fn order() -> Document {
    doc! { "seq": 1, "_id": 1 }
}

/// Waiting (not set aside) updates; `null` also matches the missing field.
fn waiting() -> Document {
    doc! { "set_aside_at": Bson::Null }
}

fn set_aside_filter() -> Document {
    doc! { "set_aside_at": { "$ne": Bson::Null } }
}

/// The collection's documents that `filter` selects, in order, at most `limit`.
async fn find(db: &Db, filter: Document, limit: usize) -> StoreResult<Vec<Document>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    db.updates
        .find(filter)
        .sort(order())
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .await
        .db()?
        .try_collect()
        .await
        .db()
}

/// An entry's place in the order: its `seq` (missing: before every number).
fn seq_of(d: &Document) -> i64 {
    match d.get("seq") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        _ => i64::MIN,
    }
}

/// The first `limit` entries of these lists, each list in its own order, by their
/// heads' `seq` (ties: the earlier list first).
fn merge(lists: Vec<Vec<Document>>, limit: usize) -> Vec<Document> {
    let mut lists: Vec<std::vec::IntoIter<Document>> =
        lists.into_iter().map(Vec::into_iter).collect();
    let mut heads: Vec<Option<Document>> = lists.iter_mut().map(Iterator::next).collect();
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = heads
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.as_ref().map(|d| Reverse((seq_of(d), i))))
        .collect();
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(Reverse((_, i))) = heap.pop() else {
            break;
        };
        if let Some(d) = heads[i].take() {
            out.push(d);
        }
        heads[i] = lists[i].next();
        if let Some(d) = &heads[i] {
            heap.push(Reverse((seq_of(d), i)));
        }
    }
    out
}

/// The oldest `limit` entries, from the collection (`filter` on it) and the tasks.
async fn oldest(db: &Db, filter: Document, limit: usize) -> StoreResult<Vec<Document>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut all = vec![find(db, filter, limit).await?];
    all.extend(entries::lists(db, Document::new(), Some(limit)).await?);
    Ok(merge(all, limit))
}

fn id_of(d: &Document) -> StoreResult<Bson> {
    codec::Fields::new(d, codec::UPDATES).id("_id").map(oid)
}

/// How many updates wait in the tasks.
async fn len_in_tasks(db: &Db) -> StoreResult<u64> {
    let field = format!("${FIELD}");
    let rows: Vec<Document> = db
        .tasks
        .aggregate(vec![
            doc! { "$match": entries::waiting_filter() },
            doc! { "$group": { "_id": Bson::Null, "n": { "$sum": { "$size": field } } } },
        ])
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    Ok(rows
        .first()
        .map(|d| match d.get("n") {
            Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
            _ => 0,
        })
        .unwrap_or(0))
}

pub(super) async fn len(db: &Db) -> StoreResult<u64> {
    let elsewhere = db.updates.count_documents(waiting()).await.db()?;
    Ok(elsewhere + len_in_tasks(db).await?)
}

/// The oldest `limit` waiting updates, in order.
pub(super) async fn peek(db: &Db, limit: usize) -> StoreResult<Vec<TaskUpdate>> {
    oldest(db, waiting(), limit)
        .await?
        .iter()
        .map(update_from_doc)
        .collect()
}

/// Those of `ids` that wait in tasks.
async fn held_in_tasks(db: &Db, ids: &[Bson]) -> StoreResult<Vec<Bson>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let field = format!("{FIELD}._id");
    let tasks: Vec<Document> = db
        .tasks
        .find(entries::holding(ids))
        .projection(doc! { field: 1 })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    Ok(tasks
        .iter()
        .filter_map(|t| match t.get(FIELD) {
            Some(Bson::Array(list)) => Some(list),
            _ => None,
        })
        .flatten()
        .filter_map(|e| match e {
            Bson::Document(e) => e.get("_id").filter(|id| ids.contains(id)).cloned(),
            _ => None,
        })
        .collect())
}

/// Remove these updates; returns how many there were.
pub(super) async fn ack(db: &Db, ids: &[ObjectId]) -> StoreResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Bson> = ids.iter().map(|id| oid(*id)).collect();
    let in_tasks = held_in_tasks(db, &ids).await?;
    entries::remove(db, &in_tasks).await?;
    let elsewhere = db
        .updates
        .delete_many(doc! { "_id": { "$in": ids } })
        .await
        .db()?
        .deleted_count;
    Ok(elsewhere + in_tasks.len() as u64)
}

/// Delete the oldest `limit` updates (waiting or set aside); returns how many.
pub(super) async fn purge(db: &Db, limit: usize) -> StoreResult<u64> {
    let doomed = oldest(db, doc! {}, limit).await?;
    let ids: Vec<Bson> = doomed.iter().map(id_of).collect::<StoreResult<_>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let in_tasks = held_in_tasks(db, &ids).await?;
    entries::remove(db, &in_tasks).await?;
    let elsewhere = db
        .updates
        .delete_many(doc! { "_id": { "$in": ids } })
        .await
        .db()?
        .deleted_count;
    Ok(elsewhere + in_tasks.len() as u64)
}

/// The final statuses' names.
fn finals() -> Vec<&'static str> {
    TaskStatus::KNOWN
        .iter()
        .filter(|s| s.is_final())
        .map(|s| s.as_str())
        .collect()
}

/// Is an update with a final status for this task waiting (not set aside)?
pub(super) async fn final_update_pending(db: &Db, task_id: ObjectId) -> StoreResult<bool> {
    let in_task = db
        .tasks
        .find_one(doc! {
            "_id": oid(task_id),
            FIELD: { "$elemMatch": { "task_status": { "$in": finals() } } },
        })
        .projection(doc! { "_id": 1 })
        .await
        .db()?;
    if in_task.is_some() {
        return Ok(true);
    }
    let mut filter = waiting();
    filter.insert("task_id", oid(task_id));
    filter.insert("task_status", doc! { "$in": finals() });
    Ok(db
        .updates
        .find_one(filter)
        .projection(doc! { "_id": 1 })
        .await
        .db()?
        .is_some())
}

/// Count one unacknowledged push of an update waiting in a task; returns the entry as it
/// is now, `None` when no task holds it.
async fn count_attempt_in_task(db: &Db, id: &Bson) -> StoreResult<Option<Document>> {
    let filter = entries::holding(std::slice::from_ref(id));
    let counted = doc! { "$cond": [
        { "$eq": ["$$this._id", id.clone()] },
        { "$mergeObjects": ["$$this", {
            "attempts": { "$add": [{ "$ifNull": ["$$this.attempts", 0_i64] }, 1_i64] }
        }] },
        "$$this",
    ] };
    let field = format!("${FIELD}");
    let task = db
        .tasks
        .find_one_and_update(
            filter,
            vec![doc! { "$set": { FIELD: { "$map": { "input": field, "in": counted } } } }],
        )
        .projection(doc! { FIELD: 1 })
        .return_document(ReturnDocument::After)
        .await
        .db()?;
    Ok(task.and_then(|t| match t.get(FIELD) {
        Some(Bson::Array(list)) => list.iter().find_map(|e| match e {
            Bson::Document(e) if e.get("_id") == Some(id) => Some(e.clone()),
            _ => None,
        }),
        _ => None,
    }))
}

/// Count one unacknowledged push of an update waiting in the collection; its attempts
/// now, `None` when it is not there (or set aside).
async fn count_attempt_elsewhere(db: &Db, id: &Bson) -> StoreResult<Option<i64>> {
    let mut filter = waiting();
    filter.insert("_id", id.clone());
    let Some(after) = db
        .updates
        .find_one_and_update(filter, doc! { "$inc": { "attempts": 1_i64 } })
        .return_document(ReturnDocument::After)
        .await
        .db()?
    else {
        return Ok(None);
    };
    codec::Fields::new(&after, codec::UPDATES)
        .i64("attempts")
        .map(Some)
}

/// Count an unacknowledged push for each waiting update; set aside those that reached
/// `set_aside_after` attempts (an update waiting in a task moves to the collection
/// first: insert, then removal from the task, so a crash in between keeps it twice
/// rather than losing it). Returns the ids set aside now.
pub(super) async fn note_unacknowledged(
    db: &Db,
    ids: &[ObjectId],
    set_aside_after: u32,
    now: DateTime<Utc>,
) -> StoreResult<Vec<ObjectId>> {
    let limit = i64::from(set_aside_after);
    let mut out = Vec::new();
    for &id in ids {
        let key = oid(id);
        if let Some(attempts) = count_attempt_elsewhere(db, &key).await? {
            if attempts >= limit {
                let mut filter = waiting();
                filter.insert("_id", key.clone());
                let result = db
                    .updates
                    .update_one(filter, doc! { "$set": { "set_aside_at": date(now) } })
                    .await
                    .db()?;
                if result.matched_count > 0 {
                    out.push(id);
                }
            }
            continue;
        }
        let Some(mut entry) = count_attempt_in_task(db, &key).await? else {
            continue;
        };
        let attempts = codec::Fields::new(&entry, codec::UPDATES).i64("attempts")?;
        if attempts >= limit {
            entry.insert("set_aside_at", date(now));
            entries::insert_elsewhere(db, vec![entry]).await?;
            entries::remove(db, std::slice::from_ref(&key)).await?;
            out.push(id);
        }
    }
    Ok(out)
}

/// The oldest `limit` set-aside updates, in order.
pub(super) async fn set_aside(db: &Db, limit: usize) -> StoreResult<Vec<SetAsideUpdate>> {
    find(db, set_aside_filter(), limit)
        .await?
        .iter()
        .map(|d| {
            let f = codec::Fields::new(d, codec::UPDATES);
            Ok(SetAsideUpdate {
                update: update_from_doc(d)?,
                attempts: u32::try_from(f.i64("attempts")?).unwrap_or(u32::MAX),
                set_aside_at: f
                    .opt_time("set_aside_at")?
                    .ok_or_else(|| f.corrupt("set_aside_at", "missing"))?,
            })
        })
        .collect()
}

pub(super) async fn set_aside_len(db: &Db) -> StoreResult<u64> {
    db.updates.count_documents(set_aside_filter()).await.db()
}

/// Put set-aside updates back at the end of the outbox, in their old order, attempts
/// reset: at the end of their task's outbox, or (their task gone) in the collection
/// with a new `seq`.
pub(super) async fn retry_set_aside(db: &Db) -> StoreResult<u64> {
    let docs = find(db, set_aside_filter(), usize::MAX).await?;
    let mut moved = 0;
    for d in &docs {
        let update = update_from_doc(d)?;
        let key = oid(update.id);
        let mut filter = set_aside_filter();
        filter.insert("_id", key.clone());
        let pending = entries::pending(db, std::slice::from_ref(&update));
        let in_task = db
            .tasks
            .update_one(doc! { "_id": oid(update.task_id) }, pending.ops())
            .await
            .db()?
            .matched_count
            > 0;
        let result = if in_task {
            db.updates.delete_one(filter).await.db()?.deleted_count
        } else {
            db.updates
                .update_one(
                    filter,
                    doc! {
                        "$set": { "seq": pending.first_seq(), "attempts": 0_i64 },
                        "$unset": { "set_aside_at": "" },
                    },
                )
                .await
                .db()?
                .matched_count
        };
        moved += result;
    }
    Ok(moved)
}

#[async_trait::async_trait]
impl crate::store::OutboxStore for MongoStore {
    async fn outbox_len(&self) -> StoreResult<u64> {
        self.run(super::outbox::len(&self.db)).await
    }

    async fn outbox_peek(&self, limit: usize) -> StoreResult<Vec<TaskUpdate>> {
        self.run(super::outbox::peek(&self.db, limit)).await
    }

    async fn outbox_ack(&self, ids: &[ObjectId]) -> StoreResult<u64> {
        self.run(super::outbox::ack(&self.db, ids)).await
    }

    async fn outbox_note_unacknowledged(
        &self,
        ids: &[ObjectId],
        set_aside_after: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>> {
        self.run(super::outbox::note_unacknowledged(
            &self.db,
            ids,
            set_aside_after,
            now,
        ))
        .await
    }

    async fn outbox_set_aside(&self, limit: usize) -> StoreResult<Vec<SetAsideUpdate>> {
        self.run(super::outbox::set_aside(&self.db, limit)).await
    }

    async fn outbox_set_aside_len(&self) -> StoreResult<u64> {
        self.run(super::outbox::set_aside_len(&self.db)).await
    }

    async fn outbox_retry_set_aside(&self) -> StoreResult<u64> {
        self.run(super::outbox::retry_set_aside(&self.db)).await
    }
}
