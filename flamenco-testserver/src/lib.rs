//! An in-process test double of Flamenco Server 2.0.4, as the Manager sees it.
//!
//! It serves the four calls a Manager makes (server-protocol.md): `startup`, `depsgraph`,
//! `task-update-batch` and `GET /api/flamenco/tasks/{id}`, on `127.0.0.1:0`, with the
//! Server's rules (the checklist of §7): Basic auth with the token as user name and an
//! empty password (403/400/404/401 in the Server's order), the four required startup
//! keys, clean-slate and incremental depsgraphs with claiming that does not bump
//! `_updated`/`_etag`, the per-update semantics of task-update-batch (unknown task =
//! handled, foreign task = not handled, progress fields reset, `current_command_idx`
//! ignored, the cancel-requested guard, logs keyed by update id, `cancel_task_ids` only
//! when non-empty), the job/task status cascades, Eve's `If-None-Match` → 304 with a
//! quoted `ETag`, BSON on request, and Eve-style error bodies.
//!
//! It is strict, as the Server is (a missing startup key is a 500, an object instead of
//! an array a 500, invalid JSON a 400, a gzip body is invalid JSON unless told to accept
//! it), and it can fail on purpose: [`Fault`]s per endpoint (an HTTP status, a dropped
//! connection, a hang, a delay before or after processing), update ids it never
//! acknowledges, and gzip refusal.
//!
//! Tests drive the "Server side" through plain methods: create managers and jobs, change
//! job and task statuses (with the Server's cascades), and read what arrived (updates in
//! order, task logs, startup bodies, raw requests).

mod bson;
mod formats;
mod state;

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};

pub use formats::{is_object_id, new_object_id, parse_since, python_isoformat, rfc1123};
pub use state::{TaskLog, TASK_STATUSES};

use bson::Bson;
use state::{ApiFailure, Data, Depsgraph, JobDoc, ManagerDoc, TaskDoc};

/// The four Manager-facing endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Startup,
    Depsgraph,
    TaskUpdateBatch,
    /// `GET /api/flamenco/tasks/{id}` (the conditional re-fetch).
    Task,
}

/// A failure to produce on purpose.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this HTTP status and an Eve error body, without processing.
    Status(u16),
    /// Start a 200 answer and break the connection before the body is complete.
    Drop,
    /// Never answer (the client's timeout has to end it).
    Hang,
    /// Wait this long, then process and answer normally.
    DelayBefore(Duration),
    /// Process (the effects are stored), then wait this long before answering.
    DelayAfter(Duration),
}

/// What the Server does with a `Content-Encoding: gzip` push body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GzipMode {
    /// Like Server 2.0.4 (Flask): the encoding is ignored, so the body is invalid JSON and
    /// the answer is 400.
    #[default]
    Ignored,
    /// Decompress it (a newer Server, or one behind a proxy that inflates).
    Accept,
    /// Refuse it with this status (e.g. 415).
    Refuse(u16),
}

/// Manager credentials created on the Server.
#[derive(Clone, Debug)]
pub struct ManagerCreds {
    pub id: String,
    pub token: String,
}

/// A task of a new job (see [`TestServer::add_job`]).
#[derive(Clone, Debug)]
pub struct NewTask {
    pub name: String,
    pub task_type: String,
    /// A JSON array of `{name, settings}`.
    pub commands: Value,
    pub priority: i64,
    /// Indexes of earlier tasks of the same job.
    pub parents: Vec<usize>,
}

impl NewTask {
    /// A `sleep` task as the sleep job compiler makes it: echo, then sleep.
    pub fn sleep(name: impl Into<String>, seconds: i64) -> NewTask {
        NewTask {
            name: name.into(),
            task_type: "sleep".into(),
            commands: json!([
                {"name": "echo", "settings": {"message": "Preparing to sleep"}},
                {"name": "sleep", "settings": {"time_in_seconds": seconds}},
            ]),
            priority: 50,
            parents: Vec::new(),
        }
    }
}

/// A new job (see [`TestServer::add_job`]).
#[derive(Clone, Debug)]
pub struct NewJob {
    pub name: String,
    pub job_type: String,
    pub priority: i64,
    pub tasks: Vec<NewTask>,
}

impl NewJob {
    /// A `sleep` job of `n` tasks, each sleeping `seconds`.
    pub fn sleep(n: usize, seconds: i64) -> NewJob {
        NewJob {
            name: format!("sleep job of {n} tasks"),
            job_type: "sleep".into(),
            priority: 50,
            tasks: (1..=n)
                .map(|i| NewTask::sleep(format!("sleep-{i}"), seconds))
                .collect(),
        }
    }
}

