//! A few seconds of the farm simulator against an in-process Manager, so the simulator
//! cannot rot: every scenario runs, every request succeeds, task cycles complete.

use std::sync::Arc;
use std::time::Duration;

use flamenco_core::config::Config;
use flamenco_core::Manager;
use flamenco_examples::sim::{run, Args, Scenario};

async fn start_manager(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config_path = dir.join("flamenco-manager.yaml");
    std::fs::write(
        &config_path,
        // A load generator: the per-worker rate limit (docs/security.md) is off.
        format!(
            "data_dir: {}\nworker_request_rate: 0\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let (config, _) = Config::load(Some(&config_path)).unwrap();
    let manager = Arc::new(Manager::open(config).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(flamenco_serve::serve(
        manager,
        listener,
        std::future::pending(),
    ));
    (format!("http://{addr}"), config_path)
}

fn args(manager: &str, config: &std::path::Path, scenario: Scenario, seed: usize) -> Args {
    Args {
        manager: manager.to_string(),
        workers: 4,
        duration: Duration::from_millis(1500),
        scenario,
        seed_config: Some(config.to_path_buf()),
        seed_tasks: seed,
        log_bytes: 2048,
        keep_queued: false,
        registered_workers: 0,
        pid: Some(std::process::id()),
        tags: 0,
    }
}

fn assert_all_succeeded(report: &serde_json::Value) {
    for (name, e) in report["endpoints"].as_object().unwrap() {
        assert_eq!(e["errors"], 0, "{name}: {e}");
        for status in e["statuses"].as_object().unwrap().keys() {
            assert!(status.starts_with('2'), "{name} answered {status}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (url, config) = start_manager(dir.path()).await;

    let report = run(args(&url, &config, Scenario::Cycles, 300))
        .await
        .unwrap();
    assert_all_succeeded(&report);
    assert!(report["task_cycles"].as_u64().unwrap() > 0, "{report}");
    let endpoints = report["endpoints"].as_object().unwrap();
    for e in ["/task", "/tasks/{id}/update", "/may-i-run/{id}"] {
        assert!(endpoints.contains_key(e), "{e} missing: {report}");
    }
    assert!(report["manager_peak_rss_bytes"].as_u64().unwrap() > 0);

    // --keep-queued replaces completed tasks: more cycles than tasks seeded.
    let mut keep = args(&url, &config, Scenario::Cycles, 20);
    keep.keep_queued = true;
    keep.duration = Duration::from_millis(2500);
    let report = run(keep).await.unwrap();
    assert_all_succeeded(&report);
    let replaced = report["tasks_replaced"].as_u64().unwrap();
    assert!(replaced > 0, "{report}");
    assert!(report["task_cycles"].as_u64().unwrap() > 20, "{report}");

    let report = run(args(&url, &config, Scenario::MayIRun, 10))
        .await
        .unwrap();
    assert_all_succeeded(&report);
    assert!(
        report["endpoints"]["/may-i-run/{id}"]["requests"]
            .as_u64()
            .unwrap()
            > 0
    );

    let report = run(args(&url, &config, Scenario::Burst, 50)).await.unwrap();
    assert_all_succeeded(&report);
    assert!(report["task_cycles"].as_u64().unwrap() > 0, "{report}");

    let report = run(args(&url, &config, Scenario::EmptyPolls, 0))
        .await
        .unwrap();
    assert_all_succeeded(&report);
}

/// `--tags`: every seeded task requires one of 3 tags and the workers are tagged through
/// the SDK, so any cycle at all means tagged workers got tagged tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_tasks_reach_tagged_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (url, config) = start_manager(dir.path()).await;
    let mut tagged = args(&url, &config, Scenario::Cycles, 30);
    tagged.tags = 3;
    let report = run(tagged).await.unwrap();
    assert_all_succeeded(&report);
    assert_eq!(report["worker_tags"], 3, "{report}");
    assert!(report["task_cycles"].as_u64().unwrap() > 0, "{report}");
}
