//! Helpers shared by the CLI's black-box tests (each test file includes this module).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Read a spawned `flamenco serve`'s stderr (piped) until it logs "listening on", panicking
/// with the log so far after `wait`; the rest of the log is drained in the background so
/// the child never blocks on a full pipe.
pub async fn wait_until_listening(child: &mut Child, wait: Duration) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(line)) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("listening on") {
                    break;
                }
            }
            _ => panic!("flamenco serve did not start; log:\n{seen}"),
        }
    }
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
}

/// `flamenco` run in `dir`, with no `RUST_LOG`, `FLAMENCO_CONFIG` or `NO_COLOR` from the
/// test's environment.
pub fn flamenco(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flamenco"));
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("FLAMENCO_CONFIG")
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS");
    cmd
}

/// `dir/flamenco-manager.yaml` listening on `listen`, with the store in `dir/data`.
pub fn write_config(dir: &std::path::Path, listen: &str) -> std::path::PathBuf {
    let path = dir.join("flamenco-manager.yaml");
    std::fs::write(
        &path,
        format!("listen: '{listen}'\ndata_dir: ./data\nactive_task_timeout_interval: 2m\n"),
    )
    .expect("write the config");
    path
}

/// Create the store the config in `dir` names (as `flamenco serve` would at its first
/// start), so that the other commands find it.
pub fn create_store(dir: &std::path::Path) {
    let path = dir.join("flamenco-manager.yaml");
    // On its own thread: callers may be inside a runtime already.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (config, _) = flamenco_core::config::Config::load(Some(&path)).expect("config");
            let manager = flamenco_core::Manager::open(config).await.expect("open");
            manager.close().await.expect("close");
        });
    })
    .join()
    .expect("create the store");
}

/// `write_config` and `create_store`.
pub fn new_store(dir: &std::path::Path, listen: &str) -> std::path::PathBuf {
    let path = write_config(dir, listen);
    create_store(dir);
    path
}

pub fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    flamenco(dir).args(args).output().expect("run flamenco")
}

/// Run, expect success, return stdout.
pub fn run_ok(dir: &std::path::Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "flamenco {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run, expect exit status 1, return stderr.
pub fn run_err(dir: &std::path::Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "flamenco {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
