//! The `task_log_chunks` table (schema version 7): the SQLite side of
//! [`crate::store::TaskLogStore`]. What is kept and dropped is decided by
//! [`crate::store::logs`]; this module only loads and stores chunks.
//!
//! The key is `(task_id, head, start_byte)`: within a task, head chunks and then tail
//! chunks, each in log order, so dropping the oldest tail chunks is one range delete and
//! finding the log's end is one or two index seeks. Appends run on the writer thread,
//! inside the caller's transaction (a worker's update and its log lines commit together).
//! A task's chunks are deleted with the task by the cleanup, a job delete and the clean
//! slate (`delete_for`); a download that replaces a task keeps its log.

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{blob, Db};
use crate::model::ObjectId;
use crate::store::logs::{
    assemble, choose, plan_append, LogChunk, LogEnd, TaskLogLimits, TaskLogPage, TaskLogQuery,
};
use crate::store::{StoreError, StoreResult};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("task_log_chunks.{what} is {n}")))
}

/// A chunk's columns, in this order: head, start_byte, first_line, line_count, end_byte,
/// and (when asked) text.
fn chunk_from_row(row: &rusqlite::Row<'_>, with_text: bool) -> StoreResult<LogChunk> {
    Ok(LogChunk {
        head: row.get::<_, i64>(0).db()? != 0,
        start: to_u64(row.get(1).db()?, "start_byte")?,
        first_line: to_u64(row.get(2).db()?, "first_line")?,
        line_count: to_u64(row.get(3).db()?, "line_count")?,
        end: to_u64(row.get(4).db()?, "end_byte")?,
        text: if with_text {
            row.get(5).db()?
        } else {
            String::new()
        },
    })
}

/// The last chunk of the head (`head`) or of the tail.
fn last_chunk(conn: &Connection, task_id: ObjectId, head: bool) -> StoreResult<Option<LogChunk>> {
    conn.prepare_cached(
        "SELECT head, start_byte, first_line, line_count, end_byte FROM task_log_chunks \
         WHERE task_id = ?1 AND head = ?2 ORDER BY start_byte DESC LIMIT 1",
    )
    .db()?
    .query_row(params![blob(task_id), head as i64], |row| {
        Ok(chunk_from_row(row, false))
    })
    .optional()
    .db()?
    .transpose()
}

/// Where the log of `task_id` ends.
pub(super) fn end(conn: &Connection, task_id: ObjectId) -> StoreResult<LogEnd> {
    let last = match last_chunk(conn, task_id, false)? {
        Some(tail) => Some(tail),
        None => last_chunk(conn, task_id, true)?,
    };
    Ok(LogEnd::after(last.as_ref()))
}

/// Append `text` to the log of `task_id`, within `limits` (in the caller's transaction).
pub(super) fn append(
    conn: &Connection,
    task_id: ObjectId,
    text: &str,
    limits: TaskLogLimits,
) -> StoreResult<()> {
    if !limits.enabled() || text.is_empty() {
        return Ok(());
    }
    let Some(plan) = plan_append(end(conn, task_id)?, text, limits) else {
        return Ok(());
    };
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO task_log_chunks \
               (task_id, head, start_byte, first_line, line_count, end_byte, text) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .db()?;
    for c in &plan.chunks {
        insert
            .execute(params![
                blob(task_id),
                c.head as i64,
                to_i64(c.start),
                to_i64(c.first_line),
                to_i64(c.line_count),
                to_i64(c.end),
                c.text,
            ])
            .db()?;
    }
    if plan.drop_tail_before > 0 {
        conn.prepare_cached(
            "DELETE FROM task_log_chunks WHERE task_id = ?1 AND head = 0 AND start_byte < ?2",
        )
        .db()?
        .execute(params![blob(task_id), to_i64(plan.drop_tail_before)])
        .db()?;
    }
    Ok(())
}

/// Delete the logs of these tasks, given as stored ids (`DELETE … RETURNING id`).
pub(super) fn delete_for_blobs(conn: &Connection, task_ids: &[Vec<u8>]) -> StoreResult<()> {
    let mut delete = conn
        .prepare_cached("DELETE FROM task_log_chunks WHERE task_id = ?1")
        .db()?;
    for id in task_ids {
        delete.execute([id]).db()?;
    }
    Ok(())
}

/// Delete the logs of the tasks of job `job_id` (before the tasks themselves).
pub(super) fn delete_for_job(conn: &Connection, job_id: ObjectId) -> StoreResult<()> {
    conn.prepare_cached(
        "DELETE FROM task_log_chunks WHERE task_id IN (SELECT id FROM tasks WHERE job = ?1)",
    )
    .db()?
    .execute([blob(job_id)])
    .db()?;
    Ok(())
}

