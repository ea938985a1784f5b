//! The MongoDB side of [`crate::store::BulkStore`]: a job's priority with its tasks'
//! `job_priority` (the job, then one `update_many` on its tasks), and forgetting a worker
//! (the decision, the delete with the worker's status as the compare-and-set condition,
//! then its `active` tasks handed back with the tasks' own compare-and-set).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;

use super::codec::{date, job_from_doc, oid};
use super::errors::Mongo;
use super::protocol::{apply_locally, kept_changing, CAS_ATTEMPTS};
use super::{outbox, tasks, workers, Db, MongoStore};
use crate::bulk::{forget_refusal, forget_requeue_update};
use crate::model::{Job, ObjectId, TaskStatus};
use crate::store::{BulkStore, ForgetOutcome, StoreResult};

async fn set_job_priority(
    db: &Db,
    id: ObjectId,
    priority: i32,
    now: DateTime<Utc>,
) -> StoreResult<Option<(Job, u64)>> {
    let Some(job) = db
        .jobs
        .find_one_and_update(
            doc! { "_id": oid(id) },
            doc! { "$set": { "priority": Bson::Int32(priority), "_updated": date(now) } },
        )
        .return_document(ReturnDocument::After)
        .await
        .db()?
    else {
        return Ok(None);
    };
    let job = job_from_doc(&job)?;
    // Through the `{job, status}` index.
    let n = db
        .tasks
        .update_many(
            doc! { "job": oid(id) },
            doc! { "$set": { "job_priority": Bson::Int32(priority) } },
        )
        .await
        .db()?
        .matched_count;
    Ok(Some((job, n)))
}

/// The worker's status as a filter: a worker that never signed on may have none stored.
fn status_filter(status: &str) -> Bson {
    if status.is_empty() {
        Bson::Document(doc! { "$in": ["", Bson::Null] })
    } else {
        Bson::String(status.to_string())
    }
}

async fn forget_worker(db: &Db, id: ObjectId, now: DateTime<Utc>) -> StoreResult<ForgetOutcome> {
    let mut attempts = 0;
    let worker = loop {
        attempts += 1;
        let Some(worker) = workers::get(db, id).await? else {
            return Ok(ForgetOutcome::NotFound);
        };
        let running: Vec<ObjectId> = tasks::active_states_for_worker(db, id)
            .await?
            .iter()
            .map(|t| t.id)
            .collect();
        if let Some(why) = forget_refusal(&worker, &running) {
            return Ok(ForgetOutcome::Refused(why));
        }
        let filter: Document = doc! { "_id": oid(id), "status": status_filter(&worker.status) };
        if db.workers.delete_one(filter).await.db()?.deleted_count > 0 {
            break worker;
        }
        // Its status changed since the decision: decide again.
        if attempts >= CAS_ATTEMPTS {
            return Err(kept_changing(id));
        }
    };
    // The worker is gone, so it claims nothing more: hand back what it held (listed
    // again, in case it claimed a task between the decision and the delete).
    let ident = worker.identifier();
    let mut requeued = Vec::new();
    for listed in tasks::active_states_for_worker(db, id).await? {
        let task_id = listed.id;
        let mut current = Some(listed);
        let mut tries = 0;
        while let Some(before) = current.take() {
            if before.status != TaskStatus::Active || before.worker_id != Some(id) {
                break;
            }
            tries += 1;
            if tries > CAS_ATTEMPTS {
                return Err(kept_changing(task_id));
            }
            let update = forget_requeue_update(task_id, &ident, now);
            let mut after = before.clone();
            apply_locally(&mut after, &update);
            if tasks::save(db, &before, &after, Document::new()).await? {
                outbox::insert(db, std::slice::from_ref(&update)).await?;
                requeued.push(task_id);
                break;
            }
            current = tasks::get_state(db, task_id).await?;
        }
    }
    Ok(ForgetOutcome::Forgotten {
        worker: Box::new(worker),
        requeued,
    })
}

#[async_trait]
impl BulkStore for MongoStore {
    async fn set_job_priority(
        &self,
        id: ObjectId,
        priority: i32,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Job, u64)>> {
        self.run(set_job_priority(&self.db, id, priority, now))
            .await
    }

    async fn forget_worker(&self, id: ObjectId, now: DateTime<Utc>) -> StoreResult<ForgetOutcome> {
        self.run(forget_worker(&self.db, id, now)).await
    }
}
