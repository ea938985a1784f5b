//! The `Store` trait: everything the Manager keeps (tasks, workers, the task-update outbox,
//! settings), with one backend per database.
//!
//! Operations are at the level of the protocol ("apply this worker's update", "claim a task
//! for this worker"), so that each backend can make them atomic in its own way: SQLite with
//! one transaction on its writer thread, MongoDB with compare-and-set updates. The decisions
//! inside them (may this worker update this task, which status applies) come from
//! [`crate::updates`], shared by all backends. Backends never read the clock: every
//! operation that writes a time takes `now`.

pub mod bulk;
pub mod claims;
#[doc(hidden)]
pub mod conformance;
pub mod coordination;
pub mod instrumented;
pub mod logs;
pub mod mongo;
pub mod retries;
pub mod shared_state;
pub mod sqlite;
pub mod tags;
pub mod webhooks;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::jobs::status::{JobAction, TaskAction};
use crate::model::{
    Job, JobStatus, ObjectId, RequestedStatus, Task, TaskStatus, TaskUpdate, Worker,
};
use crate::updates::{MayIRun, Refetched, ReturnOutcome, WorkerUpdateOutcome};

pub use bulk::{BulkStore, ForgetOutcome};
pub use claims::{ClaimOutcome, ClaimStore};
pub use coordination::{CoordinationStore, Lease, LEADER_LEASE};
pub use logs::{TaskLogEntry, TaskLogLimits, TaskLogPage, TaskLogQuery, TaskLogStore};
pub use retries::RetryStore;
pub use shared_state::{ImagePut, NewSharedImage, SharedImage, SharedStateStore};
pub use tags::{TagOutcome, TagStore};
pub use webhooks::{NewWebhookDelivery, WebhookDelivery, WebhookQueueStats, WebhookStore};

/// The settings key holding the Server's last `X-Flamenco-Last-Updated` (v2's
/// `depsgraph_last_modified`): the download watermark.
pub const WATERMARK_SETTING: &str = "depsgraph_last_modified";

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is not writable right now; try again later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A record with this id already exists.
    #[error("duplicate id {0}")]
    Duplicate(ObjectId),
    /// The stored data or the schema is not what this program expects.
    #[error("store data error: {0}")]
    Corrupt(String),
    /// Anything else the database reported.
    #[error("store error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a worker asking for a task brings to the claim.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub worker_id: ObjectId,
    /// Written to the task's `worker` field.
    pub nickname: String,
    /// `"<address> (<nickname>)"`, for the assignment log line.
    pub ident: String,
    pub task_types: Vec<String>,
    /// The worker's tags ([`crate::tags`]): it gets tasks that require none of them or
    /// one of these.
    pub worker_tags: Vec<String>,
    pub now: DateTime<Utc>,
}

/// A claimed task and how it was found.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The task as stored after the claim (`active`, assigned to the worker).
    pub task: Task,
    /// True when the worker already had this task `active` and gets it again.
    pub already_assigned: bool,
}

/// Filters for listing tasks, with an order (oldest first unless told otherwise).
#[derive(Clone, Debug, Default)]
pub struct TaskQuery {
    pub statuses: Vec<TaskStatus>,
    pub task_type: Option<String>,
    pub job: Option<ObjectId>,
    pub worker_id: Option<ObjectId>,
    pub order: TaskOrder,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// The order of a task listing. Every order ends with the id, so pages are stable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskOrder {
    /// Oldest first (id ascending).
    #[default]
    Id,
    /// The scheduler's order: `job_priority` desc, `priority` desc, id asc.
    Schedule,
    /// Most recently updated first (`last_updated` desc, tasks never updated last).
    RecentlyUpdated,
}

/// A may-i-run "yes" recorded in memory and written later ([`Store::record_pings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskPing {
    pub task_id: ObjectId,
    pub worker_id: ObjectId,
    pub at: DateTime<Utc>,
}

/// What "seeing" a worker records (v2 §8.4).
#[derive(Clone, Debug)]
pub struct Seen {
    pub now: DateTime<Utc>,
    /// The remote host, without the port.
    pub address: String,
    /// The request's User-Agent; not written when empty.
    pub software: String,
    /// Set the status to `awake` (true for `/task`, updates, may-i-run and sign-on).
    pub mark_awake: bool,
}

