//! The worker protocol's request and answer bodies (worker-protocol.md §4), with their
//! validation. Decoding is lenient about unknown fields, as v2 was, and strict about types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{empty_as_none, ObjectId, RequestedStatus, TaskStatus, TaskUpdate};

/// Longest accepted secret or activity, in bytes.
const MAX_SHORT_TEXT: usize = 1024;
/// Longest accepted worker nickname, in bytes (docs/worker-api.md, "Size limits").
pub const MAX_NICKNAME: usize = 256;
/// Longest accepted worker platform, in bytes.
pub const MAX_PLATFORM: usize = 64;
/// Longest accepted `software`: the worker's `User-Agent` header, in bytes.
pub const MAX_SOFTWARE: usize = 256;
/// Longest accepted task type, in bytes.
pub const MAX_TASK_TYPE: usize = 64;
/// Most task types a worker may declare.
pub const MAX_TASK_TYPES: usize = 64;

/// A request body that decoded but does not make sense: 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn check_short(field: &str, value: &str) -> Result<(), Invalid> {
    check_len(field, value, MAX_SHORT_TEXT)
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() > max {
        return Err(Invalid(format!(
            "{field} is {} bytes long; at most {max} are accepted",
            value.len()
        )));
    }
    Ok(())
}

/// The worker's `software` (its `User-Agent` header, stored at registration and sign-on)
/// must fit [`MAX_SOFTWARE`].
pub fn check_software(user_agent: &str) -> Result<(), Invalid> {
    check_len("software (the User-Agent header)", user_agent, MAX_SOFTWARE)
}

/// `user_agent` cut to at most [`MAX_SOFTWARE`] bytes (at a character boundary), for the
/// requests that record it without refusing a longer one.
pub fn bounded_software(user_agent: &str) -> &str {
    if user_agent.len() <= MAX_SOFTWARE {
        return user_agent;
    }
    let mut end = MAX_SOFTWARE;
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    &user_agent[..end]
}

fn check_task_types(types: &[String]) -> Result<(), Invalid> {
    if types.len() > MAX_TASK_TYPES {
        return Err(Invalid(format!(
            "supported_task_types has {} entries; at most {MAX_TASK_TYPES} are accepted",
            types.len()
        )));
    }
    for t in types {
        check_len("a supported task type", t, MAX_TASK_TYPE)?;
    }
    Ok(())
}

/// Decode a worker request body the way the HTTP handlers do: JSON, unknown fields
/// ignored, types strict. An empty body decodes as `{}` when `empty_is_object` is set
/// (sign-on without a body). The error is v2's 400 text, `Unable to decode JSON: …`.
pub fn decode_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    empty_is_object: bool,
) -> Result<T, Invalid> {
    let bytes: &[u8] = if body.is_empty() && empty_is_object {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(bytes).map_err(|e| Invalid(format!("Unable to decode JSON: {e}")))
}

/// `POST /register-worker` body.
#[derive(Clone, Debug, Deserialize)]
pub struct RegisterWorker {
    pub secret: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub supported_task_types: Vec<String>,
    #[serde(default)]
    pub nickname: String,
}

impl RegisterWorker {
    /// Unlike v2, an empty secret is refused: it would let anyone act as this worker.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.secret.is_empty() {
            return Err(Invalid("secret must not be empty".into()));
        }
        check_short("secret", &self.secret)?;
        check_len("platform", &self.platform, MAX_PLATFORM)?;
        check_len("nickname", &self.nickname, MAX_NICKNAME)?;
        check_task_types(&self.supported_task_types)
    }
}

/// `POST /sign-on` body; both fields optional.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SignOnRequest {
    #[serde(default)]
    pub supported_task_types: Option<Vec<String>>,
    #[serde(default)]
    pub nickname: Option<String>,
}

impl SignOnRequest {
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(n) = &self.nickname {
            check_len("nickname", n, MAX_NICKNAME)?;
        }
        if let Some(types) = &self.supported_task_types {
            check_task_types(types)?;
        }
        Ok(())
    }
}

