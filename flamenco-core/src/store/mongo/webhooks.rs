//! The `webhook_deliveries` collection: the MongoDB side of [`crate::store::WebhookStore`].
//! One document per queued delivery; `next_attempt` is null once it is given up. The
//! queue is small (deliveries are deleted once accepted), so the due query runs on the
//! `{next_attempt: 1}` index, created at connect with the others (`indexes`).

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::{Collection, Database};

use super::codec::{date, oid, Fields};
use super::errors::Mongo;
use crate::model::ObjectId;
use crate::store::webhooks::{NewWebhookDelivery, WebhookDelivery, WebhookQueueStats};
use crate::store::StoreResult;

/// The collection's name.
pub(super) const DELIVERIES: &str = "webhook_deliveries";

fn coll(db: &Database) -> Collection<Document> {
    db.collection(DELIVERIES)
}

pub(super) async fn enqueue(db: &Database, deliveries: &[NewWebhookDelivery]) -> StoreResult<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let docs: Vec<Document> = deliveries
        .iter()
        .map(|d| {
            doc! {
                "_id": oid(d.id),
                "url": &d.url,
                "event": &d.event,
                "body": &d.body,
                "created": date(d.created),
                "attempts": 0_i64,
                "next_attempt": date(d.created),
                "last_error": Bson::Null,
                "last_error_at": Bson::Null,
            }
        })
        .collect();
    // One command: the `{next_attempt: 1}` index exists since connect (`indexes`), so an
    // enqueue on the worker API's path (a worker status change) costs one insert.
    coll(db).insert_many(docs).await.db()?;
    Ok(())
}

fn from_doc(d: &Document) -> StoreResult<WebhookDelivery> {
    let f = Fields::new(d, DELIVERIES);
    Ok(WebhookDelivery {
        id: f.id("_id")?,
        url: f.string("url")?,
        event: f.string("event")?,
        body: f.string("body")?,
        created: f
            .opt_time("created")?
            .ok_or_else(|| f.corrupt("created", "missing"))?,
        attempts: u32::try_from(f.i64("attempts")?).unwrap_or(u32::MAX),
        next_attempt: f.opt_time("next_attempt")?,
        last_error: f.opt_string("last_error")?,
    })
}

pub(super) async fn due(
    db: &Database,
    now: DateTime<Utc>,
    limit: usize,
) -> StoreResult<Vec<WebhookDelivery>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let docs: Vec<Document> = coll(db)
        .find(doc! { "next_attempt": { "$ne": Bson::Null, "$lte": date(now) } })
        .sort(doc! { "next_attempt": 1, "_id": 1 })
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    docs.iter().map(from_doc).collect()
}

pub(super) async fn delivered(db: &Database, id: ObjectId) -> StoreResult<()> {
    coll(db).delete_one(doc! { "_id": oid(id) }).await.db()?;
    Ok(())
}

pub(super) async fn failed(
    db: &Database,
    id: ObjectId,
    at: DateTime<Utc>,
    next_attempt: Option<DateTime<Utc>>,
    error: &str,
) -> StoreResult<()> {
    coll(db)
        .update_one(
            doc! { "_id": oid(id) },
            doc! {
                "$inc": { "attempts": 1_i64 },
                "$set": {
                    "next_attempt": next_attempt.map(date).unwrap_or(Bson::Null),
                    "last_error": error,
                    "last_error_at": date(at),
                },
            },
        )
        .await
        .db()?;
    Ok(())
}

pub(super) async fn stats(db: &Database) -> StoreResult<Vec<WebhookQueueStats>> {
    // Few documents by design: one pass, counted here rather than in an aggregation.
    let docs: Vec<Document> = coll(db)
        .find(doc! {})
        .sort(doc! { "url": 1, "last_error_at": 1 })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    let mut out: Vec<WebhookQueueStats> = Vec::new();
    for d in &docs {
        let delivery = from_doc(d)?;
        if out.last().map(|s| s.url != delivery.url).unwrap_or(true) {
            out.push(WebhookQueueStats {
                url: delivery.url.clone(),
                ..Default::default()
            });
        }
        let Some(s) = out.last_mut() else { continue };
        if delivery.next_attempt.is_some() {
            s.queued += 1;
        } else {
            s.failed += 1;
        }
        if delivery.last_error.is_some() {
            // Sorted by last_error_at within the URL: the last one seen is the newest.
            s.last_error = delivery.last_error;
        }
    }
    Ok(out)
}
