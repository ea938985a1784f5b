//! `POST /api/workers/{worker_id}/tags` (docs/jobs.md, "Worker tags"): an admin adds tags
//! to and removes tags from one worker, through `Manager::tag_workers` (the rule the CLI,
//! the dashboard and bulk actions share). Behind the admin check and the intent checks
//! like every state-changing `/api/` route. The body is `{"add": [...], "remove": [...]}`
//! (either may be left out); the answer is the worker as the worker listing shows it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use flamenco_core::model::ObjectId;
use flamenco_core::{ApiError, Manager};
use serde::Deserialize;

use crate::error::HttpError;
use crate::json::{decode, json_response};

type Result<T> = std::result::Result<T, HttpError>;

/// The tag route, without the admin check (see [`crate::router`]).
pub fn action_routes() -> crate::routes::Routes {
    crate::routes::Routes::new().post("/api/workers/{worker_id}/tags", tag)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

async fn tag(
    State(manager): State<Arc<Manager>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let id = ObjectId::parse(&raw).map_err(|_| {
        HttpError(ApiError::InvalidField {
            field: "worker_id".into(),
            message: format!("{raw:?} is not a worker id: ids are 24 hexadecimal characters"),
        })
    })?;
    let body: TagBody = decode(&body, false)?;
    let changed = manager.tag_workers(&[id], &body.add, &body.remove).await?;
    let worker = manager.get_worker(id).await?.ok_or_else(|| {
        HttpError(ApiError::NotFound(format!(
            "worker {id} was deleted meanwhile"
        )))
    })?;
    tracing::info!(worker = %worker.identifier(), tags = ?worker.tags, "worker tags changed from the API");
    let mut summary = crate::status_api::worker_summary(&worker, manager.now());
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("changed".into(), (changed > 0).into());
    }
    Ok(json_response(StatusCode::OK, &summary))
}
