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
