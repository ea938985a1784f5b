//! The `webhook_deliveries` table (schema version 9): the SQLite side of
//! [`crate::store::WebhookStore`]. Due deliveries are found through a partial index on
//! `next_attempt_ms` (given-up deliveries have none and are not in it).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::rows::{blob, col_i64, col_id, col_opt_time, col_text, col_time, ms, Db};
use crate::model::ObjectId;
use crate::store::webhooks::{NewWebhookDelivery, WebhookDelivery, WebhookQueueStats};
use crate::store::StoreResult;

pub(super) fn enqueue(conn: &Connection, deliveries: &[NewWebhookDelivery]) -> StoreResult<()> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO webhook_deliveries \
             (id, url, event, body, created_ms, attempts, next_attempt_ms, last_error) \
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5, NULL)",
        )
        .db()?;
    for d in deliveries {
        insert
            .execute(params![blob(d.id), d.url, d.event, d.body, ms(d.created)])
            .db()?;
    }
    Ok(())
}

pub(super) fn due(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> StoreResult<Vec<WebhookDelivery>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, url, event, body, created_ms, attempts, next_attempt_ms, last_error \
             FROM webhook_deliveries WHERE next_attempt_ms IS NOT NULL AND next_attempt_ms <= ?1 \
             ORDER BY next_attempt_ms, id LIMIT ?2",
        )
        .db()?;
    let mut rows = stmt
        .query(params![ms(now), i64::try_from(limit).unwrap_or(i64::MAX)])
        .db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        out.push(WebhookDelivery {
            id: col_id(row, 0)?,
            url: col_text(row, 1)?,
            event: col_text(row, 2)?,
            body: col_text(row, 3)?,
            created: col_time(row, 4)?,
            attempts: u32::try_from(col_i64(row, 5)?).unwrap_or(u32::MAX),
            next_attempt: col_opt_time(row, 6)?,
            last_error: row.get(7).db()?,
        });
    }
    Ok(out)
}

pub(super) fn delivered(conn: &Connection, id: ObjectId) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM webhook_deliveries WHERE id = ?1")
        .db()?
        .execute(params![blob(id)])
        .db()?;
    Ok(())
}

pub(super) fn failed(
    conn: &Connection,
    id: ObjectId,
    at: DateTime<Utc>,
    next_attempt: Option<DateTime<Utc>>,
    error: &str,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_ms = ?2, \
         last_error = ?3, last_error_ms = ?4 WHERE id = ?1",
    )
    .db()?
    .execute(params![blob(id), next_attempt.map(ms), error, ms(at)])
    .db()?;
    Ok(())
}

pub(super) fn stats(conn: &Connection) -> StoreResult<Vec<WebhookQueueStats>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT url, SUM(next_attempt_ms IS NOT NULL), SUM(next_attempt_ms IS NULL), \
             (SELECT last_error FROM webhook_deliveries i WHERE i.url = o.url \
              AND i.last_error IS NOT NULL ORDER BY last_error_ms DESC LIMIT 1) \
             FROM webhook_deliveries o GROUP BY url ORDER BY url",
        )
        .db()?;
    let mut rows = stmt.query([]).db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        out.push(WebhookQueueStats {
            url: col_text(row, 0)?,
            queued: u64::try_from(col_i64(row, 1)?).unwrap_or(0),
            failed: u64::try_from(col_i64(row, 2)?).unwrap_or(0),
            last_error: row.get(3).db()?,
        });
    }
    Ok(out)
}
