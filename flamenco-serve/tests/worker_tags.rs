//! Worker tags over HTTP (issue 16 item 3): `POST /api/workers/{id}/tags` with its 400 and
//! 404 refusals that change nothing and the admin-token check; tags in the worker
//! listings; a job submitted with `worker_tag` reaches only a worker with that tag through
//! the real worker API, and tags survive the worker's sign-on and sign-off.

mod common;

use common::{v2_test_config, TestManager};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn post(tm: &TestManager, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = tm
        .client
        .post(tm.url(path))
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(tm: &TestManager, path: &str) -> Value {
    let resp = tm.client.get(tm.url(path)).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("json")
}

async fn stored_tags(tm: &TestManager, id: flamenco_core::model::ObjectId) -> Vec<String> {
    tm.manager
        .get_worker(id)
        .await
        .expect("get")
        .expect("worker")
        .tags
}

#[tokio::test]
async fn tag_a_worker_and_refuse_bad_requests() {
    let tm = TestManager::start().await;
    let w = tm.register("render-01", "linux", &["sleep"]).await;
    let path = format!("/api/workers/{}/tags", w.id);

    let (status, body) = post(&tm, &path, json!({"add": ["gpu", "win"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tags"], json!(["gpu", "win"]));
    assert_eq!(body["changed"], json!(true));
    let (status, body) = post(&tm, &path, json!({"add": ["ssd"], "remove": ["win"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tags"], json!(["gpu", "ssd"]));
    let (status, body) = post(&tm, &path, json!({"add": ["gpu"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], json!(false));

    // Refusals: a clear 4xx, and nothing changed.
    let too_many: Vec<String> = (0..31).map(|i| format!("t{i}")).collect();
    let bad: Vec<(Value, &str)> = vec![
        (json!({"add": ["has space"]}), "invalid tag"),
        (json!({"add": [""]}), "invalid tag"),
        (json!({"add": ["x".repeat(65)]}), "invalid tag"),
        (json!({"remove": ["a/b"]}), "invalid tag"),
        (json!({}), "no tags"),
        (json!({"add": "gpu"}), "JSON"),
        (json!({"tags": ["gpu"]}), "JSON"),
        (json!({"add": too_many}), "at most 32"),
    ];
    for (body, want) in bad {
        let (status, answer) = post(&tm, &path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(want), "{body}: {message}");
    }
    assert_eq!(stored_tags(&tm, w.id).await, ["gpu", "ssd"]);

    let (status, body) = post(&tm, "/api/workers/nope/tags", json!({"add": ["gpu"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "worker_id");
    let unknown = "0123456789abcdef01234567";
    let (status, body) = post(
        &tm,
        &format!("/api/workers/{unknown}/tags"),
        json!({"add": ["gpu"]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains(unknown));

    // The listings show them.
    let listed = get(&tm, "/api/status/workers?group=all").await;
    let row = listed["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|r| r["id"] == w.id.to_hex())
        .cloned()
        .expect("listed");
    assert_eq!(row["tags"], json!(["gpu", "ssd"]));
    let report = get(&tm, "/as-json").await;
    let text = report.to_string();
    assert!(text.contains("\"tags\":[\"gpu\",\"ssd\"]"), "{text}");
    tm.stop().await;
}

#[tokio::test]
async fn a_tagged_job_goes_only_to_a_tagged_worker() {
    let tm = TestManager::start().await;
    let plain = tm.register("plain", "linux", &["sleep"]).await;
    let gpu = tm.register("gpu-01", "linux", &["sleep"]).await;
    let (status, body) = post(
        &tm,
        &format!("/api/workers/{}/tags", gpu.id),
        json!({"add": ["gpu"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A bad tag on a job: 400 naming the field, nothing stored.
    let (status, body) = post(
        &tm,
        "/api/jobs",
        json!({"job_type": "sleep", "worker_tag": "g p u",
               "settings": {"frames": "1", "time_in_seconds": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "worker_tag");
    assert!(tm
        .manager
        .list_jobs(&Default::default())
        .await
        .expect("jobs")
        .is_empty());

    let (status, job) = post(
        &tm,
        "/api/jobs",
        json!({"job_type": "sleep", "worker_tag": "gpu",
               "settings": {"frames": "1", "time_in_seconds": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["worker_tag"], "gpu");

    // The untagged worker gets nothing; the tagged one gets the task, also after it
    // signed off and on again (tags are the Manager's, not the worker's).
    let (status, body) = plain.task().await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(gpu.sign_off().await, StatusCode::NO_CONTENT);
    assert_eq!(
        gpu.sign_on(json!({"nickname": "gpu-01b"})).await,
        StatusCode::NO_CONTENT
    );
    let (status, body) = gpu.task().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"], job["_id"]);
    assert!(
        body.get("worker_tag").is_none(),
        "the worker's task JSON is v2's: {body}"
    );
    assert_eq!(stored_tags(&tm, gpu.id).await, ["gpu"]);
    tm.stop().await;
}

#[tokio::test]
async fn the_admin_token_guards_tagging() {
    let mut config = v2_test_config();
    config.admin_token = "t0ken".into();
    let tm = TestManager::start_with(config).await;
    let w = tm.register("render-01", "linux", &["sleep"]).await;
    let path = format!("/api/workers/{}/tags", w.id);
    let (status, _) = post(&tm, &path, json!({"add": ["gpu"]})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(stored_tags(&tm, w.id).await.is_empty());
    let resp = tm
        .client
        .post(tm.url(&path))
        .bearer_auth("t0ken")
        .json(&json!({"add": ["gpu"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(stored_tags(&tm, w.id).await, ["gpu"]);
    tm.stop().await;
}
