//! Upstream sync in a farm behind a load balancer (issue 17 item 2): three `flamenco
//! serve` processes in upstream mode on one MongoDB database (`FLAMENCO_TEST_MONGODB_URL`)
//! behind HAProxy, against the Flamenco Server test double in this process, simulated
//! workers pointed at the balancer. The leader is killed (`kill -9`) while a push of
//! worker updates is in flight (the Server applied it but has not answered). The test
//! shows:
//!
//! * only the leader talks to the Server's download and push endpoints, and after the
//!   kill another Manager resumes pushes and downloads within the lease (a job added on
//!   the Server after the kill is downloaded and run);
//! * nothing is pushed twice that the Server would count twice: every worker update the
//!   farm acknowledged is in the Server's task log exactly once (the Server keys logs by
//!   update id), the only updates the Server received twice are those of the push that
//!   was in flight at the kill (at-least-once, the same update ids, idempotent), and every
//!   task and job ends `completed` on the Server;
//! * workers that lose their Manager mid-request retry through the balancer.
//!
//! Without `haproxy` or `FLAMENCO_TEST_MONGODB_URL` the test skips with a notice, except
//! under `CI=true`, where it fails.

mod support;

#[path = "balancer/mod.rs"]
mod balancer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use balancer::{Acked, Balancer, Daemon, Record, WAIT};
use flamenco_core::model::{ObjectId, TaskStatus};
use flamenco_core::store::mongo::testing::TestDatabase;
use flamenco_testserver::{Endpoint, Fault, NewJob, TestServer};
use serde_json::{json, Value};

const LEASE: Duration = Duration::from_secs(3);
/// Tasks of the job on the Server before the kill, and of the one added after it.
const FIRST_JOB: usize = 24;
const SECOND_JOB: usize = 8;
const WORKERS: usize = 4;

fn rec_lock(rec: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
    rec.lock().unwrap_or_else(|e| e.into_inner())
}

async fn wait_until<F: FnMut() -> bool>(what: &str, wait: Duration, mut check: F) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < wait, "not within {wait:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The update ids of pushes (`TaskUpdateBatch` requests) from index `from` on.
fn pushed_ids(server: &TestServer, from: usize) -> Vec<String> {
    server.requests_to(Endpoint::TaskUpdateBatch)[from..]
        .iter()
        .filter_map(|r| r.json())
        .filter_map(|v| v.as_array().cloned())
        .flatten()
        .filter_map(|u| u["_id"].as_str().map(str::to_string))
        .collect()
}

/// A worker driven step by step (not by [`balancer::worker`]), for a request held at a
/// chosen Manager.
#[derive(Clone)]
struct Straggler {
    base: String,
    id: String,
    secret: String,
    http: reqwest::Client,
}

impl Straggler {
    async fn register(base: &str) -> Straggler {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let secret = format!("straggler-secret-{}", ObjectId::new());
        let resp = http
            .post(format!("{base}/register-worker"))
            .json(&json!({"secret": secret, "platform": "linux",
                          "supported_task_types": ["sleep"], "nickname": "straggler"}))
            .send()
            .await
            .expect("register the straggler");
        assert!(resp.status().is_success(), "register: {}", resp.status());
        let body: Value = resp.json().await.expect("register body");
        Straggler {
            base: base.to_string(),
            id: body["_id"].as_str().expect("_id").to_string(),
            secret,
            http,
        }
    }

    /// `POST /task`, through the balancer, or to one Manager (`m1`…) when `at` says;
    /// (status, task id); status 0: no answer.
    async fn claim(&self, at: Option<&str>) -> (u16, Option<String>) {
        let mut req = self
            .http
            .post(format!("{}/task", self.base))
            .basic_auth(&self.id, Some(&self.secret))
            .header("Content-Length", "0");
        if let Some(at) = at {
            req = req.header(balancer::FORCE_SERVER, at);
        }
        let Ok(resp) = req.send().await else {
            return (0, None);
        };
        let status = resp.status().as_u16();
        if status != 200 {
            return (status, None);
        }
        let task = resp
            .json::<Value>()
            .await
            .ok()
            .and_then(|t| t["_id"].as_str().map(str::to_string));
        (status, task)
    }

