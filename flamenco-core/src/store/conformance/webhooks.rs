//! Conformance cases for the webhook delivery queue ([`crate::store::WebhookStore`]):
//! due order, retry scheduling, giving up, deletion on delivery and the per-URL stats.

use std::sync::Arc;

use super::at;
use crate::model::ObjectId;

fn nth_id(n: u32) -> ObjectId {
    super::nth_id(0x77, n)
}
use crate::store::{NewWebhookDelivery, Store, WebhookQueueStats};

fn delivery(n: u32, url: &str, t: i64) -> NewWebhookDelivery {
    NewWebhookDelivery {
        id: nth_id(n),
        url: url.into(),
        event: "job-status".into(),
        body: format!("{{\"n\":{n}}}"),
        created: at(t),
    }
}

pub async fn webhook_queue_retries_gives_up_and_counts(store: Arc<dyn Store>) {
    assert!(store
        .webhook_due(at(100), 10)
        .await
        .expect("due")
        .is_empty());
    assert!(store.webhook_stats().await.expect("stats").is_empty());
    store
        .webhook_enqueue(&[
            delivery(1, "http://a/", 5),
            delivery(2, "http://b/", 3),
            delivery(3, "http://a/", 7),
        ])
        .await
        .expect("enqueue");
    store
        .webhook_enqueue(&[])
        .await
        .expect("nothing to enqueue");

    // Due at their creation, earliest first; not before.
    let due = store.webhook_due(at(6), 10).await.expect("due");
    let ids: Vec<_> = due.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![nth_id(2), nth_id(1)]);
    assert_eq!(due[1].url, "http://a/");
    assert_eq!(due[1].event, "job-status");
    assert_eq!(due[1].body, "{\"n\":1}", "the body is kept byte for byte");
    assert_eq!(due[1].created, at(5));
    assert_eq!(due[1].attempts, 0);
    assert_eq!(due[1].next_attempt, Some(at(5)));
    assert_eq!(due[1].last_error, None);
    assert_eq!(store.webhook_due(at(100), 1).await.expect("due").len(), 1);

    // A failure counts and moves the next attempt.
    store
        .webhook_failed(nth_id(1), at(20), Some(at(50)), "HTTP 500")
        .await
        .expect("failed");
    let due = store.webhook_due(at(49), 10).await.expect("due");
    assert_eq!(
        due.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![nth_id(2), nth_id(3)]
    );
    let due = store.webhook_due(at(50), 10).await.expect("due");
    let one = due.iter().find(|d| d.id == nth_id(1)).expect("due again");
    assert_eq!(one.attempts, 1);
    assert_eq!(one.next_attempt, Some(at(50)));
    assert_eq!(one.last_error.as_deref(), Some("HTTP 500"));

    // Delivered: gone. Given up: kept, never due, counted as failed.
    store.webhook_delivered(nth_id(2)).await.expect("delivered");
    store
        .webhook_delivered(nth_id(99))
        .await
        .expect("an unknown id is ignored");
    store
        .webhook_failed(nth_id(3), at(30), None, "connection refused")
        .await
        .expect("given up");
    let due = store.webhook_due(at(1000), 10).await.expect("due");
    assert_eq!(
        due.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![nth_id(1)]
    );

    let stats = store.webhook_stats().await.expect("stats");
    assert_eq!(
        stats,
        vec![WebhookQueueStats {
            url: "http://a/".into(),
            queued: 1,
            failed: 1,
            last_error: Some("connection refused".into()),
        }]
    );
}
