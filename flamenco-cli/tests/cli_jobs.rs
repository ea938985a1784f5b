//! `flamenco job …` run as processes against a temporary embedded store, and a running
//! `flamenco serve` picking up a job submitted from the command line.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use support::{flamenco, new_store, run_err, run_ok, sigterm_and_wait, wait_for_log, write_config};

fn submit_sleep(dir: &Path) -> Value {
    let out = run_ok(
        dir,
        &[
            "job",
            "submit",
            "sleep",
            "--set",
            "frames=1-20",
            "--set",
            "chunk_size=5",
            "--set",
            "time_in_seconds=1",
            "--json",
        ],
    );
    let mut job: Value = serde_json::from_str(&out).expect("the job as JSON");
    // `warnings` is part of the submit answer only.
    assert_eq!(job["warnings"], json!([]));
    job.as_object_mut().unwrap().remove("warnings");
    job
}

#[test]
fn job_commands_against_a_temporary_store() {
    let dir = tempfile::tempdir().unwrap();
    new_store(dir.path(), "127.0.0.1:0");
    let job = submit_sleep(dir.path());
    let id = job["_id"].as_str().unwrap().to_string();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["name"], "sleep");
    assert_eq!(
        job["settings"],
        json!({"frames": "1-20", "chunk_size": 5, "time_in_seconds": 1}),
        "--set values are YAML scalars: numbers stay numbers"
    );
    assert_eq!(job["task_counts"], json!({"queued": 4}));

    // Human output of submit; list as a table and as JSON lines; show.
    let out = run_ok(
        dir.path(),
        &[
            "job",
            "submit",
            "exec-command",
            "--set",
            "cmd=[date, uptime]",
            "--name",
            "two",
            "--priority",
            "70",
        ],
    );
    assert!(out.starts_with("submitted job "), "{out}");
    assert!(
        out.contains("\"two\" (exec-command): 2 task(s), queued"),
        "{out}"
    );
    let table = run_ok(dir.path(), &["job", "list"]);
    assert!(table.contains(&id[16..]), "short ids: {table}");
    assert!(table.contains("0/4 completed, 4 queued"), "{table}");
    assert!(table.contains("exec-command"), "{table}");
    let lines = run_ok(dir.path(), &["job", "list", "--json", "--status", "queued"]);
    let jobs: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[1]["_id"], id.as_str(), "newest first");
    assert_eq!(jobs[0]["priority"], 70);
    let lines = run_ok(
        dir.path(),
        &["job", "list", "--json", "--limit", "1", "--offset", "1"],
    );
    assert_eq!(lines.lines().count(), 1);
    assert!(run_ok(
        dir.path(),
        &["job", "list", "--json", "--status", "completed"]
    )
    .is_empty());
    let shown: Value = serde_json::from_str(&run_ok(dir.path(), &["job", "show", &id])).unwrap();
    assert_eq!(shown, job);
    let tasks = run_ok(dir.path(), &["queue", "list", "--json", "--job", &id]);
    assert_eq!(tasks.lines().count(), 4);
    let types = run_ok(dir.path(), &["job", "types"]);
    for t in ["sleep", "exec-command", "blender-render"] {
        assert!(types.contains(t), "{types}");
    }

    // Cancel, re-queue, delete.
    let err = run_err(dir.path(), &["job", "delete", &id]);
    assert!(err.contains("cancel it first"), "{err}");
    let out = run_ok(dir.path(), &["job", "cancel", &id]);
    assert_eq!(out.trim(), format!("job {id} is canceled"));
    let err = run_err(dir.path(), &["job", "cancel", &id]);
    assert!(
        err.contains("only a queued or active job can be canceled"),
        "{err}"
    );
    let out = run_ok(dir.path(), &["job", "requeue", &id]);
    assert_eq!(
        out.trim(),
        format!("job {id} is queued (0/4 completed, 4 queued)")
    );
    run_ok(dir.path(), &["job", "cancel", &id]);
    let out = run_ok(dir.path(), &["job", "delete", &id]);
    assert_eq!(out.trim(), format!("deleted job {id} and its 4 task(s)"));
    let err = run_err(dir.path(), &["job", "show", &id]);
    assert!(err.contains("is unknown"), "{err}");
    assert!(run_ok(dir.path(), &["queue", "list", "--json", "--job", &id]).is_empty());
}