    /// Send an update until it is answered 2xx.
    async fn update(&self, task: &str, status: &str, log: &str, since: Instant) {
        loop {
            let resp = self
                .http
                .post(format!("{}/tasks/{task}/update", self.base))
                .basic_auth(&self.id, Some(&self.secret))
                .json(&json!({"task_status": status, "activity": "straggler",
                              "current_command_idx": 0, "task_progress_percentage": 0,
                              "command_progress_percentage": 0, "log": log}))
                .send()
                .await;
            match resp.map(|r| r.status().as_u16()) {
                Ok(200..=299) => return,
                Ok(code @ 400..=499) => panic!("the straggler's update was refused: {code}"),
                _ => {
                    assert!(
                        since.elapsed() < WAIT,
                        "the straggler's update is not answered"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sync_resumes_on_another_manager_after_kill_9_of_the_leader_mid_push() {
    let test = "upstream_sync_resumes_on_another_manager_after_kill_9_of_the_leader_mid_push";
    let Some(haproxy) = balancer::haproxy_or_skip(test) else {
        return;
    };
    let Some(db) = TestDatabase::new(test) else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let first_job = server.add_job(&creds.id, NewJob::sleep(FIRST_JOB, 1));

    let extra = format!(
        "flamenco: {}\nmanager_id: {}\nmanager_secret: {}\nown_url: http://127.0.0.1:{{port}}/\n\
         leader_lease: 3s\ntask_update_push_max_interval: 200ms\ntask_update_push_max_count: 10\n\
         cancel_task_fetch_max_interval: 300ms\ndownload_task_sleep: 300ms\n",
        server.url(),
        creds.id,
        creds.token
    );
    let mut managers = Vec::new();
    for name in ["u1", "u2", "u3"] {
        managers.push(Daemon::start(dir.path(), name, &db.url, &extra).await);
    }
    let ports: Vec<u16> = managers.iter().map(|m| m.port).collect();
    let lb = Balancer::start(&haproxy, dir.path(), &ports).await;
    let http = reqwest::Client::new();
    let first_leader = balancer::one_leader(&http, &managers).await;
    wait_until("the leader downloaded the first job", WAIT, || {
        first_job
            .task_ids
            .iter()
            .all(|id| server.task_status(id).as_deref() == Some("claimed-by-manager"))
    })
    .await;
    let rec = Arc::new(Mutex::new(Record::default()));

    // A worker loses its Manager mid-request: its claim is held at the leader (the Server
    // double does not answer the claim's re-validation) when the leader is killed. The
    // balancer cannot answer it; the worker's next try, through the balancer, gets its
    // task from another Manager, and the worker completes it.
    let straggler = Straggler::register(&lb.url()).await;
    server.set_fault(Endpoint::Task, Fault::Hang);
    let refetches = server.requests_to(Endpoint::Task).len();
    let held = {
        let (s, target) = (straggler.clone(), format!("m{}", first_leader + 1));
        tokio::spawn(async move { s.claim(Some(&target)).await.0 })
    };
    wait_until("the claim waits on the Server at the leader", WAIT, || {
        server.requests_to(Endpoint::Task).len() > refetches
    })
    .await;
    let first_kill = Instant::now();
    managers[first_leader].kill_9().await;
    server.clear_faults();
    let lost = held.await.expect("the held claim");
    assert!(
        !(200..300).contains(&lost),
        "the claim held at the killed leader was answered {lost}"
    );
    let mut tries = 1;
    let task = loop {
        tries += 1;
        let (status, task) = straggler.claim(None).await;
        if let Some(task) = task {
            break task;
        }
        assert!(
            first_kill.elapsed() < WAIT,
            "the straggler gets no task: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The task the dead leader had reserved for it (its re-validation names it).
    let reserved = server.requests_to(Endpoint::Task)[refetches].path.clone();
    assert!(
        reserved.contains(&task),
        "the straggler got {task}, not the task reserved at the dead leader ({reserved})"
    );
    for (n, status) in ["active", "completed"].into_iter().enumerate() {
        let log = format!("straggler update {n} task {task}\n");
        straggler.update(&task, status, &log, first_kill).await;
        rec_lock(&rec).acked.push(Acked {
            task: ObjectId::parse(&task).expect("task id"),
            status: TaskStatus::parse_known(status).expect("status"),
            log,
        });
    }
    let leader = balancer::one_leader(&http, &managers).await;
    let first_takeover = first_kill.elapsed();
    eprintln!(
        "farm upstream: a claim held at the leader {} when it was killed got {lost} (0: no \
         answer); the worker's try {tries} through the balancer got the same task from another \
         Manager; {} leads after {first_takeover:?}",
        managers[first_leader].name, managers[leader].name
    );

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|n| {
            tokio::spawn(balancer::worker(
                lb.url(),
                n,
                Duration::from_millis(100),
                stop.clone(),
                rec.clone(),
            ))
        })
        .collect();
    let acks = || rec_lock(&rec).acked.len();
    wait_until(
        "a third of the first job's updates acknowledged",
        WAIT,
        || acks() >= FIRST_JOB * 2 / 3,
    )
    .await;

    // From now on the Server applies each push but answers only after 10 s: the next push
    // carrying worker updates is in flight when the leader dies.
    let pushes_before = server.requests_to(Endpoint::TaskUpdateBatch).len();
    server.set_fault(
        Endpoint::TaskUpdateBatch,
        Fault::DelayAfter(Duration::from_secs(10)),
    );
    wait_until("a push with worker updates is in flight", WAIT, || {
        !pushed_ids(&server, pushes_before).is_empty()
    })
    .await;
    let in_flight: HashSet<String> = pushed_ids(&server, pushes_before).into_iter().collect();
    let pushes_at_kill = server.requests_to(Endpoint::TaskUpdateBatch).len();
    let downloads_at_kill = server.requests_to(Endpoint::Depsgraph).len();
    let killed = Instant::now();
    managers[leader].kill_9().await;
    server.clear_faults();
    let second_job = server.add_job(&creds.id, NewJob::sleep(SECOND_JOB, 1));

    // Another Manager leads; it pushes what was in flight and downloads the new job. Each
    // is timed on its own from the kill.
    let mut took_over = None;
    let mut new_leader = None;
    let mut push_resumed = None;
    let mut download_resumed = None;
    let mut downloaded = None;
    while took_over.is_none()
        || push_resumed.is_none()
        || download_resumed.is_none()
        || downloaded.is_none()
    {
        assert!(
            killed.elapsed() < WAIT,
            "after {:?}: took over {took_over:?}, pushes {push_resumed:?}, downloads \
             {download_resumed:?}, the new job {downloaded:?}",
            killed.elapsed()
        );
        if took_over.is_none() {
            for (i, m) in managers.iter().enumerate() {
                if m.running() && m.leads(&http).await == Some(true) {
                    took_over = Some(killed.elapsed());
                    new_leader = Some(i);
                }
            }
        }
        if push_resumed.is_none() && !pushed_ids(&server, pushes_at_kill).is_empty() {
            push_resumed = Some(killed.elapsed());
        }
        if download_resumed.is_none()
            && server.requests_to(Endpoint::Depsgraph).len() > downloads_at_kill
        {
            download_resumed = Some(killed.elapsed());
        }
        // Claimed by the Manager, or further along already.
        if downloaded.is_none()
            && second_job
                .task_ids
                .iter()
                .all(|id| server.task_status(id).is_some_and(|s| s != "queued"))
        {
            downloaded = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (took_over, push_resumed, download_resumed, downloaded) = (
        took_over.unwrap_or_default(),
        push_resumed.unwrap_or_default(),
        download_resumed.unwrap_or_default(),
        downloaded.unwrap_or_default(),
    );
    let new_leader = new_leader.expect("a new leader");
    assert_eq!(
        balancer::one_leader(&http, &managers).await,
        new_leader,
        "one leader"
    );

    // Everything completes on the Server.
    let all_tasks: Vec<String> = first_job
        .task_ids
        .iter()
        .chain(&second_job.task_ids)
        .cloned()
        .collect();
    wait_until("both jobs completed on the Server", WAIT * 2, || {
        server.job_status(&first_job.id).as_deref() == Some("completed")
            && server.job_status(&second_job.id).as_deref() == Some("completed")
    })
    .await;
    let finished = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a simulated worker panicked");
    }
    let rec = std::mem::take(&mut *rec_lock(&rec));
    let received = server.received_updates();
    let mut times: HashMap<String, usize> = HashMap::new();
    for u in &received {
        if let Some(id) = u["_id"].as_str() {
            *times.entry(id.to_string()).or_default() += 1;
        }
    }
    let twice: HashSet<&String> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    eprintln!(
        "farm upstream: {} + {} tasks, {WORKERS} workers, 3 Managers, lease {LEASE:?}; leader {} \
         killed mid-push ({} updates in flight), {} took over after {took_over:?}; pushes resumed \
         after {push_resumed:?}, downloads after {download_resumed:?}, the new job downloaded \
         after {downloaded:?}, all completed after {finished:?}; the Server received {} updates \
         ({} distinct, {} twice); {} worker requests retried through the balancer; answers {:?}; \
         total {:?}",
        FIRST_JOB,
        SECOND_JOB,
        managers[leader].name,
        in_flight.len(),
        managers[new_leader].name,
        received.len(),
        times.len(),
        twice.len(),
        rec.retries,
        rec.answers,
        began.elapsed()
    );

    assert_ne!(leader, new_leader);
    let bound = LEASE + Duration::from_secs(3);
    assert!(
        push_resumed < bound,
        "pushes resumed after {push_resumed:?}"
    );
    assert!(
        download_resumed < bound,
        "downloads resumed after {download_resumed:?}"
    );
    // Only the in-flight push's updates were sent twice.
    let outside: Vec<_> = twice
        .iter()
        .filter(|id| !in_flight.contains(**id))
        .collect();
    assert!(
        outside.is_empty(),
        "updates pushed twice that were not in flight at the kill: {outside:?}"
    );
    // Every acknowledged worker update is in the Server's log once.
    let mut logs: HashMap<String, usize> = HashMap::new();
    for task in &all_tasks {
        for l in server.task_logs(task) {
            *logs.entry(l.log.trim_end().to_string()).or_default() += 1;
        }
    }
    for a in &rec.acked {
        assert_eq!(
            logs.get(a.log.trim_end()).copied(),
            Some(1),
            "{a:?} is not in the Server's log exactly once"
        );
    }
    assert!(
        rec.acked.iter().any(|a| a.status == TaskStatus::Completed),
        "no completed update"
    );
    for task in &all_tasks {
        assert_eq!(
            server.task_status(task).as_deref(),
            Some("completed"),
            "task {task}: {:?}",
            server.task(task).map(|t| t.to_string())
        );
    }
    let bad = rec.server_errors(true);
    assert!(bad.is_empty(), "5xx other than the balancer's: {bad:?}");
    drop(lb);
}
