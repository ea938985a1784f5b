//! The store operations behind the bulk actions that no single-object operation covered
//! (docs/jobs.md, "Bulk actions"): setting a job's priority, which must reach its tasks'
//! `job_priority` because the claim orders by it, and forgetting a worker.
//!
//! Each call acts on one object; [`crate::bulk`] loops over the selection, so a bulk action
//! is one store operation per object and never one HTTP request per object. The decision
//! whether a worker may be forgotten is [`crate::bulk::forget_refusal`], shared by both
//! backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::model::{Job, ObjectId, Worker};

/// What forgetting a worker did ([`BulkStore::forget_worker`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ForgetOutcome {
    /// The worker record is gone. `worker` is the record as it was; `requeued` are its
    /// `active` tasks, handed back to the queue (`claimed-by-manager`, as at sign-off).
    Forgotten {
        worker: Box<Worker>,
        requeued: Vec<ObjectId>,
    },
    NotFound,
    /// [`crate::bulk::forget_refusal`] said no; the text says why and what to do.
    Refused(String),
}

/// Storage side of the bulk actions.
#[async_trait]
pub trait BulkStore: Send + Sync {
    /// Give job `id` this priority: the job's `priority`, every one of its tasks'
    /// `job_priority` (the claim's first sort key), and the job's `_updated` = `now`, in
    /// one transaction (SQLite) or job first, then its tasks in one `update_many`
    /// (MongoDB). Any job status. Returns the job as stored and how many tasks were
    /// updated, or `None` for an unknown job.
    async fn set_job_priority(
        &self,
        id: ObjectId,
        priority: i32,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Job, u64)>>;

    /// Remove worker `id`'s record, if [`crate::bulk::forget_refusal`] allows it for the
    /// worker and its `active` tasks. Those tasks go back to the queue first, through
    /// [`crate::updates::sign_off_requeue_update`] in the outbox, as a sign-off does.
    /// SQLite does it all in one transaction; MongoDB hands the tasks back with its
    /// compare-and-set and then deletes the worker only if its status is still the one
    /// decided on.
    async fn forget_worker(&self, id: ObjectId, now: DateTime<Utc>) -> StoreResult<ForgetOutcome>;
}
