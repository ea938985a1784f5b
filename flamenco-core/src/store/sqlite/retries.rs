//! The `task_failures` and `job_blocklist` tables: recording a worker's failure inside
//! `apply_worker_update`'s transaction, the blocklist, clearing on re-queue, and the
//! maintenance check that fails jobs no worker can finish. Decisions come from
//! [`crate::jobs::retry`].

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::rows::{blob, col_id, col_text, col_time, ms, Db};
use super::{jobs, outbox, tasks, workers};
use crate::jobs::retry::{
    self, BlocklistEntry, FailureOutcome, NarrowedTask, RetryPolicy, Stranded, TaskFailure,
    TaskNeeds,
};
use crate::model::{JobStatus, ObjectId, Task, TaskUpdate};
use crate::store::retries::{MAX_BLOCKLIST_LISTED, MAX_STRANDED_SCAN};
use crate::store::StoreResult;

/// A task's failure record, oldest first.
pub(super) fn failures(conn: &Connection, task_id: ObjectId) -> StoreResult<Vec<TaskFailure>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT worker_id, worker, at FROM task_failures WHERE task_id = ?1 \
             ORDER BY at, worker_id",
        )
        .db()?;
    let mut rows = stmt.query([blob(task_id)]).db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        out.push(TaskFailure {
            worker_id: col_id(row, 0)?,
            worker: col_text(row, 1)?,
            at: col_time(row, 2)?,
        });
    }
    Ok(out)
}

/// Forget a task's failure record (it was re-queued).
pub(super) fn clear_task(conn: &Connection, task_id: ObjectId) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM task_failures WHERE task_id = ?1")
        .db()?
        .execute([blob(task_id)])
        .db()?;
    Ok(())
}

/// Forget a job's blocklist (the job was re-queued).
pub(super) fn clear_blocklist(conn: &Connection, job: ObjectId) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM job_blocklist WHERE job = ?1")
        .db()?
        .execute([blob(job)])
        .db()?;
    Ok(())
}

/// The workers blocklisted for this job and type.
fn blocked_for(conn: &Connection, job: ObjectId, task_type: &str) -> StoreResult<Vec<ObjectId>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT worker_id FROM job_blocklist WHERE job = ?1 AND task_type = ?2 \
             ORDER BY worker_id",
        )
        .db()?;
    let mut rows = stmt.query(params![blob(job), task_type]).db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        out.push(col_id(row, 0)?);
    }
    Ok(out)
}

/// `RetryStore::job_blocklist`.
pub(super) fn blocklist(conn: &Connection, job: ObjectId) -> StoreResult<Vec<BlocklistEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT task_type, worker_id, worker, added FROM job_blocklist WHERE job = ?1 \
             ORDER BY task_type, worker_id LIMIT ?2",
        )
        .db()?;
    let limit = i64::try_from(MAX_BLOCKLIST_LISTED).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![blob(job), limit]).db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        out.push(BlocklistEntry {
            job,
            task_type: col_text(row, 0)?,
            worker_id: col_id(row, 1)?,
            worker: col_text(row, 2)?,
            added: col_time(row, 3)?,
        });
    }
    Ok(out)
}

/// `RetryStore::unblock_worker`.
pub(super) fn unblock(
    conn: &Connection,
    job: ObjectId,
    worker_id: ObjectId,
    task_type: Option<&str>,
) -> StoreResult<u64> {
    let n = match task_type {
        Some(t) => conn
            .prepare_cached(
                "DELETE FROM job_blocklist WHERE job = ?1 AND worker_id = ?2 AND task_type = ?3",
            )
            .db()?
            .execute(params![blob(job), blob(worker_id), t])
            .db()?,
        None => conn
            .prepare_cached("DELETE FROM job_blocklist WHERE job = ?1 AND worker_id = ?2")
            .db()?
            .execute(params![blob(job), blob(worker_id)])
            .db()?,
    };
    Ok(n as u64)
}

/// How many distinct tasks of this type in this job the worker has failed.
fn tasks_failed_by(
    conn: &Connection,
    job: ObjectId,
    task_type: &str,
    worker_id: ObjectId,
) -> StoreResult<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(DISTINCT task_id) FROM task_failures \
             WHERE job = ?1 AND task_type = ?2 AND worker_id = ?3",
        )
        .db()?
        .query_row(params![blob(job), task_type, blob(worker_id)], |r| r.get(0))
        .db()?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// Record a worker's `failed` of `before` (a task of a job) and decide what it does
