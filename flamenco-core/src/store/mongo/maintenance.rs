//! Maintenance operations: the active-task and worker timeouts, cleanup of finished tasks,
//! clean slate. Each document is changed with its own compare-and-set, so a task pinged
//! (or a worker seen) meanwhile is left alone.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::codec::{self, date, oid};
use super::errors::Mongo;
use super::indexes::finished_statuses;
use super::outbox_entries as entries;
use super::protocol::{apply_locally, CAS_ATTEMPTS};
use super::MongoStore;
use super::{logs, outbox, tasks, workers, Db};
use crate::model::{worker_status, ObjectId, Task, TaskStatus};
use crate::store::{Batch, StoreResult};
use crate::updates;

/// Candidates are read this many at a time.
const BATCH: usize = 500;

/// "Last touched at or before `cutoff`": the last ping, or without one `last_updated`,
/// or neither (v2 §8.1).
fn untouched_since(cutoff: DateTime<Utc>) -> Document {
    doc! { "$or": [
        { "last_worker_ping": { "$lte": date(cutoff) } },
        { "last_worker_ping": Bson::Null, "last_updated": { "$lte": date(cutoff) } },
        { "last_worker_ping": Bson::Null, "last_updated": Bson::Null },
    ] }
}

/// The timeout's candidates: `active` tasks untouched since `cutoff`.
fn timeout_query(cutoff: DateTime<Utc>) -> Document {
    let mut filter = doc! { "status": TaskStatus::Active.as_str() };
    filter.extend(untouched_since(cutoff));
    filter
}

fn timed_out(task: &Task, cutoff: DateTime<Utc>) -> bool {
    task.status == TaskStatus::Active
        && task
            .last_worker_ping
            .or(task.last_updated)
            .is_none_or(|t| t <= cutoff)
}

/// `MaintenanceStore::fail_timed_out_tasks`.
/// With retries in effect, a timed-out task of a job counts as a failure of its silent
/// worker, decided as a worker's own `failed` (`retries::decide_timeout`) and stored with
/// the same compare-and-set.
pub(super) async fn fail_timed_out(
    db: &Db,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: &crate::jobs::retry::RetryPolicy,
) -> StoreResult<Vec<ObjectId>> {
    // Asked in no order (no index has `active` tasks by `_id`, so the server would sort
    // them in memory) and put in order here.
    let mut candidates = tasks::ids(db, timeout_query(cutoff), None, 0, None).await?;
    candidates.sort_unstable();
    let mut failed = Vec::new();
    for id in candidates {
        for _ in 0..CAS_ATTEMPTS {
            let Some(before) = tasks::get_state(db, id).await? else {
                break;
            };
            if !timed_out(&before, cutoff) {
                break;
            }
            let worker = match before.worker_id {
                Some(wid) => workers::get(db, wid).await?,
                None => None,
            };
            let ident = updates::timeout_ident(&before, worker.as_ref());
            let mut update = updates::timeout_update(&before, &ident, before.last_worker_ping, now);
            let nickname = worker
                .as_ref()
                .map(|w| w.nickname.as_str())
                .unwrap_or_default();
            let retry = super::retries::decide_timeout(db, &before, nickname, policy, now).await?;
            if let Some(t) = &retry {
                update = crate::jobs::retry::timeout_failure_update(update, &t.decided);
            }
            let mut after = before.clone();
            apply_locally(&mut after, &update);
            if after.status == TaskStatus::SoftFailed {
                // Runnable again, by another worker.
                after.worker_id = None;
                after.worker.clear();
            }
            // Unchanged status and worker, and still not pinged since the cutoff; the
            // failure joins the record in the same write.
            let saved = match &retry {
                None => tasks::save(db, &before, &after, untouched_since(cutoff)).await?,
                Some(t) => {
                    let mut write = tasks::changes(&before, &after).unwrap_or_default();
                    write.insert("$push", super::retries::push_failure(&t.failure));
                    let mut filter = tasks::unchanged_filter(&before);
                    filter.extend(untouched_since(cutoff));
                    db.tasks.update_one(filter, write).await.db()?.matched_count > 0
                }
            };
            if saved {
                if let Some(t) = &retry {
                    super::retries::after_timeout_failure(db, &before.task_type, t).await?;
                }
                outbox::insert(db, std::slice::from_ref(&update)).await?;
                if let Some(w) = worker {
                    db.workers
                        .update_one(
                            doc! { "_id": oid(w.id) },
                            doc! { "$set": { "status": worker_status::TIMEOUT } },
                        )
                        .await
                        .db()?;
                }
                tracing::warn!(task = %id, worker = %ident, "task timed out; marked failed");
                failed.push(id);
                break;
            }
        }
    }
    Ok(failed)
}

