//! The database fails under a busy farm (issue 17 item 5): three `flamenco serve` processes
//! on one private SecantusDB (its data on disk) behind HAProxy, simulated workers busy
//! through the balancer. The database hangs (SIGSTOP) for 15 s, is then killed (SIGKILL)
//! and stays away another 15 s, and comes back on the same port with the same data. The
//! test shows:
//!
//! * workers get 503 while it is away, from the Managers or from the balancer once every
//!   Manager's `/healthz` says `store-unavailable`, and never a 500 (every answer is
//!   counted);
//! * the lease is never held by two Managers at once: every Manager's `/healthz` is asked
//!   round after round throughout, and the lease document's terms each have one holder;
//!   after the outage exactly one Manager leads again;
//! * nothing acknowledged is lost: every update answered 2xx is in the store exactly once
//!   afterwards, and every acknowledged `completed` is the task's status.
//!
//! The Managers run in upstream mode pointed at a closed port, so the outbox keeps every
//! update (nothing drains it). Needs `FLAMENCO_TEST_SECANTUSD` (scripts/test.sh sets it)
//! and `haproxy`; without them the test skips with a notice, except under `CI=true`.

mod support;

#[path = "balancer/mod.rs"]
mod balancer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use balancer::{Balancer, Daemon, DbServer, LeaderWatch, Record, WAIT};
use flamenco_core::config::Config;
use flamenco_core::model::{Command as TaskCommand, ObjectId, Task, TaskStatus, TaskUpdate};
use flamenco_core::store::mongo::testing::{required_env, SERVER_VAR};
use flamenco_core::store::mongo::MongoStore;
use flamenco_core::store::{CoordinationStore, LEADER_LEASE};
use flamenco_core::Manager;
use serde_json::json;

const TASKS: usize = 60;
const WORKERS: usize = 4;
/// The database hangs this long, then is killed and stays away as long again.
const HUNG: Duration = Duration::from_secs(15);
const GONE: Duration = Duration::from_secs(15);

