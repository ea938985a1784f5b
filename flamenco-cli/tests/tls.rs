//! `flamenco serve` over HTTPS as a process: it serves with the configured certificate,
//! redirects plain HTTP when asked, logs (at `--debug`) no secret whatever requests come in,
//! and refuses to start, as `config check` refuses the file, with a key that does not
//! belong to the certificate.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "ADMIN-TOKEN-5f4dcc3b5aa765d61d8327de";
const WRONG_ADMIN_TOKEN: &str = "WRONG-ADMIN-TOKEN-e99a18c428cb38d5";
const REGISTRATION_SECRET: &str = "REGISTRATION-SECRET-d8578edf8458ce06";
const FAKE_REGISTRATION_TOKEN: &str = "FAKE-REGISTRATION-TOKEN-96e79218965eb72c";
const MANAGER_SECRET: &str = "MANAGER-SECRET-25d55ad283aa400af464c76d";
const WORKER_SECRET: &str = "WORKER-SECRET-fcea920f7412b5da7be0cf42";

fn flamenco(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flamenco"));
    cmd.current_dir(dir).env_remove("RUST_LOG");
    cmd
}

/// A self-signed certificate for 127.0.0.1: (cert path, key path, cert PEM).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("certificate");
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write");
    (cert, key, ck.cert.pem())
}

/// Collects the child's stderr in the background.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    log
}

fn wait_for(log: &Arc<Mutex<String>>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = log.lock().expect("log").clone();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged within {timeout:?}; log so far:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn serve_over_https_logs_no_secret_at_debug_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, cert_pem) = self_signed(dir.path(), "manager");
    let (port, redirect_port) = (support::free_port(), support::free_port());
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        format!(
            "listen: '127.0.0.1:{port}'\ndata_dir: ./data\ntlscert: '{}'\ntlskey: '{}'\n\
             tls_redirect_listen: '127.0.0.1:{redirect_port}'\nadmin_token: {ADMIN_TOKEN}\n\
             worker_registration_secret: {REGISTRATION_SECRET}\nmanager_secret: {MANAGER_SECRET}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let mut child = flamenco(dir.path())
        .args(["--debug", "serve"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let log = collect_stderr(&mut child);
    let started = wait_for(&log, "listening on", Duration::from_secs(60));
    assert!(started.contains("(https)"), "{started}");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem");
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let base = format!("https://127.0.0.1:{port}");
    for (token, expected) in [(ADMIN_TOKEN, 200), (WRONG_ADMIN_TOKEN, 401)] {
        let resp = client
            .get(format!("{base}/api/jobs"))
            .bearer_auth(token)
            .send()
            .await
            .expect("jobs API");
        assert_eq!(resp.status().as_u16(), expected);
    }
    let resp = client
        .post(format!("{base}/register-worker"))
        .bearer_auth(FAKE_REGISTRATION_TOKEN)
        .json(
            &serde_json::json!({"secret": WORKER_SECRET, "platform": "linux",
                                  "supported_task_types": ["sleep"], "nickname": "n"}),
        )
        .send()
        .await
        .expect("register");
    assert_eq!(resp.status().as_u16(), 403);
    let resp = client
        .post(format!("{base}/task"))
        .basic_auth("5852bc5198377351f95d103e", Some(WORKER_SECRET))
        .send()
        .await
        .expect("task");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client
        .get(format!("http://127.0.0.1:{redirect_port}/as-json"))
        .send()
        .await
        .expect("redirect listener");
    assert_eq!(resp.status().as_u16(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://127.0.0.1:{port}/as-json").as_str()
    );

    let exit = support::sigterm_and_wait(&mut child, Duration::from_secs(30));
    assert!(exit.success(), "exit status {exit:?}");
    let text = wait_for(&log, "shutdown complete", Duration::from_secs(10));
    assert!(
        text.contains("/register-worker"),
        "debug logs captured: {text}"
    );
    for secret in [
        ADMIN_TOKEN,
        WRONG_ADMIN_TOKEN,
        REGISTRATION_SECRET,
        FAKE_REGISTRATION_TOKEN,
        MANAGER_SECRET,
        WORKER_SECRET,
    ] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_serve_and_fails_config_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _, _) = self_signed(dir.path(), "manager");
    let (_, other_key, _) = self_signed(dir.path(), "other");
    std::fs::write(
        dir.path().join("flamenco-manager.yaml"),
        format!(
            "listen: '127.0.0.1:{}'\ndata_dir: ./data\ntlscert: '{}'\ntlskey: '{}'\n",
            support::free_port(),
            cert.display(),
            other_key.display()
        ),
    )
    .expect("config");

    let out = flamenco(dir.path())
        .args(["config", "check"])
        .output()
        .expect("config check");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
    assert!(stderr.contains("other-key.pem"), "{stderr}");

    let out = flamenco(dir.path()).arg("serve").output().expect("serve");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The same check as `config check`, reported before anything starts.
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data/flamenco.sqlite").exists(),
        "nothing was started"
    );
}
