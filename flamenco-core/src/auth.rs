//! Worker secrets and registration tokens.
//!
//! * [`hash_secret`]: bcrypt (cost 10, `$2a$` form, as v2 wrote them) of a worker's secret,
//!   done once at registration. Hashes written by the Go Manager verify here and vice versa.
//! * [`digest`]: the stored fast hash (`secret_sha256`, salted HMAC-SHA256 of the whole
//!   secret) written next to the bcrypt hash for secrets of 32 bytes or more, at
//!   registration or at a worker's first bcrypt-verified login; a restarted Manager checks
//!   it in microseconds. v2 (manager-v2.md §11.29) ran bcrypt on every request.
//! * [`SecretCache`]: for workers without a fast hash, bcrypt runs once per worker per
//!   process; after that a keyed digest kept only in memory is compared.
//! * [`guard`]: bcrypt for unverified requests runs in a few slots only, and unverified
//!   attempts are counted per worker id and per client address (429 past the limit).
//! * [`verify_registration_token`]: the registration JWT (see [`registration`]).
//!
//! The choices and their reasons are in docs/security.md, "Worker secrets".

pub mod cache;
pub mod digest;
pub mod guard;
pub mod registration;

pub use cache::SecretCache;
pub use guard::{AuthGuard, AuthLimits, Throttled};
pub use registration::{verify_registration_token, REGISTRATION_TOKEN_LEEWAY_SECS};

use chrono::{DateTime, Utc};

/// bcrypt cost of new hashes (v2 used Go's `bcrypt.DefaultCost`, 10).
pub const BCRYPT_COST: u32 = 10;

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

/// The two stored hashes of a new worker's secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSecret {
    /// bcrypt, as v2 stored it (`hashed_secret`).
    pub hashed_secret: String,
    /// The fast hash ([`digest`]), empty for secrets shorter than
    /// [`digest::MIN_FAST_SECRET_LEN`] (`secret_sha256`).
    pub secret_sha256: String,
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

/// Both stored hashes of a new worker's secret: bcrypt ([`hash_secret`], **slow**) and the
/// fast hash when the secret is long enough.
pub fn hash_new_secret(secret: &str) -> Result<StoredSecret, AuthError> {
    let hashed_secret = hash_secret(secret)?;
    let secret_sha256 = digest::make(secret, &hashed_secret).unwrap_or_default();
    Ok(StoredSecret {
        hashed_secret,
        secret_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_secret_is_bcrypt_2a_cost_10() {
        let hash = hash_secret("s3cret").expect("hashing works");
        assert!(hash.starts_with("$2a$10$"), "{hash}");
        assert_eq!(hash.len(), 60);
        assert!(bcrypt::verify("s3cret", &hash).expect("valid hash"));
        assert!(!bcrypt::verify("other", &hash).expect("valid hash"));
    }

    #[test]
    fn new_secrets_get_a_fast_hash_when_long_enough() {
        let long = "k".repeat(64);
        let stored = hash_new_secret(&long).expect("hashing works");
        assert!(stored.hashed_secret.starts_with("$2a$10$"));
        assert_eq!(
            digest::check(&stored.secret_sha256, &long, &stored.hashed_secret),
            digest::Check::Match
        );
        let short = hash_new_secret("s3cret").expect("hashing works");
        assert_eq!(short.secret_sha256, "");
        assert!(bcrypt::verify("s3cret", &short.hashed_secret).expect("valid hash"));
    }
}
