//! `flamenco queue`: list and inspect tasks in the store.

use anyhow::{anyhow, Context, Result};
use clap::{Subcommand, ValueEnum};
use flamenco_core::model::{ObjectId, TaskStatus};
use flamenco_core::store::{TaskOrder, TaskQuery};

use crate::commands::open;
use crate::output::{ago, json_line, table};
use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List tasks as a table (or JSON lines with --json).
    List {
        /// Only tasks with this status (repeatable).
        #[arg(long)]
        status: Vec<String>,
        /// Only tasks of this task type.
        #[arg(long = "type")]
        task_type: Option<String>,
        /// Only tasks of this job (id).
        #[arg(long)]
        job: Option<String>,
        /// Only tasks assigned to this worker (id).
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
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one task in full.
    Show {
        /// The task id.
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

/// Parse an id given on the command line; the error names the argument.
pub fn parse_id(what: &str, raw: &str) -> Result<ObjectId> {
    ObjectId::parse(raw)
        .map_err(|_| anyhow!("{what} {raw:?} is not an id: ids are 24 hexadecimal characters"))
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
            json,
        } => {
            let statuses = status
                .iter()
                .map(|s| TaskStatus::parse_known(s).map_err(|e| anyhow!("--status: {e}")))
                .collect::<Result<Vec<_>>>()?;
            let query = TaskQuery {
                statuses,
                task_type: task_type.clone(),
                job: job.as_deref().map(|j| parse_id("--job", j)).transpose()?,
                worker_id: worker
                    .as_deref()
                    .map(|w| parse_id("--worker", w))
                    .transpose()?,
                order: match sort {
                    SortBy::Id => TaskOrder::Id,
                    SortBy::Priority => TaskOrder::Schedule,
                    SortBy::Updated => TaskOrder::RecentlyUpdated,
                },
                limit: Some(*limit),
                offset: *offset,
            };
            let manager = open(cli).await?;
            let tasks = manager.list_tasks(&query).await?;
            let now = manager.now();
            if *json {
                for t in &tasks {
                    json_line(&task_json(t))?;
                }
            } else {
                let mut out = table(&[
                    "id", "job", "name", "type", "status", "priority", "worker", "activity",
                    "updated",
                ]);
                for t in &tasks {
                    out.add_row(vec![
                        t.id.to_hex(),
                        t.job.map(|j| j.to_hex()).unwrap_or_else(|| "-".into()),
                        t.name.clone(),
                        t.task_type.clone(),
                        t.status.to_string(),
                        format!("{}/{}", t.job_priority, t.priority),
                        if t.worker.is_empty() {
                            "-".into()
                        } else {
                            t.worker.clone()
                        },
                        t.activity.clone(),
                        ago(t.last_updated, now),
                    ]);
                }
                println!("{out}");
                eprintln!(
                    "{} task(s) shown (limit {limit}, offset {offset})",
                    tasks.len()
                );
            }
            manager.close().await?;
            Ok(())
        }
        QueueCommand::Outbox(args) => crate::push::outbox(cli, args).await,
        QueueCommand::Show { id, platform } => {
            let id = parse_id("task id", id)?;
            let manager = open(cli).await?;
            let mut task = manager
                .get_task(id)
                .await?
                .with_context(|| format!("task {id} is unknown"))?;
            if let Some(platform) = platform {
                manager.substitute(platform, &mut task.commands);
            }
            println!("{}", serde_json::to_string_pretty(&task_json(&task))?);
            manager.close().await?;
            Ok(())
        }
    }
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
