//! [`JobStore`]: jobs (standalone mode): submission, listing, user actions on jobs and tasks, and the consumer step.
//!
//! One concern of the [`super::Store`] trait, implemented by each backend in its file of the
//! same name (`sqlite/jobs.rs`, `mongo/jobs.rs`) and timed by [`super::InstrumentedStore`].

use super::JobActionOutcome;
use super::JobQuery;
use super::JobStatusChange;
use super::StoreResult;
use super::TaskActionOutcome;
use crate::jobs::status::JobAction;
use crate::jobs::status::TaskAction;
use crate::model::Job;
use crate::model::ObjectId;
use crate::model::Task;
use crate::model::TaskUpdate;
use async_trait::async_trait;
use chrono::DateTime;
use chrono::Utc;

/// Jobs (standalone mode): submission, listing, user actions on jobs and tasks, and the consumer step.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Store a new job and its tasks together: both or neither (`Duplicate` when the job's
    /// or a task's id exists).
    async fn insert_job(&self, job: &Job, tasks: &[Task]) -> StoreResult<()>;

    async fn get_job(&self, id: ObjectId) -> StoreResult<Option<Job>>;

    /// Jobs matching `query`, newest first: `_created` descending, then id descending
    /// (ids made in the same second by different processes do not sort by time).
    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Vec<Job>>;

    /// A user's action on a job, atomically (compare-and-set where there are no
    /// transactions): count the job's tasks and decide with
    /// [`crate::jobs::status::plan_action`]. A status change cascades to the tasks per
    /// [`crate::jobs::status::task_status_for_job_change`]: each changed task gets
    /// [`crate::jobs::status::cascade_update`] in the outbox and takes its status as given
    /// (a re-queued task also loses its `worker_id`); then the job gets
    /// [`crate::jobs::status::job_status_after_cascade`], its fresh task counts and
    /// `_updated` = `now`. A delete removes the job and its tasks.
    async fn job_action(
        &self,
        id: ObjectId,
        action: JobAction,
        now: DateTime<Utc>,
    ) -> StoreResult<JobActionOutcome>;

    /// A user's action on one task, atomically (compare-and-set where there are no
    /// transactions): decide with [`crate::jobs::status::plan_task_action`] (from the
    /// task's and its job's status); a task that changes gets
    /// [`crate::jobs::status::task_action_update`] in the outbox and takes its status as
    /// given (a re-queued task also loses its `worker_id`). A re-queue of a task whose
    /// job is finished also makes the job `queued`
    /// ([`crate::jobs::status::job_status_after_task_requeue`]), with fresh counts and
    /// `_updated` = `now`; everything else about the job follows through the consumer.
    async fn task_action(
        &self,
        id: ObjectId,
        action: TaskAction,
        now: DateTime<Utc>,
    ) -> StoreResult<TaskActionOutcome>;

    /// The standalone consumer's step: apply these outbox updates' consequences to their
    /// jobs, in order. For each update with a status whose task exists and has a job: with
    /// the job's current task counts and the task's current status, derive the job's
    /// status with [`crate::jobs::status::job_status_after_task_change`]; a derived status
    /// that [`crate::jobs::status::derived_status_cascades`] cascades as in
    /// [`JobStore::job_action`]. Jobs whose status or counts changed are saved with
    /// `_updated` = `now`. Idempotent: applying the same updates again changes nothing.
    /// The updates stay in the outbox (the caller acknowledges them).
    async fn apply_updates_to_jobs(
        &self,
        updates: &[TaskUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<JobStatusChange>>;
}
