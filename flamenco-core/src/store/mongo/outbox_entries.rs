//! The outbox in the task documents: an update waits in its own task's document, so the
//! write that changes the task also queues the update, in ONE command.
//!
//! A task with waiting updates has three fields of ours (absent otherwise):
//!
//! * `outbox`: the waiting updates, oldest first, each a `task_update_queue` document
//!   (`codec::update_to_doc`) plus `bytes` (its approximate size);
//! * `outbox_at`: the least `seq` of them (the tasks are read in this order, through a
//!   sparse index that holds only the tasks with waiting updates);
//! * `outbox_bytes`: the sum of their `bytes`.
//!
//! Order. `seq` is a stamp from this process's [`Stamps`]: microseconds since the epoch,
//! strictly increasing within the process. A task's own updates are in the order they
//! were written to its document (every write to one document is atomic, so two
//! Managers never interleave inside one), and the reader never takes a task's later
//! update before its earlier one: that is the order the job source needs. Across tasks
//! the order is the stamps', the Managers' clocks: updates of different tasks do not
//! depend on each other (the Server applies each to its own task), as v2's ObjectId order
//! did not either. The old global counter (`flamenco_counters`) cost a round trip per
//! write and is no longer taken; its numbers are far below any stamp, so updates queued
//! by an earlier version in `task_update_queue` come first.
//!
//! `task_update_queue` keeps what has no task to wait in: updates v2 or an earlier
//! version queued, updates about a task that does not exist, updates set aside after
//! unanswered pushes, and the waiting updates of a task about to be deleted
//! ([`move_out`]).
//!
//! Size. A document is at most 16 MiB; a worker's update is refused with 503 (the worker
//! keeps it and sends it again) while its task holds [`TASK_LIMIT_BYTES`] of waiting
//! updates, which only a job source that takes none for a long time lets happen. The
//! Manager's own updates are small and not refused.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Utc;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::codec::{self, oid, update_to_doc};
use super::errors::{failed_documents, map_err, Mongo};
use super::Db;
use crate::model::{ObjectId, TaskUpdate};
use crate::store::{StoreError, StoreResult};

/// The waiting updates.
pub(super) const FIELD: &str = "outbox";
/// The least `seq` of the waiting updates.
pub(super) const AT: &str = "outbox_at";
/// Their total size.
pub(super) const BYTES: &str = "outbox_bytes";

/// A worker's update is refused while its task holds this much (a quarter of the 16 MiB
/// a document may hold, so that the Manager's own updates and the task itself still fit).
pub(super) const TASK_LIMIT_BYTES: i64 = 4 << 20;

/// What an entry costs beyond its strings (ids, numbers, field names), roughly.
const ENTRY_OVERHEAD: i64 = 200;

/// The order stamps of this process.
#[derive(Default)]
pub(super) struct Stamps(AtomicI64);

impl Stamps {
    /// `n` consecutive stamps (at least one), after every stamp taken before; the first.
    pub(super) fn take(&self, n: usize) -> i64 {
        let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        let now = Utc::now().timestamp_micros();
        let mut last = self.0.load(Ordering::Relaxed);
        loop {
            let first = now.max(last.saturating_add(1));
            let new_last = first.saturating_add(n - 1);
            match self
                .0
                .compare_exchange_weak(last, new_last, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return first,
                Err(seen) => last = seen,
            }
        }
    }
}

/// "The task has waiting updates": what the outbox's sparse indexes hold.
pub(super) fn waiting_filter() -> Document {
    doc! { AT: { "$exists": true } }
}

/// Updates to queue in the write that changes their task: their entries, in order.
pub(super) struct Pending {
    entries: Vec<Document>,
    first: i64,
    bytes: i64,
}

/// The entry of an update with its stamp (without its log text unless `log_text`).
fn entry(update: &TaskUpdate, seq: i64, log_text: bool) -> (Document, i64) {
    let mut d = update_to_doc(update, seq);
    let log = if log_text {
        update.log.len()
    } else {
        d.remove("log");
        0
    };
    let strings = log + update.activity.len() + update.worker.len();
    let bytes = ENTRY_OVERHEAD.saturating_add(i64::try_from(strings).unwrap_or(i64::MAX));
    d.insert("bytes", bytes);
    (d, bytes)
}

