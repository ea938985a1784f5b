//! The jobs SDK on [`Manager`]: submit (compile and store), list, show, the job's tasks,
//! cancel, re-queue and delete, and the job-type registry.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::status::{JobAction, TaskAction};
use super::{build_tasks, CompileContext, JobType, JobTypes};
use crate::manager::{ApiError, Manager};
use crate::model::{
    Job, JobStatus, ObjectId, Task, TaskCounts, TaskStatus, Worker, DEFAULT_JOB_PRIORITY,
};
use crate::store::{JobActionOutcome, JobQuery, TaskActionOutcome, TaskOrder, TaskQuery};
use crate::updates::{self, ReturnOutcome};

/// Longest accepted job name, in characters.
pub const MAX_JOB_NAME: usize = 256;

/// A job as submitted: through `POST /api/jobs`, `flamenco job submit`, or the SDK.
///
/// ```json
/// {"name": "test", "job_type": "sleep", "priority": 50,
///  "settings": {"frames": "1-20", "chunk_size": 5, "time_in_seconds": 1}}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSubmission {
    /// Shown in listings; defaults to the job type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A registered job type (`sleep`, `exec-command`, `blender-render`, …). `type` is
    /// accepted as well.
    #[serde(default, alias = "type")]
    pub job_type: String,
    /// 1–100, default 50: jobs with a higher priority are scheduled first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Value>,
    /// The job type's settings.
    #[serde(default)]
    pub settings: Map<String, Value>,
    /// Only workers with this tag get the job's tasks (docs/jobs.md, "Worker tags");
    /// none or empty: any worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_tag: Option<String>,
}

impl JobSubmission {
    /// A submission of `job_type` with these settings (name and priority default).
    pub fn new(job_type: impl Into<String>, settings: Map<String, Value>) -> JobSubmission {
        JobSubmission {
            name: None,
            job_type: job_type.into(),
            priority: None,
            settings,
            worker_tag: None,
        }
    }

    /// The same with a name.
    pub fn named(mut self, name: impl Into<String>) -> JobSubmission {
        self.name = Some(name.into());
        self
    }

    /// The same with a priority.
    pub fn with_priority(mut self, priority: i32) -> JobSubmission {
        self.priority = Some(Value::from(priority));
        self
    }

    /// The same, for workers with this tag only.
    pub fn with_worker_tag(mut self, tag: impl Into<String>) -> JobSubmission {
        self.worker_tag = Some(tag.into());
        self
    }
}

/// A stored job and the warnings about it ([`Manager::submit_job_with_warnings`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    pub job: Job,
    /// Each names the problem and what to do; empty when there is nothing to say.
    pub warnings: Vec<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field: field.to_string(),
        message: message.into(),
    }
}

/// An `InvalidField`'s field and message (other errors: the whole job).
fn field_and_message(e: ApiError) -> (String, String) {
    match e {
        ApiError::InvalidField { field, message } => (field, message),
        other => (String::new(), other.to_string()),
    }
}

fn priority(value: Option<&Value>) -> Result<i32, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(DEFAULT_JOB_PRIORITY),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(p @ 1..=100) => Ok(p as i32),
            _ => Err(invalid(
                "priority",
                format!("priority {n} is out of range: expected an integer from 1 to 100"),
            )),
        },
        Some(other) => Err(invalid(
            "priority",
            format!("priority must be an integer from 1 to 100, not {other}"),
        )),
    }
}

impl Manager {
    /// Add a job type (or replace the one with the same name). Jobs of that type can be
    /// submitted from then on, by every caller of this Manager (HTTP API included).
    pub fn register_job_type(&self, job_type: Arc<dyn JobType>) -> Option<Arc<dyn JobType>> {
        tracing::debug!(job_type = job_type.name(), "registered job type");
        self.job_types_lock().register(job_type)
    }

    /// The job types this Manager knows.
    pub fn job_types(&self) -> JobTypes {
        self.job_types_lock().clone()
    }

