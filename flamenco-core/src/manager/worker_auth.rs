//! Worker authentication on the [`Manager`]: hashing a new worker's secret and checking
//! HTTP Basic credentials, cheapest proof first (docs/security.md, "Worker secrets"):
//!
//! 1. the in-memory verify-once cache ([`crate::auth::SecretCache`]), filled by either of
//!    the two below;
//! 2. the stored fast hash `secret_sha256` ([`crate::auth::digest`]), which decides alone
//!    when it is current: right or wrong, no bcrypt;
//! 3. bcrypt, for workers without one (registered by v2, or with a secret shorter than 32
//!    bytes): counted as an unverified attempt, run in one of the few bcrypt slots
//!    ([`crate::auth::AuthGuard`]); on success the fast hash is stored ("upgrade on
//!    login"), so the next restart needs no bcrypt for this worker.
//!
//! Wrong secrets and unknown ids are counted per worker id and client address: past the
//! limit the answer is 429 instead of 401.

use std::net::IpAddr;
use std::sync::Arc;

use super::{ApiError, Manager};
use crate::auth::{self, digest, StoredSecret, Throttled};
use crate::model::{ObjectId, Worker};

impl From<Throttled> for ApiError {
    fn from(t: Throttled) -> Self {
        ApiError::TooManyRequests {
            message: t.message,
            retry_after: t.retry_after,
        }
    }
}

impl Manager {
    /// The bcrypt and fast hashes of a new worker's secret, computed in a bcrypt slot on
    /// the blocking pool (429 when no slot frees up in time).
    pub(super) async fn hash_new_secret(&self, secret: &str) -> Result<StoredSecret, ApiError> {
        let _slot = self.auth_guard.bcrypt_slot().await?;
        let secret = secret.to_string();
        tokio::task::spawn_blocking(move || auth::hash_new_secret(&secret))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(format!("unable to hash the worker secret: {e}")))
    }

    /// HTTP Basic credentials → the worker, without a client address (SDK callers; the
    /// per-address limit does not apply). See [`Manager::authenticate_from`].
    pub async fn authenticate(
        &self,
        worker_id: &str,
        secret: &str,
    ) -> Result<Arc<Worker>, ApiError> {
        self.authenticate_from(worker_id, secret, None).await
    }

    /// HTTP Basic credentials of a request from `client` → the worker. 401 for an unknown
    /// id or a wrong secret, 429 ([`ApiError::TooManyRequests`]) when the id or the address
    /// made too many unverified attempts.
    pub async fn authenticate_from(
        &self,
        worker_id: &str,
        secret: &str,
        client: Option<IpAddr>,
    ) -> Result<Arc<Worker>, ApiError> {
        let Ok(id) = ObjectId::parse(worker_id) else {
            return Err(self.refuse(None, client));
        };
        let worker = match self.worker_cache.get(id) {
            Some(worker) => worker,
            None => match self.store.get_worker(id).await? {
                Some(worker) => {
                    let worker = Arc::new(worker);
                    self.worker_cache.insert(&worker);
                    worker
                }
                None => return Err(self.refuse(None, client)),
            },
        };
        if let Some(ok) = self.secrets.check_fast(id, secret, &worker.hashed_secret) {
            return if ok {
                Ok(worker)
            } else {
                Err(self.refuse(Some(id), client))
            };
        }
        match digest::check(&worker.secret_sha256, secret, &worker.hashed_secret) {
            digest::Check::Match => {
                // Later requests of this process compare one keyed digest, without parsing.
                self.secrets.remember(id, secret, &worker.hashed_secret);
                return Ok(worker);
            }
            digest::Check::Mismatch => return Err(self.refuse(Some(id), client)),
            digest::Check::Unusable => {}
        }

        // bcrypt: an unverified attempt until it succeeds.
        self.auth_guard.count_unverified(Some(id), client)?;
        let ok = {
            let _slot = self.auth_guard.bcrypt_slot().await?;
            let secrets = self.secrets.clone();
            let (secret, hash) = (secret.to_string(), worker.hashed_secret.clone());
            tokio::task::spawn_blocking(move || secrets.verify_slow_and_cache(id, &secret, &hash))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
        };
        if !ok {
            return Err(ApiError::Unauthorized);
        }
        self.store_fast_hash(&worker, secret).await;
        Ok(worker)
    }

    /// After a bcrypt-verified login: store the fast hash when the worker has no current
    /// one and its secret is long enough. A failure is logged, not fatal: the worker is
    /// verified, and the next process will try again.
    async fn store_fast_hash(&self, worker: &Worker, secret: &str) {
        if digest::is_current(&worker.secret_sha256, &worker.hashed_secret) {
            return;
        }
        let Some(fast) = digest::make(secret, &worker.hashed_secret) else {
            return;
        };
        if secret.len() > 72 {
            // bcrypt checked only the first 72 bytes; from now on the whole secret counts.
            tracing::info!(
                worker = %worker.id,
                "worker secret longer than 72 bytes verified with bcrypt; its full length is checked from now on"
            );
        }
        match self
            .store
            .set_worker_secret_sha256(worker.id, &worker.hashed_secret, &fast)
            .await
        {
            Ok(_) => self.worker_cache.forget(worker.id),
            Err(e) => tracing::warn!(
                worker = %worker.id,
                "could not store the fast hash of the worker's secret (bcrypt will be used again after a restart): {e}"
            ),
        }
    }

    /// The answer to a failed attempt: 401, or 429 once `worker` or `client` made too many.
    fn refuse(&self, worker: Option<ObjectId>, client: Option<IpAddr>) -> ApiError {
        match self.auth_guard.count_unverified(worker, client) {
            Ok(()) => ApiError::Unauthorized,
            Err(throttled) => throttled.into(),
        }
    }

    /// The limits on unverified authentication work (for tests and diagnostics).
    pub fn auth_guard(&self) -> &auth::AuthGuard {
        &self.auth_guard
    }
}
