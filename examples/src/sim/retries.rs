//! The simulator's retry and blocklist conditions (docs/performance.md, "Claims with
//! retries and blocklists"): `--in-job` puts the seeded and refilled tasks in one job (so
//! the retry rules apply to them, as to any standalone job's tasks), `--blocklist-others N`
//! blocklists N extra, idle workers for that job (each fails `blocklist_threshold` of its
//! tasks through the SDK: failure records and blocklist entries exist, but exclude none
//! of the simulated workers), and `--blocklist-sim N` does the same to N of the simulated
//! workers themselves, whose claims must then skip every task of the job.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use flamenco_core::config::Config;
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{ObjectId, TaskStatus};
use flamenco_core::store::conformance::{claim_request, test_worker, worker_update};
use flamenco_core::Manager;
use serde_json::json;

use super::SimWorker;

/// The job every seeded and refilled task belongs to, with `--in-job`.
static JOB: OnceLock<ObjectId> = OnceLock::new();

/// The job tasks are enqueued into (`None`: no job, the default).
pub(super) fn job() -> Option<ObjectId> {
    JOB.get().copied()
}

/// Submit the one-frame job the seeded tasks join (before seeding).
pub(super) async fn create_job(config_path: &Path) -> Result<()> {
    let (config, _) = Config::load(Some(config_path))?;
    if config.is_upstream() {
        bail!("--in-job needs a standalone Manager (retries are off in upstream mode)");
    }
    let manager = Manager::open(config).await?;
    let settings = json!({"frames": "1", "time_in_seconds": 0});
    let job = manager
        .submit_job(
            JobSubmission::new("sleep", settings.as_object().cloned().unwrap_or_default())
                .named("farm_sim"),
        )
        .await
        .map_err(|e| anyhow!("submitting the simulator's job: {e}"))?;
    manager.close().await?;
    JOB.set(job.id)
        .map_err(|_| anyhow!("the simulator's job was made twice"))?;
    Ok(())
}

/// Blocklist `others` new idle workers and the simulated workers `sim` for the job: each
/// claims and fails `blocklist_threshold` tasks through the SDK. Returns the blocklist's
/// length.
pub(super) async fn blocklist(
    config_path: &Path,
    others: usize,
    sim: &[SimWorker],
) -> Result<usize> {
    let Some(job) = job() else {
        bail!("--blocklist-others and --blocklist-sim need --in-job");
    };
    let (config, _) = Config::load(Some(config_path))?;
    let threshold = config.blocklist_threshold.max(1);
    let manager = Manager::open(config).await?;
    let store = manager.store();
    let mut workers = Vec::new();
    for n in 0..others {
        let w = test_worker(ObjectId::new(), &format!("bad-{n}"), &["sleep"]);
        store.insert_worker(&w).await?;
        workers.push(w);
    }
    for w in sim {
        let id = ObjectId::parse(&w.id).context("a simulated worker's id")?;
        let stored = store
            .get_worker(id)
            .await?
            .ok_or_else(|| anyhow!("simulated worker {id} is not stored"))?;
        workers.push(stored);
    }
    for w in &workers {
        for _ in 0..threshold {
            let now = manager.now();
            let Some(claimed) = store.claim_task(&claim_request(w, now)).await? else {
                bail!("worker {} found no task of the job to fail", w.nickname);
            };
            store
                .apply_worker_update(
                    w.id,
                    worker_update(
                        claimed.task.id,
                        w,
                        Some(TaskStatus::Failed),
                        "simulated failure",
                        now,
                    ),
                )
                .await?;
        }
    }
    let listed = store.job_blocklist(job).await?.len();
    manager.close().await?;
    if listed != workers.len() {
        bail!(
            "{} workers failed {threshold} tasks each, but {listed} are blocklisted",
            workers.len()
        );
    }
    Ok(listed)
}