/// What storing a download did ([`Store::merge_downloaded_tasks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Tasks that were not in the store.
    pub inserted: u64,
    /// Existing tasks that took the job source's version.
    pub updated: u64,
    /// Of those, tasks a worker runs that kept their assignment and status.
    pub kept_running: u64,
}

/// What applying the job source's cancel list did ([`Store::apply_upstream_cancels`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CancelReport {
    /// Running tasks now `cancel-requested` (their workers learn it through may-i-run).
    pub cancel_requested: Vec<ObjectId>,
    /// Tasks for which a final update (`canceled`, or how they finished) was queued.
    pub queued: Vec<ObjectId>,
    /// Tasks with a final update already waiting in the outbox.
    pub already_pending: u64,
}

/// An outbox update the job source never acknowledged, set aside so it does not block the
/// updates behind it ([`Store::outbox_note_unacknowledged`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SetAsideUpdate {
    pub update: TaskUpdate,
    /// How many pushes carried it without an acknowledgement.
    pub attempts: u32,
    pub set_aside_at: DateTime<Utc>,
}

/// A worker's sign-on (v2 §4.6): empty values are not applied.
#[derive(Clone, Debug, Default)]
pub struct SignOn {
    pub nickname: Option<String>,
    pub supported_task_types: Option<Vec<String>>,
}

/// Filters for listing jobs ([`Store::list_jobs`]); newest first (by `_created`).
#[derive(Clone, Debug, Default)]
pub struct JobQuery {
    /// Only jobs with one of these statuses (all when empty).
    pub statuses: Vec<JobStatus>,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// What a job action did ([`Store::job_action`]).
#[derive(Clone, Debug, PartialEq)]
pub enum JobActionOutcome {
    /// Done. `job` is the job as it is now (for a delete: as it was); `tasks` is how many
    /// tasks the cascade changed (for a delete: how many were deleted).
    Done {
        job: Job,
        tasks: u64,
    },
    NotFound,
    /// The job's status does not allow the action; the text says why.
    Refused(String),
}

/// What a task action did ([`Store::task_action`]).
#[derive(Clone, Debug, PartialEq)]
pub enum TaskActionOutcome {
    /// Done; the task as it is now (without its bulky fields), and whether it changed
    /// (canceling a task that is being canceled changes nothing).
    Done {
        task: Box<Task>,
        changed: bool,
    },
    NotFound,
    /// The task's (or its job's) status does not allow the action; the text says why.
    Refused(String),
}

/// A job status the standalone consumer changed ([`Store::apply_updates_to_jobs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStatusChange {
    pub job: ObjectId,
    pub from: JobStatus,
    pub to: JobStatus,
}

