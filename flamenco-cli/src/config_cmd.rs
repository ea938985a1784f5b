//! `flamenco config check`: load and validate the configuration, print the effective
//! settings (secrets masked), and list every problem found.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Subcommand;
use flamenco_core::config::{Config, ConfigSource};
use flamenco_core::Manager;

use crate::commands::load_config;
use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Load and validate the configuration, then print the effective settings.
    /// Exit status 0 when valid, 1 with every problem listed.
    Check {
        /// Also open the store (the embedded database, or MongoDB at database_url).
        #[arg(long)]
        connect: bool,
    },
}

/// Problems the loader does not see: files the settings point at.
fn file_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    match (config.tlscert.is_empty(), config.tlskey.is_empty()) {
        (true, true) => {}
        (false, true) => {
            problems.push("tlscert is set but tlskey is not: set both or neither".into())
        }
        (true, false) => {
            problems.push("tlskey is set but tlscert is not: set both or neither".into())
        }
        (false, false) => {
            let before = problems.len();
            for (key, path) in [("tlscert", &config.tlscert), ("tlskey", &config.tlskey)] {
                if let Err(e) = std::fs::File::open(Path::new(path)) {
                    problems.push(format!("{key}: cannot read {path}: {e}"));
                }
            }
            // Both readable: PEM, and the key belongs to the certificate, as `serve` checks.
            if problems.len() == before {
                if let Err(e) =
                    flamenco_serve::tls::load(Path::new(&config.tlscert), Path::new(&config.tlskey))
                {
                    problems.push(e.to_string());
                }
            }
        }
    }
    if config.is_upstream() {
        if let Err(e) = flamenco_core::upstream::check_config(config) {
            problems.push(e.to_string());
        }
    }
    let watch = config.watch_for_latest_image.trim();
    if !watch.is_empty() {
        if let Err(e) = flamenco_core::latest_image::watch::check_dir(Path::new(watch)) {
            problems.push(e.to_string());
        }
    }
    if config.database_url.is_empty() && config.data_dir.is_file() {
        problems.push(format!(
            "data_dir {} is a file; it must be a directory (it is created if missing)",
            config.data_dir.display()
        ));
    }
    problems
}

pub async fn run(cli: &Cli, cmd: &ConfigCommand) -> Result<()> {
    let ConfigCommand::Check { connect } = cmd;
    let (config, source) = load_config(cli)?;
    match source {
        ConfigSource::File(p) => println!("# configuration loaded from {}", p.display()),
        ConfigSource::Defaults => println!("# no configuration file; defaults apply"),
    }
    println!("{}", config.describe_effective());
    let mut problems = file_problems(&config);
    if *connect {
        match Manager::open(config.clone()).await {
            Ok(manager) => {
                println!("# store reachable: {}", manager.store().describe());
                manager.close().await?;
            }
            Err(e) => problems.push(format!("cannot open the store: {e}")),
        }
        if config.is_upstream() {
            match server_reachable(&config.flamenco).await {
                Ok(status) => println!("# Flamenco Server reachable (answered {status})"),
                Err(e) => problems.push(format!(
                    "cannot reach the Flamenco Server at {}: {e}; check `flamenco:` and the network",
                    config.flamenco
                )),
            }
        }
    }
    if problems.is_empty() {
        println!("# configuration OK");
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
