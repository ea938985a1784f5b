//! Bulk actions (docs/jobs.md, "Bulk actions"): one request acts on many jobs or workers,
//! and answers for each object whether it was done, refused (and why) or unknown.
//!
//! This module holds what every caller shares: the actions, the selections (ids or a status
//! filter), the limits, the per-object report, and the rule for forgetting a worker
//! ([`forget_refusal`]), which both stores apply inside their operation. The loops are on
//! [`crate::Manager`] (`manager/bulk.rs`): one store operation per object, never one HTTP
//! request per object.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::manager::ApiError;
use crate::model::{worker_status, JobStatus, ObjectId, TaskStatus, TaskUpdate, Worker};
use crate::updates::iso_log_time;

/// Most objects one bulk request may name, or a filter may select, over HTTP.
pub const MAX_BULK_OBJECTS: usize = 1_000;

/// A bulk action on jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobBulkAction {
    Cancel,
    Requeue,
    Delete,
    /// Set the job's priority (1–100) and its tasks' `job_priority`.
    Priority(i32),
}

impl JobBulkAction {
    /// The action's name on the wire: `cancel`, `requeue`, `delete`, `priority`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobBulkAction::Cancel => "cancel",
            JobBulkAction::Requeue => "requeue",
            JobBulkAction::Delete => "delete",
            JobBulkAction::Priority(_) => "priority",
        }
    }

    /// The action named `name`, with `priority` for `priority` (required there, refused
    /// elsewhere). Errors name the field at fault.
    pub fn parse(name: &str, priority: Option<i64>) -> Result<JobBulkAction, ApiError> {
        let action = match name {
            "cancel" => JobBulkAction::Cancel,
            "requeue" => JobBulkAction::Requeue,
            "delete" => JobBulkAction::Delete,
            "priority" => {
                return match priority {
                    Some(p @ 1..=100) => Ok(JobBulkAction::Priority(p as i32)),
                    Some(p) => Err(invalid(
                        "priority",
                        format!("priority {p} is out of range: expected an integer from 1 to 100"),
                    )),
                    None => Err(invalid(
                        "priority",
                        "the priority action needs `priority`, an integer from 1 to 100",
                    )),
                }
            }
            other => {
                return Err(invalid(
                    "action",
                    format!(
                        "unknown job action {other:?}; known: cancel, requeue, delete, priority"
                    ),
                ))
            }
        };
        if priority.is_some() {
            return Err(invalid(
                "priority",
                format!("`priority` goes with the priority action only, not with {name}"),
            ));
        }
        Ok(action)
    }
}

/// A bulk action on workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerBulkAction {
    /// Ask 2.1+ workers to go to sleep.
    Sleep,
    /// Ask 2.1+ workers to wake up.
    Wake,
    /// Remove the worker records ([`forget_refusal`] says when not).
    Forget,
    /// Add and remove tags (`crate::tags`).
    Tag {
        add: Vec<String>,
        remove: Vec<String>,
    },
}

impl WorkerBulkAction {
    /// The action's name on the wire: `sleep`, `wake`, `forget`, `tag`.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkerBulkAction::Sleep => "sleep",
            WorkerBulkAction::Wake => "wake",
            WorkerBulkAction::Forget => "forget",
            WorkerBulkAction::Tag { .. } => "tag",
        }
    }

    /// The action named `name`; `add`/`remove` go with `tag` only (which needs one of
    /// them). The tags themselves are checked by the tagging itself.
    pub fn parse(
        name: &str,
        add: Option<Vec<String>>,
        remove: Option<Vec<String>>,
    ) -> Result<WorkerBulkAction, ApiError> {
        if name == "tag" {
            let (add, remove) = (add.unwrap_or_default(), remove.unwrap_or_default());
            if add.is_empty() && remove.is_empty() {
                return Err(invalid(
                    "add",
                    "the tag action needs tags to `add` or `remove` (lists of tag names)",
                ));
            }
            check_tags(&add, &remove)?;
            return Ok(WorkerBulkAction::Tag { add, remove });
        }
        let action = match name {
            "sleep" => WorkerBulkAction::Sleep,
            "wake" => WorkerBulkAction::Wake,
            "forget" => WorkerBulkAction::Forget,
            other => {
                return Err(invalid(
                    "action",
                    format!("unknown worker action {other:?}; known: sleep, wake, tag, forget"),
                ))
            }
        };
        if add.is_some() || remove.is_some() {
            return Err(invalid(
                if add.is_some() { "add" } else { "remove" },
                format!("`add` and `remove` go with the tag action only, not with {name}"),
            ));
        }
        Ok(action)
    }
}

