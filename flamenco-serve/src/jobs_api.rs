//! The job API (standalone mode): submit, list, show, a job's tasks, cancel, re-queue,
//! delete, and the job types. JSON in and out; errors are `{"error": "...", "field":
//! "..."}` (`field` when one field of the request is at fault) with a 4xx status.
//!
//! Every route needs [`crate::admin::AdminAccess`] (applied by [`crate::router`]).
//! The routes are listed once, in the `routes!` table below; [`crate::routes::Routes`]
//! records them for the OpenAPI test, which compares them with `docs/openapi.json`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flamenco_core::jobs::JobSubmission;
use flamenco_core::model::{JobStatus, ObjectId, TaskStatus};
use flamenco_core::store::JobQuery;
use flamenco_core::{ApiError, Manager};
use serde_json::json;

use crate::error::HttpError;
use crate::json::{decode, json_response};

type Result<T> = std::result::Result<T, HttpError>;

/// Listings return this many items unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;

macro_rules! routes {
    ($( $method:ident $path:literal => $handler:path ),* $(,)?) => {
        /// The job API routes, without the admin check (see [`crate::router`]).
        pub fn routes() -> crate::routes::Routes {
            crate::routes::Routes::new() $( .$method($path, $handler) )*
        }
    };
}

routes! {
    post "/api/jobs" => submit,
    get "/api/jobs" => list,
    get "/api/jobs/{job_id}" => show,
    delete "/api/jobs/{job_id}" => delete_job,
    get "/api/jobs/{job_id}/tasks" => tasks,
    post "/api/jobs/{job_id}/cancel" => cancel,
    post "/api/jobs/{job_id}/requeue" => requeue,
    get "/api/job-types" => job_types,
}

fn invalid(field: &str, message: impl Into<String>) -> HttpError {
    HttpError(ApiError::InvalidField {
        field: field.to_string(),
        message: message.into(),
    })
}

fn job_id(raw: &str) -> Result<ObjectId> {
    ObjectId::parse(raw).map_err(|_| {
        invalid(
            "job_id",
            format!("{raw:?} is not a job id: ids are 24 hexadecimal characters"),
        )
    })
}

/// `status`, `limit` and `offset` from a query string. `status` may repeat and may hold
/// several statuses separated by commas.
struct Listing {
    statuses: Vec<String>,
    limit: usize,
    offset: usize,
}

fn listing(params: Vec<(String, String)>) -> Result<Listing> {
    let mut out = Listing {
        statuses: Vec::new(),
        limit: DEFAULT_LIMIT,
        offset: 0,
    };
    for (key, value) in params {
        match key.as_str() {
            "status" => out.statuses.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "limit" => match value.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => out.limit = n,
                _ => {
                    return Err(invalid(
                        "limit",
                        format!("limit must be an integer from 1 to {MAX_LIMIT}, not {value:?}"),
                    ))
                }
            },
            "offset" => {
                out.offset = value.trim().parse().map_err(|_| {
                    invalid(
                        "offset",
                        format!("offset must be an integer of at least 0, not {value:?}"),
                    )
                })?
            }
            other => {
                return Err(invalid(
                    other,
                    format!("unknown query parameter {other:?}; known: status, limit, offset"),
                ))
            }
        }
    }
    Ok(out)
}

async fn submit(State(manager): State<Arc<Manager>>, body: Bytes) -> Result<Response> {
    let value: serde_json::Value = decode(&body, false)?;
    if !value.is_object() {
        return Err(HttpError(ApiError::BadRequest(
            "Unable to decode JSON: the job must be a JSON object".into(),
        )));
    }
    let submission: JobSubmission = serde_json::from_value(value)
        .map_err(|e| HttpError(ApiError::BadRequest(format!("Unable to decode JSON: {e}"))))?;
    // The job as stored, plus `warnings` (e.g. a `{variable}` no platform defines).
    let submitted = manager.submit_job_with_warnings(submission).await?;
    let job = submitted.job;
    let mut body = serde_json::to_value(&job).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("warnings".into(), submitted.warnings.into());
    }
    let mut resp = json_response(StatusCode::CREATED, &body);
    if let Ok(location) = HeaderValue::from_str(&format!("/api/jobs/{}", job.id)) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

async fn list(
    State(manager): State<Arc<Manager>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let l = listing(params)?;
    let statuses = l
        .statuses
        .iter()
        .map(|s| JobStatus::parse_known(s).map_err(|e| invalid("status", e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let jobs = manager
        .list_jobs(&JobQuery {
            statuses,
            limit: Some(l.limit),
            offset: l.offset,
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"jobs": jobs, "limit": l.limit, "offset": l.offset}),
    ))
}

async fn show(State(manager): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    let id = job_id(&raw)?;
    match manager.get_job(id).await? {
        Some(job) => {
            // Why the Manager failed it (no worker left, docs/jobs.md), when it did.
            let mut value = serde_json::to_value(&job).unwrap_or_default();
            if let (Some(obj), Some(reason)) =
                (value.as_object_mut(), manager.job_status_reason(id).await?)
            {
                obj.insert("status_reason".into(), json!(reason));
            }
            Ok(json_response(StatusCode::OK, &value))
        }
        None => Err(HttpError(ApiError::NotFound(format!(
            "job {id} is unknown"
        )))),
    }
}

async fn tasks(
    State(manager): State<Arc<Manager>>,
    Path(raw): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let id = job_id(&raw)?;
    let l = listing(params)?;
    let statuses = l
        .statuses
        .iter()
        .map(|s| TaskStatus::parse_known(s).map_err(|e| invalid("status", e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let tasks = manager
        .job_tasks(id, statuses, Some(l.limit), l.offset)
        .await?;
    // With `last_updated`, for the dashboard's job page.
    let tasks: Vec<_> = tasks
        .iter()
        .map(crate::task_actions_api::task_json)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"tasks": tasks, "limit": l.limit, "offset": l.offset}),
    ))
}

async fn cancel(State(manager): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    let job = manager.cancel_job(job_id(&raw)?).await?;
    Ok(json_response(StatusCode::OK, &job))
}

async fn requeue(State(manager): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    let job = manager.requeue_job(job_id(&raw)?).await?;
    Ok(json_response(StatusCode::OK, &job))
}

async fn delete_job(
    State(manager): State<Arc<Manager>>,
    Path(raw): Path<String>,
) -> Result<Response> {
    manager.delete_job(job_id(&raw)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn job_types(State(manager): State<Arc<Manager>>) -> Response {
    let types: Vec<_> = manager
        .job_types()
        .describe()
        .into_iter()
        .map(|(name, description)| json!({"name": name, "description": description}))
        .collect();
    json_response(StatusCode::OK, &json!({ "job_types": types }))
}
