//! The `flamenco` binary run as a process: exit codes, messages, `serve` lifecycle, and
//! the operator commands against a temporary embedded store.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flamenco_core::config::Config;
use flamenco_core::model::{Command as TaskCommand, Task};
use flamenco_core::Manager;

fn flamenco(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flamenco"));
    cmd.current_dir(dir).env_remove("RUST_LOG");
    cmd
}

fn write_config(dir: &Path, listen: &str) -> std::path::PathBuf {
    let path = dir.join("flamenco-manager.yaml");
    std::fs::write(
        &path,
        format!("listen: '{listen}'\ndata_dir: ./data\nactive_task_timeout_interval: 2m\n"),
    )
    .unwrap();
    path
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = flamenco(dir.path()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = flamenco(dir.path())
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_check_with_defaults_and_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = flamenco(dir.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("defaults apply"), "{stdout}");
    assert!(stdout.contains("8083"), "{stdout}");

    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        "listen: ':8083'\ndownload_task_sleep_seconds: 60s\n",
    )
    .unwrap();
    let out = flamenco(dir.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("download_task_sleep_seconds"), "{stderr}");

    let out = flamenco(dir.path())
        .args(["config", "check", "--config", "missing.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}

#[test]
fn serve_refuses_a_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    write_config(dir.path(), &format!("127.0.0.1:{port}"));
    let out = flamenco(dir.path()).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

/// Wait until the child logs `needle` on stderr; returns everything read so far.
fn wait_for_log(child: &mut Child, needle: &str, timeout: Duration) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                // keep draining in the background so the child never blocks on stderr
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return seen;
            }
        }
    }
    panic!("{needle:?} not logged within {timeout:?}; log so far:\n{seen}");
}

