//! 64 simulated workers claim 2,000 tasks at once over HTTP: every task is claimed exactly
//! once, and every worker's completion is recorded.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::TestManager;
use flamenco_core::model::{Command, Task, TaskStatus};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_workers_claim_two_thousand_tasks_exactly_once() {
    let tm = TestManager::start().await;
    let tasks: Vec<Task> = (0..2000)
        .map(|i| {
            Task::new(
                format!("task-{i}"),
                "sleep",
                vec![Command::new("sleep", json!({"time_in_seconds": 0}))],
            )
        })
        .collect();
    let all: HashSet<String> = tasks.iter().map(|t| t.id.to_hex()).collect();
    tm.enqueue(tasks).await;
    let mut workers = Vec::new();
    for i in 0..64 {
        workers.push(tm.register(&format!("w{i}"), "linux", &["sleep"]).await);
    }
    let claimed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut handles = Vec::new();
    for w in workers {
        let claimed = claimed.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let (status, body) = w.task().await;
                if status == StatusCode::NO_CONTENT {
                    break;
                }
                assert_eq!(status, StatusCode::OK);
                let id = body["_id"].as_str().unwrap().to_string();
                claimed.lock().await.push(id.clone());
                let oid = flamenco_core::model::ObjectId::parse(&id).unwrap();
                assert_eq!(
                    w.update(oid, json!({"task_status": "completed"})).await,
                    StatusCode::NO_CONTENT
                );
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let claimed = claimed.lock().await;
    let unique: HashSet<String> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), 2000, "each task handed out once");
    assert_eq!(unique, all);
    let counts = tm.manager.task_counts().await.unwrap();
    assert_eq!(
        common::counts(&counts, TaskStatus::Completed.as_str()),
        2000
    );
    // 2 assignment updates + 1 completion per task
    assert_eq!(tm.manager.outbox_len().await.unwrap(), 6000);
    tm.stop().await;
}
