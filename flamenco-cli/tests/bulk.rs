//! Bulk actions on the command line (issue 16 item 5): `flamenco job cancel|requeue|delete|
//! priority` and `flamenco worker sleep|wake|forget` with several ids (short ones too), a
//! `--status` filter or `--all`; one line per object, `--json`, and exit status 1 with a
//! summary when any object was not done. Bad arguments change nothing.

mod support;

use std::path::Path;

use flamenco_core::model::RequestedStatus;
use serde_json::Value;
use support::{new_store, open, register, run, run_err, run_ok};

fn submit(dir: &Path) -> String {
    let out = run_ok(
        dir,
        &[
            "job",
            "submit",
            "sleep",
            "--set",
            "frames=1-4",
            "--set",
            "chunk_size=2",
            "--set",
            "time_in_seconds=1",
            "--json",
        ],
    );
    let job: Value = serde_json::from_str(&out).expect("the job as JSON");
    job["_id"].as_str().expect("_id").to_string()
}

fn job(dir: &Path, id: &str) -> Value {
    serde_json::from_str(&run_ok(dir, &["job", "show", id, "--json"])).expect("job JSON")
}

fn short(id: &str) -> &str {
    &id[id.len() - 8..]
}

#[test]
fn job_bulk_commands() {
    let dir = tempfile::tempdir().unwrap();
    new_store(dir.path(), "127.0.0.1:0");
    let (a, b, c) = (submit(dir.path()), submit(dir.path()), submit(dir.path()));

    // Priority of two jobs, one by its short id.
    let out = run_ok(dir.path(), &["job", "priority", "80", &a, short(&b)]);
    assert!(out.contains(&format!("{a}  done")), "{out}");
    assert_eq!(job(dir.path(), &a)["priority"], 80);
    assert_eq!(job(dir.path(), &b)["priority"], 80);
    assert_eq!(job(dir.path(), &c)["priority"], 50);

    // Bad arguments: nothing happens.
    let err = run_err(dir.path(), &["job", "priority", "0", &a]);
    assert!(err.contains("1 to 100"), "{err}");
    let err = run_err(dir.path(), &["job", "cancel", &a, "nope"]);
    assert!(err.contains("is not an id"), "{err}");
    let err = run_err(dir.path(), &["job", "cancel", &a, "--status", "queued"]);
    assert!(err.contains("not both"), "{err}");
    let err = run_err(dir.path(), &["job", "cancel", "--status", "sleeping"]);
    assert!(err.contains("--status"), "{err}");
    let err = run_err(dir.path(), &["job", "cancel"]);
    assert!(err.contains("name the jobs"), "{err}");
    assert_eq!(job(dir.path(), &a)["status"], "queued");

    // Cancel two by id, as JSON: the report.
    let out = run_ok(dir.path(), &["job", "cancel", &a, &b, "--json"]);
    let report: Value = serde_json::from_str(&out).expect("report JSON");
    assert_eq!(report["action"], "cancel");
    assert_eq!(report["done"], 2);
    assert_eq!(report["results"][0]["status"], "canceled");

    // Re-queue by filter; then delete by filter: the queued ones are refused, exit 1.
    let out = run_ok(dir.path(), &["job", "requeue", "--status", "canceled"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(job(dir.path(), &a)["status"], "queued");
    run_ok(dir.path(), &["job", "cancel", &c]);
    let out = run(dir.path(), &["job", "delete", &a, &c]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains(&format!("{c}  done")), "{stdout}");
    assert!(stdout.contains(&format!("{a}  refused")), "{stdout}");
    assert!(stderr.contains("1 done, 1 refused"), "{stderr}");
    assert!(stderr.contains("1 of 2 job(s) not done"), "{stderr}");
    let out = run(dir.path(), &["job", "show", &c]);
    assert_eq!(out.status.code(), Some(1), "job {c} was deleted");
    assert_eq!(job(dir.path(), &a)["status"], "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_bulk_commands() {
    let dir = tempfile::tempdir().unwrap();
    new_store(dir.path(), "127.0.0.1:0");
    let manager = open(dir.path()).await;
    let new = register(&manager, "new", "Flamenco-Worker/2.5").await;
    let old = register(&manager, "old", "Flamenco-Worker/2.0.6").await;
    manager.close().await.unwrap();
    let (new_id, old_id) = (new.id.to_hex(), old.id.to_hex());

    let err = run_err(dir.path(), &["worker", "sleep", "--all", &new_id]);
    assert!(err.contains("only one of them"), "{err}");
    let err = run_err(dir.path(), &["worker", "wake", "--status", "napping"]);
    assert!(err.contains("unknown worker status"), "{err}");

    // Sleep all: the 2.0 worker is refused, exit 1, the other is asked.
    let dir_path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || run(&dir_path, &["worker", "sleep", "--all"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{new_id}  done")), "{stdout}");
    assert!(stdout.contains(&format!("{old_id}  refused")), "{stdout}");
    assert!(stdout.contains("2.0.6"), "{stdout}");
    let manager = open(dir.path()).await;
    let asked = |id| {
        let m = &manager;
        async move { m.get_worker(id).await.unwrap().unwrap().status_requested }
    };
    assert_eq!(asked(new.id).await, Some(RequestedStatus::Asleep));
    assert_eq!(asked(old.id).await, None);
    manager.close().await.unwrap();

    // Forget both by short ids: gone.
    let dir_path = dir.path().to_path_buf();
    let (n, o) = (short(&new_id).to_string(), short(&old_id).to_string());
    let out = tokio::task::spawn_blocking(move || {
        run_ok(&dir_path, &["worker", "forget", &n, &o, "--json"])
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_str(&out).expect("report JSON");
    assert_eq!(report["done"], 2, "{report}");

    let manager = open(dir.path()).await;
    assert!(manager.list_workers().await.unwrap().is_empty());
    manager.close().await.unwrap();
}
