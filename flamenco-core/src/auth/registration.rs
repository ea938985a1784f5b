//! The registration token: the `Authorization: Bearer <JWT>` that workers 2.3+ send to
//! `/register-worker` when `worker_registration_secret` is set (worker-protocol.md §1.3).
//! HS256 with the shared secret's UTF-8 bytes, `exp`/`iat` as **float** Unix seconds
//! (PyJWT 1.x).
//!
//! `jsonwebtoken` parses and checks the token. Its bundled `rust_crypto` provider would
//! also pull in RSA, ECDSA and EdDSA (and with them the `rsa` crate, RUSTSEC-2023-0071),
//! none of which a registration token uses; so the crate is built without a provider and
//! [`HS256_ONLY`], a [`CryptoProvider`] that knows HS256 alone (RustCrypto's `hmac` and
//! `sha2`), is installed on first use.

use std::sync::Once;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{decode, Validation};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use serde::Deserialize;
use sha2::Sha256;

use super::AuthError;

/// How far past its `exp` a registration token is still accepted, for clock skew.
pub const REGISTRATION_TOKEN_LEEWAY_SECS: f64 = 30.0;

type HmacSha256 = Hmac<Sha256>;

/// A `jsonwebtoken` crypto provider that signs and verifies HS256 and nothing else; every
/// other algorithm is `InvalidAlgorithm`.
pub static HS256_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: hs256_signer,
    verifier_factory: hs256_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Install [`HS256_ONLY`] as `jsonwebtoken`'s process-wide provider, unless the program
/// embedding the SDK installed one of its own first (which is then used: it knows HS256 too).
pub fn install_jwt_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = HS256_ONLY.install_default();
    });
}

/// An HMAC-SHA256 under the key's bytes; `Err` for non-HMAC keys.
fn hs256_mac(family: AlgorithmFamily, key: &[u8]) -> Result<HmacSha256, JwtError> {
    if family != AlgorithmFamily::Hmac {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    <HmacSha256 as Mac>::new_from_slice(key).map_err(|_| ErrorKind::InvalidKeyFormat.into())
}

struct Hs256(HmacSha256);

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut mac = self.0.clone();
        mac.update(msg);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(msg);
        // Constant-time comparison.
        mac.verify_slice(signature)
            .map_err(signature::Error::from_source)
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn hs256_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, JwtError> {
    if *alg != Algorithm::HS256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(Hs256(hs256_mac(key.family(), key.as_bytes())?)))
}

fn hs256_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, JwtError> {
    if *alg != Algorithm::HS256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let DecodingKeyKind::SecretOrDer(bytes) = key.kind() else {
        return Err(ErrorKind::InvalidKeyFormat.into());
    };
    Ok(Box::new(Hs256(hs256_mac(key.family(), bytes)?)))
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

    install_jwt_provider();
    // jsonwebtoken checks the signature and the algorithm; its own `exp` check wants an
    // integer, so it is off and `exp` is checked below from the float claim.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = decode::<RegistrationClaims>(
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
        install_jwt_provider();
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
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"HS512"}"#),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        let mut mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(b"s").expect("any key");
        mac.update(signing_input.as_bytes());
        let hs512 = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        let err = verify_registration_token(Some(&format!("Bearer {hs512}")), "s", now)
            .expect_err("HS512");
        assert!(matches!(err, AuthError::MalformedToken(_)), "{err:?}");
    }

    #[test]
    fn the_provider_knows_hs256_alone() {
        install_jwt_provider();
        let claims = serde_json::json!({"exp": 1_795_851_519.5});
        for alg in [
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS256,
            Algorithm::ES256,
        ] {
            let err = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(alg),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(b"s"),
            )
            .expect_err("only HS256 signs");
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat
                ),
                "{alg:?}: {err:?}"
            );
        }
    }
}
