//! The MongoDB store: a database shared with (or left by) the Go Manager v2, or shared by
//! several Manager processes.
//!
//! * Collections and fields are v2's (manager-v2.md §3): `flamenco_tasks`,
//!   `flamenco_workers`, `task_update_queue` and the single `settings` document, plus
//!   `flamenco_jobs` (standalone mode, v2 Server's name and fields) and a few fields of
//!   ours (`outbox`, `outbox_at`, `outbox_bytes` on tasks whose updates wait there;
//!   `seq`, `attempts`, `set_aside_at` on queued updates; `status_requested` on workers).
//!   A v2 database opens as it is.
//! * The database is the URL's path (`mongodb://host/farm` → `farm`), `flamenco` when
//!   the URL names none.
//! * No multi-document transactions: every protocol operation is a compare-and-set on the
//!   task document that also queues its updates in that document (`outbox_entries`;
//!   `protocol` explains the rest).
//! * Failures to reach the database are [`StoreError::Unavailable`] within a few seconds:
//!   server selection times out after 2 s; a server that hangs is noticed by the next
//!   heartbeat (every 5 s), which interrupts the operations waiting on it; every operation
//!   is also bounded by [`OPERATION_TIMEOUT`]. The driver reconnects by itself when the
//!   server is back.
//!
//! Submodules: `connect` (URL, options, ping), `indexes`, `codec` (BSON documents),
//! `errors` (driver errors), `tasks`, `protocol`, `upstream`, `jobs`, `maintenance`,
//! `outbox` (the queue as a whole) with `outbox_entries` (the updates waiting in task
//! documents), `workers`, `settings`, `logs` (task logs, their chunks group-committed),
//! `group_commit` (the queue they use), `testing` (test support).

mod batch;
mod bulk;
mod claim_read;
mod claims;
mod codec;
mod connect;
mod coordination;
mod errors;
mod group_commit;
mod indexes;
mod jobs;
mod logs;
mod maintenance;
mod outbox;
mod outbox_entries;
mod protocol;
mod retries;
mod settings;
mod shared_state;
mod tags;
mod tasks;
#[doc(hidden)]
pub mod testing;
mod upstream;
mod webhooks;
mod workers;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection, Database};

use crate::model::ObjectId;
use crate::store::logs::LogEnd;
use crate::store::{
    NewWebhookDelivery, Store, StoreError, StoreResult, TaskLogLimits, TaskLogPage, TaskLogQuery,
    TaskLogStore, WebhookDelivery, WebhookQueueStats, WebhookStore,
};

pub use connect::{redact, CONNECT_TIMEOUT, DEFAULT_DATABASE, HEARTBEAT, SERVER_SELECTION_TIMEOUT};

/// No store operation takes longer than this: a server that accepts connections but does
/// not answer still gives `Unavailable` rather than a hanging request.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// The collections, shared by the submodules.
pub(crate) struct Db {
    tasks: Collection<Document>,
    workers: Collection<Document>,
    updates: Collection<Document>,
    settings: Collection<Document>,
    jobs: Collection<Document>,
    log_chunks: Collection<Document>,
    log_ends: Collection<Document>,
    blocklist: Collection<Document>,
    /// Retries are in effect (`RetryStore::set_retry_policy`): the claim also takes
    /// `soft-failed` tasks and skips excluded workers (`retries::exclusions`). Off, the
    /// claim's query is v2's (upstream mode has neither).
    retries: AtomicBool,
    /// Workers known to have blocklist entries (`retries::BlockedHint`).
    blocked_hint: retries::BlockedHint,
    /// The outbox's order stamps (`outbox_entries`).
    stamps: outbox_entries::Stamps,
    /// Queued updates carry their log text (`TaskLogStore::set_outbox_log_text`).
    outbox_log_text: AtomicBool,
    /// The task logs' chunks' group commit (`logs`).
    log_chunk_queue: logs::ChunkQueue,
}

impl Db {
    fn new(db: &Database) -> Db {
        Db {
            tasks: db.collection(codec::TASKS),
            workers: db.collection(codec::WORKERS),
            updates: db.collection(codec::UPDATES),
            settings: db.collection(codec::SETTINGS),
            jobs: db.collection(codec::JOBS),
            log_chunks: db.collection(logs::CHUNKS),
            log_ends: db.collection(logs::ENDS),
            blocklist: db.collection(retries::BLOCKLIST),
            retries: AtomicBool::new(false),
            blocked_hint: Default::default(),
            stamps: Default::default(),
            outbox_log_text: AtomicBool::new(true),
            log_chunk_queue: logs::chunk_queue(db.collection(logs::CHUNKS)),
        }
    }
}

