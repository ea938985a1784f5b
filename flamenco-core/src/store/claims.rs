//! A standalone Manager's `POST /task` as one store operation: the [`ClaimStore`] trait, a
//! supertrait of [`crate::store::Store`] (backends in `sqlite/claims.rs` and
//! `mongo/claims.rs`).
//!
//! A worker that asks for a new task has stopped whatever the Manager asked it to stop:
//! its `cancel-requested` tasks become `canceled` (v2 §6.2; the update is
//! [`updates::return_update`] with [`ReturnOutcome::Canceled`], queued like
//! [`crate::store::WorkerProtocolStore::queue_update`]), and then the claim runs
//! ([`crate::store::WorkerProtocolStore::claim_task`]). Both steps begin with the same
//! question, "which tasks are assigned to this worker and not finished?", so a backend
//! where every read is a network round trip (MongoDB) answers it once for both. The
//! rules are the shared ones; [`claim_in_steps`] is the reference sequence.

use async_trait::async_trait;

use super::{ClaimRequest, Claimed, Store, StoreResult, TaskQuery};
use crate::model::{ObjectId, TaskStatus};
use crate::updates::{self, ReturnOutcome};

/// What [`ClaimStore::claim_after_stops`] did.
#[derive(Clone, Debug)]
pub struct ClaimOutcome {
    /// The worker's `cancel-requested` tasks that are `canceled` now (oldest first).
    pub canceled: Vec<ObjectId>,
    /// The claimed task, as [`crate::store::WorkerProtocolStore::claim_task`] answers.
    pub claimed: Option<Claimed>,
}

/// The standalone claim.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Cancel the worker's `cancel-requested` tasks (it stopped them), then claim a task
    /// for it; the same result as [`claim_in_steps`].
    async fn claim_after_stops(&self, req: &ClaimRequest) -> StoreResult<ClaimOutcome>;
}

/// The update that cancels a task the worker stopped.
pub fn stopped_update(task_id: ObjectId, req: &ClaimRequest) -> Option<crate::model::TaskUpdate> {
    updates::return_update(task_id, &req.ident, &ReturnOutcome::Canceled, req.now)
}

/// [`ClaimStore::claim_after_stops`] as separate store operations: list the worker's
/// `cancel-requested` tasks, queue the canceling update of each, then claim. The SQLite
/// backend uses it as is (each step is a local transaction, not a round trip).
pub async fn claim_in_steps(store: &dyn Store, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
    let stopped = store
        .list_tasks(&TaskQuery {
            statuses: vec![TaskStatus::CancelRequested],
            worker_id: Some(req.worker_id),
            ..TaskQuery::default()
        })
        .await?;
    let mut canceled = Vec::new();
    for task in stopped {
        if let Some(update) = stopped_update(task.id, req) {
            store.queue_update(update).await?;
            canceled.push(task.id);
        }
    }
    let claimed = store.claim_task(req).await?;
    Ok(ClaimOutcome { canceled, claimed })
}
