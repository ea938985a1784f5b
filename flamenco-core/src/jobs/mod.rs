//! Standalone mode: jobs submitted to the Manager itself, compiled into tasks by job types,
//! with a status that follows their tasks.
//!
//! * [`JobType`] is what compiles a job's settings into tasks. The built-in ones are
//!   [`sleep`], [`exec_command`] and [`blender_render`] (modelled on the v2 Server's
//!   compilers, emitting only commands the real workers know); a program using this SDK
//!   can add its own with [`crate::Manager::register_job_type`].
//! * [`status`] holds the rules (pure functions): how a job's status follows its tasks
//!   (server-protocol.md §4.2) and how a job action cascades to its tasks (§4.3).
//! * [`retry`] holds the rules (pure functions) for retrying a failed task on other
//!   workers (`soft-failed`, `task_fail_after_softfail_count`).
//! * `manage` is the SDK surface on [`crate::Manager`]: submit, list, show, cancel,
//!   re-queue, delete.
//! * [`consumer`] is the standalone consumer of the task-update outbox: it applies each
//!   update's consequences to its job and acknowledges it, where upstream mode pushes the
//!   outbox to the Flamenco Server instead.

pub mod blender_render;
pub mod consumer;
pub mod exec_command;
pub mod frames;
mod manage;
pub mod retry;
pub mod settings;
pub mod sleep;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Command, Job, ObjectId, Task, TaskStatus};

pub use frames::FrameSet;
pub use manage::{JobSubmission, Submitted};
pub use settings::{Problems, Settings};

/// The default of `max_tasks_per_job`.
pub const DEFAULT_MAX_TASKS_PER_JOB: usize = 10_000;

/// A job setting that is not acceptable. `setting` is the key inside `settings` (empty
/// when the problem is the job as a whole). `also` holds the other problems found in the
/// same submission, so that every one is reported at once ([`settings::Problems`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe_all())]
pub struct InvalidSetting {
    pub setting: String,
    pub message: String,
    pub also: Vec<InvalidSetting>,
}

impl InvalidSetting {
    pub fn new(setting: impl Into<String>, message: impl std::fmt::Display) -> InvalidSetting {
        InvalidSetting {
            setting: setting.into(),
            message: message.to_string(),
            also: Vec::new(),
        }
    }

    /// One error for several problems (`None` for none): the first, with the rest in
    /// `also` (flattened).
    pub fn all(problems: Vec<InvalidSetting>) -> Option<InvalidSetting> {
        let mut flat = problems.into_iter().flat_map(|p| p.into_each());
        let mut first = flat.next()?;
        first.also = flat.collect();
        Some(first)
    }

    /// Every problem, each on its own (`also` empty).
    pub fn into_each(mut self) -> Vec<InvalidSetting> {
        let also = std::mem::take(&mut self.also);
        let mut out = vec![self];
        for a in also {
            out.extend(a.into_each());
        }
        out
    }

    /// How many problems this error holds.
    pub fn count(&self) -> usize {
        1 + self.also.iter().map(InvalidSetting::count).sum::<usize>()
    }

    fn describe_all(&self) -> String {
        if self.also.is_empty() {
            return self.describe();
        }
        let mut out = format!("{} problems with the settings:", self.count());
        for p in self.clone().into_each() {
            out.push_str("\n  ");
            out.push_str(&p.describe());
        }
        out
    }

    /// The field of the submission at fault: `settings.<key>`, or `settings`.
    pub fn field(&self) -> String {
        if self.setting.is_empty() {
            "settings".to_string()
        } else {
            format!("settings.{}", self.setting)
        }
    }

    fn describe(&self) -> String {
        if self.setting.is_empty() {
            format!("settings: {}", self.message)
        } else {
            format!("setting `{}`: {}", self.setting, self.message)
        }
    }
}

/// One task a job type makes. Parents are indices into the list the job type returns.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    pub name: String,
    /// Which workers may run it (they list the task types they support).
    pub task_type: String,
    pub commands: Vec<Command>,
    /// Indices of tasks (in the same list) that must complete first.
    pub parents: Vec<usize>,
    /// Order among the job's tasks: higher first. The v2 compilers used 50.
    pub priority: i32,
}

impl TaskSpec {
    /// A task without parents, priority 50.
    pub fn new(
        name: impl Into<String>,
        task_type: impl Into<String>,
        commands: Vec<Command>,
    ) -> Self {
        TaskSpec {
            name: name.into(),
            task_type: task_type.into(),
            commands,
            parents: Vec::new(),
            priority: 50,
        }
    }

