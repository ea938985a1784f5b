//! The `task_updates` table: the outbox of task updates waiting to be pushed to the
//! Server, in arrival order (`seq`).

use rusqlite::{params, Connection};

use super::rows::{blob, is_duplicate, map_err, ms, update_from_row, Db, UPDATE_COLUMNS};
use crate::model::{ObjectId, TaskUpdate};
use crate::store::{StoreError, StoreResult};

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
        .prepare_cached("SELECT count(*) FROM task_updates")
        .db()?
        .query_row([], |row| row.get(0))
        .db()?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// The oldest `limit` updates, in arrival order.
pub(super) fn peek(conn: &Connection, limit: usize) -> StoreResult<Vec<TaskUpdate>> {
    let sql = format!("SELECT {UPDATE_COLUMNS} FROM task_updates ORDER BY seq LIMIT ?1");
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
