//! The per-job blocklist API (docs/jobs.md, "Blocklist"):
//!
//! * `GET /api/jobs/{job_id}/blocklist`: `{"job", "blocklist": [{"task_type", "worker_id",
//!   "worker", "added"}]}`, by task type then worker.
//! * `DELETE /api/jobs/{job_id}/blocklist` with the JSON body `{"worker_id": "…",
//!   "task_type": "…"}` (`task_type` optional: all types): the worker gets the job's tasks
//!   (of that type) again. `{"removed": n}`; 404 when the worker is not on the list.
//!
//! A task's failure record is part of `GET /api/tasks/{task_id}` (`failures`,
//! [`crate::tasks_api`]). Every route needs [`crate::admin::AdminAccess`], and the DELETE
//! passes the cross-site checks ([`crate::intent`]), both applied by [`crate::router`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use flamenco_core::model::ObjectId;
use flamenco_core::{ApiError, Manager};
use serde::Deserialize;
use serde_json::json;

use crate::error::HttpError;
use crate::json::{decode, json_response};

type Result<T> = std::result::Result<T, HttpError>;

/// The routes, without the admin check (see [`crate::router`]).
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new()
        .get("/api/jobs/{job_id}/blocklist", list)
        .delete("/api/jobs/{job_id}/blocklist", remove)
}

fn invalid(field: &str, message: impl Into<String>) -> HttpError {
    HttpError(ApiError::InvalidField {
        field: field.to_string(),
        message: message.into(),
    })
}

fn id(field: &str, what: &str, raw: &str) -> Result<ObjectId> {
    ObjectId::parse(raw).map_err(|_| {
        invalid(
            field,
            format!("{raw:?} is not a {what} id: ids are 24 hexadecimal characters"),
        )
    })
}

async fn list(State(manager): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    let job = id("job_id", "job", &raw)?;
    let entries = manager.job_blocklist(job).await?;
    let list: Vec<_> = entries
        .iter()
        .map(|e| {
            json!({
                "task_type": e.task_type,
                "worker_id": e.worker_id,
                "worker": e.worker,
                "added": e.added,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"job": job, "blocklist": list}),
    ))
}

/// The body of `DELETE /api/jobs/{job_id}/blocklist`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unblock {
    worker_id: String,
    #[serde(default)]
    task_type: Option<String>,
}

async fn remove(
    State(manager): State<Arc<Manager>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let job = id("job_id", "job", &raw)?;
    let value: serde_json::Value = decode(&body, false)?;
    let req: Unblock = serde_json::from_value(value).map_err(|e| {
        HttpError(ApiError::BadRequest(format!(
            "Unable to decode JSON: {e}; expected {{\"worker_id\": \"<24 hex>\", \
             \"task_type\": \"<type, optional>\"}}"
        )))
    })?;
    let worker = id("worker_id", "worker", &req.worker_id)?;
    let removed = manager
        .unblock_worker(job, worker, req.task_type.as_deref())
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"job": job, "worker_id": worker, "removed": removed}),
    ))
}
