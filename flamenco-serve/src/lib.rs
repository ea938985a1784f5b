//! `flamenco-serve`: the Flamenco Manager daemon.
//!
//! [`router`] builds the HTTP application over a [`Manager`]; [`server`] binds the
//! listener and runs it until a shutdown signal, finishing in-flight requests. Handlers are
//! thin: the behaviour lives in `flamenco-core`.

pub mod admin;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod image_api;
pub mod jobs_api;
pub mod json;
pub mod limits;
pub mod metrics_api;
pub mod openapi;
pub mod server;
pub mod status_api;
pub mod tls;
pub mod worker_api;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use flamenco_core::Manager;
use tower_http::trace::TraceLayer;

pub use server::{bind, serve, serve_with, shutdown_signal, BindError, ServeOptions};

/// The whole HTTP application: the worker API at the root, the job API under `/api/`
/// (behind [`admin::layer`]) and the OpenAPI document describing both.
pub fn router(manager: Arc<Manager>) -> Router {
    let limit = manager.config().max_request_body;
    // The per-worker rate limit (limits.rs), checked by `auth::AuthedWorker` after
    // authentication; the layer below makes it reachable from every request.
    let rate_limit = limits::WorkerRateLimiter::from_config(manager.config());
    worker_api::routes()
        .merge(jobs_api::routes().route_layer(admin::layer(manager.clone())))
        .merge(dashboard::routes())
        .merge(image_api::routes())
        .merge(status_api::routes())
        .merge(status_api::action_routes().route_layer(admin::layer(manager.clone())))
        .route(openapi::PATH, axum::routing::get(openapi::serve))
        .merge(metrics_api::routes())
        // After every route: counts and times requests per route template (MatchedPath).
        .layer(axum::middleware::from_fn_with_state(
            manager.clone(),
            metrics_api::track,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(TraceLayer::new_for_http())
        .layer(axum::Extension(rate_limit))
        .with_state(manager)
}
