//! Conformance cases for the standalone claim ([`crate::store::ClaimStore`]): the
//! worker's stopped (`cancel-requested`) tasks are canceled and queued before the claim,
//! its own `active` task comes back first, and nothing of another worker is touched.

use std::sync::Arc;

use super::{
    add_tasks, add_worker, assert_same_update, at, claim_request, nth_id, outbox, prio_task, task,
    test_worker, worker, worker_update,
};
use crate::model::TaskStatus;
use crate::store::claims::stopped_update;
use crate::store::Store;
use crate::updates::{self, WorkerUpdateOutcome};

/// A worker asking for a task stopped its `cancel-requested` tasks: they are `canceled`
/// (the update queued), then the claim gives back its `active` task, and only when it
/// has none a new one. Another worker's `cancel-requested` task stays as it is.
pub async fn claim_after_stops_cancels_then_claims(store: Arc<dyn Store>) {
    let w = test_worker(nth_id(0xc1, 1), "stopper", &["sleeping"]);
    let other = test_worker(nth_id(0xc1, 2), "other", &["sleeping"]);
    let idle = test_worker(nth_id(0xc1, 3), "idle", &["nothing-queued"]);
    for x in [&w, &other, &idle] {
        add_worker(&store, x).await;
    }
    let mut stopped = prio_task(nth_id(0xc2, 1), "sleeping", 0, 50);
    stopped.status = TaskStatus::CancelRequested;
    stopped.worker_id = Some(w.id);
    let mut stopped_too = prio_task(nth_id(0xc2, 2), "sleeping", 0, 50);
    stopped_too.status = TaskStatus::CancelRequested;
    stopped_too.worker_id = Some(w.id);
    let mut running = prio_task(nth_id(0xc2, 3), "sleeping", 0, 50);
    running.status = TaskStatus::Active;
    running.worker_id = Some(w.id);
    running.last_worker_ping = Some(at(0));
    let mut others = prio_task(nth_id(0xc2, 4), "sleeping", 0, 50);
    others.status = TaskStatus::CancelRequested;
    others.worker_id = Some(other.id);
    let queued = prio_task(nth_id(0xc2, 5), "sleeping", 0, 10);
    add_tasks(
        &store,
        &[
            stopped.clone(),
            stopped_too.clone(),
            running.clone(),
            others.clone(),
            queued.clone(),
        ],
    )
    .await;

    let req = claim_request(&w, at(1_000));
    let outcome = store.claim_after_stops(&req).await.expect("claim");
    assert_eq!(outcome.canceled, vec![stopped.id, stopped_too.id]);
    let claimed = outcome.claimed.expect("its active task again");
    assert!(claimed.already_assigned);
    assert_eq!(claimed.task.id, running.id);
    assert_eq!(claimed.task.commands, running.commands, "the whole task");
    assert_eq!(claimed.task, task(&store, running.id).await);
    for id in [stopped.id, stopped_too.id] {
        assert_eq!(task(&store, id).await.status, TaskStatus::Canceled);
    }
    assert_eq!(
        task(&store, others.id).await.status,
        TaskStatus::CancelRequested,
        "another worker's task is not touched"
    );
    assert_eq!(task(&store, queued.id).await, queued);
    let sent = outbox(&store).await;
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_same_update(&sent[0], &stopped_update(stopped.id, &req).expect("update"));
    assert_same_update(
        &sent[1],
        &stopped_update(stopped_too.id, &req).expect("update"),
    );
    assert_same_update(
        &sent[2],
        &updates::assignment_status_update(running.id, req.now),
    );
    assert_eq!(
        worker(&store, w.id).await.current_task,
        None,
        "the caller writes current_task (deferred)"
    );

    // Nothing left to stop; the active task comes back until it is finished.
    let again = store
        .claim_after_stops(&claim_request(&w, at(2_000)))
        .await
        .expect("claim");
    assert!(again.canceled.is_empty());
    assert_eq!(again.claimed.expect("a task").task.id, running.id);
    let done = store
        .apply_worker_update(
            w.id,
            worker_update(
                running.id,
                &w,
                Some(TaskStatus::Completed),
                "done",
                at(3_000),
            ),
        )
        .await
        .expect("update");
    assert_eq!(done, WorkerUpdateOutcome::Applied);
    let next = store
        .claim_after_stops(&claim_request(&w, at(4_000)))
        .await
        .expect("claim");
    assert!(next.canceled.is_empty());
    let next = next.claimed.expect("the queued task");
    assert!(!next.already_assigned);
    assert_eq!(next.task.id, queued.id);
    assert_eq!(next.task.status, TaskStatus::Active);
    assert_eq!(next.task.worker_id, Some(w.id));

    // A worker with nothing to stop and nothing to do.
    let empty = store
        .claim_after_stops(&claim_request(&idle, at(5_000)))
        .await
        .expect("claim");
    assert!(empty.canceled.is_empty());
    assert!(empty.claimed.is_none());
}

