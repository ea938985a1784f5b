//! Worker secrets and registration tokens.
//!
//! * [`hash_secret`]: bcrypt (cost 10, `$2a$` form, as v2 wrote them) of a worker's secret,
//!   done once at registration. Hashes written by the Go Manager verify here and vice versa.
//! * [`SecretCache`]: v2 ran bcrypt (about 50–100 ms of CPU) on every worker request
//!   (manager-v2.md §11.29). Here bcrypt runs once per worker and stored hash; after that a
//!   keyed HMAC-SHA256 digest of the secret, kept only in memory under a random per-process
//!   key, is compared in constant time.
//! * [`verify_registration_token`]: the `Authorization: Bearer <JWT>` that workers 2.3+
//!   send to `/register-worker` when `worker_registration_secret` is set (worker-protocol.md
//!   §1.3): HS256 with the shared secret's UTF-8 bytes, `exp`/`iat` as **float** Unix
//!   seconds (PyJWT 1.x).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::Sha256;

use crate::model::ObjectId;

/// bcrypt cost of new hashes (v2 used Go's `bcrypt.DefaultCost`, 10).
pub const BCRYPT_COST: u32 = 10;

/// How far past its `exp` a registration token is still accepted, for clock skew.
pub const REGISTRATION_TOKEN_LEEWAY_SECS: f64 = 30.0;

type HmacSha256 = Hmac<Sha256>;