/// Stamp these updates (all of one task), in this order.
pub(super) fn pending(db: &Db, updates: &[TaskUpdate]) -> Pending {
    let first = db.stamps.take(updates.len());
    let log_text = db.outbox_log_text.load(Ordering::Relaxed);
    let mut bytes: i64 = 0;
    let entries = updates
        .iter()
        .zip(first..)
        .map(|(u, seq)| {
            let (d, b) = entry(u, seq, log_text);
            bytes = bytes.saturating_add(b);
            d
        })
        .collect();
    Pending {
        entries,
        first,
        bytes,
    }
}

impl Pending {
    /// Nothing to queue.
    pub(super) fn none() -> Pending {
        Pending {
            entries: Vec::new(),
            first: 0,
            bytes: 0,
        }
    }

    /// The `seq` of the first entry.
    pub(super) fn first_seq(&self) -> i64 {
        self.first
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The operators that queue the entries, for an update document (not a pipeline).
    pub(super) fn ops(&self) -> Document {
        if self.is_empty() {
            return Document::new();
        }
        doc! {
            "$push": { FIELD: { "$each": self.entries.clone() } },
            "$min": { AT: self.first },
            "$inc": { BYTES: self.bytes },
        }
    }

    /// The filter part "there is room for these entries" (a missing `outbox_bytes`
    /// matches), for a worker's update.
    pub(super) fn room(&self) -> Document {
        doc! { BYTES: { "$not": { "$gt": TASK_LIMIT_BYTES - self.bytes } } }
    }

    /// The pipeline stage that queues the entries in whichever task the update chooses:
    /// the entries were made for the task id `placeholder`, which stands for the chosen
    /// task's `_id` wherever it occurs (the `task_id` field, and inside strings such as
    /// the assignment's activity). Everything else goes in as `$literal`.
    pub(super) fn stage_for_chosen(&self, placeholder: ObjectId) -> Document {
        let hex = placeholder.to_string();
        let exprs: Vec<Bson> = self
            .entries
            .iter()
            .map(|e| entry_for_chosen(e, &hex))
            .collect();
        doc! { "$set": {
            FIELD: { "$concatArrays": [{ "$ifNull": [format!("${FIELD}"), []] }, exprs] },
            AT: { "$min": [{ "$ifNull": [format!("${AT}"), self.first] }, self.first] },
            BYTES: { "$add": [{ "$ifNull": [format!("${BYTES}"), 0_i64] }, self.bytes] },
        } }
    }
}

/// One entry as an expression: `placeholder` becomes the document's `_id`.
fn entry_for_chosen(entry: &Document, hex: &str) -> Bson {
    let mut literal = Document::new();
    let mut computed = Document::new();
    for (k, v) in entry {
        match v {
            Bson::ObjectId(id) if id.to_hex() == hex => {
                computed.insert(k, "$_id");
            }
            Bson::String(s) if s.contains(hex) => {
                let mut parts: Vec<Bson> = Vec::new();
                for (i, piece) in s.split(hex).enumerate() {
                    if i > 0 {
                        parts.push(Bson::Document(doc! { "$toString": "$_id" }));
                    }
                    parts.push(Bson::Document(doc! { "$literal": piece }));
                }
                computed.insert(k, doc! { "$concat": parts });
            }
            other => {
                literal.insert(k, other.clone());
            }
        }
    }
    Bson::Document(doc! { "$mergeObjects": [{ "$literal": literal }, computed] })
}

/// Queue `updates` (of any tasks, in this order) in their tasks' documents, one command
/// per run of updates of one task; an update whose task does not exist goes to
/// `task_update_queue`. For the Manager's own updates, whose task write came before.
pub(super) async fn insert(db: &Db, updates: &[TaskUpdate]) -> StoreResult<()> {
    let mut rest = updates;
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .position(|u| u.task_id != first.task_id)
            .unwrap_or(rest.len());
        let (run, after) = rest.split_at(n);
        rest = after;
        let pending = pending(db, run);
        let matched = db
            .tasks
            .update_one(doc! { "_id": oid(first.task_id) }, pending.ops())
            .await
            .db()?
            .matched_count;
        if matched == 0 {
            insert_elsewhere(db, pending.entries).await?;
        }
    }
    Ok(())
}

