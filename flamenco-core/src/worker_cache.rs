//! A short-lived in-memory copy of worker documents, so an authenticated request does not
//! read its worker from the store every time.
//!
//! Every worker request starts by loading the worker (to check its secret and learn its
//! task types, platform and requested status). Under load that read was a store round trip
//! per request. The cache keeps each worker for [`DEFAULT_TTL`] (one second, measured on
//! the monotonic clock):
//!
//! * changes this process makes through the [`crate::Manager`] (sign-on, sign-off,
//!   acknowledgements, status requests, a contact that changes the worker's status or
//!   address, timeouts) drop the entry at once, so the next request sees them;
//! * changes made by another process on the same store (`flamenco worker sleep` from the
//!   CLI, a second Manager on the same MongoDB) are seen within the TTL.
//!
//! Unknown worker ids are never cached, so the cache holds at most one entry per
//! registered worker that made a request in the last second.
//!
//! Entries are shared (`Arc<Worker>`): a request takes a reference, not a copy of the
//! worker's strings and lists (a dozen allocations per request, docs/performance.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::{ObjectId, Worker};

/// How long a cached worker is used before it is read from the store again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

/// Workers read recently, with the instant each was read.
#[derive(Debug)]
pub struct WorkerCache {
    ttl: Duration,
    entries: Mutex<HashMap<ObjectId, (Instant, Arc<Worker>)>>,
}

impl Default for WorkerCache {
    fn default() -> Self {
        WorkerCache::new(DEFAULT_TTL)
    }
}

impl WorkerCache {
    /// A cache whose entries live `ttl` (zero turns caching off).
    pub fn new(ttl: Duration) -> WorkerCache {
        WorkerCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, (Instant, Arc<Worker>)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker, if it was read less than the TTL ago.
    pub fn get(&self, id: ObjectId) -> Option<Arc<Worker>> {
        let entries = self.lock();
        let (read_at, worker) = entries.get(&id)?;
        (read_at.elapsed() < self.ttl).then(|| Arc::clone(worker))
    }

    /// Remember a worker just read from the store.
    pub fn insert(&self, worker: &Arc<Worker>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        // Drop stale entries now and then so workers that went away do not stay forever.
        if entries.len() >= 64 && entries.len().is_power_of_two() {
            let ttl = self.ttl;
            entries.retain(|_, (read_at, _)| read_at.elapsed() < ttl);
        }
        entries.insert(worker.id, (Instant::now(), Arc::clone(worker)));
    }

    /// Forget one worker (this process changed it).
    pub fn forget(&self, id: ObjectId) {
        self.lock().remove(&id);
    }

    /// Forget every worker (a bulk change, such as timing workers out).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many workers are cached (fresh or not).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(nickname: &str) -> Arc<Worker> {
        Arc::new(Worker {
            id: ObjectId::new(),
            hashed_secret: String::new(),
            secret_sha256: String::new(),
            nickname: nickname.to_string(),
            address: String::new(),
            status: "awake".to_string(),
            platform: "linux".to_string(),
            time_cost: 0,
            supported_task_types: vec!["sleep".to_string()],
            software: String::new(),
            current_task: None,
            last_activity: None,
            current_task_status: String::new(),
            current_task_updated: None,
            status_requested: None,
            tags: Vec::new(),
        })
    }

    #[test]
    fn fresh_entries_are_served_and_forgotten_on_request() {
        let cache = WorkerCache::new(Duration::from_secs(60));
        let w = worker("a");
        assert!(cache.get(w.id).is_none());
        cache.insert(&w);
        assert_eq!(
            cache.get(w.id).map(|c| c.nickname.clone()),
            Some("a".to_string())
        );
        cache.forget(w.id);
        assert!(cache.get(w.id).is_none());
        cache.insert(&w);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = WorkerCache::new(Duration::from_millis(20));
        let w = worker("b");
        cache.insert(&w);
        // Letting the TTL run out is the thing tested; nothing else is waited for.
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(w.id).is_none());
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = WorkerCache::new(Duration::ZERO);
        let w = worker("c");
        cache.insert(&w);
        assert!(cache.get(w.id).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn stale_entries_are_pruned_as_the_cache_grows() {
        let cache = WorkerCache::new(Duration::from_millis(10));
        for i in 0..63 {
            cache.insert(&worker(&format!("old{i}")));
        }
        // The TTL runs out (the thing tested), so that the entries are stale.
        std::thread::sleep(Duration::from_millis(20));
        cache.insert(&worker("new"));
        // 64 entries triggered a prune of the 63 stale ones on the next insert.
        cache.insert(&worker("newer"));
        assert!(
            cache.len() <= 3,
            "stale entries were not pruned: {}",
            cache.len()
        );
    }
}
