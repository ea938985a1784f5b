//! The webhook delivery queue: deliveries waiting to be sent, durable like the outbox, in
//! both stores (docs/webhooks.md).
//!
//! [`WebhookStore`] is the storage side only. What is enqueued, how bodies are built and
//! signed, and when a failed delivery is tried again are decided by [`crate::webhooks`].
//! A delivery is deleted once its receiver accepted it; one that was given up stays, with
//! no next attempt, so that `flamenco config check --connect` can show it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::model::ObjectId;

/// A delivery to queue: due at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhookDelivery {
    /// Also the delivery id in the body, so receivers can drop duplicates.
    pub id: ObjectId,
    pub url: String,
    /// `job-status`, `task-failed` or `worker-status`.
    pub event: String,
    /// The exact JSON body to send (and sign).
    pub body: String,
    pub created: DateTime<Utc>,
}

/// A queued delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: ObjectId,
    pub url: String,
    pub event: String,
    pub body: String,
    pub created: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it is tried next; `None`: given up.
    pub next_attempt: Option<DateTime<Utc>>,
    /// What went wrong the last time.
    pub last_error: Option<String>,
}

/// The queue of one webhook URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookQueueStats {
    pub url: String,
    /// Deliveries still to be tried.
    pub queued: u64,
    /// Deliveries given up.
    pub failed: u64,
    /// The error of the most recent failed attempt of any of its deliveries.
    pub last_error: Option<String>,
}

/// Storage of the webhook delivery queue.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Queue `deliveries`, each due at its `created` time.
    async fn webhook_enqueue(&self, deliveries: &[NewWebhookDelivery]) -> StoreResult<()>;

    /// Up to `limit` deliveries due at `now`, the earliest due first.
    async fn webhook_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<WebhookDelivery>>;

    /// The receiver accepted delivery `id`: remove it (unknown ids are ignored).
    async fn webhook_delivered(&self, id: ObjectId) -> StoreResult<()>;

    /// An attempt of delivery `id` failed at `at` with `error`: count it and try again
    /// at `next_attempt`, or (`None`) give it up.
    async fn webhook_failed(
        &self,
        id: ObjectId,
        at: DateTime<Utc>,
        next_attempt: Option<DateTime<Utc>>,
        error: &str,
    ) -> StoreResult<()>;

    /// The queue per URL, sorted by URL.
    async fn webhook_stats(&self) -> StoreResult<Vec<WebhookQueueStats>>;
}
