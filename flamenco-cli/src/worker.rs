//! `flamenco worker`: list and inspect workers, and ask them to change state.

use anyhow::{Context, Result};
use clap::Subcommand;
use flamenco_core::bulk::WorkerBulkAction;
use flamenco_core::model::RequestedStatus;

use crate::bulk::WorkerTargets;
use crate::commands::open;
use crate::ids::{self, Kind};
use crate::output::{ago, cut, json_doc, json_line, short_id, table};
use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    /// List registered workers (short ids; --json for every field).
    List,
    /// Show one worker in full (JSON).
    Show { id: String },
    /// Ask 2.1+ workers to go to sleep (they stop fetching tasks). Several ids, --status
    /// or --all act on many workers (one line each; a 2.0 worker is refused; exit status 1
    /// when any worker was refused or unknown).
    Sleep {
        #[command(flatten)]
        workers: WorkerTargets,
    },
    /// Ask 2.1+ workers to wake up. Several ids, --status or --all for many.
    Wake {
        #[command(flatten)]
        workers: WorkerTargets,
    },
    /// Forget workers: remove their records. Refused for a worker that runs tasks unless
    /// it has timed out (or is down/offline): then its tasks go back to the queue. A
    /// forgotten worker that still runs must register again.
    Forget {
        #[command(flatten)]
        workers: WorkerTargets,
    },
    /// Ask a 2.1+ worker to shut down (it signs off and exits).
    Shutdown { id: String },
    /// Add and remove worker tags: a job submitted with `--tag T` only goes to workers
    /// tagged T. Several ids, --status or --all tag many workers in one operation.
    ///
    /// Example: flamenco worker tag a1b2c3d4 --add gpu --remove win
    Tag {
        #[command(flatten)]
        workers: WorkerTargets,
        /// A tag to add (repeatable): 1–64 characters of letters, digits, `_`, `.`, `-`.
        #[arg(long, value_name = "TAG")]
        add: Vec<String>,
        /// A tag to remove (repeatable).
        #[arg(long, value_name = "TAG")]
        remove: Vec<String>,
    },
}

pub async fn run(cli: &Cli, cmd: &WorkerCommand) -> Result<()> {
    let (raw, status) = match cmd {
        WorkerCommand::List => return list(cli).await,
        WorkerCommand::Show { id } => {
            ids::parse("worker id", id)?;
            let manager = open(cli).await?;
            let result = show(&manager, id).await;
            manager.close().await?;
            let w = result?;
            return if cli.json {
                json_line(&w)
            } else {
                json_doc(&w)
            };
        }
        WorkerCommand::Sleep { workers } | WorkerCommand::Wake { workers } => {
            let status = if matches!(cmd, WorkerCommand::Sleep { .. }) {
                RequestedStatus::Asleep
            } else {
                RequestedStatus::Awake
            };
            workers.check()?;
            match workers.single() {
                Some(id) => (id, status),
                None => {
                    let action = if status == RequestedStatus::Asleep {
                        WorkerBulkAction::Sleep
                    } else {
                        WorkerBulkAction::Wake
                    };
                    return bulk(cli, &action, workers).await;
                }
            }
        }
        WorkerCommand::Forget { workers } => {
            workers.check()?;
            return bulk(cli, &WorkerBulkAction::Forget, workers).await;
        }
        WorkerCommand::Shutdown { id } => (id.as_str(), RequestedStatus::Shutdown),
        WorkerCommand::Tag {
            workers,
            add,
            remove,
        } => return tag(cli, workers, add, remove).await,
    };
    ids::parse("worker id", raw)?;
    let manager = open(cli).await?;
    let result = request(&manager, raw, status, cli.json).await;
    manager.close().await?;
    result
}

/// A bulk action: resolve every id first, then act, then print one line per worker.
async fn bulk(cli: &Cli, action: &WorkerBulkAction, workers: &WorkerTargets) -> Result<()> {
    let manager = open(cli).await?;
    let result = async {
        let selection = workers.selection(&manager).await?;
        Ok::<_, anyhow::Error>(manager.bulk_workers(action, &selection, None).await?)
    }
    .await;
    manager.close().await?;
    crate::bulk::finish(&result?, cli.json, "worker")
}

