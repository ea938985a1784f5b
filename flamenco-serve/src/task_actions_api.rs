//! Per-task actions and a worker's recent tasks, for the dashboard's job and worker views
//! and the CLI (docs/dashboard.md):
//!
//! * `POST /api/tasks/{task_id}/cancel`: a queued task becomes `canceled`, an active one
//!   `cancel-requested` (its worker stops at its next may-i-run); 409 for a finished task.
//! * `POST /api/tasks/{task_id}/requeue`: a failed, canceled or completed task becomes
//!   `queued` (a finished job with it); 409 for a running task, or while its job is
//!   `cancel-requested`.
//! * `GET /api/workers/{worker_id}/tasks?limit=N`: the worker's most recently updated tasks
//!   (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
//!
//! Every route needs [`crate::admin::AdminAccess`] (applied by [`crate::router`]), like the
//! rest of the task API: tasks carry commands and file paths.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use flamenco_core::model::{ObjectId, Task};
use flamenco_core::{ApiError, Manager};
use serde_json::json;

use crate::error::HttpError;
use crate::json::json_response;

type Result<T> = std::result::Result<T, HttpError>;

/// A worker's task listing returns this many tasks unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;

/// The routes, without the admin check (see [`crate::router`]).
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new()
        .post("/api/tasks/{task_id}/cancel", cancel)
        .post("/api/tasks/{task_id}/requeue", requeue)
        .get("/api/workers/{worker_id}/tasks", worker_tasks)
}

/// A task as JSON for the dashboard: the stored task plus `last_updated` (when the task
/// last changed; absent when it never did), which the worker protocol's task does not carry.
pub fn task_json(task: &Task) -> serde_json::Value {
    let mut value = serde_json::to_value(task).unwrap_or_default();
    if let (Some(obj), Some(at)) = (value.as_object_mut(), task.last_updated) {
        obj.insert("last_updated".into(), json!(at));
    }
    value
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

async fn cancel(State(manager): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    let task = manager.cancel_task(id("task_id", "task", &raw)?).await?;
    Ok(json_response(StatusCode::OK, &task))
}

async fn requeue(State(manager): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    let task = manager.requeue_task(id("task_id", "task", &raw)?).await?;
    Ok(json_response(StatusCode::OK, &task))
}

async fn worker_tasks(
    State(manager): State<Arc<Manager>>,
    Path(raw): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let worker = id("worker_id", "worker", &raw)?;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in params {
        match key.as_str() {
            "limit" => match value.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    return Err(invalid(
                        "limit",
                        format!("limit must be an integer from 1 to {MAX_LIMIT}, not {value:?}"),
                    ))
                }
            },
            other => {
                return Err(invalid(
                    other,
                    format!("unknown query parameter {other:?}; known: limit"),
                ))
            }
        }
    }
    let tasks = manager.worker_tasks(worker, limit).await?;
    let (nickname, tags) = manager
        .get_worker(worker)
        .await?
        .map(|w| (w.nickname, w.tags))
        .unwrap_or_default();
    let tasks: Vec<_> = tasks.iter().map(task_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"worker": {"id": worker, "nickname": nickname, "tags": tags}, "tasks": tasks, "limit": limit}),
    ))
}
