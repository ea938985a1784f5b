//! [`MaintenanceStore`]: the Manager's housekeeping: timeouts, cleanup, clean slate, outbox purge.
//!
//! One concern of the [`super::Store`] trait, implemented by each backend in its file of the
//! same name (`sqlite/maintenance.rs`, `mongo/maintenance.rs`) and timed by [`super::InstrumentedStore`].

use super::StoreResult;
use crate::model::ObjectId;
use async_trait::async_trait;
use chrono::DateTime;
use chrono::Utc;
use std::time::Duration;

/// What one batch of a long maintenance run (cleanup, clean slate, purge) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The rows (tasks, updates) deleted.
    pub rows: u64,
    /// How long the batch kept the store busy: on the embedded store its time in the
    /// writer, which a request queued behind it waits for (not its own wait for the
    /// writer); on MongoDB its round trips. `maintenance::pacing` sizes the next batch by
    /// it.
    pub busy: Duration,
}

/// The Manager's housekeeping: timeouts, cleanup, clean slate, outbox purge.
#[async_trait]
pub trait MaintenanceStore: Send + Sync {
    /// The active-task timeout (v2 §8.1): every `active` task whose last ping (or, without
    /// one, its `last_updated`; or neither) is at or before `cutoff` fails through
    /// [`crate::updates::timeout_update`], queued like a Manager update, and the worker
    /// named by its `worker_id` becomes `timeout`. Compare-and-set: a task pinged after
    /// `cutoff` meanwhile is left alone. Returns the failed task ids.
    async fn fail_timed_out_tasks(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>>;

    /// Every `awake` worker not seen since `cutoff` (or never) becomes `timeout`.
    /// Returns their ids.
    async fn time_out_workers(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<ObjectId>>;

    /// Delete up to `limit` finished tasks (`completed`, `failed`, `canceled`) whose latest
    /// of `last_worker_ping` and `last_updated` is at or before `cutoff` (or which have
    /// neither). Never a queued or active task, and never a parent of a task that is not
    /// finished. Returns how many were deleted, and for how long.
    async fn delete_finished_tasks(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Batch>;

    /// Delete up to `limit` tasks whatever their status (clean slate), and the jobs
    /// (standalone mode) left without tasks by it, in the same operation. Returns how many
    /// tasks, and for how long.
    async fn delete_tasks(&self, limit: usize) -> StoreResult<Batch>;

    /// Delete up to `limit` updates from the outbox, oldest first. Returns how many, and for
    /// how long.
    async fn purge_outbox(&self, limit: usize) -> StoreResult<Batch>;
}
