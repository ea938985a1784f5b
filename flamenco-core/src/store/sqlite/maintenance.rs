//! Maintenance operations: the active-task and worker timeouts, cleanup of finished tasks,
//! clean slate and outbox purge. Each runs as one write job.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::rows::{blob, col_id, ms, Db};
use super::SqliteStore;
use super::{logs, outbox, tasks, workers};
use crate::model::{worker_status, ObjectId};
use crate::store::{Batch, StoreResult};
use crate::updates;

/// `MaintenanceStore::fail_timed_out_tasks`.
/// With retries in effect (`policy.enabled`), a timed-out task of a job counts as a
/// failure of its silent worker, decided as a worker's own `failed`
/// ([`super::retries::record_timeout`]): `soft-failed` until the limit, and a job left
/// without workers is marked to fail.
pub(super) fn fail_timed_out(
    conn: &Connection,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: &crate::jobs::retry::RetryPolicy,
) -> StoreResult<Vec<ObjectId>> {
    let ids: Vec<ObjectId> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM tasks WHERE status = 'active' \
                 AND COALESCE(last_worker_ping, last_updated, 0) <= ?1 ORDER BY id",
            )
            .db()?;
        let mut rows = stmt.query([ms(cutoff)]).db()?;
        let mut ids = Vec::new();
        while let Some(row) = rows.next().db()? {
            ids.push(col_id(row, 0)?);
        }
        ids
    };
    let mut failed = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(before) = tasks::get_state(conn, id)? else {
            continue;
        };
        let worker = match before.worker_id {
            Some(wid) => workers::get(conn, wid)?,
            None => None,
        };
        let ident = updates::timeout_ident(&before, worker.as_ref());
        let mut update = updates::timeout_update(&before, &ident, before.last_worker_ping, now);
        let mut stranded = None;
        if let Some((job, decided)) = super::retries::record_timeout(conn, &before, now, policy)? {
            update = crate::jobs::retry::timeout_failure_update(update, &decided);
            stranded = decided.stranded.map(|reason| (job, reason));
        }
        outbox::insert(conn, &update)?;
        let mut after = before.clone();
        updates::apply_locally(&mut after, &update);
        if after.status == crate::model::TaskStatus::SoftFailed {
            // Runnable again, by another worker.
            after.worker_id = None;
            after.worker.clear();
        }
        tasks::save_changes(conn, &before, &after)?;
        if let Some((job, reason)) = stranded {
            super::retries::mark_stranded(conn, job, &reason)?;
        }
        if let Some(w) = worker {
            conn.prepare_cached("UPDATE workers SET status = ?2 WHERE id = ?1")
                .db()?
                .execute(params![blob(w.id), worker_status::TIMEOUT])
                .db()?;
        }
        tracing::warn!(task = %id, worker = %ident, "task timed out; marked failed");
        failed.push(id);
    }
    Ok(failed)
}

/// `MaintenanceStore::time_out_workers`.
pub(super) fn time_out_workers(
    conn: &Connection,
    cutoff: DateTime<Utc>,
) -> StoreResult<Vec<ObjectId>> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE workers SET status = ?2 WHERE status = ?1 \
             AND COALESCE(last_activity, 0) <= ?3 RETURNING id",
        )
        .db()?;
    let mut rows = stmt
        .query(params![
            worker_status::AWAKE,
            worker_status::TIMEOUT,
            ms(cutoff)
        ])
        .db()?;
    let mut ids = Vec::new();
    while let Some(row) = rows.next().db()? {
        ids.push(col_id(row, 0)?);
    }
    Ok(ids)
}

/// The finished tasks the cleanup may delete (`?1` the cutoff in ms, `?2` the batch
/// size), oldest first. Its status list and age expression are written exactly as in the
/// partial index `tasks_finished_by_age` (schema version 13), and the query names it
/// (`INDEXED BY`: left to itself the planner prefers `tasks_by_status_type`), so that SQLite
/// walks that index from the oldest and stops at the first task too young: a batch reads
/// the rows it deletes (and the finished parents of unfinished tasks it skips), not every
/// finished task. A test checks the plan. (A macro, so that the delete below is one
/// literal too.)
macro_rules! deletable_finished {
    () => {
        "SELECT t.id FROM tasks t INDEXED BY tasks_finished_by_age \
         WHERE t.status IN ('completed', 'failed', 'canceled') \
           AND MAX(COALESCE(t.last_worker_ping, 0), COALESCE(t.last_updated, 0)) <= ?1 \
           AND NOT EXISTS ( \
             SELECT 1 FROM task_parents p JOIN tasks c ON c.id = p.task_id \
             WHERE p.parent_id = t.id \
               AND c.status NOT IN ('completed', 'failed', 'canceled')) \
         LIMIT ?2"
    };
}

