//! Task and worker statuses, serialized as the v2 strings.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The status of a task. Serializes to the v2 strings (`claimed-by-manager`, …).
///
/// `Other` keeps a status this program does not know (a database written by another
/// Manager may hold one); such a task is never scheduled. Input from workers is validated
/// with [`TaskStatus::parse_known`], which refuses `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskStatus {
    Queued,
    ClaimedByManager,
    Active,
    Completed,
    Failed,
    Canceled,
    CancelRequested,
    SoftFailed,
    Other(String),
}

/// The status string is not one of the known task statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status {0:?}; expected one of: queued, claimed-by-manager, active, completed, failed, canceled, cancel-requested, soft-failed")]
pub struct UnknownStatus(pub String);

impl TaskStatus {
    /// Every known status, in a stable order (used for per-status counts).
    pub const KNOWN: [TaskStatus; 8] = [
        TaskStatus::Queued,
        TaskStatus::ClaimedByManager,
        TaskStatus::Active,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Canceled,
        TaskStatus::CancelRequested,
        TaskStatus::SoftFailed,
    ];

    /// The v2 string form.
    pub fn as_str(&self) -> &str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::ClaimedByManager => "claimed-by-manager",
            TaskStatus::Active => "active",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Canceled => "canceled",
            TaskStatus::CancelRequested => "cancel-requested",
            TaskStatus::SoftFailed => "soft-failed",
            TaskStatus::Other(s) => s,
        }
    }

    /// Any string; unknown ones become `Other` (for reading stored data).
    pub fn from_str_lossy(s: &str) -> TaskStatus {
        Self::parse_known(s).unwrap_or_else(|_| TaskStatus::Other(s.to_string()))
    }

    /// Only the known statuses (for validating input).
    pub fn parse_known(s: &str) -> Result<TaskStatus, UnknownStatus> {
        Ok(match s {
            "queued" => TaskStatus::Queued,
            "claimed-by-manager" => TaskStatus::ClaimedByManager,
            "active" => TaskStatus::Active,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "canceled" => TaskStatus::Canceled,
            "cancel-requested" => TaskStatus::CancelRequested,
            "soft-failed" => TaskStatus::SoftFailed,
            other => return Err(UnknownStatus(other.to_string())),
        })
    }

    /// Waiting to be handed to a worker (`queued`, `claimed-by-manager`).
    pub fn is_schedulable(&self) -> bool {
        matches!(self, TaskStatus::Queued | TaskStatus::ClaimedByManager)
    }

    /// May a worker keep running it (`queued`, `claimed-by-manager`, `active`)?
    pub fn is_runnable(&self) -> bool {
        self.is_schedulable() || *self == TaskStatus::Active
    }

    /// Done for good, unless someone re-queues it (`completed`, `failed`, `canceled`).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Canceled
        )
    }

    /// Canceled or about to be: workers' updates are refused with 409.
    pub fn is_cancel(&self) -> bool {
        matches!(self, TaskStatus::Canceled | TaskStatus::CancelRequested)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TaskStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(TaskStatus::from_str_lossy(&s))
    }
}

/// Worker statuses. Stored as plain strings (`""` just registered, `awake`, `down`,
/// `timeout`, and the 2.1+ states `asleep`, `error`, `testing`, `shutdown`).
pub mod worker_status {
    pub const REGISTERED: &str = "";
    pub const AWAKE: &str = "awake";
    pub const DOWN: &str = "down";
    pub const TIMEOUT: &str = "timeout";
    pub const ASLEEP: &str = "asleep";
    pub const SHUTDOWN: &str = "shutdown";
    /// Flamenco Manager 2.1+'s name for `down`, found in databases it wrote.
    pub const OFFLINE: &str = "offline";

    /// Statuses a worker's contact (`/task`, a task update, may-i-run) turns into
    /// `awake`: the ones the Manager inferred without the worker saying so (just
    /// registered, signed off, timed out). A status the worker declared itself by
    /// acknowledgement (`asleep`, `error`, `testing`, `shutdown`, `awake`) changes only by
    /// its next acknowledgement or sign-on: a 2.5 worker acknowledges `asleep` and then
    /// still pushes the stopped task's log, and must stay `asleep`.
    pub const WOKEN_BY_CONTACT: [&str; 4] = [REGISTERED, DOWN, TIMEOUT, OFFLINE];

    /// Whether a worker in `status` becomes `awake` when it contacts the Manager.
    pub fn woken_by_contact(status: &str) -> bool {
        WOKEN_BY_CONTACT.contains(&status)
    }
}

/// A status change the Manager can ask of a 2.1+ worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestedStatus {
    Asleep,
    Awake,
    Shutdown,
}

impl RequestedStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestedStatus::Asleep => "asleep",
            RequestedStatus::Awake => "awake",
            RequestedStatus::Shutdown => "shutdown",
        }
    }

    pub fn parse(s: &str) -> Option<RequestedStatus> {
        match s {
            "asleep" => Some(RequestedStatus::Asleep),
            "awake" => Some(RequestedStatus::Awake),
            "shutdown" => Some(RequestedStatus::Shutdown),
            _ => None,
        }
    }
}

impl fmt::Display for RequestedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_known_status() {
        for st in TaskStatus::KNOWN {
            assert_eq!(TaskStatus::parse_known(st.as_str()).unwrap(), st);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(serde_json::from_str::<TaskStatus>(&json).unwrap(), st);
        }
    }

    #[test]
    fn unknown_status_is_refused_as_input_but_kept_when_read() {
        let err = TaskStatus::parse_known("cancelled").unwrap_err();
        assert!(err.to_string().contains("\"cancelled\""));
        assert_eq!(
            TaskStatus::from_str_lossy("cancelled"),
            TaskStatus::Other("cancelled".into())
        );
        assert!(!TaskStatus::Other("x".into()).is_runnable());
    }
}
