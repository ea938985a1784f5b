//! The `task_update_queue` collection: the outbox of task updates, in arrival order.
//!
//! Arrival order comes from a sequence number, not from the clock: every insert first
//! takes the next numbers from a counter document (`flamenco_counters`,
//! `{_id: "task_update_queue", seq}`) with one atomic `$inc`, and stores them in the
//! update's `seq` field; the outbox is read by `seq`, then `_id`.
//!
//! * The counter is shared by every Manager on the database, so the order is global and
//!   does not depend on clocks or on the random part of ObjectIds (`received_on_manager`
//!   ties within a millisecond, and ObjectIds made by two processes in the same second
//!   compare by their random bytes).
//! * Concurrent inserts are grouped (`outbox_batch`): one `$inc` takes the numbers of
//!   every update in the group, one `insert` stores them, in the callers' order.
//! * Numbers are taken before the insert, so an insert that is slow to finish can become
//!   visible after a later one; a reader may then see a gap that fills a moment later.
//!   That never reorders updates that depend on each other: an update caused by an
//!   acknowledged one (a worker's update after its claim, a second update after the first
//!   one's 204) takes its number after the first was written.
//! * A crash between taking numbers and inserting leaves a harmless gap.
//! * Documents left by the Go Manager have no `seq`; missing sorts first, and among them
//!   `_id` order is v2's queueing order (one process made those ids with a counter).
//!
//! Updates the job source never acknowledges are counted (`attempts`) and eventually set
//! aside (`set_aside_at`): kept, but skipped by [`len`] and [`peek`]. Both fields are ours
//! and absent on waiting updates, so v2's documents are waiting updates.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use mongodb::Collection;

use super::codec::{self, date, oid, update_from_doc};
use super::errors::{duplicate_index, map_err, Mongo};
use super::Db;
use super::MongoStore;
use crate::model::{ObjectId, TaskStatus, TaskUpdate};
use crate::store::{SetAsideUpdate, StoreError, StoreResult};

/// The counter document's id.
const COUNTER_ID: &str = "task_update_queue";

/// The outbox order.
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

/// Make sure the counter exists (idempotent, and harmless when two Managers race).
pub(super) async fn init_counter(db: &Db) -> StoreResult<()> {
    let result = db
        .counters
        .update_one(
            doc! { "_id": COUNTER_ID },
            doc! { "$setOnInsert": { "seq": 0_i64 } },
        )
        .upsert(true)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if duplicate_index(&e).is_some() => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

/// Take `n` sequence numbers from the counter in `counters`; returns the first.
pub(super) async fn take_numbers_in(counters: &Collection<Document>, n: usize) -> StoreResult<i64> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let counter = counters
        .find_one_and_update(doc! { "_id": COUNTER_ID }, doc! { "$inc": { "seq": n } })
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await
        .db()?
        .ok_or_else(|| StoreError::Other("the outbox counter was not returned".into()))?;
    let last = codec::Fields::new(&counter, codec::COUNTERS).i64("seq")?;
    Ok(last - n + 1)
}

/// Queue updates (v2 §7.2 step 1), in this order, after everything queued before: through
/// the group commit (`outbox_batch`), which stores them with the updates of concurrent
/// callers.
pub(super) async fn insert(db: &Db, updates: &[TaskUpdate]) -> StoreResult<()> {
    if updates.is_empty() {
        return Ok(());
    }
    db.outbox
        .submit(super::outbox_batch::documents(updates))
        .await
}

pub(super) async fn len(db: &Db) -> StoreResult<u64> {
    db.updates.count_documents(waiting()).await.db()
}

/// The oldest `limit` waiting updates, in arrival order.
pub(super) async fn peek(db: &Db, limit: usize) -> StoreResult<Vec<TaskUpdate>> {
    find(db, waiting(), limit)
        .await?
        .iter()
        .map(update_from_doc)
        .collect()
}

/// Remove these updates; returns how many there were.
pub(super) async fn ack(db: &Db, ids: &[ObjectId]) -> StoreResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Bson> = ids.iter().map(|id| oid(*id)).collect();
    Ok(db
        .updates
        .delete_many(doc! { "_id": { "$in": ids } })
        .await
        .db()?
        .deleted_count)
}

/// Delete the oldest `limit` updates (waiting or set aside); returns how many.
pub(super) async fn purge(db: &Db, limit: usize) -> StoreResult<u64> {
    let ids: Vec<Bson> = find(db, doc! {}, limit)
        .await?
        .iter()
        .map(|d| codec::Fields::new(d, codec::UPDATES).id("_id").map(oid))
        .collect::<StoreResult<_>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(db
        .updates
        .delete_many(doc! { "_id": { "$in": ids } })
        .await
        .db()?
        .deleted_count)
}

/// Is an update with a final status for this task waiting (not set aside)?
pub(super) async fn final_update_pending(db: &Db, task_id: ObjectId) -> StoreResult<bool> {
    let finals: Vec<&str> = TaskStatus::KNOWN
        .iter()
        .filter(|s| s.is_final())
        .map(|s| s.as_str())
        .collect();
    let mut filter = waiting();
    filter.insert("task_id", oid(task_id));
    filter.insert("task_status", doc! { "$in": finals });
    Ok(db
        .updates
        .find_one(filter)
        .projection(doc! { "_id": 1 })
        .await
        .db()?
        .is_some())
}

/// Count an unacknowledged push for each waiting update (one atomic `$inc` each); set
/// aside those that reached `set_aside_after` attempts. Returns the ids set aside now.
pub(super) async fn note_unacknowledged(
    db: &Db,
    ids: &[ObjectId],
    set_aside_after: u32,
    now: DateTime<Utc>,
) -> StoreResult<Vec<ObjectId>> {
    let mut out = Vec::new();
    for &id in ids {
        let mut filter = waiting();
        filter.insert("_id", oid(id));
        let Some(after) = db
            .updates
            .find_one_and_update(filter.clone(), doc! { "$inc": { "attempts": 1_i64 } })
            .return_document(ReturnDocument::After)
            .await
            .db()?
        else {
            continue;
        };
        let attempts = codec::Fields::new(&after, codec::UPDATES).i64("attempts")?;
        if attempts >= i64::from(set_aside_after) {
            let result = db
                .updates
                .update_one(filter, doc! { "$set": { "set_aside_at": date(now) } })
                .await
                .db()?;
            if result.matched_count > 0 {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// The oldest `limit` set-aside updates, in arrival order.
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
/// reset: each gets a new sequence number.
pub(super) async fn retry_set_aside(db: &Db) -> StoreResult<u64> {
    let docs = find(db, set_aside_filter(), usize::MAX).await?;
    if docs.is_empty() {
        return Ok(0);
    }
    let first = take_numbers_in(&db.counters, docs.len()).await?;
    let mut moved = 0;
    for (d, seq) in docs.iter().zip(first..) {
        let id = codec::Fields::new(d, codec::UPDATES).id("_id")?;
        let mut filter = set_aside_filter();
        filter.insert("_id", oid(id));
        let result = db
            .updates
            .update_one(
                filter,
                doc! {
                    "$set": { "seq": seq, "attempts": 0_i64 },
                    "$unset": { "set_aside_at": "" },
                },
            )
            .await
            .db()?;
        moved += result.matched_count;
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
