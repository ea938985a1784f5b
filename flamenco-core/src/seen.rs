//! Coalescing "seen" writes (v2 §8.4).
//!
//! Every worker request marks the worker as seen. Writing `last_activity` on every request
//! would double the store's writes on the hottest endpoints (may-i-run, updates), so a
//! request only writes at once when something visible changes (the worker becomes `awake`,
//! or its address or User-Agent changed); otherwise the time is kept here and written in
//! one batch by [`crate::Manager::flush_seen`] (about every second in the daemon, before
//! every timeout check, and at close). `last_activity` is therefore at most a flush
//! interval stale, far below any timeout.
//!
//! may-i-run pings are coalesced the same way ([`PingTracker`]): a worker asking about the
//! task it already holds, while the task is runnable, gets its "yes" from a read, and the
//! ping (`last_worker_ping`, `current_task_updated`) is written with the next flush. Only
//! the latest ping per task is kept. Every other may-i-run (a task without a worker, a
//! reassigned or stopped task) goes to the store at once.
//!
//! What an accepted task update shows on the worker (`current_task_updated`,
//! `current_task_status`, for the dashboard and the API) is kept the same way, as a
//! [`TaskReport`] merged into the worker's pending contact ([`SeenTracker::report`]), so
//! an update costs no write of the worker's record: it shows within a flush interval
//! (about a second). The task's own state (`last_worker_ping`, status, activity) and the
//! outbox are written by the update itself, as before.
//!
//! The task a claim hands the worker is its `current_task` (v2 §6.4 step 3, which v2
//! wrote on a best-effort basis, errors ignored), kept the same way
//! ([`SeenTracker::assign`]): a claim costs no write of the worker's record either. A
//! sign-on removes `current_task` and drops a pending one ([`SeenTracker::signed_on`]),
//! and a task that could not be delivered is not written ([`SeenTracker::unassign`]).
//!
//! The flush is one store call ([`crate::store::WorkerProtocolStore::write_deferred`]):
//! one transaction on SQLite; on MongoDB one bulk `update` of the workers and, when there
//! are pings, one of the tasks (docs/performance.md, "MongoDB commands per worker
//! request").

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::model::{worker_status, ObjectId, Worker};
use crate::store::{Seen, TaskPing, TaskReport};

/// Pending may-i-run pings, by task (the latest wins).
#[derive(Debug, Default)]
pub struct PingTracker {
    pending: Mutex<HashMap<ObjectId, TaskPing>>,
}

impl PingTracker {
    /// Remember a ping.
    pub fn record(&self, ping: TaskPing) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(ping.task_id, ping);
    }

    /// Take every pending ping, oldest task id first (a stable write order).
    pub fn take(&self) -> Vec<TaskPing> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut pings: Vec<TaskPing> = pending.drain().map(|(_, p)| p).collect();
        pings.sort_by_key(|p| p.task_id);
        pings
    }
}

/// What a worker's next flush writes: its latest contact, its latest task report and
/// the task it was last handed (with when).
#[derive(Debug, Default)]
struct PendingWorker {
    seen: Option<Seen>,
    report: Option<TaskReport>,
    assigned: Option<(DateTime<Utc>, ObjectId)>,
}

impl PendingWorker {
    fn is_empty(&self) -> bool {
        self.seen.is_none() && self.report.is_none() && self.assigned.is_none()
    }
}

/// Pending `last_activity` times and task reports, by worker.
#[derive(Debug, Default)]
pub struct SeenTracker {
    pending: Mutex<HashMap<ObjectId, PendingWorker>>,
}

/// Two reports of one worker as one: the later time, and the later report's status, or
/// the earlier one's when the later reported none (an update without status keeps the
/// worker's reported status).
pub fn merge_reports(earlier: Option<TaskReport>, later: TaskReport) -> TaskReport {
    let Some(earlier) = earlier else {
        return later;
    };
    if later.at >= earlier.at {
        TaskReport {
            at: later.at,
            status: later.status.or(earlier.status),
        }
    } else {
        TaskReport {
            at: earlier.at,
            status: earlier.status.or(later.status),
        }
    }
}

impl SeenTracker {
    /// Must this contact be written now (it changes the status, address or software)?
    /// A contact wakes only a worker whose status the Manager inferred
    /// ([`worker_status::woken_by_contact`]), never an `asleep` or `shutdown` one.
    pub fn needs_write_now(worker: &Worker, seen: &Seen) -> bool {
        (seen.mark_awake && worker_status::woken_by_contact(&worker.status))
            || (!seen.address.is_empty() && seen.address != worker.address)
            || (!seen.software.is_empty() && seen.software != worker.software)
    }

