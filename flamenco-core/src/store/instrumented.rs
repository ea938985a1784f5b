//! [`InstrumentedStore`]: a [`Store`] decorator that times every operation of the store it
//! wraps into `flamenco_store_operation_duration_seconds{operation}` (see
//! [`crate::metrics`]). The [`crate::Manager`] installs it around whatever store it is given.
//!
//! It is mechanical on purpose: each method delegates to the inner store and records the
//! elapsed time under its own name, successful or not. The cost is two clock reads and one
//! histogram observation per call (well under a microsecond), next to operations that take
//! tens of microseconds at least.
//!
//! When a method is added to the [`Store`] trait, add it to the list below (the methods of
//! its per-concern supertraits, e.g. [`TaskLogStore`], have their own `impl` here); a method with a
//! default body must be listed too, or the inner store's own version would be bypassed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    CancelReport, ClaimRequest, Claimed, JobActionOutcome, JobQuery, JobStatusChange, MergeReport,
    NewWebhookDelivery, Seen, SetAsideUpdate, SignOn, Store, StoreResult, TaskActionOutcome,
    TaskLogLimits, TaskLogPage, TaskLogQuery, TaskLogStore, TaskPing, TaskQuery, WebhookDelivery,
    WebhookQueueStats, WebhookStore,
};
use crate::jobs::status::{JobAction, TaskAction};
use crate::metrics::Metrics;
use crate::model::{Job, ObjectId, RequestedStatus, Task, TaskUpdate, Worker};
use crate::store::logs::LogEnd;
use crate::updates::{MayIRun, Refetched, ReturnOutcome, TaskRunState, WorkerUpdateOutcome};

/// A store whose operations are timed into [`Metrics`].
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: Metrics,
}

impl InstrumentedStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Metrics) -> InstrumentedStore {
        InstrumentedStore { inner, metrics }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }
}

/// One `impl` of a per-concern store trait: one timed delegation per listed method.
macro_rules! instrumented {
    (impl $trait:ident { $( fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )* }) => {
        #[async_trait]
        impl super::$trait for InstrumentedStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    let start = Instant::now();
                    let result = self.inner.$name($($arg),*).await;
                    self.metrics
                        .record_store_operation(stringify!($name), start.elapsed());
                    result
                }
            )*
        }
    };
}

/// The task-log part: timed like the rest (the limits are plain settings, not timed).
#[async_trait]
impl TaskLogStore for InstrumentedStore {
    fn set_task_log_limits(&self, limits: TaskLogLimits) {
        self.inner.set_task_log_limits(limits)
    }

    fn task_log_limits(&self) -> TaskLogLimits {
        self.inner.task_log_limits()
    }

    fn set_outbox_log_text(&self, carry: bool) {
        self.inner.set_outbox_log_text(carry)
    }

    async fn append_task_log(&self, task_id: ObjectId, text: &str) -> StoreResult<()> {
        let start = Instant::now();
        let result = self.inner.append_task_log(task_id, text).await;
        self.metrics
            .record_store_operation("append_task_log", start.elapsed());
        result
    }

    async fn read_task_log(
        &self,
        task_id: ObjectId,
        query: TaskLogQuery,
    ) -> StoreResult<TaskLogPage> {
        let start = Instant::now();
        let result = self.inner.read_task_log(task_id, query).await;
        self.metrics
            .record_store_operation("read_task_log", start.elapsed());
        result
    }

    async fn task_log_end(&self, task_id: ObjectId) -> StoreResult<LogEnd> {
        let start = Instant::now();
        let result = self.inner.task_log_end(task_id).await;
        self.metrics
            .record_store_operation("task_log_end", start.elapsed());
        result
    }
}

/// Times one delegated call.
macro_rules! timed {
    ($self:ident, $name:literal, $call:expr) => {{
        let start = Instant::now();
        let result = $call.await;
        $self.metrics.record_store_operation($name, start.elapsed());
        result
    }};
}

/// The standalone claim: timed like the rest.
#[async_trait]
impl super::ClaimStore for InstrumentedStore {
    async fn claim_after_stops(&self, req: &ClaimRequest) -> StoreResult<super::ClaimOutcome> {
        timed!(self, "claim_after_stops", self.inner.claim_after_stops(req))
    }
}

