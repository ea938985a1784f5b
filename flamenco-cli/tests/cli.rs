//! The `flamenco` binary run as a process: exit codes, messages, `serve` lifecycle, and
//! the operator commands against a temporary embedded store.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flamenco_core::config::Config;
use flamenco_core::model::{Command as TaskCommand, Task};
use flamenco_core::Manager;
use support::{flamenco, run, run_err, run_ok, sigterm_and_wait, wait_for_log, write_config};

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = flamenco(dir.path()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = run(dir.path(), &["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_check_with_defaults_and_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_ok(dir.path(), &["config", "check"]);
    assert!(stdout.contains("defaults apply"), "{stdout}");
    assert!(stdout.contains("8083"), "{stdout}");

    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        "listen: ':8083'\ndownload_task_sleep_seconds: 60s\n",
    )
    .unwrap();
    let stderr = run_err(dir.path(), &["config", "check"]);
    assert!(stderr.contains("download_task_sleep_seconds"), "{stderr}");

    assert!(
        run_err(dir.path(), &["config", "check", "--config", "missing.yaml"])
            .contains("missing.yaml")
    );
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
    // The error is said once: one line, the OS's reason once.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
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

    let exit = sigterm_and_wait(&mut child, Duration::from_secs(20));
    assert!(exit.success(), "exit status {exit:?}");
    assert!(dir.path().join("data/flamenco.sqlite").exists());

    // The store was closed cleanly: the CLI sees the registered worker.
    let out = run(dir.path(), &["worker", "list", "--json"]);
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

    let stdout = run_ok(dir.path(), &["queue", "list"]);
    for id in &ids {
        // Tables show short ids: the last 8 characters.
        let hex = id.to_hex();
        assert!(stdout.contains(&hex[16..]), "{stdout}");
        assert!(!stdout.contains(&hex), "{stdout}");
    }
    assert!(stdout.contains("cli-task-2"));
    // A short id is accepted back.
    let shown = run_ok(dir.path(), &["queue", "show", &ids[1].to_hex()[16..]]);
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["_id"], ids[1].to_hex());

    let out = run(
        dir.path(),
        &["queue", "list", "--json", "--status", "completed"],
    );
    assert!(out.status.success());
    assert!(out.stdout.is_empty());

    assert!(run_err(dir.path(), &["queue", "list", "--status", "cancelled"]).contains("cancelled"));

    let out = run(dir.path(), &["worker", "sleep", "not-an-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        run_err(dir.path(), &["worker", "sleep", "aaaaaaaaaaaaaaaaaaaaaaaa"]).contains("unknown")
    );
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

    assert!(
        run_err(dir.path(), &["queue", "show", "aaaaaaaaaaaaaaaaaaaaaaaa"]).contains("unknown")
    );
    assert!(run_err(dir.path(), &["queue", "list", "--job", "nope"]).contains("--job"));
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
    let out = run(dir.path(), &["config", "check"]);
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
    // No store yet: said, and nothing is created (only `serve` creates one).
    let out = run_ok(dir.path(), &["config", "check", "--connect"]);
    assert!(out.contains("no store yet"), "{out}");
    assert!(out.contains("store/flamenco.sqlite"), "{out}");
    assert!(!dir.path().join("store").exists());
    support::create_store(dir.path());
    let out = run_ok(dir.path(), &["config", "check", "--connect"]);
    assert!(out.contains("store reachable: sqlite:"), "{out}");

    let port = support::free_port();
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        format!(
            "data_dir: ./store\nflamenco: http://127.0.0.1:{port}/\nmanager_id: 5852bc5198377351f95d103e\nmanager_secret: s3cr3t\n"
        ),
    )
    .unwrap();
    let out = run(dir.path(), &["config", "check", "--connect"]);
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
    let stderr = run_err(dir.path(), &["config", "check", "--connect"]);
    assert!(stderr.contains("is a file"), "{stderr}");
}

#[test]
fn help_documents_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(dir.path(), &["help"]);
    assert!(out.contains("Exit status"), "{out}");
    // Every command is listed, and the summary line above them names them all.
    let commands: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for c in [
        "serve",
        "job",
        "queue",
        "worker",
        "config",
        "cleanslate",
        "purge-updates",
        "push",
    ] {
        assert!(
            commands.contains(&c),
            "{c} missing from {commands:?}:\n{out}"
        );
    }
    let summary = out.lines().next().unwrap_or("");
    assert!(
        !summary.contains("serve, queue, worker, config"),
        "the summary must not name only some commands: {summary}"
    );
    assert!(
        out.contains("FLAMENCO_CONFIG") && out.contains("NO_COLOR"),
        "{out}"
    );
}

