//! HTTPS: a self-signed certificate made in the test (rcgen), a Manager serving it, clients
//! that do and do not trust it, plain HTTP on the HTTPS port, the redirect listener, and
//! the start-up errors for missing, unreadable, mismatched and passphrase-protected files.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestWorker;
use flamenco_core::clock::SystemClock;
use flamenco_core::config::Config;
use flamenco_core::model::{Command, ObjectId, Task};
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::Manager;
use flamenco_serve::ServeOptions;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    cert_pem: String,
}

fn self_signed(dir: &Path, name: &str) -> CertFiles {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("generate a certificate");
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let cert_pem = ck.cert.pem();
    std::fs::write(&cert, &cert_pem).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    CertFiles {
        cert,
        key,
        cert_pem,
    }
}

fn tls_config(certs: &CertFiles, extra: &str) -> Config {
    let yaml = format!(
        "tlscert: '{}'\ntlskey: '{}'\n{extra}",
        certs.cert.display(),
        certs.key.display()
    );
    Config::from_yaml(&yaml, Path::new("tls-test.yaml")).expect("config")
}

fn trusting_client(certs: &CertFiles) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = reqwest::Certificate::from_pem(certs.cert_pem.as_bytes()).expect("pem");
    reqwest::Client::builder()
        .tls_certs_only([root])
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

struct TlsManager {
    manager: Arc<Manager>,
    addr: SocketAddr,
    redirect_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TlsManager {
    async fn start(mut config: Config, with_redirect: bool) -> TlsManager {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        config.data_dir = dir.path().to_path_buf();
        let mut options = ServeOptions::from_config(&config).expect("TLS files load");
        assert!(options.tls.is_some(), "TLS is on");
        let store = SqliteStore::open(dir.path()).expect("store");
        let manager = Arc::new(Manager::with_store(
            config,
            Arc::new(store),
            Arc::new(SystemClock),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut redirect_addr = None;
        if with_redirect {
            let r = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            redirect_addr = Some(r.local_addr().expect("addr"));
            options.redirect_listener = Some(r);
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(flamenco_serve::serve_with(
            manager.clone(),
            listener,
            options,
            async {
                let _ = rx.await;
            },
        ));
        TlsManager {
            manager,
            addr,
            redirect_addr,
            stop: Some(tx),
            server,
            _dir: dir,
        }
    }

    fn https(&self) -> String {
        format!("https://{}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.server.await.expect("join").expect("serve");
        self.manager.close().await.expect("close");
    }
}

async fn register(base: &str, client: &reqwest::Client, nickname: &str) -> TestWorker {
    let secret = format!("secret-of-{nickname}-{}", ObjectId::new());
    let resp = client
        .post(format!("{base}/register-worker"))
        .json(&json!({"secret": secret, "platform": "linux",
                      "supported_task_types": ["sleep"], "nickname": nickname}))
        .send()
        .await
        .expect("register over HTTPS");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    TestWorker {
        id: ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id"),
        secret,
        base: base.to_string(),
        client: client.clone(),
        software: "Flamenco-Worker/2.5".into(),
    }
}

#[tokio::test]
async fn https_serves_workers_to_a_client_that_trusts_the_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = self_signed(dir.path(), "server");
    let tm = TlsManager::start(tls_config(&certs, ""), false).await;
    let client = trusting_client(&certs);

    let worker = register(&tm.https(), &client, "tls-worker").await;
    assert_eq!(
        worker
            .sign_on(json!({"nickname": "tls-worker"}))
            .await
            .as_u16(),
        204
    );
    let task = Task::new(
        "over-tls",
        "sleep",
        vec![Command::new("sleep", json!({"time_in_seconds": 1}))],
    );
    let id = task.id;
    tm.manager.enqueue_tasks(vec![task]).await.expect("enqueue");
    let (status, body) = worker.task().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["_id"], id.to_hex());
    assert_eq!(body["status"], "active");

    // The admin check still sees the peer address through TLS: loopback is let in.
    let resp = client
        .get(format!("{}/api/jobs", tm.https()))
        .send()
        .await
        .expect("jobs API over HTTPS");
    assert_ne!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "loopback peer is known"
    );
    tm.stop().await;
}

#[tokio::test]
async fn untrusting_clients_and_plain_http_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = self_signed(dir.path(), "server");
    let other = self_signed(dir.path(), "other");
    let tm = TlsManager::start(tls_config(&certs, ""), false).await;

    // A client that trusts another certificate cannot connect.
    let err = trusting_client(&other)
        .post(format!("{}/register-worker", tm.https()))
        .json(&json!({"secret": "s", "platform": "linux", "supported_task_types": ["sleep"]}))
        .send()
        .await
        .expect_err("an untrusted certificate must fail the handshake");
    assert!(err.is_connect(), "{err:?}");

    // Plain HTTP to the HTTPS port: a 400 that says what is wrong, and nothing is served.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/register-worker", tm.addr))
        .json(&json!({"secret": "s", "platform": "linux", "supported_task_types": ["sleep"]}))
        .send()
        .await
        .expect("plain HTTP gets an answer");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text = resp.text().await.expect("body");
    assert!(text.contains("This port serves HTTPS"), "{text}");
    assert!(
        tm.manager.list_workers().await.expect("workers").is_empty(),
        "nothing was registered"
    );
    tm.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = self_signed(dir.path(), "server");
    let tm = TlsManager::start(tls_config(&certs, "request_read_timeout: 1s\n"), false).await;
    let mut raw = tokio::net::TcpStream::connect(tm.addr)
        .await
        .expect("connect");
    // The start of a TLS record, then silence.
    raw.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
        .await
        .expect("the server closes the connection within the timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, got {read:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(800), "{waited:?}");
    // Meanwhile and afterwards, a real client is served.
    let client = trusting_client(&certs);
    register(&tm.https(), &client, "after-stall").await;
    tm.stop().await;
}

#[tokio::test]
async fn the_redirect_listener_answers_308_with_the_https_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = self_signed(dir.path(), "server");
    let tm = TlsManager::start(
        tls_config(&certs, "tls_redirect_listen: '127.0.0.1:0'\n"),
        true,
    )
    .await;
    let redirect = tm.redirect_addr.expect("redirect listener");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = client
        .post(format!("http://{redirect}/may-i-run/abc?x=1&y=2"))
        .send()
        .await
        .expect("redirect answer");
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        resp.headers()["location"],
        format!("https://127.0.0.1:{}/may-i-run/abc?x=1&y=2", tm.addr.port()).as_str()
    );

