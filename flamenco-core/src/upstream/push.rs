//! The update pusher (manager-v2.md §5.5, §5.6): send the outbox to the Server in
//! batches, in arrival order; remove what it acknowledged; apply its cancel list.
//!
//! When: as soon as `task_update_push_max_count` updates wait, when the oldest has waited
//! `task_update_push_max_interval`, and at least every `cancel_task_fetch_max_interval`
//! (an empty push, `[]`, just to learn about cancellations). After a failure the next
//! attempt waits with exponential backoff and jitter. A backlog (after an outage) is sent
//! batch after batch until it is gone.
//!
//! Never blocked by one update: an update carried by `set_aside_after` answered pushes
//! without being acknowledged is set aside (kept, counted, logged; see
//! `flamenco queue outbox`), and the updates behind it go on. A batch the Server refuses
//! as too large (413) is halved; a single update refused that way is set aside at once.
//!
//! On a shared store (several Managers on one MongoDB) the push loop runs on the leader
//! only, and checks right before each push that this Manager still holds the leader lease
//! (one store read, [`check_still_leading`]): a leader that lost it meanwhile sends
//! nothing. This narrows, but cannot close, the window for a late push (docs/operations.md,
//! "When the database fails"): Server 2.0.4 takes no fencing token.
//!
//! Gzip (`upstream_gzip`): `true` always compresses; `auto` compresses until the Server
//! refuses a compressed body (400 or 415), or answers one without acknowledging anything
//! while the same batch sent plain is acknowledged, then sends plain JSON for the rest of
//! the process (logged once).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::status::Call;
use super::wire::{push_body, BatchAnswer};
use super::{CallError, Upstream};
use crate::config::UpstreamGzip;
use crate::model::{ObjectId, TaskUpdate};
use crate::store::{CancelReport, StoreError, LEADER_LEASE};
use crate::Manager;

/// What one push did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PushOutcome {
    /// Updates in the batch (0 for a cancel poll).
    pub sent: usize,
    /// Updates of the batch the Server acknowledged (and that left the outbox).
    pub acknowledged: u64,
    /// Updates set aside by this push.
    pub set_aside: Vec<ObjectId>,
    /// What the cancel list did.
    pub cancels: CancelReport,
    /// Whether the batch went out compressed.
    pub gzip: bool,
}

/// A failed push: nothing was removed from the outbox.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the store failed while pushing: {0}")]
    Store(#[from] StoreError),
    /// The Server refused a batch of several updates as too large (413).
    #[error("the Server refused a batch of {0} updates as too large")]
    TooLarge(usize),
    #[error("not in upstream mode: no `flamenco:` Server URL is configured")]
    Standalone,
    /// The push loop's Manager no longer holds the leader lease: nothing was sent.
    #[error("not sent: this Manager no longer holds the leader lease ({0}); the leader pushes")]
    NotLeader(String),
}

/// Totals of several pushes (`flamenco push`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub pushes: u64,
    pub sent: u64,
    pub acknowledged: u64,
    pub set_aside: u64,
    /// Running tasks the Server canceled (now `cancel-requested` here).
    pub cancel_requested: u64,
    /// Tasks for which a `canceled` (or final) update was queued.
    pub canceled: u64,
    /// Updates still waiting at the end.
    pub remaining: u64,
}

impl PushSummary {
    fn add(&mut self, o: &PushOutcome) {
        self.pushes += 1;
        self.sent += o.sent as u64;
        self.acknowledged += o.acknowledged;
        self.set_aside += o.set_aside.len() as u64;
        self.cancel_requested += o.cancels.cancel_requested.len() as u64;
        self.canceled += o.cancels.queued.len() as u64;
    }
}

/// Push the oldest `limit` waiting updates (none: a cancel poll) once, now.
pub async fn push_once(manager: &Manager, limit: usize) -> Result<PushOutcome, PushError> {
    push_checked(manager, limit, Fence::None).await
}

/// Whether a push first checks that this Manager holds the leader lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fence {
    /// `flamenco push` and the SDK: a push asked for by hand.
    None,
    /// The leader's push loop.
    Leader,
}

/// Before a push of the leader's loop: does this Manager still hold the leader lease?
/// First its own view (no store call), then the lease as the store has it, judged on the
/// store's clock. Always true with a store that is not shared (the embedded one).
pub async fn check_still_leading(manager: &Manager) -> Result<(), PushError> {
    let store = manager.store();
    if !store.coordination_shared() {
        return Ok(());
    }
    if !manager.leadership().is_leader() {
        return Err(PushError::NotLeader("it stepped down".into()));
    }
    let me = manager.lease_holder();
    match store.lease_current(LEADER_LEASE).await? {
        Some(lease)
            if lease.holder == me && lease.store_now.is_none_or(|now| lease.is_valid(now)) =>
        {
            Ok(())
        }
        Some(lease) if lease.holder == me => Err(PushError::NotLeader(
            "its lease expired or was released".into(),
        )),
        Some(lease) => Err(PushError::NotLeader(format!(
            "the lease is held by {}",
            lease.holder
        ))),
        None => Err(PushError::NotLeader("nobody holds the lease".into())),
    }
}

