//! JSON in and out: lenient decoding with v2's 400 message, and answers with v2's
//! `Content-Type: application/json` and trailing newline.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use flamenco_core::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::HttpError;

/// Decode a JSON request body; unknown fields are ignored. An empty body decodes as `{}`
/// when `empty_is_object` is set (sign-on without a body).
pub fn decode<T: DeserializeOwned>(body: &Bytes, empty_is_object: bool) -> Result<T, HttpError> {
    flamenco_core::protocol::decode_body(body, empty_is_object)
        .map_err(|e| HttpError(ApiError::BadRequest(e.0)))
}

/// Serialize `value` as a JSON answer with a trailing newline.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    json_bytes_response(status, json_bytes(value))
}

/// The bytes of a JSON answer (with the trailing newline).
pub fn json_bytes<T: Serialize + ?Sized>(value: &T) -> Bytes {
    // Serializing our own model types cannot fail (string keys, no foreign Serialize impls).
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// A JSON answer from already serialized bytes.
pub fn json_bytes_response(status: StatusCode, bytes: Bytes) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
