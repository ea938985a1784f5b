//! The standalone-mode scenarios with the real Flamenco Worker, each on a farm of its own
//! (its own `flamenco serve`, data directory and port), so they run at the same time.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{wait_for, Farm, Worker, V2_5, WAIT};
use crate::report;

async fn wait_awake(farm: &Farm, w: &Worker) -> String {
    let id = w.id().await;
    wait_worker_status(farm, &id, "awake").await;
    id
}

pub async fn wait_worker_status(farm: &Farm, id: &str, status: &str) {
    let what = format!("[{}] worker {id} shows status {status}", farm.name);
    wait_for(&what, WAIT, || async {
        let w = farm.worker_status(id).await?;
        (w["status"] == status).then_some(())
    })
    .await;
}

fn task_ids(tasks: &[Value]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| t["_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A farm named `<name>-<version>` with two workers of `version`, "a" and "b", both
/// awake.
async fn farm_with_two_workers(name: &str, version: &'static str) -> (Farm, Vec<Worker>) {
    let farm = Farm::start(&format!("{name}-{version}"), "").await;
    let workers = vec![
        Worker::start(&farm, version, "a"),
        Worker::start(&farm, version, "b"),
    ];
    for w in &workers {
        wait_awake(&farm, w).await;
    }
    (farm, workers)
}

/// Submit a `sleep` job over `frames`, a task a frame, each sleeping `seconds`; its id.
async fn submit_sleep(farm: &Farm, frames: &str, seconds: u64) -> String {
    farm.submit(
        "sleep",
        json!({"frames": frames, "chunk_size": 1, "time_in_seconds": seconds}),
    )
    .await
}

async fn finish(farm: &mut Farm, workers: &mut [Worker]) {
    for w in workers.iter_mut() {
        w.stop().await;
    }
    for w in workers.iter() {
        w.check_log();
        assert_eq!(
            w.queued_updates(),
            0,
            "{}: updates left undelivered",
            w.name
        );
    }
    farm.check_responses().await;
    farm.stop().await;
}

/// Two workers complete a 4-task `sleep` job, both taking part.
pub async fn two_workers_sleep_job(version: &'static str) {
    let (mut farm, mut workers) = farm_with_two_workers("sleep", version).await;
    let job = submit_sleep(&farm, "1-4", 3).await;
    farm.wait_job_status(&job, "completed", WAIT).await;
    let tasks = farm.tasks(&job).await;
    assert_eq!(tasks.len(), 4, "{tasks:#?}");
    assert!(
        tasks.iter().all(|t| t["status"] == "completed"),
        "{tasks:#?}"
    );
    for w in &workers {
        assert!(
            w.log().contains("Received task"),
            "{} took no task of the 4; log:\n{}",
            w.name,
            w.log_tail()
        );
    }
    for id in task_ids(&tasks) {
        let log = farm.task_log(&id).await;
        assert!(
            log.contains("Preparing to sleep") && log.contains("Done sleeping for 3 seconds"),
            "task {id}'s log:\n{log}"
        );
    }
    finish(&mut farm, &mut workers).await;
}

/// `flamenco job cancel` stops the running tasks within seconds; their last words are
/// kept.
pub async fn cancel_stops_running_tasks(version: &'static str) {
    let (mut farm, mut workers) = farm_with_two_workers("cancel", version).await;
    let job = submit_sleep(&farm, "1-2", 600).await;
    // Both tasks run, and each worker is inside its `sleep` command.
    wait_for(
        &format!("[{}] both tasks sleeping", farm.name),
        WAIT,
        || async {
            let tasks = farm.tasks(&job).await;
            let active = tasks.iter().filter(|t| t["status"] == "active").count() == 2;
            let sleeping = workers.iter().all(|w| w.log().contains("Received task"))
                && tasks
                    .iter()
                    .all(|t| t["activity"].as_str().unwrap_or_default().contains("sleep"));
            (active && sleeping).then_some(())
        },
    )
    .await;
    let tasks = task_ids(&farm.tasks(&job).await);

    let started = Instant::now();
    farm.cli_ok(&["job", "cancel", &job]).await;
    farm.wait_job_status(&job, "canceled", WAIT).await;
    let took = started.elapsed();
    // The workers really stopped: the sleep command was interrupted.
    for w in &workers {
        let what = format!("{} stops its task", w.name);
        wait_for(&what, WAIT, || async {
            w.log().contains("We have to stop task").then_some(())
        })
        .await;
    }
    report(&format!(
        "cancel ({version}): job canceled {took:.1?} after `flamenco job cancel` \
         (may_i_run_interval_seconds = 2)"
    ));
    for t in farm.tasks(&job).await {
        assert_eq!(t["status"], "canceled", "{t}");
    }

    // The last words: what the worker said while it was being stopped. 2.5 sends
    // log-only updates ("… stopped running this task …", then "… returned this task to
    // the Manager queue." after its return made the task `canceled`). 2.0.6 sends
    // `canceled` with the activity "Task was canceled" and no log lines; that it was
    // accepted (204, where v2 answered 409) is checked with the other answers at the end:
    // no 409 is allowed here.
    let expected: &[&str] = if version == V2_5 {
        &[
            "Sleeping for 600 seconds",
            "stopped running this task",
            "returned this task to the Manager queue",
        ]
    } else {
        &["Sleeping for 600 seconds"]
    };
    for id in &tasks {
        let what = format!("[{}] task {id}'s log keeps its last words", farm.name);
        wait_for(&what, WAIT, || async {
            let log = farm.task_log(id).await;
            expected.iter().all(|l| log.contains(l)).then_some(())
        })
        .await;
    }
    finish(&mut farm, &mut workers).await;
}

/// An `exec-command` job's output is readable with `flamenco task log`.
pub async fn exec_output_in_task_log(version: &'static str) {
    let mut farm = Farm::start(&format!("exec-{version}"), "").await;
    let mut workers = vec![Worker::start(&farm, version, "a")];
    wait_awake(&farm, &workers[0]).await;
    let marker = format!("e2e-exec-output-{version}");
    let job = farm
        .submit("exec-command", json!({"cmd": format!("echo {marker}")}))
        .await;
    farm.wait_job_status(&job, "completed", WAIT).await;
    let task = task_ids(&farm.tasks(&job).await).remove(0);
    let log = farm.task_log(&task).await;
    assert!(
        log.lines().any(|l| l.contains(&format!("> {marker}"))),
        "the task log lacks the command's output {marker:?}:\n{log}"
    );
    let api = farm.task_log_api(&task).await;
    assert!(api.contains(&marker), "GET /api/tasks/{task}/log: {api}");
    finish(&mut farm, &mut workers).await;
}

/// `kill -9` of the Manager mid-job; after a restart the job completes and no update is
/// lost: every worker's queue drains with 2xx answers, and every task's log is whole.
pub async fn manager_killed_mid_job(version: &'static str) {
    let (mut farm, mut workers) = farm_with_two_workers("kill9", version).await;
    let job = submit_sleep(&farm, "1-4", 4).await;
    wait_for(
        &format!("[{}] a task completed, another running", farm.name),
        WAIT,
        || async {
            let tasks = farm.tasks(&job).await;
            let done = tasks.iter().any(|t| t["status"] == "completed");
            let running = tasks.iter().any(|t| t["status"] == "active");
            (done && running).then_some(())
        },
    )
    .await;
    farm.kill_9().await;
    // Down until a worker has an update it could not deliver.
    wait_for(
        &format!("[{}] a worker queues an update", farm.name),
        WAIT,
        || async { workers.iter().any(|w| w.queued_updates() > 0).then_some(()) },
    )
    .await;
    farm.start_serve().await;
    farm.wait_job_status(&job, "completed", Duration::from_secs(180))
        .await;
    let tasks = farm.tasks(&job).await;
    assert!(
        tasks.iter().all(|t| t["status"] == "completed"),
        "{tasks:#?}"
    );
    for w in &workers {
        let what = format!("{} delivers every queued update", w.name);
        wait_for(&what, WAIT, || async {
            (w.queued_updates() == 0).then_some(())
        })
        .await;
    }
    for id in task_ids(&tasks) {
        let log = farm.task_log(&id).await;
        assert!(
            log.contains("Preparing to sleep") && log.contains("Done sleeping for 4 seconds"),
            "task {id}'s log lost lines:\n{log}"
        );
    }
    finish(&mut farm, &mut workers).await;
}

/// Flamenco Worker 2.5: sleep, wake and shutdown through the CLI, with the worker's
/// status shown truthfully throughout.
pub async fn sleep_wake_shutdown_cli() {
    let mut farm = Farm::start("states-cli", "").await;
    let mut w = Worker::start(&farm, V2_5, "a");
    let id = wait_awake(&farm, &w).await;

    farm.cli_ok(&["worker", "sleep", &id]).await;
    wait_worker_status(&farm, &id, "asleep").await;
    wait_for("the worker goes to sleep", WAIT, || async {
        w.log().contains("Going to sleep").then_some(())
    })
    .await;

    farm.cli_ok(&["worker", "wake", &id]).await;
    wait_worker_status(&farm, &id, "awake").await;
    wait_for("the worker wakes up", WAIT, || async {
        w.log().contains("Waking up").then_some(())
    })
    .await;

    farm.cli_ok(&["worker", "shutdown", &id]).await;
    let exit = w.wait_exit(WAIT).await;
    assert!(exit.success(), "the worker exited with {exit}");
    wait_worker_status(&farm, &id, "down").await;

    w.check_log();
    farm.check_responses().await;
    farm.stop().await;
}

/// Flamenco Worker 2.5: the same through the dashboard API, and a sleep while a task runs:
/// the worker stays `asleep` while it stops and returns the task and pushes its log.
pub async fn sleep_wake_shutdown_api() {
    let mut farm = Farm::start("states-api", "").await;
    let mut w = Worker::start(&farm, V2_5, "a");
    let id = wait_awake(&farm, &w).await;
    let action = |what: &'static str| {
        let farm = &farm;
        let id = id.clone();
        async move {
            let (status, body) = farm
                .post(&format!("/api/workers/{id}/{what}"), json!({}))
                .await;
            assert_eq!(status, 200, "POST /api/workers/{id}/{what}: {body}");
        }
    };

    action("sleep").await;
    wait_worker_status(&farm, &id, "asleep").await;
    action("wake").await;
    wait_worker_status(&farm, &id, "awake").await;

    // Asleep in the middle of a task.
    let job = submit_sleep(&farm, "1", 600).await;
    wait_for("the task runs", WAIT, || async {
        let tasks = farm.tasks(&job).await;
        (tasks[0]["status"] == "active"
            && tasks[0]["activity"]
                .as_str()
                .unwrap_or_default()
                .contains("sleep"))
        .then_some(())
    })
    .await;
    action("sleep").await;
    wait_worker_status(&farm, &id, "asleep").await;
    // Until the worker has returned the task and delivered everything it had to say about
    // it (its log-only updates come after the acknowledgement), the worker must show
    // `asleep` at every look.
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let status = farm.worker_status(&id).await.expect("the worker")["status"].clone();
        seen.push(status);
        let tasks = farm.tasks(&job).await;
        let returned = tasks[0]["status"] != "active";
        // 2.5 pushes the stopped task's log twice after it acknowledged `asleep`: at the
        // return, and a second later "returned this task to the Manager queue".
        let log = w.log();
        let pushed_last = log
            .split_once("Returning task")
            .and_then(|(_, rest)| rest.splitn(3, "task is silently aborting").nth(2))
            .is_some_and(|rest| rest.contains("Pushing task update"));
        let said_all = pushed_last && w.queued_updates() == 0;
        if returned && said_all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task was not returned with all its updates within {WAIT:?}; worker log:\n{}",
            w.log_tail()
        );
        // Not `wait_for`: every look is also a sample of the status shown, the thing tested.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once more after the last update was answered.
    seen.push(farm.worker_status(&id).await.expect("worker")["status"].clone());
    assert!(
        seen.iter().all(|s| s == "asleep"),
        "the worker did not show `asleep` throughout: {seen:?}"
    );
    // Everything it said about the returned task is in the task's log, the line it sent
    // after the return included (the task was back in the queue with no worker: 204).
    let task = task_ids(&farm.tasks(&job).await).remove(0);
    let log = farm.task_log(&task).await;
    assert!(
        log.contains("Sleeping for 600 seconds")
            && log.contains("returned this task to the Manager queue"),
        "task {task}'s log lacks the worker's last lines:\n{log}"
    );
    farm.cli_ok(&["job", "cancel", &job]).await;
    farm.wait_job_status(&job, "canceled", WAIT).await;

    action("wake").await;
    wait_worker_status(&farm, &id, "awake").await;
    action("shutdown").await;
    let exit = w.wait_exit(WAIT).await;
    assert!(exit.success(), "the worker exited with {exit}");
    wait_worker_status(&farm, &id, "down").await;

    w.check_log();
    farm.check_responses().await;
    farm.stop().await;
}