async fn push_checked(
    manager: &Manager,
    limit: usize,
    fence: Fence,
) -> Result<PushOutcome, PushError> {
    let up = manager.upstream().ok_or(PushError::Standalone)?;
    let _one_at_a_time = up.push_lock.lock().await;
    let result = push_locked(manager, up, limit, fence).await;
    let now = manager.now();
    match &result {
        Ok(o) => {
            up.tracker().success(Call::Push, now);
            up.tracker().totals(|t| {
                t.pushes += 1;
                t.updates_sent += o.sent as u64;
                t.updates_acknowledged += o.acknowledged;
                t.updates_set_aside += o.set_aside.len() as u64;
                t.cancel_requests += o.cancels.cancel_requested.len() as u64;
            });
        }
        // Not a failure of the Server: nothing was sent.
        Err(PushError::NotLeader(_)) => {}
        Err(e) => up.tracker().failure(Call::Push, e.to_string(), now),
    }
    if let (Ok(backlog), Ok(aside)) = (
        manager.store().outbox_len().await,
        manager.store().outbox_set_aside_len().await,
    ) {
        up.tracker().counts(backlog, aside);
    }
    result
}

async fn push_locked(
    manager: &Manager,
    up: &Upstream,
    limit: usize,
    fence: Fence,
) -> Result<PushOutcome, PushError> {
    let store = manager.store();
    let batch = store.outbox_peek(limit).await?;
    let json = push_body(&batch);
    if fence == Fence::Leader {
        // As late as possible: right before the request.
        check_still_leading(manager).await?;
    }
    let (answer, gzip) = match send(up, &batch, &json).await {
        Ok(sent) => sent,
        Err(CallError::Status { status: 413, .. }) if batch.len() > 1 => {
            return Err(PushError::TooLarge(batch.len()));
        }
        Err(CallError::Status { status: 413, body }) if batch.len() == 1 => {
            // One update too large for the Server: it can never go through.
            let id = batch[0].id;
            let aside = store
                .outbox_note_unacknowledged(&[id], 1, manager.now())
                .await?;
            log_set_aside(
                &batch,
                &aside,
                &format!("refused as too large (413: {body})"),
            );
            return Ok(PushOutcome {
                sent: 1,
                set_aside: aside,
                ..PushOutcome::default()
            });
        }
        Err(e) => return Err(e.into()),
    };

    let sent: HashSet<ObjectId> = batch.iter().map(|u| u.id).collect();
    let handled: Vec<ObjectId> = answer
        .handled_update_ids
        .iter()
        .copied()
        .filter(|id| sent.contains(id))
        .collect();
    let acknowledged = store.outbox_ack(&handled).await?;
    let handled: HashSet<ObjectId> = handled.into_iter().collect();
    let unacknowledged: Vec<ObjectId> = batch
        .iter()
        .map(|u| u.id)
        .filter(|id| !handled.contains(id))
        .collect();
    let mut set_aside = Vec::new();
    if !unacknowledged.is_empty() {
        tracing::warn!(
            sent = batch.len(),
            acknowledged,
            "the Flamenco Server did not acknowledge {} update(s); they stay queued",
            unacknowledged.len()
        );
        set_aside = store
            .outbox_note_unacknowledged(
                &unacknowledged,
                up.options().set_aside_after,
                manager.now(),
            )
            .await?;
        log_set_aside(
            &batch,
            &set_aside,
            &format!(
                "not acknowledged by {} pushes",
                up.options().set_aside_after
            ),
        );
    }
    let cancels = if answer.cancel_task_ids.is_empty() {
        CancelReport::default()
    } else {
        let report = store
            .apply_upstream_cancels(&answer.cancel_task_ids, manager.now())
            .await?;
        if !report.cancel_requested.is_empty() || !report.queued.is_empty() {
            tracing::info!(
                running = report.cancel_requested.len(),
                queued_canceled = report.queued.len(),
                "the Flamenco Server canceled tasks"
            );
        }
        report
    };
    Ok(PushOutcome {
        sent: batch.len(),
        acknowledged,
        set_aside,
        cancels,
        gzip,
    })
}

