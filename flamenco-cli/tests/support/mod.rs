//! Helpers shared by the CLI's black-box tests (each test file includes this module).
#![allow(dead_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

// Not every test binary that includes this module waits.
#[allow(unused_imports)]
pub use flamenco_core::testing::wait_until;

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

/// [`flamenco`] as a tokio process: no stdin, killed when dropped.
pub fn flamenco_process(dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::from(flamenco(dir));
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Start `flamenco [-c config] serve` in `dir` (stdout discarded, stderr piped) and wait
/// up to `wait` until it listens.
pub async fn serve(dir: &Path, config: Option<&Path>, wait: Duration) -> Child {
    let mut cmd = flamenco_process(dir);
    if let Some(config) = config {
        cmd.arg("-c").arg(config);
    }
    let mut child = cmd
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flamenco serve");
    wait_until_listening(&mut child, wait).await;
    child
}

/// `kill -9` the child, and reap it.
pub async fn kill_9(child: &mut Child) {
    let pid = child.id().expect("pid").to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(status.success());
    child.wait().await.expect("wait");
}

/// SIGTERM the child; it must exit successfully within `wait`.
pub async fn terminate(mut child: Child, wait: Duration) {
    let pid = child.id().expect("pid").to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    let exit = tokio::time::timeout(wait, child.wait())
        .await
        .expect("serve stops after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
}

/// Wait up to `wait` until a (blocking) child exits; its status. After that, kill it and
/// panic with `what`.
pub fn wait_exit(child: &mut std::process::Child, wait: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(exit) = child.try_wait().expect("wait for the child") {
            return exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} (waited {wait:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Send SIGTERM to a (blocking) child; its exit status, within `wait`.
pub fn sigterm_and_wait(child: &mut std::process::Child, wait: Duration) -> ExitStatus {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    wait_exit(child, wait, "serve did not stop after SIGTERM")
}

/// Read a (blocking) child's piped stderr in the background until it logs `needle`;
/// everything read so far. The rest is drained so the child never blocks on the pipe.
pub fn wait_for_log(child: &mut std::process::Child, needle: &str, timeout: Duration) -> String {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
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
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return seen;
            }
        }
    }
    panic!("{needle:?} not logged within {timeout:?}; log so far:\n{seen}");
}

/// Open the store that the config in `dir` names, as a Manager in this process (no
/// daemon runs on it).
pub async fn open(dir: &Path) -> flamenco_core::Manager {
    let (mut config, _) =
        flamenco_core::config::Config::load(Some(&dir.join("flamenco-manager.yaml")))
            .expect("load the config");
    config.data_dir = dir.join("data");
    flamenco_core::Manager::open(config)
        .await
        .expect("open the store")
}

/// Register a worker through the SDK, as `POST /register-worker` with `software` as its
/// User-Agent would.
pub async fn register(
    manager: &flamenco_core::Manager,
    nickname: &str,
    software: &str,
) -> flamenco_core::model::Worker {
    let req: flamenco_core::protocol::RegisterWorker = serde_json::from_value(serde_json::json!({
        "secret": format!("secret-of-{nickname}"), "platform": "linux",
        "supported_task_types": ["sleep"], "nickname": nickname,
    }))
    .expect("a registration");
    let peer = flamenco_core::Peer {
        host: "10.0.0.5".into(),
        host_port: "10.0.0.5:4000".into(),
        user_agent: software.into(),
    };
    manager
        .register_worker(req, &peer, None)
        .await
        .expect("register the worker")
}