/// The [`Store`] on a MongoDB database.
pub struct MongoStore {
    client: Client,
    database: Database,
    db: Db,
    shown_url: String,
    closed: AtomicBool,
    /// [`TaskLogLimits::max_bytes`] in force (see `logs`).
    log_max_bytes: AtomicU64,
    /// What a worker's `failed` does (see `retries`).
    retry_policy: std::sync::RwLock<crate::jobs::retry::RetryPolicy>,
}

impl MongoStore {
    /// Connect to the database `url` names, check that it answers, and create the indices
    /// if needed. An unreachable server is an
    /// [`StoreError::Unavailable`] saying so ("cannot reach MongoDB at <url>: <reason>;
    /// check database_url or start MongoDB"), after about 2 s.
    pub async fn connect(url: &str) -> StoreResult<MongoStore> {
        let (options, name) = connect::options(url).await?;
        let client = connect::client(url, options).await?;
        let database = client.database(&name);
        Self::prepare(url, client, database).await
    }

    /// Like [`MongoStore::connect`], but only to a database that already holds a
    /// Manager's data (any of its collections: tasks, workers, jobs, settings, the outbox or
    /// the old outbox counter, as this Manager or a v2 Manager made them). `None` when it holds none:
    /// nothing is created then.
    pub async fn connect_existing(url: &str) -> StoreResult<Option<MongoStore>> {
        let (options, name) = connect::options(url).await?;
        let client = connect::client(url, options).await?;
        let database = client.database(&name);
        let ours = [
            codec::TASKS,
            codec::WORKERS,
            codec::UPDATES,
            codec::JOBS,
            codec::SETTINGS,
            codec::COUNTERS,
        ];
        let names = database
            .list_collection_names()
            .filter(doc! { "name": { "$in": ours.to_vec() } })
            .await
            .map_err(errors::map_err)?;
        if names.is_empty() {
            return Ok(None);
        }
        Self::prepare(url, client, database).await.map(Some)
    }

    /// The indices, then the store.
    async fn prepare(url: &str, client: Client, database: Database) -> StoreResult<MongoStore> {
        let db = Db::new(&database);
        indexes::ensure(&db)
            .await
            .map_err(|e| connect::preparing(&database, e))?;
        logs::migrate_ends(&db)
            .await
            .map_err(|e| connect::preparing(&database, e))?;
        retries::load_hint(&db)
            .await
            .map_err(|e| connect::preparing(&database, e))?;
        Ok(MongoStore {
            client,
            database,
            db,
            shown_url: redact(url),
            closed: AtomicBool::new(false),
            log_max_bytes: AtomicU64::new(TaskLogLimits::default().max_bytes),
            retry_policy: Default::default(),
        })
    }

    /// The database's name.
    pub fn database_name(&self) -> &str {
        self.database.name()
    }

    /// The indices this store creates: `(collection, keys, partial filter)` (the two
    /// sparse ones of the outbox as `None`).
    pub fn indexes() -> Vec<(&'static str, Document, Option<Document>)> {
        indexes::wanted()
            .into_iter()
            .map(|w| (w.collection, w.keys, w.partial))
            .collect()
    }

    /// The claim's candidate query for these task types and worker tags: `(filter,
    /// sort)` on `flamenco_tasks` (for query-plan checks).
    pub fn claim_query(task_types: &[String], worker_tags: &[String]) -> (Document, Document) {
        tasks::candidates_query(task_types, worker_tags)
    }

    /// Run one store operation: refused after `close`, bounded by [`OPERATION_TIMEOUT`].
    async fn run<T>(&self, op: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        match tokio::time::timeout(OPERATION_TIMEOUT, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "MongoDB did not answer within {} s",
                OPERATION_TIMEOUT.as_secs()
            ))),
        }
    }
}

#[async_trait]
impl TaskLogStore for MongoStore {
    fn set_task_log_limits(&self, limits: TaskLogLimits) {
        self.log_max_bytes
            .store(limits.max_bytes, Ordering::Relaxed);
    }

    fn task_log_limits(&self) -> TaskLogLimits {
        TaskLogLimits {
            max_bytes: self.log_max_bytes.load(Ordering::Relaxed),
        }
    }

    fn set_outbox_log_text(&self, carry: bool) {
        self.db.outbox_log_text.store(carry, Ordering::Relaxed);
    }

