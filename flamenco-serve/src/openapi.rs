//! The OpenAPI 3 description of every route, served at [`PATH`]. The document is
//! `docs/openapi.json`, embedded in the binary at build time.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;

/// Where the document is served.
pub const PATH: &str = "/api/openapi.json";

/// The document (`docs/openapi.json`).
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// `GET /api/openapi.json`.
pub async fn serve() -> Response {
    crate::json::json_bytes_response(StatusCode::OK, Bytes::from_static(DOCUMENT.as_bytes()))
}
