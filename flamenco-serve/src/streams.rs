//! Limits for long-lived responses: Server-Sent Events streams such as `/imagewatch` or a
//! task log's live tail (docs/security.md, "Connection starvation").
//!
//! A stream holds its connection for as long as it is open, so streams get limits of their
//! own, apart from `max_connections`:
//!
//! * at most `max_streams` open at once, and at most `max_streams_per_ip` from one client
//!   address (an IPv6 /64 counts as one, see [`crate::connections::ClientKey`]). A request
//!   over either gets `503` with `Retry-After` and a JSON error at once, never a hang;
//! * each stream ends after `stream_max_lifetime` (default 1 h). A browser's
//!   `EventSource` reconnects by itself, so a page left open keeps working, while a
//!   client that opened many streams and went quiet cannot keep them forever.
//!
//! # Using it in a handler
//!
//! [`StreamPermit`] is an extractor. Take it in any handler that answers with a stream,
//! and pass the stream through [`StreamPermit::limit`], which keeps the permit until the
//! stream ends (the lifetime passed, the source ended, or the client went away and hyper
//! dropped the body):
//!
//! ```ignore
//! use axum::response::sse::{Event, KeepAlive, Sse};
//! use flamenco_serve::streams::StreamPermit;
//!
//! async fn log_stream(permit: StreamPermit, /* State, Path, … */) -> impl IntoResponse {
//!     let events = /* impl Stream<Item = Result<Event, Infallible>> + Send + 'static */;
//!     Sse::new(permit.limit(events)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
//! }
//! ```
//!
//! Put the extractor before any that reads the body. Authentication or a 404 check
//! should come first when the route has them, so that a refused request does not count.
//! The extractor needs the [`StreamLimiter`] that [`crate::router`] installs as an
//! `Extension<Arc<StreamLimiter>>` (a router built without it answers 500 naming the
//! problem) and the peer address (`ConnectInfo<SocketAddr>`, set by the server; without
//! it all requests count as one address). The open count is the `flamenco_http_streams`
//! gauge, refusals `flamenco_http_streams_refused_total{reason}` (docs/metrics.md).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flamenco_core::metrics::Metrics;
use futures::{Stream, StreamExt};
use prometheus_client::metrics::gauge::Gauge;

use crate::connections::ClientKey;

/// `Retry-After` of a refused stream, in seconds.
pub const RETRY_AFTER_SECS: u64 = 10;

/// The limits of long-lived streams (from the configuration).
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// `max_streams`.
    pub max_streams: usize,
    /// `max_streams_per_ip`.
    pub max_streams_per_ip: usize,
    /// `stream_max_lifetime`.
    pub max_lifetime: Duration,
}

impl StreamLimits {
    pub fn from_config(config: &flamenco_core::config::Config) -> StreamLimits {
        StreamLimits {
            max_streams: config.max_streams,
            max_streams_per_ip: config.max_streams_per_ip,
            max_lifetime: config.stream_max_lifetime,
        }
    }
}

/// Counts the open streams; one per application (see the module documentation).
pub struct StreamLimiter {
    limits: StreamLimits,
    state: Mutex<State>,
    gauge: Gauge,
    metrics: Option<Metrics>,
}

#[derive(Default)]
struct State {
    open: usize,
    by_key: HashMap<ClientKey, usize>,
}

impl StreamLimiter {
    /// A limiter; the open count goes to `metrics`' `flamenco_http_streams` when given.
    pub fn new(limits: StreamLimits, metrics: Option<Metrics>) -> Arc<StreamLimiter> {
        let gauge = metrics
            .as_ref()
            .map(Metrics::stream_gauge)
            .unwrap_or_default();
        Arc::new(StreamLimiter {
            limits,
            state: Mutex::new(State::default()),
            gauge,
            metrics,
        })
    }

    /// The limiter for `manager`'s configuration and metrics.
    pub fn for_manager(manager: &flamenco_core::Manager) -> Arc<StreamLimiter> {
        Self::new(
            StreamLimits::from_config(manager.config()),
            Some(manager.metrics().clone()),
        )
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.state().open
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A few integer updates, never interrupted by a panic: the state stays consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A permit for one stream from `ip`, or a 503 answer.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<StreamPermit, StreamsBusy> {
        let key = ClientKey::new(ip);
        let mut state = self.state();
        let refused =
            if state.by_key.get(&key).copied().unwrap_or(0) >= self.limits.max_streams_per_ip {
                Some(StreamsBusy::PerIp(self.limits.max_streams_per_ip))
            } else if state.open >= self.limits.max_streams {
                Some(StreamsBusy::Total(self.limits.max_streams))
            } else {
                None
            };
        if let Some(busy) = refused {
            drop(state);
            if let Some(m) = &self.metrics {
                m.record_stream_refused(busy.label());
            }
            return Err(busy);
        }
        state.open += 1;
        *state.by_key.entry(key).or_default() += 1;
        drop(state);
        self.gauge.inc();
        Ok(StreamPermit {
            limiter: self.clone(),
            key,
        })
    }

    fn release(&self, key: ClientKey) {
        let mut state = self.state();
        state.open = state.open.saturating_sub(1);
        if let Some(n) = state.by_key.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                state.by_key.remove(&key);
            }
        }
        drop(state);
        self.gauge.dec();
    }
}

