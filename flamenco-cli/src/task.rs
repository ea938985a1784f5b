//! `flamenco task log ID [--tail N] [--follow]`: a task's log, from the store (docs/cli.md).
//! `flamenco task show ID`: the task and its failure record (`crate::retries`).
//! `flamenco task cancel|requeue ID`: one task's actions (the SDK's
//! [`Manager::cancel_task`] and [`Manager::requeue_task`]).
//!
//! Like the other commands it opens the store directly, not the daemon's HTTP API. The
//! whole log (or its last N lines) is printed one line per line, with the marker line
//! where the size cap dropped lines; `--json` prints one JSON object per entry
//! (`{"line", "text"}`, or the marker's `{"dropped_lines", "dropped_bytes", "text"}`).
//! `--follow` then keeps printing new lines as they are stored, polling the store every
//! [`FOLLOW_POLL`]; it ends on Ctrl-C, or once the task is finished (completed, failed or
//! canceled) and no new line came for [`FOLLOW_QUIET`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use flamenco_core::model::ObjectId;
use flamenco_core::store::logs::{TaskLogEntry, MAX_READ_LINES};
use flamenco_core::store::{TaskLogPage, TaskLogQuery};
use flamenco_core::Manager;
use futures::StreamExt;
use serde_json::json;

use crate::commands::open;
use crate::ids::{self, Kind};
use crate::output::json_line;
use crate::Cli;

/// How often `--follow` reads the store.
pub const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// `--follow` ends this long after the last new line once the task is finished.
pub const FOLLOW_QUIET: Duration = Duration::from_secs(2);

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Print a task's log: every line its worker sent (the first and last part of a very
    /// long log, with a marker line where lines were dropped).
    Log {
        /// The task id (or short id).
        id: String,
        /// Only the last N lines.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_READ_LINES as u64))]
        tail: Option<u64>,
        /// Keep printing new lines as they arrive (until Ctrl-C, or until the task is
        /// finished and quiet).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Cancel a task: a queued task is canceled, a running one stops at its worker's next
    /// may-i-run.
    Cancel {
        /// The task id (or short id).
        id: String,
    },
    /// Re-queue a failed, canceled or completed task (a finished job is queued again).
    Requeue {
        /// The task id (or short id).
        id: String,
    },
    /// Show a task: status, worker, activity and its failure record (which workers failed
    /// it, and when; they are not given it again).
    Show {
        /// The task id (or short id).
        id: String,
    },
}

pub async fn run(cli: &Cli, cmd: &TaskCommand) -> Result<()> {
    match cmd {
        TaskCommand::Show { id } => crate::retries::task_show(cli, id).await,
        TaskCommand::Log { id, tail, follow } => {
            ids::parse("task id", id)?;
            let manager = Arc::new(open(cli).await?);
            let result = log(&manager, cli.json, id, *tail, *follow).await;
            manager.close().await?;
            result
        }
        TaskCommand::Cancel { id } | TaskCommand::Requeue { id } => {
            ids::parse("task id", id)?;
            let manager = open(cli).await?;
            let result = act(&manager, matches!(cmd, TaskCommand::Cancel { .. }), id).await;
            manager.close().await?;
            let task = result?;
            if cli.json {
                json_line(&task)
            } else if task.status == flamenco_core::model::TaskStatus::CancelRequested {
                outln!(
                    "task {} is cancel-requested; it stops when its worker next asks may-i-run",
                    task.id
                )
            } else {
                outln!("task {} is {}", task.id, task.status)
            }
        }
    }
}

/// Cancel (`cancel`) or re-queue the task `raw` names.
async fn act(manager: &Manager, cancel: bool, raw: &str) -> Result<flamenco_core::model::Task> {
    let id = ids::resolve(manager, Kind::Task, "task id", raw).await?;
    Ok(if cancel {
        manager.cancel_task(id).await?
    } else {
        manager.requeue_task(id).await?
    })
}

fn print(page: &TaskLogPage, json: bool) -> Result<()> {
    for e in &page.entries {
        if json {
            let value = match e {
                TaskLogEntry::Line { line, text } => json!({"line": line, "text": text}),
                TaskLogEntry::Dropped {
                    dropped_lines,
                    dropped_bytes,
                } => json!({
                    "dropped_lines": dropped_lines,
                    "dropped_bytes": dropped_bytes,
                    "text": e.text(),
                }),
            };
            json_line(&value)?;
        } else {
            outln!("{}", e.text())?;
        }
    }
    Ok(())
}

async fn log(
    manager: &Arc<Manager>,
    json: bool,
    raw: &str,
    tail: Option<u64>,
    follow: bool,
) -> Result<()> {
    let id = ids::resolve(manager, Kind::Task, "task id", raw).await?;
    let next = match tail {
        Some(n) => {
            let page = manager
                .task_log(id, TaskLogQuery::Tail(n as usize))
                .await
                .with_context(|| format!("reading the log of task {id}"))?;
            print(&page, json)?;
            page.end.next_line
        }
        None => {
            let mut from = 0;
            loop {
                let page = manager
                    .task_log(
                        id,
                        TaskLogQuery::From {
                            from,
                            limit: MAX_READ_LINES,
                        },
                    )
                    .await
                    .with_context(|| format!("reading the log of task {id}"))?;
                print(&page, json)?;
                if page.entries.is_empty() || page.next_line >= page.end.next_line {
                    break page.end.next_line.max(page.next_line);
                }
                from = page.next_line;
            }
        }
    };
    if follow {
        follow_log(manager, id, next, json).await?;
    }
    Ok(())
}

/// Print new lines from `next` on until Ctrl-C, or the task is finished and quiet.
async fn follow_log(manager: &Arc<Manager>, id: ObjectId, next: u64, json: bool) -> Result<()> {
    let mut pages = Box::pin(manager.follow_task_log(id, next, FOLLOW_POLL));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            page = tokio::time::timeout(FOLLOW_QUIET, pages.next()) => match page {
                Ok(Some(page)) => {
                    let page = page.with_context(|| format!("following the log of task {id}"))?;
                    print(&page, json)?;
                }
                Ok(None) => return Ok(()),
                Err(_quiet) => {
                    let finished = manager
                        .get_task(id)
                        .await?
                        .is_none_or(|t| t.status.is_final());
                    if finished {
                        return Ok(());
                    }
                }
            },
        }
    }
}
