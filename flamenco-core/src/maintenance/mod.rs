//! Keeping the queue healthy: the active-task and worker timeouts (v2 §8.1), the "no
//! worker left" check of retries and blocklists (docs/jobs.md), cleanup of finished tasks
//! (v2 §8.2, limited to finished tasks), clean slate and outbox purge.
//!
//! Each job is a plain async method of [`Manager`] ("run it now"), so tests drive them with
//! a [`crate::clock::ManualClock`]; [`run_loops`] runs them periodically in the daemon.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::manager::{ApiError, Manager};
use crate::model::ObjectId;

pub mod pacing;

use pacing::Pacer;
pub use pacing::{BATCH_PAUSE, BATCH_WORK, DELETE_BATCH};

/// How often the timeout check runs once started (v2: every minute).
pub const TIMEOUT_CHECK_PERIOD: Duration = Duration::from_secs(60);
/// The first cleanup runs this long after start (v2: 6 minutes)…
pub const CLEANUP_STARTUP_DELAY: Duration = Duration::from_secs(6 * 60);
/// …and then this often (v2: every 10 minutes).
pub const CLEANUP_PERIOD: Duration = Duration::from_secs(10 * 60);
/// How often workers' "seen" times are written (see [`crate::seen`]).
pub const SEEN_FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// How far the wall clock may disagree with monotonic time between two timeout checks
/// before it counts as a jump (see [`crate::clock::JumpGuard`]).
pub const CLOCK_JUMP_TOLERANCE: Duration = Duration::from_secs(10);
/// What one timeout check did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeoutReport {
    /// Active tasks that failed because nobody pinged them.
    pub failed_tasks: Vec<ObjectId>,
    /// Awake workers that were not seen and are now `timeout`.
    pub timed_out_workers: Vec<ObjectId>,
    /// Jobs that failed because no awake worker is left for one of their tasks (retries
    /// and blocklists, docs/jobs.md "No worker left"), with the task and the reason.
    pub stranded: Vec<crate::jobs::retry::Stranded>,
}

