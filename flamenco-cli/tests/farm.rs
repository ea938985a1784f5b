//! One farm behind a load balancer (issue 17 item 2): three `flamenco serve` processes on
//! one MongoDB database (`FLAMENCO_TEST_MONGODB_URL`) behind a real HAProxy (Debian's
//! `haproxy`, started by the test, health-checking `/healthz`), with simulated workers
//! pointed at the balancer. While the workers claim and complete tasks, the leader is
//! killed with `kill -9`. The test shows:
//!
//! * no task is handed to two workers;
//! * every update a Manager acknowledged is in the outbox exactly once after the kill, and
//!   every acknowledged `completed` is the task's status;
//! * another Manager leads within the lease, and only one at a time;
//! * workers that lose their Manager mid-request retry through the balancer.
//!
//! The Managers run in upstream mode pointed at a closed port, so the outbox keeps every
//! update (nothing drains it). Without `haproxy` or `FLAMENCO_TEST_MONGODB_URL` the test
//! skips with a notice, except under `CI=true`, where it fails (.ci/run installs haproxy).

mod support;

#[path = "balancer/mod.rs"]
mod balancer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use balancer::{Balancer, Daemon, Record, WAIT};
use flamenco_core::config::Config;
use flamenco_core::model::{Command as TaskCommand, ObjectId, Task, TaskStatus, TaskUpdate};
use flamenco_core::store::mongo::testing::TestDatabase;
use flamenco_core::Manager;
use serde_json::json;

const LEASE: Duration = Duration::from_secs(3);
const TASKS: usize = 80;
const WORKERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_behind_haproxy_survive_kill_9_of_the_leader() {
    let test = "three_managers_behind_haproxy_survive_kill_9_of_the_leader";
    let Some(haproxy) = balancer::haproxy_or_skip(test) else {
        return;
    };
    let Some(db) = TestDatabase::new(test) else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let server_port = support::free_port();

    // Seed the queue through the SDK.
    let seed_config = Config {
        database_url: db.url.clone(),
        ..Config::default()
    };
    let seeder = Manager::open(seed_config).await.expect("open to seed");
    let tasks: Vec<Task> = (0..TASKS)
        .map(|i| {
            Task::new(
                format!("farm-{i}"),
                "sleep",
                vec![TaskCommand::new("sleep", json!({"time_in_seconds": 1}))],
            )
        })
        .collect();
    seeder.enqueue_tasks(tasks).await.expect("enqueue");

    let extra = format!(
        "flamenco: http://127.0.0.1:{server_port}/\nmanager_id: 5f0000000000000000000001\n\
         manager_secret: farm-test\nown_url: http://127.0.0.1:{{port}}/\nleader_lease: 3s\n"
    );
    let mut managers = Vec::new();
    for name in ["m1", "m2", "m3"] {
        managers.push(Daemon::start(dir.path(), name, &db.url, &extra).await);
    }
    let ports: Vec<u16> = managers.iter().map(|m| m.port).collect();
    let lb = Balancer::start(&haproxy, dir.path(), &ports).await;
    let http = reqwest::Client::new();
    let base = lb.url();

    // Who leads (one at a time).
    let leader = balancer::one_leader(&http, &managers).await;

    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|n| {
            tokio::spawn(balancer::worker(
                base.clone(),
                n,
                Duration::from_millis(30),
                stop.clone(),
                rec.clone(),
            ))
        })
        .collect();
    let acks = || rec.lock().unwrap_or_else(|e| e.into_inner()).acked.len();
    let start = Instant::now();
    while acks() < TASKS / 2 {
        assert!(start.elapsed() < WAIT, "too few updates acknowledged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // kill -9 the leader while the workers are busy.
    let killed = Instant::now();
    managers[leader].kill_9().await;
    let new_leader = loop {
        let mut leaders = Vec::new();
        for (i, m) in managers.iter().enumerate() {
            if i != leader && m.leads(&http).await == Some(true) {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
        if let [i] = leaders[..] {
            break i;
        }
        assert!(killed.elapsed() < WAIT, "nobody took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = killed.elapsed();
    assert!(
        took < LEASE + Duration::from_secs(3),
        "takeover took {took:?} (lease {LEASE:?})"
    );
    // The workers finish the queue through the two Managers left.
    let completed = || {
        rec.lock()
            .unwrap_or_else(|e| e.into_inner())
            .acked
            .iter()
            .filter(|a| a.status == TaskStatus::Completed)
            .map(|a| a.task)
            .collect::<HashSet<_>>()
            .len()
    };
    let start = Instant::now();
    while completed() < TASKS {
        assert!(
            start.elapsed() < WAIT * 2,
            "only {} of {TASKS} tasks completed after the kill",
            completed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a simulated worker panicked");
    }
    let rec = std::mem::take(&mut *rec.lock().unwrap_or_else(|e| e.into_inner()));
    eprintln!(
        "farm: {TASKS} tasks, {WORKERS} workers, 3 Managers; leader {} killed, {} took over in {took:?}; \
         {} updates acknowledged, {} requests retried through the balancer; answers {:?}",
        managers[leader].name,
        managers[new_leader].name,
        rec.acked.len(),
        rec.retries,
        rec.answers
    );

    // No task handed to two workers.
    let mut by_task: HashMap<ObjectId, HashSet<usize>> = HashMap::new();
    for (task, w) in &rec.claims {
        by_task.entry(*task).or_default().insert(*w);
    }
    let doubles: Vec<_> = by_task.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(
        doubles.is_empty(),
        "tasks handed to two workers: {doubles:?}"
    );

    // Every acknowledged update stored exactly once; every acknowledged `completed` holds.
    let store = seeder.store();
    let mut stored: Vec<TaskUpdate> = store.outbox_peek(100_000).await.expect("outbox");
    stored.extend(
        store
            .outbox_set_aside(100_000)
            .await
            .expect("set-aside updates")
            .into_iter()
            .map(|s| s.update),
    );
    let mut by_log: HashMap<&str, usize> = HashMap::new();
    for u in &stored {
        *by_log.entry(u.log.as_str()).or_default() += 1;
    }
    for a in &rec.acked {
        assert_eq!(
            by_log.get(a.log.as_str()).copied(),
            Some(1),
            "{a:?} is not stored exactly once"
        );
    }
    for a in rec
        .acked
        .iter()
        .filter(|a| a.status == TaskStatus::Completed)
    {
        let task = store.get_task(a.task).await.expect("get").expect("task");
        assert_eq!(task.status, TaskStatus::Completed, "{a:?}");
    }
    let bad = rec.server_errors(true);
    assert!(bad.is_empty(), "5xx other than the balancer's: {bad:?}");
    drop(lb);
    seeder.close().await.ok();
}
