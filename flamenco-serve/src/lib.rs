//! `flamenco-serve`: the Flamenco Manager daemon.
//!
//! [`router`] builds the HTTP application over a [`Manager`]; [`server`] binds the
//! listener and runs it until a shutdown signal, finishing in-flight requests. Handlers are
//! thin: the behaviour lives in `flamenco-core`.

pub mod admin;
pub mod auth;
pub mod error;
pub mod jobs_api;
pub mod json;
pub mod openapi;
pub mod server;
pub mod worker_api;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use flamenco_core::Manager;
use tower_http::trace::TraceLayer;

pub use server::{bind, serve, shutdown_signal, BindError};

/// The whole HTTP application: the worker API at the root, the job API under `/api/`
/// (behind [`admin::layer`]) and the OpenAPI document describing both.
pub fn router(manager: Arc<Manager>) -> Router {
    let limit = manager.config().max_request_body;
    worker_api::routes()
        .merge(jobs_api::routes().route_layer(admin::layer(manager.clone())))
        .route(openapi::PATH, axum::routing::get(openapi::serve))
        .layer(DefaultBodyLimit::max(limit))
        .layer(TraceLayer::new_for_http())
        .with_state(manager)
}
