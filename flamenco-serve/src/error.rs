//! Turning [`ApiError`]s into HTTP answers.
//!
//! 401 keeps v2's plain-text body and `WWW-Authenticate` header; every other error is a JSON
//! object `{"error": "..."}`, which the 2.5 worker can parse where it reads error bodies
//! (`/tasks/{id}/return`) and ignores elsewhere.
//!
//! A 500 is logged at ERROR here; a 503 for an unavailable store only at DEBUG, marked for
//! [`crate::outage`], which logs the outage once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flamenco_core::store::StoreError;
use flamenco_core::ApiError;

/// An error answer.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        HttpError(ApiError::Store(e))
    }
}

/// A JSON error body with a status code.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message });
    let mut resp = crate::json::json_response(status, &body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            ApiError::Unauthorized => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [
                        (
                            header::WWW_AUTHENTICATE,
                            HeaderValue::from_static("Basic realm=\"Flamenco Manager\""),
                        ),
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; charset=utf-8"),
                        ),
                    ],
                    "401 Unauthorized\n",
                )
                    .into_response();
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests {
                message,
                retry_after,
            } => {
                let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, message);
                // Whole seconds, rounded up, at least 1 (RFC 9110's delay-seconds).
                let secs =
                    (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return resp;
            }
            ApiError::InvalidField { field, message } => {
                let body = serde_json::json!({ "error": message, "field": field });
                return crate::json::json_response(StatusCode::BAD_REQUEST, &body);
            }
            ApiError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ApiError::Store(StoreError::Unavailable(reason)) = &self.0 {
            // Logged once per outage by outage.rs, not per request.
            tracing::debug!("answering 503: {}", self.0);
            let mut resp = json_error(status, &self.0.to_string());
            resp.extensions_mut()
                .insert(crate::outage::StoreUnavailable(reason.clone()));
            return resp;
        }
        if status.is_server_error() {
            tracing::error!("{}", self.0);
        }
        json_error(status, &self.0.to_string())
    }
}
