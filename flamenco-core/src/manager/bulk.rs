//! The bulk actions on [`Manager`] (docs/jobs.md, "Bulk actions"): resolve a selection,
//! then act on each object with one store operation, and report per object. The types and
//! the rules are in [`crate::bulk`]; the HTTP routes and the CLI come here.
//!
//! Everything about the request is checked before the first object is touched, so a bad
//! request changes nothing. A store failure stops the loop: that object is reported as
//! `error` and the rest as `skipped` (a store that is down would fail them all anyway).

use super::{ApiError, Manager};
use crate::bulk::{
    distinct_ids, too_many, BulkReport, JobBulkAction, JobSelection, ObjectOutcome, Outcome,
    WorkerBulkAction, WorkerSelection,
};
use crate::jobs::status::JobAction;
use crate::model::{Job, ObjectId, RequestedStatus, Worker};
use crate::store::{ForgetOutcome, JobQuery};

/// The line for an object the action failed on.
fn failure(id: ObjectId, e: ApiError) -> (ObjectOutcome, bool) {
    match e {
        ApiError::NotFound(m) => (ObjectOutcome::failed(id, Outcome::NotFound, m), false),
        ApiError::Conflict(m) => (ObjectOutcome::failed(id, Outcome::Refused, m), false),
        other => (
            ObjectOutcome::failed(id, Outcome::Error, other.to_string()),
            true,
        ),
    }
}

/// `results` for `ids`, by `act`, stopping at the first store failure.
async fn each<F, Fut>(ids: &[ObjectId], mut act: F) -> Vec<ObjectOutcome>
where
    F: FnMut(ObjectId) -> Fut,
    Fut: std::future::Future<Output = (ObjectOutcome, bool)>,
{
    let mut results = Vec::with_capacity(ids.len());
    let mut stopped: Option<String> = None;
    for &id in ids {
        if let Some(why) = &stopped {
            results.push(ObjectOutcome::failed(
                id,
                Outcome::Skipped,
                format!("not tried: the store failed on an earlier object ({why})"),
            ));
            continue;
        }
        let (line, fatal) = act(id).await;
        if fatal {
            stopped = line.message.clone();
        }
        results.push(line);
    }
    results
}

impl Manager {
    /// Set job `id`'s priority (1–100): the job's, and its tasks' `job_priority`, which
    /// the claim orders by, in one store operation. Any job status. 400 for a priority out
    /// of range, 404 for an unknown job, 409 in upstream mode (the Server owns the jobs).
    pub async fn set_job_priority(&self, id: ObjectId, priority: i32) -> Result<Job, ApiError> {
        self.set_job_priority_counted(id, priority)
            .await
            .map(|(job, _)| job)
    }

    /// [`Manager::set_job_priority`], with how many tasks were updated.
    async fn set_job_priority_counted(
        &self,
        id: ObjectId,
        priority: i32,
    ) -> Result<(Job, u64), ApiError> {
        if !(1..=100).contains(&priority) {
            return Err(ApiError::InvalidField {
                field: "priority".into(),
                message: format!(
                    "priority {priority} is out of range: expected an integer from 1 to 100"
                ),
            });
        }
        self.refuse_upstream_jobs()?;
        match self
            .store
            .set_job_priority(id, priority, self.now())
            .await?
        {
            Some((job, tasks)) => {
                tracing::info!(job = %id, priority, tasks, "job priority set");
                Ok((job, tasks))
            }
            None => Err(ApiError::NotFound(format!("job {id} is unknown"))),
        }
    }

    /// Forget worker `id`: remove its record, per [`crate::bulk::forget_refusal`] (409
    /// with the reason when refused, 404 when unknown). Its `active` tasks, allowed only
    /// for a `timeout`, `down` or `offline` worker, go back to the queue; in standalone
    /// mode its `cancel-requested` tasks become `canceled` (it will never report on them).
    /// A worker process still running with the forgotten credentials gets 401.
    pub async fn forget_worker(&self, id: ObjectId) -> Result<(Worker, Vec<ObjectId>), ApiError> {
        let outcome = self.store.forget_worker(id, self.now()).await?;
        self.worker_cache.forget(id);
        match outcome {
            ForgetOutcome::Forgotten { worker, requeued } => {
                if !self.config.is_upstream() {
                    self.cancel_tasks_worker_stopped(&worker).await?;
                }
                tracing::info!(worker = %worker.identifier(), requeued = requeued.len(), "worker forgotten");
                Ok((*worker, requeued))
            }
            ForgetOutcome::NotFound => Err(ApiError::NotFound(format!("worker {id} is unknown"))),
            ForgetOutcome::Refused(why) => Err(ApiError::Conflict(why)),
        }
    }