/// `MaintenanceStore::time_out_workers`: one conditional update per worker.
pub(super) async fn time_out_workers(db: &Db, cutoff: DateTime<Utc>) -> StoreResult<Vec<ObjectId>> {
    let filter = doc! {
        "status": worker_status::AWAKE,
        "$or": [
            { "last_activity": { "$lte": date(cutoff) } },
            { "last_activity": Bson::Null },
        ],
    };
    let docs: Vec<Document> = db
        .workers
        .find(filter.clone())
        .projection(doc! { "_id": 1 })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    let mut out = Vec::new();
    for d in &docs {
        let id = codec::Fields::new(d, codec::WORKERS).id("_id")?;
        let mut this = filter.clone();
        this.insert("_id", oid(id));
        let result = db
            .workers
            .update_one(this, doc! { "$set": { "status": worker_status::TIMEOUT } })
            .await
            .db()?;
        if result.matched_count > 0 {
            out.push(id);
        }
    }
    Ok(out)
}

/// Tasks of this finished `status` untouched since `cutoff`: both times at or before
/// it, or missing. `$not: {$gt}` rather than `$lte` or null, so that the index
/// `{status, last_updated, _id}` bounds the walk to the old ones instead of every task of
/// the status. One status at a time: that equality is what lets MongoDB use the index,
/// which is partial (`indexes::finished_range`).
fn finished_before(status: &str, cutoff: DateTime<Utc>) -> Document {
    doc! {
        "status": status,
        "last_updated": { "$not": { "$gt": date(cutoff) } },
        "last_worker_ping": { "$not": { "$gt": date(cutoff) } },
    }
}

/// The order of the cleanup's walk within one status: the index's own key order, so the
/// index gives it and no sort is needed.
fn cleanup_order() -> Document {
    doc! { "last_updated": 1, "_id": 1 }
}

impl MongoStore {
    /// The cleanup's candidate queries for this cutoff, one per finished status:
    /// `(filter, sort)` on `flamenco_tasks` (for query-plan checks).
    #[doc(hidden)]
    pub fn cleanup_queries(cutoff: DateTime<Utc>) -> Vec<(Document, Document)> {
        finished_statuses()
            .iter()
            .map(|s| (finished_before(s, cutoff), cleanup_order()))
            .collect()
    }

    /// The timeout's candidate query for this cutoff (asked with no sort), for
    /// query-plan checks.
    #[doc(hidden)]
    pub fn timeout_query(cutoff: DateTime<Utc>) -> Document {
        timeout_query(cutoff)
    }
}

/// `MaintenanceStore::delete_finished_tasks`: finished tasks untouched since `cutoff`,
/// except parents of tasks that are not finished (found through the `{parents: 1}`
/// index). The delete repeats the conditions, so a task re-queued or touched meanwhile
/// stays.
///
/// The walk follows `{status, last_updated, _id}` from the oldest, one finished status
/// after the other. What it deletes leaves the candidates; the parents it keeps stay in
/// front of the ones not read yet, so each read skips as many as were kept. (A kept
/// parent that changes meanwhile makes the skip pass over one candidate, which the next
/// cleanup finds.)
pub(super) async fn delete_finished(
    db: &Db,
    cutoff: DateTime<Utc>,
    limit: usize,
) -> StoreResult<u64> {
    let mut deleted = 0;
    for status in finished_statuses() {
        let mut kept: u64 = 0;
        while deleted < limit as u64 {
            let filter = finished_before(status, cutoff);
            let batch =
                tasks::ids(db, filter.clone(), Some(cleanup_order()), kept, Some(BATCH)).await?;
            if batch.is_empty() {
                break;
            }
            let (parents, free) = split_needed_parents(db, batch).await?;
            kept += parents.len() as u64;
            let room = usize::try_from(limit as u64 - deleted).unwrap_or(usize::MAX);
            let doomed: Vec<ObjectId> = free.into_iter().take(room).collect();
            if doomed.is_empty() {
                continue;
            }
            let doomed_ids: Vec<Bson> = doomed.iter().map(|id| oid(*id)).collect();
            entries::move_out(db, doc! { "_id": { "$in": doomed_ids.clone() } }).await?;
            let mut filter = filter;
            filter.insert("_id", doc! { "$in": doomed_ids });
            filter.extend(entries::nothing_waiting());
            deleted += db.tasks.delete_many(filter).await.db()?.deleted_count;
            logs::delete_for_gone(db, &doomed).await?;
        }
    }
    Ok(deleted)
}