/// A created job and its task ids, in order.
#[derive(Clone, Debug)]
pub struct CreatedJob {
    pub id: String,
    pub task_ids: Vec<String>,
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub endpoint: Endpoint,
    pub method: String,
    /// The path below the Server's prefix.
    pub path: String,
    /// The full path as requested (prefix included).
    pub full_path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as received (still compressed when it was).
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, inflated first when it was gzip-compressed.
    pub fn json(&self) -> Option<Value> {
        let bytes = if self.header("content-encoding") == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_end(&mut out)
                .ok()?;
            out
        } else {
            self.body.clone()
        };
        serde_json::from_slice(&bytes).ok()
    }
}

struct FaultRule {
    endpoint: Endpoint,
    fault: Fault,
    remaining: Option<u32>,
}

#[derive(Default)]
struct Control {
    faults: Vec<FaultRule>,
    gzip: GzipMode,
    never_ack_updates: HashSet<String>,
    never_ack_tasks: HashSet<String>,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    data: Mutex<Data>,
    control: Mutex<Control>,
    prefix: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running test Server. Dropping it stops it.
pub struct TestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Serve on `127.0.0.1:0` at the root path.
    pub async fn start() -> TestServer {
        Self::start_with_prefix("").await
    }

    /// Serve below a path prefix such as `/flamenco-server`, to check that a Manager keeps
    /// the path of its base URL.
    pub async fn start_with_prefix(prefix: &str) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test Server");
        Self::start_on(listener, prefix)
    }

    /// Serve on a given listener (e.g. to restart on the same port).
    pub fn start_on(listener: tokio::net::TcpListener, prefix: &str) -> TestServer {
        let prefix = prefix.trim_end_matches('/').to_string();
        let shared = Arc::new(Shared {
            data: Mutex::new(Data::default()),
            control: Mutex::new(Control::default()),
            prefix: prefix.clone(),
        });
        let addr = listener.local_addr().expect("local addr");
        let api = Router::new()
            .route("/api/flamenco/managers/{mid}/startup", any(startup))
            .route("/api/flamenco/managers/{mid}/depsgraph", any(depsgraph))
            .route(
                "/api/flamenco/managers/{mid}/task-update-batch",
                any(task_update_batch),
            )
            .route("/api/flamenco/tasks/{tid}", any(get_task))
            .with_state(shared.clone());
        let app = if prefix.is_empty() {
            api
        } else {
            Router::new().nest(&prefix, api)
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer { shared, addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a Manager's `flamenco:` setting should have, ending in `/`.
    pub fn url(&self) -> String {
        format!("http://{}{}/", self.addr, self.shared.prefix)
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        lock(&self.shared.data)
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        lock(&self.shared.control)
    }

    // ---- Server-side administration ----

    /// Create a Manager with its service account and token (`create_manager`).
    pub fn add_manager(&self) -> ManagerCreds {
        let mut d = self.data();
        let id = new_object_id();
        let user = new_object_id();
        let token = formats::new_token();
        d.tokens.insert(token.clone(), user.clone());
        d.managers.insert(
            id.clone(),
            ManagerDoc {
                id: id.clone(),
                service_account: user,
                url: Value::Null,
                variables: Value::Null,
                path_replacement: Value::Null,
                nr_of_workers: Value::Null,
                worker_task_types: None,
            },
        );
        ManagerCreds { id, token }
    }

    /// A token of an ordinary user (not a Manager's service account).
    pub fn add_user_token(&self) -> String {
        let token = formats::new_token();
        self.data().tokens.insert(token.clone(), new_object_id());
        token
    }

    /// Create a job for `manager` and compile its tasks: everything is created
    /// `under-construction`, then job and tasks become `queued` with one shared timestamp
    /// and etag (server-protocol.md §4.4).
    pub fn add_job(&self, manager: &str, job: NewJob) -> CreatedJob {
        let mut d = self.data();
        let job_id = new_object_id();
        let project = new_object_id();
        let user = new_object_id();
        d.jobs.insert(
            job_id.clone(),
            JobDoc {
                id: job_id.clone(),
                manager: manager.to_string(),
                name: job.name.clone(),
                job_type: job.job_type.clone(),
                status: "queued".into(),
                priority: job.priority,
                project: project.clone(),
                user: user.clone(),
            },
        );
        let now = formats::now_ms();
        let etag = formats::new_etag();
        let ids: Vec<String> = job.tasks.iter().map(|_| new_object_id()).collect();
        for (i, t) in job.tasks.iter().enumerate() {
            let mut f = Map::new();
            f.insert("_id".into(), json!(ids[i]));
            f.insert("job".into(), json!(job_id));
            f.insert("manager".into(), json!(manager));
            f.insert("user".into(), json!(user));
            f.insert("name".into(), json!(t.name));
            f.insert("status".into(), json!("queued"));
            f.insert("job_type".into(), json!(job.job_type));
            f.insert("task_type".into(), json!(t.task_type));
            f.insert("commands".into(), t.commands.clone());
            f.insert("job_priority".into(), json!(job.priority));
            f.insert("priority".into(), json!(t.priority));
            f.insert("project".into(), json!(project));
            if !t.parents.is_empty() {
                let parents: Vec<&String> = t.parents.iter().map(|p| &ids[*p]).collect();
                f.insert("parents".into(), json!(parents));
            }
            d.insert_task(TaskDoc {
                fields: f,
                created: now,
                updated: now,
                etag: etag.clone(),
            });
        }
        CreatedJob {
            id: job_id,
            task_ids: ids,
        }
    }

    /// Store a task document as given (it needs `_id`; `_etag` is kept when present, and
    /// `_created`/`_updated` become now). A `job` that does not exist makes the task
    /// invisible to the depsgraph but not to `GET /api/flamenco/tasks/{id}`.
    pub fn insert_task(&self, doc: Value) {
        let mut fields = doc.as_object().cloned().expect("a task document");
        let etag = fields
            .remove("_etag")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(formats::new_etag);
        fields.remove("_created");
        fields.remove("_updated");
        let now = formats::now_ms();
        self.data().insert_task(TaskDoc {
            fields,
            created: now,
            updated: now,
            etag,
        });
    }

    /// `PATCH /api/flamenco/jobs/{id}` `set-job-status`, with the task cascade (§4.3).
    pub fn set_job_status(&self, job: &str, status: &str) {
        self.data().set_job_status(job, status);
    }

    /// `PATCH /api/flamenco/tasks/{id}` `set-task-status`: a Server-side write (new
    /// `_updated` and `_etag`), then the job re-evaluation (§4.2).
    pub fn set_task_status(&self, task: &str, status: &str) {
        let mut d = self.data();
        d.write_statuses(&[task.to_string()], status);
        let job = d.tasks.get(task).map(|t| t.job().to_string());
        if let Some(job) = job {
            d.job_after_task_status_change(&job, status);
        }
    }

    /// An Eve PUT-like edit of task fields: a Server-side write (new `_updated`, `_etag`).
    pub fn edit_task(&self, task: &str, edit: impl FnOnce(&mut Map<String, Value>)) {
        let mut d = self.data();
        if let Some(t) = d.tasks.get_mut(task) {
            edit(&mut t.fields);
            t.updated = formats::now_ms();
            t.etag = formats::new_etag();
        }
    }

    /// Remove a task document.
    pub fn delete_task(&self, task: &str) {
        let mut d = self.data();
        d.tasks.remove(task);
        d.task_order.retain(|id| id != task);
    }

    /// A task as `GET /api/flamenco/tasks/{id}` would return it.
    pub fn task(&self, id: &str) -> Option<Value> {
        self.data().tasks.get(id).map(TaskDoc::to_json)
    }

    pub fn task_status(&self, id: &str) -> Option<String> {
        self.data().tasks.get(id).map(|t| t.status().to_string())
    }

    /// A job document (`_id`, `manager`, `name`, `job_type`, `status`, `priority`, …).
    pub fn job(&self, id: &str) -> Option<Value> {
        self.data().jobs.get(id).map(JobDoc::to_json)
    }

    pub fn job_status(&self, id: &str) -> Option<String> {
        self.data().jobs.get(id).map(|j| j.status.clone())
    }

    /// Stored task logs of one task, in the order they first arrived.
    pub fn task_logs(&self, task: &str) -> Vec<TaskLog> {
        self.data()
            .logs
            .iter()
            .filter(|l| l.task == task)
            .cloned()
            .collect()
    }

    /// Every task-update element processed, in arrival order (re-sent ones again).
    pub fn received_updates(&self) -> Vec<Value> {
        self.data().received_updates.clone()
    }

    /// Successful startup notifications: (manager id, body).
    pub fn startups(&self) -> Vec<(String, Value)> {
        self.data().startups.clone()
    }

    /// The Manager document's fields set by startup: url, variables, path_replacement,
    /// nr_of_workers, worker_task_types.
    pub fn manager_doc(&self, id: &str) -> Option<Value> {
        self.data().managers.get(id).map(|m| {
            json!({"_id": m.id, "url": m.url, "variables": m.variables, "path_replacement": m.path_replacement,
                   "stats": {"nr_of_workers": m.nr_of_workers},
                   "worker_task_types": m.worker_task_types})
        })
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.control().requests.clone()
    }

    /// Requests received for one endpoint.
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<RecordedRequest> {
        self.control()
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    // ---- failing on purpose ----

    /// Fail every request to `endpoint` this way until [`TestServer::clear_faults`].
    pub fn set_fault(&self, endpoint: Endpoint, fault: Fault) {
        self.control().faults.push(FaultRule {
            endpoint,
            fault,
            remaining: None,
        });
    }

    /// Fail the next `times` requests to `endpoint` this way.
    pub fn fail_times(&self, endpoint: Endpoint, fault: Fault, times: u32) {
        self.control().faults.push(FaultRule {
            endpoint,
            fault,
            remaining: Some(times),
        });
    }

    pub fn clear_faults(&self) {
        self.control().faults.clear();
    }

    /// How to treat gzip-compressed push bodies.
    pub fn set_gzip(&self, mode: GzipMode) {
        self.control().gzip = mode;
    }

    /// Apply this update when it arrives, but never list it in `handled_update_ids`.
    pub fn never_acknowledge_update(&self, update_id: &str) {
        self.control()
            .never_ack_updates
            .insert(update_id.to_ascii_lowercase());
    }

    /// Never acknowledge any update for this task.
    pub fn never_acknowledge_task(&self, task_id: &str) {
        self.control()
            .never_ack_tasks
            .insert(task_id.to_ascii_lowercase());
    }
}

// ---- HTTP ----

fn failure(f: &ApiFailure) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(f.body())).into_response()
}

fn method_not_allowed() -> Response {
    failure(&ApiFailure::new(
        405,
        "The method is not allowed for the requested URL.",
    ))
}

/// Record the request and find the fault to apply, if any.
fn arrive(
    shared: &Shared,
    endpoint: Endpoint,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Fault> {
    let mut c = lock(&shared.control);
    c.requests.push(RecordedRequest {
        endpoint,
        method: method.to_string(),
        path: path.to_string(),
        full_path: format!("{}{path}", shared.prefix),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    let rule = c
        .faults
        .iter_mut()
        .find(|r| r.endpoint == endpoint && r.remaining.is_none_or(|n| n > 0))?;
    if let Some(n) = rule.remaining.as_mut() {
        *n -= 1;
    }
    Some(rule.fault.clone())
}

/// Apply a fault that replaces the answer. `Ok(delay_after)` means: go on processing.
async fn before(fault: Option<Fault>) -> Result<Option<Duration>, Response> {
    match fault {
        None => Ok(None),
        Some(Fault::Status(code)) => Err(failure(&ApiFailure::new(code, "injected failure"))),
        Some(Fault::Drop) => {
            let stream = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped on purpose"))
            });
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut()
                .insert("content-length", HeaderValue::from_static("100"));
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            Err(resp)
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        Some(Fault::DelayBefore(d)) => {
            tokio::time::sleep(d).await;
            Ok(None)
        }
        Some(Fault::DelayAfter(d)) => Ok(Some(d)),
    }
}

async fn finish(resp: Response, delay_after: Option<Duration>) -> Response {
    if let Some(d) = delay_after {
        tokio::time::sleep(d).await;
    }
    resp
}

/// `manager_api_call`'s checks, in the Server's order (§1): 403, 400, 404, 401.
fn check_manager(data: &Data, headers: &HeaderMap, mid: &str) -> Result<(), ApiFailure> {
    let user = basic_auth(headers)
        .and_then(|(token, password)| data.user_for(&token, &password).cloned())
        .filter(|user| data.is_manager_account(user))
        .ok_or_else(|| {
            ApiFailure::new(
                403,
                "You don't have the permission to access the requested resource.",
            )
        })?;
    if !formats::is_object_id(mid) {
        return Err(ApiFailure::new(400, format!("Invalid object ID '{mid}'")));
    }
    let manager = data
        .managers
        .get(&mid.to_ascii_lowercase())
        .ok_or_else(|| ApiFailure::new(404, "Not Found"))?;
    if manager.service_account != user {
        return Err(ApiFailure::new(401, "Unauthorized"));
    }
    Ok(())
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    Some((user.to_string(), password.to_string()))
}

fn is_json_content(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

async fn startup(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(mid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/flamenco/managers/{mid}/startup");
    let fault = arrive(&shared, Endpoint::Startup, &method, &path, &headers, &body);
    if method != Method::POST {
        return method_not_allowed();
    }
    let delay = match before(fault).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let resp = {
        let mut data = lock(&shared.data);
        match check_manager(&data, &headers, &mid) {
            Err(f) => failure(&f),
            Ok(()) => {
                let parsed: Option<Value> = if is_json_content(&headers) {
                    serde_json::from_slice(&body).ok()
                } else {
                    None
                };
                let keys = [
                    "manager_url",
                    "variables",
                    "path_replacement",
                    "nr_of_workers",
                ];
                match parsed.as_ref().and_then(Value::as_object) {
                    Some(obj) if keys.iter().all(|k| obj.contains_key(*k)) => {
                        let mid = mid.to_ascii_lowercase();
                        let m = data.managers.get_mut(&mid).expect("checked");
                        m.url = obj["manager_url"].clone();
                        m.variables = obj["variables"].clone();
                        m.path_replacement = obj["path_replacement"].clone();
                        m.nr_of_workers = obj["nr_of_workers"].clone();
                        if let Some(types) = obj.get("worker_task_types") {
                            m.worker_task_types = Some(types.clone());
                        }
                        data.startups.push((mid, Value::Object(obj.clone())));
                        StatusCode::NO_CONTENT.into_response()
                    }
                    // A missing key is an unhandled KeyError; no body too.
                    _ => failure(&ApiFailure::new(500, "Internal Server Error")),
                }
            }
        }
    };
    finish(resp, delay).await
}

async fn depsgraph(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(mid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/flamenco/managers/{mid}/depsgraph");
    let fault = arrive(
        &shared,
        Endpoint::Depsgraph,
        &method,
        &path,
        &headers,
        &body,
    );
    if method != Method::GET {
        return method_not_allowed();
    }
    let delay = match before(fault).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let resp = {
        let mut data = lock(&shared.data);
        match check_manager(&data, &headers, &mid) {
            Err(f) => failure(&f),
            Ok(()) => {
                let since = match headers.get("x-flamenco-if-updated-since") {
                    None => Ok(None),
                    Some(v) => v
                        .to_str()
                        .ok()
                        .and_then(formats::parse_since)
                        .map(Some)
                        .ok_or(()),
                };
                match since {
                    Err(()) => failure(&ApiFailure::new(500, "Internal Server Error")),
                    Ok(since) => {
                        let bson = headers
                            .get("accept")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|a| a.contains("application/bson"));
                        depsgraph_answer(data.depsgraph(&mid.to_ascii_lowercase(), since), bson)
                    }
                }
            }
        }
    };
    finish(resp, delay).await
}

fn depsgraph_answer(answer: Depsgraph, bson: bool) -> Response {
    match answer {
        Depsgraph::NoJobs => StatusCode::NO_CONTENT.into_response(),
        Depsgraph::NotModified => StatusCode::NOT_MODIFIED.into_response(),
        Depsgraph::Tasks {
            tasks,
            last_updated,
        } => {
            let mut resp = if bson {
                let docs: Vec<Bson> = tasks.iter().map(task_bson).collect();
                let body = bson::encode_document(&[("depsgraph".to_string(), Bson::Array(docs))]);
                let mut r = Response::new(Body::from(body));
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/bson"));
                r
            } else {
                let docs: Vec<Value> = tasks.iter().map(TaskDoc::to_json).collect();
                axum::Json(json!({ "depsgraph": docs })).into_response()
            };
            if let Some(t) = last_updated {
                let h = resp.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&formats::python_isoformat(t)) {
                    h.insert("x-flamenco-last-updated", v);
                }
                h.insert(
                    "x-flamenco-last-updated-format",
                    HeaderValue::from_static("ISO-8601"),
                );
            }
            resp
        }
    }
}

fn task_bson(t: &TaskDoc) -> Bson {
    const IDS: [&str; 5] = ["_id", "job", "manager", "project", "user"];
    let mut fields = Vec::new();
    for (k, v) in &t.fields {
        let value = match (k.as_str(), v) {
            (k, Value::String(s)) if IDS.contains(&k) => Bson::ObjectId(s.clone()),
            ("parents", Value::Array(items)) => Bson::Array(
                items
                    .iter()
                    .map(|p| Bson::ObjectId(p.as_str().unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => Bson::Json(v.clone()),
        };
        fields.push((k.clone(), value));
    }
    fields.push(("_created".into(), Bson::DateTime(t.created)));
    fields.push(("_updated".into(), Bson::DateTime(t.updated)));
    fields.push(("_etag".into(), Bson::Json(Value::String(t.etag.clone()))));
    Bson::Document(fields)
}

async fn task_update_batch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(mid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/flamenco/managers/{mid}/task-update-batch");
    let fault = arrive(
        &shared,
        Endpoint::TaskUpdateBatch,
        &method,
        &path,
        &headers,
        &body,
    );
    if method != Method::POST {
        return method_not_allowed();
    }
    let delay = match before(fault).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let (gzip, never_updates, never_tasks) = {
        let c = lock(&shared.control);
        (
            c.gzip,
            c.never_ack_updates.clone(),
            c.never_ack_tasks.clone(),
        )
    };
    let resp = 'resp: {
        let mut data = lock(&shared.data);
        if let Err(f) = check_manager(&data, &headers, &mid) {
            break 'resp failure(&f);
        }
        let gzipped = headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
        let body: Vec<u8> = match (gzipped, gzip) {
            (true, GzipMode::Refuse(code)) => {
                break 'resp failure(&ApiFailure::new(code, "Unsupported Media Type"))
            }
            (true, GzipMode::Accept) => {
                let mut out = Vec::new();
                if flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut out)
                    .is_err()
                {
                    break 'resp failure(&ApiFailure::new(400, "bad gzip body"));
                }
                out
            }
            _ => body.to_vec(),
        };
        // `request.json`: None when the content type is not JSON (then: no updates);
        // invalid JSON with a JSON content type is a 400.
        let updates: Vec<Value> = if is_json_content(&headers) {
            match serde_json::from_slice::<Value>(&body) {
                Err(_) => {
                    break 'resp failure(&ApiFailure::new(400, "Failed to decode JSON object"))
                }
                Ok(Value::Array(items)) => items,
                Ok(Value::Null) => Vec::new(),
                Ok(_) => break 'resp failure(&ApiFailure::new(500, "Internal Server Error")),
            }
        } else {
            Vec::new()
        };
        let never = |uid: &str, tid: &str| never_updates.contains(uid) || never_tasks.contains(tid);
        match data.apply_batch(&mid.to_ascii_lowercase(), &updates, &never) {
            Ok(answer) => axum::Json(answer.to_json()).into_response(),
            Err(f) => failure(&f),
        }
    };
    finish(resp, delay).await
}

async fn get_task(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(tid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/flamenco/tasks/{tid}");
    let fault = arrive(&shared, Endpoint::Task, &method, &path, &headers, &body);
    if method != Method::GET {
        return method_not_allowed();
    }
    let delay = match before(fault).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let resp = {
        let data = lock(&shared.data);
        let user = basic_auth(&headers)
            .and_then(|(token, password)| data.user_for(&token, &password).cloned());
        match (user, data.tasks.get(&tid.to_ascii_lowercase())) {
            (None, _) => failure(&ApiFailure::new(403, "Forbidden")),
            (Some(_), None) => failure(&ApiFailure::new(404, "Not Found")),
            (Some(user), Some(task)) => {
                let manages = data
                    .managers
                    .get(task.manager())
                    .is_some_and(|m| m.service_account == user);
                if !manages {
                    failure(&ApiFailure::new(403, "Forbidden"))
                } else {
                    let etag = HeaderValue::from_str(&format!("\"{}\"", task.etag))
                        .unwrap_or_else(|_| HeaderValue::from_static("\"\""));
                    let matches = headers
                        .get("if-none-match")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.trim().trim_matches('"'))
                        .is_some_and(|v| v == task.etag);
                    let mut resp = if matches {
                        StatusCode::NOT_MODIFIED.into_response()
                    } else {
                        let mut r = axum::Json(task.to_json()).into_response();
                        if let Ok(v) = HeaderValue::from_str(&formats::rfc1123(task.updated)) {
                            r.headers_mut().insert("last-modified", v);
                        }
                        r
                    };
                    resp.headers_mut().insert("etag", etag);
                    resp
                }
            }
        }
    };
    finish(resp, delay).await
}
