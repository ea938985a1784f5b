//! Dispatching the subcommands, and what they share: loading the configuration and
//! opening the store through `flamenco-core` (never through the daemon's HTTP).

use anyhow::Result;
use flamenco_core::config::{Config, ConfigSource};
use flamenco_core::Manager;

use crate::{Cli, Command};

/// Load the configuration the global `--config` names (or the default file).
pub fn load_config(cli: &Cli) -> Result<(Config, ConfigSource)> {
    Config::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Open the configured store.
pub async fn open(cli: &Cli) -> Result<Manager> {
    let (config, _) = load_config(cli)?;
    Manager::open(config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))
}

pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve => crate::serve::run(&cli).await,
        Command::Job(cmd) => crate::job::run(&cli, cmd).await,
        Command::Queue(cmd) => crate::queue::run(&cli, cmd).await,
        Command::Worker(cmd) => crate::worker::run(&cli, cmd).await,
        Command::Config(cmd) => crate::config_cmd::run(&cli, cmd).await,
        Command::Cleanslate(args) => crate::erase::cleanslate(&cli, args).await,
        Command::PurgeUpdates(args) => crate::erase::purge_updates(&cli, args).await,
        Command::Push(args) => crate::push::push(&cli, args).await,
    }
}
