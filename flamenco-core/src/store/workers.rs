//! [`WorkerStore`]: workers: registration, secrets, contact, sign-on and status requests.
//!
//! One concern of the [`super::Store`] trait, implemented by each backend in its file of the
//! same name (`sqlite/workers.rs`, `mongo/workers.rs`) and timed by [`super::InstrumentedStore`].

use super::Seen;
use super::SignOn;
use super::StoreResult;
use crate::model::ObjectId;
use crate::model::RequestedStatus;
use crate::model::Worker;
use async_trait::async_trait;
use chrono::DateTime;
use chrono::Utc;

/// Workers: registration, secrets, contact, sign-on and status requests.
#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// Store a newly registered worker.
    async fn insert_worker(&self, worker: &Worker) -> StoreResult<()>;

    async fn get_worker(&self, id: ObjectId) -> StoreResult<Option<Worker>>;

    /// All workers, ordered by id.
    async fn list_workers(&self) -> StoreResult<Vec<Worker>>;

    /// Store the fast hash of a worker's secret (`secret_sha256`, see `auth::digest`) when
    /// its bcrypt `hashed_secret` is still the given one (compare-and-set: a worker whose
    /// hash changed meanwhile is left alone). False when nothing was written.
    async fn set_worker_secret_sha256(
        &self,
        id: ObjectId,
        hashed_secret: &str,
        secret_sha256: &str,
    ) -> StoreResult<bool>;

    /// Record contact from a worker. Returns false when the worker does not exist.
    async fn worker_seen(&self, id: ObjectId, seen: &Seen) -> StoreResult<bool>;

    /// Sign-on: nickname/types as given (when non-empty), `current_task` removed, plus
    /// "seen". Returns false when the worker does not exist.
    async fn worker_sign_on(
        &self,
        id: ObjectId,
        sign_on: &SignOn,
        seen: &Seen,
    ) -> StoreResult<bool>;

    /// Ask a worker for a status change, or withdraw the request with `None`.
    /// Returns false when the worker does not exist.
    async fn set_worker_status_requested(
        &self,
        id: ObjectId,
        requested: Option<RequestedStatus>,
    ) -> StoreResult<bool>;

    /// The worker acknowledged entering `status`: store it as the worker's status and clear
    /// a matching request. Returns false when the worker does not exist.
    async fn ack_worker_status(
        &self,
        id: ObjectId,
        status: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
}
