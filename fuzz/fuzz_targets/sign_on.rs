//! Fuzz `POST /sign-on`: decode the body as the HTTP handler does (an empty body is `{}`),
//! then validate it. Invariant: accepted values are within the protocol's limits.
#![no_main]

use flamenco_core::protocol::{decode_body, SignOnRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = decode_body::<SignOnRequest>(data, true) else {
        assert!(!data.is_empty(), "an empty sign-on body must decode");
        return;
    };
    if req.validate().is_err() {
        return;
    }
    assert!(req.nickname.as_ref().is_none_or(|n| n.len() <= 1024));
    if let Some(types) = &req.supported_task_types {
        assert!(types.len() <= 256);
        assert!(types.iter().all(|t| t.len() <= 1024));
    }
});
