//! The subcommands. Each opens the configured store through `flamenco-core` and calls the
//! SDK; none goes through the daemon's HTTP.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use flamenco_core::config::{Config, ConfigSource};
use flamenco_core::model::{ObjectId, RequestedStatus, TaskStatus};
use flamenco_core::store::TaskQuery;
use flamenco_core::Manager;

use crate::{Cli, Command};

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List tasks, oldest first.
    List {
        /// Only tasks with this status (repeatable).
        #[arg(long)]
        status: Vec<String>,
        /// Only tasks of this task type.
        #[arg(long = "type")]
        task_type: Option<String>,
        /// At most this many tasks.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    /// List registered workers.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Ask a 2.1+ worker to go to sleep.
    Sleep { id: String },
    /// Ask a 2.1+ worker to wake up.
    Wake { id: String },
    /// Ask a 2.1+ worker to shut down (it signs off and exits).
    Shutdown { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Load and validate the configuration, then print the effective settings.
    Check,
}

fn load_config(cli: &Cli) -> Result<(Config, ConfigSource)> {
    Config::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn open(cli: &Cli) -> Result<Manager> {
    let (config, _) = load_config(cli)?;
    Manager::open(config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))
}

pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve => serve(&cli).await,
        Command::Queue(QueueCommand::List {
            status,
            task_type,
            limit,
            json,
        }) => {
            let manager = open(&cli).await?;
            let statuses = status
                .iter()
                .map(|s| TaskStatus::parse_known(s).map_err(|e| anyhow::anyhow!("--status: {e}")))
                .collect::<Result<Vec<_>>>()?;
            let tasks = manager
                .list_tasks(&TaskQuery {
                    statuses,
                    task_type: task_type.clone(),
                    limit: Some(*limit),
                    ..TaskQuery::default()
                })
                .await?;
            for t in &tasks {
                if *json {
                    println!("{}", serde_json::to_string(t)?);
                } else {
                    println!(
                        "{}  {:<18}  {:<16}  prio {:>4}/{:<4}  {}",
                        t.id, t.status, t.task_type, t.job_priority, t.priority, t.name
                    );
                }
            }
            manager.close().await?;
            Ok(())
        }
        Command::Worker(cmd) => worker(&cli, cmd).await,
        Command::Config(ConfigCommand::Check) => {
            let (config, source) = load_config(&cli)?;
            match source {
                ConfigSource::File(p) => println!("# configuration loaded from {}", p.display()),
                ConfigSource::Defaults => println!("# no configuration file; defaults apply"),
            }
            println!("{}", config.describe_effective());
            Ok(())
        }
    }
}

async fn worker(cli: &Cli, cmd: &WorkerCommand) -> Result<()> {
    let manager = open(cli).await?;
    let request = |id: &str, status| -> Result<(ObjectId, RequestedStatus)> {
        let id = ObjectId::parse(id).context("worker ids are 24 hexadecimal characters")?;
        Ok((id, status))
    };
    let (id, status) = match cmd {
        WorkerCommand::List { json } => {
            for w in manager.list_workers().await? {
                if *json {
                    println!("{}", serde_json::to_string(&w)?);
                } else {
                    println!(
                        "{}  {:<20}  {:<8}  {:<8}  {:<22}  {}",
                        w.id,
                        w.nickname,
                        if w.status.is_empty() { "-" } else { &w.status },
                        w.platform,
                        w.software,
                        w.last_activity.map(|t| t.to_rfc3339()).unwrap_or_default()
                    );
                }
            }
            manager.close().await?;
            return Ok(());
        }
        WorkerCommand::Sleep { id } => request(id, RequestedStatus::Asleep)?,
        WorkerCommand::Wake { id } => request(id, RequestedStatus::Awake)?,
        WorkerCommand::Shutdown { id } => request(id, RequestedStatus::Shutdown)?,
    };
    manager.request_worker_status(id, Some(status)).await?;
    if let Some(w) = manager.get_worker(id).await? {
        if !w.supports_status_requests() {
            eprintln!(
                "note: worker {id} runs {:?}, which does not understand status requests (Flamenco Worker 2.1+ does)",
                w.software
            );
        }
    }
    println!("requested status {status} for worker {id}");
    manager.close().await?;
    Ok(())
}

async fn serve(cli: &Cli) -> Result<()> {
    tracing::info!(
        "Starting Flamenco Manager version {}",
        flamenco_core::VERSION
    );
    let (config, source) = load_config(cli)?;
    match &source {
        ConfigSource::File(p) => tracing::info!("configuration loaded from {}", p.display()),
        ConfigSource::Defaults => tracing::info!(
            "no {} in the working directory and no --config given; using defaults",
            flamenco_core::config::DEFAULT_CONFIG_FILE
        ),
    }
    let listen = config.listen.clone();
    if config.is_upstream() {
        bail!("upstream mode (`flamenco: {}`) is not available in this build yet; remove `flamenco:` to run standalone", config.flamenco);
    }
    let manager = Arc::new(
        Manager::open(config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))?,
    );
    tracing::info!("store: {}", manager.store().describe());
    let listener = flamenco_serve::bind(&listen).await?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    tracing::info!(
        "listening on {addr}; workers can use manager_url = http://<this host>:{}/",
        addr.rsplit(':').next().unwrap_or("8083")
    );
    let served =
        flamenco_serve::serve(manager.clone(), listener, flamenco_serve::shutdown_signal()).await;
    let closed = manager.close().await;
    served.context("the HTTP server failed")?;
    closed.context("closing the store failed")?;
    tracing::info!("shutdown complete");
    Ok(())
}
