//! The web dashboard: `GET /` and its assets under `/assets/`, embedded in the binary
//! (no CDN, nothing read from the working directory; manager-v2.md §11 item 32).
//!
//! The page (`assets/dashboard.html`) gets the version and the mode filled in when it is
//! served; everything else comes from the JSON status API ([`crate::status_api`]), which
//! `dashboard.js` polls. Assets carry an ETag made of the crate version and a digest of
//! their content, and are revalidated (`Cache-Control: no-cache`, 304 when unchanged).

use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flamenco_core::Manager;
use sha2::{Digest, Sha256};

const PAGE: &str = include_str!("../assets/dashboard.html");

/// The embedded assets: `(name, content type, content)`.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../assets/dashboard.css"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/dashboard.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../assets/favicon.svg"),
    ),
];

/// Only our own files, no inline scripts or styles.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard routes (no admin check: reading the dashboard needs none).
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new()
        .get("/", page)
        .get("/assets/{file}", asset)
}

/// The page with the version and the mode filled in.
pub fn render_page(manager: &Manager) -> String {
    let mode = if manager.config().is_upstream() {
        "upstream"
    } else {
        "standalone"
    };
    PAGE.replace("{{version}}", flamenco_core::VERSION)
        .replace("{{mode}}", mode)
}

/// `GET /`.
async fn page(axum::extract::State(manager): axum::extract::State<Arc<Manager>>) -> Response {
    let mut resp = render_page(&manager).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// The ETag of each asset: `"<version>-<first 16 hex digits of its SHA-256>"`.
fn etags() -> &'static Vec<String> {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, content)| {
                let digest = Sha256::digest(content.as_bytes());
                let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("\"{}-{short}\"", flamenco_core::VERSION)
            })
            .collect()
    })
}

/// `GET /assets/{file}`.
async fn asset(Path(file): Path<String>, request_headers: HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|(name, _, _)| *name == file) else {
        let known: Vec<&str> = ASSETS.iter().map(|(name, _, _)| *name).collect();
        return crate::error::json_error(
            StatusCode::NOT_FOUND,
            &format!(
                "there is no dashboard asset {file:?}; the assets are {}",
                known.join(", ")
            ),
        );
    };
    let (_, content_type, content) = ASSETS[index];
    let etag = &etags()[index];
    let matches = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        content.into_response()
    };
    let headers = resp.headers_mut();
    if !matches {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    resp
}
