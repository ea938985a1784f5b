//! The standalone consumer of the task-update outbox.
//!
//! Every status change of a task reaches the outbox (workers' updates, assignments,
//! timeouts, the cascades of job actions), whatever the mode. In upstream mode the
//! upstream pusher drains it to the Flamenco Server; in standalone mode this loop drains
//! it instead, so both modes share the same pipeline:
//!
//! 1. peek the oldest updates, in arrival order ([`crate::store::OutboxStore::outbox_peek`]);
//! 2. apply their consequences to their jobs in one store operation
//!    ([`crate::store::JobStore::apply_updates_to_jobs`]: job status derivation, task counts,
//!    the cascade of a failed job);
//! 3. acknowledge them ([`crate::store::OutboxStore::outbox_ack`]).
//!
//! Restart-safe and idempotent: a crash between 2 and 3 consumes the same updates again,
//! and step 2 decides from the tasks' current statuses and current counts, so doing it
//! twice gives the same job. Updates without a status, or for tasks without a job, are
//! acknowledged without effect (task logs are not kept in standalone mode).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::manager::{ApiError, Manager};
use crate::store::JobStatusChange;

/// Updates consumed per store round trip.
pub const BATCH: usize = 500;
/// How often an empty outbox is looked at again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The longest wait after repeated store errors.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one consumer step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsumeReport {
    /// Updates acknowledged.
    pub consumed: usize,
    /// Jobs whose status changed, in order.
    pub changes: Vec<JobStatusChange>,
}

impl Manager {
    /// Consume up to `limit` updates from the outbox now (steps 1–3 above). Refused in
    /// upstream mode, where the outbox belongs to the Flamenco Server.
    pub async fn consume_outbox_now(&self, limit: usize) -> Result<ConsumeReport, ApiError> {
        if self.config().is_upstream() {
            return Err(ApiError::Conflict(
                "the outbox is pushed to the Flamenco Server in upstream mode; \
                 the standalone consumer does not run"
                    .into(),
            ));
        }
        let updates = self.store().outbox_peek(limit).await?;
        if updates.is_empty() {
            return Ok(ConsumeReport::default());
        }
        let changes = self
            .store()
            .apply_updates_to_jobs(&updates, self.now())
            .await?;
        for c in &changes {
            tracing::info!(job = %c.job, from = %c.from, to = %c.to, "job status changed");
        }
        self.enqueue_webhooks(&updates, &changes).await?;
        let ids: Vec<_> = updates.iter().map(|u| u.id).collect();
        self.store().outbox_ack(&ids).await?;
        Ok(ConsumeReport {
            consumed: updates.len(),
            changes,
        })
    }

    /// Consume until the outbox is empty (tests, tools).
    pub async fn drain_outbox_to_jobs(&self) -> Result<ConsumeReport, ApiError> {
        let mut total = ConsumeReport::default();
        loop {
            let step = self.consume_outbox_now(BATCH).await?;
            total.consumed += step.consumed;
            total.changes.extend(step.changes);
            if step.consumed < BATCH {
                return Ok(total);
            }
        }
    }
}

/// Run the consumer until `shutdown` becomes true: a full batch is followed at once by
/// the next, an empty outbox is looked at every [`POLL_INTERVAL`], store errors are
/// logged and retried with a growing pause. A batch in progress is finished before
/// stopping. Does nothing in upstream mode.
pub async fn run(manager: Arc<Manager>, mut shutdown: watch::Receiver<bool>) {
    if manager.config().is_upstream() {
        tracing::debug!("upstream mode: the standalone outbox consumer does not run");
        return;
    }
    tracing::debug!("standalone outbox consumer started");
    let mut backoff = POLL_INTERVAL;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let wait = match manager.consume_outbox_now(BATCH).await {
            Ok(report) if report.consumed >= BATCH => {
                backoff = POLL_INTERVAL;
                tokio::task::yield_now().await;
                continue;
            }
            Ok(_) => {
                backoff = POLL_INTERVAL;
                POLL_INTERVAL
            }
            Err(e) => {
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tracing::error!(
                    "consuming the task-update outbox failed (retrying in {backoff:?}): {e}"
                );
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // A clean shutdown leaves nothing behind that arrived before it: drain what is there
    // (bounded, so a store that keeps failing cannot hold the shutdown up).
    for _ in 0..16 {
        match manager.consume_outbox_now(BATCH).await {
            Ok(report) if report.consumed >= BATCH => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!("the last pass over the task-update outbox failed: {e}");
                break;
            }
        }
    }
    tracing::debug!("standalone outbox consumer stopped");
}