#[test]
fn job_submit_errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    new_store(dir.path(), "127.0.0.1:0");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "job",
                "submit",
                "sleep",
                "--set",
                "frames=1-x",
                "--set",
                "time_in_seconds=1",
            ],
            "setting `frames`: \"1-x\" is not a frame range",
        ),
        (
            &[
                "job",
                "submit",
                "sleep",
                "--set",
                "frames=9-1",
                "--set",
                "time_in_seconds=1",
            ],
            "empty range",
        ),
        (
            &["job", "submit", "sleep", "--set", "frames=1-3"],
            "setting `time_in_seconds`: required",
        ),
        (
            &[
                "job",
                "submit",
                "sleep",
                "--set",
                "frames=1",
                "--set",
                "time_in_seconds=1",
                "--set",
                "chunksize=2",
            ],
            "setting `chunksize`: unknown setting",
        ),
        (
            &["job", "submit", "render"],
            "unknown job type \"render\"; known job types: blender-render, exec-command, sleep",
        ),
        (&["job", "submit"], "no job type given"),
        (
            &["job", "submit", "sleep", "--set", "frames"],
            "expected KEY=VALUE",
        ),
        (
            &["job", "submit", "sleep", "--priority", "0"],
            "priority 0 is out of range",
        ),
        (&["job", "show", "nope"], "job id \"nope\" is not an id"),
        (&["job", "cancel", "0123456789abcdef01234567"], "is unknown"),
        (
            &["job", "list", "--status", "done"],
            "--status: unknown job status \"done\"",
        ),
        (
            &["job", "submit", "--file", "missing.yaml"],
            "cannot read the job file missing.yaml",
        ),
    ];
    for (args, text) in cases {
        let err = run_err(dir.path(), args);
        assert!(
            err.contains(text),
            "flamenco {args:?}: {err:?} lacks {text:?}"
        );
    }
    assert!(
        run_ok(dir.path(), &["job", "list", "--json"]).is_empty(),
        "nothing was stored"
    );
}

#[test]
fn job_submit_from_a_file_with_overrides() {
    let dir = tempfile::tempdir().unwrap();
    new_store(dir.path(), "127.0.0.1:0");
    std::fs::write(
        dir.path().join("job.yaml"),
        "name: shot 010\njob_type: blender-render\npriority: 40\nsettings:\n  filepath: /shared/shot.blend\n  render_output: /render/shot/frame-######\n  frames: 1-10\n  chunk_size: 5\n",
    )
    .unwrap();
    let out = run_ok(
        dir.path(),
        &[
            "job",
            "submit",
            "--file",
            "job.yaml",
            "--set",
            "chunk_size=10",
            "--priority",
            "60",
            "--json",
        ],
    );
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["name"], "shot 010");
    assert_eq!(job["job_type"], "blender-render");
    assert_eq!(job["priority"], 60);
    assert_eq!(job["settings"]["chunk_size"], 10);
    assert_eq!(
        job["task_counts"],
        json!({"queued": 2}),
        "one render task and move-to-final"
    );

    std::fs::write(
        dir.path().join("bad.yaml"),
        "job_type: sleep\ncolour: red\n",
    )
    .unwrap();
    let err = run_err(dir.path(), &["job", "submit", "--file", "bad.yaml"]);
    assert!(err.contains("unknown field `colour`"), "{err}");
}

/// The README's demo: `flamenco serve`, `flamenco job submit sleep …`, a worker runs the
/// tasks, the job ends `completed` without restarting anything.
#[tokio::test]
async fn a_running_daemon_runs_jobs_submitted_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    write_config(dir.path(), &format!("127.0.0.1:{port}"));
    let mut daemon = flamenco(dir.path())
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = wait_for_log(&mut daemon, "standalone mode", Duration::from_secs(30));
    assert!(log.contains("listening on"), "{log}");

    let job = submit_sleep(dir.path());
    let id = job["_id"].as_str().unwrap().to_string();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let resp = client
        .post(format!("{base}/register-worker"))
        .json(&json!({"secret": "s3cret", "platform": "linux",
                      "supported_task_types": ["sleep"], "nickname": "demo"}))
        .send()
        .await
        .unwrap();
    let worker: Value = resp.json().await.unwrap();
    let wid = worker["_id"].as_str().unwrap().to_string();
    let mut names = Vec::new();
    loop {
        let resp = client
            .post(format!("{base}/task"))
            .basic_auth(&wid, Some("s3cret"))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        if resp.status() == 204 {
            break;
        }
        assert_eq!(resp.status(), 200);
        let task: Value = resp.json().await.unwrap();
        names.push(task["name"].as_str().unwrap().to_string());
        let tid = task["_id"].as_str().unwrap();
        for status in ["active", "completed"] {
            let resp = client
                .post(format!("{base}/tasks/{tid}/update"))
                .basic_auth(&wid, Some("s3cret"))
                .json(&json!({"task_status": status}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 204);
        }
    }
    assert_eq!(
        names,
        ["sleep-1-5", "sleep-6-10", "sleep-11-15", "sleep-16-20"]
    );

    // The daemon's consumer follows the job; the job API answers a loopback client.
    let job = || async {
        let url = format!("{base}/api/jobs/{id}");
        let resp = client.get(url).send().await.expect("GET the job");
        resp.json::<Value>().await.expect("the job's JSON")
    };
    support::wait_until("the job completes", || async {
        job().await["status"] == "completed"
    })
    .await;
    assert_eq!(job().await["task_counts"], json!({"completed": 4}));

    let exit = sigterm_and_wait(&mut daemon, Duration::from_secs(20));
    assert!(exit.success(), "exit status {exit:?}");
    let shown: Value = serde_json::from_str(&run_ok(dir.path(), &["job", "show", &id])).unwrap();
    assert_eq!(shown["status"], "completed");
}