    /// The same task, waiting for these tasks.
    pub fn with_parents(mut self, parents: Vec<usize>) -> Self {
        self.parents = parents;
        self
    }
}

/// What a job type may consult while compiling.
#[derive(Clone, Debug)]
pub struct CompileContext {
    /// `max_tasks_per_job`: compiling more tasks than this fails.
    pub max_tasks: usize,
}

impl CompileContext {
    /// Fail early (before building anything) when `count` tasks would be too many;
    /// `setting` is the one to blame (usually `frames`).
    pub fn check_task_count(&self, count: u64, setting: &str) -> Result<(), InvalidSetting> {
        if count > self.max_tasks as u64 {
            return Err(InvalidSetting::new(
                setting,
                format!(
                    "the job would have {count} tasks, more than max_tasks_per_job ({}); \
                     use fewer frames or a larger chunk_size, or raise max_tasks_per_job",
                    self.max_tasks
                ),
            ));
        }
        Ok(())
    }
}

/// Compiles jobs of one type into tasks. Implement it to add a job type, and register it
/// with [`crate::Manager::register_job_type`].
///
/// A job type must only emit commands the workers know (worker-protocol.md §11) and task
/// types the workers that should run them list in their `task_types`.
pub trait JobType: Send + Sync + 'static {
    /// The name jobs give in `job_type`, e.g. `sleep`.
    fn name(&self) -> &str;

    /// One line for listings.
    fn description(&self) -> &str {
        ""
    }

    /// Validate `job.settings` and make the tasks. Errors name the setting at fault.
    /// `job` is the job as it will be stored (id, name, priority, settings).
    fn compile(&self, job: &Job, ctx: &CompileContext) -> Result<Vec<TaskSpec>, InvalidSetting>;
}

/// The job types a Manager knows, by name.
#[derive(Clone)]
pub struct JobTypes {
    types: BTreeMap<String, Arc<dyn JobType>>,
}

impl std::fmt::Debug for JobTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.types.keys()).finish()
    }
}

impl Default for JobTypes {
    fn default() -> Self {
        JobTypes::builtin()
    }
}

impl JobTypes {
    /// No job types at all.
    pub fn empty() -> JobTypes {
        JobTypes {
            types: BTreeMap::new(),
        }
    }

    /// `sleep`, `exec-command` and `blender-render`.
    pub fn builtin() -> JobTypes {
        let mut types = JobTypes::empty();
        types.register(Arc::new(sleep::Sleep));
        types.register(Arc::new(exec_command::ExecCommand));
        types.register(Arc::new(blender_render::BlenderRender));
        types
    }

    /// Add a job type; one with the same name is replaced (and returned).
    pub fn register(&mut self, job_type: Arc<dyn JobType>) -> Option<Arc<dyn JobType>> {
        self.types.insert(job_type.name().to_string(), job_type)
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn JobType>> {
        self.types.get(name).cloned()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }

    /// `(name, description)` of every type, sorted by name.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.types
            .iter()
            .map(|(n, t)| (n.clone(), t.description().to_string()))
            .collect()
    }
}

/// Why compiled tasks could not become a job's tasks: a bug in the job type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("job type {job_type:?} made a bad task list: {message}")]
pub struct BadTaskList {
    pub job_type: String,
    pub message: String,
}

/// Turn a job type's task specs into the job's tasks: fresh ids, `queued`, the job's id,
/// type and priority copied (as v2 did), parents resolved to ids.
pub fn build_tasks(job: &Job, specs: Vec<TaskSpec>) -> Result<Vec<Task>, BadTaskList> {
    let ids: Vec<ObjectId> = specs.iter().map(|_| ObjectId::new()).collect();
    let bad = |message: String| BadTaskList {
        job_type: job.job_type.clone(),
        message,
    };
    let mut tasks = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let mut parents = Vec::with_capacity(spec.parents.len());
        for p in spec.parents {
            if p == i || p >= ids.len() {
                return Err(bad(format!(
                    "task {i} ({:?}) names task {p} as a parent",
                    spec.name
                )));
            }
            parents.push(ids[p]);
        }
        let mut task = Task::new(spec.name, spec.task_type, spec.commands);
        task.id = ids[i];
        task.job = Some(job.id);
        task.job_type.clone_from(&job.job_type);
        task.job_priority = job.priority;
        task.worker_tag.clone_from(&job.worker_tag);
        task.priority = spec.priority;
        task.status = TaskStatus::Queued;
        task.parents = parents;
        task.last_updated = Some(job.created);
        tasks.push(task);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests;