#[tokio::test]
async fn serve_runs_on_zero_config_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    write_config(dir.path(), &format!("127.0.0.1:{port}"));
    let mut child = flamenco(dir.path())
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = wait_for_log(&mut child, "listening on", Duration::from_secs(30));
    assert!(log.contains("configuration loaded from"), "{log}");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://127.0.0.1:{port}/register-worker"))
        .json(&serde_json::json!({"secret": "abc", "platform": "linux", "supported_task_types": ["sleep"], "nickname": "n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    assert!(dir.path().join("data/flamenco.sqlite").exists());

    // The store was closed cleanly: the CLI sees the registered worker.
    let out = flamenco(dir.path())
        .args(["worker", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    let w: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(w["nickname"], "n");
}

#[tokio::test]
async fn queue_and_worker_commands_read_the_daemons_store() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:0");
    // Enqueue through the SDK, as an example program would.
    let (mut config, _) = Config::load(Some(&dir.path().join("flamenco-manager.yaml"))).unwrap();
    config.data_dir = dir.path().join("data");
    let manager = Manager::open(config).await.unwrap();
    let tasks: Vec<Task> = (0..3)
        .map(|i| {
            Task::new(
                format!("cli-task-{i}"),
                "sleep",
                vec![TaskCommand::new(
                    "sleep",
                    serde_json::json!({"time_in_seconds": 1}),
                )],
            )
        })
        .collect();
    let ids = manager.enqueue_tasks(tasks).await.unwrap();
    manager.close().await.unwrap();

    let out = flamenco(dir.path())
        .args(["queue", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for id in &ids {
        assert!(stdout.contains(&id.to_hex()), "{stdout}");
    }
    assert!(stdout.contains("cli-task-2"));

    let out = flamenco(dir.path())
        .args(["queue", "list", "--json", "--status", "completed"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());

    let out = flamenco(dir.path())
        .args(["queue", "list", "--status", "cancelled"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"));

    let out = flamenco(dir.path())
        .args(["worker", "sleep", "not-an-id"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = flamenco(dir.path())
        .args(["worker", "sleep", "aaaaaaaaaaaaaaaaaaaaaaaa"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown"));
}

/// Seed a store in `dir/data` with `n` sleep tasks through the SDK; returns their ids.
async fn seed(dir: &Path, n: usize, extra_yaml: &str) -> Vec<flamenco_core::model::ObjectId> {
    let path = dir.join("flamenco-manager.yaml");
    std::fs::write(
        &path,
        format!("listen: '127.0.0.1:0'\ndata_dir: ./data\n{extra_yaml}"),
    )
    .unwrap();
    let (mut config, _) = Config::load(Some(&path)).unwrap();
    config.data_dir = dir.join("data");
    let manager = Manager::open(config).await.unwrap();
    let tasks: Vec<Task> = (0..n)
        .map(|i| {
            let mut t = Task::new(
                format!("seed-{i}"),
                if i % 2 == 0 {
                    "sleep"
                } else {
                    "blender-render"
                },
                vec![TaskCommand::new(
                    "blender_render",
                    serde_json::json!({"blender_cmd": "{blender}", "nested": ["{blender}"]}),
                )],
            );
            t.priority = i as i32;
            t
        })
        .collect();
    let ids = manager.enqueue_tasks(tasks).await.unwrap();
    manager.close().await.unwrap();
    ids
}

fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = flamenco(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "flamenco {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn queue_show_substitutes_for_a_platform_and_list_sorts_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let ids = seed(
        dir.path(),
        6,
        "variables:\n  blender:\n    linux: /opt/blender\n    windows: c:/blender.exe\n",
    )
    .await;
    let out = run_ok(
        dir.path(),
        &["queue", "show", &ids[0].to_hex(), "--platform", "windows"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["commands"][0]["settings"]["blender_cmd"],
        "c:/blender.exe"
    );
    assert_eq!(v["commands"][0]["settings"]["nested"][0], "c:/blender.exe");
    let out = run_ok(dir.path(), &["queue", "show", &ids[0].to_hex()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["commands"][0]["settings"]["blender_cmd"], "{blender}");

    let out = run_ok(
        dir.path(),
        &[
            "queue", "list", "--json", "--sort", "priority", "--type", "sleep",
        ],
    );
    let names: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, vec!["seed-4", "seed-2", "seed-0"]);
    let out = run_ok(
        dir.path(),
        &["queue", "list", "--json", "--limit", "2", "--offset", "1"],
    );
    assert_eq!(out.lines().count(), 2);
    assert!(out.contains("seed-1") && out.contains("seed-2"));

    let out = flamenco(dir.path())
        .args(["queue", "show", "aaaaaaaaaaaaaaaaaaaaaaaa"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown"));
    let out = flamenco(dir.path())
        .args(["queue", "list", "--job", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--job"));
}

#[tokio::test]
async fn cleanslate_and_purge_updates_need_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), 5, "").await;
    // Not a terminal and no --yes: refused, nothing deleted.
    let out = flamenco(dir.path())
        .arg("cleanslate")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cached tasks: 5"));
    assert_eq!(
        run_ok(dir.path(), &["queue", "list", "--json"])
            .lines()
            .count(),
        5
    );

    let out = run_ok(dir.path(), &["cleanslate", "--yes"]);
    assert!(out.contains("erased 5 tasks"), "{out}");
    assert_eq!(
        run_ok(dir.path(), &["queue", "list", "--json"])
            .lines()
            .count(),
        0
    );
    let out = run_ok(dir.path(), &["cleanslate", "--yes"]);
    assert!(out.contains("nothing to erase"), "{out}");

    let out = run_ok(dir.path(), &["purge-updates", "--yes"]);
    assert!(out.contains("empty"), "{out}");
}

#[test]
fn config_check_lists_file_problems_and_connect_opens_the_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        "tlscert: missing-cert.pem\ntlskey: missing-key.pem\nmanager_secret: hush\n",
    )
    .unwrap();
    let out = flamenco(dir.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tlscert: cannot read missing-cert.pem"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tlskey: cannot read missing-key.pem"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("hush"), "secrets are masked: {stdout}");

    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        "data_dir: ./store\n",
    )
    .unwrap();
    let out = run_ok(dir.path(), &["config", "check", "--connect"]);
    assert!(out.contains("store reachable: sqlite:"), "{out}");
    assert!(dir.path().join("store/flamenco.sqlite").exists());

    let port = support::free_port();
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        format!(
            "data_dir: ./store\nflamenco: http://127.0.0.1:{port}/\nmanager_id: 5852bc5198377351f95d103e\nmanager_secret: s3cr3t\n"
        ),
    )
    .unwrap();
    let out = flamenco(dir.path())
        .args(["config", "check", "--connect"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Flamenco Server"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t"));

    std::fs::write(dir.path().join("blocker"), "a file").unwrap();
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        "data_dir: ./blocker\n",
    )
    .unwrap();
    let out = flamenco(dir.path())
        .args(["config", "check", "--connect"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is a file"), "{stderr}");
    assert!(stderr.contains("cannot open the store"), "{stderr}");
}

#[test]
fn help_documents_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(dir.path(), &["help"]);
    assert!(out.contains("Exit status"), "{out}");
    assert!(
        out.contains("cleanslate") && out.contains("purge-updates"),
        "{out}"
    );
}
