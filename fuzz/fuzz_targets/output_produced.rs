//! Fuzz `POST /output-produced`: decode the body as the HTTP handler does, then validate
//! it. Invariant: an accepted report has at least one path, none longer than 4096 bytes.
#![no_main]

use flamenco_core::protocol::{decode_body, OutputProduced};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = decode_body::<OutputProduced>(data, false) else {
        return;
    };
    if req.validate().is_err() {
        return;
    }
    assert!(!req.paths.is_empty());
    assert!(req.paths.iter().all(|p| p.len() <= 4096));
});
