//! End to end with the real Flamenco Worker (Python, 2.0.6 and 2.5) and real Blender
//! renders (issue #12): each scenario starts its own `flamenco serve` on loopback with its
//! own data directory and port, and real worker processes against it
//! (scripts/install-workers.sh installs them into `.venv-worker-<version>/`). Scenarios of
//! one test run at the same time (the workers poll every 5 s, so most of a scenario is
//! waiting); each prints its wall time on stderr.
//!
//! After each scenario: no traceback or refused answer in any worker's log, no answer
//! from the Manager to a worker outside the documented set (its `/metrics`), and no
//! update left undelivered in any worker's queue.
//!
//! Without a worker installation (or Blender) the tests skip visibly; under `CI=true` they
//! fail. `FLAMENCO_E2E_BIN` runs them against another `flamenco` build (e.g. release).

mod support;

#[path = "real_worker/blender.rs"]
mod blender;
#[path = "real_worker/harness.rs"]
mod harness;
#[path = "real_worker/scenarios.rs"]
mod scenarios;
#[path = "real_worker/upstream.rs"]
mod upstream;

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::time::Instant;

use harness::{worker_available, V2_0_6, V2_5};

type Scenario = (&'static str, Pin<Box<dyn Future<Output = ()> + Send>>);

/// A line on the process's stderr, seen even when the test passes (the harness captures
/// `eprintln!`).
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "e2e: {line}");
}

/// Run the scenarios at the same time; report each one's wall time; fail with every
/// failure's message.
async fn run_concurrently(test: &str, scenarios: Vec<Scenario>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let handles: Vec<_> = scenarios
        .into_iter()
        .map(|(name, fut)| {
            (
                name,
                tokio::spawn(async move {
                    let t = Instant::now();
                    fut.await;
                    t.elapsed()
                }),
            )
        })
        .collect();
    let mut failures = Vec::new();
    for (name, handle) in handles {
        match handle.await {
            Ok(took) => report(&format!("{test}: {name} passed in {took:.1?}")),
            Err(e) => {
                let why = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into()),
                    Err(e) => e.to_string(),
                };
                report(&format!("{test}: {name} FAILED"));
                failures.push(format!("--- {name}:\n{why}"));
            }
        }
    }
    report(&format!("{test}: wall time {:.1?}", started.elapsed()));
    assert!(
        failures.is_empty(),
        "{} of the scenarios failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn scenario<F>(name: &'static str, f: F) -> Scenario
where
    F: Future<Output = ()> + Send + 'static,
{
    (name, Box::pin(f))
}

/// The scenarios every supported worker version runs.
fn scenarios_for(version: &'static str) -> Vec<Scenario> {
    vec![
        scenario(
            "two workers, 4-task sleep job",
            scenarios::two_workers_sleep_job(version),
        ),
        scenario("cancel", scenarios::cancel_stops_running_tasks(version)),
        scenario(
            "exec output in the task log",
            scenarios::exec_output_in_task_log(version),
        ),
        scenario(
            "kill -9 of the Manager",
            scenarios::manager_killed_mid_job(version),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_2_0_6() {
    if !worker_available(V2_0_6, "worker_2_0_6") {
        return;
    }
    run_concurrently("worker 2.0.6", scenarios_for(V2_0_6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_2_5() {
    if !worker_available(V2_5, "worker_2_5") {
        return;
    }
    let mut all = scenarios_for(V2_5);
    all.extend([
        scenario(
            "sleep/wake/shutdown (CLI)",
            scenarios::sleep_wake_shutdown_cli(),
        ),
        scenario(
            "sleep/wake/shutdown (API)",
            scenarios::sleep_wake_shutdown_api(),
        ),
    ]);
    run_concurrently("worker 2.5", all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blender_renders() {
    if !worker_available(V2_5, "blender_renders") {
        return;
    }
    let Some(blender) = blender::blender_available("blender_renders") else {
        return;
    };
    run_concurrently(
        "blender",
        vec![
            scenario(
                "4-frame render in 2 chunks",
                blender::render_job(blender.clone()),
            ),
            scenario("a missing .blend fails", blender::render_fails(blender)),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_with_real_worker() {
    if !worker_available(V2_5, "upstream_with_real_worker") {
        return;
    }
    run_concurrently(
        "upstream",
        vec![scenario(
            "Server double + worker 2.5",
            upstream::job_from_server(),
        )],
    )
    .await;
}
