//! Binding the listener, serving until a shutdown signal, and the signals themselves.
//!
//! Our own accept loop (hyper + hyper-util, tokio-rustls for HTTPS) rather than
//! `axum::serve`, so that every limit of docs/security.md is ours to set: the TLS handshake
//! timeout, HTTP/1.1's head read timeout (which also closes idle keep-alive connections),
//! the largest request head (431), a body deadline (408, [`crate::limits::DeadlineBody`]),
//! and a cap on open connections (`max_connections`: when they are all open, further
//! connections wait in the listen backlog, unaccepted, until one closes). Within it,
//! [`crate::connections::Admission`] keeps `reserved_worker_connections` for addresses with
//! a signed-on worker and caps every other address at `max_connections_per_ip`; a
//! connection over those limits is answered 503 at once and closed (docs/security.md,
//! "Connection starvation"). hyper's head read timeout is one deadline per request head,
//! not reset by each byte, so a client trickling its head holds its slot for at most
//! `request_read_timeout`. Each request carries the peer address as
//! `ConnectInfo<SocketAddr>` for the admin check, and a
//! [`crate::connections::ConnectionHandle`] that worker authentication marks. Shutdown
//! stops accepting, lets open connections finish their current request (up to 15 s), and
//! closes idle ones.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use flamenco_core::config::Config;
use flamenco_core::Manager;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::connections::{Admission, AdmissionLimits, ConnectionSlot};
use crate::limits::DeadlineBody;
use crate::tls::TlsError;

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
/// The syntax is checked by `flamenco_core::config_check::parse_listen`, as
/// `flamenco config check` does.
pub async fn bind(listen: &str) -> Result<TcpListener, BindError> {
    let listen = listen.trim();
    let (host, port) = flamenco_core::config_check::parse_listen(listen)
        .map_err(|_| BindError::Invalid(listen.to_string()))?;
    if listen.starts_with(':') {
        return match listen_on(("::", port)).await {
            Ok(l) => Ok(l),
            Err(_) => listen_on(("0.0.0.0", port))
                .await
                .map_err(|source| BindError::Io {
                    addr: format!("0.0.0.0:{port}"),
                    source,
                }),
        };
    }
    let host = if host.is_empty() { "::" } else { host.as_str() };
    listen_on((host, port))
        .await
        .map_err(|source| BindError::Io {
            addr: listen.to_string(),
            source,
        })
}