/// `POST /tasks/{id}/update` body. Every field is optional. `_id`, `task_id`, `worker`
/// and `received_on_manager` are accepted (they must still decode) and overwritten.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WorkerTaskUpdate {
    #[serde(default)]
    pub task_status: Option<String>,
    #[serde(default)]
    pub activity: Option<String>,
    #[serde(default)]
    pub log: Option<String>,
    #[serde(default)]
    pub task_progress_percentage: Option<i64>,
    #[serde(default)]
    pub current_command_idx: Option<i64>,
    #[serde(default)]
    pub command_progress_percentage: Option<i64>,
    #[serde(rename = "_id", default, with = "empty_as_none")]
    pub id: Option<ObjectId>,
    #[serde(default, with = "empty_as_none")]
    pub task_id: Option<ObjectId>,
    #[serde(default)]
    pub worker: Option<String>,
    #[serde(default)]
    pub received_on_manager: Option<DateTime<Utc>>,
    /// 2.3+ timing metrics; accepted and not forwarded.
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
}

impl WorkerTaskUpdate {
    /// Validate and turn into an outbox entry for `task_id`, from worker `ident`.
    pub fn into_update(
        self,
        task_id: ObjectId,
        ident: &str,
        now: DateTime<Utc>,
    ) -> Result<TaskUpdate, Invalid> {
        let task_status = match self.task_status.as_deref() {
            None | Some("") => None,
            Some(s) => Some(TaskStatus::parse_known(s).map_err(|e| Invalid(e.to_string()))?),
        };
        for (field, value) in [
            ("task_progress_percentage", self.task_progress_percentage),
            (
                "command_progress_percentage",
                self.command_progress_percentage,
            ),
        ] {
            if let Some(v) = value {
                if !(0..=100).contains(&v) {
                    return Err(Invalid(format!(
                        "{field} must be between 0 and 100, not {v}"
                    )));
                }
            }
        }
        if let Some(v) = self.current_command_idx {
            if v < 0 {
                return Err(Invalid(format!(
                    "current_command_idx must not be negative, not {v}"
                )));
            }
        }
        let activity = self.activity.unwrap_or_default();
        check_short("activity", &activity)?;
        let mut u = TaskUpdate::new(task_id, now);
        u.task_status = task_status;
        u.activity = activity;
        u.log = self.log.unwrap_or_default();
        u.task_progress_percentage = self.task_progress_percentage.unwrap_or(0);
        u.current_command_idx = self.current_command_idx.unwrap_or(0);
        u.command_progress_percentage = self.command_progress_percentage.unwrap_or(0);
        u.worker = ident.to_string();
        Ok(u)
    }
}

/// Most paths one `/output-produced` report may list; more is a 400 naming the limit. The
/// real workers send one path per report.
pub const MAX_OUTPUT_PATHS: usize = 1000;

/// Longest path in a `/output-produced` report, in bytes (a longer one is a 422).
pub const MAX_OUTPUT_PATH_LEN: usize = 4096;

/// Largest `/output-produced` body, in bytes (413 beyond; `max_request_body` if lower).
/// A real worker's report of one path is a few hundred bytes.
pub const MAX_OUTPUT_PRODUCED_BODY: usize = 1024 * 1024;

/// `POST /output-produced` body. Decoding stops at the [`MAX_OUTPUT_PATHS`]+1st path, so a
/// body listing millions of paths costs no more memory than its bytes.
#[derive(Clone, Debug, Deserialize)]
pub struct OutputProduced {
    #[serde(deserialize_with = "at_most_max_output_paths")]
    pub paths: Vec<String>,
}

fn at_most_max_output_paths<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Paths;
    impl<'de> serde::de::Visitor<'de> for Paths {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_OUTPUT_PATHS} paths")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut paths = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
            while let Some(path) = seq.next_element::<String>()? {
                if paths.len() == MAX_OUTPUT_PATHS {
                    return Err(serde::de::Error::custom(format_args!(
                        "paths: at most {MAX_OUTPUT_PATHS} paths per report are accepted; \
                         send the newest ones, or several reports"
                    )));
                }
                paths.push(path);
            }
            Ok(paths)
        }
    }
    deserializer.deserialize_seq(Paths)
}