/// The worker-tags part: timed like the rest.
#[async_trait]
impl super::TagStore for InstrumentedStore {
    async fn tag_workers(
        &self,
        ids: &[ObjectId],
        change: &crate::tags::TagChange,
    ) -> StoreResult<super::TagOutcome> {
        timed!(self, "tag_workers", self.inner.tag_workers(ids, change))
    }
}

/// The bulk-action part: timed like the rest.
#[async_trait]
impl super::BulkStore for InstrumentedStore {
    async fn set_job_priority(
        &self,
        id: ObjectId,
        priority: i32,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Job, u64)>> {
        timed!(
            self,
            "set_job_priority",
            self.inner.set_job_priority(id, priority, now)
        )
    }

    async fn forget_worker(
        &self,
        id: ObjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<super::ForgetOutcome> {
        timed!(self, "forget_worker", self.inner.forget_worker(id, now))
    }
}

/// The retries part: timed like the rest (the policy is a plain setting, not timed).
#[async_trait]
impl super::RetryStore for InstrumentedStore {
    fn set_retry_policy(&self, policy: crate::jobs::retry::RetryPolicy) {
        self.inner.set_retry_policy(policy)
    }

    fn retry_policy(&self) -> crate::jobs::retry::RetryPolicy {
        self.inner.retry_policy()
    }

    async fn task_failures(
        &self,
        task_id: ObjectId,
    ) -> StoreResult<Vec<crate::jobs::retry::TaskFailure>> {
        timed!(self, "task_failures", self.inner.task_failures(task_id))
    }

    async fn job_blocklist(
        &self,
        job: ObjectId,
    ) -> StoreResult<Vec<crate::jobs::retry::BlocklistEntry>> {
        timed!(self, "job_blocklist", self.inner.job_blocklist(job))
    }

    async fn unblock_worker(
        &self,
        job: ObjectId,
        worker_id: ObjectId,
        task_type: Option<&str>,
    ) -> StoreResult<u64> {
        timed!(
            self,
            "unblock_worker",
            self.inner.unblock_worker(job, worker_id, task_type)
        )
    }

    async fn job_status_reason(&self, job: ObjectId) -> StoreResult<Option<String>> {
        timed!(self, "job_status_reason", self.inner.job_status_reason(job))
    }

    async fn fail_stranded_tasks(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<crate::jobs::retry::Stranded>> {
        timed!(
            self,
            "fail_stranded_tasks",
            self.inner.fail_stranded_tasks(now)
        )
    }
}

/// The lease part: timed like the rest.
/// The shared-state part (the latest image): timed like the rest.
#[async_trait]
impl super::SharedStateStore for InstrumentedStore {
    async fn put_latest_image(
        &self,
        image: &super::NewSharedImage,
    ) -> StoreResult<super::ImagePut> {
        timed!(self, "put_latest_image", self.inner.put_latest_image(image))
    }

    async fn latest_image_version(&self) -> StoreResult<Option<u64>> {
        timed!(
            self,
            "latest_image_version",
            self.inner.latest_image_version()
        )
    }

    async fn latest_image(&self) -> StoreResult<Option<super::SharedImage>> {
        timed!(self, "latest_image", self.inner.latest_image())
    }
}

#[async_trait]
impl super::CoordinationStore for InstrumentedStore {
    fn coordination_shared(&self) -> bool {
        self.inner.coordination_shared()
    }

    async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        duration: std::time::Duration,
    ) -> StoreResult<super::Lease> {
        timed!(
            self,
            "lease_acquire",
            self.inner.lease_acquire(name, holder, duration)
        )
    }

    async fn lease_release(&self, name: &str, holder: &str) -> StoreResult<bool> {
        timed!(
            self,
            "lease_release",
            self.inner.lease_release(name, holder)
        )
    }

    async fn lease_current(&self, name: &str) -> StoreResult<Option<super::Lease>> {
        timed!(self, "lease_current", self.inner.lease_current(name))
    }
}

/// The webhook-queue part: timed like the rest.
#[async_trait]
impl WebhookStore for InstrumentedStore {
    async fn webhook_enqueue(&self, deliveries: &[NewWebhookDelivery]) -> StoreResult<()> {
        timed!(
            self,
            "webhook_enqueue",
            self.inner.webhook_enqueue(deliveries)
        )
    }

