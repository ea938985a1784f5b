//! The [`Manager`]: the SDK facade over a store, a configuration and a clock.
//!
//! It holds the worker protocol's logic as plain async functions (the HTTP layer only
//! translates), and the operator's SDK surface: enqueue and list tasks, list workers,
//! request worker status changes. The daemon, the CLI, the tests and the examples all go
//! through it.

mod bulk;
mod retries;
mod tags;
mod worker_auth;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::auth::{self, AuthGuard, SecretCache};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::jobs::JobTypes;
use crate::latest_image::{LatestImageInfo, LatestImages};
use crate::metrics::Metrics;
use crate::model::{
    worker_status, ObjectId, RequestedStatus, Task, TaskStatus, TaskUpdate, Worker,
};
use crate::protocol::{
    Invalid, MayIRunAnswer, OutputProduced, RegisterWorker, SignOnRequest, WorkerTaskUpdate,
    ACKNOWLEDGEABLE_STATUSES,
};
use crate::seen::{PingTracker, SeenTracker};
use crate::store::sqlite::SqliteStore;
use crate::store::{ClaimRequest, Claimed, Seen, SignOn, Store, StoreError, TaskPing, TaskQuery};
use crate::updates::{self, MayIRun, ReturnOutcome, WorkerUpdateOutcome};
use crate::upstream::refetch::Revalidation;
use crate::upstream::{Upstream, UpstreamOptions, UpstreamStatus};
use crate::variables::Substitutions;
use crate::worker_cache::WorkerCache;

/// How many `/output-produced` reports are remembered.
const OUTPUTS_KEPT: usize = 100;

/// How many bytes of paths the remembered `/output-produced` reports hold at most (of a
/// long report, only its newest paths are kept).
const OUTPUTS_MAX_BYTES: usize = 256 * 1024;

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
    /// 429: too many failed or unverified logins, or no bcrypt slot in time
    /// (`auth::guard`); `retry_after` goes into the `Retry-After` header.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    /// 400: one field of a request is not acceptable; `field` names it (`job_type`,
    /// `settings.frames`, …) and `message` says why.
    #[error("{message}")]
    InvalidField { field: String, message: String },
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
    /// [`Manager::open_existing`] found no store where the configuration points.
    #[error("{0}")]
    NoStore(String),
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
    /// bcrypt slots and unverified-login limits (see [`crate::auth::guard`]).
    auth_guard: AuthGuard,
    outputs: Mutex<VecDeque<ProducedOutput>>,
    seen_tracker: SeenTracker,
    /// may-i-run pings not written yet (see [`crate::seen`]).
    ping_tracker: PingTracker,
    /// Workers read in the last second (see [`crate::worker_cache`]).
    worker_cache: WorkerCache,
    /// The Flamenco Server connection, in upstream mode.
    upstream: Option<Arc<Upstream>>,
    /// The job types jobs can be submitted with (standalone mode).
    job_types: Mutex<JobTypes>,
    /// The last-rendered image pipeline (see [`crate::latest_image`]), made on first use.
    latest_images: std::sync::OnceLock<Arc<LatestImages>>,
    /// Prometheus metrics (see [`crate::metrics`]).
    metrics: Metrics,
    /// Notices of stored log lines, for followers (see [`crate::task_log`]).
    pub(crate) log_events: crate::task_log::LogEvents,
    /// Whether this Manager leads the site (see [`crate::leader`]).
    leadership: crate::leader::Leadership,
}

/// How many times one `/task` request may find its reserved task changed by the Server
/// before giving up (v2 allowed 1000, with a lock held).
const MAX_REVALIDATIONS: usize = 100;

impl Manager {
    /// Open the store the configuration names (the embedded store in `data_dir` unless
    /// `database_url` is set to a `mongodb://` or `mongodb+srv://` URL) with the system
    /// clock. An unreachable MongoDB is an error after about 2 s. `database_synchronous`
    /// applies to the embedded store only (MongoDB's durability is its write concern).
    pub async fn open(config: Config) -> Result<Manager, OpenError> {
        Self::open_mode(config, true).await
    }

