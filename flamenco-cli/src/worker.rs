//! `flamenco worker`: list and inspect workers, and ask them to change state.

use anyhow::{Context, Result};
use clap::Subcommand;
use flamenco_core::model::RequestedStatus;

use crate::commands::open;
use crate::output::{ago, json_line, table};
use crate::queue::parse_id;
use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    /// List registered workers.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one worker in full.
    Show { id: String },
    /// Ask a 2.1+ worker to go to sleep (it stops fetching tasks).
    Sleep { id: String },
    /// Ask a 2.1+ worker to wake up.
    Wake { id: String },
    /// Ask a 2.1+ worker to shut down (it signs off and exits).
    Shutdown { id: String },
}

pub async fn run(cli: &Cli, cmd: &WorkerCommand) -> Result<()> {
    let (id, status) = match cmd {
        WorkerCommand::List { json } => return list(cli, *json).await,
        WorkerCommand::Show { id } => {
            let id = parse_id("worker id", id)?;
            let manager = open(cli).await?;
            let w = manager
                .get_worker(id)
                .await?
                .with_context(|| format!("worker {id} is unknown"))?;
            println!("{}", serde_json::to_string_pretty(&w)?);
            manager.close().await?;
            return Ok(());
        }
        WorkerCommand::Sleep { id } => (id, RequestedStatus::Asleep),
        WorkerCommand::Wake { id } => (id, RequestedStatus::Awake),
        WorkerCommand::Shutdown { id } => (id, RequestedStatus::Shutdown),
    };
    let id = parse_id("worker id", id)?;
    let manager = open(cli).await?;
    // Refused (nothing recorded) for a worker that cannot obey, with the API's message.
    manager.request_worker_status(id, Some(status)).await?;
    println!("requested status {status} for worker {id}");
    manager.close().await?;
    Ok(())
}

async fn list(cli: &Cli, json: bool) -> Result<()> {
    let manager = open(cli).await?;
    let workers = manager.list_workers().await?;
    let now = manager.now();
    if json {
        for w in &workers {
            json_line(w)?;
        }
    } else {
        let mut out = table(&[
            "id",
            "nickname",
            "status",
            "platform",
            "software",
            "task",
            "task status",
            "last seen",
        ]);
        for w in &workers {
            let status = match (w.status.as_str(), w.status_requested) {
                ("", _) => "registered".to_string(),
                (s, Some(r)) => format!("{s} (→ {r})"),
                (s, None) => s.to_string(),
            };
            out.add_row(vec![
                w.id.to_hex(),
                w.nickname.clone(),
                status,
                w.platform.clone(),
                w.software.clone(),
                w.current_task
                    .map(|t| t.to_hex())
                    .unwrap_or_else(|| "-".into()),
                if w.current_task_status.is_empty() {
                    "-".into()
                } else {
                    w.current_task_status.clone()
                },
                ago(w.last_activity, now),
            ]);
        }
        println!("{out}");
        eprintln!("{} worker(s)", workers.len());
    }
    manager.close().await?;
    Ok(())
}
