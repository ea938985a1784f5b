//! A task: what one worker runs, as a list of commands, plus the Manager's bookkeeping.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::id::{empty_as_none, ObjectId};
use super::status::TaskStatus;

/// One command of a task, e.g. `{"name": "echo", "settings": {"message": "hi"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub name: String,
    #[serde(default)]
    pub settings: Map<String, Value>,
}

impl Command {
    /// A command from a name and a JSON object of settings (anything else gives no settings).
    pub fn new(name: impl Into<String>, settings: Value) -> Command {
        let settings = match settings {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Command {
            name: name.into(),
            settings,
        }
    }
}

/// A task as stored and as sent to workers (v2 field names).
///
/// The JSON form is v2's task document. The local-only fields (`worker_id`,
/// `last_worker_ping`, `last_updated`) are never written to JSON and ignored when read.
/// Unlike v2, `parents` is always present in the JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    #[serde(rename = "_etag", default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    #[serde(default, with = "empty_as_none")]
    pub job: Option<ObjectId>,
    #[serde(default, with = "empty_as_none")]
    pub manager: Option<ObjectId>,
    #[serde(default, with = "empty_as_none")]
    pub project: Option<ObjectId>,
    #[serde(default, with = "empty_as_none")]
    pub user: Option<ObjectId>,
    #[serde(default)]
    pub name: String,
    pub status: TaskStatus,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub job_priority: i32,
    #[serde(default)]
    pub job_type: String,
    #[serde(default)]
    pub task_type: String,
    #[serde(default)]
    pub commands: Vec<Command>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub activity: String,
    #[serde(default)]
    pub parents: Vec<ObjectId>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker: String,

    /// Local only: the worker last assigned to, or pinging, this task.
    #[serde(skip)]
    pub worker_id: Option<ObjectId>,
    /// Local only: last scheduling, update or may-i-run ping by a worker.
    #[serde(skip)]
    pub last_worker_ping: Option<DateTime<Utc>>,
    /// Local only: last download or local update.
    #[serde(skip)]
    pub last_updated: Option<DateTime<Utc>>,
    /// Local only: the tag a worker must have to get this task (its job's `worker_tag`),
    /// `None` for any worker. Tasks from a Flamenco Server never have one.
    #[serde(skip)]
    pub worker_tag: Option<String>,
}

impl Task {
    /// A new `queued` task with a fresh id and no job.
    pub fn new(
        name: impl Into<String>,
        task_type: impl Into<String>,
        commands: Vec<Command>,
    ) -> Task {
        Task {
            id: ObjectId::new(),
            etag: String::new(),
            job: None,
            manager: None,
            project: None,
            user: None,
            name: name.into(),
            status: TaskStatus::Queued,
            priority: 50,
            job_priority: 50,
            job_type: String::new(),
            task_type: task_type.into(),
            commands,
            log: String::new(),
            activity: String::new(),
            parents: Vec::new(),
            worker: String::new(),
            worker_id: None,
            last_worker_ping: None,
            last_updated: None,
            worker_tag: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_v2_shape_and_hides_local_fields() {
        let mut t = Task::new(
            "t",
            "sleep",
            vec![Command::new("echo", serde_json::json!({"message": "hi"}))],
        );
        t.worker_id = Some(ObjectId::new());
        t.last_updated = Some(Utc::now());
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["job"], "");
        assert_eq!(v["status"], "queued");
        assert_eq!(v["parents"], serde_json::json!([]));
        assert!(v.get("worker_id").is_none());
        assert!(v.get("last_updated").is_none());
        assert!(v.get("log").is_none());
        assert_eq!(v["commands"][0]["settings"]["message"], "hi");
        let back: Task = serde_json::from_value(v).unwrap();
        assert_eq!(back.id, t.id);
        assert_eq!(back.worker_id, None);
    }
}