// ---- the store the commands work on (issue: the CLI never silently works on the wrong store)

#[test]
fn commands_other_than_serve_refuse_to_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["queue", "list"][..],
        &[
            "job",
            "submit",
            "sleep",
            "--set",
            "frames=1",
            "--set",
            "time_in_seconds=1",
        ],
        &["worker", "list"],
        &["cleanslate", "--yes"],
    ] {
        let err = run_err(dir.path(), args);
        assert!(err.contains("no Manager store found"), "{args:?}: {err}");
        assert!(
            err.contains("flamenco-data/flamenco.sqlite"),
            "names where it looked: {err}"
        );
        assert!(err.contains("no flamenco-manager.yaml in"), "{err}");
        assert!(
            err.contains("-c PATH") && err.contains("FLAMENCO_CONFIG"),
            "says how to point it elsewhere: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one error line: {err}");
    }
    assert!(
        !dir.path().join("flamenco-data").exists(),
        "nothing was created"
    );
    // With a configuration file, the message names the file and its data_dir.
    let path = write_config(dir.path(), "127.0.0.1:0");
    let err = run_err(dir.path(), &["queue", "list"]);
    // Absolute paths: the user may not know which directory the command ran in.
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains(
            &dir.path()
                .join("data/flamenco.sqlite")
                .display()
                .to_string()
        ),
        "{err}"
    );
    assert!(err.contains("data/flamenco.sqlite"), "{err}");
    assert!(!dir.path().join("data").exists());
}

