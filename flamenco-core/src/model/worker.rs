//! A registered worker, with the fields v2 stored in `flamenco_workers`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::id::ObjectId;
use super::status::RequestedStatus;

/// A worker as stored. The JSON form (registration answer, SDK output) never contains the
/// secret hash.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Worker {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Slow hash of the secret (bcrypt, `$2a$`/`$2b$`), as v2 stored it.
    #[serde(skip)]
    pub hashed_secret: String,
    /// Fast hash of the whole secret (salted HMAC-SHA256, see `auth::digest`), written next
    /// to `hashed_secret` for secrets of 32 bytes or more; empty when there is none (short
    /// secrets, workers registered by v2 that have not logged in here yet).
    #[serde(skip)]
    pub secret_sha256: String,
    pub nickname: String,
    pub address: String,
    /// `""` just registered, `awake`, `down`, `timeout`, `asleep`, … (see `worker_status`).
    pub status: String,
    pub platform: String,
    pub time_cost: i64,
    pub supported_task_types: Vec<String>,
    pub software: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_task: Option<ObjectId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub current_task_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_task_updated: Option<DateTime<Utc>>,
    /// A status change asked of the worker and not yet acknowledged (2.1+ workers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_requested: Option<RequestedStatus>,
    /// Tags an admin gave this worker (`gpu`, `win`, …; see [`crate::tags`]): a job that
    /// requires a tag only goes to workers that have it. Workers cannot set their own;
    /// sign-on, sign-off and the worker's other requests keep them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Worker {
    /// `"<address> (<nickname>)"`, or just the address without a nickname: how v2 names a
    /// worker in logs, activities and the `worker` field of updates.
    pub fn identifier(&self) -> String {
        if self.nickname.is_empty() {
            self.address.clone()
        } else {
            format!("{} ({})", self.address, self.nickname)
        }
    }

    /// Does this worker understand status-change requests (423, `status_requested`)?
    /// Only Flamenco Worker 2.1 and newer do; 2.0.x crashes its may-i-run poller on the key.
    pub fn supports_status_requests(&self) -> bool {
        software_supports_status_requests(&self.software)
    }

    /// Why this worker cannot be asked to change status, or `None` when it can. The one
    /// rule behind the API, the dashboard and the CLI (`Manager::request_worker_status`):
    /// only Flamenco Worker 2.1 and newer obey a request, so for any other software
    /// nothing is recorded, whatever the request.
    pub fn status_request_refusal(&self, requested: RequestedStatus) -> Option<String> {
        if self.supports_status_requests() {
            return None;
        }
        let software = if self.software.is_empty() {
            "unknown software (it has not contacted this Manager yet)".to_string()
        } else {
            self.software.clone()
        };
        Some(format!(
            "worker {} runs {software}, which does not understand status requests, so it \
             cannot be asked to go {requested}; only Flamenco Worker 2.1 and newer can be \
             asked to sleep, wake or shut down (stop a 2.0 worker on its machine instead)",
            self.identifier()
        ))
    }
}

/// `Flamenco-Worker/2.0.*` (and anything that is not a Flamenco Worker version string)
/// does not understand status-change requests; `Flamenco-Worker/2.1` and newer do.
pub fn software_supports_status_requests(software: &str) -> bool {
    let Some(version) = software.strip_prefix("Flamenco-Worker/") else {
        return false;
    };
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_request_support_by_version() {
        assert!(!software_supports_status_requests("Flamenco-Worker/2.0.6"));
        assert!(!software_supports_status_requests("Flamenco-Worker/2.0"));
        assert!(software_supports_status_requests("Flamenco-Worker/2.1.0"));
        assert!(software_supports_status_requests("Flamenco-Worker/2.5"));
        assert!(software_supports_status_requests("Flamenco-Worker/3.0"));
        assert!(!software_supports_status_requests("python-requests/2.22"));
        assert!(!software_supports_status_requests(""));
    }
}
