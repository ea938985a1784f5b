//! The `flamenco_jobs` collection (standalone mode): insert a job with its tasks, read and
//! list jobs, the job actions (cancel, re-queue, delete) and the job-status consumer's
//! step. The decisions come from [`crate::jobs::status`]; every task of a cascade and the
//! job itself are written with their own compare-and-set.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::codec::{self, counts_doc, date, job_from_doc, job_to_doc, oid};
use super::errors::{duplicate_index, map_err, Mongo};
use super::protocol::{kept_changing, CAS_ATTEMPTS};
use super::MongoStore;
use super::{logs, outbox, tasks, Db};
use crate::jobs::status::{self, ActionPlan, JobAction, TaskAction};
use crate::model::{Job, JobStatus, ObjectId, Task, TaskCounts, TaskStatus, TaskUpdate};
use crate::store::{
    JobActionOutcome, JobQuery, JobStatusChange, StoreError, StoreResult, TaskActionOutcome,
};

/// `now` as stored (whole milliseconds).
fn as_stored(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// `JobStore::insert_job`: the job, then its tasks; if the tasks cannot be inserted (a
/// duplicate id), the job is removed again, so it is both or neither.
pub(super) async fn insert(db: &Db, job: &Job, new_tasks: &[Task]) -> StoreResult<()> {
    match db.jobs.insert_one(job_to_doc(job)).await {
        Ok(_) => {}
        Err(e) if duplicate_index(&e).is_some() => return Err(StoreError::Duplicate(job.id)),
        Err(e) => return Err(map_err(e)),
    }
    if let Err(e) = tasks::insert(db, new_tasks).await {
        if let Err(cleanup) = db.jobs.delete_one(doc! { "_id": oid(job.id) }).await {
            tracing::error!(
                "storing job {} failed and removing it again failed too: {}",
                job.id,
                super::errors::reason(&cleanup)
            );
        }
        return Err(e);
    }
    Ok(())
}

pub(super) async fn get(db: &Db, id: ObjectId) -> StoreResult<Option<Job>> {
    match db.jobs.find_one(doc! { "_id": oid(id) }).await.db()? {
        Some(d) => job_from_doc(&d).map(Some),
        None => Ok(None),
    }
}

/// `JobStore::list_jobs`: newest first.
pub(super) async fn list(db: &Db, q: &JobQuery) -> StoreResult<Vec<Job>> {
    if q.limit == Some(0) {
        return Ok(Vec::new());
    }
    let mut filter = Document::new();
    if !q.statuses.is_empty() {
        let statuses: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
        filter.insert("status", doc! { "$in": statuses });
    }
    let mut find = db
        .jobs
        .find(filter)
        .sort(doc! { "_created": -1, "_id": -1 })
        .skip(u64::try_from(q.offset).unwrap_or(u64::MAX));
    if let Some(limit) = q.limit {
        find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    let docs: Vec<Document> = find.await.db()?.try_collect().await.db()?;
    docs.iter().map(job_from_doc).collect()
}

/// The job's tasks per status, now (through the `{job, status}` index).
pub(super) async fn count_tasks(db: &Db, job: ObjectId) -> StoreResult<TaskCounts> {
    let pipeline = vec![
        doc! { "$match": { "job": oid(job) } },
        doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } },
    ];
    let docs: Vec<Document> = db
        .tasks
        .aggregate(pipeline)
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    let mut counts = TaskCounts::default();
    for d in &docs {
        let f = codec::Fields::new(d, codec::TASKS);
        let n = u64::try_from(f.i64("n")?).unwrap_or_default();
        counts.add(&TaskStatus::from_str_lossy(&f.string("_id")?), n);
    }
    Ok(counts)
}

/// Write the job's status, counts and `_updated` if its status is still `expected`.
pub(super) async fn save(db: &Db, job: &Job, expected: &JobStatus) -> StoreResult<bool> {
    let result = db
        .jobs
        .update_one(
            doc! { "_id": oid(job.id), "status": expected.as_str() },
            doc! { "$set": {
                "status": job.status.as_str(),
                "task_counts": counts_doc(&job.task_counts),
                "_updated": date(job.updated),
            } },
        )
        .await
        .db()?;
    Ok(result.matched_count > 0)
}

/// Every task of the job, without the bulky fields.
async fn task_ids(db: &Db, job: ObjectId) -> StoreResult<Vec<ObjectId>> {
    tasks::ids(
        db,
        doc! { "job": oid(job) },
        Some(doc! { "_id": 1 }),
        0,
        None,
    )
    .await
}

