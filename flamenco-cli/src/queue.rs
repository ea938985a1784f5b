//! `flamenco queue`: list and inspect tasks in the store.

use anyhow::{anyhow, Context, Result};
use clap::{Subcommand, ValueEnum};
use flamenco_core::model::TaskStatus;
use flamenco_core::store::{TaskOrder, TaskQuery};

use crate::commands::open;
use crate::ids::{self, Kind};
use crate::output::{ago, cut, json_doc, json_line, short_id, table};
use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List tasks as a table (or JSON lines with --json). The table shows short ids (the
    /// last 8 characters), which the other commands accept.
    List {
        /// Only tasks with this status (repeatable).
        #[arg(long)]
        status: Vec<String>,
        /// Only tasks of this task type.
        #[arg(long = "type")]
        task_type: Option<String>,
        /// Only tasks of this job (id or short id).
        #[arg(long)]
        job: Option<String>,
        /// Only tasks assigned to this worker (id or short id).
        #[arg(long)]
        worker: Option<String>,
        /// Order of the listing.
        #[arg(long, value_enum, default_value_t = SortBy::Id)]
        sort: SortBy,
        /// At most this many tasks.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Skip this many tasks first (paging).
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Show one task in full (JSON).
    Show {
        /// The task id (or short id).
        id: String,
        /// Show the commands as a worker on this platform receives them (variables and
        /// path replacements substituted).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Show the task-update outbox: how many updates wait for the Flamenco Server, and
    /// the ones set aside because it never acknowledged them.
    Outbox(crate::push::OutboxArgs),
}

/// `--sort` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SortBy {
    /// Oldest first.
    Id,
    /// The order the scheduler hands tasks out in (job priority, priority, age).
    Priority,
    /// Most recently updated first.
    Updated,
}

pub async fn run(cli: &Cli, cmd: &QueueCommand) -> Result<()> {
    match cmd {
        QueueCommand::List {
            status,
            task_type,
            job,
            worker,
            sort,
            limit,
            offset,
        } => {
            let statuses = status
                .iter()
                .map(|s| TaskStatus::parse_known(s).map_err(|e| anyhow!("--status: {e}")))
                .collect::<Result<Vec<_>>>()?;
            for (what, raw) in [("--job", job), ("--worker", worker)] {
                if let Some(raw) = raw {
                    ids::parse(what, raw)?;
                }
            }
            let manager = open(cli).await?;
            let result = list(
                &manager, cli.json, statuses, task_type, job, worker, *sort, *limit, *offset,
            )
            .await;
            manager.close().await?;
            result
        }
        QueueCommand::Outbox(args) => crate::push::outbox(cli, args).await,
        QueueCommand::Show { id, platform } => {
            ids::parse("task id", id)?;
            let manager = open(cli).await?;
            let result = show(&manager, id, platform.as_deref()).await;
            manager.close().await?;
            let task = result?;
            if cli.json {
                json_line(&task)
            } else {
                json_doc(&task)
            }
        }
    }
}

async fn show(
    manager: &flamenco_core::Manager,
    raw: &str,
    platform: Option<&str>,
) -> Result<serde_json::Value> {
    let id = ids::resolve(manager, Kind::Task, "task id", raw).await?;
    let mut task = manager
        .get_task(id)
        .await?
        .with_context(|| format!("task {id} is unknown"))?;
    if let Some(platform) = platform {
        manager.substitute(platform, &mut task.commands);
    }
    Ok(task_json(&task))
}

#[allow(clippy::too_many_arguments)]
async fn list(
    manager: &flamenco_core::Manager,
    json: bool,
    statuses: Vec<TaskStatus>,
    task_type: &Option<String>,
    job: &Option<String>,
    worker: &Option<String>,
    sort: SortBy,
    limit: usize,
    offset: usize,
) -> Result<()> {
    let job = match job {
        Some(raw) => Some(ids::resolve(manager, Kind::Job, "--job", raw).await?),
        None => None,
    };
    let worker_id = match worker {
        Some(raw) => Some(ids::resolve(manager, Kind::Worker, "--worker", raw).await?),
        None => None,
    };
    let query = TaskQuery {
        statuses,
        task_type: task_type.clone(),
        job,
        worker_id,
        order: match sort {
            SortBy::Id => TaskOrder::Id,
            SortBy::Priority => TaskOrder::Schedule,
            SortBy::Updated => TaskOrder::RecentlyUpdated,
        },
        limit: Some(limit),
        offset,
    };
    let tasks = manager.list_tasks(&query).await?;
    let now = manager.now();
    if json {
        for t in &tasks {
            json_line(&task_json(t))?;
        }
        return Ok(());
    }
    let mut out = table(
        &[
            "id", "job", "name", "status", "prio", "worker", "activity", "updated",
        ],
        &["id", "job", "status", "prio", "updated"],
    );
    for t in &tasks {
        out.add_row(vec![
            short_id(&t.id),
            t.job.map(|j| short_id(&j)).unwrap_or_else(|| "-".into()),
            cut(&t.name, 30),
            t.status.to_string(),
            format!("{}/{}", t.job_priority, t.priority),
            if t.worker.is_empty() {
                "-".into()
            } else {
                cut(&t.worker, 20)
            },
            cut(&t.activity, 40),
            ago(t.last_updated, now),
        ]);
    }
    outln!("{out}")?;
    eprintln!(
        "{} task(s) shown (limit {limit}, offset {offset}); --json for every field",
        tasks.len()
    );
    Ok(())
}

/// The task's JSON plus the local bookkeeping a worker never sees.
fn task_json(t: &flamenco_core::model::Task) -> serde_json::Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "worker_id".into(),
            t.worker_id.map(|w| w.to_hex()).unwrap_or_default().into(),
        );
        obj.insert(
            "last_worker_ping".into(),
            t.last_worker_ping.map(|x| x.to_rfc3339()).into(),
        );
        obj.insert(
            "last_updated".into(),
            t.last_updated.map(|x| x.to_rfc3339()).into(),
        );
    }
    v
}
