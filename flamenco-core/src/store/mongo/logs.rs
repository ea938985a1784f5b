//! Task logs on MongoDB: the MongoDB side of [`crate::store::TaskLogStore`]. What is kept
//! and dropped is decided by [`crate::store::logs`]; this module only stores chunks.
//!
//! Two collections of ours (docs/storage.md):
//!
//! * `task_log_chunks`: one document per chunk, `{task_id, head, start_byte, first_line,
//!   line_count, end_byte, text}`, indexed `{task_id: 1, head: 1, start_byte: 1}` (the
//!   log's order within the head and within the tail; dropping the tail's oldest chunks is
//!   one ranged `delete_many`).
//! * Where each task's log ends: `log_next_line` and `log_next_byte` in the task's own
//!   document (ours). An append first takes its place with one atomic `$inc` there (so
//!   appends from several requests or Managers never overlap), then inserts its chunks,
//!   then drops the tail's oldest chunks past the cap. A worker's update takes the place
//!   in the same write as the task's change ([`reserve`], [`append_at`]): an update with
//!   log lines is that write and the chunks' insert.
//! * `task_log_ends`: `{_id: task_id, next_line, next_byte}`, where earlier versions kept
//!   the ends; moved into the tasks at connect ([`migrate_ends`]), and still used for a
//!   log appended to a task that does not exist (`TaskLogStore::append_task_log` allows
//!   that).
//!
//! The chunks of concurrent appends (of any tasks) go in together, with one unordered
//! `insert` per batch (`group_commit`, [`chunk_queue`]): under load an update with log
//! lines costs the `$inc` and a share of one insert. Their order within a log is their
//! positions, so the order of the documents in the batch does not matter.
//!
//! There are no transactions: a worker's log lines are inserted right after its update's
//! task write, before the worker is answered; a failure answers 503 and the
//! worker sends the update again (the lines may then be stored twice, never lost). A crash
//! between the `$inc` and the insert leaves a harmless gap in the line numbers. Deleting
//! tasks deletes their logs right after (`delete_for_gone`); a crash in between leaves
//! chunks of a task that no longer exists, which nothing reads.

use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use mongodb::Collection;

use super::codec::{self, oid};
use super::errors::{failed_documents, map_err, Mongo};
use super::group_commit::GroupCommit;
use super::Db;
use crate::model::ObjectId;
use crate::store::logs::{
    assemble, choose, plan_append, split_lines, LogChunk, LogEnd, TaskLogLimits, TaskLogPage,
    TaskLogQuery,
};
use crate::store::StoreResult;

/// The chunks' collection.
pub(super) const CHUNKS: &str = "task_log_chunks";
/// The ends' collection (earlier versions; tasks that do not exist).
pub(super) const ENDS: &str = "task_log_ends";
/// The task's field: the number of the log's next line.
pub(super) const NEXT_LINE: &str = "log_next_line";
/// The task's field: the offset of the log's next byte.
pub(super) const NEXT_BYTE: &str = "log_next_byte";

/// At most this many chunks go in one batch's insert (the driver splits an insert larger
/// than MongoDB's 48 MB message into several messages).
const MAX_BATCH: usize = 256;

/// The chunks' group-commit queue (one per store): each item is one append's chunks.
pub(super) type ChunkQueue = GroupCommit<Vec<Document>>;

/// The queue that inserts chunks into `chunks`.
pub(super) fn chunk_queue(chunks: Collection<Document>) -> ChunkQueue {
    GroupCommit::new(
        "the task log insert",
        MAX_BATCH,
        Vec::len,
        Arc::new(move |appends| {
            let chunks = chunks.clone();
            Box::pin(async move { insert_batch(&chunks, appends).await })
        }),
    )
}

/// Insert the chunks of every append with one unordered insert; returns each append's
/// result, in the appends' order. A chunk that is already in (a duplicate of its own id:
/// an insert applied although its answer was lost) counts as stored.
async fn insert_batch(
    chunks: &Collection<Document>,
    appends: Vec<Vec<Document>>,
) -> Vec<StoreResult<()>> {
    let owner: Vec<usize> = appends
        .iter()
        .enumerate()
        .flat_map(|(i, append)| std::iter::repeat_n(i, append.len()))
        .collect();
    let mut results: Vec<StoreResult<()>> = appends.iter().map(|_| Ok(())).collect();
    let docs = appends.into_iter().flatten();
    let Err(e) = chunks.insert_many(docs).ordered(false).await else {
        return results;
    };
    match failed_documents(&e) {
        Some(failed) => {
            let error = map_err(e);
            for (index, duplicate) in failed {
                if let (false, Some(&i)) = (duplicate, owner.get(index)) {
                    results[i] = Err(error.clone());
                }
            }
        }
        None => {
            let error = map_err(e);
            results.iter_mut().for_each(|r| *r = Err(error.clone()));
        }
    }
    results
}

fn int(n: u64) -> Bson {
    Bson::Int64(i64::try_from(n).unwrap_or(i64::MAX))
}

