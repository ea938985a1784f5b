//! `flamenco worker tag` and `flamenco job submit --tag` (issue 16 item 3): tags are added
//! and removed through the store, shown by `worker list`, bad tags and unknown workers are
//! refused with a message and exit status 1 (nothing changed), and a job's tag reaches its
//! tasks.

mod support;

use flamenco_core::store::TaskQuery;
use support::{open, register, write_config};

/// Run `flamenco args…` in `dir`: exit code, stdout, stderr.
fn run(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flamenco"))
        .current_dir(dir)
        .env_remove("FLAMENCO_CONFIG")
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn tags_of(dir: &std::path::Path, id: flamenco_core::model::ObjectId) -> Vec<String> {
    let manager = open(dir).await;
    let tags = manager.get_worker(id).await.unwrap().unwrap().tags;
    manager.close().await.unwrap();
    tags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_workers_and_submit_a_tagged_job() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:0");
    let manager = open(dir.path()).await;
    let a = register(&manager, "render-a", "Flamenco-Worker/2.5").await;
    let b = register(&manager, "render-b", "Flamenco-Worker/2.5").await;
    manager.close().await.unwrap();
    let (a_id, b_id) = (a.id.to_hex(), b.id.to_hex());

    let (code, out, err) = run(
        dir.path(),
        &["worker", "tag", &a_id, "--add", "gpu", "--add", "win"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("now has: gpu, win"), "{out}");
    let (code, out, err) = run(dir.path(), &["worker", "tag", &a_id, "--remove", "win"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("now has: gpu"), "{out}");
    assert_eq!(tags_of(dir.path(), a.id).await, ["gpu"]);

    // Many at once.
    let (code, _, err) = run(dir.path(), &["worker", "tag", &a_id, &b_id, "--add", "ssd"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(tags_of(dir.path(), a.id).await, ["gpu", "ssd"]);
    assert_eq!(tags_of(dir.path(), b.id).await, ["ssd"]);

    // The list shows them.
    let (code, out, err) = run(dir.path(), &["worker", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("tags"), "{out}");
    assert!(out.contains("gpu,ssd"), "{out}");

    // Refusals: exit status 1, a message, nothing changed.
    for (args, want) in [
        (
            vec!["worker", "tag", &a_id, "--add", "g p u"],
            "invalid tag",
        ),
        (vec!["worker", "tag", &a_id], "--add"),
        (
            vec!["worker", "tag", "0123456789abcdef01234567", "--add", "x"],
            "unknown",
        ),
    ] {
        let (code, _, err) = run(dir.path(), &args);
        assert_ne!(code, Some(0), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(tags_of(dir.path(), a.id).await, ["gpu", "ssd"]);

    // A job for gpu workers: its tasks carry the tag.
    let (code, _, err) = run(
        dir.path(),
        &[
            "job",
            "submit",
            "sleep",
            "--set",
            "frames=1-2",
            "--set",
            "time_in_seconds=1",
            "--tag",
            "g/pu",
        ],
    );
    assert_ne!(code, Some(0));
    assert!(
        err.contains("--tag") && err.contains("invalid tag"),
        "{err}"
    );
    let (code, out, err) = run(
        dir.path(),
        &[
            "job",
            "submit",
            "sleep",
            "--set",
            "frames=1-2",
            "--set",
            "time_in_seconds=1",
            "--tag",
            "gpu",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("submitted job"), "{out}");
    let manager = open(dir.path()).await;
    let jobs = manager.list_jobs(&Default::default()).await.unwrap();
    assert_eq!(jobs.len(), 1, "only the valid submission was stored");
    assert_eq!(jobs[0].worker_tag.as_deref(), Some("gpu"));
    let tasks = manager.list_tasks(&TaskQuery::default()).await.unwrap();
    assert!(!tasks.is_empty());
    assert!(tasks.iter().all(|t| t.worker_tag.as_deref() == Some("gpu")));
    manager.close().await.unwrap();
}