/// ([`retry::decide_failure`]); adds the blocklist entry when due. The caller applies the
/// outcome to the task (and fails the job when stranded).
pub(super) fn record_failure(
    conn: &Connection,
    before: &Task,
    job: ObjectId,
    worker_id: ObjectId,
    at: DateTime<Utc>,
    policy: &RetryPolicy,
) -> StoreResult<FailureOutcome> {
    let nickname = workers::get(conn, worker_id)?
        .map(|w| w.nickname)
        .unwrap_or_default();
    conn.prepare_cached(
        "INSERT OR IGNORE INTO task_failures (task_id, worker_id, at, worker, job, task_type) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .db()?
    .execute(params![
        blob(before.id),
        blob(worker_id),
        ms(at),
        nickname,
        blob(job),
        before.task_type
    ])
    .db()?;
    let record = failures(conn, before.id)?;
    let failed_tasks = tasks_failed_by(conn, job, &before.task_type, worker_id)?;
    let blocked = blocked_for(conn, job, &before.task_type)?;
    let all_workers = workers::list(conn)?;
    let outcome = retry::decide_failure(
        policy,
        &record,
        TaskNeeds {
            task_type: &before.task_type,
            worker_tag: before.worker_tag.as_deref(),
        },
        worker_id,
        failed_tasks,
        &blocked,
        &all_workers,
    );
    if outcome.blocklist {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO job_blocklist (job, task_type, worker_id, worker, added) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .db()?
        .execute(params![
            blob(job),
            before.task_type,
            blob(worker_id),
            nickname,
            ms(at)
        ])
        .db()?;
    }
    Ok(outcome)
}

/// A timed-out task's silent worker as a failure with retries in effect (standalone mode,
/// a task of a job stored here): record it and decide ([`record_failure`], as for a
/// worker's own `failed`); `None` when retries do not apply (v2's rule: failed). The
/// caller applies the outcome ([`retry::timeout_failure_update`]) and marks the job when
/// stranded.
pub(super) fn record_timeout(
    conn: &Connection,
    before: &Task,
    now: DateTime<Utc>,
    policy: &RetryPolicy,
) -> StoreResult<Option<(ObjectId, FailureOutcome)>> {
    let (true, Some(job), Some(worker_id)) = (policy.enabled, before.job, before.worker_id) else {
        return Ok(None);
    };
    if jobs::get(conn, job)?.is_none() {
        return Ok(None);
    }
    let outcome = record_failure(conn, before, job, worker_id, now, policy)?;
    Ok(Some((job, outcome)))
}

/// Mark job `job` stranded (no worker is left for one of its tasks, which is failed in the
/// same transaction): its `status_reason` says why, and the consumer fails the job when
/// it takes that task's `failed` ([`retry::job_status_after_task_change`]), with the
/// cascade, the log line and the `job-status` webhook of any job status change. A job
/// that already finished, or is being canceled, is left alone.
pub(super) fn mark_stranded(conn: &Connection, job: ObjectId, reason: &str) -> StoreResult<()> {
    let Some(loaded) = jobs::get(conn, job)? else {
        return Ok(());
    };
    if loaded.status.is_final() || loaded.status == JobStatus::CancelRequested {
        return Ok(());
    }
    jobs::set_status_reason(conn, job, Some(reason))
}

/// `RetryStore::fail_stranded_tasks`, in one transaction.
pub(super) fn fail_stranded(conn: &Connection, now: DateTime<Utc>) -> StoreResult<Vec<Stranded>> {
    let limit = i64::try_from(MAX_STRANDED_SCAN).unwrap_or(i64::MAX);
    // Schedulable tasks with a failure record.
    let mut narrowed: BTreeMap<ObjectId, NarrowedTask> = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT f.task_id, t.job, t.task_type, f.worker_id, t.worker_tag \
                 FROM task_failures f JOIN tasks t ON t.id = f.task_id \
                 WHERE t.status IN ('queued', 'claimed-by-manager', 'soft-failed') \
                   AND t.job IS NOT NULL \
                 ORDER BY f.task_id LIMIT ?1",
            )
            .db()?;
        let mut rows = stmt.query([limit]).db()?;
        while let Some(row) = rows.next().db()? {
            let task_id = col_id(row, 0)?;
            let worker = col_id(row, 3)?;
            let entry = match narrowed.entry(task_id) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(NarrowedTask {
                    task_id,
                    job: col_id(row, 1)?,
                    task_type: col_text(row, 2)?,
                    worker_tag: Some(col_text(row, 4)?).filter(|t| !t.is_empty()),
                    failed_by: Vec::new(),
                }),
            };
            if !entry.failed_by.contains(&worker) {
                entry.failed_by.push(worker);
            }
        }
    }
    // Every blocklist, and one schedulable task of each blocklisted job and type.
    let mut blocked: HashMap<(ObjectId, String), Vec<ObjectId>> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached("SELECT job, task_type, worker_id FROM job_blocklist LIMIT ?1")
            .db()?;
        let mut rows = stmt.query([limit]).db()?;
        while let Some(row) = rows.next().db()? {
            blocked
                .entry((col_id(row, 0)?, col_text(row, 1)?))
                .or_default()
                .push(col_id(row, 2)?);
        }
    }
    let mut tasks_list: Vec<NarrowedTask> = narrowed.into_values().collect();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, worker_tag FROM tasks WHERE job = ?1 AND task_type = ?2 \
                   AND status IN ('queued', 'claimed-by-manager', 'soft-failed') LIMIT 1",
            )
            .db()?;
        for (job, task_type) in blocked.keys() {
            let mut rows = stmt.query(params![blob(*job), task_type]).db()?;
            if let Some(row) = rows.next().db()? {
                tasks_list.push(NarrowedTask {
                    task_id: col_id(row, 0)?,
                    job: *job,
                    task_type: task_type.clone(),
                    worker_tag: Some(col_text(row, 1)?).filter(|t| !t.is_empty()),
                    failed_by: Vec::new(),
                });
            }
        }
    }
    // One schedulable task of each type of each job with a tag: the tag narrows them all.
    {
        let mut jobs_stmt = conn
            .prepare_cached(
                "SELECT id FROM jobs WHERE worker_tag != '' \
                   AND status NOT IN ('completed', 'failed', 'canceled', 'cancel-requested') \
                 ORDER BY id LIMIT ?1",
            )
            .db()?;
        let mut tagged: Vec<ObjectId> = Vec::new();
        let mut rows = jobs_stmt.query([limit]).db()?;
        while let Some(row) = rows.next().db()? {
            tagged.push(col_id(row, 0)?);
        }
        drop(rows);
        let mut stmt = conn
            .prepare_cached(
                "SELECT task_type, min(id), worker_tag FROM tasks WHERE job = ?1 \
                   AND status IN ('queued', 'claimed-by-manager', 'soft-failed') \
                 GROUP BY task_type",
            )
            .db()?;
        for job in tagged {
            let mut rows = stmt.query([blob(job)]).db()?;
            while let Some(row) = rows.next().db()? {
                tasks_list.push(NarrowedTask {
                    task_id: col_id(row, 1)?,
                    job,
                    task_type: col_text(row, 0)?,
                    worker_tag: Some(col_text(row, 2)?).filter(|t| !t.is_empty()),
                    failed_by: Vec::new(),
                });
            }
        }
    }
    if tasks_list.is_empty() {
        return Ok(Vec::new());
    }
    let all_workers = workers::list(conn)?;
    let stranded = retry::stranded_tasks(
        &tasks_list,
        |job, t| {
            blocked
                .get(&(job, t.to_string()))
                .cloned()
                .unwrap_or_default()
        },
        &all_workers,
    );
    for s in &stranded {
        if let Some(before) = tasks::get_state(conn, s.task_id)? {
            let update: TaskUpdate = retry::stranded_update(s.task_id, &s.reason, now);
            outbox::insert(conn, &update)?;
            let mut after = before.clone();
            crate::updates::apply_locally(&mut after, &update);
            tasks::save_changes(conn, &before, &after)?;
        }
        mark_stranded(conn, s.job, &s.reason)?;
    }
    Ok(stranded)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::schema::{self, ConnConfig};
    use super::super::{tasks, DATABASE_FILE};

    /// The claim's two retry conditions are primary-key lookups (no scan of
    /// `task_failures` or `job_blocklist`), in every branch of the claim query: the
    /// failure record per candidate, the blocklist for the branch's winner (a column).
    #[test]
    fn claim_exclusions_are_primary_key_lookups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = ConnConfig {
            synchronous: "NORMAL",
            busy_timeout: Duration::from_secs(5),
        };
        let conn = schema::open_writer(&dir.path().join(DATABASE_FILE), &cfg).expect("open");
        for tags in [0, 2] {
            let sql = tasks::next_schedulable_sql(tags);
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain");
            let unbound = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(unbound), |row| {
                    row.get::<_, String>(3)
                })
                .expect("query")
                .map(|r| r.expect("row"))
                .collect();
            let text = plan.join("\n");
            let branches = tags + 1;
            let count = |needle: &str| plan.iter().filter(|l| l.contains(needle)).count();
            assert_eq!(
                count("SEARCH f USING PRIMARY KEY (task_id=? AND worker_id=?)"),
                branches,
                "{text}"
            );
            assert_eq!(
                count("SEARCH b USING PRIMARY KEY (job=? AND task_type=? AND worker_id=?)"),
                branches,
                "{text}"
            );
            assert_eq!(count("SCAN f"), 0, "{text}");
            assert_eq!(count("SCAN b"), 0, "{text}");
        }
    }
}