    fn job_types_lock(&self) -> std::sync::MutexGuard<'_, JobTypes> {
        self.job_type_registry()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refuse_upstream(&self, what: &str) -> Result<(), ApiError> {
        if self.config().is_upstream() {
            return Err(ApiError::Conflict(format!(
                "this Manager takes its jobs from the Flamenco Server at {}; {what} there \
                 (or remove `flamenco:` from the configuration to run standalone)",
                self.config().flamenco
            )));
        }
        Ok(())
    }

    /// Validate a submission and compile it, without storing anything: the job (status
    /// `queued`, id and times set) and its tasks. Errors name the field at fault
    /// (`job_type`, `priority`, `name`, `settings.<key>`).
    pub fn compile_job(&self, submission: JobSubmission) -> Result<(Job, Vec<Task>), ApiError> {
        let type_name = submission.job_type.trim();
        if type_name.is_empty() {
            return Err(invalid(
                "job_type",
                format!(
                    "job_type is required; known job types: {}",
                    self.job_types().names().join(", ")
                ),
            ));
        }
        let found = self.job_types_lock().get(type_name);
        let Some(job_type) = found else {
            return Err(invalid(
                "job_type",
                format!(
                    "unknown job type {type_name:?}; known job types: {}",
                    self.job_types().names().join(", ")
                ),
            ));
        };
        // Every problem is reported at once: the priority, the name and the settings.
        let mut problems: Vec<(String, String)> = Vec::new();
        let priority = priority(submission.priority.as_ref()).unwrap_or_else(|e| {
            problems.push(field_and_message(e));
            DEFAULT_JOB_PRIORITY
        });
        let name = match submission.name.as_deref().map(str::trim) {
            None | Some("") => type_name.to_string(),
            Some(n) if n.chars().count() > MAX_JOB_NAME => {
                problems.push((
                    "name".into(),
                    format!("the name is longer than {MAX_JOB_NAME} characters"),
                ));
                String::new()
            }
            Some(n) => n.to_string(),
        };
        let worker_tag = crate::tags::check_job_tag(submission.worker_tag.as_deref())
            .unwrap_or_else(|e| {
                problems.push(("worker_tag".into(), e.to_string()));
                None
            });
        // Stores keep whole milliseconds: the job returned is the job stored.
        let now = self.now();
        let now = chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let mut job = Job {
            id: ObjectId::new(),
            name,
            job_type: type_name.to_string(),
            priority,
            status: JobStatus::Queued,
            settings: submission.settings,
            created: now,
            updated: now,
            task_counts: TaskCounts::default(),
            worker_tag,
        };
        let max_tasks = self.config().max_tasks_per_job;
        let ctx = CompileContext { max_tasks };
        let specs = match job_type.compile(&job, &ctx) {
            Ok(specs) => Some(specs),
            Err(e) => {
                problems.extend(
                    e.into_each()
                        .into_iter()
                        .map(|p| (p.field(), p.to_string())),
                );
                None
            }
        };
        if specs.is_none() && problems.is_empty() {
            problems.push(("settings".into(), "the settings could not be read".into()));
        }
        let specs = match (problems.len(), specs) {
            (0, Some(specs)) => specs,
            (1, _) => {
                let (field, message) = problems.remove(0);
                return Err(ApiError::InvalidField { field, message });
            }
            (n, _) => {
                let mut message = format!("{n} problems with the job:");
                for (_, m) in &problems {
                    message.push_str("\n  ");
                    message.push_str(m);
                }
                return Err(ApiError::InvalidField {
                    field: problems.remove(0).0,
                    message,
                });
            }
        };
        if specs.is_empty() {
            return Err(invalid("settings", "the job has no tasks to run"));
        }
        ctx.check_task_count(specs.len() as u64, "")
            .map_err(|e| invalid("settings", e.to_string()))?;
        let tasks = build_tasks(&job, specs).map_err(|e| ApiError::Internal(e.to_string()))?;
        job.task_counts = TaskCounts::from_statuses(tasks.iter().map(|t| &t.status));
        Ok((job, tasks))
    }

