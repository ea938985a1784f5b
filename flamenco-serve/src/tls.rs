//! HTTPS: loading `tlscert` and `tlskey` (PEM) into a rustls server configuration.
//!
//! rustls with the *ring* provider only (no aws-lc, no OpenSSL). The files are read when the
//! Manager starts (and by `flamenco config check`); every failure names the setting, the file
//! and what to do: unreadable file, no certificate or no private key in it, malformed PEM,
//! a passphrase-protected key, or a key that does not belong to the certificate. Only HTTP/1.1 is offered over ALPN,
//! as on plain HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {source}. Check the path (relative paths start at the Manager's working directory) and the file's permissions")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tlscert: {path} holds no PEM certificate (expected a `-----BEGIN CERTIFICATE-----` block): {detail}")]
    NoCertificate { path: PathBuf, detail: String },
    #[error("tlskey: {path} holds no PEM private key (expected a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block): {detail}")]
    NoKey { path: PathBuf, detail: String },
    #[error("tlskey: the private key in {path} is encrypted (protected by a passphrase), and the Manager cannot ask for one when it starts. Write a decrypted copy that only the Manager's user can read, e.g. `openssl pkey -in {path} -out manager-key.pem && chmod 600 manager-key.pem`, and point tlskey at it")]
    EncryptedKey { path: PathBuf },
    #[error("tlskey: the private key in {key} does not belong to the certificate in {cert}. Point tlskey at the key the certificate was issued for (the first certificate in the file must be the server's own)")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot use tlscert {cert} with tlskey {key}: {source}")]
    Rustls {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// Read the certificate chain and private key, and build the server configuration.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read("tlscert", cert)?;
    let key_pem = read("tlskey", key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: cert.to_path_buf(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
            detail: "no certificate block found".into(),
        });
    }
    if is_encrypted_key(&key_pem) {
        return Err(TlsError::EncryptedKey {
            path: key.to_path_buf(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key.to_path_buf(),
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rustls_err = |source| TlsError::Rustls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
            other => rustls_err(other),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A passphrase-protected key: PKCS#8 `ENCRYPTED PRIVATE KEY`, or OpenSSL's traditional
/// form (an `RSA`/`EC PRIVATE KEY` block with `Proc-Type: 4,ENCRYPTED`). rustls reads
/// neither, and would only say that it found no key.
fn is_encrypted_key(pem: &[u8]) -> bool {
    String::from_utf8_lossy(pem).lines().any(|line| {
        let line = line.trim();
        line == "-----BEGIN ENCRYPTED PRIVATE KEY-----"
            || line.eq_ignore_ascii_case("Proc-Type: 4,ENCRYPTED")
    })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}
