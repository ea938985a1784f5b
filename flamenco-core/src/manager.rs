//! The [`Manager`]: the SDK facade over a store, a configuration and a clock.
//!
//! It holds the worker protocol's logic as plain async functions (the HTTP layer only
//! translates), and the operator's SDK surface: enqueue and list tasks, list workers,
//! request worker status changes. The daemon, the CLI, the tests and the examples all go
//! through it.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::auth::{self, SecretCache};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::model::{
    worker_status, ObjectId, RequestedStatus, Task, TaskStatus, TaskUpdate, Worker,
};
use crate::protocol::{
    Invalid, MayIRunAnswer, OutputProduced, RegisterWorker, SignOnRequest, WorkerTaskUpdate,
    ACKNOWLEDGEABLE_STATUSES,
};
use crate::store::sqlite::SqliteStore;
use crate::store::{ClaimRequest, Seen, SignOn, Store, StoreError, TaskQuery};
use crate::updates::{self, MayIRun, ReturnOutcome, WorkerUpdateOutcome};
use crate::variables::Substitutions;

/// How many `/output-produced` reports are remembered.
const OUTPUTS_KEPT: usize = 100;

/// Why a protocol or SDK call failed. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: missing or wrong worker credentials.
    #[error("unauthorized")]
    Unauthorized,
    /// 403: e.g. a wrong registration secret.
    #[error("{0}")]
    Forbidden(String),
    /// 400: the request decoded but is not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 406: the worker supports no task types.
    #[error("{0}")]
    NotAcceptable(String),
    /// 409
    #[error("{0}")]
    Conflict(String),
    /// 422
    #[error("{0}")]
    Unprocessable(String),
    /// 503 for `Unavailable`, 500 otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 500: something that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::BadRequest(e.0)
    }
}

/// Opening a manager failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unsupported(String),
}

/// Where a request came from, for "seen" tracking (v2 §8.4).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// Remote host without the port.
    pub host: String,
    /// Remote `host:port`, as v2 stored at registration.
    pub host_port: String,
    /// User-Agent header.
    pub user_agent: String,
}

/// The answer to `POST /task`.
#[derive(Clone, Debug)]
pub enum NextTask {
    /// 200: this task, with variables substituted for the worker's platform.
    Task(Box<Task>),
    /// 204: nothing to do.
    NoTask,
    /// 423: the worker should change state first (2.1+ workers only).
    StatusRequested(RequestedStatus),
}

/// One `/output-produced` report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProducedOutput {
    pub worker_id: ObjectId,
    pub paths: Vec<String>,
    pub received: DateTime<Utc>,
}

/// The Manager: store + config + clock + in-memory caches.
pub struct Manager {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    substitutions: Substitutions,
    secrets: Arc<SecretCache>,
    outputs: Mutex<VecDeque<ProducedOutput>>,
}

impl Manager {
    /// Open the store the configuration names (the embedded store in `data_dir` unless
    /// `database_url` is set) with the system clock.
    pub async fn open(config: Config) -> Result<Manager, OpenError> {
        let store: Arc<dyn Store> = if config.database_url.trim().is_empty() {
            let dir: PathBuf = config.data_dir.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
                .await
                .map_err(|e| OpenError::Store(StoreError::Other(e.to_string())))??;
            Arc::new(store)
        } else {
            return Err(OpenError::Unsupported(format!(
                "database_url {:?} is not supported by this build; remove it to use the embedded store in data_dir",
                config.database_url
            )));
        };
        Ok(Manager::with_store(config, store, Arc::new(SystemClock)))
    }