    // Following it with a trusting client reaches the HTTPS port.
    let follow = trusting_client(&certs)
        .get(format!("http://{redirect}/status-change"))
        .send()
        .await
        .expect("followed");
    assert_eq!(follow.url().scheme(), "https");
    assert_eq!(
        follow.status(),
        StatusCode::UNAUTHORIZED,
        "reached the worker API"
    );

    // Without a Host header there is nowhere to redirect to.
    let mut raw = tokio::net::TcpStream::connect(redirect)
        .await
        .expect("connect");
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    tm.stop().await;
}

#[tokio::test]
async fn bad_tls_settings_are_clear_errors_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = self_signed(dir.path(), "server");
    let other = self_signed(dir.path(), "other");

    // One without the other: a configuration error naming both keys.
    let err = Config::from_yaml(
        &format!("tlscert: '{}'\n", certs.cert.display()),
        Path::new("x.yaml"),
    )
    .expect_err("cert without key");
    let msg = err.to_string();
    assert!(msg.contains("tlscert is set but tlskey is not"), "{msg}");

    // A key that belongs to another certificate.
    let mut mismatched = tls_config(&certs, "");
    mismatched.tlskey = other.key.display().to_string();
    let msg = ServeOptions::from_config(&mismatched)
        .err()
        .expect("mismatched key")
        .to_string();
    assert!(msg.contains("does not belong to the certificate"), "{msg}");
    assert!(msg.contains(&other.key.display().to_string()), "{msg}");
    assert!(msg.contains(&certs.cert.display().to_string()), "{msg}");

    // `serve` itself refuses to start with it, before serving anything.
    let _ = rustls::crypto::ring::default_provider().install_default();
    mismatched.data_dir = dir.path().join("data");
    std::fs::create_dir_all(&mismatched.data_dir).expect("data dir");
    let store = SqliteStore::open(&mismatched.data_dir).expect("store");
    let manager = Arc::new(Manager::with_store(
        mismatched,
        Arc::new(store),
        Arc::new(SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = flamenco_serve::serve(manager.clone(), listener, std::future::pending())
        .await
        .expect_err("serve refuses a mismatched key");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("tlskey"), "{err}");
    manager.close().await.expect("close");

    // A file that cannot be read.
    let mut missing = tls_config(&certs, "");
    missing.tlscert = dir.path().join("nope.pem").display().to_string();
    let msg = ServeOptions::from_config(&missing)
        .err()
        .expect("missing file")
        .to_string();
    assert!(msg.starts_with("tlscert: cannot read"), "{msg}");
    assert!(msg.contains("nope.pem"), "{msg}");

    // Files that are not what they should be: a key where the certificate goes, and the
    // other way round.
    let mut swapped = tls_config(&certs, "");
    swapped.tlscert = certs.key.display().to_string();
    let msg = ServeOptions::from_config(&swapped)
        .err()
        .expect("no certificate")
        .to_string();
    assert!(msg.contains("holds no PEM certificate"), "{msg}");
    let mut swapped = tls_config(&certs, "");
    swapped.tlskey = certs.cert.display().to_string();
    let msg = ServeOptions::from_config(&swapped)
        .err()
        .expect("no key")
        .to_string();
    assert!(msg.contains("holds no PEM private key"), "{msg}");

    // The redirect listener without TLS makes no sense.
    let err = Config::from_yaml("tls_redirect_listen: ':8080'\n", Path::new("x.yaml"))
        .expect_err("redirect without TLS");
    assert!(err.to_string().contains("tls_redirect_listen"), "{err}");
}

/// A throwaway P-256 key, encrypted with the passphrase `secret` by
/// `openssl pkcs8 -topk8 -v2 aes-256-cbc` (PKCS#8).
const ENCRYPTED_PKCS8_KEY: &str = "\
-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAixXm8Kw0C4sgICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEDfJpOgdN/CSfNiLYgReKz0EgZBU
UlcweBnV29i+PT1l7WOX7CN6hR6IzYD+C7bdvOaV1PIEggNkXSgIW7RFIlywweiF
rtNTfHK5db6kSjoK01/ExZ1KNdfOUAUhbMdaM+cxGBE9Y4GgeEiujh12ED6OOLaH
InDL5fMX4NyWEHTuVyeGXXwVhYnhHd1dVBEr2OZIcTAwGoZF74ZQQmJ1bnrVQOA=
-----END ENCRYPTED PRIVATE KEY-----
";

/// The same key in OpenSSL's traditional encrypted form (`openssl ec -aes256`).
const ENCRYPTED_TRADITIONAL_KEY: &str = "\
-----BEGIN EC PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-256-CBC,B19212CC106E2CB2DBB1DDA826195BEC

kVaRP63dPEkGQnNPpAF01wKmG6kAvn1IX7Zcq08DZZGGGkmpidS03LZTbCvdKcJO
HyipOPV+FnfQEyCRaT0Ef4IcH0KYc4N+BIZ+McMTFSwfa5x/Fma1or4zcLQhg2I5
Xaqxl9h/EsWBrflzZLqf9TXcOu0KtGQw7oWEYQ/GSQk=
-----END EC PRIVATE KEY-----
";

#[test]
fn an_encrypted_key_is_named_as_encrypted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = self_signed(dir.path(), "server");
    for (name, pem) in [
        ("pkcs8", ENCRYPTED_PKCS8_KEY),
        ("traditional", ENCRYPTED_TRADITIONAL_KEY),
    ] {
        let key = dir.path().join(format!("{name}-encrypted-key.pem"));
        std::fs::write(&key, pem).expect("write key");
        let mut config = tls_config(&certs, "");
        config.tlskey = key.display().to_string();
        let msg = ServeOptions::from_config(&config)
            .err()
            .expect("an encrypted key is refused")
            .to_string();
        assert!(msg.starts_with("tlskey:"), "{name}: {msg}");
        assert!(
            msg.contains("is encrypted (protected by a passphrase)"),
            "{name}: {msg}"
        );
        assert!(msg.contains(&key.display().to_string()), "{name}: {msg}");
        assert!(msg.contains("openssl pkey -in"), "{name}: {msg}");
        assert!(!msg.contains("no items found"), "{name}: {msg}");
    }
}
