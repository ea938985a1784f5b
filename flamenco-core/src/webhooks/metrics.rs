//! The webhook metrics, per receiver URL (`url` label; docs/webhooks.md, "Monitoring"):
//!
//! * `flamenco_webhook_deliveries_total{url, outcome}`: attempts that were `delivered`
//!   (2xx), `failed` (to be retried) or `given_up`;
//! * `flamenco_webhook_queue{url, state}`: deliveries `queued` (still to be tried) and
//!   `failed` (given up), refreshed by the sender on each pass;
//! * `flamenco_webhook_last_success{url}`: Unix time of the last accepted delivery.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::WebhookQueueStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    url: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    url: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabels {
    url: String,
}

/// What happened to one delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed,
    GivenUp,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::GivenUp => "given_up",
        }
    }
}

/// The webhook families (cheap to clone).
#[derive(Clone, Default)]
pub struct WebhookMetrics {
    deliveries: Family<OutcomeLabels, Counter>,
    queue: Family<QueueLabels, Gauge>,
    last_success: Family<UrlLabels, Gauge>,
}

impl WebhookMetrics {
    /// Register the families in `registry`.
    pub fn register(registry: &mut Registry) -> WebhookMetrics {
        let m = WebhookMetrics::default();
        registry.register(
            "flamenco_webhook_deliveries",
            "Webhook delivery attempts, by receiver url and outcome: delivered (2xx), failed (retried later), given_up",
            m.deliveries.clone(),
        );
        registry.register(
            "flamenco_webhook_queue",
            "Webhook deliveries in the store, by receiver url and state: queued (still to be tried), failed (given up)",
            m.queue.clone(),
        );
        registry.register(
            "flamenco_webhook_last_success",
            "Unix time of the last delivery a receiver accepted, by receiver url",
            m.last_success.clone(),
        );
        m
    }

    /// Make the families show every configured URL from the start (zeros).
    pub fn init(&self, urls: &[String]) {
        for url in urls {
            for outcome in [Outcome::Delivered, Outcome::Failed, Outcome::GivenUp] {
                let _ = self.deliveries.get_or_create(&OutcomeLabels {
                    url: url.clone(),
                    outcome: outcome.as_str(),
                });
            }
            self.set_queue(&WebhookQueueStats {
                url: url.clone(),
                ..Default::default()
            });
        }
    }

    /// One attempt to `url` ended with `outcome` at Unix time `unix_secs`.
    pub fn record(&self, url: &str, outcome: Outcome, unix_secs: i64) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                url: url.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
        if outcome == Outcome::Delivered {
            self.last_success
                .get_or_create(&UrlLabels {
                    url: url.to_string(),
                })
                .set(unix_secs);
        }
    }

    /// The store's queue of one URL.
    pub fn set_queue(&self, stats: &WebhookQueueStats) {
        for (state, n) in [("queued", stats.queued), ("failed", stats.failed)] {
            self.queue
                .get_or_create(&QueueLabels {
                    url: stats.url.clone(),
                    state,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Delivered attempts to `url` so far (tests).
    pub fn delivered(&self, url: &str) -> u64 {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                url: url.to_string(),
                outcome: Outcome::Delivered.as_str(),
            })
            .get()
    }

    /// Failed attempts to `url` so far (tests).
    pub fn failed(&self, url: &str) -> u64 {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                url: url.to_string(),
                outcome: Outcome::Failed.as_str(),
            })
            .get()
    }
}
