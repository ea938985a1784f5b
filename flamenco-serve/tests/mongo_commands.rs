//! How many MongoDB commands each worker request costs (issue 17 item 3,
//! docs/performance.md "MongoDB commands per worker request"): a Manager on the MongoDB
//! store, the driver's command monitoring recording every command it sends, and a worker
//! speaking the protocol over HTTP. Prints the commands of each request and fails when a
//! request needs more than its budget, so a regression shows.
//!
//! Needs the test MongoDB server (`FLAMENCO_TEST_MONGODB_URL`); without it the test skips
//! with a notice, except under `CI=true`, where it fails.

mod common;

use std::future::Future;
use std::sync::Arc;

use common::{test_task, v2_test_config, TestManager};
use flamenco_core::store::mongo::testing::{connect_logged, CommandLog, TestDatabase};
use flamenco_core::webhooks::{WebhookConfig, WebhookEvent};
use reqwest::StatusCode;
use serde_json::json;

/// The worker's own record, read by authentication when this process's cache of it
/// (one second) has expired: not part of a request's own work.
const AUTH_READ: &str = "find flamenco_workers";

/// Run one request; its commands (without an authentication read) and its status.
async fn measured<F: Future<Output = StatusCode>>(
    log: &CommandLog,
    what: &str,
    request: F,
) -> (StatusCode, Vec<String>) {
    log.take();
    let status = request.await;
    let mut commands = log.take();
    let auth_reads = commands.iter().filter(|c| *c == AUTH_READ).count();
    if auth_reads > 0 {
        commands.retain(|c| c != AUTH_READ);
    }
    println!(
        "{what}: {status}, {} commands{}: {}",
        commands.len(),
        if auth_reads > 0 {
            format!(" (+{auth_reads} authentication read)")
        } else {
            String::new()
        },
        commands.join(", ")
    );
    (status, commands)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_per_worker_request() {
    let Some(db) = TestDatabase::new("commands_per_worker_request") else {
        return;
    };
    let (store, log) = connect_logged(&db.url).await.expect("connect");
    // A webhook wants worker status changes (nothing sends it here): a request that
    // changes the status queues one delivery, the others must not pay for it.
    let mut config = v2_test_config();
    config.webhooks = vec![WebhookConfig {
        url: "http://127.0.0.1:9/hook".into(),
        secret: String::new(),
        events: vec![WebhookEvent::WorkerStatus],
    }];
    let tm = TestManager::start_with_store(config, Arc::new(store)).await;
    // v2's test task: one parent (not in the database, so it does not block).
    let task = test_task("1", "sleeping");
    let id = task.id;
    tm.enqueue(vec![task]).await;
    let w = tm.register("node1", "linux", &["sleeping"]).await;
    let mut budgets = Vec::new();
    let (status, sign_on) = measured(&log, "sign-on (registered → awake)", async {
        w.sign_on(json!({})).await
    })
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        sign_on.iter().any(|c| c == "insert webhook_deliveries"),
        "the status change queues its webhook delivery: {sign_on:?}"
    );
    budgets.push(("sign-on", sign_on.len(), 2));

    let (status, claim) = measured(&log, "claim (POST /task)", async {
        w.post_empty("/task").await.status()
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    budgets.push(("claim", claim.len(), 2));

    let (status, update) = measured(&log, "update with log lines", async {
        w.update(
            id,
            json!({"task_status": "active", "activity": "rendering",
                   "log": "frame 1 started\nframe 1 done\n"}),
        )
        .await
    })
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    budgets.push(("update with log lines", update.len(), 2));

    let (status, update_plain) = measured(&log, "update without log", async {
        w.update(id, json!({"activity": "still rendering"})).await
    })
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    budgets.push(("update without log", update_plain.len(), 1));

    let (status, may_i_run) = measured(&log, "may-i-run", async {
        let (status, body) = w.may_i_run(id).await;
        assert_eq!(body["may_keep_running"], json!(true), "{body}");
        status
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    budgets.push(("may-i-run", may_i_run.len(), 1));

    // The one-second flush (`flamenco_core::seen`): the worker's contacts, the claim's
    // `current_task` and the task report of its updates, and the may-i-run ping; one
    // batched update per collection.
    log.take();
    tm.manager.flush_seen().await.expect("flush");
    let flush = log.take();
    println!("seen flush: {} commands: {}", flush.len(), flush.join(", "));
    assert_eq!(
        flush,
        ["update flamenco_tasks", "update flamenco_workers"],
        "the ping's task, then every worker write in one command"
    );
    let stored = tm.worker(w.id).await;
    assert_eq!(stored.current_task_status, "active", "the update's report");
    assert_eq!(stored.current_task, Some(id), "the claim's assignment");
    assert!(stored.current_task_updated.is_some());
    budgets.push(("seen flush", flush.len(), 2));

    let (status, _) = measured(&log, "update completing the task", async {
        w.update(id, json!({"task_status": "completed", "activity": "done"}))
            .await
    })
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, poll) = measured(&log, "empty poll (POST /task, 204)", async {
        w.post_empty("/task").await.status()
    })
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    budgets.push(("empty poll", poll.len(), 1));

    for commands in [&claim, &update, &update_plain, &may_i_run, &poll] {
        assert!(
            !commands.iter().any(|c| c.contains("webhook")),
            "no status change, no webhook work: {commands:?}"
        );
    }
    for (what, used, budget) in budgets {
        assert!(
            used <= budget,
            "{what} sent {used} MongoDB commands, more than its budget of {budget}"
        );
    }
    tm.stop().await;
}