/// The listen backlog: connections the kernel completes before the accept loop takes them
/// (capped by `net.core.somaxconn`). Larger than tokio's 1,024, so that a burst of
/// connection attempts (hostile ones included: the accept loop refuses those at once) does
/// not make the kernel drop a worker's connection attempt, which the worker's TCP stack
/// would retry only after a second.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Bind the first address `addr` resolves to that can be bound, with [`LISTEN_BACKLOG`]
/// and `SO_REUSEADDR` (as `TcpListener::bind`).
async fn listen_on(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

/// How connections are served: TLS, limits and timeouts (docs/security.md).
pub struct ServeOptions {
    /// HTTPS with this configuration; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With TLS: a plain-HTTP listener that answers every request with 308 to `https://`.
    pub redirect_listener: Option<TcpListener>,
    /// At most this many connections are served at once (per listener). Further connections
    /// are not accepted until one closes: they wait in the listen backlog.
    pub max_connections: usize,
    /// Of `max_connections`, the slots only addresses with a signed-on worker may use.
    pub reserved_worker_connections: usize,
    /// Connections from one address without a signed-on worker; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    pub max_header_size: usize,
    /// Time allowed for a TLS handshake, for each request head (also the longest a
    /// keep-alive connection stays idle), and for each request body once its head arrived.
    pub request_read_timeout: Duration,
}

impl ServeOptions {
    /// The options `config` asks for, with the TLS files loaded (no redirect listener:
    /// bind `tls_redirect_listen` with [`bind`] and set it).
    pub fn from_config(config: &Config) -> Result<ServeOptions, TlsError> {
        let tls = if config.tls_enabled() {
            Some(crate::tls::load(
                Path::new(&config.tlscert),
                Path::new(&config.tlskey),
            )?)
        } else {
            None
        };
        Ok(ServeOptions {
            tls,
            redirect_listener: None,
            max_connections: config.max_connections.max(1),
            reserved_worker_connections: config.reserved_worker_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            max_header_size: config.max_header_size,
            request_read_timeout: config.request_read_timeout,
        })
    }
}

/// How long serving waits for the workers' addresses from the store at start.
const SEED_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for in-flight requests before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Serve the application on `listener` until `shutdown` completes, then stop accepting
/// and wait for in-flight requests to finish. TLS and limits come from the Manager's
/// configuration; a TLS file problem is an `InvalidInput` error before anything is served.
pub async fn serve(
    manager: Arc<Manager>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let options = ServeOptions::from_config(manager.config())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    serve_with(manager, listener, options, shutdown).await
}

/// [`serve`] with explicit options.
pub async fn serve_with(
    manager: Arc<Manager>,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::router(manager.clone());
    let limits = ConnLimits {
        max_header_size: options.max_header_size,
        read_timeout: options.request_read_timeout,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admission = Admission::new(
        AdmissionLimits {
            max_connections: options.max_connections,
            reserved_worker_connections: options.reserved_worker_connections,
            max_connections_per_ip: options.max_connections_per_ip,
        },
        Some(manager.metrics().clone()),
    );
    // Before the first accept, so that workers reconnecting to a restarted Manager all find
    // their reserve (bounded: a store that does not answer must not hold up serving).
    if tokio::time::timeout(
        SEED_TIMEOUT,
        seed_worker_addresses(manager.clone(), admission.clone()),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            "the workers' addresses could not be read within {}s; their connections may use the reserved slots once they authenticate again",
            SEED_TIMEOUT.as_secs()
        );
    }
    let redirect = match options.redirect_listener {
        Some(redirect_listener) => {
            let https_port = listener.local_addr()?.port();
            let mut stop = stop_rx.clone();
            // Workers never use the redirect: no reserve, the same per-address cap.
            let redirect_admission = Admission::new(
                AdmissionLimits {
                    max_connections: options.max_connections,
                    reserved_worker_connections: 0,
                    max_connections_per_ip: options.max_connections_per_ip,
                },
                None,
            );
            Some(tokio::spawn(accept_loop(
                redirect_listener,
                redirect_app(https_port),
                None,
                redirect_admission,
                limits,
                async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                },
            )))
        }
        None => None,
    };
    let tls = options.tls.map(tokio_rustls::TlsAcceptor::from);
    let mut stop = stop_rx;
    let main = tokio::spawn(accept_loop(
        listener,
        app,
        tls,
        admission,
        limits,
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        },
    ));
    shutdown.await;
    // Event streams (`/imagewatch`) never end by themselves: end them now, so that the
    // graceful shutdown does not wait for open dashboards.
    manager.latest_images().close();
    let _ = stop_tx.send(true);
    let served = main
        .await
        .map_err(|e| std::io::Error::other(format!("the server task failed: {e}")))?;
    if let Some(redirect) = redirect {
        if let Err(e) = redirect.await {
            tracing::error!("the HTTP→HTTPS redirect listener failed: {e}");
        }
    }
    served
}

/// Per-connection limits.
#[derive(Clone, Copy)]
struct ConnLimits {
    max_header_size: usize,
    read_timeout: Duration,
}

/// Seed the worker addresses with those of the workers in the store that have signed on,
/// so that after a restart their connections may use the reserve before they
/// authenticate again. One store read, before the accept loop starts.
async fn seed_worker_addresses(manager: Arc<Manager>, admission: Arc<Admission>) {
    let workers = match manager.list_workers().await {
        Ok(workers) => workers,
        Err(e) => {
            tracing::debug!("cannot read the workers' addresses for the connection reserve: {e}");
            return;
        }
    };
    for worker in workers {
        if worker.status == flamenco_core::model::worker_status::REGISTERED {
            continue;
        }
        let address = worker.address.trim();
        let ip = address
            .parse::<std::net::IpAddr>()
            .ok()
            .or_else(|| address.parse::<SocketAddr>().ok().map(|a| a.ip()));
        if let Some(ip) = ip {
            admission.trust(ip);
        }
    }
}