/// The query of `deletable_finished!`, for the plan test.
#[cfg(test)]
pub(super) const DELETABLE_FINISHED: &str = deletable_finished!();

/// One cleanup batch: the deletable finished tasks, answering their ids (for their logs).
const DELETE_FINISHED: &str = concat!(
    "DELETE FROM tasks WHERE id IN (",
    deletable_finished!(),
    ") RETURNING id"
);

/// `MaintenanceStore::delete_finished_tasks`.
pub(super) fn delete_finished(
    conn: &Connection,
    cutoff: DateTime<Utc>,
    limit: usize,
) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached(DELETE_FINISHED)
        .db()?
        .query_map(params![ms(cutoff), limit as i64], |row| {
            row.get::<_, Vec<u8>>(0)
        })
        .db()?
        .collect::<Result<Vec<_>, _>>()
        .db()?;
    logs::delete_for_blobs(conn, &deleted)?;
    Ok(deleted.len() as u64)
}

/// `MaintenanceStore::delete_tasks`.
pub(super) fn delete_any(conn: &Connection, limit: usize) -> StoreResult<u64> {
    // The batch's jobs first, so that those left without tasks go in the same transaction.
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS clean_slate_jobs (id BLOB PRIMARY KEY); \
         DELETE FROM temp.clean_slate_jobs;",
    )
    .db()?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO temp.clean_slate_jobs \
         SELECT job FROM (SELECT job FROM tasks ORDER BY id LIMIT ?1) WHERE job IS NOT NULL",
    )
    .db()?
    .execute([limit as i64])
    .db()?;
    let deleted = conn
        .prepare_cached(
            "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks ORDER BY id LIMIT ?1) RETURNING id",
        )
        .db()?
        .query_map([limit as i64], |row| row.get::<_, Vec<u8>>(0))
        .db()?
        .collect::<Result<Vec<_>, _>>()
        .db()?;
    logs::delete_for_blobs(conn, &deleted)?;
    let n = deleted.len();
    conn.prepare_cached(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM temp.clean_slate_jobs) \
         AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.job = jobs.id)",
    )
    .db()?
    .execute([])
    .db()?;
    Ok(n as u64)
}

/// `MaintenanceStore::purge_outbox`.
pub(super) fn purge_outbox(conn: &Connection, limit: usize) -> StoreResult<u64> {
    let n = conn
        .prepare_cached(
            "DELETE FROM task_updates WHERE seq IN \
             (SELECT seq FROM task_updates ORDER BY seq LIMIT ?1)",
        )
        .db()?
        .execute([limit as i64])
        .db()?;
    Ok(n as u64)
}

#[async_trait::async_trait]
impl crate::store::MaintenanceStore for SqliteStore {
    async fn fail_timed_out_tasks(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>> {
        let policy = crate::store::RetryStore::retry_policy(self);
        self.writer
            .run(move |c| super::maintenance::fail_timed_out(c, cutoff, now, &policy))
            .await
    }

    async fn time_out_workers(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<ObjectId>> {
        self.writer
            .run(move |c| super::maintenance::time_out_workers(c, cutoff))
            .await
    }

    async fn delete_finished_tasks(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Batch> {
        self.writer
            .run(move |c| timed(|| super::maintenance::delete_finished(c, cutoff, limit)))
            .await
    }

    async fn delete_tasks(&self, limit: usize) -> StoreResult<Batch> {
        self.writer
            .run(move |c| timed(|| super::maintenance::delete_any(c, limit)))
            .await
    }

    async fn purge_outbox(&self, limit: usize) -> StoreResult<Batch> {
        self.writer
            .run(move |c| timed(|| super::maintenance::purge_outbox(c, limit)))
            .await
    }
}

/// Run one batch on the writer thread and time it there: its time in the writer, which
/// the requests queued behind it wait for.
fn timed(batch: impl FnOnce() -> StoreResult<u64>) -> StoreResult<Batch> {
    let started = std::time::Instant::now();
    let rows = batch()?;
    Ok(Batch {
        rows,
        busy: started.elapsed(),
    })
}
