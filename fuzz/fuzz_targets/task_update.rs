//! Fuzz `POST /tasks/{id}/update`: decode the body as the HTTP handler does
//! (`protocol::decode_body`), then validate it into an outbox entry (`into_update`).
//! Invariants: an accepted update is within the protocol's limits, is stamped with the
//! worker and task, and survives the outbox's JSON round trip unchanged.
#![no_main]

use chrono::DateTime;
use flamenco_core::model::{ObjectId, TaskStatus, TaskUpdate};
use flamenco_core::protocol::{decode_body, WorkerTaskUpdate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = decode_body::<WorkerTaskUpdate>(data, false) else {
        return;
    };
    let task_id = ObjectId::parse("5852bc5198377351f95d103e").expect("a valid id");
    let now = DateTime::from_timestamp(1_700_000_000, 123_000_000).expect("a valid time");
    let Ok(update) = body.into_update(task_id, "worker (1.2.3.4)", now) else {
        return;
    };
    assert!((0..=100).contains(&update.task_progress_percentage));
    assert!((0..=100).contains(&update.command_progress_percentage));
    assert!(update.current_command_idx >= 0);
    assert!(update.activity.len() <= 1024);
    assert_eq!(update.task_id, task_id);
    assert_eq!(update.worker, "worker (1.2.3.4)");
    assert_eq!(update.received_on_manager, now);
    if let Some(status) = &update.task_status {
        assert!(
            !matches!(status, TaskStatus::Other(_)),
            "{status:?} accepted"
        );
    }
    // The outbox stores updates as JSON: what goes in comes out.
    let stored = serde_json::to_vec(&update).expect("a TaskUpdate serializes");
    let back: TaskUpdate = serde_json::from_slice(&stored).expect("a stored update decodes");
    assert_eq!(back, update);
});
