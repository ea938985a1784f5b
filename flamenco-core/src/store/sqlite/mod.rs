//! The embedded SQLite store: one database file, `flamenco.sqlite`, in the data directory.
//!
//! * One writer thread owns the write connection and commits jobs in groups
//!   (`writer`); every write operation of the [`Store`] trait is one job, so one
//!   transaction.
//! * A few read-only connections serve pure reads (`readers`).
//! * WAL mode and a busy timeout let other processes (the `flamenco` CLI) open the same
//!   database while the daemon runs; every write transaction is `BEGIN IMMEDIATE`.
//! * The schema is versioned with `PRAGMA user_version` (`schema`).

mod bulk;
mod claims;
mod disk;
mod faults;
mod jobs;
mod lock;
mod logs;
mod maintenance;
mod outbox;
mod protocol;
mod readers;
mod retries;
mod rows;
mod schema;
mod settings;
mod shared_state;
mod tags;
mod tasks;
mod upstream;
mod webhooks;
mod workers;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::ObjectId;
use crate::store::logs::LogEnd;
use crate::store::{
    NewWebhookDelivery, Store, StoreError, StoreResult, TaskLogLimits, TaskLogPage, TaskLogQuery,
    TaskLogStore, WebhookDelivery, WebhookQueueStats, WebhookStore,
};

pub use faults::SimulatedFault;
pub use lock::{DataDirLock, LockError, LOCK_FILE};
use readers::ReadPool;
use schema::ConnConfig;
use writer::Writer;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "flamenco.sqlite";

/// SQLite's `synchronous` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// In WAL mode: a commit survives a crash of the program, but the last commits may be
    /// lost if the machine loses power. The default.
    #[default]
    Normal,
    /// Every commit is synced to disk before it is acknowledged.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// How to open a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// How long a write waits for another process's lock before giving up.
    pub busy_timeout: Duration,
    /// Read-only connections for pure reads.
    pub readers: usize,
    /// At most this many write jobs share one transaction.
    pub max_batch: usize,
    /// Create the data directory and the database when missing (the default). When false,
    /// a missing database is an error and nothing is created (the CLI's commands other
    /// than `serve` must not start an empty store by mistake).
    pub create: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            max_batch: 256,
            create: true,
        }
    }
}

/// The [`Store`] on an embedded SQLite database.
pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: ReadPool,
    /// [`TaskLogLimits::max_bytes`] in force (see `logs`).
    log_max_bytes: AtomicU64,
    /// What a worker's `failed` does (see `retries`).
    retry_policy: std::sync::RwLock<crate::jobs::retry::RetryPolicy>,
    /// Whether the last standalone claim came back empty (see `claims`): a hint only.
    last_claim_empty: std::sync::atomic::AtomicBool,
}