    /// Remember the latest contact of a worker.
    pub fn record(&self, id: ObjectId, seen: Seen) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(id).or_default().seen = Some(seen);
    }

    /// Remember what an accepted task update shows on the worker (merged with a report
    /// not written yet, [`merge_reports`]).
    pub fn report(&self, id: ObjectId, report: TaskReport) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(id).or_default();
        entry.report = Some(merge_reports(entry.report.take(), report));
    }

    /// Remember the task a claim handed the worker, written as its `current_task` with
    /// the next flush (the latest claim wins).
    pub fn assign(&self, id: ObjectId, task: ObjectId, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(id).or_default().assigned = Some((at, task));
    }

    /// The task could not be delivered (it went back to the queue): do not write it as
    /// the worker's `current_task`.
    pub fn unassign(&self, id: ObjectId, task: ObjectId) {
        self.update(id, |entry| {
            if entry.assigned.is_some_and(|(_, t)| t == task) {
                entry.assigned = None;
            }
        });
    }

    /// The worker signed on, which removes its `current_task` (v2 §4.6): a task handed
    /// to it before is not written afterwards.
    pub fn signed_on(&self, id: ObjectId) {
        self.update(id, |entry| entry.assigned = None);
    }

    /// Drop a worker's pending contact (it was written directly); its pending task report
    /// and assignment stay.
    pub fn forget(&self, id: ObjectId) {
        self.update(id, |entry| entry.seen = None);
    }

    /// Change a worker's pending entry, if it has one; drop it when nothing is left.
    fn update(&self, id: ObjectId, change: impl FnOnce(&mut PendingWorker)) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = pending.get_mut(&id) {
            change(entry);
            if entry.is_empty() {
                pending.remove(&id);
            }
        }
    }

    /// Take every pending contact, as `last_activity`-only updates (no status change: a
    /// status change is never deferred, and the worker's status may have changed since),
    /// each with the worker's pending task report and assignment. A report or an
    /// assignment without a pending contact (the contact was written directly) goes with
    /// a contact at its time.
    pub fn take(&self) -> Vec<(ObjectId, Seen)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken: Vec<(ObjectId, Seen)> = pending
            .drain()
            .filter_map(|(id, entry)| {
                let then = entry
                    .report
                    .as_ref()
                    .map(|r| r.at)
                    .or(entry.assigned.map(|(at, _)| at));
                let mut seen = match (entry.seen, then) {
                    (Some(seen), _) => seen,
                    (None, Some(now)) => Seen {
                        now,
                        address: String::new(),
                        software: String::new(),
                        mark_awake: false,
                        task_report: None,
                        current_task: None,
                    },
                    (None, None) => return None,
                };
                seen.mark_awake = false;
                seen.task_report = entry.report;
                seen.current_task = entry.assigned.map(|(_, task)| task);
                Some((id, seen))
            })
            .collect();
        taken.sort_by_key(|(id, _)| *id);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn ping_tracker_keeps_the_latest_ping_per_task() {
        let tracker = PingTracker::default();
        let (t1, t2, w) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        let early = Utc::now();
        let late = early + chrono::Duration::seconds(5);
        tracker.record(TaskPing {
            task_id: t1,
            worker_id: w,
            at: early,
        });
        tracker.record(TaskPing {
            task_id: t2,
            worker_id: w,
            at: early,
        });
        tracker.record(TaskPing {
            task_id: t1,
            worker_id: w,
            at: late,
        });
        let mut pings = tracker.take();
        pings.sort_by_key(|p| p.task_id);
        let mut want = vec![
            TaskPing {
                task_id: t1,
                worker_id: w,
                at: late,
            },
            TaskPing {
                task_id: t2,
                worker_id: w,
                at: early,
            },
        ];
        want.sort_by_key(|p| p.task_id);
        assert_eq!(pings, want);
        assert!(tracker.take().is_empty(), "take drains");
    }

    fn worker() -> Worker {
        Worker {
            id: ObjectId::new(),
            hashed_secret: String::new(),
            secret_sha256: String::new(),
            nickname: "w".into(),
            address: "10.0.0.1".into(),
            status: "awake".into(),
            platform: "linux".into(),
            time_cost: 0,
            supported_task_types: vec![],
            software: "Flamenco-Worker/2.5".into(),
            current_task: None,
            last_activity: None,
            current_task_status: String::new(),
            current_task_updated: None,
            status_requested: None,
            tags: Vec::new(),
        }
    }

    fn seen(address: &str, software: &str, mark_awake: bool) -> Seen {
        Seen {
            now: Utc::now(),
            address: address.into(),
            software: software.into(),
            mark_awake,
            task_report: None,
            current_task: None,
        }
    }

    #[test]
    fn only_visible_changes_are_written_at_once() {
        let mut w = worker();
        assert!(!SeenTracker::needs_write_now(
            &w,
            &seen("10.0.0.1", "Flamenco-Worker/2.5", true)
        ));
        assert!(SeenTracker::needs_write_now(
            &w,
            &seen("10.0.0.2", "Flamenco-Worker/2.5", true)
        ));
        assert!(SeenTracker::needs_write_now(
            &w,
            &seen("10.0.0.1", "Flamenco-Worker/2.6", true)
        ));
        w.status = "timeout".into();
        assert!(SeenTracker::needs_write_now(
            &w,
            &seen("10.0.0.1", "Flamenco-Worker/2.5", true)
        ));
        assert!(!SeenTracker::needs_write_now(
            &w,
            &seen("10.0.0.1", "Flamenco-Worker/2.5", false)
        ));
    }

    fn report(secs: i64, status: Option<&str>) -> TaskReport {
        TaskReport {
            at: chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("a time"),
            status: status.map(str::to_string),
        }
    }

    #[test]
    fn reports_merge_and_survive_a_direct_write() {
        let t = SeenTracker::default();
        let (id, quiet) = (ObjectId::new(), ObjectId::new());
        t.record(id, seen("a", "b", true));
        t.report(id, report(1, Some("active")));
        // A later update without status keeps the reported one.
        t.report(id, report(2, None));
        // A contact written directly drops the pending contact, not the report.
        t.forget(id);
        t.record(quiet, seen("c", "d", true));
        let taken = t.take();
        assert_eq!(taken.len(), 2);
        let (got_id, got) = taken.iter().find(|(i, _)| *i == id).expect("the reporter");
        assert_eq!(*got_id, id);
        assert_eq!(got.task_report, Some(report(2, Some("active"))));
        assert_eq!(
            got.now,
            report(2, None).at,
            "a contact at the report's time"
        );
        assert!(got.address.is_empty() && got.software.is_empty());
        assert!(!got.mark_awake);
        let (_, q) = taken
            .iter()
            .find(|(i, _)| *i == quiet)
            .expect("the quiet one");
        assert_eq!(q.task_report, None);
        assert!(t.take().is_empty());
    }

    #[test]
    fn assignments_are_written_unless_undone() {
        let t = SeenTracker::default();
        let (kept, signed_on, undelivered) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        let (t1, t2) = (ObjectId::new(), ObjectId::new());
        let at = report(7, None).at;
        // The latest claim wins; a direct contact write keeps the assignment.
        t.record(kept, seen("a", "b", true));
        t.assign(kept, t1, at);
        t.assign(kept, t2, at);
        t.forget(kept);
        // A sign-on removes current_task: the claim before it is not written.
        t.assign(signed_on, t1, at);
        t.signed_on(signed_on);
        // An undelivered task is not written; another task is not undone by it.
        t.assign(undelivered, t1, at);
        t.unassign(undelivered, t2);
        let taken = t.take();
        let (_, got) = taken.iter().find(|(i, _)| *i == kept).expect("kept");
        assert_eq!(got.current_task, Some(t2));
        assert_eq!(got.now, at, "a contact at the assignment's time");
        assert!(got.address.is_empty() && !got.mark_awake);
        assert!(taken.iter().all(|(i, _)| *i != signed_on), "{taken:?}");
        let (_, got) = taken
            .iter()
            .find(|(i, _)| *i == undelivered)
            .expect("undelivered");
        assert_eq!(got.current_task, Some(t1));
        t.assign(undelivered, t1, at);
        t.unassign(undelivered, t1);
        assert!(t.take().is_empty(), "nothing left to write");
    }

    #[test]
    fn the_later_report_wins() {
        assert_eq!(
            merge_reports(Some(report(5, Some("active"))), report(3, Some("failed"))),
            report(5, Some("active"))
        );
        assert_eq!(
            merge_reports(Some(report(5, None)), report(3, Some("failed"))),
            report(5, Some("failed")),
            "an older status fills a newer report without one"
        );
        assert_eq!(
            merge_reports(
                Some(report(1, Some("active"))),
                report(2, Some("completed"))
            ),
            report(2, Some("completed"))
        );
        assert_eq!(merge_reports(None, report(2, None)), report(2, None));
    }

    #[test]
    fn take_drains_without_status_changes() {
        let t = SeenTracker::default();
        let id = ObjectId::new();
        t.record(id, seen("a", "b", true));
        t.record(id, seen("a", "b", true));
        let taken = t.take();
        assert_eq!(taken.len(), 1);
        assert!(!taken[0].1.mark_awake);
        assert!(t.take().is_empty());
        t.record(id, seen("a", "b", true));
        t.forget(id);
        assert!(t.take().is_empty());
    }
}
