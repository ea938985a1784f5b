//! One log line per outage state change, not per request (issue #10 item 6): while the
//! store refuses writes (a full disk, made on purpose with `SqliteStore::simulate_fault`),
//! every worker update answers 503, and the log gets one ERROR line for the outage and one
//! INFO line when it is over, however many requests were refused.

mod common;

use std::sync::Arc;

use common::{oid, test_task, CapturedLog, TestManager};
use flamenco_core::store::sqlite::{SimulatedFault, SqliteStore};
use flamenco_core::store::Store;
use reqwest::StatusCode;
use serde_json::json;

const REFUSED_PER_OUTAGE: usize = 25;

#[tokio::test]
async fn an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let logs = CapturedLog::install_global(tracing::Level::INFO);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("open the store"));
    let tm =
        TestManager::start_with_store(common::v2_test_config(), store.clone() as Arc<dyn Store>)
            .await;
    tm.enqueue(vec![test_task("1aaa", "sleeping")]).await;
    let w = tm.register("w", "linux", &["sleeping"]).await;
    let (status, _) = w.task().await;
    assert_eq!(status, StatusCode::OK);
    let task = oid("1aaa");

    for round in 1..=2 {
        store
            .simulate_fault(Some(SimulatedFault::DiskFull))
            .await
            .expect("simulate");
        for i in 0..REFUSED_PER_OUTAGE {
            // A log big enough to need new database pages, which the full disk refuses.
            let activity = format!("round {round}, update {i}");
            let log = format!(
                "{activity}\n{}",
                "log line of a busy render\n".repeat(10_000)
            );
            let status = w
                .update(task, json!({"activity": activity, "log": log}))
                .await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            // A read that still works in between does not end the outage.
            let (status, _) = w.may_i_run(task).await;
            assert_eq!(status, StatusCode::OK);
        }
        let errors = logs.lines_with(" ERROR ");
        assert_eq!(
            errors.len(),
            round,
            "one ERROR line per outage, not per 503:\n{}",
            errors.join("\n")
        );
        let last = errors.last().expect("the outage line");
        assert!(last.contains("the database is unavailable"), "{last}");
        assert!(last.contains("disk"), "the reason: {last}");

        store.simulate_fault(None).await.expect("clear");
        let status = w
            .update(task, json!({"activity": format!("round {round}, after")}))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let recovered = logs.lines_with("the database is available again");
        assert_eq!(recovered.len(), round, "{recovered:?}");
        let last = recovered.last().expect("the recovery line");
        assert!(last.contains(" INFO "), "{last}");
        assert!(
            last.contains(&format!("{REFUSED_PER_OUTAGE} requests were answered 503")),
            "{last}"
        );
        // Further successes log nothing more.
        let status = w.update(task, json!({"activity": "all is well"})).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            logs.lines_with("the database is available again").len(),
            round
        );
    }
    assert!(
        logs.lines_with("response failed")
            .iter()
            .all(|l| !l.contains(" ERROR ")),
        "the trace layer does not add its own ERROR line"
    );
    tm.stop().await;
}
