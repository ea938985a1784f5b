//! Dispatching the subcommands, and what they share: loading the configuration and
//! opening the store through `flamenco-core` (never through the daemon's HTTP). Only
//! `serve` creates a store; every other command opens an existing one, or says where it
//! looked and how to point it at the right one.

use anyhow::Result;
use flamenco_core::config::{Config, ConfigSource, DEFAULT_CONFIG_FILE};
use flamenco_core::{Manager, OpenError};

use crate::{Cli, Command};

/// Load the configuration the global `--config` (or `FLAMENCO_CONFIG`) names, or the
/// default file.
pub fn load_config(cli: &Cli) -> Result<(Config, ConfigSource)> {
    Config::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Where the configuration came from, for messages.
pub fn describe_source(source: &ConfigSource) -> String {
    match source {
        ConfigSource::File(p) => format!(
            "the configuration is {}",
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
        ),
        ConfigSource::Defaults => {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "the working directory".into());
            format!(
                "no configuration file was found (no --config, no FLAMENCO_CONFIG, no \
                 {DEFAULT_CONFIG_FILE} in {cwd}), so the defaults apply"
            )
        }
    }
}

/// What to do when the store is not where the configuration points.
pub const POINT_AT_THE_MANAGER: &str = "Point the command at the Manager's configuration with \
     `-c PATH/flamenco-manager.yaml` or FLAMENCO_CONFIG=PATH/flamenco-manager.yaml, or run it \
     in the Manager's directory; only `flamenco serve` creates a new store";

/// Open the configured store, which must exist (see [`Manager::open_existing`]).
pub async fn open(cli: &Cli) -> Result<Manager> {
    let (config, source) = load_config(cli)?;
    match Manager::open_existing(config).await {
        Ok(manager) => Ok(manager),
        Err(OpenError::NoStore(where_)) => Err(anyhow::anyhow!(
            "no Manager store found: {where_}; {}. {}",
            describe_source(&source),
            POINT_AT_THE_MANAGER
        )),
        Err(e) => Err(anyhow::anyhow!("cannot open the store: {e}")),
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve => crate::serve::run(&cli).await,
        Command::Job(cmd) => crate::job::run(&cli, cmd).await,
        Command::Queue(cmd) => crate::queue::run(&cli, cmd).await,
        Command::Worker(cmd) => crate::worker::run(&cli, cmd).await,
        Command::Task(cmd) => crate::task::run(&cli, cmd).await,
        Command::Config(cmd) => crate::config_cmd::run(&cli, cmd).await,
        Command::Cleanslate(args) => crate::erase::cleanslate(&cli, args).await,
        Command::PurgeUpdates(args) => crate::erase::purge_updates(&cli, args).await,
        Command::Push(args) => crate::push::push(&cli, args).await,
    }
}
