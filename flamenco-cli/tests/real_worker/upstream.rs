//! Upstream mode with the real worker: the Flamenco Server double (flamenco-testserver,
//! in this process), a `flamenco serve` pointed at it, and Flamenco Worker 2.5. A job
//! created on the double completes; a cancel on the double stops the worker; every log
//! line the worker wrote for a task reaches the double, the cancelled task's included.

use flamenco_testserver::{NewJob, TestServer};

use crate::harness::{wait_for, Farm, Worker, V2_5, WAIT};
use crate::report;
use crate::scenarios::wait_worker_status;

/// The log lines that reached the double for `task`, joined.
fn server_log(server: &TestServer, task: &str) -> String {
    server
        .task_logs(task)
        .iter()
        .map(|l| l.log.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn job_from_server() {
    let server = TestServer::start().await;
    let creds = server.add_manager();
    let config = format!(
        "flamenco: {}\nmanager_id: {}\nmanager_secret: {}\nown_url: http://127.0.0.1:{{port}}/\n\
         task_update_push_max_interval: 500ms\ntask_update_push_max_count: 10\n\
         cancel_task_fetch_max_interval: 1s\ndownload_task_sleep: 2s\n",
        server.url(),
        creds.id,
        creds.token
    );
    let mut farm = Farm::start("upstream", &config).await;
    let mut worker = Worker::start(&farm, V2_5, "upstream");
    let id = worker.id().await;
    wait_worker_status(&farm, &id, "awake").await;

    // A job created on the Server completes.
    let job = server.add_job(&creds.id, NewJob::sleep(2, 2));
    wait_for("the Server's job completes", WAIT, || async {
        (server.job_status(&job.id).as_deref() == Some("completed")).then_some(())
    })
    .await;
    for task in &job.task_ids {
        let what = format!("every log line of task {task} reaches the Server");
        wait_for(&what, WAIT, || async {
            let log = server_log(&server, task);
            [
                "echo: Starting",
                "Preparing to sleep",
                "Sleeping for 2 seconds",
                "Done sleeping for 2 seconds",
                "sleep: Finished",
            ]
            .iter()
            .all(|line| log.contains(line))
            .then_some(())
        })
        .await;
    }

    // A cancel on the Server stops the worker.
    let long = server.add_job(&creds.id, NewJob::sleep(1, 600));
    let task = long.task_ids[0].clone();
    wait_for("the long task runs on the worker", WAIT, || async {
        (server.task_status(&task).as_deref() == Some("active")
            && server_log(&server, &task).contains("Sleeping for 600 seconds"))
        .then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    server.set_job_status(&long.id, "cancel-requested");
    wait_for("the worker stops the task", WAIT, || async {
        worker.log().contains("We have to stop task").then_some(())
    })
    .await;
    wait_for("the Server's task is canceled", WAIT, || async {
        (server.task_status(&task).as_deref() == Some("canceled")).then_some(())
    })
    .await;
    report(&format!(
        "upstream: the Server's cancel reached the worker and came back canceled in {:.1?}",
        started.elapsed()
    ));
    // Its last words too: the line it logged while stopping, and the one after its return
    // made the task `canceled` (both accepted locally with 204 and pushed upstream).
    wait_for(
        "the cancelled task's last log lines reach the Server",
        WAIT,
        || async {
            let log = server_log(&server, &task);
            (log.contains("stopped running this task")
                && log.contains("returned this task to the Manager queue"))
            .then_some(())
        },
    )
    .await;

    worker.stop().await;
    worker.check_log();
    assert_eq!(worker.queued_updates(), 0);
    farm.check_responses().await;
    farm.stop().await;
}
