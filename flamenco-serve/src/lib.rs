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
pub mod routes;
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
    application(manager).0
}

/// Every route [`router`] serves, as registered (see [`routes::Routes`]): what the
/// OpenAPI test compares with `docs/openapi.json`.
pub fn route_table(manager: Arc<Manager>) -> Vec<routes::Route> {
    application(manager).1
}

/// The router and its route table, built together so that they cannot differ. Add routes
/// through [`routes::Routes`] only.
fn application(manager: Arc<Manager>) -> (Router, Vec<routes::Route>) {
    let limit = manager.config().max_request_body;
    // The per-worker rate limit (limits.rs), checked by `auth::AuthedWorker` after
    // authentication; the layer below makes it reachable from every request.
    let rate_limit = limits::WorkerRateLimiter::from_config(manager.config());
    let admin = |routes: routes::Routes| {
        routes.map_router(|r| r.route_layer(admin::layer(manager.clone())))
    };
    let (routes, table) = worker_api::routes()
        .merge(admin(jobs_api::routes()))
        .merge(dashboard::routes())
        .merge(image_api::routes())
        .merge(status_api::routes())
        .merge(admin(status_api::action_routes()))
        .get(openapi::PATH, openapi::serve)
        .merge(metrics_api::routes())
        .into_parts();
    let router = routes
        // After every route: counts and times requests per route template (MatchedPath).
        .layer(axum::middleware::from_fn_with_state(
            manager.clone(),
            metrics_api::track,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(TraceLayer::new_for_http())
        .layer(axum::Extension(rate_limit))
        .with_state(manager);
    (router, table)
}
