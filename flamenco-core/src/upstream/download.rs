//! Task download ("depsgraph", manager-v2.md §5.3): a clean slate without a watermark,
//! then incremental downloads with `X-Flamenco-If-Updated-Since`.
//!
//! The tasks of one answer are stored in one store call
//! ([`crate::store::UpstreamStore::merge_downloaded_tasks`], which never takes a task away from the
//! worker running it), and only then is the answer's `X-Flamenco-Last-Updated` saved as
//! the new watermark: a failed or partial store keeps the old watermark, so the same
//! tasks come again. One loop does every download, so they never overlap; kicks
//! (`/kick`, an empty queue) never wait for it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::client::DepsgraphAnswer;
use super::status::Call;
use super::{CallError, WATERMARK_KEY};
use crate::store::MergeReport;
use crate::Manager;

/// What one download did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownloadOutcome {
    /// The Server said 204 (no runnable job) or 304 (nothing new).
    pub nothing_new: bool,
    pub stored: MergeReport,
    /// Tasks of the answer that could not be decoded (the watermark was then kept).
    pub undecodable: usize,
    /// The watermark saved, if it changed.
    pub watermark: Option<String>,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("cannot store the downloaded tasks: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Download once (standalone: nothing to do).
pub async fn download_once(manager: &Manager) -> Result<DownloadOutcome, DownloadError> {
    let Some(up) = manager.upstream() else {
        return Ok(DownloadOutcome::default());
    };
    let result = download_inner(manager).await;
    match &result {
        Ok(_) => up.tracker().success(Call::Download, manager.now()),
        Err(e) => up
            .tracker()
            .failure(Call::Download, e.to_string(), manager.now()),
    }
    result
}

async fn download_inner(manager: &Manager) -> Result<DownloadOutcome, DownloadError> {
    let up = manager.upstream().expect("upstream mode");
    let store = manager.store();
    let since = store.get_setting(WATERMARK_KEY).await?;
    let answer = up.client().depsgraph(since.as_deref()).await?;
    let (body, last_updated) = match answer {
        DepsgraphAnswer::NoJobs | DepsgraphAnswer::NotModified => {
            return Ok(DownloadOutcome {
                nothing_new: true,
                ..DownloadOutcome::default()
            })
        }
        DepsgraphAnswer::Tasks { body, last_updated } => (body, last_updated),
    };
    let stored = if body.tasks.is_empty() {
        MergeReport::default()
    } else {
        store
            .merge_downloaded_tasks(&body.tasks, manager.now())
            .await?
    };
    let mut outcome = DownloadOutcome {
        nothing_new: false,
        stored,
        undecodable: body.undecodable,
        watermark: None,
    };
    up.tracker().totals(|t| {
        t.downloads += 1;
        t.tasks_downloaded += body.tasks.len() as u64;
    });
    if body.undecodable > 0 {
        tracing::warn!(
            "{} downloaded task(s) could not be read; keeping the download watermark so they come again",
            body.undecodable
        );
    } else if let Some(mark) = last_updated.filter(|m| since.as_deref() != Some(m.as_str())) {
        store.set_setting(WATERMARK_KEY, Some(&mark)).await?;
        outcome.watermark = Some(mark);
    }
    if !body.tasks.is_empty() {
        tracing::info!(
            tasks = body.tasks.len(),
            new = outcome.stored.inserted,
            updated = outcome.stored.updated,
            kept_running = outcome.stored.kept_running,
            "downloaded tasks from the Flamenco Server"
        );
    }
    Ok(outcome)
}

/// Download ~0.2 s after start, then every `download_task_sleep` and on every kick;
/// after a failure, retry with backoff (never later than the regular period).
pub async fn run(manager: Arc<Manager>, shutdown: CancellationToken) {
    let Some(up) = manager.upstream() else {
        return;
    };
    let options = up.options().clone();
    // A zero period would spin; v2 had the same setting mean "all the time".
    let period = manager
        .config()
        .download_task_sleep
        .max(std::time::Duration::from_millis(100));
    let mut backoff = Backoff::new(options.backoff_initial, options.backoff_cap);
    let mut wait = std::time::Duration::from_millis(200).min(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {},
            _ = up.download_kick.notified() => {},
        }
        match download_once(&manager).await {
            Ok(_) => {
                backoff.reset();
                wait = period;
            }
            Err(e) => {
                wait = backoff
                    .next_delay()
                    .min(period.max(options.backoff_initial));
                tracing::warn!(
                    "task download failed: {e}; retrying in {:.1}s",
                    wait.as_secs_f64()
                );
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}