fn rec_lock(rec: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
    rec.lock().unwrap_or_else(|e| e.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_database_outage_under_load_gives_503s_one_leader_and_loses_nothing() {
    let test = "a_30_s_database_outage_under_load_gives_503s_one_leader_and_loses_nothing";
    let Some(haproxy) = balancer::haproxy_or_skip(test) else {
        return;
    };
    let Some(program) = required_env(SERVER_VAR, test) else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut db = DbServer::start(&program, dir.path());
    let url = db.url("flamenco_farm_outage");
    let server_port = support::free_port();

    // Seed the queue through the SDK.
    let seeder = Manager::open(Config {
        database_url: url.clone(),
        ..Config::default()
    })
    .await
    .expect("open to seed");
    let tasks: Vec<Task> = (0..TASKS)
        .map(|i| {
            Task::new(
                format!("outage-{i}"),
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
        managers.push(Daemon::start(dir.path(), name, &url, &extra).await);
    }
    let ports: Vec<u16> = managers.iter().map(|m| m.port).collect();
    let lb = Balancer::start(&haproxy, dir.path(), &ports).await;
    let http = reqwest::Client::new();
    let first_leader = balancer::one_leader(&http, &managers).await;
    let watch = LeaderWatch::start(
        managers.iter().map(|m| (m.name.clone(), m.port)).collect(),
        MongoStore::connect(&url)
            .await
            .expect("connect the lease reader"),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|n| {
            tokio::spawn(balancer::worker(
                lb.url(),
                n,
                Duration::from_millis(200),
                stop.clone(),
                rec.clone(),
            ))
        })
        .collect();
    let acks = || rec_lock(&rec).acked.len();
    let start = Instant::now();
    while acks() < TASKS / 3 {
        assert!(start.elapsed() < WAIT, "too few updates acknowledged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The outage. Its length is the thing under test: fixed on purpose.
    let acked_before = acks();
    let answers_before = rec_lock(&rec).answers.clone();
    let outage = Instant::now();
    db.signal("STOP");
    tokio::time::sleep(HUNG).await;
    db.kill();
    tokio::time::sleep(GONE).await;
    let acked_during = acks() - acked_before;
    let count_503_during = rec_lock(&rec).count(503)
        - answers_before
            .iter()
            .filter(|((_, s), _)| *s == 503)
            .map(|(_, n)| n)
            .sum::<u64>();
    db.restart();
    let back = Instant::now();

    // The workers finish the queue.
    let completed = || {
        rec_lock(&rec)
            .acked
            .iter()
            .filter(|a| a.status == TaskStatus::Completed)
            .map(|a| a.task)
            .collect::<HashSet<_>>()
            .len()
    };
    let mut first_ack_after: Option<Duration> = None;
    let acked_at_return = acks();
    while completed() < TASKS {
        if first_ack_after.is_none() && acks() > acked_at_return {
            first_ack_after = Some(back.elapsed());
        }
        assert!(
            back.elapsed() < WAIT,
            "only {} of {TASKS} tasks completed {:?} after the database came back",
            completed(),
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_ack_after = first_ack_after.unwrap_or_else(|| back.elapsed());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a simulated worker panicked");
    }
    // One leader again, the holder of the lease.
    let leader_after = balancer::one_leader(&http, &managers).await;
    let lease = MongoStore::connect(&url)
        .await
        .expect("connect")
        .lease_current(LEADER_LEASE)
        .await
        .expect("read the lease")
        .expect("a lease");
    assert_eq!(
        flamenco_core::leader::holder_instance(&lease.holder),
        managers[leader_after].name,
        "{lease:?}"
    );
    let watch_started = watch.started;
    let log = watch.stop().await;
    // From the watcher's log: when the leader stopped leading after the outage began, and
    // when one led again after the database came back.
    let (outage_at, back_at) = (outage - watch_started, back - watch_started);
    let lost_after = log
        .changes
        .iter()
        .find(|(at, who)| *at >= outage_at && who.is_empty())
        .map(|(at, _)| *at - outage_at);
    let leader_back = log
        .changes
        .iter()
        .find(|(at, who)| *at >= back_at && !who.is_empty())
        .map(|(at, _)| *at - back_at);
    let rec = std::mem::take(&mut *rec_lock(&rec));
    eprintln!(
        "farm outage: {TASKS} tasks, {WORKERS} workers, 3 Managers; database hung {HUNG:?} then \
         gone {GONE:?} (outage {:?}); {acked_during} updates acknowledged during it; first \
         acknowledged update {first_ack_after:?} after it came back; the leader stepped down \
         {lost_after:?} into the outage, one led again {leader_back:?} after it; leaders \
         before/after: {} / {} (lease term {})",
        back - outage,
        managers[first_leader].name,
        managers[leader_after].name,
        lease.term,
    );
    eprintln!(
        "farm outage: answers to workers {:?}; slowest answer by status {:?}; {} retries; 503s \
         during the outage: {count_503_during}; /healthz answers {:?} in {} rounds; leader \
         changes {:?}; lease terms {:?}; total {:?}",
        rec.answers,
        rec.slowest,
        rec.retries,
        log.health,
        log.rounds,
        log.changes,
        log.terms,
        began.elapsed()
    );

    // 503s, never a 500 (nor any other 5xx: no Manager died, so no 502 either).
    let bad = rec.server_errors(false);
    assert!(bad.is_empty(), "5xx other than 503: {bad:?}");
    assert_eq!(
        rec.count(0),
        0,
        "requests left unanswered for 20 s: {:?}",
        rec.answers
    );
    assert!(
        count_503_during > 0,
        "no 503 while the database was away: {:?}",
        rec.answers
    );
    assert!(
        lost_after.is_some_and(|d| d < HUNG),
        "the leader did not step down while the database hung: {:?}",
        log.changes
    );
    assert!(
        leader_back.is_some(),
        "nobody led after the outage: {:?}",
        log.changes
    );
    assert!(
        log.health.get(&503).copied().unwrap_or(0) > 0,
        "no /healthz said store-unavailable during the outage: {:?}",
        log.health
    );

    // Never two leaders; one holder per term; terms only grow.
    assert!(
        log.overlaps.is_empty(),
        "two Managers led at once: {:?}",
        log.overlaps
    );
    let mut holders: HashMap<i64, HashSet<&str>> = HashMap::new();
    for (term, holder) in &log.terms {
        holders.entry(*term).or_default().insert(holder);
    }
    assert!(
        holders.values().all(|h| h.len() == 1),
        "a term with two holders: {:?}",
        log.terms
    );
    assert!(
        log.terms.windows(2).all(|w| w[0].0 <= w[1].0),
        "terms went back: {:?}",
        log.terms
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
    // (The seeder's connection survived the outage: it reconnects by itself.)
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
    drop(lb);
    seeder.close().await.ok();
    eprintln!("farm outage: test took {:?}", began.elapsed());
}
