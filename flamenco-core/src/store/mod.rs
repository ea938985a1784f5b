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
pub mod jobs;
pub mod logs;
pub mod maintenance;
pub mod mongo;
pub mod outbox;
pub mod protocol;
pub mod retries;
pub mod settings;
pub mod shared_state;
pub mod sqlite;
pub mod tags;
pub mod tasks;
pub mod upstream;
pub mod webhooks;
pub mod workers;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::{Job, JobStatus, ObjectId, Task, TaskStatus, TaskUpdate};

/// Every store trait, for code that calls store methods on a concrete store type
/// (`SqliteStore`, `MongoStore`): `use flamenco_core::store::prelude::*;`. Calls on
/// `dyn Store` need no import.
pub mod prelude {
    pub use super::{
        BulkStore, ClaimStore, CoordinationStore, JobStore, MaintenanceStore, OutboxStore,
        RetryStore, SettingsStore, SharedStateStore, Store, TagStore, TaskLogStore, TaskStore,
        UpstreamStore, WebhookStore, WorkerProtocolStore, WorkerStore,
    };
}

pub use bulk::{BulkStore, ForgetOutcome};
pub use claims::{ClaimOutcome, ClaimStore};
pub use coordination::{CoordinationStore, Lease, LEADER_LEASE};
pub use instrumented::InstrumentedStore;
pub use jobs::JobStore;
pub use logs::{TaskLogEntry, TaskLogLimits, TaskLogPage, TaskLogQuery, TaskLogStore};
pub use maintenance::{Batch, MaintenanceStore};
pub use outbox::OutboxStore;
pub use protocol::WorkerProtocolStore;
pub use retries::RetryStore;
pub use settings::SettingsStore;
pub use shared_state::{ImagePut, NewSharedImage, SharedImage, SharedStateStore};
pub use tags::{TagOutcome, TagStore};
pub use tasks::TaskStore;
pub use upstream::UpstreamStore;
pub use webhooks::{NewWebhookDelivery, WebhookDelivery, WebhookQueueStats, WebhookStore};
pub use workers::WorkerStore;

/// The settings key holding the Server's last `X-Flamenco-Last-Updated` (v2's
/// `depsgraph_last_modified`): the download watermark.
pub const WATERMARK_SETTING: &str = "depsgraph_last_modified";

/// A store failure.
#[derive(Clone, Debug, thiserror::Error)]
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

/// A may-i-run "yes" recorded in memory and written later ([`WorkerProtocolStore::record_pings`]).
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
    /// The worker's latest accepted task update, written with the deferred "seen"
    /// ([`crate::seen`]): `current_task_updated` (never moved back) and
    /// `current_task_status` when the update reported one. `None` for immediate writes.
    pub task_report: Option<TaskReport>,
    /// The task the worker was last handed by a claim, written as its `current_task`
    /// with the deferred "seen" ([`crate::seen`]; v2 §6.4 step 3, which v2 wrote on a
    /// best-effort basis too). `None` leaves `current_task` as it is.
    pub current_task: Option<ObjectId>,
}

/// What an accepted worker update shows on the worker (`current_task_updated`,
/// `current_task_status`), kept in memory and written with the next "seen" flush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskReport {
    /// When the Manager received the update.
    pub at: DateTime<Utc>,
    /// The status the worker reported (as stored: none for last words); `None` keeps
    /// the stored one.
    pub status: Option<String>,
}

/// What storing a download did ([`UpstreamStore::merge_downloaded_tasks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Tasks that were not in the store.
    pub inserted: u64,
    /// Existing tasks that took the job source's version.
    pub updated: u64,
    /// Of those, tasks a worker runs that kept their assignment and status.
    pub kept_running: u64,
}

/// What applying the job source's cancel list did ([`UpstreamStore::apply_upstream_cancels`]).
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
/// updates behind it ([`OutboxStore::outbox_note_unacknowledged`]).
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

/// Filters for listing jobs ([`JobStore::list_jobs`]); newest first (by `_created`).
#[derive(Clone, Debug, Default)]
pub struct JobQuery {
    /// Only jobs with one of these statuses (all when empty).
    pub statuses: Vec<JobStatus>,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// What a job action did ([`JobStore::job_action`]).
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

/// What a task action did ([`JobStore::task_action`]).
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

/// A job status the standalone consumer changed ([`JobStore::apply_updates_to_jobs`]).
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
    TaskStore
    + WorkerProtocolStore
    + OutboxStore
    + WorkerStore
    + MaintenanceStore
    + UpstreamStore
    + JobStore
    + SettingsStore
    + TaskLogStore
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

    /// True for a store whose writes in this process go through one writer, behind which
    /// requests queue, and whose write lock other processes wait for (the embedded
    /// store): long maintenance runs size and pause their batches for it
    /// ([`crate::maintenance::pacing`]). A server-side store (MongoDB) answers false.
    fn single_writer(&self) -> bool {
        false
    }

    /// Flush and close; further calls fail with `Unavailable`.
    async fn close(&self) -> StoreResult<()>;
}
