//! Binding the listener, serving until a shutdown signal, and the signals themselves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use flamenco_core::Manager;
use tokio::net::TcpListener;

/// The listen address could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("invalid listen address {0:?}: expected HOST:PORT, [IPv6]:PORT or :PORT")]
    Invalid(String),
    #[error("cannot listen on {addr}: {source}. Is another Manager already running there? Change `listen` in the config to use another port.")]
    Io {
        addr: String,
        source: std::io::Error,
    },
}

/// Bind `listen` (v2 syntax: `:8083` means every interface, `[::0]:8083`, `host:port`).
/// `:PORT` binds IPv6 `[::]` (which also takes IPv4 on Linux) and falls back to `0.0.0.0`.
pub async fn bind(listen: &str) -> Result<TcpListener, BindError> {
    let listen = listen.trim();
    if let Some(port) = listen.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| BindError::Invalid(listen.to_string()))?;
        return match TcpListener::bind(("::", port)).await {
            Ok(l) => Ok(l),
            Err(_) => TcpListener::bind(("0.0.0.0", port))
                .await
                .map_err(|source| BindError::Io {
                    addr: format!("0.0.0.0:{port}"),
                    source,
                }),
        };
    }
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| BindError::Invalid(listen.to_string()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| BindError::Invalid(listen.to_string()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "::" } else { host };
    TcpListener::bind((host, port))
        .await
        .map_err(|source| BindError::Io {
            addr: listen.to_string(),
            source,
        })
}

/// Serve the application on `listener` until `shutdown` completes, then stop accepting
/// and wait for in-flight requests to finish.
pub async fn serve(
    manager: Arc<Manager>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::router(manager);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Completes on the first SIGINT or SIGTERM. A second signal while shutting down ends the
/// process at once (exit status 130).
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("signal received, shutting down; send it again to stop at once");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal received, stopping now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl+C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