    async fn webhook_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        timed!(self, "webhook_due", self.inner.webhook_due(now, limit))
    }

    async fn webhook_delivered(&self, id: ObjectId) -> StoreResult<()> {
        timed!(self, "webhook_delivered", self.inner.webhook_delivered(id))
    }

    async fn webhook_failed(
        &self,
        id: ObjectId,
        at: DateTime<Utc>,
        next_attempt: Option<DateTime<Utc>>,
        error: &str,
    ) -> StoreResult<()> {
        timed!(
            self,
            "webhook_failed",
            self.inner.webhook_failed(id, at, next_attempt, error)
        )
    }

    async fn webhook_stats(&self) -> StoreResult<Vec<WebhookQueueStats>> {
        timed!(self, "webhook_stats", self.inner.webhook_stats())
    }
}

instrumented! {
    impl TaskStore {
        fn insert_tasks(&self, tasks: &[Task]) -> StoreResult<()>;
        fn upsert_tasks(&self, tasks: &[Task]) -> StoreResult<()>;
        fn get_task(&self, id: ObjectId) -> StoreResult<Option<Task>>;
        fn list_tasks(&self, query: &TaskQuery) -> StoreResult<Vec<Task>>;
        fn count_tasks_by_status(&self) -> StoreResult<BTreeMap<String, u64>>;
        fn count_tasks_by_status_and_type(&self) -> StoreResult<BTreeMap<(String, String), u64>>;
    }
}

instrumented! {
    impl WorkerProtocolStore {
        fn claim_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>>;
        fn unassign_task(&self, worker_id: ObjectId, update: TaskUpdate) -> StoreResult<()>;
        fn apply_worker_update(&self, worker_id: ObjectId, update: TaskUpdate) -> StoreResult<WorkerUpdateOutcome>;
        fn may_i_run(&self, task_id: ObjectId, worker_id: ObjectId, now: DateTime<Utc>) -> StoreResult<MayIRun>;
        fn get_task_state(&self, id: ObjectId) -> StoreResult<Option<TaskRunState>>;
        fn record_pings(&self, pings: &[TaskPing]) -> StoreResult<()>;
        fn write_deferred(&self, seen: &[(ObjectId, Seen)], pings: &[TaskPing]) -> StoreResult<()>;
        fn return_task(&self, task_id: ObjectId, worker_id: ObjectId, ident: &str, now: DateTime<Utc>) -> StoreResult<ReturnOutcome>;
        fn sign_off_worker(&self, worker_id: ObjectId, now: DateTime<Utc>) -> StoreResult<Vec<ObjectId>>;
        fn queue_update(&self, update: TaskUpdate) -> StoreResult<()>;
    }
}

instrumented! {
    impl OutboxStore {
        fn outbox_len(&self) -> StoreResult<u64>;
        fn outbox_peek(&self, limit: usize) -> StoreResult<Vec<TaskUpdate>>;
        fn outbox_ack(&self, ids: &[ObjectId]) -> StoreResult<u64>;
        fn outbox_note_unacknowledged(&self, ids: &[ObjectId], set_aside_after: u32, now: DateTime<Utc>) -> StoreResult<Vec<ObjectId>>;
        fn outbox_set_aside(&self, limit: usize) -> StoreResult<Vec<SetAsideUpdate>>;
        fn outbox_set_aside_len(&self) -> StoreResult<u64>;
        fn outbox_retry_set_aside(&self) -> StoreResult<u64>;
    }
}

instrumented! {
    impl WorkerStore {
        fn insert_worker(&self, worker: &Worker) -> StoreResult<()>;
        fn get_worker(&self, id: ObjectId) -> StoreResult<Option<Worker>>;
        fn list_workers(&self) -> StoreResult<Vec<Worker>>;
        fn set_worker_secret_sha256(&self, id: ObjectId, hashed_secret: &str, secret_sha256: &str) -> StoreResult<bool>;
        fn worker_seen(&self, id: ObjectId, seen: &Seen) -> StoreResult<bool>;
        fn worker_sign_on(&self, id: ObjectId, sign_on: &SignOn, seen: &Seen) -> StoreResult<bool>;
        fn set_worker_status_requested(&self, id: ObjectId, requested: Option<RequestedStatus>) -> StoreResult<bool>;
        fn ack_worker_status(&self, id: ObjectId, status: &str, now: DateTime<Utc>) -> StoreResult<bool>;
    }
}