    fn refuse_upstream_jobs(&self) -> Result<(), ApiError> {
        if self.config.is_upstream() {
            return Err(ApiError::Conflict(format!(
                "this Manager takes its jobs from the Flamenco Server at {}; manage jobs there \
                 (or remove `flamenco:` from the configuration to run standalone)",
                self.config.flamenco
            )));
        }
        Ok(())
    }

    /// The jobs `selection` names, distinct, checked against `max` (over HTTP
    /// [`crate::bulk::MAX_BULK_OBJECTS`]; `None`: no limit). A filter that selects more
    /// than `max` jobs is refused, not cut.
    pub async fn select_jobs(
        &self,
        selection: &JobSelection,
        max: Option<usize>,
    ) -> Result<Vec<ObjectId>, ApiError> {
        match selection {
            JobSelection::Ids(ids) => distinct_ids(ids, max),
            JobSelection::Statuses(statuses) => {
                if statuses.is_empty() {
                    return Err(ApiError::InvalidField {
                        field: "filter".into(),
                        message: "the filter names no status".into(),
                    });
                }
                let jobs = self
                    .store
                    .list_jobs(&JobQuery {
                        statuses: statuses.clone(),
                        limit: max.map(|m| m + 1),
                        offset: 0,
                    })
                    .await?;
                if let Some(max) = max {
                    if jobs.len() > max {
                        return Err(too_many("filter", jobs.len(), max));
                    }
                }
                Ok(jobs.into_iter().map(|j| j.id).collect())
            }
        }
    }

    /// Do `action` to every job `selection` names: one store operation per job
    /// ([`Manager::job_action`], [`Manager::set_job_priority`]), with the same rules and
    /// messages as for one job. The report says per job what happened. 400 (nothing done)
    /// for a bad selection or more than `max` jobs; 409 (nothing done) in upstream mode,
    /// except for deletes.
    pub async fn bulk_jobs(
        &self,
        action: JobBulkAction,
        selection: &JobSelection,
        max: Option<usize>,
    ) -> Result<BulkReport, ApiError> {
        if action != JobBulkAction::Delete {
            self.refuse_upstream_jobs()?;
        }
        let ids = self.select_jobs(selection, max).await?;
        let results = each(&ids, |id| async move {
            let done = match action {
                JobBulkAction::Cancel => self.job_action(id, JobAction::Cancel).await,
                JobBulkAction::Requeue => self.job_action(id, JobAction::Requeue).await,
                JobBulkAction::Delete => self.job_action(id, JobAction::Delete).await,
                JobBulkAction::Priority(p) => self.set_job_priority_counted(id, p).await,
            };
            match done {
                Ok((job, tasks)) => (
                    ObjectOutcome::done(id, job.status.as_str(), Some(tasks)),
                    false,
                ),
                Err(e) => failure(id, e),
            }
        })
        .await;
        let report = BulkReport::new(action.as_str(), results);
        tracing::info!(
            action = action.as_str(),
            done = report.done,
            refused = report.refused,
            not_found = report.not_found,
            errors = report.errors,
            "bulk job action"
        );
        Ok(report)
    }

    /// The workers `selection` names, distinct, checked against `max`, with each one's
    /// record when it exists (one listing of the workers).
    async fn select_workers(
        &self,
        selection: &WorkerSelection,
        max: Option<usize>,
    ) -> Result<Vec<(ObjectId, Option<Worker>)>, ApiError> {
        let workers = self.store.list_workers().await?;
        let selected: Vec<(ObjectId, Option<Worker>)> = match selection {
            WorkerSelection::Ids(ids) => {
                let ids = distinct_ids(ids, max)?;
                let mut by_id: std::collections::HashMap<ObjectId, Worker> =
                    workers.into_iter().map(|w| (w.id, w)).collect();
                ids.into_iter().map(|id| (id, by_id.remove(&id))).collect()
            }
            WorkerSelection::Statuses(statuses) => {
                if statuses.is_empty() {
                    return Err(ApiError::InvalidField {
                        field: "filter".into(),
                        message: "the filter names no status".into(),
                    });
                }
                workers
                    .into_iter()
                    .filter(|w| statuses.contains(&w.status))
                    .map(|w| (w.id, Some(w)))
                    .collect()
            }
            WorkerSelection::All => workers.into_iter().map(|w| (w.id, Some(w))).collect(),
        };
        if let Some(max) = max {
            if selected.len() > max {
                return Err(too_many("filter", selected.len(), max));
            }
        }
        Ok(selected)
    }

