//! The in-memory "verified once" cache of worker secrets: after a worker's secret passed
//! bcrypt (or the stored fast hash) in this process, a keyed HMAC-SHA256 digest of it
//! (under a random per-process key, never stored) answers later requests in microseconds.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::ObjectId;

type HmacSha256 = Hmac<Sha256>;

/// A verified secret: the keyed digest of (worker id ‖ secret), and the stored hash it was
/// verified against.
#[derive(Clone)]
struct CacheEntry {
    digest: [u8; 32],
    stored_hash: String,
}

/// "Verify once with bcrypt, then keep a keyed fast digest in memory."
///
/// The digest is HMAC-SHA256 under a random key made by [`SecretCache::new`], so the
/// in-memory cache is useless outside this process. An entry is only used while the
/// worker's stored hash is the one that was verified; a re-registered worker (new hash)
/// goes through bcrypt again.
///
/// Once a worker's secret is cached, other secrets for that worker are refused by the fast
/// path without running bcrypt (so wrong secrets cannot be used to burn CPU). For secrets
/// longer than 72 bytes bcrypt ignores the rest, the digest does not: whichever secret
/// passed bcrypt first is the one remembered (see `docs/security.md`, "Worker secrets").
///
/// Async callers: call [`SecretCache::check_fast`] inline, and only when it answers `None`
/// run [`SecretCache::verify_slow_and_cache`] via `spawn_blocking`. [`SecretCache::check`]
/// does both and may block.
pub struct SecretCache {
    key: [u8; 32],
    entries: RwLock<HashMap<ObjectId, CacheEntry>>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("SecretCache").field("entries", &n).finish()
    }
}

impl Default for SecretCache {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretCache {
    /// An empty cache with a fresh random 32-byte key.
    pub fn new() -> SecretCache {
        SecretCache {
            key: rand::random(),
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn mac(&self, worker_id: ObjectId, secret: &str) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        // The id has a fixed length, so (id, secret) pairs cannot collide by concatenation.
        mac.update(&worker_id.bytes());
        mac.update(secret.as_bytes());
        mac
    }

    /// Is `secret` right for `worker_id` whose stored bcrypt hash is `stored_hash`? Uses the
    /// cache when it can, bcrypt otherwise. **May block** for bcrypt's 50–100 ms.
    pub fn check(&self, worker_id: ObjectId, secret: &str, stored_hash: &str) -> bool {
        match self.check_fast(worker_id, secret, stored_hash) {
            Some(ok) => ok,
            None => self.verify_slow_and_cache(worker_id, secret, stored_hash),
        }
    }

    /// The answer from the cache alone: `Some(ok)` when this worker's secret was verified
    /// against this same `stored_hash` before (constant-time comparison), `None` when
    /// bcrypt is needed. Cheap; takes only a read lock.
    pub fn check_fast(&self, worker_id: ObjectId, secret: &str, stored_hash: &str) -> Option<bool> {
        let expected = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            let entry = entries.get(&worker_id)?;
            if entry.stored_hash != stored_hash {
                return None;
            }
            entry.digest
        };
        Some(self.mac(worker_id, secret).verify_slice(&expected).is_ok())
    }

    /// Run bcrypt (**slow**: use `spawn_blocking` from async code); on success remember the
    /// digest so later checks take the fast path. A malformed `stored_hash` gives `false`.
    pub fn verify_slow_and_cache(
        &self,
        worker_id: ObjectId,
        secret: &str,
        stored_hash: &str,
    ) -> bool {
        if !bcrypt::verify(secret, stored_hash).unwrap_or(false) {
            return false;
        }
        self.remember(worker_id, secret, stored_hash);
        true
    }

    /// Remember `secret` as verified for this worker and stored hash (it was proven some
    /// other way, e.g. by the stored fast hash), so later checks take the cheapest path.
    pub fn remember(&self, worker_id: ObjectId, secret: &str, stored_hash: &str) {
        let digest: [u8; 32] = self.mac(worker_id, secret).finalize().into_bytes().into();
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                worker_id,
                CacheEntry {
                    digest,
                    stored_hash: stored_hash.to_string(),
                },
            );
    }