#[test]
fn data_dir_is_relative_to_the_config_file_and_flamenco_config_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let manager_dir = dir.path().join("manager");
    std::fs::create_dir(&manager_dir).unwrap();
    support::new_store(&manager_dir, "127.0.0.1:0");
    assert!(manager_dir.join("data/flamenco.sqlite").is_file());
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();

    // -c from another directory: the store beside the file is used.
    let out = run_ok(
        &elsewhere,
        &[
            "-c",
            "../manager/flamenco-manager.yaml",
            "job",
            "submit",
            "sleep",
            "--set",
            "frames=1-4",
            "--set",
            "time_in_seconds=1",
        ],
    );
    assert!(out.starts_with("submitted job"), "{out}");
    assert!(
        !elsewhere.join("data").exists(),
        "no store beside the caller"
    );
    let shown = run_ok(
        &elsewhere,
        &["-c", "../manager/flamenco-manager.yaml", "config", "check"],
    );
    assert!(
        shown.contains("data_dir: ../manager/data"),
        "data_dir resolved against the file: {shown}"
    );

    // FLAMENCO_CONFIG does the same.
    let out = flamenco(&elsewhere)
        .env("FLAMENCO_CONFIG", manager_dir.join("flamenco-manager.yaml"))
        .args(["--json", "job", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    // -c wins over FLAMENCO_CONFIG.
    let out = flamenco(&elsewhere)
        .env("FLAMENCO_CONFIG", "/nonexistent/flamenco-manager.yaml")
        .args(["-c", "../manager/flamenco-manager.yaml", "job", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = flamenco(&elsewhere)
        .env("FLAMENCO_CONFIG", "/nonexistent/flamenco-manager.yaml")
        .args(["job", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/flamenco-manager.yaml"));
}

// ---- conventions (docs/cli.md)

/// Seed `n` tasks with long names and activities in a new store in `dir`.
async fn seed_long(dir: &Path, n: usize) -> Vec<flamenco_core::model::ObjectId> {
    write_config(dir, "127.0.0.1:0");
    let (config, _) = Config::load(Some(&dir.join("flamenco-manager.yaml"))).unwrap();
    let manager = Manager::open(config).await.unwrap();
    let tasks: Vec<Task> = (0..n)
        .map(|i| {
            let mut t = Task::new(
                format!("a-rather-long-task-name-for-shot-{i:04}-that-goes-on-and-on"),
                "blender-render",
                vec![TaskCommand::new(
                    "sleep",
                    serde_json::json!({"time_in_seconds": 1}),
                )],
            );
            t.activity =
                "Rendering frame 1234 of shot 010 with a very long activity text that never ends"
                    .into();
            t
        })
        .collect();
    let ids = manager.enqueue_tasks(tasks).await.unwrap();
    manager.close().await.unwrap();
    ids
}

#[tokio::test]
async fn a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // Far more than a pipe buffer holds, so a write must fail once the reader is gone.
    seed_long(dir.path(), 1000).await;
    for args in [&["queue", "list", "--json"][..], &["queue", "list"]] {
        let mut child = flamenco(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `| head -1`: read one line, then close the pipe.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(!first.is_empty());
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("Broken pipe"), "{stderr}");
    }
}

#[tokio::test]
async fn tables_fit_80_columns() {
    let dir = tempfile::tempdir().unwrap();
    let ids = seed_long(dir.path(), 3).await;
    let out = flamenco(dir.path())
        .env("COLUMNS", "80")
        .args(["queue", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for line in table.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}\n{table}",
            line.chars().count()
        );
    }
    // Each id fits on its row unbroken (short ids), and long cells are cut.
    for id in &ids {
        assert!(table.contains(&id.to_hex()[16..]), "{table}");
    }
    assert!(table.contains('…'), "long cells are cut: {table}");
    // The same for the other tables.
    for args in [&["worker", "list"][..], &["job", "list"], &["job", "types"]] {
        let out = flamenco(dir.path())
            .env("COLUMNS", "80")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            assert!(line.chars().count() <= 80, "{args:?}: {line}");
        }
    }
}

#[test]
fn logs_stay_out_of_command_output_and_carry_no_colour_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    support::new_store(dir.path(), "127.0.0.1:0");
    let submit = [
        "job",
        "submit",
        "sleep",
        "--set",
        "frames=1-4",
        "--set",
        "time_in_seconds=1",
    ];
    let out = run(dir.path(), &submit);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "no log lines by default: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    // -v asks for them; on a pipe they carry no colour codes.
    let mut args = vec!["-v"];
    args.extend(submit);
    let out = run(dir.path(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" INFO "), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI codes off a terminal: {stderr:?}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    // --log-format json: JSON lines on stderr.
    let mut args = vec!["-v", "--log-format", "json"];
    args.extend(submit);
    let out = run(dir.path(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(first).expect("a JSON log line");
    assert_eq!(v["level"], "INFO");
}

/// On a terminal (a pseudo-terminal made by `script`), logs are coloured unless
/// `NO_COLOR` is set.
#[test]
fn no_color_is_honoured_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        let msg = "`script` (util-linux) is missing: cannot make a terminal for the NO_COLOR test";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    support::new_store(dir.path(), "127.0.0.1:0");
    let bin = env!("CARGO_BIN_EXE_flamenco");
    let run_on_tty = |no_color: bool| -> String {
        let mut cmd = Command::new("script");
        cmd.current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env_remove("FLAMENCO_CONFIG")
            .args([
                "-qec",
                &format!("{bin} -v job submit sleep --set frames=1 --set time_in_seconds=1"),
                "/dev/null",
            ]);
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = run_on_tty(false);
    assert!(coloured.contains("INFO"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "colour on a terminal: {coloured:?}"
    );
    let plain = run_on_tty(true);
    assert!(plain.contains("INFO"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
}

/// `config check` refuses what `serve` refuses: the same validation.
#[test]
fn config_check_and_serve_refuse_the_same_settings() {
    for (yaml, needle) in [
        ("listen: '127.0.0.1:99999'\n", "port 99999 is out of range"),
        ("listen: garbage\n", "invalid listen address \"garbage\""),
        (
            "database_url: 'postgres://user:pw@db/flamenco'\n",
            "is not a MongoDB URL",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("flamenco-manager.yaml"),
            format!("data_dir: ./data\n{yaml}"),
        )
        .unwrap();
        let check = run_err(dir.path(), &["config", "check"]);
        assert!(check.contains(needle), "config check, {yaml}: {check}");
        let serve = run_err(dir.path(), &["serve"]);
        assert!(serve.contains(needle), "serve, {yaml}: {serve}");
        assert!(serve.contains("refusing to start"), "{serve}");
        assert!(!serve.contains("pw@"), "the password is not shown: {serve}");
        assert!(!dir.path().join("data").exists(), "serve created nothing");
    }
}
