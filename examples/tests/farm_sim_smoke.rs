//! A few seconds of the farm simulator against an in-process Manager, so the simulator
//! cannot rot: every scenario runs, every request succeeds, task cycles complete.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
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
        // Every option added later keeps its default here.
        ..Args::parse_from(["farm_sim"])
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
    // Here the "Manager" is this process, which did the work of every request.
    assert!(
        report["manager_cpu_us_per_request"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["simulator_cpu_seconds"].as_f64().is_some(),
        "{report}"
    );

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

    // The ceilings: the same workers and connections, one route each.
    for (scenario, route) in [
        (Scenario::Ceiling, "/healthz"),
        (Scenario::CeilingAuth, "/status-change"),
    ] {
        let report = run(args(&url, &config, scenario, 0)).await.unwrap();
        assert_all_succeeded(&report);
        let endpoints = report["endpoints"].as_object().unwrap();
        assert_eq!(
            endpoints.keys().collect::<Vec<_>>(),
            [route],
            "{scenario:?}: {report}"
        );
        assert!(
            endpoints[route]["requests"].as_u64().unwrap() > 100,
            "{report}"
        );
    }
}

/// Soak mode with 1-second "minutes": jobs are submitted through the SDK and done by the
/// workers; every row has the Manager's figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mode_reports_a_row_per_minute() {
    let dir = tempfile::tempdir().unwrap();
    let (url, config) = start_manager(dir.path()).await;
    let mut soak = args(&url, &config, Scenario::Cycles, 0);
    soak.registered_workers = 6;
    soak.soak_minutes = 3;
    soak.soak_row_seconds = 1;
    let report = run(soak).await.unwrap();
    assert_all_succeeded(&report);
    assert_eq!(report["idle_workers"], 2, "{report}");
    assert!(report["jobs_submitted"].as_u64().unwrap() >= 10, "{report}");
    assert!(report["task_cycles"].as_u64().unwrap() > 0, "{report}");
    let rows = report["minutes"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{report}");
    for row in rows {
        assert!(row["rss_bytes"].as_u64().unwrap() > 0, "{row}");
        assert!(row["open_fds"].as_u64().unwrap() > 0, "{row}");
        assert!(row["data_dir_bytes"].as_u64().unwrap() > 0, "{row}");
        assert!(row["wal_bytes"].is_u64(), "{row}");
        for key in [
            "manager_cpu_user_share",
            "manager_cpu_kernel_share",
            "manager_cpu_us_per_cycle",
            "simulator_cpu_us_per_cycle",
        ] {
            assert!(row[key].as_f64().is_some_and(|v| v >= 0.0), "{key}: {row}");
        }
        // The core's share is there exactly when the Manager (here the test process) is
        // pinned to one core.
        assert_eq!(
            row["manager_core"].is_null(),
            row["manager_core_busy_share"].is_null(),
            "{row}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r["cycles_per_second"].as_f64().unwrap() > 0.0),
        "{report}"
    );
    // The Manager (in this process) worked: its CPU shows in the rows.
    let cpu: f64 = rows
        .iter()
        .map(|r| {
            r["manager_cpu_user_share"].as_f64().unwrap()
                + r["manager_cpu_kernel_share"].as_f64().unwrap()
        })
        .sum();
    assert!(cpu > 0.0, "{report}");
}

/// Soak mode and the restart storm refuse to start without what they need.
#[tokio::test]
async fn soak_and_storm_need_their_options() {
    let mut a = Args::parse_from(["farm_sim", "--soak-minutes", "1", "--scenario", "may-i-run"]);
    a.manager = "http://127.0.0.1:9".into();
    let e = run(a).await.unwrap_err().to_string();
    assert!(e.contains("--soak-minutes needs --scenario cycles"), "{e}");
    let mut a = Args::parse_from(["farm_sim", "--scenario", "restart-storm"]);
    a.manager = "http://127.0.0.1:9".into();
    let e = run(a).await.unwrap_err().to_string();
    assert!(e.contains("needs --pid"), "{e}");
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
