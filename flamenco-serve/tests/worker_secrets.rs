//! Worker secrets over HTTP (docs/security.md, "Worker secrets"): the stored fast hash,
//! full-length verification past bcrypt's 72 bytes, upgrade on login of workers registered
//! by v2, and the limits on wrong secrets (429 with `Retry-After`). The restart storm and
//! the wrong-secret flood against the real daemon are in flamenco-cli/tests/secrets_at_scale.rs.

mod common;

use std::sync::Arc;

use common::{TestManager, TestWorker};
use flamenco_core::auth::{self, digest};
use flamenco_core::clock::SystemClock;
use flamenco_core::config::Config;
use flamenco_core::model::{worker_status, ObjectId, Worker};
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::store::Store;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Register over HTTP with this exact secret.
async fn register_with(tm: &TestManager, nickname: &str, secret: &str) -> TestWorker {
    let resp = tm
        .client
        .post(tm.url("/register-worker"))
        .header("User-Agent", "Flamenco-Worker/2.5")
        .json(&json!({"secret": secret, "platform": "linux",
                      "supported_task_types": ["sleep"], "nickname": nickname}))
        .send()
        .await
        .expect("register");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    TestWorker {
        id: ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id"),
        secret: secret.to_string(),
        base: tm.base.clone(),
        client: tm.client.clone(),
        software: "Flamenco-Worker/2.5".into(),
    }
}

/// The same worker presenting another secret.
fn with_secret(w: &TestWorker, secret: &str) -> TestWorker {
    TestWorker {
        secret: secret.to_string(),
        ..w.clone()
    }
}

/// `POST /task` on an empty queue: 204 when authenticated.
async fn poll(w: &TestWorker) -> reqwest::Response {
    w.post_empty("/task").await
}

/// A worker as a v2 Manager registered it: bcrypt only, no fast hash.
async fn insert_v2_worker(store: &Arc<dyn Store>, secret: &str) -> ObjectId {
    let id = ObjectId::new();
    let secret_owned = secret.to_string();
    let hashed_secret = tokio::task::spawn_blocking(move || auth::hash_secret(&secret_owned))
        .await
        .expect("join")
        .expect("bcrypt");
    store
        .insert_worker(&Worker {
            id,
            hashed_secret,
            secret_sha256: String::new(),
            nickname: "v2-worker".into(),
            address: "127.0.0.1".into(),
            status: worker_status::AWAKE.into(),
            platform: "linux".into(),
            time_cost: 0,
            supported_task_types: vec!["sleep".into()],
            software: "Flamenco-Worker/2.0.6".into(),
            current_task: None,
            last_activity: None,
            current_task_status: String::new(),
            current_task_updated: None,
            status_requested: None,
            tags: Vec::new(),
        })
        .await
        .expect("insert");
    id
}

fn v2_test_worker(tm: &TestManager, id: ObjectId, secret: &str) -> TestWorker {
    TestWorker {
        id,
        secret: secret.to_string(),
        base: tm.base.clone(),
        client: tm.client.clone(),
        software: "Flamenco-Worker/2.0.6".into(),
    }
}

