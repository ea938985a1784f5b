//! Bad input gets a clear 4xx and changes nothing: malformed JSON, wrong types, huge
//! bodies, bad ids, bad auth, unknown statuses.

mod common;

use common::{oid, test_task, TestManager};
use flamenco_core::model::TaskStatus;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn bad_auth_is_401_with_challenge() {
    let tm = TestManager::start().await;
    let w = tm.register("w", "linux", &["sleeping"]).await;
    // no credentials
    let resp = tm.client.post(tm.url("/task")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"Flamenco Manager\""
    );
    // wrong secret, twice (the second must not be let in by a cache)
    for _ in 0..2 {
        let resp = tm
            .client
            .post(tm.url("/task"))
            .basic_auth(w.id.to_hex(), Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // right secret works, then wrong one still fails (cache keyed on the secret)
    assert_eq!(w.task().await.0, StatusCode::NO_CONTENT);
    let resp = tm
        .client
        .post(tm.url("/task"))
        .basic_auth(w.id.to_hex(), Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // unknown worker id, and not an id at all
    for user in ["aaaaaaaaaaaaaaaaaaaaaaaa", "not-an-id"] {
        let resp = tm
            .client
            .post(tm.url("/task"))
            .basic_auth(user, Some(&w.secret))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // garbage header
    let resp = tm
        .client
        .post(tm.url("/task"))
        .header("Authorization", "Basic !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // the bad requests did not mark the worker as seen with another address etc.
    tm.stop().await;
}

#[tokio::test]
async fn malformed_and_mistyped_json_is_400_and_stores_nothing() {
    let tm = TestManager::start().await;
    tm.enqueue(vec![test_task("1aaa", "sleeping")]).await;
    let w = tm.register("w", "linux", &["sleeping"]).await;
    let id = oid("1aaa");
    let before = tm.outbox().await.len();
    for body in [
        "{not json",
        r#"{"task_status": 5}"#,
        r#"{"current_command_idx": 1.5}"#,
        r#"{"task_status": "cancelled"}"#,
        r#"{"task_progress_percentage": 250}"#,
        r#"{"_id": "xyz"}"#,
        r#"{"received_on_manager": "not a time"}"#,
        r#"["a list"]"#,
    ] {
        let resp = w
            .client
            .post(tm.url(&format!("/tasks/{id}/update")))
            .basic_auth(w.id.to_hex(), Some(&w.secret))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "body {body}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(
            err["error"].as_str().unwrap().len() > 5,
            "clear message for {body}"
        );
    }
    let resp = w
        .post_json(
            &format!("/tasks/{id}/update"),
            &json!({"task_status": "bogus"}),
        )
        .await;
    let err: serde_json::Value = resp.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("bogus"),
        "names the status: {err}"
    );
    assert_eq!(tm.outbox().await.len(), before);
    let t = tm.task(id).await;
    assert_eq!(t.status, TaskStatus::Queued);
    assert_eq!(t.worker_id, None);

    // registration
    let before_workers = tm.manager.list_workers().await.unwrap().len();
    for body in [
        json!({"platform": "linux"}),
        json!({"secret": "", "platform": "linux"}),
        json!({"secret": "x", "supported_task_types": "sleep"}),
        json!({"secret": 12}),
    ] {
        let resp = tm
            .client
            .post(tm.url("/register-worker"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "body {body}");
    }
    assert_eq!(
        tm.manager.list_workers().await.unwrap().len(),
        before_workers
    );
    // sign-on with wrong types
    let resp = w
        .post_json("/sign-on", &json!({"supported_task_types": [1, 2]}))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(tm.worker(w.id).await.supported_task_types, vec!["sleeping"]);
    // output-produced without paths
    let resp = w.post_json("/output-produced", &json!({"paths": []})).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = w.post_json("/output-produced", &json!({})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    tm.stop().await;
}

#[tokio::test]
async fn bad_task_ids_are_404() {
    let tm = TestManager::start().await;
    let w = tm.register("w", "linux", &["sleeping"]).await;
    let resp = w.post_json("/tasks/1234/update", &json!({})).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "Invalid ObjectID passed as task ID: 1234");
    // unknown but valid id: 404 (2.2+ workers drop the update)
    let resp = w
        .post_json(
            "/tasks/aaaaaaaaaaaaaaaaaaaaaaaa/update",
            &json!({"task_status": "active"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = w.get("/may-i-run/zzz").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(tm.outbox().await.is_empty());
    tm.stop().await;
}

#[tokio::test]
async fn huge_bodies_are_413() {
    let mut config = common::v2_test_config();
    config.max_request_body = 64 * 1024;
    let tm = TestManager::start_with(config).await;
    tm.enqueue(vec![test_task("1aaa", "sleeping")]).await;
    let w = tm.register("w", "linux", &["sleeping"]).await;
    let log = "x".repeat(200 * 1024);
    let resp = w
        .post_json(
            &format!("/tasks/{}/update", oid("1aaa")),
            &json!({"log": log}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(tm.outbox().await.is_empty());
    let resp = tm
        .client
        .post(tm.url("/register-worker"))
        .json(&json!({"secret": "y".repeat(100 * 1024), "platform": "linux"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    tm.stop().await;
}

#[tokio::test]
async fn worker_without_task_types_gets_406() {
    let tm = TestManager::start().await;
    let w = tm.register("w", "linux", &[]).await;
    let (status, _) = w.task().await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    tm.stop().await;
}

#[tokio::test]
async fn registration_secret_requires_a_valid_token() {
    let mut config = common::v2_test_config();
    config.worker_registration_secret = "farm-secret".into();
    let tm = TestManager::start_with(config).await;
    let body = json!({"secret": "s".repeat(64), "platform": "linux", "supported_task_types": ["sleep"], "nickname": "vm"});
    let resp = tm
        .client
        .post(tm.url("/register-worker"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = tm
        .client
        .post(tm.url("/register-worker"))
        .bearer_auth(jwt("wrong-secret"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(tm.manager.list_workers().await.unwrap().is_empty());
    let resp = tm
        .client
        .post(tm.url("/register-worker"))
        .bearer_auth(jwt("farm-secret"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(tm.manager.list_workers().await.unwrap().len(), 1);
    tm.stop().await;
}

/// docs/worker-api.md, "Size limits": a field over its limit at registration or sign-on is
/// a 400 naming the field, and nothing is stored; other requests record at most
/// `MAX_SOFTWARE` bytes of the User-Agent.
#[tokio::test]
async fn oversized_worker_fields_are_400_naming_the_field() {
    use flamenco_core::protocol::{
        MAX_NICKNAME, MAX_PLATFORM, MAX_SOFTWARE, MAX_TASK_TYPE, MAX_TASK_TYPES,
    };
    let tm = TestManager::start().await;
    let register = |user_agent: String, body: serde_json::Value| {
        let request = tm
            .client
            .post(tm.url("/register-worker"))
            .header("User-Agent", user_agent)
            .json(&body);
        async move {
            let resp = request.send().await.expect("send");
            let status = resp.status();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let body = |nickname: String, platform: String, types: Vec<String>| {
        json!({"secret": "s3cret", "nickname": nickname, "platform": platform,
               "supported_task_types": types})
    };
    let ok_types = || vec!["sleep".to_string()];
    let ua = "Flamenco-Worker/2.5".to_string();

    // The issue's probe: a 60 KB User-Agent.
    let cases = [
        (
            "x".repeat(60_000),
            body("w".into(), "linux".into(), ok_types()),
            "software (the User-Agent header)",
        ),
        (
            ua.clone(),
            body("n".repeat(MAX_NICKNAME + 1), "linux".into(), ok_types()),
            "nickname",
        ),
        (
            ua.clone(),
            body("w".into(), "p".repeat(MAX_PLATFORM + 1), ok_types()),
            "platform",
        ),
        (
            ua.clone(),
            body(
                "w".into(),
                "linux".into(),
                vec!["t".repeat(MAX_TASK_TYPE + 1)],
            ),
            "a supported task type",
        ),
        (
            ua.clone(),
            body(
                "w".into(),
                "linux".into(),
                (0..=MAX_TASK_TYPES).map(|i| format!("type-{i}")).collect(),
            ),
            "supported_task_types",
        ),
    ];
    for (user_agent, request, field) in cases {
        let (status, answer) = register(user_agent, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(field), "{field}: {error}");
        assert!(error.contains("at most"), "{field}: {error}");
    }
    assert!(tm.manager.list_workers().await.unwrap().is_empty());

    // Exactly at every limit: accepted, stored as sent.
    let (status, worker) = register(
        "u".repeat(MAX_SOFTWARE),
        body(
            "n".repeat(MAX_NICKNAME),
            "p".repeat(MAX_PLATFORM),
            (0..MAX_TASK_TYPES)
                .map(|i| format!("{i:0>width$}", width = MAX_TASK_TYPE))
                .collect(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{worker}");
    assert_eq!(tm.manager.list_workers().await.unwrap().len(), 1);

    // Sign-on: the same limits; the worker is left as it was.
    let w = tm.register("render-01", "linux", &["sleeping"]).await;
    let sign_on = |user_agent: String, body: serde_json::Value| {
        let request = tm
            .client
            .post(tm.url("/sign-on"))
            .basic_auth(w.id.to_hex(), Some(&w.secret))
            .header("User-Agent", user_agent)
            .json(&body);
        async move {
            let resp = request.send().await.expect("send");
            let status = resp.status();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let before = tm.worker(w.id).await;
    let (status, answer) = sign_on("x".repeat(60_000), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"]
        .as_str()
        .unwrap_or_default()
        .contains("User-Agent"));
    let (status, answer) = sign_on(
        ua.clone(),
        json!({"nickname": "n".repeat(MAX_NICKNAME + 1)}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"]
        .as_str()
        .unwrap_or_default()
        .starts_with("nickname"));
    let stored = tm.worker(w.id).await;
    assert_eq!(
        (
            &stored.status,
            &stored.nickname,
            &stored.software,
            stored.last_activity
        ),
        (
            &before.status,
            &before.nickname,
            &before.software,
            before.last_activity
        )
    );
    assert_eq!(stored.nickname, "render-01");
    assert_eq!(stored.software, "Flamenco-Worker/2.5");

    // Any other request records at most MAX_SOFTWARE bytes of a long User-Agent.
    assert_eq!(w.sign_on(json!({})).await, StatusCode::NO_CONTENT);
    let long = format!("Flamenco-Worker/2.5 {}", "x".repeat(60_000));
    let resp = tm
        .client
        .post(tm.url("/task"))
        .basic_auth(w.id.to_hex(), Some(&w.secret))
        .header("User-Agent", long.as_str())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    tm.manager.flush_seen().await.expect("flush");
    let software = tm.worker(w.id).await.software;
    assert_eq!(
        software.len(),
        MAX_SOFTWARE,
        "{} bytes stored",
        software.len()
    );
    assert!(long.starts_with(&software), "a prefix of what was sent");
    tm.stop().await;
}

/// A token as PyJWT 1.x makes it for worker 2.5: HS256 with float `exp`/`iat`.
fn jwt(secret: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    let header = b64(br#"{"typ":"JWT","alg":"HS256"}"#);
    let claims = b64(format!(r#"{{"exp":{},"iat":{}}}"#, now + 900.0, now).as_bytes());
    let signing_input = format!("{header}.{claims}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}
