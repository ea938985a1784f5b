//! The last-rendered image over HTTP (manager-v2.md §9.3): the JPEG itself, its
//! description, the `/imagewatch` Server-Sent Events stream announcing new ones, and the
//! full-screen `/latest-image` page. The pipeline is `flamenco_core::latest_image`.
//!
//! None of these need authentication (as in v2): they only read.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use flamenco_core::Manager;

use crate::streams::StreamPermit;

/// The image's name in `/imagewatch` events (v2 sends the file's base name).
pub const IMAGE_NAME: &str = "latest-image.jpg";

/// How often an idle `/imagewatch` stream gets a comment, so proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The `/latest-image` page.
pub const PAGE: &str = include_str!("../assets/latest_image.html");

const NO_IMAGE: &str = "no image has been rendered yet: one appears when a worker reports \
     output (POST /output-produced) or a file is written under watch_for_latest_image";

/// The routes of this module.
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new()
        .get("/latest-image.jpg", image)
        .get("/static/latest-image.jpg", image)
        .get("/api/latest-image", info)
        .get("/imagewatch", imagewatch)
        .get("/latest-image", page)
}

/// `GET /latest-image.jpg` (and v2's `/static/latest-image.jpg`): the JPEG, revalidated by
/// its ETag on every use.
async fn image(State(manager): State<Arc<Manager>>, headers: HeaderMap) -> Response {
    let Some(latest) = manager.latest_images().latest() else {
        return crate::error::json_error(StatusCode::NOT_FOUND, NO_IMAGE);
    };
    let etag = HeaderValue::from_str(&latest.etag).ok();
    let cache = HeaderValue::from_static("no-cache");
    if let (Some(tag), Some(wanted)) = (&etag, headers.get(header::IF_NONE_MATCH)) {
        if etag_matches(wanted, &latest.etag) {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            resp.headers_mut().insert(header::ETAG, tag.clone());
            resp.headers_mut().insert(header::CACHE_CONTROL, cache);
            return resp;
        }
    }
    let mut resp = Response::new(Body::from(latest.jpeg.clone()));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CACHE_CONTROL, cache);
    if let Some(tag) = etag {
        h.insert(header::ETAG, tag);
    }
    let modified = latest
        .info
        .updated
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(v) = HeaderValue::from_str(&modified) {
        h.insert(header::LAST_MODIFIED, v);
    }
    resp
}

/// Whether an `If-None-Match` value names `etag` (a list of tags, weak ones allowed, or `*`).
fn etag_matches(wanted: &HeaderValue, etag: &str) -> bool {
    let Ok(wanted) = wanted.to_str() else {
        return false;
    };
    wanted.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// `GET /api/latest-image`: the description of the latest image.
async fn info(State(manager): State<Arc<Manager>>) -> Response {
    match manager.latest_image_info() {
        Some(info) => crate::json::json_response(StatusCode::OK, &info),
        None => crate::error::json_error(StatusCode::NOT_FOUND, NO_IMAGE),
    }
}

/// `GET /imagewatch`: `event: image` / `data: latest-image.jpg` (with the version as the
/// event id) for each new image, and a comment every [`KEEP_ALIVE`]. The stream ends when
/// the client goes away, the server shuts down, or after `stream_max_lifetime` (the
/// browser reconnects). Over `max_streams` or `max_streams_per_ip`: 503 with `Retry-After`
/// ([`StreamPermit`]).
async fn imagewatch(
    permit: StreamPermit,
    State(manager): State<Arc<Manager>>,
) -> impl IntoResponse {
    let events = manager.latest_images().subscribe();
    let stream = futures::stream::unfold(events, |mut events| async move {
        let version = events.next().await?;
        let event = Event::default()
            .event("image")
            .id(version.to_string())
            .data(IMAGE_NAME);
        Some((Ok::<_, Infallible>(event), events))
    });
    Sse::new(permit.limit(stream)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// `GET /latest-image`: the full-screen page.
async fn page() -> Html<&'static str> {
    Html(PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let tag = "\"abc\"";
        for (header, expected) in [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("\"x\", \"abc\"", true),
            ("*", true),
            ("\"abd\"", false),
            ("abc", false),
            ("", false),
        ] {
            let value = HeaderValue::from_str(header).unwrap();
            assert_eq!(etag_matches(&value, tag), expected, "{header:?}");
        }
    }
}
