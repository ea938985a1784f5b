//! Retries of failed tasks in standalone mode (issue 16, item 1): pure rules, meant to be
//! called by every store backend inside the operation that applies a worker's `failed`, so
//! that all backends decide the same way.
//!
//! A task that fails on a worker is kept runnable as `soft-failed` (the 2019 Server status,
//! spec/server-protocol.md §6) and handed to another worker, until it has failed on
//! `task_fail_after_softfail_count` distinct workers; only then it is `failed` for good
//! and its job follows ([`super::status::job_status_after_task_change`]). Each failure is
//! recorded ([`TaskFailure`]): which worker and when. A worker in the record is not given
//! the task again ([`excluded_workers`]). Re-queueing the task or its job clears the record
//! ([`cleared_on_requeue`]).
//!
//! Upstream mode keeps v2's behaviour (a `failed` from a worker is `failed`): the Flamenco
//! Server 2.0.4 does not know `soft-failed` (server-protocol.md §4.1), so it is never
//! reported there ([`status_after_failure`] with `standalone == false`).
//!
//! Status: the rules and the setting exist; the stores do not call them yet, so a task
//! that fails still fails at once (docs/jobs.md, "Retries").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ObjectId, TaskStatus};

/// The default of `task_fail_after_softfail_count`: a task fails for good once it failed
/// on this many distinct workers (Flamenco 2.4's default).
pub const DEFAULT_TASK_FAIL_AFTER_SOFTFAIL_COUNT: u32 = 3;

/// One failed attempt of a task: the worker that reported `failed`, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The failing worker's id.
    pub worker_id: ObjectId,
    /// Its identifier (nickname) at the time, for people; may be empty.
    pub worker: String,
    /// When the Manager received the failure.
    pub at: DateTime<Utc>,
}

/// How many distinct workers appear in `failures`.
pub fn distinct_failed_workers(failures: &[TaskFailure]) -> usize {
    excluded_workers(failures).len()
}

/// The workers that must not be given the task again: each worker in the record, once, in
/// the order of their first failure. The claim excludes them in its one query (`NOT IN` /
/// `$nin` on the task's failed worker ids).
pub fn excluded_workers(failures: &[TaskFailure]) -> Vec<ObjectId> {
    let mut ids: Vec<ObjectId> = Vec::with_capacity(failures.len());
    for f in failures {
        if !ids.contains(&f.worker_id) {
            ids.push(f.worker_id);
        }
    }
    ids
}

/// The record after `failure` is added: every attempt is kept (a worker appears once per
/// attempt it failed; normally once, as it is not given the task again).
pub fn record_failure(failures: &[TaskFailure], failure: TaskFailure) -> Vec<TaskFailure> {
    let mut out = failures.to_vec();
    out.push(failure);
    out
}

/// The task's local status after a worker reported `failed`, with `failures` the record
/// *including* this failure and `fail_after` the configured
/// `task_fail_after_softfail_count` (at least 1; 0 is treated as 1). In upstream mode
/// (`standalone == false`) it is always `failed`, as in v2.
pub fn status_after_failure(
    failures: &[TaskFailure],
    fail_after: u32,
    standalone: bool,
) -> TaskStatus {
    if !standalone {
        return TaskStatus::Failed;
    }
    let limit = usize::try_from(fail_after.max(1)).unwrap_or(usize::MAX);
    if distinct_failed_workers(failures) >= limit {
        TaskStatus::Failed
    } else {
        TaskStatus::SoftFailed
    }
}

/// The activity shown on a task that just soft-failed or failed for good, e.g.
/// "Failed on worker render-03 (2 of 3 workers); re-queued for another worker."
pub fn failure_activity(failures: &[TaskFailure], fail_after: u32, status: &TaskStatus) -> String {
    let who = failures
        .last()
        .map(|f| {
            if f.worker.is_empty() {
                f.worker_id.to_string()
            } else {
                f.worker.clone()
            }
        })
        .unwrap_or_else(|| "an unknown worker".to_string());
    let n = distinct_failed_workers(failures);
    let limit = fail_after.max(1);
    match status {
        TaskStatus::SoftFailed => format!(
            "Failed on worker {who} ({n} of {limit} workers); re-queued for another worker."
        ),
        _ => format!("Failed on worker {who} ({n} of {limit} workers); failed for good."),
    }
}

