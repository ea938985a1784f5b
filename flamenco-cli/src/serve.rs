//! `flamenco serve`: run the daemon until SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::{Context, Result};
use flamenco_core::config::ConfigSource;
use flamenco_core::Manager;

use crate::commands::load_config;
use crate::Cli;

pub async fn run(cli: &Cli) -> Result<()> {
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
    let manager = Arc::new(
        Manager::open(config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the Manager: {e}"))?,
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

    let (stop_loops, loops_stopped) = tokio::sync::watch::channel(false);
    let loops = tokio::spawn(flamenco_core::maintenance::run_loops(
        manager.clone(),
        loops_stopped.clone(),
    ));
    // Standalone mode: the job-status consumer drains the outbox (the upstream pusher does
    // in upstream mode).
    let consumer = (!manager.config().is_upstream()).then(|| {
        tracing::info!("standalone mode: submit jobs with `flamenco job submit` or POST /api/jobs");
        tokio::spawn(flamenco_core::jobs::consumer::run(
            manager.clone(),
            loops_stopped,
        ))
    });
    // Upstream mode: startup notification, downloads, pushes (nothing when standalone).
    let stop_upstream = tokio_util::sync::CancellationToken::new();
    let upstream = flamenco_core::upstream::spawn(manager.clone(), stop_upstream.clone());
    let served =
        flamenco_serve::serve(manager.clone(), listener, flamenco_serve::shutdown_signal()).await;
    let _ = stop_loops.send(true);
    // A push in progress completes before the loop returns.
    stop_upstream.cancel();
    if let Err(e) = upstream.await {
        tracing::error!("upstream loops ended abnormally: {e}");
    }
    if let Err(e) = loops.await {
        tracing::error!("background loops ended abnormally: {e}");
    }
    if let Some(consumer) = consumer {
        if let Err(e) = consumer.await {
            tracing::error!("the job-status consumer ended abnormally: {e}");
        }
    }
    let closed = manager.close().await;
    served.context("the HTTP server failed")?;
    closed.context("closing the store failed")?;
    tracing::info!("shutdown complete");
    Ok(())
}