fn count(fields: &codec::Fields<'_>, name: &str) -> StoreResult<u64> {
    let n = fields.i64(name)?;
    u64::try_from(n).map_err(|_| fields.corrupt(name, format!("{n} is negative")))
}

fn chunk_from_doc(d: &Document) -> StoreResult<LogChunk> {
    let f = codec::Fields::new(d, CHUNKS);
    Ok(LogChunk {
        head: d.get_bool("head").unwrap_or(false),
        start: count(&f, "start_byte")?,
        first_line: count(&f, "first_line")?,
        line_count: count(&f, "line_count")?,
        end: count(&f, "end_byte")?,
        text: f.string("text")?,
    })
}

fn end_from_doc(d: &Document) -> StoreResult<LogEnd> {
    let f = codec::Fields::new(d, ENDS);
    Ok(LogEnd {
        next_line: count(&f, "next_line")?,
        next_byte: count(&f, "next_byte")?,
    })
}

/// A field of the log's end in a task document (missing: 0).
fn end_field(task: &Document, name: &str) -> StoreResult<u64> {
    match task.get(name) {
        None | Some(Bson::Null) => Ok(0),
        Some(_) => count(&codec::Fields::new(task, codec::TASKS), name),
    }
}

/// The log's end kept in a task document.
pub(super) fn end_in_task(task: &Document) -> StoreResult<LogEnd> {
    Ok(LogEnd {
        next_line: end_field(task, NEXT_LINE)?,
        next_byte: end_field(task, NEXT_BYTE)?,
    })
}

/// The projection of the log's end from a task document.
pub(super) fn end_projection() -> Document {
    doc! { NEXT_LINE: 1, NEXT_BYTE: 1 }
}

/// Where the log of `task_id` ends.
pub(super) async fn end(db: &Db, task_id: ObjectId) -> StoreResult<LogEnd> {
    let task = db
        .tasks
        .find_one(doc! { "_id": oid(task_id) })
        .projection(end_projection())
        .await
        .db()?;
    if let Some(task) = task {
        return end_in_task(&task);
    }
    match db
        .log_ends
        .find_one(doc! { "_id": oid(task_id) })
        .await
        .db()?
    {
        Some(d) => end_from_doc(&d),
        None => Ok(LogEnd::default()),
    }
}

/// The `$inc` that takes the place of `text` at the end of a task's log, for a write to
/// the task that answers with the document before it (then [`append_at`] the end it
/// had); `None` when nothing of `text` is kept.
pub(super) fn reserve(text: &str, limits: TaskLogLimits) -> Option<Document> {
    // The size of what is appended does not depend on where: plan at 0 to learn it.
    let sized = plan_append(LogEnd::default(), text, limits)?;
    debug_assert_eq!(sized.end.next_line, split_lines(text).len() as u64);
    Some(doc! {
        NEXT_LINE: int(sized.end.next_line),
        NEXT_BYTE: int(sized.end.next_byte),
    })
}

/// Append `text` to the log of `task_id`, within `limits`: take its place with one
/// `$inc` on the task (or, for a task that does not exist, on `task_log_ends`), then
/// [`append_at`].
pub(super) async fn append(
    db: &Db,
    task_id: ObjectId,
    text: &str,
    limits: TaskLogLimits,
) -> StoreResult<()> {
    let Some(inc) = reserve(text, limits) else {
        return Ok(());
    };
    let task = db
        .tasks
        .find_one_and_update(doc! { "_id": oid(task_id) }, doc! { "$inc": inc.clone() })
        .projection(end_projection())
        .return_document(ReturnDocument::Before)
        .await
        .db()?;
    let at = match task {
        Some(task) => end_in_task(&task)?,
        None => {
            let ends = doc! {
                "next_line": inc.get(NEXT_LINE).cloned().unwrap_or(Bson::Int64(0)),
                "next_byte": inc.get(NEXT_BYTE).cloned().unwrap_or(Bson::Int64(0)),
            };
            let before = db
                .log_ends
                .find_one_and_update(doc! { "_id": oid(task_id) }, doc! { "$inc": ends })
                .upsert(true)
                .return_document(ReturnDocument::Before)
                .await
                .db()?;
            match before {
                Some(d) => end_from_doc(&d)?,
                None => LogEnd::default(),
            }
        }
    };
    append_at(db, task_id, at, text, limits).await
}

/// Store `text` at `at` in the log of `task_id` (a place taken before: [`reserve`]):
/// insert its chunks, drop the tail's oldest chunks past the cap.
pub(super) async fn append_at(
    db: &Db,
    task_id: ObjectId,
    at: LogEnd,
    text: &str,
    limits: TaskLogLimits,
) -> StoreResult<()> {
    let Some(plan) = plan_append(at, text, limits) else {
        return Ok(());
    };
    let docs: Vec<Document> = plan
        .chunks
        .iter()
        .map(|c| {
            doc! {
                "task_id": oid(task_id),
                "head": c.head,
                "start_byte": int(c.start),
                "first_line": int(c.first_line),
                "line_count": int(c.line_count),
                "end_byte": int(c.end),
                "text": c.text.as_str(),
            }
        })
        .collect();
    if !docs.is_empty() {
        db.log_chunk_queue.submit(docs).await?;
    }
    if plan.drop_tail_before > 0 {
        db.log_chunks
            .delete_many(doc! {
                "task_id": oid(task_id),
                "head": false,
                "start_byte": { "$lt": int(plan.drop_tail_before) },
            })
            .await
            .db()?;
    }
    Ok(())
}