    /// A manager over an already opened store and a given clock (tests, embedding).
    pub fn with_store(config: Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Manager {
        let substitutions = Substitutions::new(&config);
        Manager {
            config: Arc::new(config),
            store,
            clock,
            substitutions,
            secrets: Arc::new(SecretCache::new()),
            outputs: Mutex::new(VecDeque::new()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Close the store cleanly.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.store.close().await
    }

    fn seen(&self, peer: &Peer, mark_awake: bool) -> Seen {
        Seen {
            now: self.now(),
            address: peer.host.clone(),
            software: peer.user_agent.clone(),
            mark_awake,
        }
    }

    // ------------------------------------------------------------------ worker protocol

    /// `POST /register-worker`. `authorization` is the request's Authorization header,
    /// checked when `worker_registration_secret` is configured.
    pub async fn register_worker(
        &self,
        req: RegisterWorker,
        peer: &Peer,
        authorization: Option<&str>,
    ) -> Result<Worker, ApiError> {
        if !self.config.worker_registration_secret.is_empty() {
            auth::verify_registration_token(
                authorization,
                &self.config.worker_registration_secret,
                self.now(),
            )
            .map_err(|e| {
                tracing::warn!(address = %peer.host_port, "worker registration refused: {e}");
                ApiError::Forbidden(format!(
                    "registration refused: {e}; the worker's worker_registration_secret must match the Manager's"
                ))
            })?;
        }
        req.validate()?;
        let secret = req.secret.clone();
        let hashed_secret = tokio::task::spawn_blocking(move || auth::hash_secret(&secret))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(format!("unable to hash the worker secret: {e}")))?;
        let worker = Worker {
            id: ObjectId::new(),
            hashed_secret,
            nickname: req.nickname,
            address: peer.host_port.clone(),
            status: worker_status::REGISTERED.to_string(),
            platform: req.platform,
            time_cost: 0,
            supported_task_types: req.supported_task_types,
            software: peer.user_agent.clone(),
            current_task: None,
            last_activity: None,
            current_task_status: String::new(),
            current_task_updated: None,
            status_requested: None,
        };
        self.store.insert_worker(&worker).await?;
        tracing::info!(worker = %worker.id, nickname = %worker.nickname, platform = %worker.platform, "registered worker");
        Ok(worker)
    }

    /// HTTP Basic credentials → the worker. The slow hash is checked once per worker and
    /// secret; later requests compare a keyed digest kept in memory.
    pub async fn authenticate(&self, worker_id: &str, secret: &str) -> Result<Worker, ApiError> {
        let id = ObjectId::parse(worker_id).map_err(|_| ApiError::Unauthorized)?;
        let worker = self
            .store
            .get_worker(id)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let ok = match self.secrets.check_fast(id, secret, &worker.hashed_secret) {
            Some(ok) => ok,
            None => {
                let secrets = self.secrets.clone();
                let secret = secret.to_string();
                let hash = worker.hashed_secret.clone();
                tokio::task::spawn_blocking(move || {
                    secrets.verify_slow_and_cache(id, &secret, &hash)
                })
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
            }
        };
        if ok {
            Ok(worker)
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// `POST /sign-on`.
    pub async fn sign_on(
        &self,
        worker: &Worker,
        req: SignOnRequest,
        peer: &Peer,
    ) -> Result<(), ApiError> {
        req.validate()?;
        let sign_on = SignOn {
            nickname: req.nickname.filter(|n| !n.is_empty()),
            supported_task_types: req.supported_task_types.filter(|t| !t.is_empty()),
        };
        if !self
            .store
            .worker_sign_on(worker.id, &sign_on, &self.seen(peer, true))
            .await?
        {
            return Err(ApiError::Unauthorized);
        }
        Ok(())
    }

    /// `POST /sign-off`: re-queue the worker's active tasks, mark it `down`.
    pub async fn sign_off(&self, worker: &Worker) -> Result<Vec<ObjectId>, ApiError> {
        let requeued = self.store.sign_off_worker(worker.id, self.now()).await?;
        if !requeued.is_empty() {
            tracing::info!(worker = %worker.identifier(), tasks = requeued.len(), "worker signed off; re-queued its active tasks");
        }
        Ok(requeued)
    }

    /// `POST /task`: the scheduler (v2 §6).
    pub async fn next_task(&self, worker: &Worker, peer: &Peer) -> Result<NextTask, ApiError> {
        self.store
            .worker_seen(worker.id, &self.seen(peer, true))
            .await?;
        if let Some(req) = worker.status_requested {
            if worker.supports_status_requests() && req != RequestedStatus::Awake {
                return Ok(NextTask::StatusRequested(req));
            }
        }
        if worker.supported_task_types.is_empty() {
            return Err(ApiError::NotAcceptable(
                "You do not support any task types.".into(),
            ));
        }
        let claim = ClaimRequest {
            worker_id: worker.id,
            nickname: worker.nickname.clone(),
            ident: worker.identifier(),
            task_types: worker.supported_task_types.clone(),
            now: self.now(),
        };
        let Some(claimed) = self.store.claim_task(&claim).await? else {
            return Ok(NextTask::NoTask);
        };
        let mut task = claimed.task;
        self.substitutions
            .apply(&worker.platform, &mut task.commands);
        tracing::debug!(task = %task.id, worker = %claim.ident, again = claimed.already_assigned, "assigned task");
        Ok(NextTask::Task(Box::new(task)))
    }

    /// The task could not be delivered to the worker (the connection broke): put it back
    /// (v2 §6.4 step 6).
    pub async fn unassign_after_send_failure(
        &self,
        worker: &Worker,
        task_id: ObjectId,
        error: &str,
    ) -> Result<(), ApiError> {
        let update = updates::unassign_update(task_id, &worker.identifier(), error, self.now());
        self.store.unassign_task(worker.id, update).await?;
        tracing::warn!(task = %task_id, worker = %worker.identifier(), "task could not be sent to the worker; re-queued: {error}");
        Ok(())
    }

    /// `POST /tasks/{id}/update`.
    pub async fn task_update(
        &self,
        worker: &Worker,
        task_id: ObjectId,
        body: WorkerTaskUpdate,
        peer: &Peer,
    ) -> Result<(), ApiError> {
        self.store
            .worker_seen(worker.id, &self.seen(peer, true))
            .await?;
        let update = body.into_update(task_id, &worker.identifier(), self.now())?;
        match self.store.apply_worker_update(worker.id, update).await? {
            WorkerUpdateOutcome::Applied => Ok(()),
            WorkerUpdateOutcome::NotFound => {
                Err(ApiError::NotFound(format!("Task {task_id} is unknown.")))
            }
            WorkerUpdateOutcome::AssignedToOther => Err(ApiError::Conflict(format!(
                "Task {task_id} is assigned to another worker."
            ))),
            WorkerUpdateOutcome::NotRunnable(status) => Err(ApiError::Conflict(format!(
                "Task {task_id} has status {status}."
            ))),
        }
    }

    /// `GET /may-i-run/{id}`.
    pub async fn may_i_run(
        &self,
        worker: &Worker,
        task_id: ObjectId,
        peer: &Peer,
    ) -> Result<MayIRunAnswer, ApiError> {
        self.store
            .worker_seen(worker.id, &self.seen(peer, true))
            .await?;
        let requested = worker
            .status_requested
            .filter(|r| *r != RequestedStatus::Awake && worker.supports_status_requests());
        if let Some(req) = requested {
            return Ok(MayIRunAnswer {
                may_keep_running: false,
                reason: Some(format!("worker status change requested: {req}")),
                status_requested: Some(req),
            });
        }
        let decision = self.store.may_i_run(task_id, worker.id, self.now()).await?;
        Ok(MayIRunAnswer {
            may_keep_running: decision == MayIRun::Yes,
            reason: decision.reason(task_id),
            status_requested: None,
        })
    }

    /// `POST /tasks/{id}/return` (2.2+ workers).
    pub async fn return_task(&self, worker: &Worker, task_id: ObjectId) -> Result<(), ApiError> {
        match self
            .store
            .return_task(task_id, worker.id, &worker.identifier(), self.now())
            .await?
        {
            ReturnOutcome::Requeued | ReturnOutcome::Canceled | ReturnOutcome::Unchanged => Ok(()),
            ReturnOutcome::NotFound => {
                Err(ApiError::NotFound(format!("Task {task_id} is unknown.")))
            }
            ReturnOutcome::AssignedToOther => Err(ApiError::Conflict(format!(
                "Task {task_id} is assigned to another worker."
            ))),
        }
    }

    /// `POST /output-produced`: remember the paths (the latest-image pipeline uses them).
    pub fn output_produced(&self, worker: &Worker, body: OutputProduced) -> Result<(), ApiError> {
        body.validate().map_err(|e| ApiError::Unprocessable(e.0))?;
        let mut outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        if outputs.len() >= OUTPUTS_KEPT {
            outputs.pop_front();
        }
        outputs.push_back(ProducedOutput {
            worker_id: worker.id,
            paths: body.paths,
            received: self.now(),
        });
        Ok(())
    }

    /// The most recent `/output-produced` reports, newest last.
    pub fn produced_outputs(&self) -> Vec<ProducedOutput> {
        let outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        outputs.iter().cloned().collect()
    }

    /// `GET /status-change`: the pending request, if any.
    pub async fn status_change(
        &self,
        worker: &Worker,
        peer: &Peer,
    ) -> Result<Option<RequestedStatus>, ApiError> {
        self.store
            .worker_seen(worker.id, &self.seen(peer, false))
            .await?;
        Ok(worker.status_requested)
    }

    /// `POST /ack-status-change/{status}`.
    pub async fn ack_status_change(&self, worker: &Worker, status: &str) -> Result<(), ApiError> {
        if !ACKNOWLEDGEABLE_STATUSES.contains(&status) {
            return Err(ApiError::BadRequest(format!(
                "unknown worker status {status:?}; expected one of {}",
                ACKNOWLEDGEABLE_STATUSES.join(", ")
            )));
        }
        self.store
            .ack_worker_status(worker.id, status, self.now())
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------------ SDK surface

    /// Add tasks to the queue. Tasks without parents-in-store or with missing fields are
    /// taken as given; statuses other than `queued`/`claimed-by-manager` are allowed.
    pub async fn enqueue_tasks(&self, tasks: Vec<Task>) -> Result<Vec<ObjectId>, ApiError> {
        let now = self.now();
        let tasks: Vec<Task> = tasks
            .into_iter()
            .map(|mut t| {
                t.last_updated = Some(now);
                t
            })
            .collect();
        self.store.insert_tasks(&tasks).await?;
        Ok(tasks.iter().map(|t| t.id).collect())
    }

    pub async fn get_task(&self, id: ObjectId) -> Result<Option<Task>, ApiError> {
        Ok(self.store.get_task(id).await?)
    }

    pub async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<Task>, ApiError> {
        Ok(self.store.list_tasks(query).await?)
    }

    /// Task counts per status.
    pub async fn task_counts(&self) -> Result<BTreeMap<String, u64>, ApiError> {
        Ok(self.store.count_tasks_by_status().await?)
    }

    pub async fn get_worker(&self, id: ObjectId) -> Result<Option<Worker>, ApiError> {
        Ok(self.store.get_worker(id).await?)
    }

    pub async fn list_workers(&self) -> Result<Vec<Worker>, ApiError> {
        Ok(self.store.list_workers().await?)
    }

    /// Ask a worker to go to sleep, wake up or shut down (`None` withdraws the request).
    /// 2.0.x workers are never sent the request; the call still records it.
    pub async fn request_worker_status(
        &self,
        id: ObjectId,
        requested: Option<RequestedStatus>,
    ) -> Result<(), ApiError> {
        if self
            .store
            .set_worker_status_requested(id, requested)
            .await?
        {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("worker {id} is unknown")))
        }
    }

    /// Number of task updates waiting in the outbox.
    pub async fn outbox_len(&self) -> Result<u64, ApiError> {
        Ok(self.store.outbox_len().await?)
    }

    /// The oldest `limit` task updates in the outbox.
    pub async fn outbox_peek(&self, limit: usize) -> Result<Vec<TaskUpdate>, ApiError> {
        Ok(self.store.outbox_peek(limit).await?)
    }

    /// Tasks with one of these statuses, oldest first (convenience for the SDK).
    pub async fn tasks_with_status(&self, statuses: &[TaskStatus]) -> Result<Vec<Task>, ApiError> {
        self.list_tasks(&TaskQuery {
            statuses: statuses.to_vec(),
            ..TaskQuery::default()
        })
        .await
    }
}
