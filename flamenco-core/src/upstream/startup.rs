//! The startup notification (manager-v2.md §5.2): tell the Server our URL, variables,
//! path replacements, worker count and the workers' task types, retrying with backoff
//! until it answers 2xx.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::status::Call;
use super::wire::StartupBody;
use super::{sleep_or_stop, CallError};
use crate::Manager;

/// The body as of now: workers are counted (−1 when the store cannot say) and their task
/// types collected on every attempt.
pub async fn body(manager: &Manager) -> StartupBody {
    let (count, types) = match manager.store().list_workers().await {
        Ok(workers) => {
            let types: BTreeSet<String> = workers
                .iter()
                .flat_map(|w| w.supported_task_types.iter().cloned())
                .collect();
            (workers.len() as i64, types.into_iter().collect())
        }
        Err(e) => {
            tracing::warn!("cannot count workers for the startup notification: {e}");
            (-1, Vec::new())
        }
    };
    StartupBody::new(manager.config(), count, types)
}

/// Send the notification once.
pub async fn notify_once(manager: &Manager) -> Result<(), CallError> {
    let Some(up) = manager.upstream() else {
        return Ok(());
    };
    let body = body(manager).await;
    let result = up.client().startup(&body).await;
    match &result {
        Ok(()) => up.tracker().success(Call::Startup, manager.now()),
        Err(e) => up
            .tracker()
            .failure(Call::Startup, e.to_string(), manager.now()),
    }
    result
}

/// Notify, retrying until the Server accepts it or `shutdown` is cancelled.
pub async fn run(manager: Arc<Manager>, shutdown: CancellationToken) {
    let Some(up) = manager.upstream() else {
        return;
    };
    let options = up.options().clone();
    if sleep_or_stop(options.startup_delay, &shutdown).await {
        return;
    }
    let mut backoff = Backoff::new(options.backoff_initial, options.backoff_cap);
    loop {
        match notify_once(&manager).await {
            Ok(()) => {
                tracing::info!("the Flamenco Server accepted the startup notification");
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    "startup notification failed: {e}; retrying in {:.1}s",
                    delay.as_secs_f64()
                );
                if sleep_or_stop(delay, &shutdown).await {
                    return;
                }
            }
        }
    }
}
