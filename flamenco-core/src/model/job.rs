//! A job (standalone mode): what a user submitted, compiled into tasks by a job type.
//!
//! Field names follow v2's `flamenco_jobs` documents (server-protocol.md §3.2): `_id`,
//! `name`, `job_type`, `priority`, `status`, `settings`, `_created`, `_updated`; the counts of
//! the job's tasks per status are kept in `task_counts` (v2's unused `tasks_status`).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::id::ObjectId;
use super::status::TaskStatus;

/// The status of a job. Serializes to the v2 strings.
///
/// `Other` keeps a status this program does not know (a database written by another
/// program may hold one); such a job is left alone by the status derivation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    Queued,
    Active,
    Completed,
    Failed,
    Canceled,
    CancelRequested,
    Other(String),
}

/// The status string is not one of the known job statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}; expected one of: queued, active, completed, failed, canceled, cancel-requested")]
pub struct UnknownJobStatus(pub String);

impl JobStatus {
    /// Every known status, in a stable order.
    pub const KNOWN: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Active,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Canceled,
        JobStatus::CancelRequested,
    ];

    /// The v2 string form.
    pub fn as_str(&self) -> &str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Active => "active",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::CancelRequested => "cancel-requested",
            JobStatus::Other(s) => s,
        }
    }

    /// Any string; unknown ones become `Other` (for reading stored data).
    pub fn from_str_lossy(s: &str) -> JobStatus {
        Self::parse_known(s).unwrap_or_else(|_| JobStatus::Other(s.to_string()))
    }

    /// Only the known statuses (for validating input).
    pub fn parse_known(s: &str) -> Result<JobStatus, UnknownJobStatus> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "active" => JobStatus::Active,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "canceled" => JobStatus::Canceled,
            "cancel-requested" => JobStatus::CancelRequested,
            other => return Err(UnknownJobStatus(other.to_string())),
        })
    }

    /// Finished: `completed`, `failed` or `canceled`.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(JobStatus::from_str_lossy(&s))
    }
}

/// How many tasks of a job have each status (statuses with no task are absent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskCounts(pub BTreeMap<String, u64>);

impl TaskCounts {
    /// Count these statuses.
    pub fn from_statuses<'a>(statuses: impl IntoIterator<Item = &'a TaskStatus>) -> TaskCounts {
        let mut counts = TaskCounts::default();
        for s in statuses {
            counts.add(s, 1);
        }
        counts
    }

    /// Tasks with this status.
    pub fn get(&self, status: &TaskStatus) -> u64 {
        self.0.get(status.as_str()).copied().unwrap_or(0)
    }

    /// Add `n` tasks with this status.
    pub fn add(&mut self, status: &TaskStatus, n: u64) {
        if n > 0 {
            *self.0.entry(status.as_str().to_string()).or_insert(0) += n;
        }
    }

    /// Every task of the job.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    #[serde(default)]
    pub name: String,
    pub job_type: String,
    /// 1–100, higher first; copied to the tasks' `job_priority`.
    #[serde(default = "default_priority")]
    pub priority: i32,
    pub status: JobStatus,
    /// Job-type specific, e.g. `frames`, `chunk_size`, `time_in_seconds` for `sleep`.
    #[serde(default)]
    pub settings: Map<String, Value>,
    #[serde(rename = "_created")]
    pub created: DateTime<Utc>,
    #[serde(rename = "_updated")]
    pub updated: DateTime<Utc>,
    /// Tasks per status, kept up to date by the job-status consumer and by job actions.
    #[serde(default)]
    pub task_counts: TaskCounts,
    /// The tag a worker must have to get this job's tasks (see [`crate::tags`]); `None`:
    /// any worker. Copied to each task's `worker_tag` at submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_tag: Option<String>,
}

/// v2's default job priority.
pub const DEFAULT_JOB_PRIORITY: i32 = 50;

fn default_priority() -> i32 {
    DEFAULT_JOB_PRIORITY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for st in JobStatus::KNOWN {
            assert_eq!(JobStatus::parse_known(st.as_str()).unwrap(), st);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(serde_json::from_str::<JobStatus>(&json).unwrap(), st);
        }
        assert_eq!(
            JobStatus::from_str_lossy("archived"),
            JobStatus::Other("archived".into())
        );
        assert!(JobStatus::parse_known("archived").is_err());
    }

    #[test]
    fn counts() {
        let c = TaskCounts::from_statuses(&[
            TaskStatus::Queued,
            TaskStatus::Queued,
            TaskStatus::Completed,
        ]);
        assert_eq!(c.get(&TaskStatus::Queued), 2);
        assert_eq!(c.get(&TaskStatus::Failed), 0);
        assert_eq!(c.total(), 3);
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"queued": 2, "completed": 1})
        );
    }

    #[test]
    fn json_shape() {
        let now = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let job = Job {
            id: ObjectId::new(),
            name: "n".into(),
            job_type: "sleep".into(),
            priority: 50,
            status: JobStatus::CancelRequested,
            settings: Map::new(),
            created: now,
            updated: now,
            task_counts: TaskCounts::default(),
            worker_tag: None,
        };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["status"], "cancel-requested");
        assert_eq!(v["_created"], "2023-11-14T22:13:20Z");
        let back: Job = serde_json::from_value(v).unwrap();
        assert_eq!(back, job);
    }
}
