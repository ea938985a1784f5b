//! Request limits that need more than a setting on the HTTP connection:
//!
//! * [`WorkerRateLimiter`]: each authenticated worker may make `worker_request_rate`
//!   requests per second on average, with bursts of `worker_request_burst` (a token bucket
//!   per worker id, governor's GCRA). A worker over its limit gets 429 with `Retry-After`;
//!   other workers are not affected. It is checked after authentication, so nobody can use
//!   up another worker's allowance by sending its id.
//! * [`DeadlineBody`]: a request body must arrive completely within `request_read_timeout`
//!   of the request head. tower-http's body timeout restarts on every chunk, so a client
//!   trickling one byte at a time would hold its connection forever; this one is a single
//!   deadline. A request whose body missed it is answered 408.
//!
//! The other limits (connections, head size, head read timeout, TLS handshake timeout) are
//! set where connections are served, in [`crate::server`].

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flamenco_core::model::ObjectId;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use http_body::{Body, Frame, SizeHint};

/// Per-worker request rate limit (`worker_request_rate`, `worker_request_burst`).
pub struct WorkerRateLimiter {
    limiter: DefaultKeyedRateLimiter<ObjectId>,
    rate: u32,
    burst: u32,
}

impl WorkerRateLimiter {
    /// `None` when `rate` is 0 (the limit is off).
    pub fn new(rate: u32, burst: u32) -> Option<Arc<WorkerRateLimiter>> {
        let per_second = NonZeroU32::new(rate)?;
        let burst_nz = NonZeroU32::new(burst).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst_nz);
        Some(Arc::new(WorkerRateLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            rate,
            burst: burst_nz.get(),
        }))
    }

    /// From the Manager's configuration.
    pub fn from_config(config: &flamenco_core::config::Config) -> Option<Arc<WorkerRateLimiter>> {
        Self::new(config.worker_request_rate, config.worker_request_burst)
    }

    /// Count one request of `worker_id`; `Err` when it is over its limit.
    pub fn check(&self, worker_id: ObjectId) -> Result<(), RateLimited> {
        match self.limiter.check_key(&worker_id) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Err(RateLimited {
                    retry_after: wait,
                    rate: self.rate,
                    burst: self.burst,
                })
            }
        }
    }
}

/// 429: a worker made more requests than `worker_request_rate` allows.
#[derive(Debug)]
pub struct RateLimited {
    /// When the next request would be accepted.
    pub retry_after: Duration,
    rate: u32,
    burst: u32,
}

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        // Whole seconds, rounded up, at least 1 (RFC 9110's delay-seconds).
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        let secs = secs.max(1);
        let mut resp = crate::error::json_error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "too many requests from this worker: at most {} per second (bursts of {}); retry in {secs}s. \
                 The Manager's worker_request_rate and worker_request_burst settings set this limit",
                self.rate, self.burst
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// Set when a [`DeadlineBody`] missed its deadline, so that the server answers 408.
#[derive(Clone, Debug, Default)]
pub struct DeadlineFlag(Arc<AtomicBool>);

impl DeadlineFlag {
    /// True once the body's deadline passed before it was read completely.
    pub fn expired(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The body read missed `request_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (request_read_timeout)")]
pub struct BodyTimeout(Duration);

/// A request body that fails once `timeout` has passed since it was created (when the
/// request head was read), however the data trickles in.
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    flag: DeadlineFlag,
    done: bool,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            flag: DeadlineFlag::default(),
            done: false,
        }
    }

    /// A handle telling whether the deadline was missed.
    pub fn flag(&self) -> DeadlineFlag {
        self.flag.clone()
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => {
                if std::future::Future::poll(this.sleep.as_mut(), cx).is_ready() {
                    this.done = true;
                    this.flag.0.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request whose body missed its deadline.
pub fn request_timeout_response(timeout: Duration) -> Response {
    let mut resp = crate::error::json_error(
        StatusCode::REQUEST_TIMEOUT,
        &format!(
            "the request body did not arrive within {} (the Manager's request_read_timeout)",
            flamenco_core::config::format_duration(timeout)
        ),
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_is_per_worker_and_says_when_to_retry() {
        let limiter = WorkerRateLimiter::new(1, 3).expect("on");
        let (a, b) = (ObjectId::new(), ObjectId::new());
        for _ in 0..3 {
            limiter.check(a).expect("within the burst");
        }
        let refused = limiter.check(a).expect_err("over the burst");
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_secs(1));
        limiter.check(b).expect("another worker has its own bucket");
        let resp = refused.into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert!(WorkerRateLimiter::new(0, 100).is_none(), "0 turns it off");
    }

    #[tokio::test]
    async fn deadline_body_fails_after_the_deadline_even_when_data_trickles() {
        use futures::StreamExt;
        // One byte every 40 ms, forever: a per-chunk timeout of 200 ms would never fire.
        let trickle = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            Some((
                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))),
                (),
            ))
        })
        .boxed();
        let started = std::time::Instant::now();
        let body = DeadlineBody::new(StreamBody(trickle), Duration::from_millis(200));
        let flag = body.flag();
        let mut body = Box::pin(body);
        let mut got = 0;
        let err = loop {
            match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("the trickle never ends"),
            }
        };
        let elapsed = started.elapsed();
        assert!(
            (1..=5).contains(&got),
            "bytes arrived until the deadline: {got}"
        );
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert!(err.to_string().contains("request_read_timeout"), "{err}");
        assert!(flag.expired());
        assert!(body.is_end_stream());
    }

    type BoxedFrames = futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>;

    /// A body made of a stream of frames.
    struct StreamBody(BoxedFrames);

    impl Body for StreamBody {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            use futures::StreamExt;
            self.0.poll_next_unpin(cx)
        }
    }
}