/// Apply the job's change from `from` to `to` to its tasks (§4.3), each task with its own
/// compare-and-set: a task that changes gets a Manager-made update in the outbox and
/// takes its status as given (a re-queue moves a task out of a final status, which
/// updates never do). Returns how many changed.
pub(super) async fn cascade(
    db: &Db,
    job: ObjectId,
    from: &JobStatus,
    to: &JobStatus,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut changed = 0;
    for id in task_ids(db, job).await? {
        let mut attempts = 0;
        loop {
            let Some(before) = tasks::get_state(db, id).await? else {
                break;
            };
            let Some(new) = status::task_status_for_job_change(from, to, &before.status) else {
                break;
            };
            attempts += 1;
            if attempts > CAS_ATTEMPTS {
                return Err(kept_changing(id));
            }
            let update: TaskUpdate = status::cascade_update(id, &new, to, now);
            let mut after = before.clone();
            if new == TaskStatus::Queued {
                after.worker_id = None;
            }
            after.status = new;
            after.activity.clone_from(&update.activity);
            after.last_updated = Some(now);
            if tasks::save(db, &before, &after, Document::new()).await? {
                if after.status == TaskStatus::Queued {
                    super::retries::clear_task(db, id).await?;
                }
                outbox::insert(db, std::slice::from_ref(&update)).await?;
                changed += 1;
                break;
            }
        }
    }
    Ok(changed)
}

/// `JobStore::job_action`. The job is saved with a compare-and-set on the status it was
/// read with; if a concurrent action changed it, the action is planned again.
pub(super) async fn action(
    db: &Db,
    id: ObjectId,
    action: JobAction,
    now: DateTime<Utc>,
) -> StoreResult<JobActionOutcome> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(mut job) = get(db, id).await? else {
            return Ok(JobActionOutcome::NotFound);
        };
        let loaded = job.status.clone();
        let counts = count_tasks(db, id).await?;
        let plan = match status::plan_action(&job.status, action, &counts) {
            Ok(plan) => plan,
            Err(reason) => return Ok(JobActionOutcome::Refused(reason)),
        };
        match plan {
            ActionPlan::Nothing => return Ok(JobActionOutcome::Done { job, tasks: 0 }),
            ActionPlan::Delete => {
                let task_ids = logs::task_ids_of_job(db, id).await?;
                super::outbox_entries::move_out(db, doc! { "job": oid(id) }).await?;
                let mut filter = doc! { "job": oid(id) };
                filter.extend(super::outbox_entries::nothing_waiting());
                let n = db.tasks.delete_many(filter).await.db()?.deleted_count;
                logs::delete_for_gone(db, &task_ids).await?;
                db.blocklist
                    .delete_many(doc! { "job": oid(id) })
                    .await
                    .db()?;
                db.jobs.delete_one(doc! { "_id": oid(id) }).await.db()?;
                return Ok(JobActionOutcome::Done { job, tasks: n });
            }
            ActionPlan::ChangeStatus(to) => {
                if to == JobStatus::Queued {
                    // Re-queued: fresh attempts for every worker (docs/jobs.md, "Retries").
                    super::retries::clear_job(db, id).await?;
                }
                let changed = cascade(db, id, &job.status, &to, now).await?;
                job.task_counts = count_tasks(db, id).await?;
                job.status = status::job_status_after_cascade(&to, &job.task_counts);
                job.updated = as_stored(now);
                if save(db, &job, &loaded).await? {
                    return Ok(JobActionOutcome::Done {
                        job,
                        tasks: changed,
                    });
                }
            }
        }
    }
    Err(kept_changing(id))
}

/// `JobStore::task_action`. The task is saved with a compare-and-set on its state as read
/// (planned again if it changed meanwhile), then its update goes into the outbox, as a
/// cascade does; a job that a re-queue makes `queued` is saved with a compare-and-set on
/// its status (left alone if a concurrent action changed it).
pub(super) async fn task_action(
    db: &Db,
    id: ObjectId,
    action: TaskAction,
    now: DateTime<Utc>,
) -> StoreResult<TaskActionOutcome> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(before) = tasks::get_state(db, id).await? else {
            return Ok(TaskActionOutcome::NotFound);
        };
        let job = match before.job {
            Some(job_id) => get(db, job_id).await?,
            None => None,
        };
        let new =
            match status::plan_task_action(&before.status, job.as_ref().map(|j| &j.status), action)
            {
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
        let mut after = before.clone();
        if new == TaskStatus::Queued {
            after.worker_id = None;
        }
        after.status = new.clone();
        after.activity.clone_from(&update.activity);
        after.last_updated = Some(now);
        if !tasks::save(db, &before, &after, Document::new()).await? {
            continue;
        }
        if new == TaskStatus::Queued {
            super::retries::clear_task(db, id).await?;
        }
        outbox::insert(db, std::slice::from_ref(&update)).await?;
        if let Some(mut job) = job {
            if new == TaskStatus::Queued {
                if let Some(to) = status::job_status_after_task_requeue(&job.status) {
                    let loaded = job.status.clone();
                    job.status = to;
                    job.task_counts = count_tasks(db, job.id).await?;
                    job.updated = as_stored(now);
                    if save(db, &job, &loaded).await? {
                        // Out of `failed`: a "no worker left" reason no longer holds.
                        super::retries::clear_status_reason(db, job.id).await?;
                    }
                }
            }
        }
        let task = tasks::get_state(db, id).await?.unwrap_or(after);
        return Ok(TaskActionOutcome::Done {
            task: Box::new(task),
            changed: true,
        });
    }
    Err(kept_changing(id))
}

