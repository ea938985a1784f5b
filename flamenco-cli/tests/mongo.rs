//! The `flamenco` binary with a `database_url` pointing at a MongoDB that is not there:
//! `config check --connect` reports it, `serve` refuses to start, both with a message
//! that names the URL (password hidden) and says what to do, and neither panics.
//! Needs no database server.

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Run the binary in `dir`, killing it if it runs longer than `limit`.
fn run(dir: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = support::flamenco(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flamenco");
    support::wait_exit(&mut child, limit, &format!("flamenco {args:?} still ran"));
    (child.wait_with_output().expect("output"), started.elapsed())
}

#[test]
fn an_unreachable_database_url_is_reported_and_serve_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_port = support::free_port();
    let shown = format!("mongodb://flamenco:****@127.0.0.1:{db_port}/farm");
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        format!(
            "listen: '127.0.0.1:{}'\ndatabase_url: mongodb://flamenco:hunter2@127.0.0.1:{db_port}/farm\n",
            support::free_port()
        ),
    )
    .expect("config");

    let (out, took) = run(
        dir.path(),
        &["config", "check", "--connect"],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach MongoDB at {shown}: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("check database_url or start MongoDB"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains("hunter2"), "password shown: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }

    let (out, took) = run(dir.path(), &["serve"], Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach MongoDB at {shown}: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("check database_url or start MongoDB"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains("hunter2"), "password shown: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// The operator commands against the test MongoDB: the same store, the same answers.
#[tokio::test]
async fn operator_commands_work_against_mongodb() {
    use flamenco_core::store::mongo::testing::TestDatabase;
    let Some(db) = TestDatabase::new("cli_operator_commands") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        format!("database_url: '{}'\n", db.url),
    )
    .expect("config");
    // An empty database is no Manager's: the commands refuse it and create nothing.
    let (out, _) = run(dir.path(), &["queue", "list"], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no Manager store found"), "{stderr}");
    assert!(stderr.contains("holds no Manager data"), "{stderr}");
    let (out, _) = run(
        dir.path(),
        &["config", "check", "--connect"],
        Duration::from_secs(60),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no store yet"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (config, _) =
        flamenco_core::config::Config::load(Some(&dir.path().join("flamenco-manager.yaml")))
            .expect("load");
    let manager = flamenco_core::Manager::open(config)
        .await
        .expect("open mongo");
    let tasks: Vec<flamenco_core::model::Task> = (0..3)
        .map(|i| {
            flamenco_core::model::Task::new(
                format!("mongo-cli-{i}"),
                "sleep",
                vec![flamenco_core::model::Command::new(
                    "sleep",
                    serde_json::json!({"time_in_seconds": 1}),
                )],
            )
        })
        .collect();
    let ids = manager.enqueue_tasks(tasks).await.expect("enqueue");
    manager.close().await.expect("close");

    let ok = |args: &[&str]| {
        let (out, _) = run(dir.path(), args, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "flamenco {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = ok(&["config", "check", "--connect"]);
    assert!(out.contains("store reachable: mongodb"), "{out}");
    let out = ok(&["queue", "list", "--json"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let out = ok(&["queue", "show", &ids[0].to_hex()]);
    assert!(out.contains("mongo-cli-0"), "{out}");
    let out = ok(&["worker", "list", "--json"]);
    assert!(out.is_empty(), "{out}");
    let out = ok(&["cleanslate", "--yes"]);
    assert!(out.contains("erased 3 tasks"), "{out}");
    let out = ok(&["queue", "list", "--json"]);
    assert!(out.is_empty(), "{out}");
    let out = ok(&["purge-updates", "--yes"]);
    assert!(out.contains("empty"), "{out}");
}
