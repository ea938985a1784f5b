//! The `jobs` table (standalone mode): insert a job with its tasks, read and list jobs,
//! the job actions (cancel, re-queue, delete) and the job-status consumer's step. Each
//! write is one write job, so one transaction; the decisions come from
//! [`crate::jobs::status`].

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Row};

use super::rows::{
    blob, col_i32, col_id, col_text, col_time, is_duplicate, map_err, ms, task_from_row, to_json,
    Db, TASK_STATE_COLUMNS,
};
use super::SqliteStore;
use super::{logs, outbox, tasks};
use crate::jobs::status::{self, ActionPlan, JobAction, TaskAction};
use crate::model::{Job, JobStatus, ObjectId, Task, TaskCounts, TaskStatus, TaskUpdate};
use crate::store::{
    JobActionOutcome, JobQuery, JobStatusChange, StoreError, StoreResult, TaskActionOutcome,
};

const JOB_COLUMNS: &str =
    "id, name, job_type, priority, status, settings, created, updated, task_counts, worker_tag";

fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column jobs.{column}: {e}"))
}

fn job_from_row(row: &Row<'_>) -> StoreResult<Job> {
    let settings = col_text(row, 5)?;
    let counts = col_text(row, 8)?;
    Ok(Job {
        id: col_id(row, 0)?,
        name: col_text(row, 1)?,
        job_type: col_text(row, 2)?,
        priority: col_i32(row, 3)?,
        status: JobStatus::from_str_lossy(&col_text(row, 4)?),
        settings: serde_json::from_str(&settings).map_err(|e| corrupt("settings", e))?,
        created: col_time(row, 6)?,
        updated: col_time(row, 7)?,
        task_counts: serde_json::from_str(&counts).map_err(|e| corrupt("task_counts", e))?,
        worker_tag: Some(col_text(row, 9)?).filter(|t| !t.is_empty()),
    })
}

/// `JobStore::insert_job`: the job, then its tasks; a duplicate id fails the whole job.
pub(super) fn insert(conn: &Connection, job: &Job, new_tasks: &[Task]) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO jobs (id, name, job_type, priority, status, settings, created, updated, \
           task_counts, worker_tag) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .db()?
    .execute(params![
        blob(job.id),
        job.name,
        job.job_type,
        job.priority,
        job.status.as_str(),
        to_json(&job.settings)?,
        ms(job.created),
        ms(job.updated),
        to_json(&job.task_counts)?,
        job.worker_tag.as_deref().unwrap_or_default(),
    ])
    .map_err(|e| {
        if is_duplicate(&e) {
            StoreError::Duplicate(job.id)
        } else {
            map_err(e)
        }
    })?;
    tasks::insert(conn, new_tasks)
}

pub(super) fn get(conn: &Connection, id: ObjectId) -> StoreResult<Option<Job>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
        .db()?;
    let mut rows = stmt.query([blob(id)]).db()?;
    match rows.next().db()? {
        Some(row) => job_from_row(row).map(Some),
        None => Ok(None),
    }
}

/// `JobStore::list_jobs`: newest first (`created`, then id).
pub(super) fn list(conn: &Connection, q: &JobQuery) -> StoreResult<Vec<Job>> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs");
    let mut args: Vec<Value> = Vec::new();
    if !q.statuses.is_empty() {
        let marks = vec!["?"; q.statuses.len()].join(", ");
        sql.push_str(&format!(" WHERE status IN ({marks})"));
        args.extend(
            q.statuses
                .iter()
                .map(|s| Value::Text(s.as_str().to_string())),
        );
    }
    sql.push_str(" ORDER BY created DESC, id DESC LIMIT ? OFFSET ?");
    args.push(Value::Integer(
        q.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)),
    ));
    args.push(Value::Integer(i64::try_from(q.offset).unwrap_or(i64::MAX)));
    let mut stmt = conn.prepare_cached(&sql).db()?;
    let mut rows = stmt.query(params_from_iter(args)).db()?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next().db()? {
        jobs.push(job_from_row(row)?);
    }
    Ok(jobs)
}

