//! `flamenco task cancel|requeue ID` as a process, on a temporary embedded store: a refusal
//! exits 1 with the reason and changes nothing; cancel and re-queue change the task, and
//! `--json` prints it.

mod support;

use flamenco_core::model::{Command as TaskCommand, ObjectId, Task, TaskStatus};
use support::{open, run_err, run_ok, write_config};

async fn status(dir: &std::path::Path, id: ObjectId) -> TaskStatus {
    let manager = open(dir).await;
    let task = manager.get_task(id).await.unwrap().expect("the task");
    manager.close().await.unwrap();
    task.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_cancel_and_requeue() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:0");
    let manager = open(dir.path()).await;
    let task = Task::new(
        "render-1",
        "blender",
        vec![TaskCommand::new(
            "exec",
            serde_json::json!({"cmd": "blender"}),
        )],
    );
    let id = manager.enqueue_tasks(vec![task]).await.unwrap()[0];
    manager.close().await.unwrap();
    let hex = id.to_hex();

    let err = run_err(dir.path(), &["task", "requeue", &hex]);
    assert!(
        err.contains("only a failed, canceled or completed task"),
        "{err}"
    );
    assert_eq!(status(dir.path(), id).await, TaskStatus::Queued);

    let out = run_ok(dir.path(), &["task", "cancel", &hex[16..]]);
    assert_eq!(out, format!("task {hex} is canceled\n"));
    assert_eq!(status(dir.path(), id).await, TaskStatus::Canceled);
    let err = run_err(dir.path(), &["task", "cancel", &hex]);
    assert!(err.contains("only a queued or active task"), "{err}");

    let out = run_ok(dir.path(), &["--json", "task", "requeue", &hex]);
    let task: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(task["status"], "queued");
    assert_eq!(status(dir.path(), id).await, TaskStatus::Queued);

    let err = run_err(dir.path(), &["task", "cancel", &ObjectId::new().to_hex()]);
    assert!(err.contains("unknown"), "{err}");
}
