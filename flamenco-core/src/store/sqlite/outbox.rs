//! The `task_updates` table: the outbox of task updates waiting to be pushed to the
//! Server, in arrival order (`seq`). Updates the Server never acknowledged are counted
//! (`attempts`) and eventually set aside (`set_aside_at`): kept, but skipped by the push.

use rusqlite::{params, Connection};

use chrono::{DateTime, Utc};

use super::rows::{
    blob, col_i64, col_time, is_duplicate, map_err, ms, update_from_row, Db, UPDATE_COLUMNS,
};
use super::SqliteStore;
use crate::model::{ObjectId, TaskUpdate};
use crate::store::{SetAsideUpdate, StoreError, StoreResult};

/// Queue one update (v2 §7.2 step 1).
pub(super) fn insert(conn: &Connection, u: &TaskUpdate) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO task_updates (id, task_id, task_status, received_on_manager, activity, \
           task_progress_percentage, current_command_idx, command_progress_percentage, log, \
           worker) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .db()?
    .execute(params![
        blob(u.id),
        blob(u.task_id),
        u.task_status.as_ref().map(|s| s.as_str()),
        ms(u.received_on_manager),
        u.activity,
        u.task_progress_percentage,
        u.current_command_idx,
        u.command_progress_percentage,
        u.log,
        u.worker,
    ])
    .map_err(|e| {
        if is_duplicate(&e) {
            StoreError::Duplicate(u.id)
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(super) fn len(conn: &Connection) -> StoreResult<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM task_updates WHERE set_aside_at IS NULL")
        .db()?
        .query_row([], |row| row.get(0))
        .db()?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// The oldest `limit` waiting (not set aside) updates, in arrival order.
pub(super) fn peek(conn: &Connection, limit: usize) -> StoreResult<Vec<TaskUpdate>> {
    let sql = format!(
        "SELECT {UPDATE_COLUMNS} FROM task_updates WHERE set_aside_at IS NULL \
         ORDER BY seq LIMIT ?1"
    );
    let mut stmt = conn.prepare_cached(&sql).db()?;
    let mut rows = stmt
        .query([i64::try_from(limit).unwrap_or(i64::MAX)])
        .db()?;
    let mut updates = Vec::new();
    while let Some(row) = rows.next().db()? {
        updates.push(update_from_row(row)?);
    }
    Ok(updates)
}

/// Remove these updates; returns how many there were.
pub(super) fn ack(conn: &Connection, ids: &[ObjectId]) -> StoreResult<u64> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM task_updates WHERE id = ?1")
        .db()?;
    let mut removed = 0;
    for id in ids {
        removed += stmt.execute([blob(*id)]).db()? as u64;
    }
    Ok(removed)
}

/// Is an update with a final status for this task waiting (not set aside)?
pub(super) fn final_update_pending(conn: &Connection, task_id: ObjectId) -> StoreResult<bool> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT 1 FROM task_updates WHERE task_id = ?1 AND set_aside_at IS NULL \
             AND task_status IN ('completed', 'failed', 'canceled') LIMIT 1",
        )
        .db()?;
    stmt.exists([blob(task_id)]).db()
}

/// Count an unacknowledged push for each waiting update; set aside those that reached
/// `set_aside_after` attempts. Returns the ids set aside now.
pub(super) fn note_unacknowledged(
    conn: &Connection,
    ids: &[ObjectId],
    set_aside_after: u32,
    now: DateTime<Utc>,
) -> StoreResult<Vec<ObjectId>> {
    let mut bump = conn
        .prepare_cached(
            "UPDATE task_updates SET attempts = attempts + 1 \
             WHERE id = ?1 AND set_aside_at IS NULL RETURNING attempts",
        )
        .db()?;
    let mut set_aside = conn
        .prepare_cached("UPDATE task_updates SET set_aside_at = ?2 WHERE id = ?1")
        .db()?;
    let mut out = Vec::new();
    for id in ids {
        let mut rows = bump.query([blob(*id)]).db()?;
        let Some(row) = rows.next().db()? else {
            continue;
        };
        let attempts = col_i64(row, 0)?;
        drop(rows);
        if attempts >= i64::from(set_aside_after) {
            set_aside.execute(params![blob(*id), ms(now)]).db()?;
            out.push(*id);
        }
    }
    Ok(out)
}

/// The oldest `limit` set-aside updates, in arrival order.
pub(super) fn set_aside(conn: &Connection, limit: usize) -> StoreResult<Vec<SetAsideUpdate>> {
    let sql = format!(
        "SELECT {UPDATE_COLUMNS}, attempts, set_aside_at FROM task_updates \
         WHERE set_aside_at IS NOT NULL ORDER BY seq LIMIT ?1"
    );
    let mut stmt = conn.prepare_cached(&sql).db()?;
    let mut rows = stmt
        .query([i64::try_from(limit).unwrap_or(i64::MAX)])
        .db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        out.push(SetAsideUpdate {
            update: update_from_row(row)?,
            attempts: u32::try_from(col_i64(row, 10)?).unwrap_or(u32::MAX),
            set_aside_at: col_time(row, 11)?,
        });
    }
    Ok(out)
}

pub(super) fn set_aside_len(conn: &Connection) -> StoreResult<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM task_updates WHERE set_aside_at IS NOT NULL")
        .db()?
        .query_row([], |row| row.get(0))
        .db()?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// Put set-aside updates back at the end of the outbox, attempts reset. A new `seq` (max
/// + 1, in their old order) puts them after every waiting update.
pub(super) fn retry_set_aside(conn: &Connection) -> StoreResult<u64> {
    let seqs: Vec<i64> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq FROM task_updates WHERE set_aside_at IS NOT NULL ORDER BY seq",
            )
            .db()?;
        let rows = stmt.query_map([], |row| row.get(0)).db()?;
        rows.collect::<Result<_, _>>().db()?
    };
    let mut mv = conn
        .prepare_cached(
            "UPDATE task_updates SET seq = (SELECT max(seq) + 1 FROM task_updates), \
             attempts = 0, set_aside_at = NULL WHERE seq = ?1",
        )
        .db()?;
    for seq in &seqs {
        mv.execute([seq]).db()?;
    }
    Ok(seqs.len() as u64)
}

#[async_trait::async_trait]
impl crate::store::OutboxStore for SqliteStore {
    async fn outbox_len(&self) -> StoreResult<u64> {
        self.readers.run(super::outbox::len).await
    }

    async fn outbox_peek(&self, limit: usize) -> StoreResult<Vec<TaskUpdate>> {
        self.readers
            .run(move |c| super::outbox::peek(c, limit))
            .await
    }

    async fn outbox_ack(&self, ids: &[ObjectId]) -> StoreResult<u64> {
        let ids = ids.to_vec();
        self.writer.run(move |c| super::outbox::ack(c, &ids)).await
    }

    async fn outbox_note_unacknowledged(
        &self,
        ids: &[ObjectId],
        set_aside_after: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>> {
        let ids = ids.to_vec();
        self.writer
            .run(move |c| super::outbox::note_unacknowledged(c, &ids, set_aside_after, now))
            .await
    }

    async fn outbox_set_aside(&self, limit: usize) -> StoreResult<Vec<SetAsideUpdate>> {
        self.readers
            .run(move |c| super::outbox::set_aside(c, limit))
            .await
    }

    async fn outbox_set_aside_len(&self) -> StoreResult<u64> {
        self.readers.run(super::outbox::set_aside_len).await
    }

    async fn outbox_retry_set_aside(&self) -> StoreResult<u64> {
        self.writer.run(super::outbox::retry_set_aside).await
    }
}
