//! The data model: tasks, commands, workers, task updates, statuses and ids, with the v2
//! field names on the wire and in the store.

mod id;
mod job;
mod status;
mod task;
mod update;
mod worker;

pub use id::{empty_as_none, InvalidObjectId, ObjectId};
pub use job::{Job, JobStatus, TaskCounts, UnknownJobStatus, DEFAULT_JOB_PRIORITY};
pub use status::{worker_status, RequestedStatus, TaskStatus, UnknownStatus};
pub use task::{Command, Task};
pub use update::TaskUpdate;
pub use worker::{software_supports_status_requests, Worker};