fn guard_grace(manager: &Manager) -> Duration {
    manager
        .config()
        .active_task_timeout_interval
        .max(manager.config().active_worker_timeout_interval)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Manager {
    /// Run the timeout check now: fail `active` tasks not pinged for
    /// `active_task_timeout_interval` (through the outbox, so the job source hears of it)
    /// and mark `awake` workers not seen for `active_worker_timeout_interval` as `timeout`.
    pub async fn check_timeouts_now(&self) -> Result<TimeoutReport, ApiError> {
        self.flush_seen().await?;
        let now = self.now();
        let task_cutoff = now - chrono_duration(self.config().active_task_timeout_interval);
        let worker_cutoff = now - chrono_duration(self.config().active_worker_timeout_interval);
        // For `worker-status` webhooks: the statuses before, as both timeouts below make
        // workers `timeout` (a timed-out task's worker too). One listing per round, only
        // when a webhook wants the event.
        let statuses_before = if self.wants_worker_status_webhooks() {
            Some(self.store().list_workers().await?)
        } else {
            None
        };
        let failed_tasks = self.store().fail_timed_out_tasks(task_cutoff, now).await?;
        let timed_out_workers = self.store().time_out_workers(worker_cutoff).await?;
        if let Some(before) = statuses_before {
            if !failed_tasks.is_empty() || !timed_out_workers.is_empty() {
                let timeout = crate::model::worker_status::TIMEOUT;
                let now_timeout: std::collections::HashSet<_> = self
                    .store()
                    .list_workers()
                    .await?
                    .into_iter()
                    .filter(|a| a.status == timeout)
                    .map(|a| a.id)
                    .collect();
                for w in before.iter().filter(|w| w.status != timeout) {
                    if now_timeout.contains(&w.id) {
                        self.enqueue_worker_status(w, timeout).await;
                    }
                }
            }
        }
        if !timed_out_workers.is_empty() {
            self.forget_cached_workers();
            tracing::warn!(workers = timed_out_workers.len(), "workers timed out");
        }
        // Workers may have gone away: fail the jobs nobody can finish any more.
        let stranded = self.store().fail_stranded_tasks(now).await?;
        for s in &stranded {
            tracing::warn!(job = %s.job, task = %s.task_id, "job failed: {}", s.reason);
        }
        Ok(TimeoutReport {
            failed_tasks,
            timed_out_workers,
            stranded,
        })
    }

    /// The guard the daemon's timeout loop uses against wall-clock jumps: after a jump,
    /// timeout checks pause for the longer of the two timeout intervals.
    pub fn timeout_jump_guard(&self) -> crate::clock::JumpGuard {
        crate::clock::JumpGuard::new(CLOCK_JUMP_TOLERANCE, guard_grace(self))
    }

    /// One round of the daemon's timeout loop: [`Manager::check_timeouts_now`] unless
    /// `guard` saw the wall clock jump (then `None`, with a warning). `mono` is the
    /// monotonic time of the round.
    pub async fn check_timeouts_guarded(
        &self,
        guard: &mut crate::clock::JumpGuard,
        mono: tokio::time::Instant,
    ) -> Result<Option<TimeoutReport>, ApiError> {
        use crate::clock::JumpVerdict;
        match guard.check(self.now(), mono) {
            JumpVerdict::Run => self.check_timeouts_now().await.map(Some),
            JumpVerdict::Jumped(by) => {
                tracing::warn!(
                    jump_seconds = by.num_seconds(),
                    "the wall clock jumped by {}s between two timeout checks; \
                     skipping timeout checks for {} so that workers can report on the new time",
                    by.num_seconds(),
                    crate::config::format_duration(guard_grace(self)),
                );
                Ok(None)
            }
            JumpVerdict::Deferred => {
                tracing::debug!("timeout check deferred after a wall-clock jump");
                Ok(None)
            }
        }
    }

    /// Run the task cleanup now: delete finished tasks untouched for
    /// `task_cleanup_max_age`, in batches, then (with `job_cleanup_max_age`) the finished
    /// jobs. Both cutoffs are taken from the same moment, the start: a job that finished
    /// while the tasks were deleted waits for the next run, when its tasks go in batches
    /// too, instead of going now with its tasks in one transaction per job. Returns how
    /// many tasks were deleted.
    pub async fn cleanup_now(&self) -> Result<u64, ApiError> {
        self.cleanup_until(&pacing::never).await
    }

    /// [`Manager::cleanup_now`], ended early when `stop` answers true (asked between two
    /// batches, and between two jobs): the daemon's loop passes "shutting down", so that a
    /// cleanup of a million tasks does not hold up the exit for minutes. What was deleted
    /// stays deleted; the next run goes on from there.
    pub async fn cleanup_until(&self, stop: &(dyn Fn() -> bool + Sync)) -> Result<u64, ApiError> {
        let now = self.now();
        let cutoff = now - chrono_duration(self.config().task_cleanup_max_age);
        let (total, stopped) = pacing::run(
            self.store().single_writer(),
            stop,
            |_| {},
            |size| self.store().delete_finished_tasks(cutoff, size),
        )
        .await?;
        if stopped {
            tracing::info!(
                deleted = total,
                "task cleanup stopped for the shutdown; the next run goes on"
            );
            return Ok(total);
        }
        if total > 0 {
            tracing::info!(deleted = total, "cleaned up finished tasks");
        }
        if let Some(age) = self.config().job_cleanup_max_age {
            if !self.config().is_upstream() {
                self.cleanup_jobs_until(now - chrono_duration(age), stop)
                    .await?;
            }
        }
        Ok(total)
    }

    /// The daemon's cleanup: [`Manager::cleanup_until`] the loops are told to stop
    /// (`shutdown` true), so that a run in progress ends between two batches instead of
    /// holding up the exit, or the hand-over of the leader lease, until its last one.
    pub async fn cleanup_until_shutdown(
        &self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<u64, ApiError> {
        let stop = || *shutdown.borrow();
        self.cleanup_until(&stop).await
    }

    /// Delete finished jobs (with their tasks) not updated since `cutoff`. Returns how
    /// many jobs were deleted.
    pub async fn cleanup_jobs(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, ApiError> {
        self.cleanup_jobs_until(cutoff, &pacing::never).await
    }

    /// [`Manager::cleanup_jobs`], ended early when `stop` answers true (asked after each
    /// job).
    async fn cleanup_jobs_until(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<u64, ApiError> {
        use crate::model::JobStatus;
        use crate::store::JobQuery;
        const PAGE: usize = 200;
        let mut offset = 0;
        let mut deleted = 0;
        let mut pacer = Pacer::new(self.store().single_writer());
        loop {
            let page = self
                .list_jobs(&JobQuery {
                    statuses: vec![JobStatus::Completed, JobStatus::Failed, JobStatus::Canceled],
                    limit: Some(PAGE),
                    offset,
                })
                .await?;
            let mut kept = 0;
            for job in &page {
                if job.updated <= cutoff {
                    self.delete_job(job.id).await?;
                    deleted += 1;
                    if stop() {
                        tracing::info!(
                            deleted,
                            "job cleanup stopped for the shutdown; the next run goes on"
                        );
                        return Ok(deleted);
                    }
                    pacer.after_batch().await;
                } else {
                    kept += 1;
                }
            }
            if page.len() < PAGE {
                break;
            }
            offset += kept;
        }
        if deleted > 0 {
            tracing::info!(deleted, "cleaned up finished jobs");
        }
        Ok(deleted)
    }

    /// Clean slate (v2's `-cleanslate`): delete every cached task, in batches, and forget
    /// the download watermark so the next download from the Server is a full one. In
    /// standalone mode the jobs of those tasks go too (a job without tasks would stay
    /// `queued` forever). Workers and the outbox are kept. `progress` is called with the running total after each
    /// batch.
    pub async fn clean_slate(&self, progress: impl FnMut(u64)) -> Result<u64, ApiError> {
        let (total, _) = pacing::run(
            self.store().single_writer(),
            &pacing::never,
            progress,
            |size| self.store().delete_tasks(size),
        )
        .await?;
        self.store()
            .set_setting(crate::store::WATERMARK_SETTING, None)
            .await?;
        tracing::warn!(
            deleted = total,
            "clean slate: erased the cached tasks (and the jobs left without tasks)"
        );
        Ok(total)
    }

    /// Erase the task-update outbox (v2 2.0.12's `-purgequeue`), in batches. `progress` is
    /// called with the running total after each batch.
    pub async fn purge_outbox(&self, progress: impl FnMut(u64)) -> Result<u64, ApiError> {
        let (total, _) = pacing::run(
            self.store().single_writer(),
            &pacing::never,
            progress,
            |size| self.store().purge_outbox(size),
        )
        .await?;
        tracing::warn!(deleted = total, "purged the task-update outbox");
        Ok(total)
    }
}

/// Run every loop of this module until `shutdown` becomes true: the singleton loops
/// ([`run_singleton_loops`]) and this process's own ([`run_local_loops`]). For a Manager
/// that has its store to itself; the daemon runs the singleton loops only while it leads
/// ([`crate::leader::run`]).
pub async fn run_loops(manager: Arc<Manager>, shutdown: watch::Receiver<bool>) {
    tokio::join!(
        run_singleton_loops(manager.clone(), shutdown.clone()),
        run_local_loops(manager, shutdown),
    );
}

/// Run this process's own loops until `shutdown` becomes true, on every Manager: writing
/// the workers' "seen" times it collected ([`crate::seen`]), and adopting the latest image
/// another Manager stored ([`Manager::follow_latest_image`], every
/// [`crate::latest_image::FOLLOW_PERIOD`]).
pub async fn run_local_loops(manager: Arc<Manager>, shutdown: watch::Receiver<bool>) {
    let seen = {
        let manager = manager.clone();
        periodic(
            "seen flush",
            SEEN_FLUSH_PERIOD,
            SEEN_FLUSH_PERIOD,
            shutdown.clone(),
            move || {
                let manager = manager.clone();
                async move { manager.flush_seen().await.map_err(ApiError::from) }
            },
        )
    };
    // The latest image another Manager of the store converted (docs/operations.md, "What
    // is shared between Managers").
    let image = periodic(
        "latest image follow",
        Duration::ZERO,
        crate::latest_image::FOLLOW_PERIOD,
        shutdown,
        move || {
            let manager = manager.clone();
            async move { manager.follow_latest_image().await.map(|_| ()) }
        },
    );
    tokio::join!(seen, image);
}

/// Run the loops that must run once per site until `shutdown` becomes true: the timeout
/// check, the cleanup and the webhook sender (on the leader only, see [`crate::leader`]).
/// The first timeout check waits `active_task_timeout_startup_delay`; intervals are
/// monotonic time, and a wall-clock jump pauses the timeout checks
/// ([`Manager::check_timeouts_guarded`]).
pub async fn run_singleton_loops(manager: Arc<Manager>, shutdown: watch::Receiver<bool>) {
    let timeouts = {
        let manager = manager.clone();
        let shutdown = shutdown.clone();
        let delay = manager.config().active_task_timeout_startup_delay;
        let guard = Arc::new(tokio::sync::Mutex::new(manager.timeout_jump_guard()));
        periodic(
            "timeout check",
            delay,
            TIMEOUT_CHECK_PERIOD,
            shutdown,
            move || {
                let manager = manager.clone();
                let guard = guard.clone();
                async move {
                    let mut guard = guard.lock().await;
                    let mono = tokio::time::Instant::now();
                    manager
                        .check_timeouts_guarded(&mut guard, mono)
                        .await
                        .map(|_| ())
                }
            },
        )
    };
    let cleanup = {
        let manager = manager.clone();
        let stopping = shutdown.clone();
        periodic(
            "task cleanup",
            CLEANUP_STARTUP_DELAY,
            CLEANUP_PERIOD,
            shutdown.clone(),
            move || {
                let manager = manager.clone();
                let stopping = stopping.clone();
                async move { manager.cleanup_until_shutdown(&stopping).await.map(|_| ()) }
            },
        )
    };
    // Sends queued webhook deliveries (docs/webhooks.md); returns at once without any.
    let webhooks = crate::webhooks::send::run(manager, shutdown);
    tokio::join!(timeouts, cleanup, webhooks);
}

/// Call `job` after `delay`, then every `period` (measured from the start of each run,
/// skipping missed ticks), until `shutdown` becomes true. Errors are logged, not fatal.
async fn periodic<F, Fut>(
    name: &'static str,
    delay: Duration,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ApiError>>,
{
    let start = tokio::time::Instant::now() + delay;
    let mut ticks = tokio::time::interval_at(start, period.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if let Err(e) = job().await {
                    tracing::error!("{name} failed: {e}");
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}