/// Why a secret could not be hashed, or why a registration token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// bcrypt failed (in practice: no randomness for the salt).
    #[error("cannot hash the secret: {0}")]
    Hash(#[from] bcrypt::BcryptError),
    /// No `Authorization` header, or an empty one.
    #[error("no registration token (expected an `Authorization: Bearer <JWT>` header)")]
    MissingToken,
    /// Not `Bearer <JWT>`, not a decodable JWT, an algorithm other than HS256, or claims
    /// of the wrong form.
    #[error("malformed registration token: {0}")]
    MalformedToken(String),
    /// The token was not signed with this Manager's `worker_registration_secret`.
    #[error("registration token has an invalid signature (not signed with this Manager's worker_registration_secret)")]
    BadSignature,
    /// The token's `exp` lies in the past.
    #[error("registration token expired at {expired_at} (now {now})")]
    Expired {
        expired_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
}

/// bcrypt-hash a worker secret (cost [`BCRYPT_COST`], `$2a$` form).
///
/// **Slow** (about 50–100 ms of CPU in a release build): async callers must run it via
/// `tokio::task::spawn_blocking`. Like Go's bcrypt of the v2 era, only the first 72 bytes
/// of the secret count.
pub fn hash_secret(secret: &str) -> Result<String, AuthError> {
    let parts = bcrypt::hash_with_result(secret, BCRYPT_COST)?;
    Ok(parts.format_for_version(bcrypt::Version::TwoA))
}

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
/// path without running bcrypt (so wrong secrets cannot be used to burn CPU). The only
/// difference from plain bcrypt: for secrets longer than 72 bytes, bcrypt ignores the rest,
/// the digest does not.
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
        true
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

/// The registration token's claims; PyJWT 1.x writes them as floats.
#[derive(Debug, Deserialize)]
struct RegistrationClaims {
    #[serde(default)]
    exp: Option<f64>,
}

/// Check the `Authorization` header of a `/register-worker` request when
/// `worker_registration_secret` is set: `Bearer <JWT>`, HS256 only, signed with `secret`'s
/// UTF-8 bytes, with an `exp` claim (float or integer Unix seconds) later than `now`
/// (less [`REGISTRATION_TOKEN_LEEWAY_SECS`]). `iat` is not checked, so workers whose clock
/// runs ahead are not refused.
pub fn verify_registration_token(
    auth_header: Option<&str>,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let header = auth_header.map(str::trim).unwrap_or_default();
    if header.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if header.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(AuthError::MalformedToken(
                "expected `Authorization: Bearer <JWT>`".to_string(),
            ))
        }
    };
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }

    // jsonwebtoken checks the signature and the algorithm; its own `exp` check wants an
    // integer, so it is off and `exp` is checked below from the float claim.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<RegistrationClaims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|err| match err.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm => {
            AuthError::MalformedToken("algorithm not accepted; expected HS256".to_string())
        }
        _ => AuthError::MalformedToken(err.to_string()),
    })?;

    let exp = data
        .claims
        .exp
        .filter(|e| e.is_finite())
        .ok_or_else(|| AuthError::MalformedToken("no `exp` claim".to_string()))?;
    let now_secs = now.timestamp() as f64 + f64::from(now.timestamp_subsec_nanos()) / 1e9;
    if exp + REGISTRATION_TOKEN_LEEWAY_SECS <= now_secs {
        let expired_at = DateTime::from_timestamp(exp.floor() as i64, 0).unwrap_or_default();
        return Err(AuthError::Expired { expired_at, now });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    /// A `$2a$` hash as Go's bcrypt writes them (cost 4, password "password").
    const GO_STYLE_HASH: &str = "$2a$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96";

    fn cheap_hash(secret: &str) -> String {
        bcrypt::hash(secret, 4).expect("bcrypt works")
    }

    /// A token as PyJWT 1.x makes it: header `{"typ":"JWT","alg":"HS256"}`, float claims.
    fn pyjwt_token(secret: &str, header: &str, claims: &str) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    const HS256_HEADER: &str = r#"{"typ":"JWT","alg":"HS256"}"#;

    fn at(secs: f64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs.floor() as i64, ((secs.fract()) * 1e9) as u32)
            .expect("valid time")
    }

    fn float_claims(iat: f64) -> String {
        format!(r#"{{"exp": {}, "iat": {}}}"#, iat + 900.0, iat)
    }

    #[test]
    fn hash_secret_is_bcrypt_2a_cost_10() {
        let hash = hash_secret("s3cret").expect("hashing works");
        assert!(hash.starts_with("$2a$10$"), "{hash}");
        assert_eq!(hash.len(), 60);
        assert!(bcrypt::verify("s3cret", &hash).expect("valid hash"));
        assert!(!bcrypt::verify("other", &hash).expect("valid hash"));
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

    #[test]
    fn float_claims_token_verifies() {
        let iat = 1_795_850_619.144_885;
        let token = pyjwt_token("reg-secret", HS256_HEADER, &float_claims(iat));
        let header = format!("Bearer {token}");
        verify_registration_token(Some(&header), "reg-secret", at(iat + 1.0)).expect("valid token");
        // Scheme is case-insensitive; integer claims work too.
        let int_token = pyjwt_token(
            "reg-secret",
            HS256_HEADER,
            r#"{"exp": 1795851519, "iat": 1795850619}"#,
        );
        verify_registration_token(Some(&format!("bearer {int_token}")), "reg-secret", at(iat))
            .expect("valid token");
    }

    #[test]
    fn token_made_by_jsonwebtoken_with_float_claims_verifies() {
        #[derive(serde::Serialize)]
        struct Claims {
            exp: f64,
            iat: f64,
        }
        let iat = 1_795_850_619.5;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &Claims {
                exp: iat + 900.0,
                iat,
            },
            &jsonwebtoken::EncodingKey::from_secret(b"reg-secret"),
        )
        .expect("encodes");
        verify_registration_token(Some(&format!("Bearer {token}")), "reg-secret", at(iat))
            .expect("valid token");
    }

    #[test]
    fn wrong_secret_fails() {
        let iat = 1_795_850_619.144_885;
        let token = pyjwt_token("other-secret", HS256_HEADER, &float_claims(iat));
        let err =
            verify_registration_token(Some(&format!("Bearer {token}")), "reg-secret", at(iat))
                .expect_err("wrong secret");
        assert!(matches!(err, AuthError::BadSignature), "{err:?}");
    }

    #[test]
    fn expired_token_fails() {
        let iat = 1_795_850_619.144_885;
        let token = pyjwt_token("reg-secret", HS256_HEADER, &float_claims(iat));
        let header = format!("Bearer {token}");
        // Within the leeway it is still fine.
        verify_registration_token(Some(&header), "reg-secret", at(iat + 900.0 + 10.0))
            .expect("within leeway");
        let err = verify_registration_token(Some(&header), "reg-secret", at(iat + 900.0 + 31.0))
            .expect_err("expired");
        assert!(matches!(err, AuthError::Expired { .. }), "{err:?}");
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn token_without_exp_fails() {
        let token = pyjwt_token("reg-secret", HS256_HEADER, r#"{"iat": 1795850619.1}"#);
        let err = verify_registration_token(
            Some(&format!("Bearer {token}")),
            "reg-secret",
            at(1_795_850_619.0),
        )
        .expect_err("no exp");
        assert!(matches!(err, AuthError::MalformedToken(_)), "{err:?}");
    }

    #[test]
    fn missing_or_garbage_header_fails() {
        let now = at(1_795_850_619.0);
        for missing in [None, Some(""), Some("   "), Some("Bearer ")] {
            let err = verify_registration_token(missing, "s", now).expect_err("missing");
            assert!(
                matches!(err, AuthError::MissingToken),
                "{missing:?}: {err:?}"
            );
        }
        for garbage in [
            "Bearer garbage",
            "Bearer a.b.c",
            "Basic dXNlcjpwYXNz",
            "eyJhbGciOiJIUzI1NiJ9",
        ] {
            let err = verify_registration_token(Some(garbage), "s", now).expect_err("garbage");
            assert!(
                matches!(err, AuthError::MalformedToken(_)),
                "{garbage}: {err:?}"
            );
        }
    }

    #[test]
    fn correctly_signed_garbage_claims_are_malformed() {
        let now = at(1_795_850_619.0);
        for claims in ["not json", r#"{"exp": "tomorrow"}"#, "[1, 2]"] {
            let token = pyjwt_token("s", HS256_HEADER, claims);
            let err = verify_registration_token(Some(&format!("Bearer {token}")), "s", now)
                .expect_err(claims);
            assert!(
                matches!(err, AuthError::MalformedToken(_)),
                "{claims}: {err:?}"
            );
        }
        // Wrongly signed garbage is a bad signature: the signature is checked first.
        let token = pyjwt_token("other", HS256_HEADER, "not json");
        let err = verify_registration_token(Some(&format!("Bearer {token}")), "s", now)
            .expect_err("bad signature");
        assert!(matches!(err, AuthError::BadSignature), "{err:?}");
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let now = at(1_795_850_619.0);
        let claims = float_claims(1_795_850_619.0);
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        let err = verify_registration_token(Some(&format!("Bearer {none}")), "s", now)
            .expect_err("alg none");
        assert!(matches!(err, AuthError::MalformedToken(_)), "{err:?}");

        // HS512 signed with the right secret is still refused: only HS256 is accepted.
        let hs512 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS512),
            &serde_json::json!({"exp": 1_795_851_519.5}),
            &jsonwebtoken::EncodingKey::from_secret(b"s"),
        )
        .expect("encodes");
        let err = verify_registration_token(Some(&format!("Bearer {hs512}")), "s", now)
            .expect_err("HS512");
        assert!(matches!(err, AuthError::MalformedToken(_)), "{err:?}");
    }
}
