//! One log line per store-outage state change, not one per request.
//!
//! While the database is unavailable every request that needs it answers 503; logging each
//! one at ERROR buries the log (a farm makes hundreds of requests a second). Instead
//! [`crate::error`] marks such answers with [`StoreUnavailable`] and logs them at DEBUG,
//! and [`OutageLog::observe`] (called once per request by `metrics_api::track`, which
//! already sees every answer) logs:
//!
//! * one ERROR when the first 503 of an outage goes out, with the reason;
//! * one INFO when the outage is over: the first success (2xx) of a route that had
//!   answered 503 (so a read that still works during a disk-full outage does not end it),
//!   with how long it lasted and how many requests were refused.
//!
//! Outside an outage [`OutageLog::observe`] costs one relaxed atomic load.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use axum::response::Response;

/// A response extension on 503 answers caused by an unavailable store: the reason.
#[derive(Clone, Debug)]
pub struct StoreUnavailable(pub String);

/// The outage state of one served Manager.
#[derive(Debug, Default)]
pub struct OutageLog {
    down: AtomicBool,
    state: Mutex<Option<Outage>>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    refused: u64,
    /// Route templates that answered 503 during the outage.
    routes: BTreeSet<String>,
}

impl OutageLog {
    pub fn new() -> OutageLog {
        OutageLog::default()
    }

    /// Is an outage in progress (a 503 seen, no recovery yet)?
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Note the answer to a request for `route` (its template).
    pub fn observe(&self, route: &str, response: &Response) {
        let unavailable = response.extensions().get::<StoreUnavailable>();
        if unavailable.is_none() && !self.down.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match (unavailable, state.as_mut()) {
            (Some(StoreUnavailable(reason)), None) => {
                tracing::error!(
                    "the database is unavailable: {reason}. Requests that need it are answered \
                     503 (Retry-After: 5) until it is back; logged once per outage, not per request"
                );
                *state = Some(Outage {
                    since: Instant::now(),
                    refused: 1,
                    routes: BTreeSet::from([route.to_string()]),
                });
                self.down.store(true, Ordering::Relaxed);
            }
            (Some(_), Some(outage)) => {
                outage.refused += 1;
                if !outage.routes.contains(route) {
                    outage.routes.insert(route.to_string());
                }
            }
            (None, Some(outage)) => {
                // Only a success: a 401 or 409 may be decided without the database.
                let recovered = response.status().is_success() && outage.routes.contains(route);
                if recovered {
                    tracing::info!(
                        "the database is available again after {:.1} s; {} requests were \
                         answered 503 meanwhile",
                        outage.since.elapsed().as_secs_f64(),
                        outage.refused
                    );
                    *state = None;
                    self.down.store(false, Ordering::Relaxed);
                }
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn answer(status: StatusCode, unavailable: bool) -> Response {
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = status;
        if unavailable {
            resp.extensions_mut()
                .insert(StoreUnavailable("disk full".into()));
        }
        resp
    }

    #[test]
    fn an_outage_starts_with_a_503_and_ends_with_a_success_of_a_failed_route() {
        let log = OutageLog::new();
        log.observe("/task", &answer(StatusCode::NO_CONTENT, false));
        assert!(!log.is_down());
        log.observe(
            "/tasks/{id}/update",
            &answer(StatusCode::SERVICE_UNAVAILABLE, true),
        );
        assert!(log.is_down());
        log.observe("/task", &answer(StatusCode::SERVICE_UNAVAILABLE, true));
        // A read that works does not end it, nor does a 503 of another cause.
        log.observe("/may-i-run/{id}", &answer(StatusCode::OK, false));
        log.observe("/task", &answer(StatusCode::SERVICE_UNAVAILABLE, false));
        log.observe("/task", &answer(StatusCode::UNAUTHORIZED, false));
        assert!(log.is_down());
        // A route that failed succeeds: over.
        log.observe("/task", &answer(StatusCode::NO_CONTENT, false));
        assert!(!log.is_down());
    }
}
