//! The task API: one task, its log (a tail or a range of lines, as JSON or plain text), and
//! the log as a live Server-Sent Events stream (docs/jobs.md, "Why did a task fail?").
//!
//! * `GET /api/tasks/{task_id}`: the task as stored (status, worker, activity, times), with
//!   `last_updated` and its failure record `failures` (`[{worker_id, worker, at}]`, oldest
//!   first; docs/jobs.md, "Retries").
//! * `GET /api/tasks/{task_id}/log`: `?tail=N` (the last N lines; the default is
//!   [`DEFAULT_LINES`]) or `?from=L&limit=N` (N lines numbered L or more; lines are numbered
//!   from 0 and keep their numbers when the size cap drops lines). JSON by default;
//!   `?format=text` or `Accept: text/plain` answers plain text, one line per line, with the
//!   marker line where lines were dropped and the number to continue from in
//!   `X-Flamenco-Next-Line`.
//! * `GET /api/tasks/{task_id}/log/stream`: `text/event-stream`. It starts with the last
//!   `?tail=N` lines (default [`STREAM_BACKLOG`]), or the lines from `?from=L`, or after the
//!   `Last-Event-ID` a reconnecting `EventSource` sends; then every new line as it is
//!   stored. Each line is a `message` event whose `id` is its number and whose `data` is
//!   its text; dropped lines are one `dropped` event with the marker text. The stream is
//!   limited like every event stream ([`crate::streams`]).
//!
//! Every route needs [`crate::admin::AdminAccess`] (applied by [`crate::router`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flamenco_core::model::ObjectId;
use flamenco_core::store::logs::{TaskLogEntry, MAX_READ_LINES};
use flamenco_core::store::{TaskLogPage, TaskLogQuery};
use flamenco_core::{ApiError, Manager};
use futures::StreamExt;
use serde_json::json;

use crate::error::HttpError;
use crate::json::json_response;
use crate::streams::StreamPermit;

type Result<T> = std::result::Result<T, HttpError>;

/// Lines a log read returns when it names neither `tail` nor `limit`.
pub const DEFAULT_LINES: usize = 1000;

/// Lines a log stream starts with when it names neither `tail` nor `from`.
pub const STREAM_BACKLOG: usize = 100;

/// How often a log stream checks the store when no notice of new lines came (lines stored
/// by another process: another Manager on the same database).
pub const STREAM_POLL: Duration = Duration::from_secs(1);

/// How often an idle log stream gets a comment, so proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The task API routes, without the admin check (see [`crate::router`]).
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new()
        .get("/api/tasks/{task_id}", show)
        .get("/api/tasks/{task_id}/log", log)
        .get("/api/tasks/{task_id}/log/stream", stream)
}

fn invalid(field: &str, message: impl Into<String>) -> HttpError {
    HttpError(ApiError::InvalidField {
        field: field.to_string(),
        message: message.into(),
    })
}

fn task_id(raw: &str) -> Result<ObjectId> {
    ObjectId::parse(raw).map_err(|_| {
        invalid(
            "task_id",
            format!("{raw:?} is not a task id: ids are 24 hexadecimal characters"),
        )
    })
}

/// A count from 1 to [`MAX_READ_LINES`].
fn count(field: &str, value: &str) -> Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_READ_LINES).contains(&n) => Ok(n),
        _ => Err(invalid(
            field,
            format!("{field} must be an integer from 1 to {MAX_READ_LINES}, not {value:?}"),
        )),
    }
}

fn line_number(field: &str, value: &str) -> Result<u64> {
    value.trim().parse::<u64>().map_err(|_| {
        invalid(
            field,
            format!("{field} must be a line number (0 or more), not {value:?}"),
        )
    })
}

/// The query of a log read or stream.
#[derive(Debug, Default)]
struct LogParams {
    tail: Option<usize>,
    from: Option<u64>,
    limit: Option<usize>,
    text: bool,
}

fn log_params(params: Vec<(String, String)>, streaming: bool) -> Result<LogParams> {
    let mut p = LogParams::default();
    for (key, value) in params {
        match key.as_str() {
            "tail" => p.tail = Some(count("tail", &value)?),
            "from" => p.from = Some(line_number("from", &value)?),
            "limit" if !streaming => p.limit = Some(count("limit", &value)?),
            "format" if !streaming => match value.as_str() {
                "text" => p.text = true,
                "json" => p.text = false,
                other => {
                    return Err(invalid(
                        "format",
                        format!("format must be json or text, not {other:?}"),
                    ))
                }
            },
            other => {
                let known = if streaming {
                    "tail, from"
                } else {
                    "tail, from, limit, format"
                };
                return Err(invalid(
                    other,
                    format!("unknown query parameter {other:?}; known: {known}"),
                ));
            }
        }
    }
    if p.tail.is_some() && (p.from.is_some() || p.limit.is_some()) {
        return Err(invalid(
            "tail",
            "give either tail, or from (and limit), not both",
        ));
    }
    Ok(p)
}

/// Whether the client asked for plain text with its `Accept` header (and not for JSON).
fn accepts_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/plain") && !a.contains("application/json"))
}

