//! `GET /metrics` (docs/metrics.md): counters and gauges move by what the workers did,
//! routes are labelled by template, errors are counted, and a store that does not answer
//! does not fail the scrape.

mod common;

use std::collections::BTreeMap;

use common::{test_task, TestManager};
use flamenco_core::model::ObjectId;
use reqwest::StatusCode;
use serde_json::json;

/// One scrape: the series (`name{labels}`) and their values, and the raw text.
struct Scrape {
    series: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    /// The value of a series, 0 when absent.
    fn get(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.series.contains_key(series)
    }
}

async fn scrape(tm: &TestManager) -> Scrape {
    let resp = tm
        .client
        .get(tm.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = resp.text().await.expect("body");
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF:\n{text}"
    );
    let mut series = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `series value`: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        assert!(
            series.insert(name.to_string(), value).is_none(),
            "series {name} twice"
        );
    }
    Scrape { series, text }
}

fn task_of_type(n: u32, task_type: &str) -> flamenco_core::model::Task {
    let mut t = test_task(&format!("{n:x}"), task_type);
    t.id = ObjectId::new();
    t.parents.clear();
    t
}

const UPDATE_204: &str =
    r#"flamenco_http_requests_total{method="POST",route="/tasks/{task_id}/update",status="204"}"#;
const UPDATE_404: &str =
    r#"flamenco_http_requests_total{method="POST",route="/tasks/{task_id}/update",status="404"}"#;