/// Read a part of the log of `task_id`: the positions first, then the text of the chunks
/// the query needs.
pub(super) async fn read(
    db: &Db,
    task_id: ObjectId,
    query: TaskLogQuery,
) -> StoreResult<TaskLogPage> {
    let docs: Vec<Document> = db
        .log_chunks
        .find(doc! { "task_id": oid(task_id) })
        .projection(doc! { "text": 0 })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    let mut metas = docs
        .iter()
        .map(chunk_from_doc)
        .collect::<StoreResult<Vec<_>>>()?;
    metas.sort_by_key(|c| c.first_line);
    let end = end(db, task_id).await?;
    let wanted = choose(&metas, query);
    let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
        return Ok(assemble(&[], query, end));
    };
    let docs: Vec<Document> = db
        .log_chunks
        .find(doc! {
            "task_id": oid(task_id),
            "first_line": { "$gte": int(first.first_line), "$lte": int(last.first_line) },
        })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    let mut chunks = docs
        .iter()
        .map(chunk_from_doc)
        .collect::<StoreResult<Vec<_>>>()?;
    chunks.sort_by_key(|c| c.first_line);
    Ok(assemble(&chunks, query, end))
}

/// Delete the logs of those of `task_ids` that are no longer tasks (called right after
/// deleting tasks, so a task that a concurrent re-queue kept keeps its log).
pub(super) async fn delete_for_gone(db: &Db, task_ids: &[ObjectId]) -> StoreResult<()> {
    if task_ids.is_empty() {
        return Ok(());
    }
    let listed: Vec<Bson> = task_ids.iter().map(|id| oid(*id)).collect();
    let left = existing_tasks(db, listed.clone()).await?;
    let gone: Vec<Bson> = listed.into_iter().filter(|id| !left.contains(id)).collect();
    if gone.is_empty() {
        return Ok(());
    }
    db.log_chunks
        .delete_many(doc! { "task_id": { "$in": gone.clone() } })
        .await
        .db()?;
    db.log_ends
        .delete_many(doc! { "_id": { "$in": gone } })
        .await
        .db()?;
    Ok(())
}

/// Those of `ids` that are tasks (one `find` of their ids).
async fn existing_tasks(db: &Db, ids: Vec<Bson>) -> StoreResult<Vec<Bson>> {
    let filter = doc! { "_id": { "$in": ids } };
    let found = super::tasks::ids(db, filter, None, 0, None).await?;
    Ok(found.into_iter().map(oid).collect())
}

/// The ids of the tasks of job `job_id` (before a job delete, for [`delete_for_gone`]).
pub(super) async fn task_ids_of_job(db: &Db, job_id: ObjectId) -> StoreResult<Vec<ObjectId>> {
    super::tasks::ids(db, doc! { "job": oid(job_id) }, None, 0, None).await
}

/// Move the log ends that earlier versions kept in `task_log_ends` into their tasks
/// (`$max`, so running it twice, or beside an append, never moves an end back), then
/// remove them there; the ends of tasks that do not exist stay. At connect, before the
/// store serves: three commands per thousand ends, nothing when there are none.
pub(super) async fn migrate_ends(db: &Db) -> StoreResult<()> {
    let mut after: Option<Bson> = None;
    loop {
        let filter = match &after {
            Some(id) => doc! { "_id": { "$gt": id.clone() } },
            None => Document::new(),
        };
        let ends: Vec<Document> = db
            .log_ends
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(1_000)
            .await
            .db()?
            .try_collect()
            .await
            .db()?;
        let Some(last) = ends.last() else {
            return Ok(());
        };
        after = last.get("_id").cloned();
        let ids: Vec<Bson> = ends.iter().filter_map(|d| d.get("_id").cloned()).collect();
        let existing = existing_tasks(db, ids).await?;
        let mut statements = Vec::new();
        for d in &ends {
            let Some(id) = d.get("_id").filter(|id| existing.contains(id)) else {
                continue;
            };
            let end = end_from_doc(d)?;
            statements.push(super::batch::Statement {
                filter: doc! { "_id": id.clone() },
                update: doc! { "$max": {
                    NEXT_LINE: int(end.next_line),
                    NEXT_BYTE: int(end.next_byte),
                } },
            });
        }
        if statements.is_empty() {
            continue;
        }
        super::batch::update_each(&db.tasks, statements).await?;
        db.log_ends
            .delete_many(doc! { "_id": { "$in": existing } })
            .await
            .db()?;
    }
}
