//! `flamenco config check`: load and validate the configuration, print the effective
//! settings (secrets masked), and list every problem found: the same checks `serve` makes
//! before it starts ([`serving_check`]), so the two cannot disagree.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Subcommand;
use flamenco_core::config::{Config, ConfigSource};
use flamenco_core::config_check::ServingCheck;
use flamenco_core::{Manager, OpenError};

use crate::commands::load_config;
use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Load and validate the configuration as `serve` does, then print the effective
    /// settings. Exit status 0 when valid (warnings are printed), 1 with every problem
    /// listed.
    Check {
        /// Also open the store (the embedded database, or MongoDB at database_url) and
        /// reach the Flamenco Server (upstream mode). Nothing is created.
        #[arg(long)]
        connect: bool,
    },
}

/// Everything `serve` checks before it starts: flamenco-core's
/// [`Config::validate_for_serving`] plus what needs the HTTP layer (the TLS certificate and
/// key parse and belong together).
pub fn serving_check(config: &Config) -> ServingCheck {
    let mut check = config.validate_for_serving();
    let tls_files_readable = !check
        .problems
        .iter()
        .any(|p| p.starts_with("tlscert:") || p.starts_with("tlskey:"));
    if config.tls_enabled() && tls_files_readable {
        if let Err(e) =
            flamenco_serve::tls::load(Path::new(&config.tlscert), Path::new(&config.tlskey))
        {
            check.problems.push(e.to_string());
        }
    }
    check
}

pub async fn run(cli: &Cli, cmd: &ConfigCommand) -> Result<()> {
    let ConfigCommand::Check { connect } = cmd;
    let (config, source) = load_config(cli)?;
    match source {
        ConfigSource::File(p) => outln!("# configuration loaded from {}", p.display())?,
        ConfigSource::Defaults => outln!("# no configuration file; defaults apply")?,
    }
    outln!("{}", config.describe_effective())?;
    let ServingCheck {
        mut problems,
        warnings,
    } = serving_check(&config);
    if *connect {
        match Manager::open_existing(config.clone()).await {
            Ok(manager) => {
                outln!("# store reachable: {}", manager.store().describe())?;
                match flamenco_core::leader::describe_holder(&manager).await {
                    Ok(line) => outln!("# {line}")?,
                    Err(e) => problems.push(format!("cannot read the leader lease: {e}")),
                }
                if !config.webhooks.is_empty() {
                    match manager.store().webhook_stats().await {
                        Ok(stats) => {
                            for line in
                                flamenco_core::webhooks::status_lines(&config.webhooks, &stats)
                            {
                                outln!("# {line}")?;
                            }
                        }
                        Err(e) => problems.push(format!("cannot read the webhook queue: {e}")),
                    }
                }
                manager.close().await?;
            }
            Err(OpenError::NoStore(where_)) => {
                outln!("# no store yet: {where_}; `flamenco serve` creates it")?
            }
            Err(e) => problems.push(format!("cannot open the store: {e}")),
        }
        if config.is_upstream() {
            match server_reachable(&config.flamenco).await {
                Ok(status) => outln!("# Flamenco Server reachable (answered {status})")?,
                Err(e) => problems.push(format!(
                    "cannot reach the Flamenco Server at {}: {e}; check `flamenco:` and the network",
                    config.flamenco
                )),
            }
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if problems.is_empty() {
        outln!("# configuration OK")?;
        return Ok(());
    }
    for p in &problems {
        eprintln!("problem: {p}");
    }
    bail!("{} problem(s) in the configuration", problems.len())
}

/// Any HTTP answer from the Server's base URL means it is reachable.
async fn server_reachable(url: &str) -> Result<reqwest::StatusCode, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        msg
    })?;
    Ok(resp.status())
}
