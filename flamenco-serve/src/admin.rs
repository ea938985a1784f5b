//! Who may use the Manager's own API (`/api/…`: jobs now, the dashboard's actions later).
//!
//! * With `admin_token` configured, a request needs `Authorization: Bearer <admin_token>`
//!   (compared in constant time); anything else gets 401 with a `WWW-Authenticate: Bearer`
//!   challenge.
//! * Without it, only clients on the loopback interface are served (the connection's peer
//!   address, from [`ConnectInfo`]); others get 403. A request whose peer address is not
//!   known is refused too: serve the router with
//!   `into_make_service_with_connect_info::<SocketAddr>()`.
//!
//! Use [`AdminAccess`] as an extractor in a handler, or [`layer`] on a whole router.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flamenco_core::Manager;
use sha2::{Digest, Sha256};

/// Proof that the request passed the admin check.
#[derive(Clone, Copy, Debug)]
pub struct AdminAccess;

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRefusal {
    /// 401: `admin_token` is configured and the request's Bearer token is missing or wrong.
    BadToken,
    /// 403: no `admin_token`, and the client is not on the loopback interface (or its
    /// address is unknown).
    NotLoopback(Option<IpAddr>),
}

impl IntoResponse for AdminRefusal {
    fn into_response(self) -> Response {
        match self {
            AdminRefusal::BadToken => {
                let mut resp = crate::error::json_error(
                    StatusCode::UNAUTHORIZED,
                    "this API needs `Authorization: Bearer <admin_token>` with the Manager's admin_token",
                );
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"Flamenco Manager\""),
                );
                resp
            }
            AdminRefusal::NotLoopback(peer) => {
                let who =
                    peer.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
                crate::error::json_error(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "this API only answers clients on this machine (the request came from {who}); \
                         set admin_token in the Manager's configuration to use it from elsewhere"
                    ),
                )
            }
        }
    }
}

/// Do two secrets match? Compares SHA-256 digests in constant time, so neither the
/// content nor the length of the expected token leaks through timing.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Is this a loopback address (`127.0.0.0/8`, `::1`, or IPv4 loopback mapped into IPv6)?
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The admin check, from the configured token, the request and its peer.
pub fn check(admin_token: &str, parts: &Parts) -> Result<AdminAccess, AdminRefusal> {
    if !admin_token.is_empty() {
        return match bearer_token(parts) {
            Some(token) if tokens_match(token, admin_token) => Ok(AdminAccess),
            _ => Err(AdminRefusal::BadToken),
        };
    }
    // `MockConnectInfo` is what tests (and embedders without a socket) provide instead.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .or_else(|| {
            parts
                .extensions
                .get::<MockConnectInfo<SocketAddr>>()
                .map(|MockConnectInfo(addr)| addr.ip())
        });
    match peer {
        Some(ip) if is_loopback(ip) => Ok(AdminAccess),
        other => Err(AdminRefusal::NotLoopback(other)),
    }
}

impl FromRequestParts<Arc<Manager>> for AdminAccess {
    type Rejection = AdminRefusal;

    async fn from_request_parts(
        parts: &mut Parts,
        manager: &Arc<Manager>,
    ) -> Result<Self, Self::Rejection> {
        let result = check(&manager.config().admin_token, parts);
        if let Err(refusal) = &result {
            tracing::warn!(path = %parts.uri.path(), ?refusal, "admin API request refused");
        }
        result
    }
}

/// A layer that applies the admin check to every route of a router
/// (`router.route_layer(admin::layer(manager))`).
pub fn layer(
    manager: Arc<Manager>,
) -> axum::middleware::FromExtractorLayer<AdminAccess, Arc<Manager>> {
    axum::middleware::from_extractor_with_state::<AdminAccess, _>(manager)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(tokens_match("s3cret", "s3cret"));
        assert!(!tokens_match("s3cret", "s3cre"));
        assert!(!tokens_match("", "s3cret"));
        assert!(!tokens_match("S3CRET", "s3cret"));
    }

    #[test]
    fn loopback_addresses() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.5",
            "::ffff:10.0.0.1",
            "fe80::1",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }
}