/// Read a part of the log of `task_id`.
///
/// The chunks' positions (not their text) are read first, to choose the chunks the query
/// needs; then only those chunks' text is read.
pub(super) fn read(
    conn: &Connection,
    task_id: ObjectId,
    query: TaskLogQuery,
) -> StoreResult<TaskLogPage> {
    let mut metas = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT head, start_byte, first_line, line_count, end_byte FROM task_log_chunks \
                 WHERE task_id = ?1",
            )
            .db()?;
        let mut rows = stmt.query([blob(task_id)]).db()?;
        while let Some(row) = rows.next().db()? {
            metas.push(chunk_from_row(row, false)?);
        }
    }
    metas.sort_by_key(|c| c.first_line);
    let end = LogEnd::after(metas.last());
    let wanted = choose(&metas, query);
    let mut text = conn
        .prepare_cached(
            "SELECT text FROM task_log_chunks WHERE task_id = ?1 AND head = ?2 AND start_byte = ?3",
        )
        .db()?;
    let mut chunks = Vec::with_capacity(wanted.len());
    for mut chunk in wanted {
        chunk.text = text
            .query_row(
                params![blob(task_id), chunk.head as i64, to_i64(chunk.start)],
                |row| row.get(0),
            )
            .db()?;
        chunks.push(chunk);
    }
    Ok(assemble(&chunks, query, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::logs::TaskLogEntry;
    use crate::store::prelude::*;

    fn writer() -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(super::super::schema::V7)
            .expect("schema");
        conn
    }

    /// A worker's update and its log lines commit together: when the log cannot be
    /// written (a full disk), the update is not applied either, and the worker's retry
    /// stores the lines once.
    #[tokio::test]
    async fn log_lines_commit_with_their_update() {
        use crate::model::{Task, TaskStatus, TaskUpdate};
        use crate::store::{Store, TaskLogStore};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = super::super::SqliteStore::open(dir.path()).expect("open");
        let worker = ObjectId::new();
        let mut task = Task::new("t", "sleep", vec![]);
        task.status = TaskStatus::Active;
        task.worker_id = Some(worker);
        store.insert_tasks(&[task.clone()]).await.expect("insert");
        let mut update = TaskUpdate::new(task.id, chrono::Utc::now());
        update.activity = "rendering".into();
        update.log = vec!["x".repeat(1000); 200].join("\n");
        store
            .simulate_fault(Some(super::super::SimulatedFault::DiskFull))
            .await
            .expect("fault");
        assert!(store
            .apply_worker_update(worker, update.clone())
            .await
            .is_err());
        store.simulate_fault(None).await.expect("no fault");
        let after = store.get_task(task.id).await.expect("get").expect("task");
        assert_eq!(
            after.activity, "",
            "the update was rolled back with its log"
        );
        assert_eq!(store.outbox_len().await.expect("len"), 0);
        assert_eq!(
            store.task_log_end(task.id).await.expect("end"),
            LogEnd::default()
        );
        store
            .apply_worker_update(worker, update)
            .await
            .expect("the retry");
        assert_eq!(
            store.task_log_end(task.id).await.expect("end").next_line,
            200
        );
        store.close().await.expect("close");
    }

    #[test]
    fn appends_reads_and_deletes() {
        let conn = writer();
        let id = ObjectId::new();
        let limits = TaskLogLimits { max_bytes: 2048 };
        for i in 0..300 {
            append(&conn, id, &format!("line {i:05}\n"), limits).expect("append");
        }
        let page = read(&conn, id, TaskLogQuery::Tail(3)).expect("read");
        let texts: Vec<_> = page.entries.iter().map(TaskLogEntry::text).collect();
        assert_eq!(texts, ["line 00297", "line 00298", "line 00299"]);
        assert_eq!(page.end.next_line, 300);
        let page = read(
            &conn,
            id,
            TaskLogQuery::From {
                from: 0,
                limit: 10_000,
            },
        )
        .expect("read");
        assert_eq!(page.entries[0].text(), "line 00000");
        assert_eq!(
            page.entries
                .iter()
                .filter(|e| matches!(e, TaskLogEntry::Dropped { .. }))
                .count(),
            1
        );
        let stored: i64 = conn
            .query_row(
                "SELECT sum(end_byte - start_byte) FROM task_log_chunks",
                [],
                |r| r.get(0),
            )
            .expect("sum");
        assert!(stored <= 2048, "{stored}");
        delete_for_blobs(&conn, &[blob(id).to_vec()]).expect("delete");
        assert_eq!(end(&conn, id).expect("end"), LogEnd::default());
    }
}