#[test]
fn job_submit_lists_every_missing_or_bad_setting_at_once() {
    let dir = tempfile::tempdir().unwrap();
    new_store(dir.path(), "127.0.0.1:0");
    let err = run_err(dir.path(), &["job", "submit", "sleep"]);
    assert!(err.contains("setting `frames`: required"), "{err}");
    assert!(err.contains("setting `time_in_seconds`: required"), "{err}");
    let err = run_err(
        dir.path(),
        &[
            "job",
            "submit",
            "blender-render",
            "--set",
            "chunk_size=0",
            "--set",
            "colour=red",
            "--priority",
            "0",
        ],
    );
    for needle in [
        "priority 0 is out of range",
        "setting `colour`: unknown setting",
        "setting `filepath`: required",
        "setting `render_output`: required",
        "setting `frames`: required",
        "setting `chunk_size`",
        "6 problems",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
    assert!(run_ok(dir.path(), &["--json", "job", "list"]).is_empty());
}

#[test]
fn json_means_output_format_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    new_store(dir.path(), "127.0.0.1:0");
    let job = submit_sleep(dir.path());
    let id = job["_id"].as_str().unwrap().to_string();
    // Before or after the subcommand, --json is the output format.
    for args in [&["--json", "job", "list"][..], &["job", "list", "--json"]] {
        let out = run_ok(dir.path(), args);
        let v: Value = serde_json::from_str(out.lines().next().unwrap()).expect("JSON");
        assert_eq!(v["_id"], id.as_str(), "{args:?}");
    }
    let out = run_ok(dir.path(), &["--json", "job", "types"]);
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(first["name"].is_string() && first["description"].is_string());
    let out = run_ok(dir.path(), &["--json", "job", "cancel", &id[16..]]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "canceled");
    let out = run_ok(dir.path(), &["--json", "job", "delete", &id]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deleted_tasks"], 4);
    let out = run_ok(dir.path(), &["--json", "worker", "list"]);
    assert!(out.is_empty());
    let out = run_ok(dir.path(), &["queue", "outbox", "--json"]);
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(v["waiting"].is_number(), "{v}");
    // Logs are chosen with --log-format, never with --json.
    let out = flamenco(dir.path())
        .args(["-v", "--json", "job", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().all(|l| !l.starts_with('{')),
        "--json does not make logs JSON: {stderr}"
    );
}

#[test]
fn cleanslate_removes_the_jobs_whose_tasks_it_erased() {
    let dir = tempfile::tempdir().unwrap();
    new_store(dir.path(), "127.0.0.1:0");
    submit_sleep(dir.path());
    submit_sleep(dir.path());
    let out = run_ok(dir.path(), &["cleanslate", "--yes"]);
    assert!(out.contains("jobs: 2"), "{out}");
    assert!(out.contains("erased 8 tasks and 2 jobs"), "{out}");
    assert!(run_ok(dir.path(), &["--json", "job", "list"]).is_empty());
    assert!(run_ok(dir.path(), &["--json", "queue", "list"]).is_empty());
}

#[test]
fn a_variable_no_platform_defines_is_warned_about_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    new_store(dir.path(), "127.0.0.1:0");
    let submit = [
        "job",
        "submit",
        "blender-render",
        "--set",
        "filepath=/shared/shot.blend",
        "--set",
        "render_output=/render/shot/frame-######",
        "--set",
        "frames=1-4",
    ];
    let out = flamenco(dir.path()).args(submit).output().unwrap();
    assert!(out.status.success(), "the job is stored all the same");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("warning: "), "{stderr}");
    assert!(stderr.contains("{blender}"), "names the variable: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("submitted job"));
    let mut args = vec!["--json"];
    args.extend(submit);
    let job: Value = serde_json::from_str(&run_ok(dir.path(), &args)).unwrap();
    let warnings = job["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].as_str().unwrap().contains("{blender}"));

    // Defined (for any platform): no warning.
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        "data_dir: ./data\nvariables:\n  blender:\n    linux: /usr/bin/blender\n",
    )
    .unwrap();
    let out = flamenco(dir.path()).args(submit).output().unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
