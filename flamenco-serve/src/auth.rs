//! Request extractors for the worker API: the authenticated worker (HTTP Basic) and the
//! peer (remote address, User-Agent) used for "seen" tracking.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use flamenco_core::model::Worker;
use flamenco_core::{ApiError, Manager, Peer};

use crate::error::HttpError;
use crate::limits::WorkerRateLimiter;

/// The worker whose Basic credentials came with the request.
pub struct AuthedWorker(pub Arc<Worker>);

/// Split `Authorization: Basic base64(id:secret)`.
fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl FromRequestParts<Arc<Manager>> for AuthedWorker {
    /// 401 for missing or wrong credentials (v2's answer); 429 with `Retry-After` when the
    /// worker id or the client address made too many failed or unverified logins
    /// (`flamenco_core::auth::guard`), or over the worker's request rate limit
    /// ([`WorkerRateLimiter`], installed by [`crate::router`]).
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        manager: &Arc<Manager>,
    ) -> Result<Self, Self::Rejection> {
        let (user, password) = basic_credentials(parts)
            .ok_or_else(|| HttpError(ApiError::Unauthorized).into_response())?;
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let worker = manager
            .authenticate_from(&user, &password, client)
            .await
            .map_err(|e| HttpError(e).into_response())?;
        // The connection and its address now count as a worker's (connections.rs: they may
        // use the slots reserved for workers).
        if let Some(conn) = parts
            .extensions
            .get::<crate::connections::ConnectionHandle>()
        {
            conn.worker_authenticated();
        }
        if let Some(Some(limiter)) = parts.extensions.get::<Option<Arc<WorkerRateLimiter>>>() {
            limiter
                .check(worker.id)
                .map_err(IntoResponse::into_response)?;
        }
        Ok(AuthedWorker(worker))
    }
}

impl FromRequestParts<Arc<Manager>> for PeerInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _manager: &Arc<Manager>,
    ) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(PeerInfo(Peer {
            host: addr.map(|a| a.ip().to_string()).unwrap_or_default(),
            host_port: addr.map(|a| a.to_string()).unwrap_or_default(),
            user_agent,
        }))
    }
}

/// Where the request came from.
pub struct PeerInfo(pub Peer);