    /// Submit a job: compile it ([`Manager::compile_job`]) and store it with its tasks
    /// (atomically). Its tasks are schedulable at once. Refused in upstream mode. The
    /// warnings of [`Manager::submit_job_with_warnings`] are logged.
    pub async fn submit_job(&self, submission: JobSubmission) -> Result<Job, ApiError> {
        let submitted = self.submit_job_with_warnings(submission).await?;
        for w in &submitted.warnings {
            tracing::warn!(job = %submitted.job.id, "{w}");
        }
        Ok(submitted.job)
    }

    /// [`Manager::submit_job`], returning what the submitter should know about the
    /// stored job: the placeholders its commands use that the configuration defines for no
    /// platform (workers would receive `{blender}` as written), one warning each.
    pub async fn submit_job_with_warnings(
        &self,
        submission: JobSubmission,
    ) -> Result<Submitted, ApiError> {
        self.refuse_upstream("submit jobs")?;
        let (job, tasks) = self.compile_job(submission)?;
        self.store().insert_job(&job, &tasks).await?;
        tracing::info!(job = %job.id, job_type = %job.job_type, tasks = tasks.len(), name = %job.name, "job submitted");
        let warnings = crate::variables::undefined_placeholders(
            self.config(),
            tasks.iter().flat_map(|t| t.commands.iter()),
        )
        .into_iter()
        .map(|name| {
            format!(
                "the job's commands use {{{name}}}, which the configuration defines for no \
                 platform: workers receive it as written; define it under `variables:` \
                 (e.g. {name}: {{linux: /path, windows: C:/path}}) and re-submit"
            )
        })
        .collect();
        Ok(Submitted { job, warnings })
    }

    pub async fn get_job(&self, id: ObjectId) -> Result<Option<Job>, ApiError> {
        Ok(self.store().get_job(id).await?)
    }

    /// Jobs, newest first.
    pub async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>, ApiError> {
        Ok(self.store().list_jobs(query).await?)
    }