    /// Do `action` to every worker `selection` names and report per worker (for `tag`, the
    /// line's `status` is the worker's status). Sleep and wake
    /// follow [`Manager::request_worker_status`]'s rule (a Flamenco Worker 2.0.x is
    /// refused, with the reason); forget follows [`crate::bulk::forget_refusal`]; tag is
    /// [`Manager::tag_workers`] once for all of them. 400 (nothing done) for a bad
    /// selection or more than `max` workers.
    pub async fn bulk_workers(
        &self,
        action: &WorkerBulkAction,
        selection: &WorkerSelection,
        max: Option<usize>,
    ) -> Result<BulkReport, ApiError> {
        if let WorkerBulkAction::Tag { add, remove } = action {
            crate::bulk::check_tags(add, remove)?;
        }
        let selected = self.select_workers(selection, max).await?;
        let ids: Vec<ObjectId> = selected.iter().map(|(id, _)| *id).collect();
        let known: std::collections::HashMap<ObjectId, Worker> = selected
            .into_iter()
            .filter_map(|(id, w)| w.map(|w| (id, w)))
            .collect();
        let unknown = |id: ObjectId| {
            ObjectOutcome::failed(id, Outcome::NotFound, format!("worker {id} is unknown"))
        };
        let results = match action {
            WorkerBulkAction::Sleep | WorkerBulkAction::Wake => {
                let requested = if *action == WorkerBulkAction::Sleep {
                    RequestedStatus::Asleep
                } else {
                    RequestedStatus::Awake
                };
                each(&ids, |id| {
                    let worker = known.get(&id);
                    async move {
                        let Some(worker) = worker else {
                            return (unknown(id), false);
                        };
                        if let Some(why) = worker.status_request_refusal(requested) {
                            return (ObjectOutcome::failed(id, Outcome::Refused, why), false);
                        }
                        let set = self
                            .store
                            .set_worker_status_requested(id, Some(requested))
                            .await;
                        self.worker_cache.forget(id);
                        match set {
                            Ok(true) => {
                                (ObjectOutcome::done(id, worker.status.clone(), None), false)
                            }
                            Ok(false) => (unknown(id), false),
                            Err(e) => failure(id, e.into()),
                        }
                    }
                })
                .await
            }
            WorkerBulkAction::Forget => {
                each(&ids, |id| {
                    let known = known.contains_key(&id);
                    async move {
                        if !known {
                            return (unknown(id), false);
                        }
                        match self.forget_worker(id).await {
                            Ok((worker, requeued)) => (
                                ObjectOutcome::done(id, worker.status, Some(requeued.len() as u64)),
                                false,
                            ),
                            Err(e) => failure(id, e),
                        }
                    }
                })
                .await
            }
            WorkerBulkAction::Tag { add, remove } => {
                self.bulk_tag(&ids, &known, add, remove).await?
            }
        };
        let report = BulkReport::new(action.as_str(), results);
        tracing::info!(
            action = action.as_str(),
            done = report.done,
            refused = report.refused,
            not_found = report.not_found,
            errors = report.errors,
            "bulk worker action"
        );
        Ok(report)
    }

    /// Tagging is all or nothing ([`Manager::tag_workers`], one store operation for all of
    /// them): unknown ids are reported as such and the known ones tagged; a bad tag or a
    /// tag limit is a 400 for the whole request, nothing changed.
    async fn bulk_tag(
        &self,
        ids: &[ObjectId],
        known: &std::collections::HashMap<ObjectId, Worker>,
        add: &[String],
        remove: &[String],
    ) -> Result<Vec<ObjectOutcome>, ApiError> {
        let present: Vec<ObjectId> = ids
            .iter()
            .copied()
            .filter(|id| known.contains_key(id))
            .collect();
        if !present.is_empty() {
            self.tag_workers(&present, add, remove).await?;
        }
        Ok(ids
            .iter()
            .map(|&id| match known.get(&id) {
                Some(w) => ObjectOutcome::done(id, w.status.clone(), None),
                None => {
                    ObjectOutcome::failed(id, Outcome::NotFound, format!("worker {id} is unknown"))
                }
            })
            .collect())
    }
}