/// The tags of a `tag` action, checked as [`crate::tags::TagChange`] checks them (the
/// field `add` or `remove` at fault), so that a bad tag is a 400 whatever the selection.
pub fn check_tags(add: &[String], remove: &[String]) -> Result<(), ApiError> {
    use crate::tags::TagChange;
    let field = |field: &str, e: crate::tags::TagError| invalid(field, e.to_string());
    TagChange::new(add, &[]).map_err(|e| field("add", e))?;
    let change = TagChange::new(add, remove).map_err(|e| field("remove", e))?;
    if change.add.is_empty() && change.remove.is_empty() {
        return Err(invalid(
            "add",
            "the tag action needs tags to `add` or `remove` (lists of tag names)",
        ));
    }
    Ok(())
}

/// Which jobs a bulk action is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobSelection {
    /// These jobs (duplicates are acted on once).
    Ids(Vec<ObjectId>),
    /// Every job with one of these statuses, newest first.
    Statuses(Vec<JobStatus>),
}

/// Which workers a bulk action is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerSelection {
    /// These workers (duplicates are acted on once).
    Ids(Vec<ObjectId>),
    /// Every worker with one of these statuses (see [`parse_worker_status`]).
    Statuses(Vec<String>),
    /// Every worker.
    All,
}

/// Worker statuses a filter may name; `registered` stands for the empty status of a
/// worker that has not signed on yet.
pub const WORKER_FILTER_STATUSES: [&str; 9] = [
    "registered",
    worker_status::AWAKE,
    worker_status::ASLEEP,
    worker_status::DOWN,
    worker_status::OFFLINE,
    worker_status::TIMEOUT,
    worker_status::SHUTDOWN,
    "error",
    "testing",
];

/// A worker status as a filter names it → the status as stored (`registered` → `""`).
pub fn parse_worker_status(raw: &str) -> Result<String, ApiError> {
    let s = raw.trim();
    if !WORKER_FILTER_STATUSES.contains(&s) {
        return Err(invalid(
            "status",
            format!(
                "unknown worker status {s:?}; known: {}",
                WORKER_FILTER_STATUSES.join(", ")
            ),
        ));
    }
    Ok(if s == "registered" {
        String::new()
    } else {
        s.to_string()
    })
}

/// `ids` without repeats, in their first order; more than `max` distinct ids is a 400
/// naming the limit.
pub fn distinct_ids(ids: &[ObjectId], max: Option<usize>) -> Result<Vec<ObjectId>, ApiError> {
    let mut seen = HashSet::with_capacity(ids.len());
    let out: Vec<ObjectId> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
    if out.is_empty() {
        return Err(invalid("ids", "no ids given: name at least one object"));
    }
    if let Some(max) = max {
        if out.len() > max {
            return Err(too_many("ids", out.len(), max));
        }
    }
    Ok(out)
}

pub(crate) fn too_many(field: &str, n: usize, max: usize) -> ApiError {
    invalid(
        field,
        format!(
            "{n} objects selected; one bulk request acts on at most {max}: split it \
             (e.g. by status, or {max} ids at a time)"
        ),
    )
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field: field.to_string(),
        message: message.into(),
    }
}

/// How one object fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Done (or nothing needed doing: canceling a job that is being canceled).
    Done,
    /// Its status does not allow the action; `message` says why.
    Refused,
    /// No such job or worker.
    NotFound,
    /// The store failed on it (`message`); the objects after it were not tried.
    Error,
    /// Not tried, because the store failed on an earlier object.
    Skipped,
}

