//! [`UpstreamStore`]: the job source in upstream mode: downloaded tasks, two-phase claims, cancel lists.
//!
//! One concern of the [`super::Store`] trait, implemented by each backend in its file of the
//! same name (`sqlite/upstream.rs`, `mongo/upstream.rs`) and timed by [`super::InstrumentedStore`].

use super::CancelReport;
use super::ClaimRequest;
use super::Claimed;
use super::MergeReport;
use super::StoreResult;
use crate::model::ObjectId;
use crate::model::Task;
use crate::updates::Refetched;
use async_trait::async_trait;
use chrono::DateTime;
use chrono::Utc;

/// The job source in upstream mode: downloaded tasks, two-phase claims, cancel lists.
#[async_trait]
pub trait UpstreamStore: Send + Sync {
    /// Store tasks downloaded from the job source (v2 §5.3), all in one transaction: new
    /// tasks are inserted; an existing task takes the job source's version merged with the
    /// local one by [`crate::updates::merge_downloaded`] (read and written in the same
    /// transaction, so a concurrent claim or worker update is never lost: a running task
    /// keeps its worker and status unless the job source canceled it).
    async fn merge_downloaded_tasks(
        &self,
        tasks: &[Task],
        now: DateTime<Utc>,
    ) -> StoreResult<MergeReport>;

    /// The first half of a claim in upstream mode: choose the task exactly as
    /// [`WorkerProtocolStore::claim_task`] does and make it `active` for the worker (`worker_id`,
    /// `last_worker_ping`=`last_updated`=now), so no other worker can get it, but queue
    /// nothing and leave `worker` and `activity` alone. The
    /// caller re-validates the task with the job source (no lock held) and then calls
    /// [`UpstreamStore::confirm_claim`] or [`UpstreamStore::release_claim`].
    async fn reserve_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>>;

    /// Complete a reservation: if `task_id` is still `active` for `req.worker_id`, do the
    /// rest of [`WorkerProtocolStore::claim_task`] (the two assignment updates, `worker`=nickname, the
    /// ping) and return the task as stored. `None` when the
    /// reservation was lost meanwhile (the task changed hands or status).
    async fn confirm_claim(
        &self,
        task_id: ObjectId,
        req: &ClaimRequest,
    ) -> StoreResult<Option<Claimed>>;

    /// Give up a reservation because re-validation found the task changed: if `task_id` is
    /// still `active` for `worker_id`, it becomes [`crate::updates::after_refetch`] of
    /// `verdict`. Nothing is queued. Returns false when the reservation was already lost.
    async fn release_claim(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        verdict: &Refetched,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// The job source's cancel list (v2 §5.6), each id decided by
    /// [`crate::updates::upstream_cancel`] in its own compare-and-set: a running task becomes
    /// `cancel-requested`; otherwise a final update is queued (and applied locally) unless
    /// one with a final status for that task already waits in the outbox.
    async fn apply_upstream_cancels(
        &self,
        task_ids: &[ObjectId],
        now: DateTime<Utc>,
    ) -> StoreResult<CancelReport>;
}
