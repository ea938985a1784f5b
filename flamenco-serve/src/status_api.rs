//! The dashboard's JSON status API and v2's `/as-json` report (docs/dashboard.md).
//!
//! Read routes ([`routes`], no admin check, like v2's dashboard):
//! * `GET /as-json`: v2's status report, field for field (manager-v2.md §9.2), except that
//!   a database error is a 503 with a JSON error instead of a 200 with an empty body.
//! * `GET /api/status`: version, mode, store, task counts, worker counts, outbox and the
//!   upstream link state.
//! * `GET /api/status/workers`: one page of workers, sorted and grouped (current workers,
//!   or old and timed-out ones) on the server.
//! * `GET /api/status/jobs`: one page of jobs with their task counts (standalone mode).
//!
//! Action routes ([`action_routes`], behind [`crate::admin::layer`]):
//! `POST /api/workers/{worker_id}/sleep|wake|shutdown` ask a 2.1+ worker to change state.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use flamenco_core::model::{
    worker_status, JobStatus, ObjectId, RequestedStatus, TaskStatus, Worker,
};
use flamenco_core::store::JobQuery;
use flamenco_core::{ApiError, Manager};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{json_error, HttpError};
use crate::json::json_response;

type Result<T> = std::result::Result<T, HttpError>;

/// Workers not seen for this long (or never) are "old" (v2's dashboard: 14 days).
pub const OLD_WORKER_AGE: Duration = Duration::days(14);
/// Listings return this many items unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 500;

/// The read-only routes (no admin check).
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new()
        .get("/as-json", as_json)
        .get("/api/status", status)
        .get("/api/status/workers", workers)
        .get("/api/status/jobs", jobs)
}

/// The worker actions, without the admin check (see [`crate::router`]).
pub fn action_routes() -> crate::routes::Routes {
    crate::routes::Routes::new()
        .post("/api/workers/{worker_id}/sleep", sleep)
        .post("/api/workers/{worker_id}/wake", wake)
        .post("/api/workers/{worker_id}/shutdown", shutdown)
}

/// A JSON answer the browser must not cache.
fn fresh_json<T: Serialize + ?Sized>(value: &T) -> Response {
    let mut resp = json_response(StatusCode::OK, value);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn invalid(field: &str, message: impl Into<String>) -> HttpError {
    HttpError(ApiError::InvalidField {
        field: field.to_string(),
        message: message.into(),
    })
}

fn mode(manager: &Manager) -> &'static str {
    if manager.config().is_upstream() {
        "upstream"
    } else {
        "standalone"
    }
}

/// Is this worker "old": never seen, or not seen for [`OLD_WORKER_AGE`]?
pub fn is_old(worker: &Worker, now: DateTime<Utc>) -> bool {
    worker
        .last_activity
        .is_none_or(|seen| now.signed_duration_since(seen) > OLD_WORKER_AGE)
}

/// Is the worker shown apart from the current ones (old, or timed out)?
fn set_apart(worker: &Worker, now: DateTime<Utc>) -> bool {
    is_old(worker, now) || worker.status == worker_status::TIMEOUT
}

// ------------------------------------------------------------------ /as-json

/// One worker of `/as-json`: v2's fields, the starred ones omitted when unset.
#[derive(Serialize)]
struct AsJsonWorker<'a> {
    #[serde(rename = "_id")]
    id: ObjectId,
    nickname: &'a str,
    address: &'a str,
    status: &'a str,
    platform: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_task: Option<ObjectId>,
    time_cost: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_activity: Option<DateTime<Utc>>,
    supported_task_types: &'a [String],
    software: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    current_task_status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_task_updated: Option<DateTime<Utc>>,
    /// Ours (worker tags); left out when the worker has none, so v2's shape is kept.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
}

