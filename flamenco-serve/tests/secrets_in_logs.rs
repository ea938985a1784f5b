//! Secrets never reach the logs: every request that carries one (worker secrets right and
//! wrong, in bodies and in Basic credentials, registration tokens signed with the right and
//! a wrong secret, the admin token right and wrong) is made with every log event of every
//! crate captured at TRACE level, and none of the secret strings (nor their base64 forms)
//! may appear. The effective-configuration listing masks them too.

mod common;

use base64::Engine;
use common::{CapturedLog, TestManager, TestWorker};
use flamenco_core::config::Config;
use flamenco_core::model::ObjectId;
use reqwest::StatusCode;
use serde_json::json;

const WORKER_SECRET: &str = "WORKER-SECRET-d41d8cd98f00b204";
const WRONG_WORKER_SECRET: &str = "WRONG-WORKER-SECRET-9e107d9d372bb682";
const REGISTRATION_SECRET: &str = "REGISTRATION-SECRET-e4d909c290d0fb1c";
const WRONG_REGISTRATION_SECRET: &str = "WRONG-REGISTRATION-0cc175b9c0f1b6a8";
const ADMIN_TOKEN: &str = "ADMIN-TOKEN-92eb5ffee6ae2fec3ad71c77";
const WRONG_ADMIN_TOKEN: &str = "WRONG-ADMIN-TOKEN-8277e0910d750195";
const MANAGER_SECRET: &str = "MANAGER-SECRET-b026324c6904b2a9";

/// A registration token as Flamenco Worker 2.3+ makes it (HS256).
fn jwt(secret: &str) -> String {
    use hmac::Mac;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = chrono::Utc::now().timestamp();
    let header = b64(br#"{"typ":"JWT","alg":"HS256"}"#);
    let claims = b64(format!(r#"{{"exp":{},"iat":{now}}}"#, now + 900).as_bytes());
    let signing_input = format!("{header}.{claims}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

#[tokio::test]
async fn no_secret_appears_in_trace_level_logs() {
    let logs = CapturedLog::install_global(tracing::Level::TRACE);

    let config = Config {
        worker_registration_secret: REGISTRATION_SECRET.into(),
        admin_token: ADMIN_TOKEN.into(),
        manager_secret: MANAGER_SECRET.into(),
        ..Config::default()
    };
    let tm = TestManager::start_with(config).await;
    let good_jwt = jwt(REGISTRATION_SECRET);
    let bad_jwt = jwt(WRONG_REGISTRATION_SECRET);
    let register = |token: &str, secret: &str| {
        tm.client
            .post(tm.url("/register-worker"))
            .bearer_auth(token)
            .json(&json!({"secret": secret, "platform": "linux",
                          "supported_task_types": ["sleep"], "nickname": "quiet"}))
            .send()
    };

    // Registration with a wrong token, then the right one.
    let resp = register(&bad_jwt, WORKER_SECRET).await.expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = register(&good_jwt, WORKER_SECRET).await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    let id = ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id");
    // A malformed registration body that carries the secret.
    let resp = tm
        .client
        .post(tm.url("/register-worker"))
        .bearer_auth(&good_jwt)
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"secret": "{WORKER_SECRET}", "platform": "{WORKER_SECRET}", "supported_task_types": "{WORKER_SECRET}""#
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Worker requests with the right and a wrong secret (Basic credentials).
    let worker = TestWorker {
        id,
        secret: WORKER_SECRET.into(),
        base: tm.base.clone(),
        client: tm.client.clone(),
        software: "Flamenco-Worker/2.5".into(),
    };
    assert_eq!(
        worker.sign_on(json!({"nickname": "quiet"})).await.as_u16(),
        204
    );
    assert_eq!(worker.task().await.0, StatusCode::NO_CONTENT);
    let mut impostor = worker.clone();
    impostor.secret = WRONG_WORKER_SECRET.into();
    assert_eq!(impostor.task().await.0, StatusCode::UNAUTHORIZED);
    // A task update whose log text holds a secret is the worker's business, not a
    // credential; it is refused here (unknown task) and must not be logged either.
    let resp = worker
        .post_json(
            &format!("/tasks/{}/update", ObjectId::new()),
            &json!({"task_status": "active", "log": WORKER_SECRET}),
        )
        .await;
    assert!(resp.status().is_client_error(), "{}", resp.status());

    // The admin API with the right and a wrong token.
    for (token, expected) in [
        (ADMIN_TOKEN, StatusCode::OK),
        (WRONG_ADMIN_TOKEN, StatusCode::UNAUTHORIZED),
    ] {
        let resp = tm
            .client
            .get(tm.url("/api/jobs"))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), expected, "token {token}");
    }

    let listing = tm.manager.config().describe_effective();
    tm.stop().await;

    let text = logs.text();
    // The capture works: the requests above were logged.
    assert!(
        text.contains("/register-worker"),
        "nothing captured:\n{text}"
    );
    assert!(text.contains("admin API request refused"), "{text}");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut forbidden = vec![
        WORKER_SECRET.to_string(),
        WRONG_WORKER_SECRET.to_string(),
        REGISTRATION_SECRET.to_string(),
        WRONG_REGISTRATION_SECRET.to_string(),
        ADMIN_TOKEN.to_string(),
        WRONG_ADMIN_TOKEN.to_string(),
        MANAGER_SECRET.to_string(),
        good_jwt.clone(),
        bad_jwt.clone(),
        b64(&format!("{id}:{WORKER_SECRET}")),
        b64(&format!("{id}:{WRONG_WORKER_SECRET}")),
    ];
    // The JWT signatures alone, too.
    for token in [&good_jwt, &bad_jwt] {
        if let Some((_, sig)) = token.rsplit_once('.') {
            forbidden.push(sig.to_string());
        }
    }
    for secret in &forbidden {
        assert!(
            !text.contains(secret.as_str()),
            "{secret} appears in the logs:\n{}",
            text.lines()
                .filter(|l| l.contains(secret.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    for secret in [REGISTRATION_SECRET, ADMIN_TOKEN, MANAGER_SECRET] {
        assert!(!listing.contains(secret), "{secret} in:\n{listing}");
    }
    assert!(listing.contains("admin_token: '****'"), "{listing}");
}
