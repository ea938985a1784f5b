//! A long cleanup on the embedded store leaves the write lock to another process between
//! its batches (`maintenance::BATCH_PAUSE`): a `flamenco` command writing beside the
//! daemon is not refused as "locked by another process" while a million finished tasks are
//! deleted (the soak in docs/performance.md found that it was).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use flamenco_core::clock::ManualClock;
use flamenco_core::config::Config;
use flamenco_core::manager::Manager;
use flamenco_core::model::TaskStatus;
use flamenco_core::store::conformance::{nth_id, test_task};
use flamenco_core::store::prelude::*;
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::store::Store;

/// Finished tasks to delete: enough batches for several of the cleanup's pauses.
const TASKS: u32 = 150_000;

/// How long the other process waits for the lock (SQLite's busy timeout).
const OTHER_WAITS: Duration = Duration::from_secs(2);

/// What the other process saw.
#[derive(Debug, Default)]
struct Other {
    writes: u64,
    writes_during_cleanup: u64,
    failures: Vec<String>,
    longest_wait: Duration,
}

/// Another process's connection: takes the write lock and commits, again and again, until
/// `stop`; a short breath after each write so that it does not starve the daemon in turn.
fn other_process(
    path: std::path::PathBuf,
    running: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Other {
    let conn = rusqlite::Connection::open(&path).expect("the other process's connection");
    conn.busy_timeout(OTHER_WAITS).expect("busy timeout");
    let mut seen = Other::default();
    while !stop.load(Ordering::SeqCst) {
        let start = Instant::now();
        match conn.execute_batch("BEGIN IMMEDIATE; COMMIT;") {
            Ok(()) => {
                seen.writes += 1;
                if running.load(Ordering::SeqCst) {
                    seen.writes_during_cleanup += 1;
                }
            }
            Err(e) => seen
                .failures
                .push(format!("after {:?}: {e}", start.elapsed())),
        }
        seen.longest_wait = seen.longest_wait.max(start.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_writes_while_a_long_cleanup_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("open the store"));
    let path = store.path().to_path_buf();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let manager = Manager::with_store(config, store.clone() as Arc<dyn Store>, clock.clone());
    let seeded = Instant::now();
    for first in (0..TASKS).step_by(5_000) {
        let tasks: Vec<_> = (first..(first + 5_000).min(TASKS))
            .map(|n| {
                let mut t = test_task(nth_id(0x5c, n), "sleeping");
                t.status = TaskStatus::Completed;
                t.parents.clear();
                t
            })
            .collect();
        store
            .insert_tasks(&tasks)
            .await
            .expect("insert finished tasks");
    }
    println!("seeded {TASKS} finished tasks in {:?}", seeded.elapsed());
    clock.advance(chrono::Duration::days(365));

    let running = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (running, stop) = (running.clone(), stop.clone());
        std::thread::spawn(move || other_process(path, running, stop))
    };
    let started = Instant::now();
    let deleted = manager.cleanup_now().await.expect("cleanup");
    let took = started.elapsed();
    running.store(false, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let seen = other.join().expect("the other process's thread");
    println!("cleanup of {deleted} tasks took {took:?}; the other process: {seen:?}");

    assert_eq!(deleted, u64::from(TASKS));
    assert!(
        seen.failures.is_empty(),
        "the other process was refused the write lock during the cleanup: {:?}",
        seen.failures
    );
    // Batches back to back leave the lock free only for the moment between two of them,
    // which the other process's busy handler (sleeping up to 100 ms between tries) hits a
    // few times a second (5 to 9 writes a second, measured without the pauses); the
    // pauses leave it free for 150 ms of every 400 (48 to 62 writes a second, measured).
    let per_second = seen.writes_during_cleanup as f64 / took.as_secs_f64();
    assert!(
        per_second >= 20.0,
        "the other process wrote {} times while the cleanup ran ({took:?}, {per_second:.1} \
         a second): the cleanup kept the write lock",
        seen.writes_during_cleanup
    );
    store.close().await.expect("close");
}