/// The body of `/as-json` (manager-v2.md §9.2).
pub async fn as_json_report(manager: &Manager) -> std::result::Result<Value, ApiError> {
    let mut workers = manager.list_workers().await?;
    let counts = manager.task_counts().await?;
    workers.sort_by(|a, b| {
        a.nickname
            .cmp(&b.nickname)
            .then_with(|| a.status.cmp(&b.status))
    });
    let listed: Option<Vec<AsJsonWorker>> = (!workers.is_empty()).then(|| {
        workers
            .iter()
            .map(|w| AsJsonWorker {
                id: w.id,
                nickname: &w.nickname,
                address: &w.address,
                status: &w.status,
                platform: &w.platform,
                current_task: w.current_task,
                time_cost: 0,
                last_activity: w.last_activity,
                supported_task_types: &w.supported_task_types,
                software: &w.software,
                current_task_status: &w.current_task_status,
                current_task_updated: w.current_task_updated,
                tags: &w.tags,
            })
            .collect()
    });
    Ok(json!({
        "nr_of_workers": workers.len(),
        "nr_of_tasks": counts.values().sum::<u64>(),
        "version": flamenco_core::VERSION,
        "workers": listed,
        "server": manager.config().flamenco,
    }))
}

/// `GET /as-json`. A database error is a 503 (v2 answered 200 with an empty body).
async fn as_json(State(manager): State<Arc<Manager>>) -> Response {
    match as_json_report(&manager).await {
        Ok(report) => fresh_json(&report),
        Err(e) => {
            let mut resp = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the status report is not available: the database could not be read ({e}); \
                     check the Manager's log and its database, then try again"
                ),
            );
            match &e {
                // An outage is logged once, by outage.rs.
                ApiError::Store(flamenco_core::store::StoreError::Unavailable(reason)) => {
                    tracing::debug!("/as-json: {e}");
                    resp.extensions_mut()
                        .insert(crate::outage::StoreUnavailable(reason.clone()));
                }
                _ => tracing::error!("/as-json: {e}"),
            }
            resp
        }
    }
}

// ------------------------------------------------------------------ /api/status

/// `GET /api/status`.
async fn status(State(manager): State<Arc<Manager>>) -> Result<Response> {
    let now = manager.now();
    let stored = manager.task_counts().await?;
    let mut tasks: BTreeMap<String, u64> = TaskStatus::KNOWN
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for (status, n) in &stored {
        *tasks.entry(status.clone()).or_insert(0) += n;
    }
    let workers = manager.list_workers().await?;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut old = 0u64;
    for w in &workers {
        *by_status
            .entry(shown_status(&w.status).to_string())
            .or_insert(0) += 1;
        if set_apart(w, now) {
            old += 1;
        }
    }
    let depth = manager.outbox_len().await?;
    let set_aside = manager.store().outbox_set_aside_len().await?;
    let upstream = manager.upstream_status().await;
    let server = &manager.config().flamenco;
    Ok(fresh_json(&json!({
        "version": flamenco_core::VERSION,
        "mode": mode(&manager),
        "store": manager.store().describe(),
        "server": (!server.is_empty()).then_some(server),
        "tasks": tasks,
        "tasks_total": stored.values().sum::<u64>(),
        "workers": {"total": workers.len(), "by_status": by_status, "old": old},
        "outbox": {"depth": depth, "set_aside": set_aside},
        "upstream": upstream,
        "leader": manager.leader_status(),
        "now": now,
    })))
}

/// A worker status as counted by `/api/status`: a just-registered worker (status `""`)
/// counts as `registered`.
fn shown_status(status: &str) -> &str {
    if status.is_empty() {
        "registered"
    } else {
        status
    }
}

// ------------------------------------------------------------------ /api/status/workers

/// One worker as the dashboard shows it.
#[derive(Serialize)]
struct WorkerSummary<'a> {
    id: ObjectId,
    nickname: &'a str,
    status: &'a str,
    status_requested: Option<RequestedStatus>,
    platform: &'a str,
    software: &'a str,
    address: &'a str,
    current_task: Option<ObjectId>,
    current_task_status: Option<&'a str>,
    current_task_updated: Option<DateTime<Utc>>,
    last_activity: Option<DateTime<Utc>>,
    supported_task_types: &'a [String],
    /// Set by an admin (docs/jobs.md, "Worker tags").
    tags: &'a [String],
    supports_status_requests: bool,
    old: bool,
}