instrumented! {
    impl MaintenanceStore {
        fn fail_timed_out_tasks(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<Vec<ObjectId>>;
        fn time_out_workers(&self, cutoff: DateTime<Utc>) -> StoreResult<Vec<ObjectId>>;
        fn delete_finished_tasks(&self, cutoff: DateTime<Utc>, limit: usize) -> StoreResult<super::Batch>;
        fn delete_tasks(&self, limit: usize) -> StoreResult<super::Batch>;
        fn purge_outbox(&self, limit: usize) -> StoreResult<super::Batch>;
    }
}

instrumented! {
    impl UpstreamStore {
        fn merge_downloaded_tasks(&self, tasks: &[Task], now: DateTime<Utc>) -> StoreResult<MergeReport>;
        fn reserve_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>>;
        fn confirm_claim(&self, task_id: ObjectId, req: &ClaimRequest) -> StoreResult<Option<Claimed>>;
        fn release_claim(&self, task_id: ObjectId, worker_id: ObjectId, verdict: &Refetched, now: DateTime<Utc>) -> StoreResult<bool>;
        fn apply_upstream_cancels(&self, task_ids: &[ObjectId], now: DateTime<Utc>) -> StoreResult<CancelReport>;
    }
}

instrumented! {
    impl JobStore {
        fn insert_job(&self, job: &Job, tasks: &[Task]) -> StoreResult<()>;
        fn get_job(&self, id: ObjectId) -> StoreResult<Option<Job>>;
        fn list_jobs(&self, query: &JobQuery) -> StoreResult<Vec<Job>>;
        fn job_action(&self, id: ObjectId, action: JobAction, now: DateTime<Utc>) -> StoreResult<JobActionOutcome>;
        fn task_action(&self, id: ObjectId, action: TaskAction, now: DateTime<Utc>) -> StoreResult<TaskActionOutcome>;
        fn apply_updates_to_jobs(&self, updates: &[TaskUpdate], now: DateTime<Utc>) -> StoreResult<Vec<JobStatusChange>>;
    }
}

instrumented! {
    impl SettingsStore {
        fn get_setting(&self, key: &str) -> StoreResult<Option<String>>;
        fn set_setting(&self, key: &str, value: Option<&str>) -> StoreResult<()>;
    }
}

/// The `impl Store` itself: its own two methods.
#[async_trait]
impl Store for InstrumentedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn single_writer(&self) -> bool {
        self.inner.single_writer()
    }

    async fn close(&self) -> StoreResult<()> {
        timed!(self, "close", self.inner.close())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prelude::*;
    use crate::store::sqlite::SqliteStore;
    use prometheus_client::encoding::text::encode_registry;

    #[tokio::test]
    async fn operations_are_timed_by_name_and_delegated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        let metrics = Metrics::new();
        let store = InstrumentedStore::new(inner.clone(), metrics.clone());
        assert_eq!(store.describe(), inner.describe());
        store.set_setting("k", Some("v")).await.expect("set");
        assert_eq!(
            inner.get_setting("k").await.expect("get").as_deref(),
            Some("v")
        );
        assert_eq!(
            store.get_setting("k").await.expect("get").as_deref(),
            Some("v")
        );
        assert_eq!(store.outbox_len().await.expect("len"), 0);
        store.close().await.expect("close");
        // A failing call is timed too.
        assert!(store.get_setting("k").await.is_err());

        let mut text = String::new();
        encode_registry(&mut text, metrics.registry()).expect("encode");
        let count = |op: &str| -> u64 {
            let prefix =
                format!("flamenco_store_operation_duration_seconds_count{{operation=\"{op}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map(|v| v.parse().expect("count"))
                .unwrap_or(0)
        };
        assert_eq!(count("set_setting"), 1, "{text}");
        assert_eq!(count("get_setting"), 2, "{text}");
        assert_eq!(count("outbox_len"), 1, "{text}");
        assert_eq!(count("close"), 1, "{text}");
        assert_eq!(count("claim_task"), 0, "{text}");
    }
}