/// One object's line of a [`BulkReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectOutcome {
    pub id: ObjectId,
    pub outcome: Outcome,
    /// The object's status afterwards (job status; worker status; for a delete or a
    /// forget: the status it had).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Tasks the action changed (jobs: the cascade, the deleted tasks, the tasks whose
    /// `job_priority` changed; forget: the tasks handed back to the queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u64>,
    /// Why it was refused or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ObjectOutcome {
    pub fn done(id: ObjectId, status: impl Into<String>, tasks: Option<u64>) -> ObjectOutcome {
        ObjectOutcome {
            id,
            outcome: Outcome::Done,
            status: Some(status.into()),
            tasks,
            message: None,
        }
    }

    pub fn failed(id: ObjectId, outcome: Outcome, message: impl Into<String>) -> ObjectOutcome {
        ObjectOutcome {
            id,
            outcome,
            status: None,
            tasks: None,
            message: Some(message.into()),
        }
    }
}

/// The answer to a bulk action: the counts and one line per object, in the order acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BulkReport {
    /// The action's name (`cancel`, `sleep`, …).
    pub action: String,
    pub done: usize,
    pub refused: usize,
    pub not_found: usize,
    /// Store failures plus the objects skipped after one.
    pub errors: usize,
    pub results: Vec<ObjectOutcome>,
}

impl BulkReport {
    /// The counts of these lines.
    pub fn new(action: &str, results: Vec<ObjectOutcome>) -> BulkReport {
        let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
        BulkReport {
            action: action.to_string(),
            done: count(Outcome::Done),
            refused: count(Outcome::Refused),
            not_found: count(Outcome::NotFound),
            errors: count(Outcome::Error) + count(Outcome::Skipped),
            results,
        }
    }

    /// True when every object was done.
    pub fn all_done(&self) -> bool {
        self.done == self.results.len()
    }
}

/// Worker statuses the Manager sets because the worker stopped talking to it: a worker
/// in one of them may be forgotten even with `active` tasks, which go back to the queue.
pub const FORGETTABLE_WITH_TASKS: [&str; 3] = [
    worker_status::TIMEOUT,
    worker_status::DOWN,
    worker_status::OFFLINE,
];

/// Why `worker` may not be forgotten, or `None` when it may. `running` are the ids of its
/// `active` tasks. The one rule both stores apply, inside their operation:
///
/// * a worker without an `active` task may be forgotten, whatever its status;
/// * a worker with `active` tasks only when it is `timeout`, `down` or `offline` (it no
///   longer reports on them); its tasks are handed back to the queue;
/// * any other worker with `active` tasks (`awake`, `asleep`, …) is refused: it is
///   working on them, and forgetting it would leave them running unseen.
pub fn forget_refusal(worker: &Worker, running: &[ObjectId]) -> Option<String> {
    if running.is_empty() || FORGETTABLE_WITH_TASKS.contains(&worker.status.as_str()) {
        return None;
    }
    let status = if worker.status.is_empty() {
        "registered"
    } else {
        worker.status.as_str()
    };
    let tasks: Vec<String> = running.iter().take(3).map(|t| t.to_string()).collect();
    let more = if running.len() > 3 { ", …" } else { "" };
    Some(format!(
        "worker {} is {status} and runs {} task(s) ({}{more}); forgetting it would leave \
         them running unseen: wait until they finish, ask the worker to shut down, or \
         forget it once it has timed out",
        worker.identifier(),
        running.len(),
        tasks.join(", "),
    ))
}

