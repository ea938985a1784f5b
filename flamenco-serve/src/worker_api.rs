//! The worker API: every route the real Flamenco Worker (2.0.6 … 2.5) calls.
//!
//! Handlers only translate HTTP to [`Manager`] calls and back; the behaviour lives in
//! `flamenco-core`. Status codes and JSON shapes follow worker-protocol.md §4 and §12.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flamenco_core::model::{ObjectId, Worker};
use flamenco_core::protocol::{
    OutputProduced, RegisterWorker, SignOnRequest, StatusRequested, WorkerTaskUpdate,
    MAX_OUTPUT_PRODUCED_BODY,
};
use flamenco_core::{ApiError, Manager, NextTask};
use http_body::Frame;

use crate::auth::{AuthedWorker, PeerInfo};
use crate::error::HttpError;
use crate::json::{decode, json_bytes, json_response};
use crate::routes::Routes;

type Result<T> = std::result::Result<T, HttpError>;

/// The worker API routes.
pub fn routes() -> Routes {
    Routes::new()
        .post("/register-worker", register_worker)
        .post("/sign-on", sign_on)
        .post("/sign-off", sign_off)
        .post("/task", next_task)
        .post("/tasks/{task_id}/update", task_update)
        .post("/tasks/{task_id}/return", return_task)
        .get("/may-i-run/{task_id}", may_i_run)
        .post(
            "/output-produced",
            // A report never needs max_request_body (16 MiB): refuse big ones before
            // reading them (docs/latest-image.md).
            output_produced.layer(axum::extract::DefaultBodyLimit::max(
                MAX_OUTPUT_PRODUCED_BODY,
            )),
        )
        .get("/status-change", status_change)
        .post("/ack-status-change/{status}", ack_status_change)
        .any("/kick", kick)
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A task id from the path; v2 answers 404 for one that is not 24 hex characters.
fn task_id(raw: &str) -> Result<ObjectId> {
    ObjectId::parse(raw).map_err(|_| {
        HttpError(ApiError::NotFound(format!(
            "Invalid ObjectID passed as task ID: {raw}"
        )))
    })
}

async fn register_worker(
    State(manager): State<Arc<Manager>>,
    PeerInfo(peer): PeerInfo,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let req: RegisterWorker = decode(&body, false)?;
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let worker = manager.register_worker(req, &peer, authorization).await?;
    Ok(json_response(StatusCode::OK, &worker))
}

async fn sign_on(
    State(manager): State<Arc<Manager>>,
    AuthedWorker(worker): AuthedWorker,
    PeerInfo(peer): PeerInfo,
    body: Bytes,
) -> Result<Response> {
    let req: SignOnRequest = decode(&body, true)?;
    manager.sign_on(&worker, req, &peer).await?;
    Ok(no_content())
}

async fn sign_off(
    State(manager): State<Arc<Manager>>,
    AuthedWorker(worker): AuthedWorker,
) -> Result<Response> {
    manager.sign_off(&worker).await?;
    Ok(no_content())
}

async fn next_task(
    State(manager): State<Arc<Manager>>,
    AuthedWorker(worker): AuthedWorker,
    PeerInfo(peer): PeerInfo,
) -> Result<Response> {
    match manager.next_task(&worker, &peer).await? {
        NextTask::NoTask => Ok(no_content()),
        NextTask::StatusRequested(status_requested) => Ok(json_response(
            StatusCode::LOCKED,
            &StatusRequested { status_requested },
        )),
        NextTask::Task(task) => {
            let bytes = json_bytes(&*task);
            let body = DeliveryGuard::new(bytes, manager.clone(), worker, task.id);
            let mut resp = Response::new(Body::new(body));
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
    }
}

async fn task_update(
    State(manager): State<Arc<Manager>>,
    AuthedWorker(worker): AuthedWorker,
    PeerInfo(peer): PeerInfo,
    Path(raw_id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let id = task_id(&raw_id)?;
    let update: WorkerTaskUpdate = decode(&body, false)?;
    manager.task_update(&worker, id, update, &peer).await?;
    Ok(no_content())
}

async fn may_i_run(
    State(manager): State<Arc<Manager>>,
    AuthedWorker(worker): AuthedWorker,
    PeerInfo(peer): PeerInfo,
    Path(raw_id): Path<String>,
) -> Result<Response> {
    let id = task_id(&raw_id)?;
    let answer = manager.may_i_run(&worker, id, &peer).await?;
    Ok(json_response(StatusCode::OK, &answer))
}

async fn return_task(
    State(manager): State<Arc<Manager>>,
    AuthedWorker(worker): AuthedWorker,
    Path(raw_id): Path<String>,
) -> Result<Response> {
    let id = task_id(&raw_id)?;
    manager.return_task(&worker, id).await?;
    Ok(no_content())
}

/// `POST /output-produced`: 204 at once. The body is at most [`MAX_OUTPUT_PRODUCED_BODY`]
/// (or `max_request_body` if lower; 413 beyond) and lists at most `MAX_OUTPUT_PATHS` paths
/// (decoding stops after that: 400 naming the limit); the paths are queued for the latest
/// image without touching the files or waiting for the queue (docs/latest-image.md).
async fn output_produced(
    State(manager): State<Arc<Manager>>,
    AuthedWorker(worker): AuthedWorker,
    body: Bytes,
) -> Result<Response> {
    let max = manager.config().max_request_body;
    if body.len() > max {
        return Ok(json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({
                "error": format!("the request body is larger than max_request_body ({max} bytes)")
            }),
        ));
    }
    let req: OutputProduced = decode(&body, false)?;
    manager.output_produced(&worker, req)?;
    Ok(no_content())
}

async fn status_change(
    State(manager): State<Arc<Manager>>,
    AuthedWorker(worker): AuthedWorker,
    PeerInfo(peer): PeerInfo,
) -> Result<Response> {
    match manager.status_change(&worker, &peer).await? {
        Some(status_requested) if worker.supports_status_requests() => Ok(json_response(
            StatusCode::OK,
            &StatusRequested { status_requested },
        )),
        _ => Ok(no_content()),
    }
}

async fn ack_status_change(
    State(manager): State<Arc<Manager>>,
    AuthedWorker(worker): AuthedWorker,
    Path(status): Path<String>,
) -> Result<Response> {
    manager.ack_status_change(&worker, &status).await?;
    Ok(no_content())
}

/// `/kick`: ask for a task download from the Flamenco Server (upstream mode; standalone
/// mode has nothing to download). The answer never waits for the download.
async fn kick(State(manager): State<Arc<Manager>>) -> Response {
    manager.kick_download();
    no_content()
}

/// The body of a `/task` answer. If it is dropped before hyper took its bytes (the
/// connection broke before the answer could be written), the task is put back in the
/// queue, as v2 did when writing the answer failed (v2 §6.4 step 6).
struct DeliveryGuard {
    bytes: Option<Bytes>,
    undelivered: Option<(Arc<Manager>, Arc<Worker>, ObjectId)>,
}

impl DeliveryGuard {
    fn new(bytes: Bytes, manager: Arc<Manager>, worker: Arc<Worker>, task_id: ObjectId) -> Self {
        DeliveryGuard {
            bytes: Some(bytes),
            undelivered: Some((manager, worker, task_id)),
        }
    }
}

impl http_body::Body for DeliveryGuard {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match this.bytes.take() {
            Some(bytes) => {
                this.undelivered = None;
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

impl Drop for DeliveryGuard {
    fn drop(&mut self) {
        let Some((manager, worker, task_id)) = self.undelivered.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(task = %task_id, "task answer dropped outside a runtime; not re-queued");
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = manager
                .unassign_after_send_failure(
                    &worker,
                    task_id,
                    "the connection closed before the task was sent",
                )
                .await
            {
                tracing::error!(task = %task_id, "unable to re-queue undelivered task: {e}");
            }
        });
    }
}