/// `flamenco worker tag`: the tags are checked before the store is opened; one worker
/// prints its tags, many go through the bulk action (one line each).
async fn tag(cli: &Cli, workers: &WorkerTargets, add: &[String], remove: &[String]) -> Result<()> {
    workers.check()?;
    if add.is_empty() && remove.is_empty() {
        anyhow::bail!("nothing to do: give --add TAG and/or --remove TAG");
    }
    flamenco_core::tags::TagChange::new(add, remove).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(raw) = workers.single() else {
        let action = WorkerBulkAction::Tag {
            add: add.to_vec(),
            remove: remove.to_vec(),
        };
        return bulk(cli, &action, workers).await;
    };
    ids::parse("worker id", raw)?;
    let manager = open(cli).await?;
    let result = async {
        let id = ids::resolve(&manager, Kind::Worker, "worker id", raw).await?;
        let changed = manager.tag_workers(&[id], add, remove).await?;
        let worker = show(&manager, &id.to_string()).await?;
        Ok::<_, anyhow::Error>((worker, changed))
    }
    .await;
    manager.close().await?;
    let (worker, changed) = result?;
    if cli.json {
        return json_line(&worker);
    }
    let tags = if worker.tags.is_empty() {
        "no tags".to_string()
    } else {
        worker.tags.join(", ")
    };
    let what = if changed > 0 {
        "now has"
    } else {
        "already had"
    };
    outln!("worker {} {what}: {tags}", worker.id)
}

async fn show(manager: &flamenco_core::Manager, raw: &str) -> Result<flamenco_core::model::Worker> {
    let id = ids::resolve(manager, Kind::Worker, "worker id", raw).await?;
    manager
        .get_worker(id)
        .await?
        .with_context(|| format!("worker {id} is unknown"))
}

async fn request(
    manager: &flamenco_core::Manager,
    raw: &str,
    status: RequestedStatus,
    json: bool,
) -> Result<()> {
    let id = ids::resolve(manager, Kind::Worker, "worker id", raw).await?;
    // Refused (nothing recorded) for a worker that cannot obey, with the API's message.
    manager.request_worker_status(id, Some(status)).await?;
    let worker = manager.get_worker(id).await?;
    if json {
        return json_line(&worker);
    }
    outln!("requested status {status} for worker {id}")
}

async fn list(cli: &Cli) -> Result<()> {
    let manager = open(cli).await?;
    let workers = manager.list_workers().await;
    let now = manager.now();
    manager.close().await?;
    let workers = workers?;
    if cli.json {
        for w in &workers {
            json_line(w)?;
        }
        return Ok(());
    }
    let mut out = table(
        &[
            "id",
            "nickname",
            "status",
            "platform",
            "software",
            "tags",
            "task",
            "last seen",
        ],
        &["id", "task", "last seen"],
    );
    for w in &workers {
        let status = match (w.status.as_str(), w.status_requested) {
            ("", _) => "registered".to_string(),
            (s, Some(r)) => format!("{s} (→ {r})"),
            (s, None) => s.to_string(),
        };
        let task = match (&w.current_task, w.current_task_status.as_str()) {
            (Some(t), "") => short_id(t),
            (Some(t), s) => format!("{} {s}", short_id(t)),
            (None, _) => "-".into(),
        };
        out.add_row(vec![
            short_id(&w.id),
            cut(&w.nickname, 24),
            status,
            w.platform.clone(),
            cut(&w.software, 20),
            if w.tags.is_empty() {
                "-".into()
            } else {
                cut(&w.tags.join(","), 24)
            },
            task,
            ago(w.last_activity, now),
        ]);
    }
    outln!("{out}")?;
    eprintln!("{} worker(s); --json for every field", workers.len());
    Ok(())
}
