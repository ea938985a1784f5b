//! `flamenco-serve`: the Flamenco Manager daemon.
//!
//! [`router`] builds the HTTP application over a [`Manager`]; [`server`] binds the
//! listener and runs it until a shutdown signal, finishing in-flight requests. Handlers are
//! thin: the behaviour lives in `flamenco-core`.

pub mod admin;
pub mod auth;
pub mod bulk_api;
pub mod connections;
pub mod dashboard;
pub mod error;
pub mod health_api;
pub mod hosts;
pub mod image_api;
pub mod intent;
pub mod jobs_api;
pub mod json;
pub mod limits;
pub mod metrics_api;
pub mod openapi;
pub mod outage;
pub mod retries_api;
pub mod routes;
pub mod server;
pub mod status_api;
pub mod streams;
pub mod tags_api;
pub mod task_actions_api;
pub mod tasks_api;
pub mod tls;
pub mod worker_api;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use flamenco_core::Manager;
use tower_http::trace::TraceLayer;

pub use server::{bind, serve, serve_with, shutdown_signal, BindError, ServeOptions};

/// The whole HTTP application: the worker API at the root, the job API under `/api/`
/// (behind [`admin::layer`] and [`intent::check`]) and the OpenAPI document describing
/// both; every route but the worker API behind [`hosts::check`].
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
    // State-changing routes: the admin check, and before it the cross-site checks
    // (intent.rs: Origin/Referer and Content-Type).
    let intent_policy = Arc::new(intent::IntentPolicy::from_config(manager.config()));
    let actions = |routes: routes::Routes| {
        routes.map_router(|r| {
            r.route_layer(admin::layer(manager.clone())).route_layer(
                axum::middleware::from_fn_with_state(intent_policy.clone(), intent::check),
            )
        })
    };
    // Every route a browser uses answers only to the Manager's own host names (hosts.rs,
    // DNS rebinding). Add browser-facing routes here, not to the worker API below.
    let browser = routes::Routes::new()
        .merge(actions(jobs_api::routes()))
        .merge(actions(bulk_api::routes()))
        .merge(actions(tasks_api::routes()))
        .merge(actions(task_actions_api::routes()))
        .merge(actions(retries_api::routes()))
        .merge(dashboard::routes())
        .merge(image_api::routes())
        .merge(status_api::routes())
        .merge(actions(status_api::action_routes()))
        .merge(actions(tags_api::action_routes()))
        .get(openapi::PATH, openapi::serve)
        .merge(metrics_api::routes())
        .map_router(|r| {
            r.route_layer(axum::middleware::from_fn_with_state(
                Arc::new(hosts::HostPolicy::from_config(manager.config())),
                hosts::check,
            ))
        });
    // The worker API answers to any host name, with no per-request check of its own here.
    // `/healthz` too: load balancers check it by address.
    let (routes, table) = worker_api::routes()
        .merge(health_api::routes())
        .merge(browser)
        .into_parts();
    let router =
        routes
            // After every route: counts and times requests per route template (MatchedPath).
            .layer(axum::middleware::from_fn_with_state(
                (manager.clone(), Arc::new(outage::OutageLog::new())),
                metrics_api::track,
            ))
            .layer(DefaultBodyLimit::max(limit))
            // 5xx answers are logged by error.rs (and a store outage once, by outage.rs), so the
            // trace layer's own "response failed" line is DEBUG, not a second ERROR.
            .layer(TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ))
            .layer(axum::Extension(rate_limit))
            // The cap and lifetime of event streams (streams.rs), taken by `StreamPermit`.
            .layer(axum::Extension(streams::StreamLimiter::for_manager(
                &manager,
            )))
            .with_state(manager);
    (router, table)
}
