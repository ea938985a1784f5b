//! The real Flamenco Worker (2.5) behind the load balancer (issue 17 item 2): three
//! `flamenco serve` processes in standalone mode on one MongoDB database
//! (`FLAMENCO_TEST_MONGODB_URL`) behind HAProxy, two real workers pointed at the balancer.
//! A `sleep` job submitted through the balancer runs to completion while first the leader
//! and then a Manager that does not lead are killed (`kill -9`). The test shows:
//!
//! * the job completes (its consumer moves to the new leader), with every task's log
//!   whole, and every worker update delivered (no update left in a worker's queue);
//! * the workers retried through the balancer: their logs show the failed requests, and
//!   no answer a worker got was other than the documented ones or the balancer's 502/503
//!   for a request whose Manager died under it;
//! * no Manager still running answered a worker with a 5xx.
//!
//! Without a worker installation (scripts/install-workers.sh), `haproxy` or
//! `FLAMENCO_TEST_MONGODB_URL` the test skips with a notice, except under `CI=true`.

mod support;

#[path = "balancer/mod.rs"]
mod balancer;
#[path = "real_worker/harness.rs"]
mod harness;

use std::io::Write;
use std::time::{Duration, Instant};

use balancer::{Balancer, Daemon};
use flamenco_core::store::mongo::testing::TestDatabase;
use harness::{wait_for, Worker, TASK_TYPES, V2_5, WAIT};
use serde_json::{json, Value};

/// A line on the process's stderr, seen even when the test passes.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "e2e: {line}");
}

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = http.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// The job's tasks, through the balancer (`None` while it does not answer).
async fn tasks(http: &reqwest::Client, base: &str, job: &str) -> Option<Vec<Value>> {
    let body = get(http, &format!("{base}/api/jobs/{job}/tasks")).await?;
    body["tasks"].as_array().cloned()
}

/// Wait until the job's tasks satisfy `check`.
async fn wait_tasks(
    http: &reqwest::Client,
    base: &str,
    job: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) {
    wait_for(what, WAIT, || async {
        let t = tasks(http, base, job).await?;
        check(&t).then_some(())
    })
    .await;
}

/// The HTTP status in a worker's log line about an answer it did not like: "Error 503
/// fetching new task", "Manager did not accept our updates (502 Server Error: …)".
fn answer_code(line: &str) -> Option<u16> {
    if let Some(rest) = line.split("did not accept our updates (").nth(1) {
        return rest.split(' ').next()?.parse().ok();
    }
    line.split("Error ")
        .skip(1)
        .find_map(|rest| rest.split(' ').next()?.parse().ok())
}

fn count(tasks: &[Value], status: &str) -> usize {
    tasks.iter().filter(|t| t["status"] == status).count()
}