    async fn append_task_log(&self, task_id: ObjectId, text: &str) -> StoreResult<()> {
        let limits = self.task_log_limits();
        self.run(logs::append(&self.db, task_id, text, limits))
            .await
    }

    async fn read_task_log(
        &self,
        task_id: ObjectId,
        query: TaskLogQuery,
    ) -> StoreResult<TaskLogPage> {
        self.run(logs::read(&self.db, task_id, query)).await
    }

    async fn task_log_end(&self, task_id: ObjectId) -> StoreResult<LogEnd> {
        self.run(logs::end(&self.db, task_id)).await
    }
}

#[async_trait]
impl crate::store::TagStore for MongoStore {
    async fn tag_workers(
        &self,
        ids: &[ObjectId],
        change: &crate::tags::TagChange,
    ) -> StoreResult<crate::store::TagOutcome> {
        self.run(tags::tag_workers(&self.db, ids, change)).await
    }
}

#[async_trait]
impl crate::store::RetryStore for MongoStore {
    fn set_retry_policy(&self, policy: crate::jobs::retry::RetryPolicy) {
        if let Ok(mut p) = self.retry_policy.write() {
            *p = policy;
        }
        self.db.retries.store(policy.enabled, Ordering::Release);
    }

    fn retry_policy(&self) -> crate::jobs::retry::RetryPolicy {
        self.retry_policy.read().map(|p| *p).unwrap_or_default()
    }

    async fn task_failures(
        &self,
        task_id: ObjectId,
    ) -> StoreResult<Vec<crate::jobs::retry::TaskFailure>> {
        self.run(retries::failures(&self.db, task_id)).await
    }

    async fn job_blocklist(
        &self,
        job: ObjectId,
    ) -> StoreResult<Vec<crate::jobs::retry::BlocklistEntry>> {
        self.run(retries::blocklist(&self.db, job)).await
    }

    async fn unblock_worker(
        &self,
        job: ObjectId,
        worker_id: ObjectId,
        task_type: Option<&str>,
    ) -> StoreResult<u64> {
        self.run(retries::unblock(&self.db, job, worker_id, task_type))
            .await
    }

    async fn job_status_reason(&self, job: ObjectId) -> StoreResult<Option<String>> {
        self.run(retries::status_reason(&self.db, job)).await
    }

    async fn fail_stranded_tasks(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<crate::jobs::retry::Stranded>> {
        if !crate::store::RetryStore::retry_policy(self).enabled {
            return Ok(Vec::new());
        }
        self.run(retries::fail_stranded(&self.db, now)).await
    }
}

#[async_trait]
impl WebhookStore for MongoStore {
    async fn webhook_enqueue(&self, deliveries: &[NewWebhookDelivery]) -> StoreResult<()> {
        self.run(webhooks::enqueue(&self.database, deliveries))
            .await
    }

    async fn webhook_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        self.run(webhooks::due(&self.database, now, limit)).await
    }

    async fn webhook_delivered(&self, id: ObjectId) -> StoreResult<()> {
        self.run(webhooks::delivered(&self.database, id)).await
    }

    async fn webhook_failed(
        &self,
        id: ObjectId,
        at: DateTime<Utc>,
        next_attempt: Option<DateTime<Utc>>,
        error: &str,
    ) -> StoreResult<()> {
        self.run(webhooks::failed(
            &self.database,
            id,
            at,
            next_attempt,
            error,
        ))
        .await
    }

    async fn webhook_stats(&self) -> StoreResult<Vec<WebhookQueueStats>> {
        self.run(webhooks::stats(&self.database)).await
    }
}

/// Several Managers may share a MongoDB database: the leader lease is a document
/// (`coordination`).
#[async_trait]
impl crate::store::CoordinationStore for MongoStore {
    fn coordination_shared(&self) -> bool {
        true
    }

    async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> StoreResult<crate::store::Lease> {
        self.run(coordination::acquire(
            &self.database,
            name,
            holder,
            duration,
        ))
        .await
    }

    async fn lease_release(&self, name: &str, holder: &str) -> StoreResult<bool> {
        self.run(coordination::release(&self.database, name, holder))
            .await
    }

    async fn lease_current(&self, name: &str) -> StoreResult<Option<crate::store::Lease>> {
        self.run(coordination::current(&self.database, name)).await
    }
}

#[async_trait]
impl Store for MongoStore {
    fn describe(&self) -> String {
        format!("{} (database {})", self.shown_url, self.database.name())
    }

    async fn close(&self) -> StoreResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Close the connections without waiting for cursors someone may still hold.
        self.client.clone().shutdown().immediate(true).await;
        Ok(())
    }
}
