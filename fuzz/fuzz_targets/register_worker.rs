//! Fuzz `POST /register-worker`: decode the body as the HTTP handler does, then validate
//! it. Invariant: an accepted registration has a non-empty secret and every text within
//! the protocol's limits.
#![no_main]

use flamenco_core::protocol::{decode_body, RegisterWorker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = decode_body::<RegisterWorker>(data, false) else {
        return;
    };
    if req.validate().is_err() {
        return;
    }
    assert!(!req.secret.is_empty());
    assert!(req.secret.len() <= 1024);
    assert!(req.platform.len() <= 1024);
    assert!(req.nickname.len() <= 1024);
    assert!(req.supported_task_types.len() <= 256);
    assert!(req.supported_task_types.iter().all(|t| t.len() <= 1024));
});