/// A job being worked on by [`apply_updates`]: as loaded, and as it is becoming.
struct Working {
    loaded: Job,
    job: Job,
    /// Marked stranded ("no worker left": a `status_reason`), read at its first `failed`.
    stranded: Option<bool>,
}

/// The current state of the tasks whose updates carry a status, read with one `find`
/// (instead of one read per update; a task missing here is read again when needed).
async fn task_states(db: &Db, updates: &[TaskUpdate]) -> StoreResult<HashMap<ObjectId, Task>> {
    let mut ids: Vec<ObjectId> = updates
        .iter()
        .filter(|u| u.task_status.is_some())
        .map(|u| u.task_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let listed: Vec<Bson> = ids.iter().map(|id| oid(*id)).collect();
    let docs: Vec<Document> = db
        .tasks
        .find(doc! { "_id": { "$in": listed } })
        .projection(tasks::state_projection())
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    docs.iter()
        .map(|d| codec::task_from_doc(d).map(|t| (t.id, t)))
        .collect()
}

/// `JobStore::apply_updates_to_jobs`. Each job whose status or counts changed is saved with a
/// compare-and-set on the status it was loaded with; a job a user action changed
/// meanwhile is left as that action saved it (with its fresh counts).
pub(super) async fn apply_updates(
    db: &Db,
    updates: &[TaskUpdate],
    now: DateTime<Utc>,
) -> StoreResult<Vec<JobStatusChange>> {
    let mut jobs: HashMap<ObjectId, Working> = HashMap::new();
    let mut order: Vec<ObjectId> = Vec::new();
    let mut changes = Vec::new();
    let mut states = task_states(db, updates).await?;
    for update in updates {
        if update.task_status.is_none() {
            continue;
        }
        let task = match states.get(&update.task_id) {
            Some(task) => Some(task.clone()),
            None => tasks::get_state(db, update.task_id).await?,
        };
        let Some(task) = task else {
            continue;
        };
        let Some(job_id) = task.job else {
            continue;
        };
        let w = match jobs.entry(job_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let Some(loaded) = get(db, job_id).await? else {
                    continue;
                };
                let mut job = loaded.clone();
                job.task_counts = count_tasks(db, job_id).await?;
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
                None => *w
                    .stranded
                    .insert(super::retries::status_reason(db, job_id).await?.is_some()),
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
            cascade(db, job_id, &w.job.status, &new, now).await?;
            w.job.task_counts = count_tasks(db, job_id).await?;
            // The cascade changed tasks: later updates read theirs again.
            states.clear();
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
            job.updated = as_stored(now);
            if !save(db, &job, &w.loaded.status).await? {
                tracing::debug!("job {id} changed meanwhile; keeping that change");
            }
        }
    }
    Ok(changes)
}

#[async_trait::async_trait]
impl crate::store::JobStore for MongoStore {
    async fn insert_job(&self, job: &Job, tasks: &[Task]) -> StoreResult<()> {
        self.run(super::jobs::insert(&self.db, job, tasks)).await
    }

    async fn get_job(&self, id: ObjectId) -> StoreResult<Option<Job>> {
        self.run(super::jobs::get(&self.db, id)).await
    }

    async fn list_jobs(&self, query: &JobQuery) -> StoreResult<Vec<Job>> {
        self.run(super::jobs::list(&self.db, query)).await
    }

    async fn job_action(
        &self,
        id: ObjectId,
        action: JobAction,
        now: DateTime<Utc>,
    ) -> StoreResult<JobActionOutcome> {
        self.run(super::jobs::action(&self.db, id, action, now))
            .await
    }

    async fn task_action(
        &self,
        id: ObjectId,
        action: TaskAction,
        now: DateTime<Utc>,
    ) -> StoreResult<TaskActionOutcome> {
        self.run(super::jobs::task_action(&self.db, id, action, now))
            .await
    }

    async fn apply_updates_to_jobs(
        &self,
        updates: &[TaskUpdate],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<JobStatusChange>> {
        self.run(super::jobs::apply_updates(&self.db, updates, now))
            .await
    }
}
