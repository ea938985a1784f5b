//! [`WorkerProtocolStore`]: the worker protocol's writes: claim, update, may-i-run, return, sign-off, and Manager-made updates.
//!
//! One concern of the [`super::Store`] trait, implemented by each backend in its file of the
//! same name (`sqlite/protocol.rs`, `mongo/protocol.rs`) and timed by [`super::InstrumentedStore`].

use super::ClaimRequest;
use super::Claimed;
use super::Seen;
use super::StoreResult;
use super::TaskPing;
use super::TaskStore;
use super::WorkerStore;
use crate::model::ObjectId;
use crate::model::TaskUpdate;
use crate::updates::MayIRun;
use crate::updates::ReturnOutcome;
use crate::updates::TaskRunState;
use crate::updates::WorkerUpdateOutcome;
use async_trait::async_trait;
use chrono::DateTime;
use chrono::Utc;

/// The worker protocol's writes: claim, update, may-i-run, return, sign-off, and Manager-made updates.
#[async_trait]
pub trait WorkerProtocolStore: TaskStore + WorkerStore + Send + Sync {
    /// Hand a task to a worker, atomically (compare-and-set on the status):
    /// 1. an `active` task already assigned to this worker is returned again;
    /// 2. otherwise the best schedulable task (`queued`/`claimed-by-manager`, task type in
    ///    `task_types`, every parent `completed` or missing) by `job_priority` desc,
    ///    `priority` desc, id asc becomes `active` with `worker`=nickname, `worker_id`,
    ///    `last_worker_ping`=`last_updated`=now and the assignment activity.
    ///
    /// In both cases the outbox gets [`crate::updates::assignment_status_update`] and
    /// [`crate::updates::assignment_log_update`] in the same transaction. The worker's
    /// record is not touched: its `current_task` (v2 §6.4 step 3) is the caller's to
    /// write with the deferred "seen" ([`super::Seen::current_task`], [`crate::seen`]).
    /// `None` when nothing is schedulable for this worker.
    async fn claim_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>>;

    /// Undo an assignment that could not be delivered (v2 §6.4 step 6): if the task is still
    /// `active` for this worker it becomes `claimed-by-manager` through `update`.
    async fn unassign_task(&self, worker_id: ObjectId, update: TaskUpdate) -> StoreResult<()>;

    /// A worker's task update (v2 §4.4 steps 5–9), atomically: check with
    /// [`crate::updates::check_worker_update`]; if accepted, ping the task
    /// (`last_worker_ping`, `worker_id`), apply the status per
    /// [`crate::updates::local_status_after`] and a non-empty activity, set `last_updated`,
    /// and insert `update` into the outbox. The worker's record is not written: the caller
    /// keeps what the update shows there (`current_task_updated`, `current_task_status`)
    /// as a [`super::TaskReport`] and writes it with the next "seen" flush
    /// ([`WorkerProtocolStore::write_deferred`], about every second; see [`crate::seen`]).
    async fn apply_worker_update(
        &self,
        worker_id: ObjectId,
        update: TaskUpdate,
    ) -> StoreResult<WorkerUpdateOutcome>;

    /// may-i-run (v2 §4.5): decide with [`MayIRun::decide`]; on `Yes` ping the task and the
    /// worker's `current_task_updated`.
    async fn may_i_run(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<MayIRun>;

    /// A task's status and assigned worker, and nothing else (enough for
    /// [`MayIRun::decide_on`]): the fast, read-only path of may-i-run, one primary-key
    /// read of two fields. `None` when the task is unknown.
    async fn get_task_state(&self, id: ObjectId) -> StoreResult<Option<TaskRunState>> {
        Ok(self.get_task(id).await?.as_ref().map(TaskRunState::of))
    }

    /// Write may-i-run pings that were answered from [`WorkerProtocolStore::get_task_state`] and kept in
    /// memory: the task's `last_worker_ping` (never moved back) and the worker's
    /// `current_task_updated`, each only while the task is still runnable and assigned to
    /// that worker (a ping never claims a task). Pings of tasks that changed meanwhile are
    /// dropped.
    async fn record_pings(&self, pings: &[TaskPing]) -> StoreResult<()>;

    /// The deferred "seen" flush ([`crate::seen`]): each worker's latest contact, with
    /// its [`super::TaskReport`] (as [`super::WorkerStore::worker_seen`] writes them),
    /// then the may-i-run pings (as [`WorkerProtocolStore::record_pings`]). Backends
    /// batch them: one transaction on SQLite, one bulk command per collection on MongoDB.
    async fn write_deferred(
        &self,
        seen: &[(ObjectId, Seen)],
        pings: &[TaskPing],
    ) -> StoreResult<()> {
        for (id, contact) in seen {
            self.worker_seen(*id, contact).await?;
        }
        if !pings.is_empty() {
            self.record_pings(pings).await?;
        }
        Ok(())
    }

    /// `POST /tasks/{id}/return`: decide with [`crate::updates::decide_return`] and apply it
    /// with [`crate::updates::return_update`] (a requeued task loses its `worker_id`).
    async fn return_task(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        ident: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ReturnOutcome>;

    /// Sign-off (v2 §4.7): every `active` task of this worker becomes `claimed-by-manager`
    /// through [`crate::updates::sign_off_requeue_update`]; then the worker's status becomes
    /// `down` and a pending `shutdown` request is cleared. Returns the re-queued task ids.
    async fn sign_off_worker(
        &self,
        worker_id: ObjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>>;

    /// Queue a Manager-made update (v2 §7.2): insert it into the outbox and apply its status
    /// (per [`crate::updates::local_status_after`]) and activity to the task.
    async fn queue_update(&self, update: TaskUpdate) -> StoreResult<()>;
}