/// The update that hands a forgotten worker's `active` task back to the queue
/// (`claimed-by-manager`, as at sign-off), through the outbox.
pub fn forget_requeue_update(task_id: ObjectId, ident: &str, now: DateTime<Utc>) -> TaskUpdate {
    let mut u = TaskUpdate::new(task_id, now);
    u.task_status = Some(TaskStatus::ClaimedByManager);
    u.worker = "-".into();
    u.activity = format!("Re-queued task after worker {ident} was forgotten");
    u.log = format!(
        "{}: Manager re-queued task after worker {ident} was forgotten",
        iso_log_time(now)
    );
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(status: &str) -> Worker {
        let mut w = crate::store::conformance::test_worker(ObjectId::new(), "w1", &["sleep"]);
        w.status = status.to_string();
        w
    }

    #[test]
    fn forget_rule() {
        let task = [ObjectId::new()];
        for status in ["", "awake", "asleep", "timeout", "down", "offline", "error"] {
            assert_eq!(forget_refusal(&worker(status), &[]), None, "{status}");
        }
        for status in ["timeout", "down", "offline"] {
            assert_eq!(forget_refusal(&worker(status), &task), None, "{status}");
        }
        for status in ["", "awake", "asleep", "error", "testing", "shutdown"] {
            let why = forget_refusal(&worker(status), &task).expect(status);
            assert!(why.contains(&task[0].to_string()), "{why}");
            assert!(why.contains("timed out"), "{why}");
        }
    }

    #[test]
    fn job_actions_parse() {
        assert_eq!(
            JobBulkAction::parse("cancel", None).unwrap(),
            JobBulkAction::Cancel
        );
        assert_eq!(
            JobBulkAction::parse("priority", Some(80)).unwrap(),
            JobBulkAction::Priority(80)
        );
        for (name, p, field) in [
            ("priority", None, "priority"),
            ("priority", Some(0), "priority"),
            ("priority", Some(101), "priority"),
            ("cancel", Some(5), "priority"),
            ("pause", None, "action"),
        ] {
            match JobBulkAction::parse(name, p) {
                Err(ApiError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{name}"),
                other => panic!("{name} {p:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn worker_actions_and_statuses_parse() {
        assert_eq!(
            WorkerBulkAction::parse("forget", None, None).unwrap(),
            WorkerBulkAction::Forget
        );
        assert!(WorkerBulkAction::parse("tag", None, Some(vec![])).is_err());
        assert!(WorkerBulkAction::parse("sleep", Some(vec!["gpu".into()]), None).is_err());
        assert!(WorkerBulkAction::parse("shutdown", None, None).is_err());
        match WorkerBulkAction::parse("tag", Some(vec!["bad tag!".into()]), None) {
            Err(ApiError::InvalidField { field, .. }) => assert_eq!(field, "add"),
            other => panic!("{other:?}"),
        }
        match WorkerBulkAction::parse("tag", None, Some(vec!["".into()])) {
            Err(ApiError::InvalidField { field, .. }) => assert_eq!(field, "remove"),
            other => panic!("{other:?}"),
        }
        assert!(WorkerBulkAction::parse("tag", Some(vec!["gpu".into()]), None).is_ok());
        assert_eq!(parse_worker_status("registered").unwrap(), "");
        assert_eq!(parse_worker_status("timeout").unwrap(), "timeout");
        assert!(parse_worker_status("sleeping").is_err());
    }

    #[test]
    fn ids_are_distinct_and_capped() {
        let a = ObjectId::new();
        let b = ObjectId::new();
        assert_eq!(distinct_ids(&[a, b, a], Some(2)).unwrap(), vec![a, b]);
        assert!(distinct_ids(&[], None).is_err());
        assert!(distinct_ids(&[a, b], Some(1)).is_err());
    }

    #[test]
    fn report_counts() {
        let id = ObjectId::new();
        let r = BulkReport::new(
            "cancel",
            vec![
                ObjectOutcome::done(id, "canceled", Some(2)),
                ObjectOutcome::failed(id, Outcome::Refused, "no"),
                ObjectOutcome::failed(id, Outcome::NotFound, "?"),
                ObjectOutcome::failed(id, Outcome::Error, "down"),
                ObjectOutcome::failed(id, Outcome::Skipped, "not tried"),
            ],
        );
        assert_eq!((r.done, r.refused, r.not_found, r.errors), (1, 1, 1, 2));
        assert!(!r.all_done());
    }
}