/// Put entries in `task_update_queue` (as they are: their `seq` and fields). One that is
/// there already (put there before, by an attempt whose answer was lost) counts as put.
pub(super) async fn insert_elsewhere(db: &Db, entries: Vec<Document>) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    match db.updates.insert_many(entries).ordered(false).await {
        Ok(_) => Ok(()),
        Err(e) => match failed_documents(&e) {
            Some(failed) if failed.iter().all(|&(_, duplicate)| duplicate) => Ok(()),
            _ => Err(map_err(e)),
        },
    }
}

/// The pipeline that removes the entries `ids` from a task's outbox and keeps the other
/// two fields true (all three go when nothing waits any more).
fn without(ids: &[Bson]) -> Vec<Document> {
    let field = format!("${FIELD}");
    let gone_when_empty = |value: Bson| -> Bson {
        Bson::Document(doc! { "$cond": [
            { "$eq": [{ "$size": field.clone() }, 0] }, "$$REMOVE", value
        ] })
    };
    vec![
        doc! { "$set": { FIELD: { "$filter": {
            "input": field.clone(),
            "cond": { "$not": [{ "$in": ["$$this._id", ids.to_vec()] }] },
        } } } },
        doc! { "$set": {
            AT: { "$min": { "$map": { "input": field.clone(), "in": "$$this.seq" } } },
            BYTES: { "$sum": { "$map": {
                "input": field.clone(), "in": { "$ifNull": ["$$this.bytes", 0_i64] }
            } } },
        } },
        doc! { "$set": {
            FIELD: gone_when_empty(Bson::String(field.clone())),
            AT: gone_when_empty(Bson::String(format!("${AT}"))),
            BYTES: gone_when_empty(Bson::String(format!("${BYTES}"))),
        } },
    ]
}

/// The tasks that hold any of the entries `ids` (served by the sparse `{"outbox._id": 1}`,
/// which holds only tasks with waiting updates: no other condition is needed).
pub(super) fn holding(ids: &[Bson]) -> Document {
    doc! { format!("{FIELD}._id"): { "$in": ids.to_vec() } }
}

/// The order in which [`lists`] reads the tasks (served by `{outbox_at: 1}`; tasks
/// with the same `outbox_at`, which only two Managers' stamps can give, in any order).
pub(super) fn reading_order() -> Document {
    doc! { AT: 1 }
}

/// Remove the entries `ids` from whichever tasks hold them (one command).
pub(super) async fn remove(db: &Db, ids: &[Bson]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    db.tasks
        .update_many(holding(ids), without(ids))
        .await
        .db()?;
    Ok(())
}