impl OutputProduced {
    /// An empty list is refused (v2: 422), and so is a path over [`MAX_OUTPUT_PATH_LEN`].
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.paths.is_empty() {
            return Err(Invalid("paths must not be empty".into()));
        }
        for p in &self.paths {
            if p.len() > MAX_OUTPUT_PATH_LEN {
                return Err(Invalid(format!(
                    "a path is longer than {MAX_OUTPUT_PATH_LEN} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// The `GET /may-i-run/{id}` answer. Exactly these keys: a 2.0.x worker's poller dies on
/// any other key, so `status_requested` is only ever set for 2.1+ workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayIRunAnswer {
    pub may_keep_running: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status_requested: Option<RequestedStatus>,
}

/// The body of a 423 on `/task` and of a 200 on `/status-change`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequested {
    pub status_requested: RequestedStatus,
}

/// The states a worker acknowledges with `POST /ack-status-change/{status}`.
pub const ACKNOWLEDGEABLE_STATUSES: [&str; 5] = ["asleep", "awake", "error", "testing", "shutdown"];

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<TaskUpdate, String> {
        let u: WorkerTaskUpdate = serde_json::from_str(json).map_err(|e| e.to_string())?;
        u.into_update(ObjectId::new(), "w", Utc::now())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_real_worker_bodies() {
        let u = decode(
            r#"{"activity": "starting sleep", "current_command_idx": 1,
            "task_progress_percentage": 0, "command_progress_percentage": 0,
            "metrics": {"timing": {"total": 1.2e-05}}, "task_status": "active",
            "log": "line"}"#,
        )
        .unwrap();
        assert_eq!(u.task_status, Some(TaskStatus::Active));
        assert_eq!(u.current_command_idx, 1);
        assert_eq!(u.worker, "w");
        let u = decode(r#"{"log": "only a log"}"#).unwrap();
        assert_eq!(u.task_status, None);
        assert_eq!(u.log, "only a log");
    }

    #[test]
    fn refuses_bad_values() {
        assert!(decode(r#"{"task_status": "cancelled"}"#)
            .unwrap_err()
            .contains("cancelled"));
        assert!(decode(r#"{"current_command_idx": 1.5}"#).is_err());
        assert!(decode(r#"{"task_progress_percentage": 101}"#).is_err());
        assert!(decode(r#"{"_id": "nope"}"#).is_err());
        assert!(decode(r#"{"received_on_manager": "yesterday"}"#).is_err());
        assert!(decode(r#"{"task_status": 3}"#).is_err());
    }

    #[test]
    fn decode_body_like_the_handlers() {
        let s: SignOnRequest = decode_body(b"", true).unwrap();
        assert!(s.nickname.is_none());
        let e = decode_body::<SignOnRequest>(b"", false).unwrap_err();
        assert!(e.0.starts_with("Unable to decode JSON: "), "{e}");
        let e = decode_body::<OutputProduced>(br#"{"paths": "/x"}"#, false).unwrap_err();
        assert!(e.0.contains("invalid type"), "{e}");
        let many = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("\"/r/{i}.png\"")).collect();
            format!("{{\"paths\": [{}]}}", list.join(","))
        };
        let o: OutputProduced = decode_body(many(MAX_OUTPUT_PATHS).as_bytes(), false).unwrap();
        assert_eq!(o.paths.len(), MAX_OUTPUT_PATHS);
        let e = decode_body::<OutputProduced>(many(MAX_OUTPUT_PATHS + 1).as_bytes(), false)
            .unwrap_err();
        assert!(e.0.contains("at most 1000 paths"), "{e}");
        assert_eq!(
            bounded_software("Flamenco-Worker/2.5"),
            "Flamenco-Worker/2.5"
        );
        let long = format!("a{}", "é".repeat(MAX_SOFTWARE));
        assert_eq!(bounded_software(&long).len(), MAX_SOFTWARE - 1);
        assert!(check_software(&"x".repeat(MAX_SOFTWARE + 1)).is_err());
        let r: RegisterWorker = decode_body(br#"{"secret": "s", "extra": 1}"#, false).unwrap();
        assert_eq!(r.secret, "s");
    }

    #[test]
    fn may_i_run_answer_has_only_set_keys() {
        let a = MayIRunAnswer {
            may_keep_running: true,
            reason: None,
            status_requested: None,
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"may_keep_running":true}"#
        );
    }
}