#[tokio::test]
async fn registration_stores_bcrypt_and_a_fast_hash_for_long_secrets() {
    let tm = TestManager::start().await;
    let long = "L".repeat(64);
    let w = register_with(&tm, "long", &long).await;
    let stored = tm.worker(w.id).await;
    assert!(stored.hashed_secret.starts_with("$2a$10$"), "bcrypt stays");
    assert_eq!(
        digest::check(&stored.secret_sha256, &long, &stored.hashed_secret),
        digest::Check::Match
    );
    assert!(!stored.secret_sha256.contains(&long));
    assert_eq!(poll(&w).await.status(), StatusCode::NO_CONTENT);

    // A short secret (maybe a human's choice) gets bcrypt only.
    let short = register_with(&tm, "short", "short-secret").await;
    assert_eq!(tm.worker(short.id).await.secret_sha256, "");
    assert_eq!(poll(&short).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        poll(&with_secret(&short, "short-secreT")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    tm.stop().await;
}

/// bcrypt looks at 72 bytes only: a wrong secret with the same first 72 bytes passed v2's
/// check (and was then cached here). The fast hash covers the whole secret.
#[tokio::test]
async fn a_wrong_secret_sharing_the_first_72_bytes_is_refused() {
    let tm = TestManager::start().await;
    let real = format!("{}{}", "p".repeat(72), "-the-real-tail");
    let forged = format!("{}{}", "p".repeat(72), "-a-forged-tail");
    let w = register_with(&tm, "long-secret", &real).await;
    // Before the real worker was ever verified in this process …
    assert_eq!(
        poll(&with_secret(&w, &forged)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        poll(&with_secret(&w, &real[..72])).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(poll(&w).await.status(), StatusCode::NO_CONTENT);
    // … and after.
    assert_eq!(
        poll(&with_secret(&w, &forged)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(poll(&w).await.status(), StatusCode::NO_CONTENT);
    tm.stop().await;
}

/// A worker a v2 Manager registered has bcrypt only: its first login here runs bcrypt and
/// stores the fast hash, and from then on its whole secret is checked without bcrypt, in
/// this process and the next (a new Manager over the same store).
#[tokio::test]
async fn a_v2_worker_is_upgraded_on_its_first_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let real = format!("{}{}", "v".repeat(72), "-v2-real-tail");
    let forged = format!("{}{}", "v".repeat(72), "-v2-forged!!!");
    let id = insert_v2_worker(&store, &real).await;

    let tm = TestManager::start_with_store(Config::default(), store.clone()).await;
    let w = v2_test_worker(&tm, id, &real);
    assert_eq!(poll(&w).await.status(), StatusCode::NO_CONTENT);
    let stored = tm.worker(id).await;
    assert!(stored.hashed_secret.starts_with("$2a$10$"), "bcrypt stays");
    assert_eq!(
        digest::check(&stored.secret_sha256, &real, &stored.hashed_secret),
        digest::Check::Match,
        "the fast hash was stored at the first login"
    );
    // bcrypt alone would accept the forged secret (same first 72 bytes).
    assert!(bcrypt_accepts(&forged, &stored.hashed_secret).await);
    assert_eq!(
        poll(&with_secret(&w, &forged)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    tm.stop().await;

    // A restarted Manager: nothing in memory, the stored fast hash decides.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let tm = TestManager::start_with_store(Config::default(), store).await;
    let w = v2_test_worker(&tm, id, &real);
    assert_eq!(
        poll(&with_secret(&w, &forged)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(poll(&w).await.status(), StatusCode::NO_CONTENT);
    tm.stop().await;
}

async fn bcrypt_accepts(secret: &str, hash: &str) -> bool {
    let (secret, hash) = (secret.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || {
        auth::SecretCache::new().check(ObjectId::new(), &secret, &hash)
    })
    .await
    .expect("join")
}

/// Short secrets stay bcrypt-only: a v2 worker with one is not given a fast hash.
#[tokio::test]
async fn a_short_v2_secret_is_not_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let id = insert_v2_worker(&store, "v2-short").await;
    let tm = TestManager::start_with_store(Config::default(), store).await;
    let w = v2_test_worker(&tm, id, "v2-short");
    assert_eq!(poll(&w).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(tm.worker(id).await.secret_sha256, "");
    tm.stop().await;
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {:?}", resp.headers()))
}

/// Wrong secrets for one worker: 401 up to the per-worker allowance, then 429 with
/// `Retry-After`. The worker's own right secret is still accepted (it costs no bcrypt), so a
/// flood cannot lock a worker out.
#[tokio::test]
async fn wrong_secrets_for_one_worker_get_429_and_do_not_lock_it_out() {
    let tm = TestManager::start().await;
    let w = tm.register("victim", "linux", &["sleep"]).await;
    let burst = tm.manager.auth_guard().limits().per_worker_burst;
    let wrong = with_secret(&w, "not-the-secret");
    for i in 0..burst {
        assert_eq!(
            poll(&wrong).await.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {i}"
        );
    }
    let resp = poll(&wrong).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&resp) >= 1);
    let body: Value = resp.json().await.expect("json body");
    let message = body["error"].as_str().expect("error");
    assert!(message.contains(&w.id.to_hex()), "{message}");
    assert!(message.contains("retry in"), "{message}");

    assert_eq!(poll(&w).await.status(), StatusCode::NO_CONTENT);
    // Another worker is not affected.
    let other = tm.register("other", "linux", &["sleep"]).await;
    assert_eq!(
        poll(&with_secret(&other, "nope")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    tm.stop().await;
}

/// Unknown worker ids and malformed ids from one address: counted for the address, 429
/// past its allowance, naming the address.
#[tokio::test]
async fn unknown_ids_from_one_address_get_429() {
    let tm = TestManager::start().await;
    let burst = tm.manager.auth_guard().limits().per_client_burst;
    let probe = |id: String| {
        let client = tm.client.clone();
        let url = tm.url("/task");
        async move {
            client
                .post(url)
                .basic_auth(id, Some("guess"))
                .header("Content-Length", "0")
                .send()
                .await
                .expect("answer")
        }
    };
    let per_minute = tm.manager.auth_guard().limits().per_client_per_minute;
    let start = std::time::Instant::now();
    let mut sent = 0u32;
    let resp = loop {
        let id = if sent.is_multiple_of(2) {
            ObjectId::new().to_hex()
        } else {
            format!("not-an-id-{sent}")
        };
        let resp = probe(id).await;
        sent += 1;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            break resp;
        }
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "probe {sent}");
        // The allowance refills at `per_client_per_minute`; on a slow machine the probes
        // take long enough to earn a few more.
        let earned = start.elapsed().as_secs_f64() * f64::from(per_minute) / 60.0;
        assert!(
            f64::from(sent) <= f64::from(burst) + earned + 1.0,
            "{sent} wrong logins from one address were answered 401, none 429"
        );
    };
    assert!(
        sent > burst,
        "429 after {sent} probes, before the burst of {burst}"
    );
    assert!(retry_after(&resp) >= 1);
    let body: Value = resp.json().await.expect("json body");
    assert!(
        body["error"].as_str().expect("error").contains("127.0.0.1"),
        "{body}"
    );
    tm.stop().await;
}

/// The same rules through the SDK, with no address (embedding programs).
#[tokio::test]
async fn sdk_authentication_uses_the_fast_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("store");
    let manager = flamenco_core::Manager::with_store(
        Config::default(),
        Arc::new(store),
        Arc::new(SystemClock),
    );
    let secret = "s".repeat(80);
    let peer = flamenco_core::Peer::default();
    let req: flamenco_core::protocol::RegisterWorker = serde_json::from_value(json!({
        "secret": secret, "platform": "linux", "supported_task_types": ["sleep"], "nickname": "sdk"
    }))
    .expect("request");
    let w = manager
        .register_worker(req, &peer, None)
        .await
        .expect("register");
    let id = w.id.to_hex();
    assert!(manager.authenticate(&id, &secret).await.is_ok());
    let forged = format!("{}{}", "s".repeat(72), "x".repeat(8));
    assert!(matches!(
        manager.authenticate(&id, &forged).await,
        Err(flamenco_core::ApiError::Unauthorized)
    ));
    manager.close().await.expect("close");
}