/// The entries of the tasks that `filter` selects among those with waiting updates, per
/// task (oldest first within each), tasks in `outbox_at` order, at most `limit` tasks.
pub(super) async fn lists(
    db: &Db,
    filter: Document,
    limit: Option<usize>,
) -> StoreResult<Vec<Vec<Document>>> {
    let mut query = waiting_filter();
    query.extend(filter);
    let mut find = db
        .tasks
        .find(query)
        .sort(reading_order())
        .projection(doc! { FIELD: 1 });
    if let Some(limit) = limit {
        if limit == 0 {
            return Ok(Vec::new());
        }
        find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    let docs: Vec<Document> = find.await.db()?.try_collect().await.db()?;
    docs.iter()
        .map(|d| {
            let f = codec::Fields::new(d, codec::TASKS);
            match d.get(FIELD) {
                Some(Bson::Array(entries)) => entries
                    .iter()
                    .map(|e| match e {
                        Bson::Document(e) => Ok(e.clone()),
                        _ => Err(f.corrupt(FIELD, "an entry is not a document")),
                    })
                    .collect(),
                _ => Err(f.corrupt(FIELD, "not an array")),
            }
        })
        .collect()
}

/// Before the tasks that `filter` selects are deleted: their waiting updates go to
/// `task_update_queue`, with their `seq`, and leave the tasks. A task that gets a new
/// update in between has it again afterwards; the caller's delete must spare such a task
/// ([`nothing_waiting`]).
pub(super) async fn move_out(db: &Db, filter: Document) -> StoreResult<()> {
    let entries: Vec<Document> = lists(db, filter, None)
        .await?
        .into_iter()
        .flatten()
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<Bson> = entries
        .iter()
        .map(|e| e.get("_id").cloned().unwrap_or(Bson::Null))
        .collect();
    insert_elsewhere(db, entries).await?;
    remove(db, &ids).await
}

/// The filter part "no update waits in this task", for deletes after [`move_out`].
pub(super) fn nothing_waiting() -> Document {
    doc! { AT: { "$exists": false } }
}

/// `StoreError` for a worker's update refused because its task's outbox is full.
pub(super) fn full(task: ObjectId) -> StoreError {
    StoreError::Unavailable(format!(
        "task {task} holds {} MiB of updates that the job source has not taken yet; \
         the worker should send this update again later",
        TASK_LIMIT_BYTES >> 20
    ))
}

/// Is the task's outbox too full for `pending`?
pub(super) async fn is_full(db: &Db, task: ObjectId, pending: &Pending) -> StoreResult<bool> {
    Ok(db
        .tasks
        .find_one(doc! {
            "_id": oid(task),
            BYTES: { "$gt": TASK_LIMIT_BYTES - pending.bytes },
        })
        .projection(doc! { "_id": 1 })
        .await
        .db()?
        .is_some())
}

impl super::MongoStore {
    /// The outbox's queries on `flamenco_tasks` as `(what, filter, sort)`: the reader's
    /// (tasks with waiting updates, oldest first) and the acknowledgement's (which tasks
    /// hold these updates), for query-plan checks.
    #[doc(hidden)]
    pub fn outbox_queries() -> Vec<(&'static str, Document, Document)> {
        vec![
            ("outbox reader", waiting_filter(), reading_order()),
            (
                "outbox acknowledgement",
                holding(&[oid(ObjectId::new())]),
                Document::new(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_strictly_and_follow_the_clock() {
        let stamps = Stamps::default();
        let before = Utc::now().timestamp_micros();
        let a = stamps.take(3);
        let b = stamps.take(1);
        assert!(a >= before, "{a} < {before}");
        assert!(b >= a + 3, "{b} must come after {a}'s three");
        assert!(stamps.take(0) > b, "zero still takes one");
    }

    #[test]
    fn an_entry_for_the_chosen_task_names_its_id_everywhere_the_placeholder_was() {
        let placeholder = ObjectId::new();
        let mut entry = doc! {
            "_id": oid(ObjectId::new()),
            "task_id": oid(placeholder),
            "activity": format!("task {placeholder} to $worker"),
            "seq": 5_i64,
        };
        entry.insert("log", "no id here");
        let Bson::Document(expr) = entry_for_chosen(&entry, &placeholder.to_string()) else {
            panic!("a document");
        };
        let parts = expr.get_array("$mergeObjects").expect("merge");
        let literal = parts[0]
            .as_document()
            .and_then(|d| d.get_document("$literal").ok())
            .expect("literal");
        assert_eq!(literal.get_str("log").ok(), Some("no id here"));
        assert!(literal.get("task_id").is_none() && literal.get("activity").is_none());
        let computed = parts[1].as_document().expect("computed");
        assert_eq!(computed.get_str("task_id").ok(), Some("$_id"));
        assert_eq!(
            computed.get_document("activity").expect("activity"),
            &doc! { "$concat": [
                { "$literal": "task " },
                { "$toString": "$_id" },
                { "$literal": " to $worker" },
            ] }
        );
    }
}