/// The job's tasks per status, now (through the `tasks_by_job_status` index).
pub(super) fn count_tasks(conn: &Connection, job: ObjectId) -> StoreResult<TaskCounts> {
    let mut stmt = conn
        .prepare_cached("SELECT status, count(*) FROM tasks WHERE job = ?1 GROUP BY status")
        .db()?;
    let mut rows = stmt.query([blob(job)]).db()?;
    let mut counts = TaskCounts::default();
    while let Some(row) = rows.next().db()? {
        let status: String = row.get(0).db()?;
        let n: i64 = row.get(1).db()?;
        counts.add(
            &TaskStatus::from_str_lossy(&status),
            u64::try_from(n).unwrap_or_default(),
        );
    }
    Ok(counts)
}

/// Write the job's status, counts and `updated`.
pub(super) fn save(conn: &Connection, job: &Job) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE jobs SET status = ?2, task_counts = ?3, updated = ?4 WHERE id = ?1",
    )
    .db()?
    .execute(params![
        blob(job.id),
        job.status.as_str(),
        to_json(&job.task_counts)?,
        ms(job.updated),
    ])
    .db()?;
    Ok(())
}

/// Set (or with `None`, clear) the reason a job failed (docs/jobs.md, "No worker left").
pub(super) fn set_status_reason(
    conn: &Connection,
    job: ObjectId,
    reason: Option<&str>,
) -> StoreResult<()> {
    conn.prepare_cached("UPDATE jobs SET status_reason = ?2 WHERE id = ?1")
        .db()?
        .execute(params![blob(job), reason.unwrap_or_default()])
        .db()?;
    Ok(())
}

/// Why the job failed, if the Manager said (`None` for an unknown job or no reason).
pub(super) fn status_reason(conn: &Connection, job: ObjectId) -> StoreResult<Option<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT status_reason FROM jobs WHERE id = ?1")
        .db()?;
    let mut rows = stmt.query([blob(job)]).db()?;
    match rows.next().db()? {
        Some(row) => Ok(Some(col_text(row, 0)?).filter(|r| !r.is_empty())),
        None => Ok(None),
    }
}

/// Every task of the job, without the bulky fields.
fn task_states(conn: &Connection, job: ObjectId) -> StoreResult<Vec<Task>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {TASK_STATE_COLUMNS} FROM tasks t WHERE t.job = ?1 ORDER BY t.id"
        ))
        .db()?;
    let mut rows = stmt.query([blob(job)]).db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        out.push(task_from_row(row)?);
    }
    Ok(out)
}

/// Apply the job's change from `from` to `to` to its tasks (§4.3): each task that changes
/// gets a Manager-made update in the outbox, and takes its status as given (a re-queue
/// moves a task out of a final status, which updates never do). Returns how many changed.
pub(super) fn cascade(
    conn: &Connection,
    job: ObjectId,
    from: &JobStatus,
    to: &JobStatus,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut changed = 0;
    for before in task_states(conn, job)? {
        let Some(new) = status::task_status_for_job_change(from, to, &before.status) else {
            continue;
        };
        let update: TaskUpdate = status::cascade_update(before.id, &new, to, now);
        outbox::insert(conn, &update)?;
        let mut after = before.clone();
        if new == TaskStatus::Queued {
            after.worker_id = None;
            super::retries::clear_task(conn, before.id)?;
        }
        after.status = new;
        after.activity.clone_from(&update.activity);
        after.last_updated = Some(now);
        tasks::save_changes(conn, &before, &after)?;
        changed += 1;
    }
    Ok(changed)
}

/// `JobStore::job_action`.
pub(super) fn action(
    conn: &Connection,
    id: ObjectId,
    action: JobAction,
    now: DateTime<Utc>,
) -> StoreResult<JobActionOutcome> {
    let Some(mut job) = get(conn, id)? else {
        return Ok(JobActionOutcome::NotFound);
    };
    let counts = count_tasks(conn, id)?;
    let plan = match status::plan_action(&job.status, action, &counts) {
        Ok(plan) => plan,
        Err(reason) => return Ok(JobActionOutcome::Refused(reason)),
    };
    match plan {
        ActionPlan::Nothing => Ok(JobActionOutcome::Done { job, tasks: 0 }),
        ActionPlan::Delete => {
            logs::delete_for_job(conn, id)?;
            let n = conn
                .prepare_cached("DELETE FROM tasks WHERE job = ?1")
                .db()?
                .execute([blob(id)])
                .db()?;
            conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")
                .db()?
                .execute([blob(id)])
                .db()?;
            Ok(JobActionOutcome::Done {
                job,
                tasks: n as u64,
            })
        }
        ActionPlan::ChangeStatus(to) => {
            if to == JobStatus::Queued {
                // Re-queued: fresh attempts for every worker (docs/jobs.md, "Retries").
                super::retries::clear_blocklist(conn, id)?;
                set_status_reason(conn, id, None)?;
            }
            let changed = cascade(conn, id, &job.status, &to, now)?;
            job.task_counts = count_tasks(conn, id)?;
            job.status = status::job_status_after_cascade(&to, &job.task_counts);
            job.updated = super::rows::as_stored(now);
            save(conn, &job)?;
            Ok(JobActionOutcome::Done {
                job,
                tasks: changed,
            })
        }
    }
}