impl SqliteStore {
    /// Open (creating if needed) the store in `data_dir`, with default options.
    pub fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        Self::open_with(data_dir, SqliteOptions::default())
    }

    /// Open the store in `data_dir`, creating it if needed unless `options.create` is false.
    pub fn open_with(data_dir: &Path, options: SqliteOptions) -> StoreResult<SqliteStore> {
        if !options.create && !data_dir.join(DATABASE_FILE).is_file() {
            return Err(StoreError::Unavailable(format!(
                "there is no database at {}",
                data_dir.join(DATABASE_FILE).display()
            )));
        }
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let dir = std::path::absolute(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("bad data directory {}: {e}", data_dir.display()))
        })?;
        let path = dir.join(DATABASE_FILE);
        let config = ConnConfig {
            synchronous: options.synchronous.pragma(),
            busy_timeout: options.busy_timeout,
        };
        let conn = schema::open_writer(&path, &config)?;
        let readers = ReadPool::new(path.clone(), config, options.readers);
        readers.warm_up()?;
        let writer = Writer::start(conn, options.max_batch)?;
        Ok(SqliteStore {
            path,
            writer,
            readers,
            log_max_bytes: AtomicU64::new(TaskLogLimits::default().max_bytes),
            retry_policy: Default::default(),
            last_claim_empty: Default::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run SQLite's `PRAGMA integrity_check` on the database: an empty list when it is
    /// sound, else what SQLite found wrong.
    pub async fn integrity_check(&self) -> StoreResult<Vec<String>> {
        self.readers.run(faults::integrity_check).await
    }

    /// For fault tests: make writes fail as on a full disk or a read-only database, or
    /// (`None`) work again. See `faults` and docs/operations.md, "Fault tolerance".
    #[doc(hidden)]
    pub async fn simulate_fault(&self, fault: Option<SimulatedFault>) -> StoreResult<()> {
        self.writer
            .run_outside_transaction(move |c| faults::apply(c, fault))
            .await
    }
}

#[async_trait]
impl TaskLogStore for SqliteStore {
    fn set_task_log_limits(&self, limits: TaskLogLimits) {
        self.log_max_bytes
            .store(limits.max_bytes, Ordering::Relaxed);
    }

    fn task_log_limits(&self) -> TaskLogLimits {
        TaskLogLimits {
            max_bytes: self.log_max_bytes.load(Ordering::Relaxed),
        }
    }

    async fn append_task_log(&self, task_id: ObjectId, text: &str) -> StoreResult<()> {
        let (text, limits) = (text.to_string(), self.task_log_limits());
        self.writer
            .run(move |c| logs::append(c, task_id, &text, limits))
            .await
    }

    async fn read_task_log(
        &self,
        task_id: ObjectId,
        query: TaskLogQuery,
    ) -> StoreResult<TaskLogPage> {
        self.readers
            .run(move |c| logs::read(c, task_id, query))
            .await
    }

    async fn task_log_end(&self, task_id: ObjectId) -> StoreResult<LogEnd> {
        self.readers.run(move |c| logs::end(c, task_id)).await
    }
}

#[async_trait]
impl crate::store::TagStore for SqliteStore {
    async fn tag_workers(
        &self,
        ids: &[ObjectId],
        change: &crate::tags::TagChange,
    ) -> StoreResult<crate::store::TagOutcome> {
        let (ids, change) = (ids.to_vec(), change.clone());
        self.writer
            .run(move |c| tags::tag_workers(c, &ids, &change))
            .await
    }
}

#[async_trait]
impl crate::store::RetryStore for SqliteStore {
    fn set_retry_policy(&self, policy: crate::jobs::retry::RetryPolicy) {
        if let Ok(mut p) = self.retry_policy.write() {
            *p = policy;
        }
    }

    fn retry_policy(&self) -> crate::jobs::retry::RetryPolicy {
        self.retry_policy.read().map(|p| *p).unwrap_or_default()
    }

    async fn task_failures(
        &self,
        task_id: ObjectId,
    ) -> StoreResult<Vec<crate::jobs::retry::TaskFailure>> {
        self.readers
            .run(move |c| retries::failures(c, task_id))
            .await
    }

    async fn job_blocklist(
        &self,
        job: ObjectId,
    ) -> StoreResult<Vec<crate::jobs::retry::BlocklistEntry>> {
        self.readers.run(move |c| retries::blocklist(c, job)).await
    }

    async fn unblock_worker(
        &self,
        job: ObjectId,
        worker_id: ObjectId,
        task_type: Option<&str>,
    ) -> StoreResult<u64> {
        let task_type = task_type.map(str::to_string);
        self.writer
            .run(move |c| retries::unblock(c, job, worker_id, task_type.as_deref()))
            .await
    }

    async fn job_status_reason(&self, job: ObjectId) -> StoreResult<Option<String>> {
        self.readers.run(move |c| jobs::status_reason(c, job)).await
    }

    async fn fail_stranded_tasks(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<crate::jobs::retry::Stranded>> {
        if !crate::store::RetryStore::retry_policy(self).enabled {
            return Ok(Vec::new());
        }
        self.writer
            .run(move |c| retries::fail_stranded(c, now))
            .await
    }
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn webhook_enqueue(&self, deliveries: &[NewWebhookDelivery]) -> StoreResult<()> {
        let deliveries = deliveries.to_vec();
        self.writer
            .run(move |c| webhooks::enqueue(c, &deliveries))
            .await
    }

    async fn webhook_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        self.readers
            .run(move |c| webhooks::due(c, now, limit))
            .await
    }

    async fn webhook_delivered(&self, id: ObjectId) -> StoreResult<()> {
        self.writer.run(move |c| webhooks::delivered(c, id)).await
    }

    async fn webhook_failed(
        &self,
        id: ObjectId,
        at: DateTime<Utc>,
        next_attempt: Option<DateTime<Utc>>,
        error: &str,
    ) -> StoreResult<()> {
        let error = error.to_string();
        self.writer
            .run(move |c| webhooks::failed(c, id, at, next_attempt, &error))
            .await
    }

    async fn webhook_stats(&self) -> StoreResult<Vec<WebhookQueueStats>> {
        self.readers.run(webhooks::stats).await
    }
}

/// One process owns the embedded store (the data-directory lock): it always leads.
#[async_trait]
impl crate::store::CoordinationStore for SqliteStore {
    fn coordination_shared(&self) -> bool {
        false
    }

    async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        _duration: Duration,
    ) -> StoreResult<crate::store::Lease> {
        Ok(crate::store::Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            acquired: None,
            expires: None,
            term: 1,
            store_now: None,
            released: false,
        })
    }

    async fn lease_release(&self, _name: &str, _holder: &str) -> StoreResult<bool> {
        Ok(true)
    }

    async fn lease_current(&self, _name: &str) -> StoreResult<Option<crate::store::Lease>> {
        Ok(None)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn single_writer(&self) -> bool {
        true
    }

    /// Close the readers, then the writer, which checkpoints the WAL into the database
    /// file first; its error says where and why (a full disk, above all).
    async fn close(&self) -> StoreResult<()> {
        self.readers.close();
        self.writer.close().await
    }
}

#[cfg(test)]
mod tests;