/// The Manager's persistent state. Each concern that has its own trait (task logs:
/// [`TaskLogStore`], in `logs.rs`) is a supertrait, implemented by each backend in a file of
/// its own.
#[async_trait]
pub trait Store:
    TaskLogStore
    + WebhookStore
    + CoordinationStore
    + BulkStore
    + TagStore
    + RetryStore
    + SharedStateStore
    + ClaimStore
    + Send
    + Sync
    + 'static
{
    /// A short name for logs and the dashboard, e.g. `sqlite:/srv/flamenco-data`.
    fn describe(&self) -> String;

    // ---- tasks ----

    /// Insert new tasks. Fails with `Duplicate` (and inserts none) if an id exists.
    async fn insert_tasks(&self, tasks: &[Task]) -> StoreResult<()>;
    /// Insert tasks, or replace existing ones wholly (every field, the local ones included).
    async fn upsert_tasks(&self, tasks: &[Task]) -> StoreResult<()>;
    async fn get_task(&self, id: ObjectId) -> StoreResult<Option<Task>>;
    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<Vec<Task>>;
    /// Number of tasks per status string (statuses with no task may be absent).
    async fn count_tasks_by_status(&self) -> StoreResult<BTreeMap<String, u64>>;
    /// Number of tasks per (status, task type), in one grouped query (the metrics scrape
    /// calls it; it must not list tasks). Combinations with no task may be absent.
    async fn count_tasks_by_status_and_type(&self) -> StoreResult<BTreeMap<(String, String), u64>>;

    /// Hand a task to a worker, atomically (compare-and-set on the status):
    /// 1. an `active` task already assigned to this worker is returned again;
    /// 2. otherwise the best schedulable task (`queued`/`claimed-by-manager`, task type in
    ///    `task_types`, every parent `completed` or missing) by `job_priority` desc,
    ///    `priority` desc, id asc becomes `active` with `worker`=nickname, `worker_id`,
    ///    `last_worker_ping`=`last_updated`=now and the assignment activity.
    ///
    /// In both cases the outbox gets [`crate::updates::assignment_status_update`] and
    /// [`crate::updates::assignment_log_update`] in the same transaction, and the worker's
    /// `current_task` is set. `None` when nothing is schedulable for this worker.
    async fn claim_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>>;

    /// Undo an assignment that could not be delivered (v2 §6.4 step 6): if the task is still
    /// `active` for this worker it becomes `claimed-by-manager` through `update`.
    async fn unassign_task(&self, worker_id: ObjectId, update: TaskUpdate) -> StoreResult<()>;

    /// A worker's task update (v2 §4.4 steps 5–9), atomically: check with
    /// [`crate::updates::check_worker_update`]; if accepted, ping the task
    /// (`last_worker_ping`, `worker_id`), apply the status per
    /// [`crate::updates::local_status_after`] and a non-empty activity, set `last_updated`,
    /// insert `update` into the outbox, and set the worker's `current_task_updated` (and
    /// `current_task_status` when the update has a status).
    async fn apply_worker_update(
        &self,
        worker_id: ObjectId,
        update: TaskUpdate,
    ) -> StoreResult<WorkerUpdateOutcome>;

    /// may-i-run (v2 §4.5): decide with [`MayIRun::decide`]; on `Yes` ping the task and the
    /// worker's `current_task_updated`.
    async fn may_i_run(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<MayIRun>;

    /// A task's state without its commands and log (enough for [`MayIRun::decide`]):
    /// the fast, read-only path of may-i-run.
    async fn get_task_state(&self, id: ObjectId) -> StoreResult<Option<Task>> {
        self.get_task(id).await
    }

    /// Write may-i-run pings that were answered from [`Store::get_task_state`] and kept in
    /// memory: the task's `last_worker_ping` (never moved back) and the worker's
    /// `current_task_updated`, each only while the task is still runnable and assigned to
    /// that worker (a ping never claims a task). Pings of tasks that changed meanwhile are
    /// dropped.
    async fn record_pings(&self, pings: &[TaskPing]) -> StoreResult<()>;

    /// `POST /tasks/{id}/return`: decide with [`crate::updates::decide_return`] and apply it
    /// with [`crate::updates::return_update`] (a requeued task loses its `worker_id`).
    async fn return_task(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        ident: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ReturnOutcome>;

    /// Sign-off (v2 §4.7): every `active` task of this worker becomes `claimed-by-manager`
    /// through [`crate::updates::sign_off_requeue_update`]; then the worker's status becomes
    /// `down` and a pending `shutdown` request is cleared. Returns the re-queued task ids.
    async fn sign_off_worker(
        &self,
        worker_id: ObjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>>;

    /// Queue a Manager-made update (v2 §7.2): insert it into the outbox and apply its status
    /// (per [`crate::updates::local_status_after`]) and activity to the task.
    async fn queue_update(&self, update: TaskUpdate) -> StoreResult<()>;

    // ---- outbox ----

    /// Number of updates waiting in the outbox (set-aside updates not included).
    async fn outbox_len(&self) -> StoreResult<u64>;
    /// The oldest `limit` waiting updates, in arrival order (set-aside updates skipped).
    async fn outbox_peek(&self, limit: usize) -> StoreResult<Vec<TaskUpdate>>;
    /// Remove acknowledged updates (waiting or set aside); returns how many were removed.
    async fn outbox_ack(&self, ids: &[ObjectId]) -> StoreResult<u64>;

    // ---- workers ----

    /// Store a newly registered worker.
    async fn insert_worker(&self, worker: &Worker) -> StoreResult<()>;
    async fn get_worker(&self, id: ObjectId) -> StoreResult<Option<Worker>>;
    /// All workers, ordered by id.
    async fn list_workers(&self) -> StoreResult<Vec<Worker>>;
    /// Store the fast hash of a worker's secret (`secret_sha256`, see `auth::digest`) when
    /// its bcrypt `hashed_secret` is still the given one (compare-and-set: a worker whose
    /// hash changed meanwhile is left alone). False when nothing was written.
    async fn set_worker_secret_sha256(
        &self,
        id: ObjectId,
        hashed_secret: &str,
        secret_sha256: &str,
    ) -> StoreResult<bool>;
    /// Record contact from a worker. Returns false when the worker does not exist.
    async fn worker_seen(&self, id: ObjectId, seen: &Seen) -> StoreResult<bool>;
    /// Sign-on: nickname/types as given (when non-empty), `current_task` removed, plus
    /// "seen". Returns false when the worker does not exist.
    async fn worker_sign_on(
        &self,
        id: ObjectId,
        sign_on: &SignOn,
        seen: &Seen,
    ) -> StoreResult<bool>;
    /// Ask a worker for a status change, or withdraw the request with `None`.
    /// Returns false when the worker does not exist.
    async fn set_worker_status_requested(
        &self,
        id: ObjectId,
        requested: Option<RequestedStatus>,
    ) -> StoreResult<bool>;
    /// The worker acknowledged entering `status`: store it as the worker's status and clear
    /// a matching request. Returns false when the worker does not exist.
    async fn ack_worker_status(
        &self,
        id: ObjectId,
        status: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // ---- maintenance ----

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
    /// finished. Returns how many were deleted.
    async fn delete_finished_tasks(&self, cutoff: DateTime<Utc>, limit: usize) -> StoreResult<u64>;

    /// Delete up to `limit` tasks whatever their status (clean slate), and the jobs
    /// (standalone mode) left without tasks by it, in the same operation. Returns how many
    /// tasks.
    async fn delete_tasks(&self, limit: usize) -> StoreResult<u64>;

    /// Delete up to `limit` updates from the outbox, oldest first. Returns how many.
    async fn purge_outbox(&self, limit: usize) -> StoreResult<u64>;

    // ---- the job source (upstream mode) ----

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
    /// [`Store::claim_task`] does and make it `active` for the worker (`worker_id`,
    /// `last_worker_ping`=`last_updated`=now), so no other worker can get it, but queue
    /// nothing and leave `worker`, `activity` and the worker's `current_task` alone. The
    /// caller re-validates the task with the job source (no lock held) and then calls
    /// [`Store::confirm_claim`] or [`Store::release_claim`].
    async fn reserve_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>>;

    /// Complete a reservation: if `task_id` is still `active` for `req.worker_id`, do the
    /// rest of [`Store::claim_task`] (the two assignment updates, `worker`=nickname, the
    /// ping, the worker's `current_task`) and return the task as stored. `None` when the
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

    /// A push was answered but these (pending) updates were not acknowledged: count one
    /// attempt for each, and set aside those that reached `set_aside_after` attempts. Set
    /// aside updates are kept, but no longer counted by [`Store::outbox_len`] nor returned by
    /// [`Store::outbox_peek`]. Returns the ids set aside by this call.
    async fn outbox_note_unacknowledged(
        &self,
        ids: &[ObjectId],
        set_aside_after: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>>;

    /// The oldest `limit` set-aside updates, in arrival order.
    async fn outbox_set_aside(&self, limit: usize) -> StoreResult<Vec<SetAsideUpdate>>;

    /// Number of set-aside updates.
    async fn outbox_set_aside_len(&self) -> StoreResult<u64>;

    /// Put every set-aside update back in the outbox (after the pending ones, attempts reset
    /// to zero). Returns how many.
    async fn outbox_retry_set_aside(&self) -> StoreResult<u64>;

    // ---- jobs (standalone mode) ----

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
    /// [`Store::job_action`]. Jobs whose status or counts changed are saved with
    /// `_updated` = `now`. Idempotent: applying the same updates again changes nothing.
    /// The updates stay in the outbox (the caller acknowledges them).
    async fn apply_updates_to_jobs(
        &self,
        updates: &[TaskUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<JobStatusChange>>;

    // ---- settings ----

    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Set (or with `None`, clear) a setting.
    async fn set_setting(&self, key: &str, value: Option<&str>) -> StoreResult<()>;

    /// Flush and close; further calls fail with `Unavailable`.
    async fn close(&self) -> StoreResult<()>;
}