/// `JobStore::task_action`: one task, in the writer's transaction.
pub(super) fn task_action(
    conn: &Connection,
    id: ObjectId,
    action: TaskAction,
    now: DateTime<Utc>,
) -> StoreResult<TaskActionOutcome> {
    let Some(before) = tasks::get_state(conn, id)? else {
        return Ok(TaskActionOutcome::NotFound);
    };
    let job = match before.job {
        Some(job_id) => get(conn, job_id)?,
        None => None,
    };
    let new =
        match status::plan_task_action(&before.status, job.as_ref().map(|j| &j.status), action) {
            Ok(Some(new)) => new,
            Ok(None) => {
                return Ok(TaskActionOutcome::Done {
                    task: Box::new(before),
                    changed: false,
                })
            }
            Err(reason) => return Ok(TaskActionOutcome::Refused(reason)),
        };
    let update = status::task_action_update(id, &new, now);
    outbox::insert(conn, &update)?;
    let mut after = before.clone();
    if new == TaskStatus::Queued {
        after.worker_id = None;
        super::retries::clear_task(conn, id)?;
    }
    after.status = new.clone();
    after.activity.clone_from(&update.activity);
    after.last_updated = Some(now);
    tasks::save_changes(conn, &before, &after)?;
    if let Some(mut job) = job {
        if new == TaskStatus::Queued {
            if let Some(to) = status::job_status_after_task_requeue(&job.status) {
                // Out of `failed`: a "no worker left" reason no longer holds.
                set_status_reason(conn, job.id, None)?;
                job.status = to;
                job.task_counts = count_tasks(conn, job.id)?;
                job.updated = super::rows::as_stored(now);
                save(conn, &job)?;
            }
        }
    }
    let task = tasks::get_state(conn, id)?.unwrap_or(after);
    Ok(TaskActionOutcome::Done {
        task: Box::new(task),
        changed: true,
    })
}

/// A job being worked on by [`apply_updates`]: as loaded, and as it is becoming.
struct Working {
    loaded: Job,
    job: Job,
    /// Marked stranded ("no worker left": a `status_reason`), read at its first `failed`.
    stranded: Option<bool>,
}

/// `JobStore::apply_updates_to_jobs`.
pub(super) fn apply_updates(
    conn: &Connection,
    updates: &[TaskUpdate],
    now: DateTime<Utc>,
) -> StoreResult<Vec<JobStatusChange>> {
    let mut jobs: HashMap<ObjectId, Working> = HashMap::new();
    let mut order: Vec<ObjectId> = Vec::new();
    let mut changes = Vec::new();
    for update in updates {
        if update.task_status.is_none() {
            continue;
        }
        let Some(task) = tasks::get_state(conn, update.task_id)? else {
            continue;
        };
        let Some(job_id) = task.job else {
            continue;
        };
        let w = match jobs.entry(job_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let Some(loaded) = get(conn, job_id)? else {
                    continue;
                };
                let mut job = loaded.clone();
                job.task_counts = count_tasks(conn, job_id)?;
                order.push(job_id);
                e.insert(Working {
                    loaded,
                    job,
                    stranded: None,
                })
            }
        };
        let stranded = task.status == TaskStatus::Failed
            && match w.stranded {
                Some(s) => s,
                None => *w.stranded.insert(status_reason(conn, job_id)?.is_some()),
            };
        let Some(new) = crate::jobs::retry::job_status_after_task_change(
            &w.job.status,
            &task.status,
            &w.job.task_counts,
            stranded,
        ) else {
            continue;
        };
        if status::derived_status_cascades(&new) {
            cascade(conn, job_id, &w.job.status, &new, now)?;
            w.job.task_counts = count_tasks(conn, job_id)?;
        }
        changes.push(JobStatusChange {
            job: job_id,
            from: w.job.status.clone(),
            to: new.clone(),
        });
        w.job.status = new;
    }
    for id in order {
        let w = &jobs[&id];
        if w.job.status != w.loaded.status || w.job.task_counts != w.loaded.task_counts {
            let mut job = w.job.clone();
            job.updated = now;
            save(conn, &job)?;
        }
    }
    Ok(changes)
}

