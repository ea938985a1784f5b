//! A task update: one entry of the outbox (`task_update_queue`), as v2 queued it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::id::ObjectId;
use super::status::TaskStatus;

/// One queued task update. Field names are v2's `task_update_queue` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdate {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub task_id: ObjectId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<TaskStatus>,
    pub received_on_manager: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub activity: String,
    #[serde(default)]
    pub task_progress_percentage: i64,
    #[serde(default)]
    pub current_command_idx: i64,
    #[serde(default)]
    pub command_progress_percentage: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log: String,
    /// Worker identifier for worker updates; `""` for Manager-made updates; `"-"` for
    /// re-queue updates.
    #[serde(default)]
    pub worker: String,
}

impl TaskUpdate {
    /// An empty update for `task_id`, received now, with a fresh id.
    pub fn new(task_id: ObjectId, received_on_manager: DateTime<Utc>) -> TaskUpdate {
        TaskUpdate {
            id: ObjectId::new(),
            task_id,
            task_status: None,
            received_on_manager,
            activity: String::new(),
            task_progress_percentage: 0,
            current_command_idx: 0,
            command_progress_percentage: 0,
            log: String::new(),
            worker: String::new(),
        }
    }
}