/// After claims that found nothing (which a store may remember to answer the next empty
/// poll from a read), new work is still seen at once: a worker's own task set
/// `cancel-requested` since, a task queued since, and a task whose parent completed since.
pub async fn claim_after_empty_claims_sees_new_work(store: Arc<dyn Store>) {
    let w = test_worker(nth_id(0xc3, 1), "poller", &["sleeping"]);
    let w2 = test_worker(nth_id(0xc3, 2), "second", &["sleeping"]);
    add_worker(&store, &w).await;
    add_worker(&store, &w2).await;
    let empty = |worker: &crate::model::Worker, n: i64| {
        let (store, req) = (store.clone(), claim_request(worker, at(n)));
        async move {
            let outcome = store.claim_after_stops(&req).await.expect("claim");
            assert!(outcome.canceled.is_empty(), "{outcome:?}");
            assert!(outcome.claimed.is_none(), "{outcome:?}");
        }
    };
    empty(&w, 1_000).await;
    empty(&w, 2_000).await;

    // Its own task, `cancel-requested` since, with nothing to claim: canceled.
    let mut stopping = prio_task(nth_id(0xc4, 1), "sleeping", 0, 10);
    stopping.status = TaskStatus::CancelRequested;
    stopping.worker_id = Some(w.id);
    add_tasks(&store, std::slice::from_ref(&stopping)).await;
    let stopped = store
        .claim_after_stops(&claim_request(&w, at(3_000)))
        .await
        .expect("claim");
    assert_eq!(stopped.canceled, vec![stopping.id]);
    assert!(stopped.claimed.is_none());
    assert_eq!(task(&store, stopping.id).await.status, TaskStatus::Canceled);
    empty(&w, 4_000).await;

    // Queued since the empty claims.
    let queued = prio_task(nth_id(0xc4, 2), "sleeping", 0, 10);
    add_tasks(&store, std::slice::from_ref(&queued)).await;
    let got = store
        .claim_after_stops(&claim_request(&w, at(5_000)))
        .await
        .expect("claim");
    assert_eq!(got.claimed.expect("the new task").task.id, queued.id);

    // A child waits for its parent; once the parent is completed, the child is claimed.
    let mut parent = prio_task(nth_id(0xc4, 3), "other-type", 0, 10);
    parent.status = TaskStatus::Active;
    let mut child = prio_task(nth_id(0xc4, 4), "sleeping", 0, 10);
    child.parents = vec![parent.id];
    add_tasks(&store, &[parent.clone(), child.clone()]).await;
    empty(&w2, 6_000).await;
    empty(&w2, 7_000).await;
    parent.status = TaskStatus::Completed;
    store
        .upsert_tasks(std::slice::from_ref(&parent))
        .await
        .expect("upsert");
    let got = store
        .claim_after_stops(&claim_request(&w2, at(8_000)))
        .await
        .expect("claim");
    assert_eq!(got.claimed.expect("the child").task.id, child.id);
}

/// A free task behind more candidates blocked by a parent than a store reads at once
/// (MongoDB reads 8 per round, the first round with the worker's own tasks in one
/// command) is still found, by both claims, and comes back whole (its commands, which
/// the claim's reads leave out).
pub async fn claim_finds_free_task_behind_many_blocked(store: Arc<dyn Store>) {
    let mut parent = prio_task(nth_id(0xc4, 0), "parent", 0, 50);
    parent.status = TaskStatus::Active;
    parent.worker_id = Some(nth_id(0xc4, 0xff));
    let blocked: Vec<_> = (1..=20u32)
        .map(|n| {
            let mut t = prio_task(nth_id(0xc5, n), "render", 90, 50);
            t.parents = vec![parent.id];
            t
        })
        .collect();
    let first = prio_task(nth_id(0xc6, 1), "render", 10, 50);
    assert!(!first.commands.is_empty());
    let second = prio_task(nth_id(0xc6, 2), "render", 10, 40);
    add_tasks(&store, &blocked).await;
    add_tasks(&store, &[parent, first.clone(), second.clone()]).await;
    let w1 = test_worker(nth_id(0xc7, 1), "one", &["render"]);
    let w2 = test_worker(nth_id(0xc7, 2), "two", &["render"]);
    let w3 = test_worker(nth_id(0xc7, 3), "three", &["render"]);
    for w in [&w1, &w2, &w3] {
        add_worker(&store, w).await;
    }

    let got = store
        .claim_task(&claim_request(&w1, at(1_000)))
        .await
        .expect("claim")
        .expect("the free task with the higher priority");
    assert_eq!(got.task.id, first.id);
    assert_eq!(
        got.task.commands, first.commands,
        "the task comes back whole"
    );
    let got = store
        .claim_after_stops(&claim_request(&w2, at(2_000)))
        .await
        .expect("claim")
        .claimed
        .expect("the other free task");
    assert_eq!(got.task.id, second.id);
    assert_eq!(got.task.commands, second.commands);
    let none = store
        .claim_after_stops(&claim_request(&w3, at(3_000)))
        .await
        .expect("claim");
    assert!(
        none.claimed.is_none(),
        "only blocked tasks are left: {none:?}"
    );
    for t in &blocked {
        assert_eq!(task(&store, t.id).await.status, TaskStatus::Queued);
    }
}