#[async_trait::async_trait]
impl crate::store::JobStore for SqliteStore {
    async fn insert_job(&self, job: &Job, new: &[Task]) -> StoreResult<()> {
        let (job, new) = (job.clone(), new.to_vec());
        self.writer
            .run(move |c| super::jobs::insert(c, &job, &new))
            .await
    }

    async fn get_job(&self, id: ObjectId) -> StoreResult<Option<Job>> {
        self.readers.run(move |c| super::jobs::get(c, id)).await
    }

    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Vec<Job>> {
        let query = query.clone();
        self.readers
            .run(move |c| super::jobs::list(c, &query))
            .await
    }

    async fn job_action(
        &self,
        id: ObjectId,
        action: JobAction,
        now: DateTime<Utc>,
    ) -> StoreResult<JobActionOutcome> {
        self.writer
            .run(move |c| super::jobs::action(c, id, action, now))
            .await
    }

    async fn task_action(
        &self,
        id: ObjectId,
        action: TaskAction,
        now: DateTime<Utc>,
    ) -> StoreResult<TaskActionOutcome> {
        self.writer
            .run(move |c| super::jobs::task_action(c, id, action, now))
            .await
    }

    async fn apply_updates_to_jobs(
        &self,
        updates: &[TaskUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<JobStatusChange>> {
        let updates = updates.to_vec();
        self.writer
            .run(move |c| super::jobs::apply_updates(c, &updates, now))
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::store::prelude::*;
    use std::sync::Arc;

    use super::super::{SqliteStore, DATABASE_FILE};
    use crate::store::conformance::{nth_id, test_job};
    use crate::store::{JobQuery, Store, TaskQuery};

    /// A database at schema version 3 (before jobs) is migrated to 4 at open: its tasks
    /// stay, jobs can be stored, and the new index replaces `tasks_by_job`.
    #[tokio::test]
    async fn version_3_databases_gain_jobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, tasks) = test_job(nth_id(0x61, 1), 0x62, 2);
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            store.insert_tasks(&tasks).await.expect("insert tasks");
            store.close().await.expect("close");
        }
        {
            // Back to version 3, as an older Manager left it.
            let conn = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("open");
            conn.execute_batch(
                "DROP TABLE jobs; DROP INDEX tasks_by_job_status; \
                 CREATE INDEX tasks_by_job ON tasks (job); \
                 DROP INDEX tasks_by_status_type; CREATE INDEX tasks_by_status ON tasks (status); \
                 DROP TABLE task_log_chunks; \
                 DROP TABLE webhook_deliveries; \
                 DROP TABLE task_failures; DROP TABLE job_blocklist; \
                 ALTER TABLE workers DROP COLUMN secret_sha256; \
                 DROP INDEX tasks_schedule; DROP INDEX tasks_schedule_by_job; \
                 DROP INDEX tasks_finished_by_age; \
                 ALTER TABLE workers DROP COLUMN tags; \
                 ALTER TABLE tasks DROP COLUMN worker_tag; \
                 CREATE INDEX tasks_schedule ON tasks \
                     (job_priority DESC, priority DESC, id, task_type) \
                     WHERE status IN ('queued', 'claimed-by-manager'); \
                 PRAGMA user_version = 3;",
            )
            .expect("downgrade");
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("reopen"));
        let kept = store.list_tasks(&TaskQuery::default()).await.expect("list");
        assert_eq!(kept.len(), 2, "the tasks survive the migration");
        let (other, other_tasks) = test_job(nth_id(0x61, 2), 0x63, 1);
        store
            .insert_job(&other, &other_tasks)
            .await
            .expect("insert job");
        assert_eq!(
            store.list_jobs(&JobQuery::default()).await.expect("list")[0].id,
            other.id
        );
        store.close().await.expect("close");
        let conn = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("open");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, super::super::schema::LATEST_VERSION);
        let old_index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'tasks_by_job'",
                [],
                |r| r.get(0),
            )
            .expect("index");
        assert_eq!(old_index, 0);
    }
}
