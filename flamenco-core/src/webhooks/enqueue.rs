//! Where events become queued deliveries (docs/webhooks.md, "Events"): the standalone
//! consumer's task failures and job status changes, job actions, and worker status
//! changes. Only the last are on the worker API's path, and only when a webhook wants
//! them and the status changed: one insert then, nothing otherwise.

use crate::jobs::status::JobAction;
use crate::manager::{ApiError, Manager};
use crate::model::{Job, JobStatus, ObjectId, Worker};
use crate::store::JobStatusChange;

impl Manager {
    /// Queue the webhook deliveries for these updates' task failures and the job status
    /// changes they caused (docs/webhooks.md). Before the acknowledgement, so a failure
    /// to queue consumes the updates again; a crash between step 2 and here loses these
    /// events (the second pass sees no change).
    pub(crate) async fn enqueue_webhooks(
        &self,
        updates: &[crate::model::TaskUpdate],
        changes: &[JobStatusChange],
    ) -> Result<(), ApiError> {
        use super::{self as webhooks, WebhookEvent};
        let hooks = &self.config().webhooks;
        let now = self.now();
        let mut deliveries = Vec::new();
        if !changes.is_empty() && hooks.iter().any(|h| h.wants(WebhookEvent::JobStatus)) {
            let mut names = std::collections::HashMap::new();
            let mut reasons = std::collections::HashMap::new();
            for c in changes {
                if let Some(job) = self.store().get_job(c.job).await? {
                    names.insert(c.job, job.name);
                }
                if c.to == JobStatus::Failed {
                    if let Some(reason) = self.store().job_status_reason(c.job).await? {
                        reasons.insert(c.job, reason);
                    }
                }
            }
            deliveries.extend(webhooks::job_status_deliveries(
                hooks,
                changes,
                |id| names.get(&id).cloned(),
                |id| reasons.get(&id).cloned(),
                now,
            ));
        }
        let failed = updates
            .iter()
            .filter(|u| u.task_status == Some(crate::model::TaskStatus::Failed));
        if failed.clone().next().is_some()
            && hooks.iter().any(|h| h.wants(WebhookEvent::TaskFailed))
        {
            let mut jobs = std::collections::HashMap::new();
            for u in failed {
                if let Some(task) = self.store().get_task(u.task_id).await? {
                    jobs.insert(u.task_id, task.job);
                }
            }
            deliveries.extend(webhooks::task_failed_deliveries(
                hooks,
                updates,
                |id| jobs.get(&id).copied().flatten(),
                now,
            ));
        }
        if !deliveries.is_empty() {
            self.store().webhook_enqueue(&deliveries).await?;
        }
        Ok(())
    }
    /// Whether any webhook wants job status changes (then a job action reads the job's
    /// status first, to report where it came from).
    pub(crate) fn wants_job_status_webhooks(&self, action: JobAction) -> bool {
        action != JobAction::Delete
            && self
                .config()
                .webhooks
                .iter()
                .any(|h| h.wants(super::WebhookEvent::JobStatus))
    }

    /// Queue `job-status` deliveries for a job action that moved job `id` from `from` to
    /// `job.status`. The action is already done, so a failure to queue is logged, not
    /// returned: the operator's call succeeded.
    pub(crate) async fn enqueue_job_action_webhooks(
        &self,
        id: ObjectId,
        from: JobStatus,
        job: &Job,
    ) {
        if from == job.status {
            return;
        }
        let change = JobStatusChange {
            job: id,
            from,
            to: job.status.clone(),
        };
        let deliveries = super::job_status_deliveries(
            &self.config().webhooks,
            &[change],
            |_| Some(job.name.clone()),
            |_| None,
            self.now(),
        );
        if let Err(e) = self.store().webhook_enqueue(&deliveries).await {
            tracing::error!(job = %id, "cannot queue the job-status webhook of a job action: {e}");
        }
    }

    /// Whether any webhook wants worker status changes.
    pub(crate) fn wants_worker_status_webhooks(&self) -> bool {
        self.config()
            .webhooks
            .iter()
            .any(|h| h.wants(super::WebhookEvent::WorkerStatus))
    }

    /// Queue `worker-status` deliveries for `worker` (as it was before), whose status is
    /// now `to`: nothing when no webhook wants them or the status did not change. The
    /// change is already stored, so a failure to queue is logged, not returned (the
    /// worker's request succeeded).
    pub(crate) async fn enqueue_worker_status(&self, worker: &Worker, to: &str) {
        if worker.status == to || !self.wants_worker_status_webhooks() {
            return;
        }
        let deliveries = super::worker_status_deliveries(
            &self.config().webhooks,
            worker,
            &worker.status,
            to,
            self.now(),
        );
        if let Err(e) = self.store().webhook_enqueue(&deliveries).await {
            tracing::error!(worker = %worker.id, "cannot queue the worker-status webhook ({} → {to}): {e}", worker.status);
        }
    }
}
