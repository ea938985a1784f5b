//! Prometheus metrics over HTTP (docs/metrics.md): the `GET /metrics` route and
//! [`track`], the middleware that counts and times every request by route template.
//!
//! `GET /metrics` needs no credentials, like v2's read-only endpoints: it shows counts and
//! timings, never ids, names or paths. The route label is axum's [`MatchedPath`]
//! (`/tasks/{task_id}/update`), never the request's path, so ids cannot multiply the
//! series; a path no route matches is `unmatched`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flamenco_core::metrics;
use flamenco_core::Manager;

/// Where the metrics are served.
pub const PATH: &str = "/metrics";

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// `GET /metrics`.
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new().get(PATH, serve)
}

/// `GET /metrics`: the OpenMetrics text exposition. Reads a few counts from the store; a
/// store that does not answer leaves its gauges out (`flamenco_store_up 0`) rather than
/// failing the scrape.
pub async fn serve(State(manager): State<Arc<Manager>>) -> Response {
    let text = metrics::scrape(&manager).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

/// The method label: the standard methods as they are, anything else `other` (a client
/// can send any token as a method; each would be a new series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: count the request in `flamenco_http_requests_total{method,route,status}`
/// and time it (until the response's headers) in
/// `flamenco_http_request_duration_seconds{method,route}`. Install it with
/// `Router::layer` after every route is added, so that [`MatchedPath`] is known.
///
/// It also passes every answer to the router's [`crate::outage::OutageLog`].
pub async fn track(
    State((manager, outage)): State<(Arc<Manager>, Arc<crate::outage::OutageLog>)>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    // `MatchedPath` shares its string: cloning it allocates nothing.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let response = next.run(req).await;
    manager.metrics().record_http_request(
        method,
        route,
        response.status().as_u16(),
        start.elapsed(),
    );
    outage.observe(route, &response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let odd = Method::from_bytes(b"PROPFIND").expect("method");
        assert_eq!(method_label(&odd), "other");
    }
}