/// Accept connections (at most `max_connections` at a time, as [`Admission`] allows) and
/// serve `app` on each until `stop` completes; then let the open connections finish their
/// current request.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admission: Arc<Admission>,
    limits: ConnLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max_connections = admission.limits().max_connections;
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut full_warned = false;
    tokio::pin!(stop);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                full_warned = false;
                permit
            }
            Err(_) => {
                if !full_warned {
                    tracing::warn!(
                        "{max_connections} connections open (max_connections): new connections wait until one closes"
                    );
                    full_warned = true;
                }
                tokio::select! {
                    () = &mut stop => break,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break, // never closed
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                // Answer at once and close; never wait. Over TLS nothing can be said
                // before a handshake, so the connection is just closed.
                if tls.is_none() {
                    let _ = stream.try_write(&refused.http_response());
                }
                tracing::debug!(%peer, reason = refused.label(), "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, tls, limits, watcher, &slot).await;
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running {}s after shutdown began; stopping without them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// TLS handshake (if any), then HTTP/1.1 with the limits, until the client closes, a
/// timeout passes or shutdown finishes the current request.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnLimits,
    watcher: Watcher,
    slot: &ConnectionSlot,
) {
    let io: Box<dyn Io> = match tls {
        None => Box::new(stream),
        Some(acceptor) => match tls_handshake(stream, peer, acceptor, limits.read_timeout).await {
            Some(tls_stream) => Box::new(tls_stream),
            None => return,
        },
    };
    let read_timeout = limits.read_timeout;
    let conn = slot.handle();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let conn = conn.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            parts.extensions.insert(conn);
            let body = DeadlineBody::new(body, read_timeout);
            let missed = body.flag();
            let req = Request::from_parts(parts, axum::body::Body::new(body));
            let resp = match app.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            if missed.expired() {
                tracing::debug!(%peer, "request body not received within {read_timeout:?}");
                return Ok::<_, Infallible>(crate::limits::request_timeout_response(read_timeout));
            }
            Ok(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_header_size(limits.max_header_size)
        .max_buf_size(limits.max_header_size.max(MIN_BUF_SIZE))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        // Timeouts, resets and malformed requests: the client's problem, not the server's.
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// hyper refuses read buffers under 8 KiB.
const MIN_BUF_SIZE: usize = 8192;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Finish a TLS handshake within `timeout`. A client speaking plain HTTP to the HTTPS port
/// gets a plain-text 400 saying so (as Go's server does), then the connection closes.
async fn tls_handshake(
    mut stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let handshake = async {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await?;
        if n == 1 && first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_uppercase() {
            use tokio::io::AsyncWriteExt;
            let msg = "This port serves HTTPS: the client sent a plain HTTP request. Use an https:// URL.\n";
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                msg.len()
            );
            stream.write_all(resp.as_bytes()).await?;
            let _ = stream.shutdown().await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "plain HTTP request on the HTTPS port",
            ));
        }
        acceptor.accept(stream).await
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls_stream)) => Some(tls_stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not finished within {timeout:?}; closing");
            None
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// The HTTP→HTTPS redirect listener's application: 308 to the same path and query on
/// `https://<host>[:https_port]`.
fn redirect_app(https_port: u16) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: Uri| async move {
        redirect_to_https(&headers, &uri, https_port)
    })
}

fn redirect_to_https(headers: &HeaderMap, uri: &Uri, https_port: u16) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok());
    let Some(host) = host else {
        return crate::error::json_error(
            StatusCode::BAD_REQUEST,
            "this port only redirects to HTTPS and needs a valid Host header to do so; use the https:// URL",
        );
    };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{}{path}", host.host())
    } else {
        format!("https://{}:{https_port}{path}", host.host())
    };
    match HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => crate::error::json_error(
            StatusCode::BAD_REQUEST,
            "cannot build the https:// URL for this request; use the https:// URL",
        ),
    }
}

/// Completes on the first SIGINT or SIGTERM. A second signal while shutting down ends the
/// process at once (exit status 130).
///
/// The handlers are installed when this function is called, not when the future is first
/// polled: call it before announcing that the daemon listens, so that a signal sent right
/// after start-up still shuts down cleanly. Must be called inside a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let mut signals = Signals::install();
    async move {
        signals.recv().await;
        tracing::info!("signal received, shutting down; send it again to stop at once");
        tokio::spawn(async move {
            signals.recv().await;
            tracing::warn!("second signal received, stopping now");
            std::process::exit(130);
        });
    }
}

/// SIGINT and SIGTERM listeners (Ctrl+C elsewhere).
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!("cannot listen for {name}: {e}");
                    None
                }
            };
            Signals {
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(&mut self.interrupt) => {},
                () = next(&mut self.terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!("cannot listen for Ctrl+C: {e}");
                std::future::pending::<()>().await;
            }
        }
    }
}
