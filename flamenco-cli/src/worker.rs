//! `flamenco worker`: list and inspect workers, and ask them to change state.

use anyhow::{Context, Result};
use clap::Subcommand;
use flamenco_core::model::RequestedStatus;

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
    /// Ask a 2.1+ worker to go to sleep (it stops fetching tasks).
    Sleep { id: String },
    /// Ask a 2.1+ worker to wake up.
    Wake { id: String },
    /// Ask a 2.1+ worker to shut down (it signs off and exits).
    Shutdown { id: String },
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
        WorkerCommand::Sleep { id } => (id, RequestedStatus::Asleep),
        WorkerCommand::Wake { id } => (id, RequestedStatus::Awake),
        WorkerCommand::Shutdown { id } => (id, RequestedStatus::Shutdown),
    };
    ids::parse("worker id", raw)?;
    let manager = open(cli).await?;
    let result = request(&manager, raw, status, cli.json).await;
    manager.close().await?;
    result
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
            task,
            ago(w.last_activity, now),
        ]);
    }
    outln!("{out}")?;
    eprintln!("{} worker(s); --json for every field", workers.len());
    Ok(())
}
