//! The bulk action routes (docs/jobs.md, "Bulk actions"): `POST /api/jobs/bulk` and
//! `POST /api/workers/bulk`. One request names many jobs or workers (by ids, or by a status
//! filter) and gets one line per object: done, refused (and why) or unknown.
//!
//! The whole body is checked before anything is done (400, nothing changed): the action,
//! every id, the filter, and the number of objects (at most
//! [`flamenco_core::bulk::MAX_BULK_OBJECTS`], ids or filter alike). Both routes take the
//! admin guard and the intent checks (applied by [`crate::router`]); the work is
//! `Manager::bulk_jobs` / `Manager::bulk_workers`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use flamenco_core::bulk::{
    parse_worker_status, JobBulkAction, JobSelection, WorkerBulkAction, WorkerSelection,
    MAX_BULK_OBJECTS,
};
use flamenco_core::model::{JobStatus, ObjectId};
use flamenco_core::{ApiError, Manager};
use serde::Deserialize;
use serde_json::Value;

use crate::error::HttpError;
use crate::json::json_response;

type Result<T> = std::result::Result<T, HttpError>;

/// The bulk routes, without the admin and intent checks (see [`crate::router`]).
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new()
        .post("/api/jobs/bulk", jobs)
        .post("/api/workers/bulk", workers)
}

fn invalid(field: &str, message: impl Into<String>) -> HttpError {
    HttpError(ApiError::InvalidField {
        field: field.to_string(),
        message: message.into(),
    })
}

/// One status or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    #[serde(default)]
    status: Option<OneOrMany>,
    /// Workers only: every worker.
    #[serde(default)]
    all: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    action: String,
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    filter: Option<Filter>,
    /// Jobs: the priority action's new priority.
    #[serde(default)]
    priority: Option<Value>,
    /// Workers: the tag action's tags to add and to remove.
    #[serde(default)]
    add: Option<Vec<String>>,
    #[serde(default)]
    remove: Option<Vec<String>>,
}

fn decode(body: &Bytes, what: &str) -> Result<Body> {
    let value: Value = crate::json::decode(body, false)?;
    if !value.is_object() {
        return Err(HttpError(ApiError::BadRequest(format!(
            "Unable to decode JSON: a bulk {what} action is a JSON object, e.g. \
             {{\"action\": \"cancel\", \"ids\": [\"…\"]}}"
        ))));
    }
    serde_json::from_value(value)
        .map_err(|e| HttpError(ApiError::BadRequest(format!("Unable to decode JSON: {e}"))))
}

/// The ids, every one checked, at most [`MAX_BULK_OBJECTS`] (before parsing them).
fn parse_ids(raw: Vec<String>, what: &str) -> Result<Vec<ObjectId>> {
    if raw.len() > MAX_BULK_OBJECTS {
        return Err(invalid(
            "ids",
            format!(
                "{} ids given; one bulk request acts on at most {MAX_BULK_OBJECTS}: \
                 split it into requests of {MAX_BULK_OBJECTS} ids or fewer",
                raw.len()
            ),
        ));
    }
    if raw.is_empty() {
        return Err(invalid(
            "ids",
            format!("no ids given: name at least one {what}"),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, s)| {
            ObjectId::parse(s.trim()).map_err(|_| {
                invalid(
                    "ids",
                    format!(
                        "ids[{i}] = {:?} is not a {what} id: ids are 24 hexadecimal characters",
                        s.chars().take(40).collect::<String>()
                    ),
                )
            })
        })
        .collect()
}

/// `ids` or `filter`, exactly one.
fn ids_or_filter(ids: Option<Vec<String>>, filter: Option<Filter>) -> Result<IdsOrFilter> {
    match (ids, filter) {
        (Some(_), Some(_)) => Err(invalid("filter", "give either `ids` or `filter`, not both")),
        (None, None) => Err(invalid(
            "ids",
            "say which objects: `ids` (a list of ids) or `filter` ({\"status\": …})",
        )),
        (Some(ids), None) => Ok(IdsOrFilter::Ids(ids)),
        (None, Some(f)) => Ok(IdsOrFilter::Filter(f)),
    }
}

enum IdsOrFilter {
    Ids(Vec<String>),
    Filter(Filter),
}

async fn jobs(State(manager): State<Arc<Manager>>, body: Bytes) -> Result<Response> {
    let body = decode(&body, "job")?;
    if body.add.is_some() || body.remove.is_some() {
        return Err(invalid(
            if body.add.is_some() { "add" } else { "remove" },
            "`add` and `remove` are for workers (POST /api/workers/bulk)",
        ));
    }
    let priority = match body.priority {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
        Some(other) => {
            return Err(invalid(
                "priority",
                format!("priority must be an integer from 1 to 100, not {other}"),
            ))
        }
    };
    let action = JobBulkAction::parse(body.action.trim(), priority)?;
    let selection = match ids_or_filter(body.ids, body.filter)? {
        IdsOrFilter::Ids(raw) => JobSelection::Ids(parse_ids(raw, "job")?),
        IdsOrFilter::Filter(f) => {
            if f.all.is_some() {
                return Err(invalid(
                    "filter",
                    "`all` is for workers; select jobs by `status`",
                ));
            }
            let statuses = f.status.map(OneOrMany::into_vec).unwrap_or_default();
            if statuses.is_empty() {
                return Err(invalid(
                    "filter",
                    "the filter needs `status`: a job status or a list of them",
                ));
            }
            JobSelection::Statuses(
                statuses
                    .iter()
                    .map(|s| {
                        JobStatus::parse_known(s.trim())
                            .map_err(|e| invalid("filter", e.to_string()))
                    })
                    .collect::<Result<Vec<_>>>()?,
            )
        }
    };
    let report = manager
        .bulk_jobs(action, &selection, Some(MAX_BULK_OBJECTS))
        .await?;
    Ok(json_response(StatusCode::OK, &report))
}

async fn workers(State(manager): State<Arc<Manager>>, body: Bytes) -> Result<Response> {
    let body = decode(&body, "worker")?;
    if body.priority.is_some() {
        return Err(invalid(
            "priority",
            "`priority` is for jobs (POST /api/jobs/bulk)",
        ));
    }
    let action = WorkerBulkAction::parse(body.action.trim(), body.add, body.remove)?;
    let selection = match ids_or_filter(body.ids, body.filter)? {
        IdsOrFilter::Ids(raw) => WorkerSelection::Ids(parse_ids(raw, "worker")?),
        IdsOrFilter::Filter(Filter { status, all }) => match (status, all) {
            (Some(_), Some(true)) => {
                return Err(invalid("filter", "give either `status` or `all`, not both"))
            }
            (None, Some(true)) => WorkerSelection::All,
            (Some(s), None | Some(false)) => {
                let statuses = s.into_vec();
                if statuses.is_empty() {
                    return Err(invalid("filter", "the filter's `status` list is empty"));
                }
                WorkerSelection::Statuses(
                    statuses
                        .iter()
                        .map(|s| parse_worker_status(s).map_err(HttpError))
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            (None, _) => {
                return Err(invalid(
                    "filter",
                    "the filter needs `status` (a worker status or a list) or `all`: true",
                ))
            }
        },
    };
    let report = manager
        .bulk_workers(&action, &selection, Some(MAX_BULK_OBJECTS))
        .await?;
    Ok(json_response(StatusCode::OK, &report))
}