impl<'a> WorkerSummary<'a> {
    fn new(w: &'a Worker, now: DateTime<Utc>) -> WorkerSummary<'a> {
        WorkerSummary {
            id: w.id,
            nickname: &w.nickname,
            status: &w.status,
            status_requested: w.status_requested,
            platform: &w.platform,
            software: &w.software,
            address: &w.address,
            current_task: w.current_task,
            current_task_status: (!w.current_task_status.is_empty())
                .then_some(w.current_task_status.as_str()),
            current_task_updated: w.current_task_updated,
            last_activity: w.last_activity,
            supported_task_types: &w.supported_task_types,
            tags: &w.tags,
            supports_status_requests: w.supports_status_requests(),
            old: is_old(w, now),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortKey {
    Nickname,
    Status,
    LastActivity,
    Platform,
    Software,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Current,
    Old,
    All,
}

struct WorkerListing {
    offset: usize,
    limit: usize,
    sort: SortKey,
    descending: bool,
    group: Group,
}

fn parse_limit(value: &str) -> Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(invalid(
            "limit",
            format!("limit must be an integer from 1 to {MAX_LIMIT}, not {value:?}"),
        )),
    }
}

fn parse_offset(value: &str) -> Result<usize> {
    value.trim().parse().map_err(|_| {
        invalid(
            "offset",
            format!("offset must be an integer of at least 0, not {value:?}"),
        )
    })
}

fn worker_listing(params: Vec<(String, String)>) -> Result<WorkerListing> {
    let mut out = WorkerListing {
        offset: 0,
        limit: DEFAULT_LIMIT,
        sort: SortKey::Nickname,
        descending: false,
        group: Group::Current,
    };
    for (key, value) in params {
        match key.as_str() {
            "offset" => out.offset = parse_offset(&value)?,
            "limit" => out.limit = parse_limit(&value)?,
            "sort" => {
                out.sort = match value.as_str() {
                    "nickname" => SortKey::Nickname,
                    "status" => SortKey::Status,
                    "last_activity" => SortKey::LastActivity,
                    "platform" => SortKey::Platform,
                    "software" => SortKey::Software,
                    other => {
                        return Err(invalid(
                            "sort",
                            format!(
                                "cannot sort workers by {other:?}; use nickname, status, \
                                 last_activity, platform or software"
                            ),
                        ))
                    }
                }
            }
            "order" => {
                out.descending = match value.as_str() {
                    "asc" => false,
                    "desc" => true,
                    other => {
                        return Err(invalid(
                            "order",
                            format!("order must be asc or desc, not {other:?}"),
                        ))
                    }
                }
            }
            "group" => {
                out.group = match value.as_str() {
                    "current" => Group::Current,
                    "old" => Group::Old,
                    "all" => Group::All,
                    other => {
                        return Err(invalid(
                            "group",
                            format!("group must be current, old or all, not {other:?}"),
                        ))
                    }
                }
            }
            other => {
                let known = "offset, limit, sort, order, group";
                return Err(invalid(
                    other,
                    format!("unknown query parameter {other:?}; known: {known}"),
                ));
            }
        }
    }
    Ok(out)
}

fn compare(a: &Worker, b: &Worker, key: SortKey) -> Ordering {
    let primary = match key {
        SortKey::Nickname => a.nickname.to_lowercase().cmp(&b.nickname.to_lowercase()),
        SortKey::Status => a.status.cmp(&b.status),
        SortKey::LastActivity => a.last_activity.cmp(&b.last_activity),
        SortKey::Platform => a.platform.cmp(&b.platform),
        SortKey::Software => a.software.cmp(&b.software),
    };
    primary
        .then_with(|| a.nickname.cmp(&b.nickname))
        .then_with(|| a.id.to_hex().cmp(&b.id.to_hex()))
}

/// `GET /api/status/workers`.
async fn workers(
    State(manager): State<Arc<Manager>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let l = worker_listing(params)?;
    let now = manager.now();
    let all = manager.list_workers().await?;
    let (old, current): (Vec<&Worker>, Vec<&Worker>) = all.iter().partition(|w| set_apart(w, now));
    let mut chosen = match l.group {
        Group::Current => current.clone(),
        Group::Old => old.clone(),
        Group::All => all.iter().collect(),
    };
    chosen.sort_by(|a, b| {
        let o = compare(a, b, l.sort);
        if l.descending {
            o.reverse()
        } else {
            o
        }
    });
    let page: Vec<WorkerSummary> = chosen
        .iter()
        .skip(l.offset)
        .take(l.limit)
        .map(|w| WorkerSummary::new(w, now))
        .collect();
    Ok(fresh_json(&json!({
        "total": chosen.len(),
        "offset": l.offset,
        "limit": l.limit,
        "groups": {"current": current.len(), "old": old.len()},
        "workers": page,
    })))
}

// ------------------------------------------------------------------ /api/status/jobs

/// `GET /api/status/jobs`: newest first; `has_more` says whether a next page exists.
async fn jobs(
    State(manager): State<Arc<Manager>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let mut offset = 0;
    let mut limit = 20;
    let mut statuses = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "offset" => offset = parse_offset(&value)?,
            "limit" => limit = parse_limit(&value)?,
            "status" => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    statuses.push(
                        JobStatus::parse_known(s).map_err(|e| invalid("status", e.to_string()))?,
                    );
                }
            }
            other => {
                return Err(invalid(
                    other,
                    format!("unknown query parameter {other:?}; known: offset, limit, status"),
                ))
            }
        }
    }
    let mode = mode(&manager);
    if manager.config().is_upstream() {
        return Ok(fresh_json(&json!({
            "mode": mode, "offset": offset, "limit": limit, "has_more": false, "jobs": [],
        })));
    }
    let mut jobs = manager
        .list_jobs(&JobQuery {
            statuses,
            limit: Some(limit + 1),
            offset,
        })
        .await?;
    let has_more = jobs.len() > limit;
    jobs.truncate(limit);
    let listed: Vec<Value> = jobs
        .iter()
        .map(|job| {
            let mut tasks = serde_json::Map::new();
            tasks.insert("total".into(), json!(job.task_counts.total()));
            for (status, n) in &job.task_counts.0 {
                tasks.insert(status.clone(), json!(n));
            }
            json!({
                "id": job.id,
                "name": job.name,
                "job_type": job.job_type,
                "status": job.status,
                "priority": job.priority,
                "created": job.created,
                "updated": job.updated,
                "tasks": tasks,
            })
        })
        .collect();
    Ok(fresh_json(&json!({
        "mode": mode, "offset": offset, "limit": limit, "has_more": has_more, "jobs": listed,
    })))
}

