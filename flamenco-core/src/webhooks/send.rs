//! The webhook sender: a background loop that POSTs due deliveries from the store's queue
//! and records the outcome.
//!
//! * Each pass takes up to [`BATCH`] due deliveries (earliest due first) and sends them
//!   concurrently, each bounded by [`super::REQUEST_TIMEOUT`]; nothing else waits on it.
//! * A 2xx answer deletes the delivery. Anything else (another status, a network error,
//!   a timeout) counts an attempt and schedules the next one after [`super::backoff`];
//!   after [`super::MAX_ATTEMPTS`] the delivery is given up (kept, shown as failed).
//! * Times come from the Manager's clock, so tests move them with a `ManualClock`.
//! * Delivery is at least once: a crash after the receiver's answer and before the store
//!   update sends it again, with the same `X-Flamenco-Delivery` id.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::metrics::Outcome;
use super::{WebhookConfig, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
use crate::manager::Manager;
use crate::store::{StoreResult, WebhookDelivery};

/// Deliveries sent per pass.
pub const BATCH: usize = 64;
/// How often the queue is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The HTTP client and the configured receivers.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    hooks: Arc<Vec<WebhookConfig>>,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    pub delivered: usize,
    pub failed: usize,
    pub given_up: usize,
}

impl SendReport {
    pub fn attempted(&self) -> usize {
        self.delivered + self.failed + self.given_up
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Sender {
    /// A sender for `hooks`, with a client that gives up on one request after
    /// [`super::REQUEST_TIMEOUT`].
    pub fn new(hooks: Vec<WebhookConfig>) -> Result<Sender, String> {
        // reqwest is built without a TLS crypto provider of its own.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = reqwest::Client::builder()
            .connect_timeout(super::REQUEST_TIMEOUT)
            .timeout(super::REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(format!("Flamenco-Manager/{} webhooks", crate::VERSION))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Sender {
            client,
            hooks: Arc::new(hooks),
        })
    }

    fn hook(&self, url: &str) -> Option<&WebhookConfig> {
        self.hooks.iter().find(|h| h.url.trim() == url)
    }

    /// One attempt: `Ok` on a 2xx answer, else what went wrong.
    async fn attempt(&self, d: &WebhookDelivery) -> Result<(), String> {
        let Some(hook) = self.hook(&d.url) else {
            return Err("this URL is no longer in the configuration's webhooks".into());
        };
        let mut req = self
            .client
            .post(&d.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, &d.event)
            .header(DELIVERY_HEADER, d.id.to_string());
        if !hook.secret.is_empty() {
            req = req.header(
                SIGNATURE_HEADER,
                super::signature(&hook.secret, d.body.as_bytes()),
            );
        }
        match req.body(d.body.clone()).send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("the receiver answered HTTP {}", resp.status())),
            Err(e) => Err(error_chain(&e)),
        }
    }

    /// Send the deliveries due now, once each, and record the outcomes.
    pub async fn send_due_now(&self, manager: &Manager) -> StoreResult<SendReport> {
        let store = manager.store();
        let due = store.webhook_due(manager.now(), BATCH).await?;
        let attempts = futures::future::join_all(due.iter().map(|d| self.attempt(d))).await;
        let metrics = manager.metrics().webhooks();
        let mut report = SendReport::default();
        for (d, result) in due.iter().zip(attempts) {
            let now = manager.now();
            match result {
                Ok(()) => {
                    store.webhook_delivered(d.id).await?;
                    metrics.record(&d.url, Outcome::Delivered, now.timestamp());
                    report.delivered += 1;
                }
                Err(error) => {
                    let attempts = d.attempts.saturating_add(1);
                    let gone = self.hook(&d.url).is_none();
                    let next = match super::backoff(attempts) {
                        Some(wait) if !gone => Some(
                            now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                        ),
                        _ => None,
                    };
                    store.webhook_failed(d.id, now, next, &error).await?;
                    if next.is_some() {
                        tracing::warn!(url = %d.url, attempts, "webhook delivery failed, will retry: {error}");
                        metrics.record(&d.url, Outcome::Failed, now.timestamp());
                        report.failed += 1;
                    } else {
                        tracing::error!(url = %d.url, attempts, "webhook delivery given up: {error}");
                        metrics.record(&d.url, Outcome::GivenUp, now.timestamp());
                        report.given_up += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Refresh the queue gauges from the store.
    pub async fn refresh_metrics(&self, manager: &Manager) -> StoreResult<()> {
        let metrics = manager.metrics().webhooks();
        let stats = manager.store().webhook_stats().await?;
        for hook in self.hooks.iter() {
            let url = hook.url.trim();
            match stats.iter().find(|s| s.url == url) {
                Some(s) => metrics.set_queue(s),
                None => metrics.set_queue(&crate::store::WebhookQueueStats {
                    url: url.to_string(),
                    ..Default::default()
                }),
            }
        }
        Ok(())
    }
}

/// Send due deliveries until `shutdown` becomes true: a full batch is followed at once by
/// the next, otherwise the queue is looked at every [`POLL_INTERVAL`]. Store errors are
/// logged and retried on the next pass. Returns at once when no webhook is configured.
pub async fn run(manager: Arc<Manager>, mut shutdown: watch::Receiver<bool>) {
    let hooks = manager.config().webhooks.clone();
    if hooks.is_empty() {
        return;
    }
    let sender = match Sender::new(hooks) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("webhooks are not sent: {e}");
            return;
        }
    };
    let urls: Vec<String> = sender
        .hooks
        .iter()
        .map(|h| h.url.trim().to_string())
        .collect();
    manager.metrics().webhooks().init(&urls);
    tracing::debug!(webhooks = urls.len(), "webhook sender started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let wait = match sender.send_due_now(&manager).await {
            Ok(report) => {
                if let Err(e) = sender.refresh_metrics(&manager).await {
                    tracing::warn!("cannot read the webhook queue for the metrics: {e}");
                }
                if report.attempted() >= BATCH {
                    Duration::ZERO
                } else {
                    POLL_INTERVAL
                }
            }
            Err(e) => {
                tracing::error!("sending webhooks failed (retrying in {POLL_INTERVAL:?}): {e}");
                POLL_INTERVAL
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
    tracing::debug!("webhook sender stopped");
}
