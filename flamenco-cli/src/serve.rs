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
    // The same checks as `flamenco config check`, every problem at once.
    let check = crate::config_cmd::serving_check(&config);
    if !check.problems.is_empty() {
        anyhow::bail!(
            "refusing to start: {} problem(s) in the configuration:\n  {}",
            check.problems.len(),
            check.problems.join("\n  ")
        );
    }
    for w in &check.warnings {
        tracing::warn!("{w}");
    }
    let listen = config.listen.clone();
    // The TLS files are read before anything starts: a bad certificate or key stops here
    // with a message naming the file.
    let mut serve_options = flamenco_serve::ServeOptions::from_config(&config)
        .map_err(|e| anyhow::anyhow!("cannot serve HTTPS: {e}"))?;
    let redirect_listen = config.tls_redirect_listen.trim().to_string();
    if serve_options.tls.is_none() {
        tracing::warn!("TLS not enabled: serving plain HTTP (set tlscert and tlskey for HTTPS)");
    }
    // One daemon per embedded store: held until this function returns (or the process
    // dies, `kill -9` included). MongoDB stores may be shared by several Managers.
    let _data_dir_lock = if config.database_url.trim().is_empty() {
        let lock = flamenco_core::store::sqlite::DataDirLock::acquire(
            &config.data_dir,
            &format!("listening on {listen}"),
        )
        .map_err(|e| anyhow::anyhow!("refusing to start: {e}"))?;
        tracing::info!("locked the data directory ({})", lock.path().display());
        Some(lock)
    } else {
        None
    };
    let manager = Arc::new(
        Manager::open(config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the Manager: {e}"))?,
    );
    tracing::info!("store: {}", manager.store().describe());
    let listener = flamenco_serve::bind(&listen).await?;
    // Signal handlers go in before "listening on" is logged: a SIGTERM from then on is a
    // clean shutdown.
    let signal = flamenco_serve::shutdown_signal();
    // The signal also ends the leader election at once (loops stopped, lease released),
    // while the HTTP server drains its requests.
    let stop_leading = tokio_util::sync::CancellationToken::new();
    let shutdown = {
        let stop_leading = stop_leading.clone();
        async move {
            signal.await;
            stop_leading.cancel();
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    let scheme = if serve_options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        "listening on {addr} ({scheme}); workers can use manager_url = {scheme}://<this host>:{}/",
        addr.rsplit(':').next().unwrap_or("8083")
    );
    if !redirect_listen.is_empty() {
        let redirect = flamenco_serve::bind(&redirect_listen)
            .await
            .context("tls_redirect_listen")?;
        tracing::info!("redirecting plain HTTP on {redirect_listen} to https://");
        serve_options.redirect_listener = Some(redirect);
    }

    // This process's own loop (workers' "seen" times), on every Manager.
    let (stop_loops, loops_stopped) = tokio::sync::watch::channel(false);
    let loops = tokio::spawn(flamenco_core::maintenance::run_local_loops(
        manager.clone(),
        loops_stopped,
    ));
    if !manager.config().is_upstream() {
        tracing::info!("standalone mode: submit jobs with `flamenco job submit` or POST /api/jobs");
    }
    tracing::info!("instance name: {}", manager.instance_name());
    // The loops that run once per site (timeouts, cleanup, webhooks; the job-status
    // consumer in standalone mode; startup notification, downloads and pushes in upstream
    // mode) run while this Manager holds the leader lease: always with the embedded store,
    // on one of the Managers sharing a MongoDB database.
    let leader = tokio::spawn(flamenco_core::leader::run(
        manager.clone(),
        stop_leading.clone(),
    ));
    // The latest-image pipeline (the image of the previous run is loaded here) and, with
    // watch_for_latest_image, its folder watcher. A folder that cannot be watched is a
    // warning: /output-produced reports still update the image.
    let images = manager.latest_images().clone();
    let stop_watcher = tokio_util::sync::CancellationToken::new();
    let watch_dir = manager.config().watch_for_latest_image.trim().to_string();
    let watcher = if watch_dir.is_empty() {
        None
    } else {
        match flamenco_core::latest_image::watch::spawn(
            std::path::Path::new(&watch_dir),
            images.clone(),
            Default::default(),
            stop_watcher.clone(),
        ) {
            Ok(task) => Some(task),
            Err(e) => {
                // A missing folder was already warned about by the check above.
                if check.warnings.is_empty() {
                    tracing::warn!(
                        "{e}; the latest image is updated from workers' /output-produced reports only"
                    );
                }
                None
            }
        }
    };
    // serve_with ends the /imagewatch streams when the shutdown begins.
    let served =
        flamenco_serve::serve_with(manager.clone(), listener, serve_options, shutdown).await;
    stop_watcher.cancel();
    if let Some(watcher) = watcher {
        if let Err(e) = watcher.await {
            tracing::error!("the latest-image watcher ended abnormally: {e}");
        }
    }
    let _ = stop_loops.send(true);
    // Also when the server ended for another reason than the signal. A push in progress
    // completes before the loops return, then the lease is released.
    stop_leading.cancel();
    if let Err(e) = leader.await {
        tracing::error!("the singleton loops ended abnormally: {e}");
    }
    if let Err(e) = loops.await {
        tracing::error!("background loops ended abnormally: {e}");
    }
    let closed = manager.close().await;
    served.context("the HTTP server failed")?;
    closed.context("closing the store failed")?;
    tracing::info!("shutdown complete");
    Ok(())
}
