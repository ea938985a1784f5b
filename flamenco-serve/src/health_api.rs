//! `GET /healthz`: whether this Manager can serve, for load balancers and service managers
//! (docs/operations.md, "Several Managers on one MongoDB").
//!
//! Cheap on purpose: no authentication, no store call and no store write, whatever the
//! rate of checks. It answers from memory: 200 `{"status":"ok",…}` unless the last attempt
//! to take or renew the leader lease (every third of `leader_lease`, on a shared store)
//! could not reach the store, then 503 `{"status":"store-unavailable",…}`, so a balancer
//! sends workers to Managers that can reach the database. With the embedded store it is
//! 200 while the process serves. The body also says whether this Manager leads. It
//! answers to any `Host` (balancers check by address).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use flamenco_core::Manager;
use serde_json::json;

use crate::json::json_response;

/// The route.
pub const PATH: &str = "/healthz";

/// `GET /healthz`.
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new().get(PATH, healthz)
}

async fn healthz(State(manager): State<Arc<Manager>>) -> Response {
    let error = manager.leadership().store_error();
    let status = if error.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = json_response(
        status,
        &json!({
            "status": if error.is_some() { "store-unavailable" } else { "ok" },
            "instance": manager.instance_name(),
            "lease_holder": manager.lease_holder(),
            "leader": manager.leadership().is_leader(),
        }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
