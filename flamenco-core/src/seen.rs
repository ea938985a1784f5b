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

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::{worker_status, ObjectId, Worker};
use crate::store::{Seen, TaskPing};

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

/// Pending `last_activity` times, by worker.
#[derive(Debug, Default)]
pub struct SeenTracker {
    pending: Mutex<HashMap<ObjectId, Seen>>,
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
        pending.insert(id, seen);
    }

    /// Drop a worker's pending contact (it was written directly).
    pub fn forget(&self, id: ObjectId) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.remove(&id);
    }

    /// Take every pending contact, as `last_activity`-only updates (no status change: a
    /// status change is never deferred, and the worker's status may have changed since).
    pub fn take(&self) -> Vec<(ObjectId, Seen)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .drain()
            .map(|(id, mut seen)| {
                seen.mark_awake = false;
                (id, seen)
            })
            .collect()
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