/// 5xx answers a Manager gave (its `/metrics`), as "route status ×count".
async fn server_errors(http: &reqwest::Client, m: &Daemon) -> Vec<String> {
    let text = http
        .get(m.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("flamenco_http_requests_total{") && l.contains("status=\"5"))
        .filter(|l| !l.ends_with(" 0"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_worker_behind_the_balancer_finishes_a_job_while_managers_are_killed() {
    let test = "the_real_worker_behind_the_balancer_finishes_a_job_while_managers_are_killed";
    if !harness::worker_available(V2_5, test) {
        return;
    }
    let Some(haproxy) = balancer::haproxy_or_skip(test) else {
        return;
    };
    let Some(db) = TestDatabase::new(test) else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let began = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("e2e-farm-")
        .tempdir()
        .expect("tempdir");
    let mut managers = Vec::new();
    for name in ["r1", "r2", "r3"] {
        managers.push(Daemon::start(dir.path(), name, &db.url, "leader_lease: 3s\n").await);
    }
    let ports: Vec<u16> = managers.iter().map(|m| m.port).collect();
    let lb = Balancer::start(&haproxy, dir.path(), &ports).await;
    let base = lb.url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut workers: Vec<Worker> = ["a", "b"]
        .iter()
        .map(|n| {
            Worker::start_at(
                &dir.path().join(format!("worker-{n}")),
                &base,
                "farm",
                V2_5,
                n,
                TASK_TYPES,
            )
        })
        .collect();
    for w in &workers {
        w.id().await;
    }

    // A job of 8 tasks of 3 s each, submitted through the balancer.
    let resp = http
        .post(format!("{base}/api/jobs"))
        .json(&json!({"name": "behind the balancer", "job_type": "sleep",
                      "settings": {"frames": "1-8", "chunk_size": 1, "time_in_seconds": 3}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status().as_u16(), 201, "submit the job");
    let job: Value = resp.json().await.expect("job");
    let job = job["_id"].as_str().expect("job id").to_string();

    // A task done and another running: kill -9 the leader.
    wait_tasks(&http, &base, &job, "a task completed", |t| {
        count(t, "completed") >= 1 && count(t, "active") >= 1
    })
    .await;
    let leader = balancer::one_leader(&http, &managers).await;
    let killed = Instant::now();
    managers[leader].kill_9().await;
    let new_leader = balancer::one_leader(&http, &managers).await;
    let took_over = killed.elapsed();
    // Two more tasks done: kill -9 a Manager that does not lead.
    let done = count(
        &tasks(&http, &base, &job).await.unwrap_or_default(),
        "completed",
    );
    wait_tasks(&http, &base, &job, "two more tasks completed", |t| {
        count(t, "completed") >= done + 2
    })
    .await;
    let follower = (0..managers.len())
        .find(|i| *i != leader && *i != new_leader)
        .expect("a follower");
    managers[follower].kill_9().await;
    wait_for("the job completes", Duration::from_secs(180), || async {
        let j = get(&http, &format!("{base}/api/jobs/{job}")).await?;
        (j["status"] == "completed").then_some(())
    })
    .await;
    let finished = killed.elapsed();

    // Every update delivered; the task logs whole.
    for w in &workers {
        let what = format!("{} delivers every queued update", w.name);
        wait_for(&what, WAIT, || async {
            (w.queued_updates() == 0).then_some(())
        })
        .await;
    }
    let all = tasks(&http, &base, &job).await.expect("tasks");
    assert_eq!(count(&all, "completed"), 8, "{all:#?}");
    for t in &all {
        let id = t["_id"].as_str().expect("task id");
        let log = http
            .get(format!("{base}/api/tasks/{id}/log"))
            .send()
            .await
            .expect("task log")
            .text()
            .await
            .expect("log text");
        assert!(
            log.contains("Preparing to sleep") && log.contains("Done sleeping for 3 seconds"),
            "task {id}'s log lost lines:\n{log}"
        );
    }
    for w in workers.iter_mut() {
        w.stop().await;
    }
    // The workers' logs: failed requests they retried, and no answer outside the
    // documented set but the balancer's 502/503 while a Manager died under a request.
    let mut retried = Vec::new();
    for w in &workers {
        let log = w.log();
        let mut bad = Vec::new();
        for line in log.lines() {
            let code = answer_code(line);
            if line.contains("will retry")
                || line.contains("retrying")
                || line.contains("Unable to connect")
            {
                retried.push(line.to_string());
            }
            if matches!(code, Some(c) if c != 502 && c != 503)
                || line.contains("Traceback")
                || line.contains("discarding update")
            {
                bad.push(line.to_string());
            }
        }
        assert!(bad.is_empty(), "{}: {bad:#?}", w.name);
    }
    let mut errors = Vec::new();
    for m in managers.iter().filter(|m| m.running()) {
        errors.extend(server_errors(&http, m).await);
    }
    assert!(errors.is_empty(), "5xx from a running Manager: {errors:#?}");
    report(&format!(
        "farm with the real worker {V2_5}: 8 tasks on 2 workers; leader {} killed, {} took over \
         after {took_over:?}, then {} killed; job completed {finished:?} after the first kill; \
         {} worker log lines of failed requests, retried through the balancer {retried:#?}; \
         total {:?}",
        managers[leader].name,
        managers[new_leader].name,
        managers[follower].name,
        retried.len(),
        began.elapsed()
    ));
    drop(lb);
}