/// `batch` split into the tasks that an unfinished task lists as a parent (kept) and the
/// others (found through the `{parents: 1}` index).
async fn split_needed_parents(
    db: &Db,
    batch: Vec<ObjectId>,
) -> StoreResult<(Vec<ObjectId>, Vec<ObjectId>)> {
    let listed: Vec<Bson> = batch.iter().map(|id| oid(*id)).collect();
    let children: Vec<Document> = db
        .tasks
        .find(doc! {
            "parents": { "$in": listed },
            "status": { "$nin": finished_statuses().to_vec() },
        })
        .projection(doc! { "parents": 1 })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    let mut needed = BTreeSet::new();
    for child in &children {
        needed.extend(codec::Fields::new(child, codec::TASKS).id_list("parents")?);
    }
    Ok(batch.into_iter().partition(|id| needed.contains(id)))
}

/// `MaintenanceStore::delete_tasks` (clean slate).
pub(super) async fn delete_any(db: &Db, limit: usize) -> StoreResult<u64> {
    if limit == 0 {
        return Ok(0);
    }
    let listed: Vec<Bson> = tasks::ids(db, doc! {}, Some(doc! { "_id": 1 }), 0, Some(limit))
        .await?
        .into_iter()
        .map(oid)
        .collect();
    if listed.is_empty() {
        return Ok(0);
    }
    // The batch's jobs, so that those left without tasks go right after.
    let docs: Vec<Document> = db
        .tasks
        .find(doc! { "_id": { "$in": listed.clone() } })
        .projection(doc! { "job": 1 })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    let mut jobs: Vec<Bson> = Vec::new();
    for d in docs {
        if let Some(job @ Bson::ObjectId(_)) = d.get("job") {
            if !jobs.contains(job) {
                jobs.push(job.clone());
            }
        }
    }
    entries::move_out(db, doc! { "_id": { "$in": listed.clone() } }).await?;
    let mut filter = doc! { "_id": { "$in": listed.clone() } };
    filter.extend(entries::nothing_waiting());
    let deleted = db.tasks.delete_many(filter).await.db()?.deleted_count;
    let listed_ids: Vec<ObjectId> = listed
        .iter()
        .filter_map(|b| match b {
            Bson::ObjectId(id) => Some(ObjectId::from_bytes(id.bytes())),
            _ => None,
        })
        .collect();
    logs::delete_for_gone(db, &listed_ids).await?;
    for job in jobs {
        let left = db
            .tasks
            .find_one(doc! { "job": job.clone() })
            .projection(doc! { "_id": 1 })
            .await
            .db()?;
        if left.is_none() {
            db.jobs.delete_one(doc! { "_id": job }).await.db()?;
        }
    }
    Ok(deleted)
}

#[async_trait::async_trait]
impl crate::store::MaintenanceStore for MongoStore {
    async fn fail_timed_out_tasks(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>> {
        let policy = crate::store::RetryStore::retry_policy(self);
        self.run(super::maintenance::fail_timed_out(
            &self.db, cutoff, now, &policy,
        ))
        .await
    }

    async fn time_out_workers(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<ObjectId>> {
        self.run(super::maintenance::time_out_workers(&self.db, cutoff))
            .await
    }

    async fn delete_finished_tasks(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Batch> {
        timed(self.run(super::maintenance::delete_finished(&self.db, cutoff, limit))).await
    }

    async fn delete_tasks(&self, limit: usize) -> StoreResult<Batch> {
        timed(self.run(super::maintenance::delete_any(&self.db, limit))).await
    }

    async fn purge_outbox(&self, limit: usize) -> StoreResult<Batch> {
        timed(self.run(super::outbox::purge(&self.db, limit))).await
    }
}

/// One batch with its round trips' time.
async fn timed(batch: impl std::future::Future<Output = StoreResult<u64>>) -> StoreResult<Batch> {
    let started = std::time::Instant::now();
    let rows = batch.await?;
    Ok(Batch {
        rows,
        busy: started.elapsed(),
    })
}