/// Send a prepared batch, negotiating gzip in `auto` mode. Returns the answer and
/// whether the accepted request was compressed.
async fn send(
    up: &Upstream,
    batch: &[TaskUpdate],
    json: &[u8],
) -> Result<(BatchAnswer, bool), CallError> {
    if !up.use_gzip() {
        return up.client().push(json, false).await.map(|a| (a, false));
    }
    let auto = up.gzip == UpstreamGzip::Auto;
    match up.client().push(json, true).await {
        Err(CallError::Status { status, .. }) if auto && (status == 400 || status == 415) => {
            up.gzip_refused(&format!("it answered {status} to a compressed body"));
            up.client().push(json, false).await.map(|a| (a, false))
        }
        Ok(answer)
            if auto
                && !batch.is_empty()
                && answer.handled_update_ids.is_empty()
                && answer.modified_count == 0 =>
        {
            // A Server that ignores Content-Encoding may read the compressed body as "no
            // updates". Ask once more, plain: if that is acknowledged, gzip is the problem.
            let plain = up.client().push(json, false).await?;
            if !plain.handled_update_ids.is_empty() {
                up.gzip_refused("it acknowledged nothing of a compressed body");
            }
            Ok((plain, false))
        }
        other => other.map(|a| (a, true)),
    }
}

fn log_set_aside(batch: &[TaskUpdate], ids: &[ObjectId], why: &str) {
    for id in ids {
        if let Some(u) = batch.iter().find(|u| u.id == *id) {
            tracing::error!(
                update = %u.id,
                task = %u.task_id,
                status = u.task_status.as_ref().map(|s| s.as_str()).unwrap_or(""),
                "setting aside a task update the Flamenco Server does not take ({why}); see `flamenco queue outbox`, retry with `flamenco push --retry-set-aside`"
            );
        }
    }
}

/// Push until the outbox is empty (or stops shrinking), reporting after each push. At
/// least one push is made, so an empty outbox still fetches the cancel list.
pub async fn push_all(
    manager: &Manager,
    mut progress: impl FnMut(&PushSummary),
) -> Result<PushSummary, PushError> {
    let limit = manager.config().task_update_push_max_count.max(1) as usize;
    let mut limit_now = limit;
    let mut summary = PushSummary::default();
    loop {
        let outcome = match push_once(manager, limit_now).await {
            Ok(o) => o,
            Err(PushError::TooLarge(n)) if n > 1 => {
                limit_now = (n / 2).max(1);
                continue;
            }
            Err(e) => return Err(e),
        };
        summary.add(&outcome);
        summary.remaining = manager.store().outbox_len().await?;
        progress(&summary);
        let progressed = outcome.acknowledged > 0 || !outcome.set_aside.is_empty();
        if outcome.sent == 0 || summary.remaining == 0 || !progressed {
            return Ok(summary);
        }
        limit_now = (limit_now * 2).min(limit);
    }
}

/// The push loop: check every `push_check_interval` (or on a kick) whether a push is due;
/// push; drain a backlog; back off after failures. Stops when `shutdown` is cancelled,
/// after the push in progress.
pub async fn run(manager: Arc<Manager>, shutdown: CancellationToken) {
    let Some(up) = manager.upstream() else {
        return;
    };
    let options = up.options().clone();
    let config = manager.config();
    let max_count = config.task_update_push_max_count.max(1) as usize;
    let max_interval = config.task_update_push_max_interval;
    let cancel_interval = config.cancel_task_fetch_max_interval;
    let mut backoff = Backoff::new(options.backoff_initial, options.backoff_cap);
    let mut limit = max_count;
    let mut last_success: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(options.push_check_interval) => {},
            _ = up.push_kick.notified() => {},
        }
        if retry_at.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let count = match manager.store().outbox_len().await {
            Ok(n) => n as usize,
            Err(e) => {
                tracing::warn!("cannot read the outbox: {e}");
                continue;
            }
        };
        let since = last_success.map(|t| t.elapsed());
        let waited = |d: Duration| since.is_none_or(|s| s >= d);
        let due =
            (count > 0 && (count >= max_count || waited(max_interval))) || waited(cancel_interval);
        if !due {
            continue;
        }
        // Push; keep going while full batches make progress (a backlog).
        loop {
            match push_checked(&manager, limit, Fence::Leader).await {
                Ok(o) => {
                    last_success = Some(Instant::now());
                    retry_at = None;
                    backoff.reset();
                    let full = o.sent >= limit;
                    limit = (limit * 2).min(max_count);
                    let progressed = o.acknowledged > 0 || !o.set_aside.is_empty();
                    if !(full && progressed) || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(PushError::TooLarge(n)) => {
                    limit = (n / 2).max(1);
                    tracing::warn!("the Flamenco Server refused {n} updates as too large; sending {limit} at a time");
                }
                Err(e @ PushError::NotLeader(_)) => {
                    // The leader election stops this loop shortly; nothing to retry.
                    tracing::warn!("{e}");
                    break;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    retry_at = Some(Instant::now() + delay);
                    up.tracker().push_retry_at(
                        chrono::Duration::from_std(delay)
                            .ok()
                            .map(|d| manager.now() + d),
                    );
                    tracing::warn!(
                        failures = backoff.failures(),
                        "pushing task updates failed: {e}; retrying in {:.1}s",
                        delay.as_secs_f64()
                    );
                    break;
                }
            }
        }
    }
}
