//! `flamenco task show`, `flamenco job blocklist` and `flamenco job unblock` as processes,
//! on a temporary embedded store (issue 16, items 1 and 2): the failure record and the
//! blocklist are shown (table and `--json`), an entry is removed, and bad input exits 1
//! with the reason and changes nothing.

mod support;

use flamenco_core::config::Config;
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{worker_status, ObjectId, TaskStatus};
use flamenco_core::store::conformance::{claim_request, test_worker, worker_update};
use flamenco_core::Manager;
use support::{run_err, run_ok, write_config};

async fn open(dir: &std::path::Path) -> Manager {
    let (mut config, _) = Config::load(Some(&dir.join("flamenco-manager.yaml"))).unwrap();
    config.data_dir = dir.join("data");
    // One failed task blocklists its worker for the job.
    config.blocklist_threshold = 1;
    Manager::open(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_show_job_blocklist_and_unblock() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:0");
    let manager = open(dir.path()).await;
    let serde_json::Value::Object(settings) =
        serde_json::json!({"frames": "1-10", "chunk_size": 5, "time_in_seconds": 1})
    else {
        unreachable!("an object")
    };
    let job = manager
        .submit_job(JobSubmission::new("sleep", settings))
        .await
        .unwrap()
        .id;
    let mut w1 = test_worker(ObjectId::new(), "render-01", &["sleep"]);
    let mut w2 = test_worker(ObjectId::new(), "render-02", &["sleep"]);
    w1.status = worker_status::AWAKE.into();
    w2.status = worker_status::AWAKE.into();
    manager.store().insert_worker(&w1).await.unwrap();
    manager.store().insert_worker(&w2).await.unwrap();
    let now = manager.now();
    let task = manager
        .store()
        .claim_task(&claim_request(&w1, now))
        .await
        .unwrap()
        .expect("a task")
        .task
        .id;
    manager
        .store()
        .apply_worker_update(
            w1.id,
            worker_update(task, &w1, Some(TaskStatus::Failed), "exit 1", now),
        )
        .await
        .unwrap();
    manager.close().await.unwrap();
    let (task_hex, job_hex, w1_hex) = (task.to_hex(), job.to_hex(), w1.id.to_hex());

    // The task and its record.
    let out = run_ok(dir.path(), &["task", "show", &task_hex[16..]]);
    assert!(out.contains("status    soft-failed"), "{out}");
    assert!(out.contains("failures  1"), "{out}");
    assert!(out.contains("render-01") && out.contains(&w1_hex), "{out}");
    let out = run_ok(dir.path(), &["--json", "task", "show", &task_hex]);
    let shown: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(shown["status"], "soft-failed");
    assert_eq!(shown["failures"][0]["worker_id"], w1_hex);
    assert_eq!(shown["failures"].as_array().map(Vec::len), Some(1));
    let err = run_err(dir.path(), &["task", "show", &ObjectId::new().to_hex()]);
    assert!(err.contains("unknown"), "{err}");

    // The blocklist.
    let out = run_ok(dir.path(), &["job", "blocklist", &job_hex]);
    assert!(out.contains("sleep") && out.contains(&w1_hex), "{out}");
    assert!(out.contains("render-01"), "{out}");
    let out = run_ok(dir.path(), &["--json", "job", "blocklist", &job_hex[16..]]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["worker_id"], w1_hex);
    assert_eq!(lines[0]["task_type"], "sleep");

    // Bad input: exit 1, the reason, nothing changed.
    let err = run_err(dir.path(), &["job", "unblock", &job_hex, &w2.id.to_hex()]);
    assert!(err.contains("not on the blocklist"), "{err}");
    let err = run_err(
        dir.path(),
        &["job", "unblock", &job_hex, &w1_hex, "--type", "blender"],
    );
    assert!(err.contains("not on the blocklist"), "{err}");
    let err = run_err(dir.path(), &["job", "unblock", &job_hex, "not-an-id!"]);
    assert!(err.contains("worker id"), "{err}");
    let err = run_err(dir.path(), &["job", "blocklist", &ObjectId::new().to_hex()]);
    assert!(err.contains("unknown"), "{err}");
    let manager = open(dir.path()).await;
    assert_eq!(manager.job_blocklist(job).await.unwrap().len(), 1);
    manager.close().await.unwrap();

    // Unblock.
    let out = run_ok(
        dir.path(),
        &[
            "job",
            "unblock",
            &job_hex[16..],
            &w1_hex[16..],
            "--type",
            "sleep",
        ],
    );
    assert!(out.contains("is off the blocklist"), "{out}");
    let out = run_ok(dir.path(), &["job", "blocklist", &job_hex]);
    assert!(out.contains("has no blocklisted workers"), "{out}");
    let manager = open(dir.path()).await;
    assert!(manager.job_blocklist(job).await.unwrap().is_empty());
    manager.close().await.unwrap();
}