/// `GET /api/tasks/{task_id}`.
async fn show(State(manager): State<Arc<Manager>>, Path(raw): Path<String>) -> Result<Response> {
    let id = task_id(&raw)?;
    match manager.get_task(id).await? {
        Some(task) => {
            // Plus its failure record (retries, docs/jobs.md): who failed it, and when.
            let failures = manager.task_failures(id).await?;
            let mut value = crate::task_actions_api::task_json(&task);
            if let Some(obj) = value.as_object_mut() {
                obj.insert("failures".into(), json!(failures));
            }
            Ok(json_response(StatusCode::OK, &value))
        }
        None => Err(HttpError(ApiError::NotFound(format!(
            "task {id} is unknown"
        )))),
    }
}

/// One entry as JSON: `{"line", "text"}`, or the marker with its counts.
fn entry_json(e: &TaskLogEntry) -> serde_json::Value {
    match e {
        TaskLogEntry::Line { line, text } => json!({"line": line, "text": text}),
        TaskLogEntry::Dropped {
            dropped_lines,
            dropped_bytes,
        } => json!({
            "dropped_lines": dropped_lines,
            "dropped_bytes": dropped_bytes,
            "text": e.text(),
        }),
    }
}

/// `GET /api/tasks/{task_id}/log`.
async fn log(
    State(manager): State<Arc<Manager>>,
    Path(raw): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response> {
    let id = task_id(&raw)?;
    let p = log_params(params, false)?;
    let query = match (p.tail, p.from) {
        (_, Some(from)) => TaskLogQuery::From {
            from,
            limit: p.limit.unwrap_or(DEFAULT_LINES),
        },
        (tail, None) if p.limit.is_none() => TaskLogQuery::Tail(tail.unwrap_or(DEFAULT_LINES)),
        (_, None) => TaskLogQuery::From {
            from: 0,
            limit: p.limit.unwrap_or(DEFAULT_LINES),
        },
    };
    let page = manager.task_log(id, query).await?;
    if p.text || accepts_text(&headers) {
        return Ok(text_response(&page));
    }
    let entries: Vec<serde_json::Value> = page.entries.iter().map(entry_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "task_id": id,
            "entries": entries,
            "next_line": page.next_line,
            "end_line": page.end.next_line,
        }),
    ))
}

fn text_response(page: &TaskLogPage) -> Response {
    let mut body = String::new();
    for e in &page.entries {
        body.push_str(&e.text());
        body.push('\n');
    }
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-flamenco-next-line", HeaderValue::from(page.next_line));
    resp
}

/// The SSE events of some log entries.
fn events(page: &TaskLogPage) -> Vec<std::result::Result<Event, Infallible>> {
    page.entries
        .iter()
        .map(|e| {
            Ok(match e {
                TaskLogEntry::Line { line, text } => {
                    Event::default().id(line.to_string()).data(text)
                }
                TaskLogEntry::Dropped { .. } => Event::default().event("dropped").data(e.text()),
            })
        })
        .collect()
}

/// `GET /api/tasks/{task_id}/log/stream`.
async fn stream(
    State(manager): State<Arc<Manager>>,
    Path(raw): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    mut parts: Parts,
) -> Result<Response> {
    let id = task_id(&raw)?;
    let p = log_params(params, true)?;
    let resume = match headers.get("last-event-id") {
        Some(v) => {
            let text = v.to_str().unwrap_or_default();
            Some(line_number("Last-Event-ID", text)? + 1)
        }
        None => None,
    };
    // The backlog: the lines from where the client resumes, or the tail.
    let first = match resume.or(p.from) {
        Some(from) => TaskLogQuery::From {
            from,
            limit: MAX_READ_LINES,
        },
        None => TaskLogQuery::Tail(p.tail.unwrap_or(STREAM_BACKLOG)),
    };
    // An unknown task is a 404 before the stream takes a place.
    let backlog = manager.task_log(id, first).await?;
    let permit = match StreamPermit::from_request_parts(&mut parts, &()).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let next = match first {
        TaskLogQuery::From { from, .. } if backlog.entries.is_empty() => from,
        _ => backlog.next_line,
    };
    let live = manager
        .follow_task_log(id, next, STREAM_POLL)
        .map(move |page| match page {
            Ok(page) => futures::stream::iter(events(&page)),
            Err(e) => {
                tracing::warn!(task = %id, "a task log stream ends: {e}");
                futures::stream::iter(Vec::new())
            }
        })
        .flatten();
    let all = futures::stream::iter(events(&backlog)).chain(live);
    Ok(Sse::new(permit.limit(all))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn log_parameters_are_checked() {
        let p = log_params(params(&[("tail", "5")]), false).expect("tail");
        assert_eq!(p.tail, Some(5));
        let p = log_params(
            params(&[("from", "7"), ("limit", "2"), ("format", "text")]),
            false,
        )
        .expect("range");
        assert_eq!((p.from, p.limit, p.text), (Some(7), Some(2), true));
        for bad in [
            &[("tail", "0")][..],
            &[("tail", "x")],
            &[("limit", "100000")],
            &[("from", "-1")],
            &[("format", "xml")],
            &[("tail", "3"), ("from", "1")],
            &[("nope", "1")],
        ] {
            assert!(log_params(params(bad), false).is_err(), "{bad:?}");
        }
        assert!(log_params(params(&[("limit", "3")]), true).is_err());
    }
}