/// The failure record after the task (or its job) is re-queued by a user: empty, so every
/// worker may run it again and it gets `task_fail_after_softfail_count` fresh attempts.
pub fn cleared_on_requeue(_failures: &[TaskFailure]) -> Vec<TaskFailure> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn id(n: u8) -> ObjectId {
        let mut b = [0u8; 12];
        b[11] = n;
        ObjectId::from_bytes(b)
    }

    fn fail(worker: u8, secs: i64) -> TaskFailure {
        TaskFailure {
            worker_id: id(worker),
            worker: format!("w{worker}"),
            at: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
        }
    }

    #[test]
    fn soft_fails_until_the_limit_of_distinct_workers() {
        let one = record_failure(&[], fail(1, 0));
        assert_eq!(status_after_failure(&one, 3, true), TaskStatus::SoftFailed);
        let two = record_failure(&one, fail(2, 1));
        assert_eq!(status_after_failure(&two, 3, true), TaskStatus::SoftFailed);
        let three = record_failure(&two, fail(3, 2));
        assert_eq!(status_after_failure(&three, 3, true), TaskStatus::Failed);
        assert_eq!(three.len(), 3);
        assert_eq!(three[1].worker_id, id(2));
    }

    #[test]
    fn the_same_worker_twice_counts_once() {
        let twice = record_failure(&record_failure(&[], fail(1, 0)), fail(1, 5));
        assert_eq!(distinct_failed_workers(&twice), 1);
        assert_eq!(excluded_workers(&twice), vec![id(1)]);
        assert_eq!(
            status_after_failure(&twice, 2, true),
            TaskStatus::SoftFailed
        );
        // Both attempts stay in the record, with their times.
        assert_eq!(twice.len(), 2);
    }

    #[test]
    fn a_limit_of_one_fails_at_once_and_zero_is_treated_as_one() {
        let one = record_failure(&[], fail(1, 0));
        assert_eq!(status_after_failure(&one, 1, true), TaskStatus::Failed);
        assert_eq!(status_after_failure(&one, 0, true), TaskStatus::Failed);
    }

    #[test]
    fn upstream_mode_fails_at_once_as_v2() {
        let one = record_failure(&[], fail(1, 0));
        assert_eq!(status_after_failure(&one, 3, false), TaskStatus::Failed);
    }

    #[test]
    fn requeue_clears_the_record() {
        let two = record_failure(&record_failure(&[], fail(1, 0)), fail(2, 1));
        let cleared = cleared_on_requeue(&two);
        assert!(cleared.is_empty());
        assert!(excluded_workers(&cleared).is_empty());
    }

    #[test]
    fn activity_names_the_worker_and_the_count() {
        let one = record_failure(&[], fail(1, 0));
        assert_eq!(
            failure_activity(&one, 3, &TaskStatus::SoftFailed),
            "Failed on worker w1 (1 of 3 workers); re-queued for another worker."
        );
        let mut anon = fail(2, 0);
        anon.worker.clear();
        let two = record_failure(&one, anon);
        let text = failure_activity(&two, 2, &TaskStatus::Failed);
        assert!(text.contains(&id(2).to_string()), "{text}");
        assert!(
            text.ends_with("(2 of 2 workers); failed for good."),
            "{text}"
        );
    }

    #[test]
    fn the_record_round_trips_as_json() {
        let rec = record_failure(&[], fail(7, 3));
        let json = serde_json::to_string(&rec).expect("serialises");
        let back: Vec<TaskFailure> = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, rec);
    }
}