    /// A job's tasks, oldest first (404 when the job is unknown).
    pub async fn job_tasks(
        &self,
        id: ObjectId,
        statuses: Vec<TaskStatus>,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<Vec<Task>, ApiError> {
        if self.store().get_job(id).await?.is_none() {
            return Err(unknown_job(id));
        }
        Ok(self
            .store()
            .list_tasks(&TaskQuery {
                statuses,
                job: Some(id),
                order: TaskOrder::Id,
                limit,
                offset,
                ..TaskQuery::default()
            })
            .await?)
    }

    /// Do `action` to a job: the job as it is now (for a delete: as it was) and how many
    /// tasks changed (were deleted). 404 for an unknown job, 409 when the job's status
    /// does not allow it.
    pub async fn job_action(
        &self,
        id: ObjectId,
        action: JobAction,
    ) -> Result<(Job, u64), ApiError> {
        if action != JobAction::Delete {
            self.refuse_upstream("manage jobs")?;
        }
        // The status before, for the job-status webhook (read only when one wants it).
        let before = if self.wants_job_status_webhooks(action) {
            self.store().get_job(id).await?.map(|j| j.status)
        } else {
            None
        };
        match self.store().job_action(id, action, self.now()).await? {
            JobActionOutcome::Done { job, tasks } => {
                tracing::info!(job = %id, action = action.as_str(), tasks, status = %job.status, "job action");
                if let Some(from) = before {
                    self.enqueue_job_action_webhooks(id, from, &job).await;
                }
                Ok((job, tasks))
            }
            JobActionOutcome::NotFound => Err(unknown_job(id)),
            JobActionOutcome::Refused(reason) => Err(ApiError::Conflict(format!(
                "cannot {} job {id}: {reason}",
                action.as_str()
            ))),
        }
    }

    /// Cancel a job: queued tasks become `canceled`, running ones `cancel-requested`
    /// (their workers hear it through may-i-run). The job is `cancel-requested` until
    /// they stopped, then `canceled`.
    pub async fn cancel_job(&self, id: ObjectId) -> Result<Job, ApiError> {
        self.job_action(id, JobAction::Cancel).await.map(|(j, _)| j)
    }

    /// Re-queue a job: its failed and canceled tasks (every task, for a completed job)
    /// become `queued` again, and so does the job.
    pub async fn requeue_job(&self, id: ObjectId) -> Result<Job, ApiError> {
        self.job_action(id, JobAction::Requeue)
            .await
            .map(|(j, _)| j)
    }

    /// Do `action` to one task: the task as it is now. 404 for an unknown task, 409 when
    /// its status (or its job's) does not allow it, or in upstream mode (the Server owns
    /// the tasks there). The change goes through the outbox, so the job follows.
    pub async fn task_action(&self, id: ObjectId, action: TaskAction) -> Result<Task, ApiError> {
        self.refuse_upstream("manage tasks")?;
        match self.store().task_action(id, action, self.now()).await? {
            TaskActionOutcome::Done { task, changed } => {
                tracing::info!(task = %id, action = action.as_str(), changed, status = %task.status, "task action");
                Ok(*task)
            }
            TaskActionOutcome::NotFound => Err(ApiError::NotFound(format!("task {id} is unknown"))),
            TaskActionOutcome::Refused(reason) => Err(ApiError::Conflict(format!(
                "cannot {} task {id}: {reason}",
                action.as_str()
            ))),
        }
    }

    /// Cancel one task: a queued task becomes `canceled`, a running one
    /// `cancel-requested` (its worker stops at its next may-i-run).
    pub async fn cancel_task(&self, id: ObjectId) -> Result<Task, ApiError> {
        self.task_action(id, TaskAction::Cancel).await
    }

    /// Re-queue one failed, canceled or completed task; a finished job becomes `queued`.
    pub async fn requeue_task(&self, id: ObjectId) -> Result<Task, ApiError> {
        self.task_action(id, TaskAction::Requeue).await
    }

    /// A worker's most recently updated tasks, newest first (404 when the worker is
    /// unknown).
    pub async fn worker_tasks(
        &self,
        worker: ObjectId,
        limit: usize,
    ) -> Result<Vec<Task>, ApiError> {
        if self.store().get_worker(worker).await?.is_none() {
            return Err(ApiError::NotFound(format!("worker {worker} is unknown")));
        }
        Ok(self
            .store()
            .list_tasks(&TaskQuery {
                worker_id: Some(worker),
                order: TaskOrder::RecentlyUpdated,
                limit: Some(limit),
                ..TaskQuery::default()
            })
            .await?)
    }

    /// Delete a finished job and its tasks; returns how many tasks were deleted.
    pub async fn delete_job(&self, id: ObjectId) -> Result<u64, ApiError> {
        self.job_action(id, JobAction::Delete).await.map(|(_, n)| n)
    }
}

impl Manager {
    /// Standalone mode, when a worker asks for a task or signs off: it runs nothing, so
    /// its `cancel-requested` tasks have stopped and become `canceled` (through the outbox,
    /// as a return would do). Flamenco Worker 2.0.x stops a canceled task without
    /// returning it (`/tasks/{id}/return` came with 2.2), and its last update is refused
    /// with 409, so without this the task, and its job, would stay `cancel-requested`.
    pub(crate) async fn cancel_tasks_worker_stopped(
        &self,
        worker: &Worker,
    ) -> Result<(), ApiError> {
        let stopped = self
            .store()
            .list_tasks(&TaskQuery {
                statuses: vec![TaskStatus::CancelRequested],
                worker_id: Some(worker.id),
                ..TaskQuery::default()
            })
            .await?;
        for task in stopped {
            let ident = worker.identifier();
            if let Some(update) =
                updates::return_update(task.id, &ident, &ReturnOutcome::Canceled, self.now())
            {
                self.store().queue_update(update).await?;
                tracing::info!(task = %task.id, worker = %ident, "the worker stopped its cancel-requested task; canceled");
            }
        }
        Ok(())
    }
}

fn unknown_job(id: ObjectId) -> ApiError {
    ApiError::NotFound(format!("job {id} is unknown"))
}
