//! MongoDB side of [`crate::store::ClaimStore`]: the standalone claim whose first read
//! answers all of its questions, "which tasks did this worker stop?", "does it still
//! have an `active` task?" and "which tasks could it get?", with ONE command
//! ([`claim_read::own_and_first_batch`] with [`own_open_filter`], served by
//! `{status, worker_id, _id}` and the claim index). The rest is the claim of
//! [`super::protocol`], told the answer instead of asking again: an empty poll is one
//! command.

use mongodb::bson::{doc, Document};

use super::codec::oid;
use super::{claim_read, protocol, tasks, Db, MongoStore};
use crate::model::{ObjectId, Task, TaskStatus};
use crate::store::claims::{stopped_update, ClaimOutcome, ClaimStore};
use crate::store::{ClaimRequest, StoreResult};

/// The worker's tasks that are `active` or `cancel-requested`: served by the index
/// `{status: 1, worker_id: 1, _id: 1}` (two index ranges, one per status). No sort is
/// asked for (the answer is a handful of documents, put in order here), so none is
/// done in memory on the server.
pub(super) fn own_open_filter(worker: ObjectId) -> Document {
    doc! {
        "status": { "$in": [TaskStatus::Active.as_str(), TaskStatus::CancelRequested.as_str()] },
        "worker_id": oid(worker),
    }
}

/// Cancel a task the worker stopped, starting from the state just read: one
/// compare-and-set that also queues the update; if the task changed meanwhile, as
/// [`protocol::queue_update`] (which reads it again).
async fn cancel_stopped(db: &Db, before: &Task, req: &ClaimRequest) -> StoreResult<bool> {
    let Some(update) = stopped_update(before.id, req) else {
        return Ok(false);
    };
    let mut after = before.clone();
    protocol::apply_locally(&mut after, &update);
    let queued = super::outbox_entries::pending(db, std::slice::from_ref(&update));
    if !tasks::save_queueing(db, before, &after, Document::new(), &queued).await? {
        protocol::queue_update(db, &update).await?;
    }
    Ok(true)
}

/// `ClaimStore::claim_after_stops`.
pub(super) async fn claim_after_stops(db: &Db, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
    let mut canceled = Vec::new();
    let mut own_active = None;
    let read = claim_read::own_and_first_batch(db, req, own_open_filter(req.worker_id)).await?;
    for task in read.own {
        if task.status == TaskStatus::CancelRequested {
            if cancel_stopped(db, &task, req).await? {
                canceled.push(task.id);
            }
        } else if own_active.is_none() {
            own_active = Some(task); // the oldest, as `tasks::active_for_worker` picks
        }
    }
    let claimed = protocol::claim_with_own(db, req, own_active, read.batch).await?;
    Ok(ClaimOutcome { canceled, claimed })
}

#[async_trait::async_trait]
impl ClaimStore for MongoStore {
    async fn claim_after_stops(&self, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        self.run(claim_after_stops(&self.db, req)).await
    }
}

impl MongoStore {
    /// The filter of the claim's first read (the worker's `active` and `cancel-requested`
    /// tasks), for plan tests.
    #[doc(hidden)]
    pub fn own_open_tasks_query(worker: ObjectId) -> Document {
        own_open_filter(worker)
    }
}