/// One open stream's place; given back when dropped. Get it as an extractor (or from
/// [`StreamLimiter::try_acquire`]) and move it into the stream with [`StreamPermit::limit`].
pub struct StreamPermit {
    limiter: Arc<StreamLimiter>,
    key: ClientKey,
}

impl std::fmt::Debug for StreamPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPermit")
            .field("client", &self.key)
            .finish()
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.limiter.release(self.key);
    }
}

impl StreamPermit {
    /// `stream`, ended after `stream_max_lifetime`, holding this permit until it ends or
    /// is dropped.
    pub fn limit<S>(self, stream: S) -> LimitedStream<S::Item>
    where
        S: Stream + Send + 'static,
    {
        let lifetime = self.limiter.limits.max_lifetime;
        LimitedStream {
            inner: stream.take_until(tokio::time::sleep(lifetime)).boxed(),
            permit: Some(self),
        }
    }
}

/// A stream limited by a [`StreamPermit`] (see [`StreamPermit::limit`]).
pub struct LimitedStream<T> {
    inner: futures::stream::BoxStream<'static, T>,
    permit: Option<StreamPermit>,
}

impl<T> Stream for LimitedStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.permit.is_none() {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(None) => {
                // Give the place back as soon as the stream is over.
                self.permit = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// 503: too many streams open, in total or from the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamsBusy {
    /// `max_streams` streams are open.
    Total(usize),
    /// `max_streams_per_ip` streams are open from the client's address.
    PerIp(usize),
    /// The application has no [`StreamLimiter`] (a bug: [`crate::router`] installs one).
    NoLimiter,
}

impl StreamsBusy {
    /// The `reason` label of `flamenco_http_streams_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            StreamsBusy::Total(_) => "total",
            StreamsBusy::PerIp(_) => "per_ip",
            StreamsBusy::NoLimiter => "no_limiter",
        }
    }
}

impl IntoResponse for StreamsBusy {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            StreamsBusy::Total(n) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many event streams are open ({n}, the Manager's max_streams); retry in {RETRY_AFTER_SECS}s"
                ),
            ),
            StreamsBusy::PerIp(n) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many event streams are open from your address ({n}, the Manager's max_streams_per_ip); close other pages of this Manager, or retry in {RETRY_AFTER_SECS}s"
                ),
            ),
            StreamsBusy::NoLimiter => {
                return crate::error::json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this route streams events but the application has no stream limiter; build it with flamenco_serve::router",
                )
            }
        };
        let mut resp = crate::error::json_error(status, &message);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        resp
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StreamPermit {
    type Rejection = StreamsBusy;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, StreamsBusy> {
        let limiter = parts
            .extensions
            .get::<Arc<StreamLimiter>>()
            .cloned()
            .ok_or(StreamsBusy::NoLimiter)?;
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| {
                addr.ip()
            });
        limiter.try_acquire(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(total: usize, per_ip: usize, lifetime: Duration) -> Arc<StreamLimiter> {
        StreamLimiter::new(
            StreamLimits {
                max_streams: total,
                max_streams_per_ip: per_ip,
                max_lifetime: lifetime,
            },
            Some(Metrics::new()),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn caps_per_address_and_in_total_and_gives_places_back() {
        let l = limiter(3, 2, Duration::from_secs(60));
        let a1 = l.try_acquire(ip("10.0.0.1")).expect("a1");
        let _a2 = l.try_acquire(ip("10.0.0.1")).expect("a2");
        assert_eq!(
            l.try_acquire(ip("10.0.0.1")).expect_err("per ip"),
            StreamsBusy::PerIp(2)
        );
        let _b1 = l.try_acquire(ip("10.0.0.2")).expect("b1");
        assert_eq!(
            l.try_acquire(ip("10.0.0.3")).expect_err("total"),
            StreamsBusy::Total(3)
        );
        assert_eq!(l.open(), 3);
        assert_eq!(l.gauge.get(), 3);
        drop(a1);
        let _c1 = l.try_acquire(ip("10.0.0.3")).expect("room again");
        let resp = StreamsBusy::Total(3).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "10");
    }

    #[tokio::test]
    async fn a_limited_stream_ends_after_its_lifetime_and_gives_its_place_back() {
        let l = limiter(1, 1, Duration::from_millis(200));
        let permit = l.try_acquire(ip("10.0.0.1")).expect("permit");
        let mut stream = permit.limit(futures::stream::pending::<u32>());
        assert_eq!(l.open(), 1);
        let ended = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        assert_eq!(ended, Ok(None), "the stream ends at its lifetime");
        assert_eq!(
            l.open(),
            0,
            "its place is free before the stream is dropped"
        );
        drop(stream);
        assert_eq!(l.open(), 0);
        assert_eq!(l.gauge.get(), 0);
    }

    #[tokio::test]
    async fn dropping_a_limited_stream_gives_its_place_back() {
        let l = limiter(1, 1, Duration::from_secs(3600));
        let stream = l
            .try_acquire(ip("10.0.0.1"))
            .expect("permit")
            .limit(futures::stream::iter([1, 2, 3]));
        assert_eq!(l.open(), 1);
        drop(stream);
        assert_eq!(l.open(), 0);
        let items: Vec<u32> = l
            .try_acquire(ip("10.0.0.1"))
            .expect("permit")
            .limit(futures::stream::iter([1, 2, 3]))
            .collect()
            .await;
        assert_eq!(items, [1, 2, 3]);
        assert_eq!(l.open(), 0);
    }
}
