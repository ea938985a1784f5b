//! The `flamenco` binary with a `database_url` pointing at a MongoDB that is not there:
//! `config check --connect` reports it, `serve` refuses to start, both with a message
//! that names the URL (password hidden) and says what to do, and neither panics.
//! Needs no database server.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Run the binary in `dir`, killing it if it runs longer than `limit`.
fn run(dir: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flamenco"))
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flamenco");
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("flamenco {args:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().expect("output"), started.elapsed())
}

#[test]
fn an_unreachable_database_url_is_reported_and_serve_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_port = free_port();
    let shown = format!("mongodb://flamenco:****@127.0.0.1:{db_port}/farm");
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        format!(
            "listen: '127.0.0.1:{}'\ndatabase_url: mongodb://flamenco:hunter2@127.0.0.1:{db_port}/farm\n",
            free_port()
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