#[tokio::test]
async fn counters_and_gauges_follow_a_worker_session() {
    let tm = TestManager::start().await;
    let before = scrape(&tm).await;
    assert_eq!(
        before.get(r#"flamenco_task_claims_total{outcome="assigned"}"#),
        0.0
    );
    assert!(
        before.has(r#"flamenco_task_claims_total{outcome="assigned"}"#),
        "claim outcomes exist from the start, so increase() works:\n{}",
        before.text
    );
    assert_eq!(before.get("flamenco_store_up"), 1.0);
    assert_eq!(before.get("flamenco_outbox_updates"), 0.0);
    assert_eq!(before.get("flamenco_outbox_oldest_age_seconds"), 0.0);
    assert_eq!(before.get("flamenco_outbox_set_aside_updates"), 0.0);
    let version = flamenco_core::VERSION;
    assert_eq!(
        before.get(&format!(
            r#"flamenco_build_info{{version="{version}",mode="standalone",store="sqlite"}}"#
        )),
        1.0,
        "{}",
        before.text
    );

    tm.enqueue(vec![
        task_of_type(1, "sleep"),
        task_of_type(2, "sleep"),
        task_of_type(3, "blender-render"),
    ])
    .await;
    let sleeper = tm.register("sleeper", "linux", &["sleep"]).await;
    let idle = tm.register("idle", "linux", &["exr-merge"]).await;

    // assigned, then the same task again (reassigned).
    let (status, body) = sleeper.task().await;
    assert_eq!(status, StatusCode::OK);
    let first = ObjectId::parse(body["_id"].as_str().expect("_id")).expect("id");
    let (status, body) = sleeper.task().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_id"].as_str(), Some(first.to_hex().as_str()));
    // Two accepted updates; the second finishes the task.
    assert_eq!(
        sleeper
            .update(
                first,
                json!({"activity": "rendering", "task_progress_percentage": 50})
            )
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        sleeper
            .update(first, json!({"task_status": "completed"}))
            .await,
        StatusCode::NO_CONTENT
    );
    // The next sleep task is assigned; an update for an unknown task is refused.
    let (status, _) = sleeper.task().await;
    assert_eq!(status, StatusCode::OK);
    let unknown = ObjectId::new();
    assert_eq!(
        sleeper.update(unknown, json!({"activity": "?"})).await,
        StatusCode::NOT_FOUND
    );
    // Nothing for the idle worker.
    let (status, _) = idle.task().await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Errors the HTTP layer answers: bad credentials, a path no route matches.
    let resp = tm
        .client
        .post(tm.url("/task"))
        .basic_auth(sleeper.id.to_hex(), Some("wrong secret"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = tm
        .client
        .get(tm.url(&format!("/no-such-thing/{unknown}")))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let after = scrape(&tm).await;
    let delta = |series: &str| after.get(series) - before.get(series);

    // Counters.
    assert_eq!(
        delta(r#"flamenco_task_claims_total{outcome="assigned"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"flamenco_task_claims_total{outcome="reassigned"}"#),
        1.0
    );
    assert_eq!(delta(r#"flamenco_task_claims_total{outcome="empty"}"#), 1.0);
    assert_eq!(
        delta(r#"flamenco_task_updates_total{outcome="applied"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"flamenco_task_updates_total{outcome="not_found"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"flamenco_task_updates_total{outcome="assigned_to_other"}"#),
        0.0
    );

    // Gauges read from the store.
    assert_eq!(
        after.get(r#"flamenco_tasks{status="completed",task_type="sleep"}"#),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.get(r#"flamenco_tasks{status="active",task_type="sleep"}"#),
        1.0
    );
    assert_eq!(
        after.get(r#"flamenco_tasks{status="queued",task_type="blender-render"}"#),
        1.0
    );
    assert!(!after.has(r#"flamenco_tasks{status="queued",task_type="sleep"}"#));
    assert_eq!(after.get(r#"flamenco_workers{status="awake"}"#), 2.0);
    let outbox = tm.outbox().await;
    assert!(!outbox.is_empty());
    assert_eq!(after.get("flamenco_outbox_updates"), outbox.len() as f64);
    let age = after.get("flamenco_outbox_oldest_age_seconds");
    assert!((0.0..60.0).contains(&age), "oldest age {age}");
    assert_eq!(after.get("flamenco_store_up"), 1.0);

    // HTTP: by route template, never by id; errors counted with their status.
    assert_eq!(delta(UPDATE_204), 2.0, "{}", after.text);
    assert_eq!(delta(UPDATE_404), 1.0);
    assert_eq!(
        delta(r#"flamenco_http_requests_total{method="POST",route="/task",status="200"}"#),
        3.0
    );
    assert_eq!(
        delta(r#"flamenco_http_requests_total{method="POST",route="/task",status="204"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"flamenco_http_requests_total{method="POST",route="/task",status="401"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"flamenco_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert_eq!(
        delta(
            r#"flamenco_http_request_duration_seconds_count{method="POST",route="/tasks/{task_id}/update"}"#
        ),
        3.0
    );
    assert!(
        !after.text.contains(&first.to_hex()) && !after.text.contains(&unknown.to_hex()),
        "no id in any label:\n{}",
        after.text
    );
    // The first scrape is counted too.
    assert!(
        after.get(r#"flamenco_http_requests_total{method="GET",route="/metrics",status="200"}"#)
            >= 1.0
    );

    // Store latency, by operation (a standalone `POST /task` is `claim_after_stops`).
    assert!(
        delta(r#"flamenco_store_operation_duration_seconds_count{operation="claim_after_stops"}"#)
            >= 4.0,
        "{}",
        after.text
    );
    assert!(
        delta(
            r#"flamenco_store_operation_duration_seconds_count{operation="apply_worker_update"}"#
        ) >= 3.0
    );
    tm.stop().await;
}

#[tokio::test]
async fn a_store_that_does_not_answer_leaves_its_gauges_out() {
    let tm = TestManager::start().await;
    tm.enqueue(vec![task_of_type(1, "sleep")]).await;
    let ok = scrape(&tm).await;
    assert_eq!(
        ok.get(r#"flamenco_tasks{status="queued",task_type="sleep"}"#),
        1.0
    );
    tm.manager.store().close().await.expect("close");
    let down = scrape(&tm).await;
    assert_eq!(down.get("flamenco_store_up"), 0.0, "{}", down.text);
    assert!(!down.text.contains("flamenco_tasks{"), "{}", down.text);
    assert!(!down.has("flamenco_outbox_updates"));
    // The counters are still there.
    assert!(down.has(r#"flamenco_task_claims_total{outcome="assigned"}"#));
}
