//! `flamenco worker sleep|wake|shutdown` and the dashboard API's worker actions follow one
//! rule (`Manager::request_worker_status`): a Flamenco Worker 2.0.x cannot be asked, so
//! both refuse with the same message and record nothing; a 2.1+ worker's request is
//! recorded by both.

mod support;

use std::sync::Arc;

use flamenco_core::model::RequestedStatus;
use support::{open, register, write_config};

/// Run `flamenco args…` in `dir`; its exit code and stderr.
fn run(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flamenco"))
        .current_dir(dir)
        .env_remove("FLAMENCO_CONFIG")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_api_refuse_a_2_0_worker_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:0");
    let manager = open(dir.path()).await;
    let old = register(&manager, "old", "Flamenco-Worker/2.0.6").await;
    let new = register(&manager, "new", "Flamenco-Worker/2.5").await;
    assert_eq!(old.software, "Flamenco-Worker/2.0.6");
    manager.close().await.unwrap();

    // The CLI: exit 1, the rule's message, nothing recorded.
    let mut messages = Vec::new();
    for (action, requested) in [
        ("sleep", RequestedStatus::Asleep),
        ("wake", RequestedStatus::Awake),
        ("shutdown", RequestedStatus::Shutdown),
    ] {
        let (code, stderr) = run(dir.path(), &["worker", action, &old.id.to_hex()]);
        assert_eq!(code, Some(1), "flamenco worker {action}: {stderr}");
        let want = old
            .status_request_refusal(requested)
            .expect("a 2.0.6 worker is refused");
        assert!(
            stderr.contains(&want),
            "flamenco worker {action}: {stderr:?} should say {want:?}"
        );
        messages.push((action, want));
    }
    let (code, stderr) = run(dir.path(), &["worker", "sleep", &new.id.to_hex()]);
    assert_eq!(code, Some(0), "{stderr}");

    // The API on the same store: 409 with the same message.
    let manager = Arc::new(open(dir.path()).await);
    assert_eq!(
        manager
            .get_worker(old.id)
            .await
            .unwrap()
            .unwrap()
            .status_requested,
        None
    );
    assert_eq!(
        manager
            .get_worker(new.id)
            .await
            .unwrap()
            .unwrap()
            .status_requested,
        Some(RequestedStatus::Asleep)
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(flamenco_serve::serve(manager.clone(), listener, async {
        let _ = stopped.await;
    }));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    for (action, want) in messages {
        let resp = client
            .post(format!("{base}/api/workers/{}/{action}", old.id))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 409, "POST {action}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], want.as_str(), "POST {action}");
    }
    let resp = client
        .post(format!("{base}/api/workers/{}/wake", new.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        manager
            .get_worker(old.id)
            .await
            .unwrap()
            .unwrap()
            .status_requested,
        None
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    manager.close().await.unwrap();
}
