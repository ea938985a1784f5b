//! Conformance cases for who decides a worker's status: a contact (task request, task
//! update, may-i-run) wakes only a status the Manager inferred; a status the worker
//! acknowledged itself (`asleep`, `shutdown`, `error`, `testing`) changes only by its next
//! acknowledgement or sign-on; sign-off withdraws any pending request.

use std::sync::Arc;

use super::{add_worker, at, oid, seen, test_worker, worker};
use crate::model::{worker_status, RequestedStatus};
use crate::store::{SignOn, Store};

/// A contact with `mark_awake` (what `/task`, a task update and may-i-run record) wakes a
/// worker that is `""`, `down`, `timeout` or `offline`, and leaves one that acknowledged
/// `asleep`, `shutdown`, `error` or `testing` as it is, while still noting the contact.
pub async fn contact_never_overrides_an_acknowledged_status(store: Arc<dyn Store>) {
    let cases = [
        ("", worker_status::AWAKE),
        (worker_status::DOWN, worker_status::AWAKE),
        (worker_status::TIMEOUT, worker_status::AWAKE),
        (worker_status::OFFLINE, worker_status::AWAKE),
        (worker_status::AWAKE, worker_status::AWAKE),
        (worker_status::ASLEEP, worker_status::ASLEEP),
        (worker_status::SHUTDOWN, worker_status::SHUTDOWN),
        ("error", "error"),
        ("testing", "testing"),
    ];
    for (n, (before, after)) in cases.into_iter().enumerate() {
        let id = oid(&format!("a{n}a{n}a{n}a{n}a{n}a{n}a{n}a{n}a{n}a{n}a{n}a{n}"));
        let mut w = test_worker(id, &format!("w{n}"), &["sleeping"]);
        w.status = before.into();
        add_worker(&store, &w).await;
        let contact = seen(at(10 + n as i64), "10.0.0.9", "Flamenco-Worker/2.5", true);
        assert!(store.worker_seen(id, &contact).await.expect("seen"));
        let got = worker(&store, id).await;
        assert_eq!(got.status, after, "a contact from a {before:?} worker");
        assert_eq!(
            got.last_activity,
            Some(at(10 + n as i64)),
            "the contact is noted ({before:?})"
        );
        assert_eq!(got.address, "10.0.0.9", "({before:?})");
        assert_eq!(got.software, "Flamenco-Worker/2.5", "({before:?})");
    }
}

/// Sign-on wakes a worker whatever its status: the worker process started afresh.
pub async fn sign_on_wakes_an_asleep_worker(store: Arc<dyn Store>) {
    for (n, before) in [worker_status::ASLEEP, worker_status::SHUTDOWN, "error"]
        .into_iter()
        .enumerate()
    {
        let id = oid(&format!("b{n}b{n}b{n}b{n}b{n}b{n}b{n}b{n}b{n}b{n}b{n}b{n}"));
        let mut w = test_worker(id, &format!("w{n}"), &["sleeping"]);
        w.status = before.into();
        add_worker(&store, &w).await;
        let contact = seen(at(20), "10.0.0.9", "Flamenco-Worker/2.5", true);
        assert!(store
            .worker_sign_on(id, &SignOn::default(), &contact)
            .await
            .expect("sign on"));
        assert_eq!(
            worker(&store, id).await.status,
            worker_status::AWAKE,
            "sign-on of a {before:?} worker"
        );
    }
}

/// Sign-off withdraws every pending request: a `shutdown` is fulfilled, and a `sleep` or
/// `wake` the worker left without obeying does not carry over to its next start. A
/// request made while the worker is offline waits for its next start (no sign-off follows
/// it).
pub async fn sign_off_withdraws_pending_requests(store: Arc<dyn Store>) {
    for (n, requested) in [
        RequestedStatus::Asleep,
        RequestedStatus::Awake,
        RequestedStatus::Shutdown,
    ]
    .into_iter()
    .enumerate()
    {
        let id = oid(&format!("c{n}c{n}c{n}c{n}c{n}c{n}c{n}c{n}c{n}c{n}c{n}c{n}"));
        let mut w = test_worker(id, &format!("w{n}"), &["sleeping"]);
        w.status = worker_status::AWAKE.into();
        w.software = "Flamenco-Worker/2.5".into();
        add_worker(&store, &w).await;
        assert!(store
            .set_worker_status_requested(id, Some(requested))
            .await
            .expect("request"));
        store.sign_off_worker(id, at(30)).await.expect("sign off");
        let got = worker(&store, id).await;
        assert_eq!(got.status, worker_status::DOWN);
        assert_eq!(
            got.status_requested, None,
            "a pending {requested} after sign-off"
        );

        // Requested while offline: kept for the next start, and sign-on keeps it.
        assert!(store
            .set_worker_status_requested(id, Some(requested))
            .await
            .expect("request"));
        let contact = seen(at(31), "10.0.0.9", "Flamenco-Worker/2.5", true);
        assert!(store
            .worker_sign_on(id, &SignOn::default(), &contact)
            .await
            .expect("sign on"));
        assert_eq!(worker(&store, id).await.status_requested, Some(requested));
    }
}
