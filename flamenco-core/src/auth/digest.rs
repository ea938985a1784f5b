//! The stored fast hash of a worker secret (`secret_sha256`, next to the bcrypt
//! `hashed_secret`), so that a restarted Manager verifies a worker in microseconds instead
//! of paying bcrypt once per worker.
//!
//! Form: `hmac-sha256$<fingerprint>$<salt>$<digest>` (base64 without padding), where
//! `digest` = HMAC-SHA256(key = a random 16-byte salt, message = the whole secret) and
//! `fingerprint` = the first 8 bytes of SHA-256 of the bcrypt hash it was made next to.
//!
//! * Only secrets of at least [`MIN_FAST_SECRET_LEN`] bytes get one. The Flamenco Worker
//!   makes 64 random letters and digits (about 381 bits), which no fast hash makes easier
//!   to guess; a short secret may be a human's choice and stays bcrypt-only.
//! * The whole secret counts (bcrypt stops at 72 bytes).
//! * The fingerprint ties the digest to one `hashed_secret`: if something else (a v2
//!   Manager, an operator) changes the bcrypt hash, the digest is stale and ignored
//!   ([`Check::Unusable`]), and bcrypt decides again.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Secrets shorter than this (in bytes) are verified with bcrypt only.
pub const MIN_FAST_SECRET_LEN: usize = 32;

const SCHEME: &str = "hmac-sha256";
const SALT_LEN: usize = 16;
const FINGERPRINT_LEN: usize = 8;

/// What a stored fast hash says about a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The secret is the one the hash was made from.
    Match,
    /// It is not (decided without bcrypt: the stored hash is current, so bcrypt would agree,
    /// except that bcrypt would accept a wrong tail after 72 bytes).
    Mismatch,
    /// No usable fast hash: none stored, malformed, or made next to another bcrypt hash.
    /// bcrypt must decide.
    Unusable,
}

/// The fast hash to store next to `hashed_secret` for `secret`; `None` when the secret is
/// too short to get one.
pub fn make(secret: &str, hashed_secret: &str) -> Option<String> {
    if secret.len() < MIN_FAST_SECRET_LEN {
        return None;
    }
    let salt: [u8; SALT_LEN] = rand::random();
    Some(format!(
        "{SCHEME}${}${}${}",
        STANDARD_NO_PAD.encode(fingerprint(hashed_secret)),
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(mac(&salt, secret).finalize().into_bytes()),
    ))
}

/// Check `secret` against the stored fast hash `stored`, made next to `hashed_secret`.
/// Constant-time in the digest comparison; costs about a microsecond.
pub fn check(stored: &str, secret: &str, hashed_secret: &str) -> Check {
    let Some(parts) = parse(stored) else {
        return Check::Unusable;
    };
    if parts.fingerprint != fingerprint(hashed_secret) {
        return Check::Unusable;
    }
    match mac(&parts.salt, secret).verify_slice(&parts.digest) {
        Ok(()) => Check::Match,
        Err(_) => Check::Mismatch,
    }
}

/// Is `stored` a fast hash for this `hashed_secret` (well-formed, not stale)?
pub fn is_current(stored: &str, hashed_secret: &str) -> bool {
    parse(stored).is_some_and(|p| p.fingerprint == fingerprint(hashed_secret))
}

struct Parts {
    fingerprint: [u8; FINGERPRINT_LEN],
    salt: [u8; SALT_LEN],
    digest: [u8; 32],
}

fn parse(stored: &str) -> Option<Parts> {
    let mut fields = stored.split('$');
    if fields.next()? != SCHEME {
        return None;
    }
    let fingerprint = decode_exact(fields.next()?)?;
    let salt = decode_exact(fields.next()?)?;
    let digest = decode_exact(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    Some(Parts {
        fingerprint,
        salt,
        digest,
    })
}

fn decode_exact<const N: usize>(field: &str) -> Option<[u8; N]> {
    STANDARD_NO_PAD.decode(field).ok()?.try_into().ok()
}

fn fingerprint(hashed_secret: &str) -> [u8; FINGERPRINT_LEN] {
    let full = Sha256::digest(hashed_secret.as_bytes());
    let mut out = [0u8; FINGERPRINT_LEN];
    out.copy_from_slice(&full[..FINGERPRINT_LEN]);
    out
}

fn mac(salt: &[u8], secret: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(salt)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(secret.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2a$10$abcdefghijklmnopqrstuuJ8m5y0sVhcOqIkgqfdd1QZ6Y2kqvlDi";
    const SECRET: &str = "J4nM9bqVt0eXo2LdR7sWcY1uHk8gPzAf3QnE6iTrBx5vUmKaZlOyCwSjDh7N0pGq";

    #[test]
    fn matches_the_secret_it_was_made_from() {
        let stored = make(SECRET, BCRYPT).expect("64 bytes is long enough");
        assert!(stored.starts_with("hmac-sha256$"), "{stored}");
        assert_eq!(check(&stored, SECRET, BCRYPT), Check::Match);
        assert_eq!(check(&stored, "wrong", BCRYPT), Check::Mismatch);
        assert_eq!(check(&stored, &SECRET[..63], BCRYPT), Check::Mismatch);
        assert_eq!(
            check(&stored, &format!("{SECRET}x"), BCRYPT),
            Check::Mismatch
        );
        assert!(is_current(&stored, BCRYPT));
        assert!(!stored.contains(SECRET));
    }

    #[test]
    fn the_whole_secret_counts_past_72_bytes() {
        let long = "a".repeat(72) + "the-real-tail";
        let stored = make(&long, BCRYPT).expect("long");
        assert_eq!(check(&stored, &long, BCRYPT), Check::Match);
        let same_prefix = "a".repeat(72) + "another-tail!";
        assert_eq!(check(&stored, &same_prefix, BCRYPT), Check::Mismatch);
    }

    #[test]
    fn salted_so_equal_secrets_hash_differently() {
        let a = make(SECRET, BCRYPT).expect("long");
        let b = make(SECRET, BCRYPT).expect("long");
        assert_ne!(a, b);
        assert_eq!(check(&b, SECRET, BCRYPT), Check::Match);
    }

    #[test]
    fn short_secrets_get_none() {
        assert_eq!(make(&"x".repeat(MIN_FAST_SECRET_LEN - 1), BCRYPT), None);
        assert!(make(&"x".repeat(MIN_FAST_SECRET_LEN), BCRYPT).is_some());
    }

    #[test]
    fn stale_or_malformed_hashes_are_unusable() {
        let stored = make(SECRET, BCRYPT).expect("long");
        let other_bcrypt = "$2a$10$zyxwvutsrqponmlkjihgfeJ8m5y0sVhcOqIkgqfdd1QZ6Y2kqvlDi";
        assert_eq!(check(&stored, SECRET, other_bcrypt), Check::Unusable);
        assert!(!is_current(&stored, other_bcrypt));
        for bad in [
            "",
            "hmac-sha256",
            "sha1$a$b$c",
            "hmac-sha256$$$",
            "hmac-sha256$!!$!!$!!",
            &format!("{stored}$extra"),
            &stored[..stored.len() - 2],
        ] {
            assert_eq!(check(bad, SECRET, BCRYPT), Check::Unusable, "{bad:?}");
            assert!(!is_current(bad, BCRYPT), "{bad:?}");
        }
    }
}
