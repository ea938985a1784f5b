//! Storage of retries and per-job blocklists (standalone mode, docs/jobs.md "Retries" and
//! "Blocklist"): each task's failure record, each job's blocklist, and the maintenance
//! check that fails jobs whose tasks no worker can take any more.
//!
//! [`RetryStore`] holds what is read and edited from outside the protocol. The failure
//! record itself is written by [`super::WorkerProtocolStore::apply_worker_update`] (in the same
//! transaction as the worker's `failed`), the claim skips excluded workers in its one query,
//! and re-queueing clears records ([`super::JobStore::job_action`],
//! [`super::JobStore::task_action`]). Every decision comes from [`crate::jobs::retry`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::jobs::retry::{BlocklistEntry, RetryPolicy, Stranded, TaskFailure};
use crate::model::ObjectId;

/// At most this many entries of one job's blocklist are listed (workers × task types).
pub const MAX_BLOCKLIST_LISTED: usize = 10_000;

/// At most this many narrowed tasks are examined per maintenance pass
/// ([`RetryStore::fail_stranded_tasks`]); the next pass goes on.
pub const MAX_STRANDED_SCAN: usize = 10_000;

/// Storage of failure records and blocklists.
#[async_trait]
pub trait RetryStore: Send + Sync {
    /// The policy [`super::WorkerProtocolStore::apply_worker_update`] applies to a worker's `failed`.
    /// The default is [`RetryPolicy::default`] (v2: no retries) until the Manager sets it.
    fn set_retry_policy(&self, policy: RetryPolicy);

    /// The policy in force.
    fn retry_policy(&self) -> RetryPolicy;

    /// A task's failure record, oldest first (empty for an unknown task).
    async fn task_failures(&self, task_id: ObjectId) -> StoreResult<Vec<TaskFailure>>;

    /// A job's blocklist, by task type then worker id (at most [`MAX_BLOCKLIST_LISTED`]).
    async fn job_blocklist(&self, job: ObjectId) -> StoreResult<Vec<BlocklistEntry>>;

    /// Remove `worker_id` from the job's blocklist, for `task_type` or (`None`) for every
    /// type. Returns how many entries were removed (0: it was not blocklisted).
    async fn unblock_worker(
        &self,
        job: ObjectId,
        worker_id: ObjectId,
        task_type: Option<&str>,
    ) -> StoreResult<u64>;

    /// Why the Manager failed this job (e.g. no worker left), if it did; cleared when the
    /// job is re-queued. `None` for an unknown job too.
    async fn job_status_reason(&self, job: ObjectId) -> StoreResult<Option<String>>;

    /// The maintenance check (docs/jobs.md, "No worker left"): every schedulable task with a
    /// failure record, or of a job and type with a blocklist, that no awake worker can take
    /// ([`crate::jobs::retry::stranded_tasks`]) fails for good, and its job fails with the
    /// reason (the rest of the job is canceled as for any failed job). Returns what failed.
    /// Does nothing unless the policy is enabled.
    async fn fail_stranded_tasks(&self, now: DateTime<Utc>) -> StoreResult<Vec<Stranded>>;
}