// ------------------------------------------------------------------ worker actions

/// A worker as the listing shows it (for other modules' answers, e.g. `tags_api`).
pub(crate) fn worker_summary(worker: &Worker, now: DateTime<Utc>) -> Value {
    serde_json::to_value(WorkerSummary::new(worker, now)).unwrap_or_default()
}

async fn sleep(State(m): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    request_status(&m, &raw, RequestedStatus::Asleep).await
}

async fn wake(State(m): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    request_status(&m, &raw, RequestedStatus::Awake).await
}

async fn shutdown(State(m): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    request_status(&m, &raw, RequestedStatus::Shutdown).await
}

/// Record the request through `Manager::request_worker_status`, as `flamenco worker
/// sleep|wake|shutdown` does: the same rule and message (409 for a worker that cannot
/// obey, Flamenco Worker 2.0.x).
async fn request_status(
    manager: &Manager,
    raw: &str,
    requested: RequestedStatus,
) -> Result<Response> {
    let id = ObjectId::parse(raw).map_err(|_| {
        invalid(
            "worker_id",
            format!("{raw:?} is not a worker id: ids are 24 hexadecimal characters"),
        )
    })?;
    let Some(worker) = manager.get_worker(id).await? else {
        return Err(HttpError(ApiError::NotFound(format!(
            "worker {id} is unknown"
        ))));
    };
    manager.request_worker_status(id, Some(requested)).await?;
    tracing::info!(worker = %worker.identifier(), %requested, "worker status change requested from the dashboard");
    let now = manager.now();
    let worker = manager.get_worker(id).await?.ok_or_else(|| {
        HttpError(ApiError::NotFound(format!(
            "worker {id} was deleted meanwhile"
        )))
    })?;
    Ok(json_response(
        StatusCode::OK,
        &WorkerSummary::new(&worker, now),
    ))
}