    /// Drop what is cached for a worker (e.g. when it is deleted or re-registers).
    pub fn forget(&self, worker_id: ObjectId) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&worker_id);
    }

    /// How many workers have a cached digest.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `$2a$` hash as Go's bcrypt writes them (cost 4, password "password").
    const GO_STYLE_HASH: &str = "$2a$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96";

    fn cheap_hash(secret: &str) -> String {
        bcrypt::hash(secret, 4).expect("bcrypt works")
    }

    #[test]
    fn go_style_2a_and_2b_hashes_verify() {
        let cache = SecretCache::new();
        assert!(cache.check(ObjectId::new(), "password", GO_STYLE_HASH));
        let b = "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";
        assert!(cache.check(ObjectId::new(), "correctbatteryhorsestapler", b));
    }

    #[test]
    fn cache_fast_path_after_first_verification() {
        let cache = SecretCache::new();
        let id = ObjectId::new();
        let hash = cheap_hash("right");
        assert_eq!(cache.check_fast(id, "right", &hash), None);
        assert!(cache.verify_slow_and_cache(id, "right", &hash));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.check_fast(id, "right", &hash), Some(true));
        assert_eq!(cache.check_fast(id, "wrong", &hash), Some(false));
        assert!(cache.check(id, "right", &hash));
        assert!(!cache.check(id, "wrong", &hash));
        // Another worker with the same secret is not covered by this entry.
        assert_eq!(cache.check_fast(ObjectId::new(), "right", &hash), None);
    }

    #[test]
    fn wrong_secret_is_not_cached() {
        let cache = SecretCache::new();
        let id = ObjectId::new();
        let hash = cheap_hash("right");
        assert!(!cache.check(id, "wrong", &hash));
        assert!(cache.is_empty());
        assert_eq!(cache.check_fast(id, "wrong", &hash), None);
    }

    #[test]
    fn changed_stored_hash_invalidates_the_entry() {
        let cache = SecretCache::new();
        let id = ObjectId::new();
        let old = cheap_hash("old");
        assert!(cache.check(id, "old", &old));
        // Re-registered with a new secret: the entry for the old hash is not used.
        let new = cheap_hash("new");
        assert_eq!(cache.check_fast(id, "old", &new), None);
        assert!(!cache.check(id, "old", &new));
        assert!(cache.check(id, "new", &new));
        assert_eq!(cache.check_fast(id, "new", &new), Some(true));
        assert_eq!(cache.check_fast(id, "old", &old), None);
    }

    #[test]
    fn remembered_secrets_take_the_fast_path() {
        let cache = SecretCache::new();
        let id = ObjectId::new();
        cache.remember(id, "proven", "$2a$10$some-hash");
        assert_eq!(
            cache.check_fast(id, "proven", "$2a$10$some-hash"),
            Some(true)
        );
        assert_eq!(
            cache.check_fast(id, "other", "$2a$10$some-hash"),
            Some(false)
        );
        assert_eq!(cache.check_fast(id, "proven", "$2a$10$new-hash"), None);
    }

    #[test]
    fn forget_drops_the_entry() {
        let cache = SecretCache::new();
        let id = ObjectId::new();
        let hash = cheap_hash("x");
        assert!(cache.check(id, "x", &hash));
        cache.forget(id);
        assert_eq!(cache.check_fast(id, "x", &hash), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn malformed_stored_hash_is_refused() {
        let cache = SecretCache::new();
        assert!(!cache.check(ObjectId::new(), "x", "not a bcrypt hash"));
        assert!(!cache.check(ObjectId::new(), "", ""));
    }

    #[test]
    fn caches_do_not_share_keys() {
        let a = SecretCache::new();
        let b = SecretCache::new();
        let id = ObjectId::new();
        assert_ne!(
            a.mac(id, "s").finalize().into_bytes(),
            b.mac(id, "s").finalize().into_bytes()
        );
    }
}
