//! `flamenco task log ID [--tail N] [--follow]` as a process, on a temporary embedded
//! store: the whole log, the tail, JSON lines, an unknown task, and `--follow` printing a
//! line stored after it started, then ending by itself once the task is finished.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use flamenco_core::model::{Command as TaskCommand, ObjectId, Task, TaskStatus, TaskUpdate};
use support::{flamenco, open, run_err, run_ok, write_config};

/// How long the test waits for the follower's output or exit.
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_log_prints_tails_and_follows() {
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
    let ids = manager.enqueue_tasks(vec![task]).await.unwrap();
    let id: ObjectId = ids[0];
    manager
        .store()
        .append_task_log(id, "Blender 3.4\nRead blend: /shots/a.blend\n")
        .await
        .unwrap();
    manager
        .store()
        .append_task_log(id, "Error: File format is not supported\n")
        .await
        .unwrap();
    manager.close().await.unwrap();
    let hex = id.to_hex();

    let out = run_ok(dir.path(), &["task", "log", &hex]);
    assert_eq!(
        out,
        "Blender 3.4\nRead blend: /shots/a.blend\nError: File format is not supported\n"
    );
    // A short id works too, as in the tables.
    let out = run_ok(dir.path(), &["task", "log", &hex[16..], "--tail", "1"]);
    assert_eq!(out, "Error: File format is not supported\n");
    let out = run_ok(dir.path(), &["--json", "task", "log", &hex, "--tail", "2"]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[1]["text"], "Error: File format is not supported");

    let err = run_err(dir.path(), &["task", "log", &ObjectId::new().to_hex()]);
    assert!(err.contains("unknown"), "{err}");
    let out = flamenco(dir.path())
        .args(["task", "log", &hex, "--tail", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--tail 0 is bad usage");

    // --follow: the existing tail, then a line stored afterwards; it ends by itself once
    // the task is finished and quiet.
    let mut child = flamenco(dir.path())
        .args(["task", "log", &hex, "--tail", "1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(DEADLINE).expect("the tail line");
    assert_eq!(first, "Error: File format is not supported");

    let manager = open(dir.path()).await;
    manager
        .store()
        .append_task_log(id, "Blender quit\n")
        .await
        .unwrap();
    let next = rx.recv_timeout(DEADLINE).expect("the followed line");
    assert_eq!(next, "Blender quit");
    let mut done = TaskUpdate::new(id, chrono::Utc::now());
    done.task_status = Some(TaskStatus::Failed);
    manager.store().queue_update(done).await.unwrap();
    manager.close().await.unwrap();

    let status = support::wait_exit(
        &mut child,
        DEADLINE,
        "--follow did not end after the task finished",
    );
    assert!(status.success(), "{status:?}");
    assert!(rx.try_recv().is_err(), "nothing else was printed");
}
