//! Retries and per-job blocklists on the [`Manager`] (docs/jobs.md, "Retries" and
//! "Blocklist"): the entry points the API, the dashboard and the CLI use to show a task's
//! failure record and to list and edit a job's blocklist. The rules are
//! [`crate::jobs::retry`]'s; storage is [`crate::store::RetryStore`].

use super::{ApiError, Manager};
use crate::jobs::retry::{BlocklistEntry, TaskFailure};
use crate::model::ObjectId;

/// The longest task type accepted when removing a blocklist entry.
pub const MAX_TASK_TYPE_LEN: usize = 256;

impl Manager {
    /// A task's failure record, oldest first (404 when the task is unknown).
    pub async fn task_failures(&self, task: ObjectId) -> Result<Vec<TaskFailure>, ApiError> {
        if self.store().get_task_state(task).await?.is_none() {
            return Err(ApiError::NotFound(format!("task {task} is unknown")));
        }
        Ok(self.store().task_failures(task).await?)
    }

    /// A job's blocklist, by task type then worker (404 when the job is unknown).
    pub async fn job_blocklist(&self, job: ObjectId) -> Result<Vec<BlocklistEntry>, ApiError> {
        if self.store().get_job(job).await?.is_none() {
            return Err(ApiError::NotFound(format!("job {job} is unknown")));
        }
        Ok(self.store().job_blocklist(job).await?)
    }

    /// Why the Manager failed this job (no worker left), if it did.
    pub async fn job_status_reason(&self, job: ObjectId) -> Result<Option<String>, ApiError> {
        Ok(self.store().job_status_reason(job).await?)
    }

    /// Take a worker off a job's blocklist, for one task type or (`None`) all of them, so
    /// it gets the job's tasks again. Returns how many entries were removed; 404 when the
    /// job is unknown or the worker is not on its blocklist (for that type), 400 for an
    /// empty or overlong task type.
    pub async fn unblock_worker(
        &self,
        job: ObjectId,
        worker: ObjectId,
        task_type: Option<&str>,
    ) -> Result<u64, ApiError> {
        if let Some(t) = task_type {
            if t.trim().is_empty() || t.len() > MAX_TASK_TYPE_LEN {
                return Err(ApiError::InvalidField {
                    field: "task_type".into(),
                    message: format!(
                        "task_type must be a task type of 1 to {MAX_TASK_TYPE_LEN} bytes, \
                         or left out to unblock the worker for every type"
                    ),
                });
            }
        }
        if self.store().get_job(job).await?.is_none() {
            return Err(ApiError::NotFound(format!("job {job} is unknown")));
        }
        let n = self.store().unblock_worker(job, worker, task_type).await?;
        if n == 0 {
            return Err(ApiError::NotFound(match task_type {
                Some(t) => format!(
                    "worker {worker} is not on the blocklist of job {job} for task type {t:?}; \
                     list it with GET /api/jobs/{job}/blocklist"
                ),
                None => format!(
                    "worker {worker} is not on the blocklist of job {job}; list it with \
                     GET /api/jobs/{job}/blocklist"
                ),
            }));
        }
        tracing::info!(%job, %worker, task_type = task_type.unwrap_or("*"), removed = n, "worker unblocked");
        Ok(n)
    }
}
