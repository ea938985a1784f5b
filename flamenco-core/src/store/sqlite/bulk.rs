//! The SQLite side of [`crate::store::BulkStore`]: a job's priority with its tasks'
//! `job_priority`, and forgetting a worker. Each is one write job, so one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::rows::{as_stored, blob, Db};
use super::{jobs, outbox, tasks, workers, SqliteStore};
use crate::bulk::{forget_refusal, forget_requeue_update};
use crate::model::{Job, ObjectId};
use crate::store::{BulkStore, ForgetOutcome, StoreResult};
use crate::updates::apply_locally;

fn set_job_priority(
    conn: &Connection,
    id: ObjectId,
    priority: i32,
    now: DateTime<Utc>,
) -> StoreResult<Option<(Job, u64)>> {
    let Some(mut job) = jobs::get(conn, id)? else {
        return Ok(None);
    };
    job.priority = priority;
    job.updated = as_stored(now);
    conn.prepare_cached("UPDATE jobs SET priority = ?2, updated = ?3 WHERE id = ?1")
        .db()?
        .execute(params![blob(id), priority, super::rows::ms(job.updated)])
        .db()?;
    // Through the `tasks_by_job` index.
    let n = conn
        .prepare_cached("UPDATE tasks SET job_priority = ?2 WHERE job = ?1")
        .db()?
        .execute(params![blob(id), priority])
        .db()?;
    Ok(Some((job, n as u64)))
}

fn forget_worker(
    conn: &Connection,
    id: ObjectId,
    now: DateTime<Utc>,
) -> StoreResult<ForgetOutcome> {
    let Some(worker) = workers::get(conn, id)? else {
        return Ok(ForgetOutcome::NotFound);
    };
    let running = tasks::active_states_for_worker(conn, id)?;
    let running_ids: Vec<ObjectId> = running.iter().map(|t| t.id).collect();
    if let Some(why) = forget_refusal(&worker, &running_ids) {
        return Ok(ForgetOutcome::Refused(why));
    }
    let ident = worker.identifier();
    for before in running {
        let update = forget_requeue_update(before.id, &ident, now);
        outbox::insert(conn, &update)?;
        let mut after = before.clone();
        apply_locally(&mut after, &update);
        tasks::save_changes(conn, &before, &after)?;
    }
    conn.prepare_cached("DELETE FROM workers WHERE id = ?1")
        .db()?
        .execute([blob(id)])
        .db()?;
    Ok(ForgetOutcome::Forgotten {
        worker: Box::new(worker),
        requeued: running_ids,
    })
}

#[async_trait]
impl BulkStore for SqliteStore {
    async fn set_job_priority(
        &self,
        id: ObjectId,
        priority: i32,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Job, u64)>> {
        self.writer
            .run(move |c| set_job_priority(c, id, priority, now))
            .await
    }

    async fn forget_worker(&self, id: ObjectId, now: DateTime<Utc>) -> StoreResult<ForgetOutcome> {
        self.writer.run(move |c| forget_worker(c, id, now)).await
    }
}