    /// Like [`Manager::open`], but only a store that exists: the embedded database file in
    /// `data_dir`, or a MongoDB database that holds a Manager's collections. Otherwise
    /// [`OpenError::NoStore`], naming where it looked, and nothing is created. For tools
    /// that must not work on a new, empty store by mistake (the CLI's commands).
    pub async fn open_existing(config: Config) -> Result<Manager, OpenError> {
        Self::open_mode(config, false).await
    }

    async fn open_mode(config: Config, create: bool) -> Result<Manager, OpenError> {
        let url = config.database_url.trim();
        let store: Arc<dyn Store> = if url.is_empty() {
            let dir: PathBuf = config.data_dir.clone();
            let file = dir.join(crate::store::sqlite::DATABASE_FILE);
            if !create && !file.is_file() {
                let shown = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
                return Err(OpenError::NoStore(format!(
                    "there is no Manager database at {} (data_dir {})",
                    shown.display(),
                    dir.display()
                )));
            }
            let options = crate::store::sqlite::SqliteOptions {
                synchronous: config.database_synchronous,
                create,
                ..Default::default()
            };
            let store = tokio::task::spawn_blocking(move || SqliteStore::open_with(&dir, options))
                .await
                .map_err(|e| OpenError::Store(StoreError::Other(e.to_string())))??;
            Arc::new(store)
        } else if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
            if config.database_synchronous != crate::store::sqlite::Synchronous::Normal {
                tracing::warn!(
                    "database_synchronous applies to the embedded store only; it is ignored with \
                     database_url (MongoDB's durability is set by the URL's write concern, e.g. w=majority&journal=true)"
                );
            }
            if create {
                Arc::new(crate::store::mongo::MongoStore::connect(url).await?)
            } else {
                match crate::store::mongo::MongoStore::connect_existing(url).await? {
                    Some(store) => Arc::new(store),
                    None => {
                        return Err(OpenError::NoStore(format!(
                            "the MongoDB database at {} holds no Manager data (none of its collections)",
                            crate::store::mongo::redact(url)
                        )))
                    }
                }
            }
        } else {
            return Err(OpenError::Unsupported(
                config.check_database_url().err().unwrap_or_default(),
            ));
        };
        Manager::try_with_store(config, store, Arc::new(SystemClock))
    }

    /// Like [`Manager::with_store`], but a bad upstream configuration (`flamenco`,
    /// `manager_id`, `manager_secret`) is an error instead of a logged one.
    pub fn try_with_store(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Manager, OpenError> {
        let options = UpstreamOptions::from_config(&config);
        Self::with_upstream_options(config, store, clock, options)
    }

    /// A manager whose upstream connection (when `flamenco` is configured) uses these
    /// options instead of the defaults (tests, embedding).
    pub fn with_upstream_options(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        options: UpstreamOptions,
    ) -> Result<Manager, OpenError> {
        let upstream = if config.is_upstream() {
            let up = Upstream::new(&config, options)
                .map_err(|e| OpenError::Unsupported(format!("upstream mode: {e}")))?;
            Some(Arc::new(up))
        } else {
            None
        };
        let mut manager = Manager::with_store(Config::default(), store, clock);
        manager.substitutions = Substitutions::new(&config);
        manager
            .store
            .set_task_log_limits(crate::store::TaskLogLimits {
                max_bytes: config.task_log_max_bytes,
            });
        manager
            .store
            .set_retry_policy(crate::jobs::retry::RetryPolicy::from_config(&config));
        manager.store.set_outbox_log_text(config.is_upstream());
        manager.config = Arc::new(config);
        if let Some(up) = &upstream {
            up.client().attach_metrics(manager.metrics.clone());
        }
        manager.upstream = upstream;
        Ok(manager)
    }

    /// A manager over an already opened store and a given clock (tests, embedding).
    pub fn with_store(config: Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Manager {
        let substitutions = Substitutions::new(&config);
        let metrics = Metrics::new();
        store.set_task_log_limits(crate::store::TaskLogLimits {
            max_bytes: config.task_log_max_bytes,
        });
        store.set_retry_policy(crate::jobs::retry::RetryPolicy::from_config(&config));
        store.set_outbox_log_text(config.is_upstream());
        let store: Arc<dyn Store> = Arc::new(crate::store::instrumented::InstrumentedStore::new(
            store,
            metrics.clone(),
        ));
        Manager {
            config: Arc::new(config),
            store,
            clock,
            substitutions,
            secrets: Arc::new(SecretCache::new()),
            auth_guard: AuthGuard::default(),
            outputs: Mutex::new(VecDeque::new()),
            seen_tracker: SeenTracker::default(),
            ping_tracker: PingTracker::default(),
            worker_cache: WorkerCache::default(),
            upstream: None,
            job_types: Mutex::new(JobTypes::builtin()),
            latest_images: std::sync::OnceLock::new(),
            metrics,
            log_events: Default::default(),
            leadership: Default::default(),
        }
        .with_upstream_or_log()
    }

    /// `with_store` cannot fail: an upstream configuration that does not work is logged,
    /// and the Manager runs without one.
    fn with_upstream_or_log(mut self) -> Manager {
        if self.config.is_upstream() {
            match Upstream::new(&self.config, UpstreamOptions::from_config(&self.config)) {
                Ok(up) => {
                    up.client().attach_metrics(self.metrics.clone());
                    self.upstream = Some(Arc::new(up));
                }
                Err(e) => tracing::error!("upstream mode is off: {e}"),
            }
        }
        self
    }

    /// Whether this Manager leads the site, and who does (see [`crate::leader`]).
    pub fn leadership(&self) -> &crate::leader::Leadership {
        &self.leadership
    }

    /// This Manager's name in the leader lease: `instance_name`, or one made up for this
    /// process (host name, process id, random suffix).
    pub fn instance_name(&self) -> &str {
        match self.config.instance_name.trim() {
            "" => self.leadership.generated_name(),
            name => name,
        }
    }

    /// This Manager's name in the leader lease: [`Manager::instance_name`] and this
    /// process's random token, `<instance name>#<token>` ([`crate::leader::lease_holder`]).
    pub fn lease_holder(&self) -> String {
        crate::leader::lease_holder(self.instance_name(), self.leadership.token())
    }

    /// The Prometheus metrics of this Manager (see [`crate::metrics::scrape`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Flamenco Server connection (upstream mode), if any.
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.upstream.as_ref()
    }

    /// The upstream connection's state with fresh outbox counts; `None` when standalone.
    pub async fn upstream_status(&self) -> Option<UpstreamStatus> {
        let up = self.upstream.as_ref()?;
        let mut status = up.status();
        if let Ok(n) = self.store.outbox_len().await {
            status.backlog = n;
        }
        if let Ok(n) = self.store.outbox_set_aside_len().await {
            status.set_aside = n;
        }
        Some(status)
    }

    /// `/kick`: ask for a task download now, without waiting for it (standalone: nothing).
    pub fn kick_download(&self) {
        if let Some(up) = &self.upstream {
            up.kick_download();
        }
    }

    /// The job-type registry (see `crate::jobs`).
    pub(crate) fn job_type_registry(&self) -> &Mutex<JobTypes> {
        &self.job_types
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

    /// Close the store cleanly (pending "seen" times are written first).
    pub async fn close(&self) -> Result<(), StoreError> {
        if let Some(images) = self.latest_images.get() {
            images.close();
        }
        let flushed = self.flush_seen().await;
        let closed = self.store.close().await;
        // The store's own error first: on a full disk both fail, and the store's says
        // where the disk is and that nothing acknowledged is lost.
        closed.and(flushed)
    }

    /// Record contact from a worker: written at once when it changes something visible,
    /// else kept for the next [`Manager::flush_seen`] (see [`crate::seen`]).
    async fn mark_seen(
        &self,
        worker: &Worker,
        peer: &Peer,
        mark_awake: bool,
    ) -> Result<(), ApiError> {
        let seen = self.seen(peer, mark_awake);
        if SeenTracker::needs_write_now(worker, &seen) {
            self.seen_tracker.forget(worker.id);
            self.store.worker_seen(worker.id, &seen).await?;
            self.worker_cache.forget(worker.id);
            if seen.mark_awake && worker_status::woken_by_contact(&worker.status) {
                self.enqueue_worker_status(worker, worker_status::AWAKE)
                    .await;
            }
        } else {
            self.seen_tracker.record(worker.id, seen);
        }
        Ok(())
    }

    /// Drop every worker from the in-memory cache (after a bulk change in the store).
    pub(crate) fn forget_cached_workers(&self) {
        self.worker_cache.clear();
    }

    /// Write the pending "seen" times of workers and may-i-run pings to the store.
    /// Task reports of accepted updates go with them ([`crate::seen`]). One store call.
    pub async fn flush_seen(&self) -> Result<(), StoreError> {
        let seen = self.seen_tracker.take();
        let pings = self.ping_tracker.take();
        if seen.is_empty() && pings.is_empty() {
            return Ok(());
        }
        self.store.write_deferred(&seen, &pings).await
    }

    fn seen(&self, peer: &Peer, mark_awake: bool) -> Seen {
        Seen {
            now: self.now(),
            address: peer.host.clone(),
            // Registration and sign-on refuse a longer User-Agent (400); other requests
            // record at most the limit.
            software: crate::protocol::bounded_software(&peer.user_agent).to_string(),
            mark_awake,
            task_report: None,
            current_task: None,
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
        crate::protocol::check_software(&peer.user_agent)?;
        let stored = self.hash_new_secret(&req.secret).await?;
        let worker = Worker {
            id: ObjectId::new(),
            hashed_secret: stored.hashed_secret,
            secret_sha256: stored.secret_sha256,
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
            tags: Vec::new(),
        };
        self.store.insert_worker(&worker).await?;
        tracing::info!(worker = %worker.id, nickname = %worker.nickname, platform = %worker.platform, "registered worker");
        Ok(worker)
    }

    /// `POST /sign-on`.
    pub async fn sign_on(
        &self,
        worker: &Worker,
        req: SignOnRequest,
        peer: &Peer,
    ) -> Result<(), ApiError> {
        req.validate()?;
        crate::protocol::check_software(&peer.user_agent)?;
        let sign_on = SignOn {
            nickname: req.nickname.filter(|n| !n.is_empty()),
            supported_task_types: req.supported_task_types.filter(|t| !t.is_empty()),
        };
        // Sign-on removes `current_task`: a claim's not yet written must not set it again.
        self.seen_tracker.signed_on(worker.id);
        let signed_on = self
            .store
            .worker_sign_on(worker.id, &sign_on, &self.seen(peer, true))
            .await?;
        self.worker_cache.forget(worker.id);
        if !signed_on {
            return Err(ApiError::Unauthorized);
        }
        self.enqueue_worker_status(worker, worker_status::AWAKE)
            .await;
        Ok(())
    }

    /// `POST /sign-off`: re-queue the worker's active tasks, mark it `down`.
    pub async fn sign_off(&self, worker: &Worker) -> Result<Vec<ObjectId>, ApiError> {
        if !self.config.is_upstream() {
            self.cancel_tasks_worker_stopped(worker).await?;
        }
        let requeued = self.store.sign_off_worker(worker.id, self.now()).await?;
        self.worker_cache.forget(worker.id);
        self.enqueue_worker_status(worker, worker_status::DOWN)
            .await;
        if !requeued.is_empty() {
            tracing::info!(worker = %worker.identifier(), tasks = requeued.len(), "worker signed off; re-queued its active tasks");
        }
        Ok(requeued)
    }

    /// `POST /task`: the scheduler (v2 §6).
    pub async fn next_task(&self, worker: &Worker, peer: &Peer) -> Result<NextTask, ApiError> {
        self.mark_seen(worker, peer, true).await?;
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
            // Upstream mode: the Server's tasks carry no tag, so the claim looks at
            // untagged tasks only (one walk, whatever the worker's tags).
            worker_tags: if self.upstream.is_some() {
                Vec::new()
            } else {
                worker.tags.clone()
            },
            now: self.now(),
        };
        let claimed = match &self.upstream {
            Some(up) => self.claim_revalidated(up, claim.clone()).await?,
            None if self.config.is_upstream() => self.store.claim_task(&claim).await?,
            None => {
                // Standalone: the worker stopped its cancel-requested tasks; canceling
                // them and the claim are one store operation (one read on MongoDB).
                let outcome = self.store.claim_after_stops(&claim).await?;
                for id in &outcome.canceled {
                    tracing::info!(task = %id, worker = %claim.ident, "the worker stopped its cancel-requested task; canceled");
                }
                outcome.claimed
            }
        };
        self.metrics.record_claim(claimed.as_ref());
        let Some(claimed) = claimed else {
            if let Some(up) = &self.upstream {
                up.kick_for_empty_queue(self.config.download_task_recheck_throttle);
            }
            return Ok(NextTask::NoTask);
        };
        // The worker's `current_task`, written with the next flush (`crate::seen`).
        self.seen_tracker
            .assign(worker.id, claimed.task.id, claim.now);
        let mut task = claimed.task;
        self.substitutions
            .apply(&worker.platform, &mut task.commands);
        tracing::debug!(task = %task.id, worker = %claim.ident, again = claimed.already_assigned, "assigned task");
        Ok(NextTask::Task(Box::new(task)))
    }

    /// Upstream mode's claim (v2 §5.4 without its lock): reserve the best task, ask the
    /// Server whether it changed (no lock held, short timeout), then confirm the
    /// reservation, or release it with the Server's version and choose again.
    async fn claim_revalidated(
        &self,
        up: &Upstream,
        mut claim: ClaimRequest,
    ) -> Result<Option<Claimed>, ApiError> {
        for _ in 0..MAX_REVALIDATIONS {
            claim.now = self.now();
            let Some(reserved) = self.store.reserve_task(&claim).await? else {
                return Ok(None);
            };
            let id = reserved.task.id;
            match up.revalidate(&reserved.task, self.now()).await {
                Revalidation::Unchanged => {
                    if let Some(mut confirmed) = self.store.confirm_claim(id, &claim).await? {
                        confirmed.already_assigned = reserved.already_assigned;
                        return Ok(Some(confirmed));
                    }
                    // Changed meanwhile (e.g. canceled by a push answer): choose again.
                }
                Revalidation::Changed(verdict) => {
                    self.store
                        .release_claim(id, claim.worker_id, &verdict, self.now())
                        .await?;
                }
            }
        }
        tracing::error!(worker = %claim.ident, "the Flamenco Server changed every task offered to the worker, {MAX_REVALIDATIONS} times in a row");
        Err(ApiError::Internal(format!(
            "the Flamenco Server changed every task chosen for this worker ({MAX_REVALIDATIONS} in a row); try again"
        )))
    }

    /// The task could not be delivered to the worker (the connection broke): put it back
    /// (v2 §6.4 step 6).
    pub async fn unassign_after_send_failure(
        &self,
        worker: &Worker,
        task_id: ObjectId,
        error: &str,
    ) -> Result<(), ApiError> {
        self.seen_tracker.unassign(worker.id, task_id);
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
        self.mark_seen(worker, peer, true).await?;
        let update = body.into_update(task_id, &worker.identifier(), self.now())?;
        let has_log = !update.log.is_empty();
        let (at, reported) = (update.received_on_manager, update.task_status.clone());
        let outcome = self.store.apply_worker_update(worker.id, update).await?;
        self.metrics.record_task_update(&outcome);
        if outcome.is_accepted() {
            // Shown on the worker after the next flush (`crate::seen`); last words keep
            // the worker's reported status as it was.
            let status = match outcome {
                WorkerUpdateOutcome::LastWords(_) => None,
                _ => reported.map(|s| s.as_str().to_string()),
            };
            self.seen_tracker
                .report(worker.id, crate::store::TaskReport { at, status });
        }
        if has_log && outcome.is_accepted() {
            self.log_events.notify(task_id);
        }
        match outcome {
            WorkerUpdateOutcome::Applied | WorkerUpdateOutcome::LastWords(_) => Ok(()),
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
        self.mark_seen(worker, peer, true).await?;
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
        // The common case, answered from a read: the worker's own runnable task. The ping
        // is written with the next flush (see `crate::seen`).
        let now = self.now();
        let state = self.store.get_task_state(task_id).await?;
        let decision = match state {
            Some(task)
                if task.worker_id == Some(worker.id)
                    && MayIRun::decide_on(Some(&task), worker.id) == MayIRun::Yes =>
            {
                self.ping_tracker.record(TaskPing {
                    task_id,
                    worker_id: worker.id,
                    at: now,
                });
                MayIRun::Yes
            }
            _ => self.store.may_i_run(task_id, worker.id, now).await?,
        };
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

    /// `POST /output-produced`: queue the paths for the latest-image pipeline (never waits,
    /// never touches the files; one log line per report) and remember the report, within
    /// [`OUTPUTS_KEPT`] reports and [`OUTPUTS_MAX_BYTES`] bytes of paths.
    pub fn output_produced(&self, worker: &Worker, body: OutputProduced) -> Result<(), ApiError> {
        body.validate().map_err(|e| ApiError::Unprocessable(e.0))?;
        self.latest_images()
            .submit_report(&worker.identifier(), &body.paths);
        // Keep the newest paths of a long report: at most as many as the image queue holds,
        // and within the byte budget.
        let mut paths = body.paths;
        let mut keep = 0;
        let mut bytes = 0;
        for p in paths.iter().rev().take(crate::latest_image::QUEUE_CAPACITY) {
            if bytes + p.len() > OUTPUTS_MAX_BYTES {
                break;
            }
            bytes += p.len();
            keep += 1;
        }
        paths.drain(..paths.len() - keep);
        let mut outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        let kept_bytes = |o: &VecDeque<ProducedOutput>| -> usize {
            o.iter().flat_map(|r| &r.paths).map(String::len).sum()
        };
        let mut total = kept_bytes(&outputs);
        while !outputs.is_empty()
            && (outputs.len() >= OUTPUTS_KEPT || total + bytes > OUTPUTS_MAX_BYTES)
        {
            if let Some(old) = outputs.pop_front() {
                total -= old.paths.iter().map(String::len).sum::<usize>();
            }
        }
        outputs.push_back(ProducedOutput {
            worker_id: worker.id,
            paths,
            received: self.now(),
        });
        Ok(())
    }

    /// The most recent `/output-produced` reports, newest last.
    pub fn produced_outputs(&self) -> Vec<ProducedOutput> {
        let outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        outputs.iter().cloned().collect()
    }

    /// The last-rendered image pipeline, keeping its image in `<data_dir>`. The image of
    /// the previous run is loaded on first use.
    pub fn latest_images(&self) -> &Arc<LatestImages> {
        self.latest_images.get_or_init(|| {
            let images = LatestImages::new(self.config.data_dir.clone());
            images.load_persisted();
            // Every Manager of the store shows the same image (docs/operations.md).
            images.share_through(self.store.clone());
            Arc::new(images)
        })
    }

    /// Show the image another Manager of the store stored, if there is a new one (one
    /// read of its version; see [`LatestImages::follow_store`]). Run every
    /// [`crate::latest_image::FOLLOW_PERIOD`] by [`crate::maintenance::run_local_loops`].
    pub async fn follow_latest_image(&self) -> Result<bool, ApiError> {
        Ok(self.latest_images().follow_store().await?)
    }

    /// What is known about the latest image, if there is one.
    pub fn latest_image_info(&self) -> Option<LatestImageInfo> {
        self.latest_images().info()
    }

    /// `GET /status-change`: the pending request, if any.
    pub async fn status_change(
        &self,
        worker: &Worker,
        peer: &Peer,
    ) -> Result<Option<RequestedStatus>, ApiError> {
        self.mark_seen(worker, peer, false).await?;
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
        self.worker_cache.forget(worker.id);
        self.enqueue_worker_status(worker, status).await;
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
    /// The API, the dashboard and the CLI all come here, so they follow one rule: a
    /// worker that cannot obey (Flamenco Worker 2.0.x, see
    /// [`Worker::status_request_refusal`]) gets nothing recorded, and the caller a
    /// [`ApiError::Conflict`] saying why. A withdrawal is always allowed.
    pub async fn request_worker_status(
        &self,
        id: ObjectId,
        requested: Option<RequestedStatus>,
    ) -> Result<(), ApiError> {
        if let Some(requested) = requested {
            let Some(worker) = self.store.get_worker(id).await? else {
                return Err(ApiError::NotFound(format!("worker {id} is unknown")));
            };
            if let Some(why) = worker.status_request_refusal(requested) {
                return Err(ApiError::Conflict(why));
            }
        }
        let known = self
            .store
            .set_worker_status_requested(id, requested)
            .await?;
        self.worker_cache.forget(id);
        if known {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("worker {id} is unknown")))
        }
    }

    /// Substitute variables and path replacements for `platform` into `commands`, as a
    /// worker on that platform would receive them.
    pub fn substitute(&self, platform: &str, commands: &mut [crate::model::Command]) {
        self.substitutions.apply(platform, commands);
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
