//! The store conformance suite: what every [`Store`] backend must do, written once.
//!
//! Each `pub async fn` takes a fresh, empty store and panics when the backend misbehaves.
//! A backend runs them all with the crate-internal `conformance_tests!` macro, one
//! `#[tokio::test]` each:
//!
//! ```ignore
//! async fn make() -> (Arc<dyn Store>, tempfile::TempDir) { /* a fresh store */ }
//! crate::store::conformance::conformance_tests!(make);
//! ```
//!
//! Times are whole milliseconds (the precision both backends keep). Data sizes stay in
//! the hundreds, so that a slow test database server still copes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::jobs::status::JobAction;
use crate::model::{
    worker_status, Command, Job, JobStatus, ObjectId, RequestedStatus, Task, TaskCounts,
    TaskStatus, TaskUpdate, Worker,
};
use crate::store::{
    ClaimRequest, JobActionOutcome, JobQuery, JobStatusChange, MergeReport, Seen, SignOn, Store,
    StoreError, TaskOrder, TaskPing, TaskQuery, TaskReport,
};
use crate::updates::{self, MayIRun, Refetched, ReturnOutcome, WorkerUpdateOutcome};

mod logs;
pub use logs::*;
mod worker_states;
pub use worker_states::*;
mod task_actions;
pub use task_actions::*;
mod webhooks;
pub use webhooks::*;
mod bulk;
pub use bulk::*;
mod tags;
pub use tags::*;
mod retries;
pub use retries::*;
mod shared_state;
pub use shared_state::*;
mod claims;
pub use claims::*;

// ---- fixtures ----

/// A fixed time, `offset_ms` after 2023-11-14T22:13:20Z.
pub fn at(offset_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + offset_ms).expect("time in range")
}

/// An id from its 24 hex characters.
pub fn oid(hex: &str) -> ObjectId {
    ObjectId::parse(hex).expect("valid test id")
}

/// The `n`-th of a series of ids in increasing order.
pub fn nth_id(prefix: u8, n: u32) -> ObjectId {
    let mut bytes = [0u8; 12];
    bytes[0] = prefix;
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    ObjectId::from_bytes(bytes)
}

/// v2's "test task" fixture (§10): etag, job/manager/project/user ids, two commands, one
/// parent that does not exist locally, `worker1`; priority 50, job priority 0.
pub fn test_task(id: ObjectId, task_type: &str) -> Task {
    Task {
        id,
        etag: "1234567".into(),
        job: Some(oid("bbbbbbbbbbbbbbbbbbbbbbbb")),
        manager: Some(oid("cccccccccccccccccccccccc")),
        project: Some(oid("dddddddddddddddddddddddd")),
        user: Some(oid("eeeeeeeeeeeeeeeeeeeeeeee")),
        name: "Test task".into(),
        status: TaskStatus::Queued,
        priority: 50,
        job_priority: 0,
        job_type: "unittest".into(),
        task_type: task_type.into(),
        commands: vec![
            Command::new("echo", json!({"message": "Running Blender from {blender}"})),
            Command::new("sleep", json!({"time_in_seconds": 3})),
        ],
        log: String::new(),
        activity: String::new(),
        parents: vec![oid("ffffffffffffffffffffffff")],
        worker: "worker1".into(),
        worker_id: None,
        last_worker_ping: None,
        last_updated: None,
        worker_tag: None,
    }
}

/// A task of `task_type` with the given priorities and no parents.
pub fn prio_task(id: ObjectId, task_type: &str, job_priority: i32, priority: i32) -> Task {
    let mut t = test_task(id, task_type);
    t.parents.clear();
    t.job_priority = job_priority;
    t.priority = priority;
    t
}

/// A registered worker (linux, address `192.168.3.4`).
pub fn test_worker(id: ObjectId, nickname: &str, task_types: &[&str]) -> Worker {
    Worker {
        id,
        hashed_secret: "$2a$10$abcdefghijklmnopqrstuv".into(),
        secret_sha256: String::new(),
        nickname: nickname.into(),
        address: "192.168.3.4".into(),
        status: String::new(),
        platform: "linux".into(),
        time_cost: 0,
        supported_task_types: task_types.iter().map(|s| s.to_string()).collect(),
        software: String::new(),
        current_task: None,
        last_activity: None,
        current_task_status: String::new(),
        current_task_updated: None,
        status_requested: None,
        tags: Vec::new(),
    }
}

/// What the scheduler would send for this worker.
pub fn claim_request(worker: &Worker, now: DateTime<Utc>) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker.id,
        nickname: worker.nickname.clone(),
        ident: worker.identifier(),
        task_types: worker.supported_task_types.clone(),
        worker_tags: worker.tags.clone(),
        now,
    }
}

/// A worker's update, as the HTTP layer builds it.
pub fn worker_update(
    task_id: ObjectId,
    worker: &Worker,
    status: Option<TaskStatus>,
    activity: &str,
    now: DateTime<Utc>,
) -> TaskUpdate {
    let mut u = TaskUpdate::new(task_id, now);
    u.task_status = status;
    u.activity = activity.into();
    u.worker = worker.identifier();
    u
}

async fn add_tasks(store: &Arc<dyn Store>, tasks: &[Task]) {
    store.insert_tasks(tasks).await.expect("insert tasks");
}

async fn add_worker(store: &Arc<dyn Store>, w: &Worker) {
    store.insert_worker(w).await.expect("insert worker");
}

async fn task(store: &Arc<dyn Store>, id: ObjectId) -> Task {
    store
        .get_task(id)
        .await
        .expect("get task")
        .unwrap_or_else(|| panic!("task {id} should exist"))
}

async fn worker(store: &Arc<dyn Store>, id: ObjectId) -> Worker {
    store
        .get_worker(id)
        .await
        .expect("get worker")
        .unwrap_or_else(|| panic!("worker {id} should exist"))
}

async fn claimed_id(store: &Arc<dyn Store>, w: &Worker, now: DateTime<Utc>) -> Option<ObjectId> {
    store
        .claim_task(&claim_request(w, now))
        .await
        .expect("claim")
        .map(|c| c.task.id)
}

/// What the Manager's flush writes after a claim: the worker's contact with its new
/// `current_task` ([`Seen::current_task`]).
async fn assign_deferred(store: &Arc<dyn Store>, w: ObjectId, task: ObjectId, now: DateTime<Utc>) {
    let mut contact = seen(now, "", "", false);
    contact.current_task = Some(task);
    store
        .write_deferred(&[(w, contact)], &[])
        .await
        .expect("write deferred");
}

async fn outbox(store: &Arc<dyn Store>) -> Vec<TaskUpdate> {
    store.outbox_peek(10_000).await.expect("outbox peek")
}

/// Compare an update with an expected one, ignoring the (random) id.
fn assert_same_update(got: &TaskUpdate, expected: &TaskUpdate) {
    let mut expected = expected.clone();
    expected.id = got.id;
    assert_eq!(got, &expected);
}

fn seen(now: DateTime<Utc>, address: &str, software: &str, mark_awake: bool) -> Seen {
    Seen {
        now,
        address: address.into(),
        software: software.into(),
        mark_awake,
        task_report: None,
        current_task: None,
    }
}

// ---- tasks ----

/// Every task field survives insert + get, including nested command settings, parent
/// order, unknown statuses and the local-only fields.
pub async fn tasks_round_trip_every_field(store: Arc<dyn Store>) {
    let mut full = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "blender-render");
    full.commands.push(Command::new(
        "blender_render",
        json!({
            "filepath": "{job_storage}/ünïcode ✓.blend",
            "frames": "1-10",
            "cycles_chunk": 1.5,
            "use_gpu": true,
            "nothing": null,
            "nested": {"list": [1, -2, 2.25, "three", null, false], "obj": {"deep": {"x": -7}}},
        }),
    ));
    full.commands.push(Command::new("no-settings", json!({})));
    full.parents = vec![
        oid("ffffffffffffffffffffffff"),
        oid("0123456789abcdef01234567"),
        oid("89abcdef0123456789abcdef"),
    ];
    full.status = TaskStatus::Active;
    full.priority = -5;
    full.job_priority = 70;
    full.log = "line 1\nline 2\n".into();
    full.activity = "Rendering frame 3".into();
    full.worker = "worker1".into();
    full.worker_id = Some(oid("5852bc5198377351f95d103e"));
    full.last_worker_ping = Some(at(1_234));
    full.last_updated = Some(at(5_678));

    let minimal = Task {
        id: oid("2aaaaaaaaaaaaaaaaaaaaaaa"),
        etag: String::new(),
        job: None,
        manager: None,
        project: None,
        user: None,
        name: String::new(),
        status: TaskStatus::Other("paused-by-someone".into()),
        priority: 0,
        job_priority: 0,
        job_type: String::new(),
        task_type: String::new(),
        commands: Vec::new(),
        log: String::new(),
        activity: String::new(),
        parents: Vec::new(),
        worker: String::new(),
        worker_id: None,
        last_worker_ping: None,
        last_updated: None,
        worker_tag: None,
    };
    add_tasks(&store, &[full.clone(), minimal.clone()]).await;

    assert_eq!(task(&store, full.id).await, full);
    assert_eq!(task(&store, minimal.id).await, minimal);
    assert_eq!(
        store
            .get_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"))
            .await
            .expect("get"),
        None
    );
    let all = store.list_tasks(&TaskQuery::default()).await.expect("list");
    assert_eq!(all, vec![full, minimal]);
}

/// `upsert_tasks` inserts new tasks and replaces existing ones wholly, parents included;
/// the updates queued about them still wait.
pub async fn upsert_replaces_whole_tasks(store: Arc<dyn Store>) {
    let parent = test_task(oid("0aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    let mut child = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    child.parents = vec![parent.id];
    add_tasks(&store, &[parent.clone(), child.clone()]).await;

    let mut changed = child.clone();
    changed.parents = vec![];
    changed.priority = 99;
    changed.status = TaskStatus::Active;
    changed.worker_id = Some(oid("5852bc5198377351f95d103e"));
    changed.activity = "replaced".into();
    let new = test_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    let mut note = TaskUpdate::new(child.id, at(1));
    note.activity = "queued before the replacement".into();
    store.queue_update(note.clone()).await.expect("queue");
    store
        .upsert_tasks(&[changed.clone(), new.clone()])
        .await
        .expect("upsert");
    assert_eq!(
        outbox(&store).await,
        vec![note],
        "an update queued about a replaced task still waits"
    );
    assert_eq!(task(&store, changed.id).await, changed);
    assert_eq!(task(&store, new.id).await, new);
    assert_eq!(task(&store, parent.id).await, parent);

    // The replaced task lost its parent: with the parent active it is still schedulable.
    let mut queued = changed.clone();
    queued.status = TaskStatus::Queued;
    queued.worker_id = None;
    let mut busy_parent = parent.clone();
    busy_parent.status = TaskStatus::Active;
    store
        .upsert_tasks(&[queued.clone(), busy_parent])
        .await
        .expect("upsert");
    let w = test_worker(oid("6aaaaaaaaaaaaaaaaaaaaaaa"), "w", &["sleeping"]);
    add_worker(&store, &w).await;
    assert_eq!(claimed_id(&store, &w, at(10_000)).await, Some(queued.id));
}

/// A batch with an existing id, or the same id twice, fails with `Duplicate` and inserts
/// nothing.
pub async fn duplicate_insert_is_refused_atomically(store: Arc<dyn Store>) {
    let a = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    let b = test_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    let c = test_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    add_tasks(&store, std::slice::from_ref(&a)).await;

    let mut changed_a = a.clone();
    changed_a.name = "changed".into();
    match store.insert_tasks(&[b.clone(), changed_a]).await {
        Err(StoreError::Duplicate(id)) => assert_eq!(id, a.id),
        other => panic!("expected Duplicate({}), got {other:?}", a.id),
    }
    assert_eq!(store.get_task(b.id).await.expect("get"), None);
    assert_eq!(task(&store, a.id).await, a);

    match store.insert_tasks(&[c.clone(), c.clone()]).await {
        Err(StoreError::Duplicate(id)) => assert_eq!(id, c.id),
        other => panic!("expected Duplicate({}), got {other:?}", c.id),
    }
    assert_eq!(store.get_task(c.id).await.expect("get"), None);
    assert_eq!(store.outbox_len().await.expect("len"), 0);
    let all = store.list_tasks(&TaskQuery::default()).await.expect("list");
    assert_eq!(all, vec![a]);
}

/// `TaskQuery::order`: by id, in the scheduler's order, or most recently updated first.
pub async fn list_tasks_orders(store: Arc<dyn Store>) {
    let a = prio_task(nth_id(0x20, 1), "sleeping", 0, 10);
    let mut b = prio_task(nth_id(0x20, 2), "sleeping", 5, 1);
    let mut c = prio_task(nth_id(0x20, 3), "sleeping", 0, 90);
    let d = prio_task(nth_id(0x20, 4), "sleeping", 5, 1);
    b.last_updated = Some(at(2_000));
    c.last_updated = Some(at(3_000));
    add_tasks(&store, &[a.clone(), b.clone(), c.clone(), d.clone()]).await;
    let ids = |order| {
        let store = store.clone();
        async move {
            store
                .list_tasks(&TaskQuery {
                    order,
                    ..TaskQuery::default()
                })
                .await
                .expect("list")
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(TaskOrder::Id).await, vec![a.id, b.id, c.id, d.id]);
    assert_eq!(ids(TaskOrder::Schedule).await, vec![b.id, d.id, c.id, a.id]);
    assert_eq!(
        ids(TaskOrder::RecentlyUpdated).await,
        vec![c.id, b.id, a.id, d.id]
    );
    let page = store
        .list_tasks(&TaskQuery {
            order: TaskOrder::Schedule,
            limit: Some(2),
            offset: 1,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![d.id, c.id]
    );
}

/// `list_tasks` honours every filter, orders by id, and pages with limit/offset.
pub async fn list_tasks_filters(store: Arc<dyn Store>) {
    let job1 = oid("bbbbbbbbbbbbbbbbbbbbbbbb");
    let job2 = oid("b2bbbbbbbbbbbbbbbbbbbbbb");
    let w1 = oid("a1a1a1a1a1a1a1a1a1a1a1a1");
    let mut tasks = Vec::new();
    for n in 0..12u32 {
        let mut t = prio_task(
            nth_id(0x10, n),
            if n % 2 == 0 { "sleeping" } else { "testing" },
            0,
            50,
        );
        t.job = Some(if n < 6 { job1 } else { job2 });
        t.status = match n % 3 {
            0 => TaskStatus::Queued,
            1 => TaskStatus::Active,
            _ => TaskStatus::Completed,
        };
        if n % 4 == 1 {
            t.worker_id = Some(w1);
        }
        tasks.push(t);
    }
    // Insert in reverse: the order of results must come from the ids.
    let mut reversed = tasks.clone();
    reversed.reverse();
    add_tasks(&store, &reversed).await;

    let ids = |q: TaskQuery| {
        let store = store.clone();
        async move {
            store
                .list_tasks(&q)
                .await
                .expect("list")
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    let expect = |f: &dyn Fn(&Task) -> bool| -> Vec<ObjectId> {
        tasks.iter().filter(|t| f(t)).map(|t| t.id).collect()
    };

    assert_eq!(ids(TaskQuery::default()).await, expect(&|_| true));
    let q = TaskQuery {
        statuses: vec![TaskStatus::Queued, TaskStatus::Completed],
        ..Default::default()
    };
    assert_eq!(
        ids(q).await,
        expect(&|t| matches!(t.status, TaskStatus::Queued | TaskStatus::Completed))
    );
    let q = TaskQuery {
        task_type: Some("testing".into()),
        ..Default::default()
    };
    assert_eq!(ids(q).await, expect(&|t| t.task_type == "testing"));
    let q = TaskQuery {
        job: Some(job2),
        ..Default::default()
    };
    assert_eq!(ids(q).await, expect(&|t| t.job == Some(job2)));
    let q = TaskQuery {
        worker_id: Some(w1),
        ..Default::default()
    };
    assert_eq!(ids(q).await, expect(&|t| t.worker_id == Some(w1)));
    let q = TaskQuery {
        statuses: vec![TaskStatus::Active],
        task_type: Some("testing".into()),
        job: Some(job1),
        worker_id: Some(w1),
        ..Default::default()
    };
    assert_eq!(
        ids(q).await,
        expect(&|t| t.status == TaskStatus::Active
            && t.task_type == "testing"
            && t.job == Some(job1)
            && t.worker_id == Some(w1))
    );
    let all = expect(&|_| true);
    let q = TaskQuery {
        limit: Some(5),
        offset: 3,
        ..Default::default()
    };
    assert_eq!(ids(q).await, all[3..8].to_vec());
    let q = TaskQuery {
        offset: 10,
        ..Default::default()
    };
    assert_eq!(ids(q).await, all[10..].to_vec());
    let q = TaskQuery {
        limit: Some(0),
        ..Default::default()
    };
    assert_eq!(ids(q).await, Vec::<ObjectId>::new());
    let q = TaskQuery {
        statuses: vec![TaskStatus::CancelRequested],
        ..Default::default()
    };
    assert_eq!(ids(q).await, Vec::<ObjectId>::new());
}

/// Counts per (status, task type), for the metrics scrape; empty combinations may be
/// absent or zero.
pub async fn count_tasks_by_status_and_type(store: Arc<dyn Store>) {
    let counts = store.count_tasks_by_status_and_type().await.expect("count");
    assert!(counts.values().all(|&n| n == 0), "{counts:?}");

    let spec = [
        (TaskStatus::Queued, "blender-render", 3),
        (TaskStatus::Queued, "sleep", 2),
        (TaskStatus::Active, "blender-render", 1),
        (TaskStatus::Completed, "sleep", 4),
        (TaskStatus::Other("paused".into()), "exr-merge", 1),
    ];
    let mut tasks = Vec::new();
    let mut n = 0;
    for (status, task_type, count) in &spec {
        for _ in 0..*count {
            let mut t = prio_task(nth_id(0x21, n), task_type, 0, 50);
            t.status = status.clone();
            tasks.push(t);
            n += 1;
        }
    }
    add_tasks(&store, &tasks).await;
    let counts: BTreeMap<(String, String), u64> = store
        .count_tasks_by_status_and_type()
        .await
        .expect("count")
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    let expected: BTreeMap<(String, String), u64> = spec
        .iter()
        .map(|(s, t, n)| ((s.as_str().to_string(), t.to_string()), *n))
        .collect();
    assert_eq!(counts, expected);
    // The per-status totals agree.
    let by_status = store.count_tasks_by_status().await.expect("count");
    assert_eq!(by_status.get("queued").copied(), Some(5));
}

/// Per-status counts; statuses without tasks may be absent or zero.
pub async fn count_tasks_by_status(store: Arc<dyn Store>) {
    let counts = store.count_tasks_by_status().await.expect("count");
    assert!(counts.values().all(|&n| n == 0), "{counts:?}");

    let mut tasks = Vec::new();
    let statuses = [
        (TaskStatus::Queued, 4),
        (TaskStatus::ClaimedByManager, 3),
        (TaskStatus::Active, 2),
        (TaskStatus::Completed, 5),
        (TaskStatus::Other("cancelled".into()), 1),
    ];
    let mut n = 0;
    for (status, count) in &statuses {
        for _ in 0..*count {
            let mut t = prio_task(nth_id(0x20, n), "sleeping", 0, 50);
            t.status = status.clone();
            tasks.push(t);
            n += 1;
        }
    }
    add_tasks(&store, &tasks).await;
    let counts: BTreeMap<String, u64> = store
        .count_tasks_by_status()
        .await
        .expect("count")
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    let expected: BTreeMap<String, u64> = statuses
        .iter()
        .map(|(s, n)| (s.as_str().to_string(), *n))
        .collect();
    assert_eq!(counts, expected);
}

// ---- the claim ----

/// Claims go by job priority (desc), then priority (desc), then id (oldest first);
/// v2 cases 16 and 17.
pub async fn claim_order(store: Arc<dyn Store>) {
    let tasks = [
        prio_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50),
        prio_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 100),
        prio_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 10, 10),
        prio_task(oid("4aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 10, 10),
        prio_task(oid("5aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 10, 20),
        prio_task(oid("0aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", -1, 1000),
    ];
    // Inserted in an order unrelated to the expected one.
    add_tasks(
        &store,
        &[tasks[3].clone(), tasks[0].clone(), tasks[5].clone()],
    )
    .await;
    add_tasks(
        &store,
        &[tasks[1].clone(), tasks[4].clone(), tasks[2].clone()],
    )
    .await;
    let expected = [4, 2, 3, 1, 0, 5];
    for (n, &which) in expected.iter().enumerate() {
        let w = test_worker(nth_id(0x77, n as u32), &format!("w{n}"), &["sleeping"]);
        add_worker(&store, &w).await;
        let got = claimed_id(&store, &w, at(n as i64)).await;
        assert_eq!(got, Some(tasks[which].id), "claim #{n}");
    }
    let w = test_worker(nth_id(0x77, 99), "late", &["sleeping"]);
    add_worker(&store, &w).await;
    assert_eq!(claimed_id(&store, &w, at(100)).await, None);
}

/// Only tasks of the worker's types are handed out; no types means no task.
pub async fn claim_filters_by_task_type(store: Arc<dyn Store>) {
    let sleeping = prio_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50);
    let testing = prio_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "testing", 0, 100);
    let render = prio_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "blender-render", 5, 100);
    add_tasks(&store, &[sleeping.clone(), testing.clone(), render.clone()]).await;

    let none = test_worker(oid("a0a0a0a0a0a0a0a0a0a0a0a0"), "none", &[]);
    let other = test_worker(oid("a1a1a1a1a1a1a1a1a1a1a1a1"), "other", &["exr-merge"]);
    let lnx = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    let win = test_worker(
        oid("a3a3a3a3a3a3a3a3a3a3a3a3"),
        "workerWin",
        &["testing", "sleeping"],
    );
    for w in [&none, &other, &lnx, &win] {
        add_worker(&store, w).await;
    }
    assert_eq!(claimed_id(&store, &none, at(1)).await, None);
    assert_eq!(claimed_id(&store, &other, at(2)).await, None);
    assert_eq!(claimed_id(&store, &lnx, at(3)).await, Some(sleeping.id));
    // The higher priority `testing` task; the `blender-render` one is not for this worker.
    assert_eq!(claimed_id(&store, &win, at(4)).await, Some(testing.id));
    assert_eq!(task(&store, render.id).await.status, TaskStatus::Queued);
    assert_eq!(store.outbox_len().await.expect("len"), 4);
}

/// Parents (v2 §6.3, cases 21–23): a missing parent counts as completed; an active or
/// failed parent blocks; a task becomes schedulable when all its parents completed.
pub async fn claim_parent_rules(store: Arc<dyn Store>) {
    let mut parent_active = prio_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "parent", 0, 50);
    parent_active.status = TaskStatus::Active;
    parent_active.worker_id = Some(oid("f0f0f0f0f0f0f0f0f0f0f0f0"));
    let mut parent_done = prio_task(oid("1baaaaaaaaaaaaaaaaaaaaaa"), "parent", 0, 50);
    parent_done.status = TaskStatus::Completed;
    let mut parent_failed = prio_task(oid("1caaaaaaaaaaaaaaaaaaaaaa"), "parent", 0, 50);
    parent_failed.status = TaskStatus::Failed;
    let missing = oid("ffffffffffffffffffffffff");

    let child = |id: &str, task_type: &str, parents: Vec<ObjectId>| {
        let mut t = prio_task(oid(id), task_type, 0, 100);
        t.status = TaskStatus::ClaimedByManager;
        t.parents = parents;
        t
    };
    let c_missing = child("2aaaaaaaaaaaaaaaaaaaaaaa", "a", vec![missing]);
    let c_active = child("2baaaaaaaaaaaaaaaaaaaaaa", "b", vec![parent_active.id]);
    let c_failed = child("2caaaaaaaaaaaaaaaaaaaaaa", "c", vec![parent_failed.id]);
    let c_done = child(
        "2daaaaaaaaaaaaaaaaaaaaaa",
        "d",
        vec![parent_done.id, missing],
    );
    let c_mixed = child(
        "2eaaaaaaaaaaaaaaaaaaaaaa",
        "e",
        vec![parent_active.id, parent_done.id],
    );
    let c_none = child("2faaaaaaaaaaaaaaaaaaaaaa", "f", vec![]);
    // Children first: a parent inserted later still counts.
    add_tasks(
        &store,
        &[
            c_missing.clone(),
            c_active.clone(),
            c_failed.clone(),
            c_done.clone(),
            c_mixed.clone(),
            c_none.clone(),
        ],
    )
    .await;
    add_tasks(&store, &[parent_active.clone(), parent_done, parent_failed]).await;

    let mut n = 0u32;
    let mut claim_type = |task_type: &'static str| {
        n += 1;
        let w = test_worker(nth_id(0x66, n), &format!("w{n}"), &[task_type]);
        let store = store.clone();
        async move {
            add_worker(&store, &w).await;
            claimed_id(&store, &w, at(n as i64)).await
        }
    };
    assert_eq!(claim_type("a").await, Some(c_missing.id));
    assert_eq!(claim_type("b").await, None);
    assert_eq!(claim_type("c").await, None);
    assert_eq!(claim_type("d").await, Some(c_done.id));
    assert_eq!(claim_type("e").await, None);
    assert_eq!(claim_type("f").await, Some(c_none.id));

    // The active parent completes: both of its children become schedulable.
    let mut done = TaskUpdate::new(parent_active.id, at(50));
    done.task_status = Some(TaskStatus::Completed);
    store.queue_update(done).await.expect("queue update");
    assert_eq!(claim_type("b").await, Some(c_active.id));
    assert_eq!(claim_type("e").await, Some(c_mixed.id));
    assert_eq!(claim_type("c").await, None);
}

/// A claim makes the task `active` for the worker, pings it, sets the worker's
/// `current_task`, and queues exactly the two assignment updates.
pub async fn claim_assigns_and_queues_two_updates(store: Arc<dyn Store>) {
    let t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    add_tasks(&store, std::slice::from_ref(&t)).await;
    let w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    add_worker(&store, &w).await;

    let now = at(1_000);
    let claimed = store
        .claim_task(&claim_request(&w, now))
        .await
        .expect("claim")
        .expect("a task");
    assert!(!claimed.already_assigned);
    let activity = format!(
        "Manager assigned task {} to worker {}",
        t.id,
        w.identifier()
    );
    let mut expected = t.clone();
    expected.status = TaskStatus::Active;
    expected.worker = w.nickname.clone();
    expected.worker_id = Some(w.id);
    expected.last_worker_ping = Some(now);
    expected.last_updated = Some(now);
    expected.activity = activity.clone();
    assert_eq!(claimed.task, expected);
    assert_eq!(task(&store, t.id).await, expected);
    // The worker's record is the caller's: its `current_task` goes with the deferred
    // "seen" (`Seen::current_task`), which writes it.
    assert_eq!(worker(&store, w.id).await.current_task, None);
    assign_deferred(&store, w.id, t.id, now).await;
    assert_eq!(worker(&store, w.id).await.current_task, Some(t.id));

    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert_same_update(&queued[0], &updates::assignment_status_update(t.id, now));
    assert_same_update(
        &queued[1],
        &updates::assignment_log_update(t.id, &w.identifier(), now),
    );
    assert_eq!(queued[0].task_status, Some(TaskStatus::Active));
    assert_eq!(queued[1].activity, activity);
    assert_ne!(queued[0].id, queued[1].id);
}

/// v2 case 25: a worker with an `active` task gets it again (whatever its types), with
/// a fresh ping and the two updates queued again; other tasks stay untouched.
pub async fn claim_returns_already_assigned_task(store: Arc<dyn Store>) {
    let lnx = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    add_worker(&store, &lnx).await;
    let mut t1 = prio_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50);
    t1.status = TaskStatus::Active;
    t1.worker_id = Some(lnx.id);
    t1.worker = lnx.identifier();
    t1.last_worker_ping = Some(at(0));
    let mut t2 = prio_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 55);
    t2.worker = String::new();
    add_tasks(&store, &[t1.clone(), t2.clone()]).await;

    let now = at(2_000);
    let claimed = store
        .claim_task(&claim_request(&lnx, now))
        .await
        .expect("claim")
        .expect("a task");
    assert!(claimed.already_assigned);
    assert_eq!(claimed.task.id, t1.id);
    assert_eq!(claimed.task.status, TaskStatus::Active);
    assert_eq!(claimed.task.worker_id, Some(lnx.id));
    assert_eq!(claimed.task.last_worker_ping, Some(now));
    assert_eq!(claimed.task.commands, t1.commands);
    let stored = task(&store, t1.id).await;
    assert_eq!(stored, claimed.task);

    let untouched = task(&store, t2.id).await;
    assert_eq!(untouched, t2);
    assert_eq!(
        worker(&store, lnx.id).await.current_task,
        None,
        "written by the caller"
    );

    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 2);
    assert_same_update(&queued[0], &updates::assignment_status_update(t1.id, now));
    assert_same_update(
        &queued[1],
        &updates::assignment_log_update(t1.id, &lnx.identifier(), now),
    );

    // The already-assigned check ignores task types.
    let mut other_types = claim_request(&lnx, at(3_000));
    other_types.task_types = vec!["something-else".into()];
    let again = store
        .claim_task(&other_types)
        .await
        .expect("claim")
        .expect("a task");
    assert!(again.already_assigned);
    assert_eq!(again.task.id, t1.id);
}

/// v2 case 26: tasks assigned to the worker that are no longer `active` are ignored.
pub async fn claim_ignores_non_active_tasks_of_worker(store: Arc<dyn Store>) {
    let lnx = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    add_worker(&store, &lnx).await;
    let mut tasks = Vec::new();
    for (id, status) in [
        ("1aaaaaaaaaaaaaaaaaaaaaaa", TaskStatus::Failed),
        ("2aaaaaaaaaaaaaaaaaaaaaaa", TaskStatus::Completed),
        (
            "3aaaaaaaaaaaaaaaaaaaaaaa",
            TaskStatus::Other("cancelled".into()),
        ),
    ] {
        let mut t = prio_task(oid(id), "sleeping", 0, 50);
        t.status = status;
        t.worker_id = Some(lnx.id);
        t.worker = lnx.identifier();
        tasks.push(t);
    }
    let t4 = prio_task(oid("4aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 30);
    tasks.push(t4.clone());
    add_tasks(&store, &tasks).await;

    let claimed = store
        .claim_task(&claim_request(&lnx, at(1)))
        .await
        .expect("claim")
        .expect("a task");
    assert_eq!(claimed.task.id, t4.id);
    assert!(!claimed.already_assigned);
    for t in &tasks[..3] {
        assert_eq!(&task(&store, t.id).await, t);
    }
}

/// 16 workers claim 300 tasks concurrently (each completing its task before the next
/// claim): every task is handed out exactly once.
pub async fn concurrent_claims_hand_out_each_task_once(store: Arc<dyn Store>) {
    const TASKS: u32 = 300;
    const WORKERS: u32 = 16;
    let tasks: Vec<Task> = (0..TASKS)
        .map(|n| prio_task(nth_id(0x30, n), "sleeping", (n % 3) as i32, (n % 7) as i32))
        .collect();
    add_tasks(&store, &tasks).await;
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let w = test_worker(nth_id(0x40, n), &format!("worker{n}"), &["sleeping"]);
        add_worker(&store, &w).await;
        workers.push(w);
    }

    let repeated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in workers.clone() {
        let store = store.clone();
        let repeated = repeated.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut tick = 0;
            // A call a loaded server did not answer in time (`Unavailable`, a 503 to a
            // worker) is made again, as workers do. The unanswered claim may still be
            // applied later, so from then on this worker may get a task back as
            // already assigned; no task may go to two workers either way.
            let mut unanswered = false;
            let mut retries = 0;
            loop {
                tick += 1;
                let claimed = match store.claim_task(&claim_request(&w, at(tick))).await {
                    Ok(claimed) => claimed,
                    Err(StoreError::Unavailable(why)) => {
                        unanswered = true;
                        repeated.store(true, std::sync::atomic::Ordering::Relaxed);
                        retries += 1;
                        assert!(retries < 40, "claim: {why}");
                        continue;
                    }
                    Err(e) => panic!("claim: {e}"),
                };
                let Some(claimed) = claimed else { break };
                assert!(
                    !claimed.already_assigned || unanswered,
                    "{} got its task again",
                    w.nickname
                );
                assert_eq!(claimed.task.worker_id, Some(w.id));
                if !mine.contains(&claimed.task.id) {
                    mine.push(claimed.task.id);
                }
                let done = worker_update(
                    claimed.task.id,
                    &w,
                    Some(TaskStatus::Completed),
                    "done",
                    at(tick),
                );
                let mut resent = false;
                let outcome = loop {
                    match store.apply_worker_update(w.id, done.clone()).await {
                        Ok(outcome) => break outcome,
                        Err(StoreError::Unavailable(why)) => {
                            resent = true;
                            repeated.store(true, std::sync::atomic::Ordering::Relaxed);
                            retries += 1;
                            assert!(retries < 40, "update: {why}");
                        }
                        Err(e) => panic!("update: {e}"),
                    }
                };
                assert!(
                    resent || outcome == WorkerUpdateOutcome::Applied,
                    "{outcome:?}"
                );
            }
            (w.id, mine)
        }));
    }
    let mut seen_once = BTreeSet::new();
    let mut total = 0;
    for h in handles {
        let (worker_id, mine) = h.await.expect("worker task panicked");
        for id in mine {
            total += 1;
            assert!(seen_once.insert(id), "task {id} was claimed twice");
            assert_eq!(task(&store, id).await.worker_id, Some(worker_id));
        }
    }
    assert_eq!(total, TASKS as usize);
    let expected: BTreeSet<ObjectId> = tasks.iter().map(|t| t.id).collect();
    assert_eq!(seen_once, expected);
    let counts = store.count_tasks_by_status().await.expect("count");
    assert_eq!(counts.get("completed"), Some(&(TASKS as u64)));
    let queued = store.outbox_len().await.expect("len");
    if repeated.load(std::sync::atomic::Ordering::Relaxed) {
        // A repeated call may queue its updates twice (at least once).
        assert!(queued >= 3 * TASKS as u64, "{queued}");
    } else {
        assert_eq!(
            queued,
            3 * TASKS as u64,
            "two assignment updates and one worker update per task"
        );
    }
}

// ---- the outbox ----

/// The outbox keeps arrival order (not time order); peek respects the limit; ack removes
/// exactly the given ids and counts them.
pub async fn outbox_order_and_ack(store: Arc<dyn Store>) {
    assert_eq!(store.outbox_len().await.expect("len"), 0);
    assert!(outbox(&store).await.is_empty());
    let t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    add_tasks(&store, std::slice::from_ref(&t)).await;

    let mut sent = Vec::new();
    // Times deliberately not increasing; some for an unknown task.
    for (n, offset) in [5_000i64, 1_000, 3_000, 2_000, 4_000, 0]
        .into_iter()
        .enumerate()
    {
        let task_id = if n % 2 == 0 {
            t.id
        } else {
            oid("9aaaaaaaaaaaaaaaaaaaaaaa")
        };
        let mut u = TaskUpdate::new(task_id, at(offset));
        u.activity = format!("update {n}");
        u.log = format!("log line {n}\n");
        u.task_progress_percentage = n as i64 * 10;
        u.current_command_idx = n as i64;
        u.command_progress_percentage = 100 - n as i64;
        u.worker = if n == 3 { "-".into() } else { String::new() };
        if n == 2 {
            u.task_status = Some(TaskStatus::Other("weird".into()));
        }
        store.queue_update(u.clone()).await.expect("queue");
        sent.push(u);
    }
    assert_eq!(store.outbox_len().await.expect("len"), 6);
    assert_eq!(outbox(&store).await, sent);
    assert_eq!(
        store.outbox_peek(2).await.expect("peek"),
        sent[..2].to_vec()
    );
    assert_eq!(store.outbox_peek(0).await.expect("peek"), Vec::new());

    let removed = store
        .outbox_ack(&[sent[1].id, sent[4].id, oid("0badbadbadbadbadbadbadba")])
        .await
        .expect("ack");
    assert_eq!(removed, 2);
    let left: Vec<TaskUpdate> = [0, 2, 3, 5].iter().map(|&i| sent[i].clone()).collect();
    assert_eq!(outbox(&store).await, left);
    assert_eq!(store.outbox_len().await.expect("len"), 4);
    // Acknowledging again removes nothing.
    assert_eq!(store.outbox_ack(&[sent[1].id]).await.expect("ack"), 0);
    assert_eq!(store.outbox_ack(&[]).await.expect("ack"), 0);

    // New updates go after the remaining ones.
    let late = TaskUpdate::new(t.id, at(-1_000));
    store.queue_update(late.clone()).await.expect("queue");
    let mut expected = left;
    expected.push(late);
    assert_eq!(outbox(&store).await, expected);
}

/// Manager-made updates (v2 §7.2): outbox entry, status per the local rules, non-empty
/// activity, `last_updated`; log and progress never stored on the task; a missing task
/// only gets the outbox entry.
pub async fn queue_update_applies_locally(store: Arc<dyn Store>) {
    let mut t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    t.log = "log from the Server".into();
    t.activity = "old activity".into();
    let mut cancel = test_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    cancel.status = TaskStatus::CancelRequested;
    add_tasks(&store, &[t.clone(), cancel.clone()]).await;

    // A missing task: just queued.
    let mut ghost = TaskUpdate::new(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), at(1));
    ghost.task_status = Some(TaskStatus::Failed);
    store.queue_update(ghost.clone()).await.expect("queue");
    assert_eq!(outbox(&store).await, vec![ghost.clone()]);
    assert_eq!(
        store.get_task(ghost.task_id).await.expect("get"),
        None,
        "no task is created"
    );

    // Status and activity apply; the log does not.
    let mut u = TaskUpdate::new(t.id, at(2));
    u.task_status = Some(TaskStatus::Active);
    u.activity = "new activity".into();
    u.log = "a log line".into();
    u.task_progress_percentage = 40;
    store.queue_update(u.clone()).await.expect("queue");
    let after = task(&store, t.id).await;
    assert_eq!(after.status, TaskStatus::Active);
    assert_eq!(after.activity, "new activity");
    assert_eq!(after.log, "log from the Server");
    assert_eq!(after.last_updated, Some(at(2)));
    assert_eq!(after.worker_id, None);

    // No status, empty activity: only last_updated changes.
    let quiet = TaskUpdate::new(t.id, at(3));
    store.queue_update(quiet).await.expect("queue");
    let after = task(&store, t.id).await;
    assert_eq!(after.status, TaskStatus::Active);
    assert_eq!(after.activity, "new activity");
    assert_eq!(after.last_updated, Some(at(3)));

    // Final statuses are sticky against non-final updates, yet still queued.
    let mut failed = TaskUpdate::new(t.id, at(4));
    failed.task_status = Some(TaskStatus::Failed);
    store.queue_update(failed).await.expect("queue");
    let mut back = TaskUpdate::new(t.id, at(5));
    back.task_status = Some(TaskStatus::Active);
    store.queue_update(back.clone()).await.expect("queue");
    assert_eq!(task(&store, t.id).await.status, TaskStatus::Failed);

    // Nothing leaves cancel-requested but a final status.
    let mut active = TaskUpdate::new(cancel.id, at(6));
    active.task_status = Some(TaskStatus::Active);
    store.queue_update(active).await.expect("queue");
    assert_eq!(
        task(&store, cancel.id).await.status,
        TaskStatus::CancelRequested
    );
    let mut canceled = TaskUpdate::new(cancel.id, at(7));
    canceled.task_status = Some(TaskStatus::Canceled);
    store.queue_update(canceled).await.expect("queue");
    assert_eq!(task(&store, cancel.id).await.status, TaskStatus::Canceled);

    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 7);
    assert_eq!(queued[1], u);
    assert_eq!(queued[4], back);
}

/// Un-assignment (v2 §6.4 step 6) requeues only a task still `active` for this worker;
/// `worker` and `worker_id` are kept (v2 case 24).
pub async fn unassign_task_requeues_only_own_active_task(store: Arc<dyn Store>) {
    let lnx = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    let win = test_worker(oid("a3a3a3a3a3a3a3a3a3a3a3a3"), "workerWin", &["sleeping"]);
    add_worker(&store, &lnx).await;
    add_worker(&store, &win).await;
    let t = prio_task(oid("aaaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50);
    add_tasks(&store, std::slice::from_ref(&t)).await;
    let claimed = claimed_id(&store, &lnx, at(1)).await;
    assert_eq!(claimed, Some(t.id));

    // Another worker's un-assignment does nothing.
    let u = updates::unassign_update(t.id, &win.identifier(), "broken pipe", at(2));
    store.unassign_task(win.id, u).await.expect("unassign");
    assert_eq!(task(&store, t.id).await.status, TaskStatus::Active);
    assert_eq!(store.outbox_len().await.expect("len"), 2);

    let u = updates::unassign_update(t.id, &lnx.identifier(), "broken pipe", at(3));
    store
        .unassign_task(lnx.id, u.clone())
        .await
        .expect("unassign");
    let after = task(&store, t.id).await;
    assert_eq!(after.status, TaskStatus::ClaimedByManager);
    assert_eq!(after.worker, "workerLnx");
    assert_eq!(after.worker_id, Some(lnx.id));
    assert_eq!(after.activity, u.activity);
    assert_eq!(after.last_updated, Some(at(3)));
    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 3);
    assert_eq!(queued[2], u);

    // Once it is no longer active, a second un-assignment does nothing.
    let again = updates::unassign_update(t.id, &lnx.identifier(), "again", at(4));
    store.unassign_task(lnx.id, again).await.expect("unassign");
    assert_eq!(store.outbox_len().await.expect("len"), 3);
    // Unknown tasks are fine.
    let ghost = updates::unassign_update(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), "x", "y", at(5));
    store.unassign_task(lnx.id, ghost).await.expect("unassign");
    assert_eq!(store.outbox_len().await.expect("len"), 3);
}

// ---- worker updates ----

/// The four outcomes of a worker's update, and what an accepted one stores.
pub async fn worker_update_outcomes(store: Arc<dyn Store>) {
    let w1 = test_worker(oid("a1a1a1a1a1a1a1a1a1a1a1a1"), "worker1", &["testing"]);
    let w2 = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "worker2", &["testing"]);
    add_worker(&store, &w1).await;
    add_worker(&store, &w2).await;
    let mut mine = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    mine.status = TaskStatus::Completed;
    mine.worker_id = Some(w1.id);
    mine.log = "server log".into();
    mine.activity = "finished".into();
    let mut theirs = test_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    theirs.status = TaskStatus::Active;
    theirs.worker_id = Some(w2.id);
    // Canceled before anyone ran it (a canceled task's own worker gets its last words
    // kept: `last_words_of_a_canceled_task_are_kept`).
    let mut canceled = test_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    canceled.status = TaskStatus::Canceled;
    add_tasks(&store, &[mine.clone(), theirs.clone(), canceled.clone()]).await;

    let ghost = worker_update(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), &w1, None, "x", at(1));
    assert_eq!(
        store
            .apply_worker_update(w1.id, ghost)
            .await
            .expect("update"),
        WorkerUpdateOutcome::NotFound
    );
    let u = worker_update(theirs.id, &w1, Some(TaskStatus::Failed), "x", at(2));
    assert_eq!(
        store.apply_worker_update(w1.id, u).await.expect("update"),
        WorkerUpdateOutcome::AssignedToOther
    );
    let u = worker_update(canceled.id, &w1, Some(TaskStatus::Active), "x", at(3));
    assert_eq!(
        store.apply_worker_update(w1.id, u).await.expect("update"),
        WorkerUpdateOutcome::NotRunnable(TaskStatus::Canceled)
    );
    assert_eq!(task(&store, theirs.id).await, theirs);
    assert_eq!(task(&store, canceled.id).await, canceled);
    assert_eq!(store.outbox_len().await.expect("len"), 0);
    let w1_now = worker(&store, w1.id).await;
    assert_eq!(w1_now.current_task_updated, None);
    assert_eq!(w1_now.current_task_status, "");

    // Accepted: a completed task is not moved back to active locally, but the update is
    // queued as sent; log and progress stay out of the task; the empty activity too.
    let mut u = worker_update(mine.id, &w1, Some(TaskStatus::Active), "", at(4));
    u.log = "worker log line".into();
    u.task_progress_percentage = 30;
    u.current_command_idx = 1;
    u.command_progress_percentage = 60;
    assert_eq!(
        store
            .apply_worker_update(w1.id, u.clone())
            .await
            .expect("update"),
        WorkerUpdateOutcome::Applied
    );
    let after = task(&store, mine.id).await;
    assert_eq!(after.status, TaskStatus::Completed);
    assert_eq!(after.log, "server log");
    assert_eq!(after.activity, "finished");
    assert_eq!(after.last_worker_ping, Some(at(4)));
    assert_eq!(after.last_updated, Some(at(4)));
    assert_eq!(after.worker_id, Some(w1.id));
    assert_eq!(outbox(&store).await, vec![u]);
    // What the update shows on the worker is the caller's, written with the deferred
    // "seen" (`write_deferred_contacts_reports_and_pings`): the store leaves the worker.
    let w1_now = worker(&store, w1.id).await;
    assert_eq!(w1_now.current_task_updated, None);
    assert_eq!(w1_now.current_task_status, "");

    let u = worker_update(mine.id, &w1, None, "still going", at(5));
    assert_eq!(
        store.apply_worker_update(w1.id, u).await.expect("update"),
        WorkerUpdateOutcome::Applied
    );
    let after = task(&store, mine.id).await;
    assert_eq!(after.activity, "still going");
    let w1_now = worker(&store, w1.id).await;
    assert_eq!(w1_now.current_task_updated, None);
    assert_eq!(w1_now.current_task, None, "updates do not set current_task");
}

/// v2 case 5 (MultipleWorkersForOneTask): the first worker to update an unassigned task
/// claims it; the second gets `AssignedToOther` and changes nothing.
pub async fn worker_update_v2_multiple_workers_for_one_task(store: Arc<dyn Store>) {
    let w1 = test_worker(oid("a1a1a1a1a1a1a1a1a1a1a1a1"), "worker1", &["testing"]);
    let w2 = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "worker2", &["testing"]);
    add_worker(&store, &w1).await;
    add_worker(&store, &w2).await;
    let t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    add_tasks(&store, std::slice::from_ref(&t)).await;

    let u1 = worker_update(t.id, &w1, None, "doing stuff by worker1", at(1));
    assert_eq!(
        store.apply_worker_update(w1.id, u1).await.expect("update"),
        WorkerUpdateOutcome::Applied
    );
    let after = task(&store, t.id).await;
    assert_eq!(after.worker_id, Some(w1.id));
    assert_eq!(after.activity, "doing stuff by worker1");
    assert_eq!(after.status, TaskStatus::Queued);

    let u2 = worker_update(t.id, &w2, None, "doing stuff by worker2", at(2));
    assert_eq!(
        store.apply_worker_update(w2.id, u2).await.expect("update"),
        WorkerUpdateOutcome::AssignedToOther
    );
    assert_eq!(task(&store, t.id).await, after);
    assert_eq!(store.outbox_len().await.expect("len"), 1);
    assert_eq!(worker(&store, w2.id).await.current_task_updated, None);
}

/// v2 case 6 (UpdateForCancelRequestedTask), changed on purpose: v2 refused the update
/// (409); here the task's own worker's update keeps its activity (and log) but not its
/// status, and is queued without it.
pub async fn worker_update_v2_cancel_requested_task(store: Arc<dyn Store>) {
    let w1 = test_worker(oid("a1a1a1a1a1a1a1a1a1a1a1a1"), "worker1", &["testing"]);
    add_worker(&store, &w1).await;
    let mut t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    t.status = TaskStatus::CancelRequested;
    t.worker_id = Some(w1.id);
    t.activity = "Cancel requested by unittest".into();
    add_tasks(&store, std::slice::from_ref(&t)).await;

    let u = worker_update(
        t.id,
        &w1,
        Some(TaskStatus::Active),
        "doing stuff by worker1",
        at(1),
    );
    assert_eq!(
        store.apply_worker_update(w1.id, u).await.expect("update"),
        WorkerUpdateOutcome::LastWords(TaskStatus::CancelRequested)
    );
    let after = task(&store, t.id).await;
    assert_eq!(after.status, TaskStatus::CancelRequested);
    assert_eq!(after.activity, "doing stuff by worker1");
    assert_eq!(after.last_updated, Some(at(1)));
    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].task_status, None);
}

/// v2 case 7 (TaskRescheduling) at store level: update by worker1, worker1 signs off,
/// worker2 claims the task and fails it.
pub async fn worker_update_v2_task_rescheduling(store: Arc<dyn Store>) {
    let w1 = test_worker(oid("a1a1a1a1a1a1a1a1a1a1a1a1"), "worker1", &["testing"]);
    let w2 = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "worker2", &["testing"]);
    add_worker(&store, &w1).await;
    add_worker(&store, &w2).await;
    let t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    add_tasks(&store, std::slice::from_ref(&t)).await;

    // (a)
    let u = worker_update(
        t.id,
        &w1,
        Some(TaskStatus::Active),
        "doing stuff by worker1",
        at(100),
    );
    assert_eq!(
        store.apply_worker_update(w1.id, u).await.expect("update"),
        WorkerUpdateOutcome::Applied
    );
    let after = task(&store, t.id).await;
    assert_eq!(after.worker_id, Some(w1.id));
    assert_eq!(after.activity, "doing stuff by worker1");
    assert_eq!(after.status, TaskStatus::Active);

    // (b)
    let requeued = store
        .sign_off_worker(w1.id, at(200))
        .await
        .expect("sign off");
    assert_eq!(requeued, vec![t.id]);
    let claimed = store
        .claim_task(&claim_request(&w2, at(300)))
        .await
        .expect("claim")
        .expect("a task");
    assert_eq!(claimed.task.id, t.id);
    assert_eq!(claimed.task.status, TaskStatus::Active);
    assert!(!claimed.already_assigned);

    // (c)
    let u = worker_update(
        t.id,
        &w2,
        Some(TaskStatus::Failed),
        "doing stuff by worker2",
        at(800),
    );
    assert_eq!(
        store.apply_worker_update(w2.id, u).await.expect("update"),
        WorkerUpdateOutcome::Applied
    );
    let after = task(&store, t.id).await;
    assert_eq!(after.worker_id, Some(w2.id));
    assert_eq!(after.status, TaskStatus::Failed);
    assert_eq!(after.activity, "doing stuff by worker2");

    // The workers' `current_task_*` are written by the deferred "seen", not here (v2's
    // check of them is in `write_deferred_contacts_reports_and_pings` and
    // flamenco-serve's v2_cases.rs).
    assert_eq!(worker(&store, w2.id).await.current_task_updated, None);
}

// ---- may-i-run, return, sign-off ----

/// Coalesced may-i-run pings: the light state read, and pings written later only while the
/// task is still runnable and the worker's (never claiming, never moving a ping back).
pub async fn record_pings_only_for_own_runnable_tasks(store: Arc<dyn Store>) {
    let w = test_worker(oid("a4a4a4a4a4a4a4a4a4a4a4a4"), "pinger", &["sleeping"]);
    let other = test_worker(oid("a5a5a5a5a5a5a5a5a5a5a5a5"), "other", &["sleeping"]);
    add_worker(&store, &w).await;
    add_worker(&store, &other).await;
    let own = prio_task(oid("caaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 90);
    let free = prio_task(oid("cbaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 10);
    let stopped = prio_task(oid("ccaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50);
    add_tasks(&store, &[own.clone(), free.clone(), stopped.clone()]).await;
    assert_eq!(claimed_id(&store, &w, at(1)).await, Some(own.id));
    assert_eq!(claimed_id(&store, &other, at(1)).await, Some(stopped.id));

    let state = store
        .get_task_state(own.id)
        .await
        .expect("state")
        .expect("the task exists");
    assert_eq!(state.worker_id, Some(w.id));
    assert_eq!(state.status, TaskStatus::Active);
    assert_eq!(
        MayIRun::decide_on(Some(&state), w.id),
        MayIRun::Yes,
        "the light state is enough to decide"
    );
    assert!(store
        .get_task_state(oid("9baaaaaaaaaaaaaaaaaaaaaa"))
        .await
        .expect("state")
        .is_none());

    let mut cancel = updates::assignment_status_update(stopped.id, at(2));
    cancel.task_status = Some(TaskStatus::CancelRequested);
    store.queue_update(cancel).await.expect("queue");
    let outbox_before = store.outbox_len().await.expect("len");
    let ping = |task: ObjectId, worker: ObjectId, secs: i64| TaskPing {
        task_id: task,
        worker_id: worker,
        at: at(secs),
    };
    store
        .record_pings(&[
            ping(own.id, w.id, 20),
            // Not assigned to anyone: a ping must not claim it.
            ping(free.id, w.id, 20),
            // Another worker's task.
            ping(stopped.id, w.id, 20),
            // cancel-requested: not runnable any more.
            ping(stopped.id, other.id, 20),
        ])
        .await
        .expect("record pings");
    let after = task(&store, own.id).await;
    assert_eq!(after.last_worker_ping, Some(at(20)));
    assert_eq!(after.last_updated, Some(at(1)), "a ping is not an update");
    assert_eq!(
        worker(&store, w.id).await.current_task_updated,
        Some(at(20))
    );
    let free_after = task(&store, free.id).await;
    assert_eq!(free_after.worker_id, None, "a ping never claims a task");
    assert_eq!(free_after.last_worker_ping, None);
    assert_eq!(task(&store, stopped.id).await.last_worker_ping, Some(at(1)));
    assert_ne!(
        worker(&store, other.id).await.current_task_updated,
        Some(at(20))
    );

    // An older ping never moves the time back.
    store
        .record_pings(&[ping(own.id, w.id, 5)])
        .await
        .expect("record pings");
    assert_eq!(task(&store, own.id).await.last_worker_ping, Some(at(20)));
    assert_eq!(
        store.outbox_len().await.expect("len"),
        outbox_before,
        "pings queue nothing"
    );
}

/// The deferred "seen" flush in one call: each worker's contact (`last_activity`, and
/// address or software when given) with its task report (`current_task_updated` never
/// moved back; `current_task_status` when reported, kept otherwise), then may-i-run
/// pings as `record_pings` writes them (only while the task is still the worker's and
/// runnable). Unknown workers are skipped.
pub async fn write_deferred_contacts_reports_and_pings(store: Arc<dyn Store>) {
    let w = test_worker(oid("a6a6a6a6a6a6a6a6a6a6a6a6"), "busy", &["sleeping"]);
    let other = test_worker(oid("a7a7a7a7a7a7a7a7a7a7a7a7"), "idle", &["sleeping"]);
    add_worker(&store, &w).await;
    add_worker(&store, &other).await;
    let own = prio_task(oid("daaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 90);
    let free = prio_task(oid("dbaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 10);
    add_tasks(&store, &[own.clone(), free.clone()]).await;
    assert_eq!(claimed_id(&store, &w, at(1)).await, Some(own.id));
    let reported = |secs: i64, status: Option<&str>| {
        let mut contact = seen(at(secs), "", "", false);
        contact.task_report = Some(TaskReport {
            at: at(secs),
            status: status.map(str::to_string),
        });
        contact
    };
    let ping = |task: ObjectId, worker: ObjectId, secs: i64| TaskPing {
        task_id: task,
        worker_id: worker,
        at: at(secs),
    };
    store
        .write_deferred(
            &[
                (w.id, reported(5, Some("active"))),
                (other.id, seen(at(6), "10.1.1.1", "", false)),
                (oid("a9a9a9a9a9a9a9a9a9a9a9a9"), reported(6, Some("active"))),
            ],
            &[ping(own.id, w.id, 7), ping(free.id, other.id, 7)],
        )
        .await
        .expect("write deferred");
    let w_now = worker(&store, w.id).await;
    assert_eq!(w_now.last_activity, Some(at(5)));
    assert_eq!(w_now.current_task_status, "active");
    assert_eq!(w_now.current_task_updated, Some(at(7)), "the later ping");
    assert_eq!(task(&store, own.id).await.last_worker_ping, Some(at(7)));
    let other_now = worker(&store, other.id).await;
    assert_eq!(other_now.last_activity, Some(at(6)));
    assert_eq!(other_now.address, "10.1.1.1");
    assert_eq!(
        other_now.current_task_updated, None,
        "a ping of a task not its own marks nothing"
    );
    let free_after = task(&store, free.id).await;
    assert_eq!(free_after.worker_id, None, "a ping never claims a task");
    assert_eq!(free_after.last_worker_ping, None);
    assert!(store
        .get_worker(oid("a9a9a9a9a9a9a9a9a9a9a9a9"))
        .await
        .expect("get")
        .is_none());

    // A report without status keeps the reported one; an older report does not move
    // the time back; no pings at all is fine.
    store
        .write_deferred(&[(w.id, reported(9, None))], &[])
        .await
        .expect("write deferred");
    let w_now = worker(&store, w.id).await;
    assert_eq!(w_now.current_task_updated, Some(at(9)));
    assert_eq!(w_now.current_task_status, "active");
    assert_eq!(w_now.last_activity, Some(at(9)));
    store
        .write_deferred(&[(w.id, reported(8, Some("completed")))], &[])
        .await
        .expect("write deferred");
    let w_now = worker(&store, w.id).await;
    assert_eq!(w_now.current_task_updated, Some(at(9)));
    assert_eq!(
        w_now.status, w.status,
        "a deferred contact never changes the status"
    );
    assert_eq!(
        store.outbox_len().await.expect("len"),
        2,
        "the claim's two updates only"
    );
}

/// may-i-run answers (v2 §4.5, case 13); a yes pings the task and the worker.
pub async fn may_i_run_outcomes(store: Arc<dyn Store>) {
    let lnx = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    let win = test_worker(oid("a3a3a3a3a3a3a3a3a3a3a3a3"), "workerWin", &["testing"]);
    add_worker(&store, &lnx).await;
    add_worker(&store, &win).await;
    let t = prio_task(oid("aaaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50);
    let free = prio_task(oid("baaaaaaaaaaaaaaaaaaaaaaa"), "testing", 0, 50);
    add_tasks(&store, &[t.clone(), free.clone()]).await;
    assert_eq!(claimed_id(&store, &lnx, at(1)).await, Some(t.id));
    let outbox_before = store.outbox_len().await.expect("len");

    assert_eq!(
        store
            .may_i_run(t.id, lnx.id, at(10))
            .await
            .expect("may i run"),
        MayIRun::Yes
    );
    let after = task(&store, t.id).await;
    assert_eq!(after.last_worker_ping, Some(at(10)));
    assert_eq!(after.worker_id, Some(lnx.id));
    assert_eq!(after.last_updated, Some(at(1)), "a ping is not an update");
    let w = worker(&store, lnx.id).await;
    assert_eq!(w.current_task_updated, Some(at(10)));
    assert_eq!(w.current_task_status, "", "may-i-run reports no status");

    assert_eq!(
        store
            .may_i_run(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), lnx.id, at(11))
            .await
            .expect("may i run"),
        MayIRun::UnknownTask
    );
    assert_eq!(
        store
            .may_i_run(t.id, win.id, at(12))
            .await
            .expect("may i run"),
        MayIRun::Reassigned
    );
    assert_eq!(task(&store, t.id).await.last_worker_ping, Some(at(10)));
    assert_eq!(worker(&store, win.id).await.current_task_updated, None);

    // A task without worker is claimed by may-i-run.
    assert_eq!(
        store
            .may_i_run(free.id, win.id, at(13))
            .await
            .expect("may i run"),
        MayIRun::Yes
    );
    let after = task(&store, free.id).await;
    assert_eq!(after.worker_id, Some(win.id));
    assert_eq!(after.status, TaskStatus::Queued);

    let mut cancel = updates::assignment_status_update(t.id, at(14));
    cancel.task_status = Some(TaskStatus::CancelRequested);
    store.queue_update(cancel).await.expect("queue");
    assert_eq!(
        store
            .may_i_run(t.id, lnx.id, at(15))
            .await
            .expect("may i run"),
        MayIRun::NotRunnable(TaskStatus::CancelRequested)
    );
    assert_eq!(task(&store, t.id).await.last_worker_ping, Some(at(10)));
    assert_eq!(
        store.outbox_len().await.expect("len"),
        outbox_before + 1,
        "may-i-run queues nothing"
    );
}

/// `POST /tasks/{id}/return`: requeue, cancel, unchanged, not found, assigned to other.
pub async fn return_task_outcomes(store: Arc<dyn Store>) {
    let lnx = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    let win = test_worker(oid("a3a3a3a3a3a3a3a3a3a3a3a3"), "workerWin", &["sleeping"]);
    add_worker(&store, &lnx).await;
    add_worker(&store, &win).await;
    let t = prio_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50);
    let mut cancel = prio_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50);
    cancel.status = TaskStatus::CancelRequested;
    cancel.worker_id = Some(lnx.id);
    add_tasks(&store, &[t.clone(), cancel.clone()]).await;
    assert_eq!(claimed_id(&store, &lnx, at(1)).await, Some(t.id));
    let ident = lnx.identifier();

    assert_eq!(
        store
            .return_task(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), lnx.id, &ident, at(2))
            .await
            .expect("return"),
        ReturnOutcome::NotFound
    );
    assert_eq!(
        store
            .return_task(t.id, win.id, &win.identifier(), at(3))
            .await
            .expect("return"),
        ReturnOutcome::AssignedToOther
    );
    assert_eq!(task(&store, t.id).await.status, TaskStatus::Active);
    assert_eq!(store.outbox_len().await.expect("len"), 2);

    assert_eq!(
        store
            .return_task(t.id, lnx.id, &ident, at(4))
            .await
            .expect("return"),
        ReturnOutcome::Requeued
    );
    let expected_update =
        updates::return_update(t.id, &ident, &ReturnOutcome::Requeued, at(4)).expect("update");
    let after = task(&store, t.id).await;
    assert_eq!(after.status, TaskStatus::ClaimedByManager);
    assert_eq!(after.worker_id, None);
    assert_eq!(after.activity, expected_update.activity);
    assert_eq!(after.last_updated, Some(at(4)));
    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 3);
    assert_same_update(&queued[2], &expected_update);

    // A repeated return is harmless.
    assert_eq!(
        store
            .return_task(t.id, lnx.id, &ident, at(5))
            .await
            .expect("return"),
        ReturnOutcome::Unchanged
    );
    assert_eq!(task(&store, t.id).await, after);
    assert_eq!(store.outbox_len().await.expect("len"), 3);

    // The requeued task can be claimed again, by anyone.
    assert_eq!(claimed_id(&store, &win, at(6)).await, Some(t.id));

    assert_eq!(
        store
            .return_task(cancel.id, lnx.id, &ident, at(7))
            .await
            .expect("return"),
        ReturnOutcome::Canceled
    );
    let after = task(&store, cancel.id).await;
    assert_eq!(after.status, TaskStatus::Canceled);
    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 6);
    assert_same_update(
        &queued[5],
        &updates::return_update(cancel.id, &ident, &ReturnOutcome::Canceled, at(7))
            .expect("update"),
    );
}

/// Sign-off (v2 §4.7): the worker's active tasks go back to `claimed-by-manager` (keeping
/// `worker`/`worker_id`), the worker goes `down`, a pending request is withdrawn.
pub async fn sign_off_requeues_active_tasks(store: Arc<dyn Store>) {
    let mut lnx = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    lnx.status = worker_status::AWAKE.into();
    lnx.status_requested = Some(RequestedStatus::Shutdown);
    let mut win = test_worker(oid("a3a3a3a3a3a3a3a3a3a3a3a3"), "workerWin", &["sleeping"]);
    win.status = worker_status::AWAKE.into();
    win.status_requested = Some(RequestedStatus::Asleep);
    add_worker(&store, &lnx).await;
    add_worker(&store, &win).await;

    let mk = |id: &str, status: TaskStatus, w: &Worker| {
        let mut t = prio_task(oid(id), "sleeping", 0, 50);
        t.status = status;
        t.worker_id = Some(w.id);
        t.worker = w.nickname.clone();
        t
    };
    let a1 = mk("1aaaaaaaaaaaaaaaaaaaaaaa", TaskStatus::Active, &lnx);
    let a2 = mk("2aaaaaaaaaaaaaaaaaaaaaaa", TaskStatus::Active, &lnx);
    let done = mk("3aaaaaaaaaaaaaaaaaaaaaaa", TaskStatus::Completed, &lnx);
    let other = mk("4aaaaaaaaaaaaaaaaaaaaaaa", TaskStatus::Active, &win);
    add_tasks(
        &store,
        &[a2.clone(), a1.clone(), done.clone(), other.clone()],
    )
    .await;

    let now = at(1_000);
    let mut requeued = store.sign_off_worker(lnx.id, now).await.expect("sign off");
    requeued.sort();
    assert_eq!(requeued, vec![a1.id, a2.id]);
    for t in [&a1, &a2] {
        let after = task(&store, t.id).await;
        let update = updates::sign_off_requeue_update(t.id, &lnx.identifier(), now);
        assert_eq!(after.status, TaskStatus::ClaimedByManager);
        assert_eq!(after.worker_id, Some(lnx.id), "worker_id is kept, as in v2");
        assert_eq!(after.worker, "workerLnx");
        assert_eq!(after.activity, update.activity);
        assert_eq!(after.last_updated, Some(now));
    }
    assert_eq!(task(&store, done.id).await, done);
    assert_eq!(task(&store, other.id).await, other);

    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 2);
    let mut by_task: Vec<&TaskUpdate> = queued.iter().collect();
    by_task.sort_by_key(|u| u.task_id);
    assert_same_update(
        by_task[0],
        &updates::sign_off_requeue_update(a1.id, &lnx.identifier(), now),
    );
    assert_same_update(
        by_task[1],
        &updates::sign_off_requeue_update(a2.id, &lnx.identifier(), now),
    );

    let w = worker(&store, lnx.id).await;
    assert_eq!(w.status, worker_status::DOWN);
    assert_eq!(w.status_requested, None);

    // A pending request other than shutdown is withdrawn too
    // (`sign_off_withdraws_pending_requests`); a second sign-off finds nothing.
    assert_eq!(
        store.sign_off_worker(win.id, now).await.expect("sign off"),
        vec![other.id]
    );
    let w = worker(&store, win.id).await;
    assert_eq!(w.status, worker_status::DOWN);
    assert_eq!(w.status_requested, None);
    assert_eq!(
        store.sign_off_worker(win.id, now).await.expect("sign off"),
        Vec::<ObjectId>::new()
    );
    assert_eq!(store.outbox_len().await.expect("len"), 3);
}

// ---- workers ----

/// Insert, get, list (by id), duplicates, and a round trip of every worker field.
pub async fn workers_insert_get_list(store: Arc<dyn Store>) {
    assert!(store.list_workers().await.expect("list").is_empty());
    let mut full = test_worker(
        oid("a2a2a2a2a2a2a2a2a2a2a2a2"),
        "workerLnx",
        &["sleeping", "blender-render"],
    );
    full.address = "10.0.0.5:4321".into();
    full.status = worker_status::TIMEOUT.into();
    full.platform = "windows".into();
    full.time_cost = 7;
    full.software = "Flamenco-Worker/2.1.0".into();
    full.current_task = Some(oid("1234567890ab1234567890ab"));
    full.last_activity = Some(at(10));
    full.current_task_status = "active".into();
    full.current_task_updated = Some(at(20));
    full.status_requested = Some(RequestedStatus::Asleep);
    full.secret_sha256 = "hmac-sha256$fp$salt$digest".into();
    let bare = test_worker(oid("a1a1a1a1a1a1a1a1a1a1a1a1"), "", &[]);
    add_worker(&store, &full).await;
    add_worker(&store, &bare).await;

    assert_eq!(worker(&store, full.id).await, full);
    assert_eq!(worker(&store, bare.id).await, bare);
    assert_eq!(
        store
            .get_worker(oid("a9a9a9a9a9a9a9a9a9a9a9a9"))
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        store.list_workers().await.expect("list"),
        vec![bare.clone(), full.clone()]
    );
    match store.insert_worker(&full).await {
        Err(StoreError::Duplicate(id)) => assert_eq!(id, full.id),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(store.list_workers().await.expect("list").len(), 2);
}

/// The fast hash of a worker's secret (`secret_sha256`): written at registration, set
/// later only while the bcrypt `hashed_secret` is the one given (compare-and-set), and
/// nothing else about the worker changes.
pub async fn worker_secret_sha256_set_if_hash_unchanged(store: Arc<dyn Store>) {
    let mut w = test_worker(oid("a3a3a3a3a3a3a3a3a3a3a3a3"), "w", &["sleeping"]);
    w.last_activity = Some(at(5));
    add_worker(&store, &w).await;
    assert_eq!(worker(&store, w.id).await.secret_sha256, "");

    // A different bcrypt hash: refused, nothing written.
    let written = store
        .set_worker_secret_sha256(w.id, "$2a$10$another-hash", "hmac-sha256$x$y$z")
        .await
        .expect("set");
    assert!(!written);
    assert_eq!(worker(&store, w.id).await, w);

    // The current one: written, and only that field changes.
    let written = store
        .set_worker_secret_sha256(w.id, &w.hashed_secret, "hmac-sha256$a$b$c")
        .await
        .expect("set");
    assert!(written);
    let mut expected = w.clone();
    expected.secret_sha256 = "hmac-sha256$a$b$c".into();
    assert_eq!(worker(&store, w.id).await, expected);
    assert_eq!(
        store.list_workers().await.expect("list"),
        vec![expected.clone()]
    );

    // Replaced by a later upgrade.
    assert!(store
        .set_worker_secret_sha256(w.id, &w.hashed_secret, "hmac-sha256$d$e$f")
        .await
        .expect("set"));
    assert_eq!(
        worker(&store, w.id).await.secret_sha256,
        "hmac-sha256$d$e$f"
    );

    // Unknown worker: false.
    assert!(!store
        .set_worker_secret_sha256(oid("a9a9a9a9a9a9a9a9a9a9a9a9"), &w.hashed_secret, "x")
        .await
        .expect("set"));

    // "Seen" and sign-on keep it.
    let seen = Seen {
        now: at(50),
        address: "10.0.0.9".into(),
        software: "Flamenco-Worker/2.5".into(),
        mark_awake: true,
        task_report: None,
        current_task: None,
    };
    assert!(store.worker_seen(w.id, &seen).await.expect("seen"));
    assert_eq!(
        worker(&store, w.id).await.secret_sha256,
        "hmac-sha256$d$e$f"
    );
}

/// "Seen" (v2 §8.4): `last_activity` always; `awake` only when asked; address and
/// software only when non-empty; false for an unknown worker.
pub async fn worker_seen_semantics(store: Arc<dyn Store>) {
    let mut w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    w.address = "192.168.3.4:51234".into();
    w.status = worker_status::TIMEOUT.into();
    w.current_task = Some(oid("1aaaaaaaaaaaaaaaaaaaaaaa"));
    add_worker(&store, &w).await;

    assert!(!store
        .worker_seen(
            oid("a9a9a9a9a9a9a9a9a9a9a9a9"),
            &seen(at(1), "1.2.3.4", "x", true)
        )
        .await
        .expect("seen"));

    assert!(store
        .worker_seen(w.id, &seen(at(2), "", "", false))
        .await
        .expect("seen"));
    let after = worker(&store, w.id).await;
    assert_eq!(after.last_activity, Some(at(2)));
    assert_eq!(after.status, worker_status::TIMEOUT);
    assert_eq!(after.address, "192.168.3.4:51234");
    assert_eq!(after.software, "");

    assert!(store
        .worker_seen(
            w.id,
            &seen(at(3), "192.168.3.4", "Flamenco-Worker/2.0.6", true)
        )
        .await
        .expect("seen"));
    let after = worker(&store, w.id).await;
    assert_eq!(after.last_activity, Some(at(3)));
    assert_eq!(after.status, worker_status::AWAKE);
    assert_eq!(after.address, "192.168.3.4");
    assert_eq!(after.software, "Flamenco-Worker/2.0.6");
    assert_eq!(
        after.current_task, w.current_task,
        "seen keeps current_task"
    );
    assert_eq!(after.nickname, w.nickname);
}

/// v2 case 14 (WorkerSignOn): empty values are not applied; `current_task` is removed.
pub async fn worker_sign_on_v2_sequence(store: Arc<dyn Store>) {
    let lnx = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    add_worker(&store, &lnx).await;
    let s = |n: i64| seen(at(n), "192.168.3.4", "Flamenco-Worker/2.1.0", true);
    let types = |list: &[&str]| Some(list.iter().map(|s| s.to_string()).collect::<Vec<_>>());

    let steps: Vec<(SignOn, &[&str], &str)> = vec![
        (SignOn::default(), &["sleeping"], "workerLnx"),
        (
            SignOn {
                nickname: Some("new-and-sparkly".into()),
                supported_task_types: None,
            },
            &["sleeping"],
            "new-and-sparkly",
        ),
        (
            SignOn {
                nickname: None,
                supported_task_types: types(&["exr-merge", "unknown"]),
            },
            &["exr-merge", "unknown"],
            "new-and-sparkly",
        ),
        (
            SignOn {
                nickname: Some("another".into()),
                supported_task_types: types(&["blender-render"]),
            },
            &["blender-render"],
            "another",
        ),
        (
            SignOn {
                nickname: Some(String::new()),
                supported_task_types: Some(Vec::new()),
            },
            &["blender-render"],
            "another",
        ),
    ];
    for (n, (sign_on, expected_types, expected_nick)) in steps.into_iter().enumerate() {
        assert!(store
            .worker_sign_on(lnx.id, &sign_on, &s(n as i64))
            .await
            .expect("sign on"));
        let w = worker(&store, lnx.id).await;
        assert_eq!(w.supported_task_types, expected_types, "step {n}");
        assert_eq!(w.nickname, expected_nick, "step {n}");
        assert_eq!(w.last_activity, Some(at(n as i64)), "step {n}");
        assert_eq!(w.status, worker_status::AWAKE);
        assert_eq!(w.software, "Flamenco-Worker/2.1.0");
    }

    // A claim's current_task (written with the deferred "seen"); the next sign-on
    // removes it.
    let t = prio_task(oid("1234567890ab1234567890ab"), "blender-render", 0, 50);
    add_tasks(&store, std::slice::from_ref(&t)).await;
    let me = worker(&store, lnx.id).await;
    assert_eq!(claimed_id(&store, &me, at(20)).await, Some(t.id));
    assign_deferred(&store, lnx.id, t.id, at(20)).await;
    assert_eq!(worker(&store, lnx.id).await.current_task, Some(t.id));
    assert!(store
        .worker_sign_on(lnx.id, &SignOn::default(), &s(21))
        .await
        .expect("sign on"));
    assert_eq!(worker(&store, lnx.id).await.current_task, None);

    assert!(!store
        .worker_sign_on(oid("a9a9a9a9a9a9a9a9a9a9a9a9"), &SignOn::default(), &s(22))
        .await
        .expect("sign on"));
}

/// Status-change requests: set, withdraw, acknowledge (a matching request is cleared, a
/// different one stays); false for unknown workers.
pub async fn worker_status_request_set_and_ack(store: Arc<dyn Store>) {
    let mut w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    w.status = worker_status::AWAKE.into();
    add_worker(&store, &w).await;
    let unknown = oid("a9a9a9a9a9a9a9a9a9a9a9a9");

    assert!(!store
        .set_worker_status_requested(unknown, Some(RequestedStatus::Asleep))
        .await
        .expect("request"));
    assert!(!store
        .ack_worker_status(unknown, "asleep", at(1))
        .await
        .expect("ack"));

    assert!(store
        .set_worker_status_requested(w.id, Some(RequestedStatus::Asleep))
        .await
        .expect("request"));
    assert_eq!(
        worker(&store, w.id).await.status_requested,
        Some(RequestedStatus::Asleep)
    );
    assert!(store
        .set_worker_status_requested(w.id, None)
        .await
        .expect("request"));
    assert_eq!(worker(&store, w.id).await.status_requested, None);

    store
        .set_worker_status_requested(w.id, Some(RequestedStatus::Asleep))
        .await
        .expect("request");
    assert!(store
        .ack_worker_status(w.id, "asleep", at(2))
        .await
        .expect("ack"));
    let after = worker(&store, w.id).await;
    assert_eq!(after.status, worker_status::ASLEEP);
    assert_eq!(after.status_requested, None);

    store
        .set_worker_status_requested(w.id, Some(RequestedStatus::Awake))
        .await
        .expect("request");
    assert!(store
        .ack_worker_status(w.id, "error", at(3))
        .await
        .expect("ack"));
    let after = worker(&store, w.id).await;
    assert_eq!(after.status, "error");
    assert_eq!(after.status_requested, Some(RequestedStatus::Awake));
    assert!(store
        .ack_worker_status(w.id, "awake", at(4))
        .await
        .expect("ack"));
    let after = worker(&store, w.id).await;
    assert_eq!(after.status, worker_status::AWAKE);
    assert_eq!(after.status_requested, None);
}

// ---- the job source (upstream mode) ----

/// Downloads (v2 §5.3, fixing §11 #10): new tasks are inserted; existing ones take the
/// job source's fields; a running task keeps its worker and status unless the job source
/// canceled it; the local bookkeeping is never wiped; `active` from the job source for a
/// task nobody runs here becomes `claimed-by-manager`; an empty task type becomes `unknown`.
pub async fn merge_downloaded_tasks_keeps_running_tasks(store: Arc<dyn Store>) {
    let w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    add_worker(&store, &w).await;
    let running = prio_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50);
    let doomed = prio_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 40);
    let finished = prio_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 30);
    add_tasks(&store, &[running.clone(), doomed.clone(), finished.clone()]).await;
    // The worker runs `running`, then `doomed`'s turn comes through a second claim.
    let claimed = claimed_id(&store, &w, at(10)).await;
    assert_eq!(claimed, Some(running.id));
    let mut done = worker_update(running.id, &w, Some(TaskStatus::Completed), "done", at(11));
    done.log = "log".into();
    store.apply_worker_update(w.id, done).await.expect("update");
    assert_eq!(claimed_id(&store, &w, at(12)).await, Some(doomed.id));
    let mut f = finished.clone();
    f.status = TaskStatus::Completed;
    let mut finish = TaskUpdate::new(finished.id, at(13));
    finish.task_status = Some(TaskStatus::Completed);
    store.queue_update(finish).await.expect("queue");

    // The Server re-sends `running` (now locally completed) as requeued, `doomed`
    // (locally active) with a new priority, `finished` as active; plus a new task
    // without a type that the Server thinks is active.
    let mut s_running = running.clone();
    s_running.status = TaskStatus::ClaimedByManager;
    s_running.etag = "e2".into();
    let mut s_doomed = doomed.clone();
    s_doomed.status = TaskStatus::ClaimedByManager;
    s_doomed.priority = 99;
    s_doomed.worker = "someone else".into();
    s_doomed.commands = vec![Command::new("echo", json!({"message": "new"}))];
    let mut s_finished = finished.clone();
    s_finished.status = TaskStatus::Active;
    let mut s_new = prio_task(oid("4aaaaaaaaaaaaaaaaaaaaaaa"), "", 0, 10);
    s_new.status = TaskStatus::Active;
    s_new.worker_id = Some(w.id); // never taken from the job source
    let report = store
        .merge_downloaded_tasks(
            &[
                s_running.clone(),
                s_doomed.clone(),
                s_finished.clone(),
                s_new.clone(),
            ],
            at(20),
        )
        .await
        .expect("merge");
    assert_eq!(
        report,
        MergeReport {
            inserted: 1,
            updated: 3,
            kept_running: 1
        }
    );

    let t = task(&store, running.id).await;
    assert_eq!(
        t.status,
        TaskStatus::ClaimedByManager,
        "requeued by the Server"
    );
    assert_eq!(t.etag, "e2");
    assert_eq!(t.worker_id, Some(w.id), "bookkeeping kept");
    assert_eq!(t.last_updated, Some(at(20)));

    let t = task(&store, doomed.id).await;
    assert_eq!(t.status, TaskStatus::Active, "still running");
    assert_eq!(t.worker_id, Some(w.id));
    assert_eq!(t.worker, "workerLnx");
    assert_eq!(t.last_worker_ping, Some(at(12)));
    assert_eq!(t.priority, 99, "the Server's fields apply");
    assert_eq!(t.commands, s_doomed.commands);
    // The worker may go on.
    assert_eq!(
        store.may_i_run(doomed.id, w.id, at(21)).await.expect("may"),
        MayIRun::Yes
    );

    let t = task(&store, finished.id).await;
    assert_eq!(t.status, TaskStatus::Completed, "local status kept");

    let t = task(&store, s_new.id).await;
    assert_eq!(t.status, TaskStatus::ClaimedByManager);
    assert_eq!(t.task_type, updates::UNKNOWN_TASK_TYPE);
    assert_eq!(t.worker_id, None);

    // A cancel from the Server reaches the running task.
    let mut s_doomed2 = s_doomed.clone();
    s_doomed2.status = TaskStatus::CancelRequested;
    let report = store
        .merge_downloaded_tasks(&[s_doomed2], at(30))
        .await
        .expect("merge");
    assert_eq!(report.kept_running, 0);
    let t = task(&store, doomed.id).await;
    assert_eq!(t.status, TaskStatus::CancelRequested);
    assert_eq!(t.worker_id, Some(w.id));
    assert_eq!(
        store.may_i_run(doomed.id, w.id, at(31)).await.expect("may"),
        MayIRun::NotRunnable(TaskStatus::CancelRequested)
    );
    // Nothing was queued by downloads.
    assert_eq!(outbox(&store).await.len(), 6, "2 claims x 2 + 2 updates");
}

/// Reservations (v2 §5.4 without a lock): reserve makes the best task `active` for the
/// worker and queues nothing; confirm queues the assignment like a claim; release applies
/// the job source's verdict; both do nothing once the reservation is lost.
pub async fn reserve_confirm_release(store: Arc<dyn Store>) {
    let w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    let other = test_worker(oid("a3a3a3a3a3a3a3a3a3a3a3a3"), "workerWin", &["sleeping"]);
    add_worker(&store, &w).await;
    add_worker(&store, &other).await;
    let t1 = prio_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 50);
    let t2 = prio_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 100);
    let t3 = prio_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 10);
    add_tasks(&store, &[t1.clone(), t2.clone(), t3.clone()]).await;

    // Reserve: the best task, active for the worker, nothing queued.
    let req = claim_request(&w, at(100));
    let r = store
        .reserve_task(&req)
        .await
        .expect("reserve")
        .expect("a task");
    assert_eq!(r.task.id, t2.id);
    assert!(!r.already_assigned);
    let held = task(&store, t2.id).await;
    assert_eq!(held.status, TaskStatus::Active);
    assert_eq!(held.worker_id, Some(w.id));
    assert_eq!(held.last_worker_ping, Some(at(100)));
    assert_eq!(held.worker, t2.worker, "worker name set only on confirm");
    assert!(outbox(&store).await.is_empty());
    assert_eq!(worker(&store, w.id).await.current_task, None);
    // Another worker does not get the reserved task.
    assert_eq!(claimed_id(&store, &other, at(101)).await, Some(t1.id));
    let after_other = outbox(&store).await.len();

    // Release with a changed version (v2 case 19): the job source's fields, reservation gone.
    let mut changed = t2.clone();
    changed.priority = 5;
    changed.etag = "new-etag".into();
    changed.status = TaskStatus::Queued;
    let verdict = Refetched::Changed(Box::new(changed));
    assert!(store
        .release_claim(t2.id, w.id, &verdict, at(102))
        .await
        .expect("release"));
    let t = task(&store, t2.id).await;
    assert_eq!(t.status, TaskStatus::Queued);
    assert_eq!(t.priority, 5);
    assert_eq!(t.etag, "new-etag");
    assert_eq!(t.worker_id, None);
    // A second release finds no reservation.
    assert!(!store
        .release_claim(t2.id, w.id, &verdict, at(103))
        .await
        .expect("release"));
    assert_eq!(
        outbox(&store).await.len(),
        after_other,
        "release queues nothing"
    );

    // Reserve again: t3 (priority 10) now beats t2 (priority 5); it is gone (v2 case 20).
    let r = store
        .reserve_task(&claim_request(&w, at(110)))
        .await
        .expect("reserve")
        .expect("a task");
    assert_eq!(r.task.id, t3.id);
    assert!(store
        .release_claim(t3.id, w.id, &Refetched::Gone, at(111))
        .await
        .expect("release"));
    let t = task(&store, t3.id).await;
    assert_eq!(t.status, TaskStatus::Canceled);
    assert_eq!(t.priority, 10, "other fields stay");
    assert_eq!(t.worker_id, None);

    // Reserve and confirm: exactly what a claim does.
    let req = claim_request(&w, at(120));
    let r = store
        .reserve_task(&req)
        .await
        .expect("reserve")
        .expect("a task");
    assert_eq!(r.task.id, t2.id);
    let confirmed = store
        .confirm_claim(t2.id, &req)
        .await
        .expect("confirm")
        .expect("still held");
    assert_eq!(confirmed.task.status, TaskStatus::Active);
    assert_eq!(confirmed.task.worker, "workerLnx");
    assert_eq!(confirmed.task.worker_id, Some(w.id));
    assert_eq!(confirmed.task.commands, t2.commands);
    assert_eq!(task(&store, t2.id).await, confirmed.task);
    assert_eq!(
        worker(&store, w.id).await.current_task,
        None,
        "written by the caller"
    );
    let queued = outbox(&store).await;
    assert_eq!(queued.len(), after_other + 2);
    assert_same_update(
        &queued[after_other],
        &updates::assignment_status_update(t2.id, at(120)),
    );
    assert_same_update(
        &queued[after_other + 1],
        &updates::assignment_log_update(t2.id, &w.identifier(), at(120)),
    );

    // The worker asks again: its own active task is reserved again ("already assigned").
    let r = store
        .reserve_task(&claim_request(&w, at(130)))
        .await
        .expect("reserve")
        .expect("a task");
    assert_eq!(r.task.id, t2.id);
    assert!(r.already_assigned);

    // A lost reservation is neither confirmed nor released: the job source canceled it
    // meanwhile through the cancel list.
    store
        .apply_upstream_cancels(&[t2.id], at(131))
        .await
        .expect("cancel");
    assert!(store
        .confirm_claim(t2.id, &claim_request(&w, at(132)))
        .await
        .expect("confirm")
        .is_none());
    assert!(!store
        .release_claim(t2.id, w.id, &Refetched::Gone, at(133))
        .await
        .expect("release"));
    assert_eq!(
        task(&store, t2.id).await.status,
        TaskStatus::CancelRequested
    );
    // Nothing for a worker without tasks of its type.
    let nobody = test_worker(oid("a4a4a4a4a4a4a4a4a4a4a4a4"), "n", &["other"]);
    add_worker(&store, &nobody).await;
    assert!(store
        .reserve_task(&claim_request(&nobody, at(140)))
        .await
        .expect("reserve")
        .is_none());
}

/// The cancel list (v2 §5.6, v2 case 4): a running task becomes `cancel-requested`
/// (nothing queued); any other or unknown task gets a queued `canceled` (a task that
/// finished here reports how it finished); no second final update while one waits.
pub async fn upstream_cancels_follow_v2(store: Arc<dyn Store>) {
    let w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    add_worker(&store, &w).await;
    let running = prio_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping", 0, 90);
    let queued = prio_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "testing", 0, 50);
    let mut done = prio_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "testing", 0, 50);
    done.status = TaskStatus::Completed;
    let untouched = prio_task(oid("4aaaaaaaaaaaaaaaaaaaaaaa"), "testing", 0, 50);
    add_tasks(
        &store,
        &[
            running.clone(),
            queued.clone(),
            done.clone(),
            untouched.clone(),
        ],
    )
    .await;
    assert_eq!(claimed_id(&store, &w, at(1)).await, Some(running.id));
    let before = outbox(&store).await.len();
    let unknown = oid("9aaaaaaaaaaaaaaaaaaaaaaa");

    let report = store
        .apply_upstream_cancels(&[running.id, queued.id, done.id, unknown], at(10))
        .await
        .expect("cancel");
    assert_eq!(report.cancel_requested, vec![running.id]);
    assert_eq!(report.queued, vec![queued.id, done.id, unknown]);
    assert_eq!(report.already_pending, 0);

    let t = task(&store, running.id).await;
    assert_eq!(t.status, TaskStatus::CancelRequested);
    assert_eq!(t.worker_id, Some(w.id));
    assert_eq!(task(&store, queued.id).await.status, TaskStatus::Canceled);
    assert_eq!(task(&store, done.id).await.status, TaskStatus::Completed);
    assert_eq!(task(&store, untouched.id).await.status, TaskStatus::Queued);
    let added: Vec<TaskUpdate> = outbox(&store).await[before..].to_vec();
    assert_eq!(added.len(), 3);
    let expect = |id, status| {
        let mut u = TaskUpdate::new(id, at(10));
        u.task_status = Some(status);
        u
    };
    assert_same_update(&added[0], &expect(queued.id, TaskStatus::Canceled));
    assert_same_update(&added[1], &expect(done.id, TaskStatus::Completed));
    assert_same_update(&added[2], &expect(unknown, TaskStatus::Canceled));

    // The next answer lists them again (the Server has not heard yet): the running task,
    // now cancel-requested, gets its `canceled`; the others already have one waiting.
    let report = store
        .apply_upstream_cancels(&[running.id, queued.id, done.id, unknown], at(20))
        .await
        .expect("cancel");
    assert_eq!(report.cancel_requested, Vec::<ObjectId>::new());
    assert_eq!(report.queued, vec![running.id]);
    assert_eq!(report.already_pending, 3);
    assert_eq!(task(&store, running.id).await.status, TaskStatus::Canceled);
    assert_eq!(outbox(&store).await.len(), before + 4);

    // Once the Server acknowledged them, a repeated listing queues them again.
    let ids: Vec<ObjectId> = outbox(&store).await[before..]
        .iter()
        .map(|u| u.id)
        .collect();
    store.outbox_ack(&ids).await.expect("ack");
    let report = store
        .apply_upstream_cancels(&[queued.id], at(30))
        .await
        .expect("cancel");
    assert_eq!(report.queued, vec![queued.id]);
}

/// Unacknowledged updates: attempts are counted per update; at the limit an update is set
/// aside (kept, listed, counted, no longer peeked or counted as waiting); acknowledging
/// removes it; retrying puts it back at the end with attempts reset.
pub async fn outbox_set_aside_after_unacknowledged_attempts(store: Arc<dyn Store>) {
    let t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    add_tasks(&store, std::slice::from_ref(&t)).await;
    let mut sent = Vec::new();
    for n in 0..5 {
        let mut u = TaskUpdate::new(t.id, at(n));
        u.activity = format!("update {n}");
        store.queue_update(u.clone()).await.expect("queue");
        sent.push(u);
    }
    assert_eq!(store.outbox_set_aside_len().await.expect("len"), 0);
    assert!(store.outbox_set_aside(10).await.expect("list").is_empty());

    // Updates 0 and 2 are never acknowledged; 1 twice only.
    let stuck = [sent[0].id, sent[2].id];
    for round in 1..=2 {
        let now = at(100 + round);
        let aside = store
            .outbox_note_unacknowledged(&[sent[0].id, sent[1].id, sent[2].id], 3, now)
            .await
            .expect("note");
        assert!(aside.is_empty(), "round {round}");
    }
    let aside = store
        .outbox_note_unacknowledged(&stuck, 3, at(200))
        .await
        .expect("note");
    assert_eq!(aside, stuck.to_vec());
    assert_eq!(store.outbox_len().await.expect("len"), 3);
    let waiting: Vec<ObjectId> = outbox(&store).await.iter().map(|u| u.id).collect();
    assert_eq!(waiting, vec![sent[1].id, sent[3].id, sent[4].id]);
    assert_eq!(
        store.outbox_peek(1).await.expect("peek")[0].id,
        sent[1].id,
        "the head is no longer blocked"
    );
    assert_eq!(store.outbox_set_aside_len().await.expect("len"), 2);
    let listed = store.outbox_set_aside(10).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].update, sent[0]);
    assert_eq!(listed[0].attempts, 3);
    assert_eq!(listed[0].set_aside_at, at(200));
    assert_eq!(listed[1].update, sent[2]);
    assert_eq!(store.outbox_set_aside(1).await.expect("list").len(), 1);
    // Noting a set-aside or unknown id changes nothing.
    assert!(store
        .outbox_note_unacknowledged(&[sent[0].id, oid("0badbadbadbadbadbadbadba")], 1, at(300))
        .await
        .expect("note")
        .is_empty());
    assert_eq!(
        store.outbox_set_aside(10).await.expect("list")[0].attempts,
        3
    );

    // A late acknowledgement removes a set-aside update too.
    assert_eq!(store.outbox_ack(&[sent[2].id]).await.expect("ack"), 1);
    assert_eq!(store.outbox_set_aside_len().await.expect("len"), 1);

    // Retry: back at the end, attempts reset (one more miss does not set it aside).
    assert_eq!(store.outbox_retry_set_aside().await.expect("retry"), 1);
    assert_eq!(store.outbox_set_aside_len().await.expect("len"), 0);
    let waiting: Vec<ObjectId> = outbox(&store).await.iter().map(|u| u.id).collect();
    assert_eq!(
        waiting,
        vec![sent[1].id, sent[3].id, sent[4].id, sent[0].id]
    );
    assert!(store
        .outbox_note_unacknowledged(&[sent[0].id], 2, at(400))
        .await
        .expect("note")
        .is_empty());
    assert_eq!(store.outbox_retry_set_aside().await.expect("retry"), 0);
}

// ---- settings ----

/// Settings: missing is `None`; set, overwrite, clear (clearing a missing key is fine).
pub async fn settings_set_get_clear(store: Arc<dyn Store>) {
    let key = "depsgraph_last_modified";
    assert_eq!(store.get_setting(key).await.expect("get"), None);
    store
        .set_setting(key, Some("Fri, 09 Jun 2017 10:39:31 GMT"))
        .await
        .expect("set");
    assert_eq!(
        store.get_setting(key).await.expect("get").as_deref(),
        Some("Fri, 09 Jun 2017 10:39:31 GMT")
    );
    store.set_setting(key, Some("")).await.expect("set");
    assert_eq!(
        store.get_setting(key).await.expect("get").as_deref(),
        Some("")
    );
    store.set_setting("other", Some("x")).await.expect("set");
    store.set_setting(key, None).await.expect("clear");
    assert_eq!(store.get_setting(key).await.expect("get"), None);
    store.set_setting(key, None).await.expect("clear again");
    assert_eq!(
        store.get_setting("other").await.expect("get").as_deref(),
        Some("x")
    );
}

// ---- running the suite ----

// ---- maintenance ----

/// v2 §8.1: active tasks not pinged since the cutoff fail through the outbox and their
/// worker becomes `timeout`; recently pinged and non-active tasks are left alone.
pub async fn timeouts_fail_silent_active_tasks(store: Arc<dyn Store>) {
    let w = test_worker(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), "node1", &["sleeping"]);
    add_worker(&store, &w).await;
    let mut silent = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    silent.status = TaskStatus::Active;
    silent.worker_id = Some(w.id);
    silent.last_worker_ping = Some(at(1_000));
    let mut pinged = test_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    pinged.status = TaskStatus::Active;
    pinged.last_worker_ping = Some(at(50_000));
    let mut never = test_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    never.status = TaskStatus::Active;
    never.worker = "old-name".into();
    let mut queued = test_task(oid("4aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    queued.last_worker_ping = Some(at(0));
    add_tasks(
        &store,
        &[
            silent.clone(),
            pinged.clone(),
            never.clone(),
            queued.clone(),
        ],
    )
    .await;

    let failed = store
        .fail_timed_out_tasks(at(10_000), at(60_000))
        .await
        .expect("timeouts");
    assert_eq!(failed, vec![silent.id, never.id]);
    let t = task(&store, silent.id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(
        t.activity,
        format!("Task timed out on worker {}", w.identifier())
    );
    assert_eq!(
        t.worker_id,
        Some(w.id),
        "the assignment is kept for the record"
    );
    let t = task(&store, never.id).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.activity, "Task timed out on worker old-name");
    assert_eq!(task(&store, pinged.id).await.status, TaskStatus::Active);
    assert_eq!(task(&store, queued.id).await.status, TaskStatus::Queued);
    assert_eq!(worker(&store, w.id).await.status, "timeout");

    let updates = outbox(&store).await;
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].task_id, silent.id);
    assert_eq!(updates[0].task_status, Some(TaskStatus::Failed));
    assert_eq!(updates[0].worker, "");
    assert!(
        updates[0].log.contains(&format!(
            "Task Test task ({}) timed out, was active but untouched since",
            silent.id
        )),
        "{}",
        updates[0].log
    );
    assert!(updates[0]
        .log
        .ends_with(&format!("Was handled by worker {}", w.identifier())));

    // Running it again changes nothing.
    let again = store
        .fail_timed_out_tasks(at(10_000), at(61_000))
        .await
        .expect("timeouts");
    assert!(again.is_empty());
    assert_eq!(outbox(&store).await.len(), 2);
}

/// v2 §8.1: awake workers not seen since the cutoff (or never) become `timeout`.
pub async fn timeouts_mark_silent_workers(store: Arc<dyn Store>) {
    let mut quiet = test_worker(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "quiet", &["sleeping"]);
    quiet.status = "awake".into();
    quiet.last_activity = Some(at(1_000));
    let mut busy = test_worker(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "busy", &["sleeping"]);
    busy.status = "awake".into();
    busy.last_activity = Some(at(20_000));
    let mut never = test_worker(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "never", &["sleeping"]);
    never.status = "awake".into();
    let mut down = test_worker(oid("4aaaaaaaaaaaaaaaaaaaaaaa"), "down", &["sleeping"]);
    down.status = "down".into();
    down.last_activity = Some(at(0));
    for w in [&quiet, &busy, &never, &down] {
        add_worker(&store, w).await;
    }
    let mut ids = store.time_out_workers(at(10_000)).await.expect("timeout");
    ids.sort();
    assert_eq!(ids, vec![quiet.id, never.id]);
    assert_eq!(worker(&store, quiet.id).await.status, "timeout");
    assert_eq!(worker(&store, never.id).await.status, "timeout");
    assert_eq!(worker(&store, busy.id).await.status, "awake");
    assert_eq!(worker(&store, down.id).await.status, "down");
}

/// The cleanup walks past more kept parents than one of its reads holds (600 finished
/// parents of one queued child, all older than the 20 it may delete): it ends, deletes
/// exactly the 20 and keeps every parent and the child.
pub async fn cleanup_walks_past_many_kept_parents(store: Arc<dyn Store>) {
    let finished = |id: ObjectId, updated: i64| {
        let mut t = test_task(id, "testing");
        t.status = TaskStatus::Completed;
        t.last_updated = Some(at(updated));
        t
    };
    let parents: Vec<Task> = (0..600u32)
        .map(|n| finished(nth_id(0x5a, n), 1_000 + i64::from(n)))
        .collect();
    let free: Vec<Task> = (0..20u32)
        .map(|n| finished(nth_id(0x5b, n), 5_000 + i64::from(n)))
        .collect();
    let mut child = test_task(nth_id(0x5c, 0), "testing");
    child.parents = parents.iter().map(|t| t.id).collect();
    let mut all = parents.clone();
    all.extend(free.iter().cloned());
    all.push(child.clone());
    add_tasks(&store, &all).await;

    let cleanup = store.delete_finished_tasks(at(100_000), 1_000);
    let deleted = tokio::time::timeout(std::time::Duration::from_secs(120), cleanup)
        .await
        .expect("the cleanup ends")
        .expect("cleanup")
        .rows;
    assert_eq!(deleted, 20);
    let again = store
        .delete_finished_tasks(at(100_000), 1_000)
        .await
        .expect("cleanup")
        .rows;
    assert_eq!(again, 0);
    let left = store.list_tasks(&TaskQuery::default()).await.expect("list");
    assert_eq!(left.len(), 601);
    assert!(left.iter().any(|t| t.id == child.id));
    assert!(!left.iter().any(|t| free.iter().any(|f| f.id == t.id)));
}

/// v2 case 3 (TaskCleanup), adapted to the finished-only rule: finished tasks untouched
/// since the cutoff go; recent ones, unfinished ones, and finished parents of unfinished
/// children stay.
pub async fn cleanup_removes_only_old_finished_tasks(store: Arc<dyn Store>) {
    let cutoff = at(100_000);
    let old = at(1_000);
    let recent = at(200_000);
    let finished = |id: &str, ping: Option<DateTime<Utc>>, updated: Option<DateTime<Utc>>| {
        let mut t = test_task(oid(id), "testing");
        t.status = TaskStatus::Completed;
        t.last_worker_ping = ping;
        t.last_updated = updated;
        t
    };
    let obsolete = finished("aaaaaaaaaaaaaaaaaaaaaaaa", None, None);
    let stale = finished("baaaaaaaaaaaaaaaaaaaaaaa", None, Some(old));
    let pinged_recently = finished("caaaaaaaaaaaaaaaaaaaaaaa", Some(recent), Some(old));
    let recent_task = finished("daaaaaaaaaaaaaaaaaaaaaaa", Some(recent), Some(recent));
    let updated_recently = finished("eaaaaaaaaaaaaaaaaaaaaaaa", Some(old), Some(recent));
    let mut stale_queued = test_task(oid("faaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    stale_queued.last_updated = Some(old);
    let mut stale_active = test_task(oid("1baaaaaaaaaaaaaaaaaaaaaa"), "testing");
    stale_active.status = TaskStatus::Active;
    stale_active.last_worker_ping = Some(old);
    let mut failed_parent = finished("2baaaaaaaaaaaaaaaaaaaaaa", Some(old), Some(old));
    failed_parent.status = TaskStatus::Failed;
    let mut waiting_child = test_task(oid("3baaaaaaaaaaaaaaaaaaaaaa"), "testing");
    waiting_child.parents = vec![failed_parent.id];
    waiting_child.last_updated = Some(recent);
    let mut canceled = finished("4baaaaaaaaaaaaaaaaaaaaaa", Some(old), None);
    canceled.status = TaskStatus::Canceled;
    add_tasks(
        &store,
        &[
            obsolete.clone(),
            stale.clone(),
            pinged_recently.clone(),
            recent_task.clone(),
            updated_recently.clone(),
            stale_queued.clone(),
            stale_active.clone(),
            failed_parent.clone(),
            waiting_child.clone(),
            canceled.clone(),
        ],
    )
    .await;

    // In batches of two: call until nothing is left to delete.
    let mut deleted = 0;
    loop {
        let n = store
            .delete_finished_tasks(cutoff, 2)
            .await
            .expect("cleanup")
            .rows;
        assert!(n <= 2);
        deleted += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(deleted, 3);
    let left: Vec<ObjectId> = store
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    let mut expected = vec![
        pinged_recently.id,
        recent_task.id,
        updated_recently.id,
        stale_queued.id,
        stale_active.id,
        failed_parent.id,
        waiting_child.id,
    ];
    expected.sort();
    assert_eq!(left, expected);
    // The child still waits for its failed parent.
    let w = test_worker(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), "w", &["testing"]);
    add_worker(&store, &w).await;
    assert_eq!(
        claimed_id(&store, &w, at(300_000)).await,
        Some(stale_queued.id)
    );
    assert_eq!(
        claimed_id(&store, &w, at(300_000)).await,
        Some(stale_queued.id)
    );
}

/// Clean slate deletes every task in batches; the outbox purge empties the outbox oldest
/// first; workers stay.
pub async fn clean_slate_and_outbox_purge(store: Arc<dyn Store>) {
    let tasks: Vec<Task> = (0..25)
        .map(|i| test_task(nth_id(1, i), "sleeping"))
        .collect();
    add_tasks(&store, &tasks).await;
    let w = test_worker(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), "w", &["sleeping"]);
    add_worker(&store, &w).await;
    for i in 0..5 {
        assert!(claimed_id(&store, &w, at(i)).await.is_some());
        let active = store
            .list_tasks(&TaskQuery {
                statuses: vec![TaskStatus::Active],
                ..TaskQuery::default()
            })
            .await
            .expect("list");
        for t in active {
            let u = worker_update(t.id, &w, Some(TaskStatus::Completed), "done", at(i));
            store.apply_worker_update(w.id, u).await.expect("update");
        }
    }
    assert_eq!(store.outbox_len().await.expect("len"), 15);
    let mut total = 0;
    loop {
        let n = store.delete_tasks(10).await.expect("delete").rows;
        total += n;
        if n < 10 {
            break;
        }
    }
    assert_eq!(total, 25);
    assert!(store
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list")
        .is_empty());
    assert_eq!(store.list_workers().await.expect("workers").len(), 1);
    assert_eq!(store.outbox_len().await.expect("len"), 15);

    let first_left = outbox(&store).await[10].id;
    assert_eq!(store.purge_outbox(10).await.expect("purge").rows, 10);
    assert_eq!(
        outbox(&store).await[0].id,
        first_left,
        "oldest purged first"
    );
    assert_eq!(store.purge_outbox(10).await.expect("purge").rows, 5);
    assert_eq!(store.outbox_len().await.expect("len"), 0);
}

/// Clean slate in standalone mode: a job goes with the batch that deletes its last task
/// (never earlier), so no job is left `queued (0/0)`; tasks without a job go too.
pub async fn clean_slate_removes_emptied_jobs(store: Arc<dyn Store>) {
    let (a, a_tasks) = test_job(oid("aaaaaaaaaaaaaaaaaaaaaaa1"), 1, 12);
    let (b, b_tasks) = test_job(oid("aaaaaaaaaaaaaaaaaaaaaaa2"), 2, 3);
    store.insert_job(&a, &a_tasks).await.expect("insert a");
    store.insert_job(&b, &b_tasks).await.expect("insert b");
    add_tasks(&store, &[test_task(nth_id(3, 1), "sleeping")]).await;
    // The first batch takes 10 of a's 12 tasks: a keeps its job, b is untouched.
    assert_eq!(store.delete_tasks(10).await.expect("delete").rows, 10);
    assert_eq!(job(&store, a.id).await.id, a.id);
    assert_eq!(job(&store, b.id).await.id, b.id);
    assert_eq!(store.delete_tasks(10).await.expect("delete").rows, 6);
    for id in [a.id, b.id] {
        assert!(
            store.get_job(id).await.expect("get").is_none(),
            "job {id} lost its tasks and is gone"
        );
    }
    assert!(store
        .list_jobs(&JobQuery::default())
        .await
        .expect("list")
        .is_empty());
    assert_eq!(store.delete_tasks(10).await.expect("delete").rows, 0);
}

// ---- jobs (standalone mode) ----

/// A `queued` job of `n` `sleep` tasks (`sleep-1` …, ids `nth_id(task_prefix, 1..=n)`,
/// job priority 50, task priority 50), created at `at(0)`, its counts set.
pub fn test_job(job_id: ObjectId, task_prefix: u8, n: u32) -> (Job, Vec<Task>) {
    let job = Job {
        id: job_id,
        name: format!("job {job_id}"),
        job_type: "sleep".into(),
        priority: 50,
        status: JobStatus::Queued,
        settings: json!({"frames": format!("1-{n}"), "time_in_seconds": 1})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        created: at(0),
        updated: at(0),
        task_counts: TaskCounts::default(),
        worker_tag: None,
    };
    let tasks: Vec<Task> = (1..=n)
        .map(|i| {
            let mut t = Task::new(
                format!("sleep-{i}"),
                "sleep",
                vec![Command::new("sleep", json!({"time_in_seconds": 1}))],
            );
            t.id = nth_id(task_prefix, i);
            t.job = Some(job_id);
            t.job_type = "sleep".into();
            t.job_priority = 50;
            t.last_updated = Some(at(0));
            t
        })
        .collect();
    (with_counts(job, &tasks), tasks)
}

/// `job` with the counts of `tasks`.
fn with_counts(mut job: Job, tasks: &[Task]) -> Job {
    job.task_counts = TaskCounts::from_statuses(tasks.iter().map(|t| &t.status));
    job
}

fn counts_of(pairs: &[(TaskStatus, u64)]) -> TaskCounts {
    let mut c = TaskCounts::default();
    for (s, n) in pairs {
        c.add(s, *n);
    }
    c
}

async fn job(store: &Arc<dyn Store>, id: ObjectId) -> Job {
    store
        .get_job(id)
        .await
        .expect("get job")
        .unwrap_or_else(|| panic!("job {id} should exist"))
}

async fn ack_all(store: &Arc<dyn Store>) {
    let ids: Vec<ObjectId> = outbox(store).await.iter().map(|u| u.id).collect();
    store.outbox_ack(&ids).await.expect("ack");
}

/// Consume the whole outbox as the standalone consumer does: apply, then acknowledge.
async fn consume(store: &Arc<dyn Store>, now: DateTime<Utc>) -> Vec<JobStatusChange> {
    let updates = outbox(store).await;
    let changes = store
        .apply_updates_to_jobs(&updates, now)
        .await
        .expect("apply updates to jobs");
    let ids: Vec<ObjectId> = updates.iter().map(|u| u.id).collect();
    store.outbox_ack(&ids).await.expect("ack");
    changes
}

async fn action(
    store: &Arc<dyn Store>,
    id: ObjectId,
    what: JobAction,
    now: DateTime<Utc>,
) -> JobActionOutcome {
    store.job_action(id, what, now).await.expect("job action")
}

fn done(outcome: JobActionOutcome) -> (Job, u64) {
    match outcome {
        JobActionOutcome::Done { job, tasks } => (job, tasks),
        other => panic!("expected the action to be done, got {other:?}"),
    }
}

fn refused(outcome: &JobActionOutcome) -> bool {
    matches!(outcome, JobActionOutcome::Refused(reason) if !reason.is_empty())
}

/// A job and its tasks are stored together (or not at all), read back whole, and listed
/// newest first with status filters and paging.
pub async fn jobs_insert_get_list(store: Arc<dyn Store>) {
    let (j1, t1) = test_job(nth_id(0x11, 1), 0x21, 3);
    store.insert_job(&j1, &t1).await.expect("insert job");
    assert_eq!(job(&store, j1.id).await, j1);
    assert_eq!(store.get_job(nth_id(0x11, 99)).await.expect("get"), None);
    let stored = store
        .list_tasks(&TaskQuery {
            job: Some(j1.id),
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(stored, t1, "the tasks are stored as given");

    let (mut j2, t2) = test_job(nth_id(0x11, 2), 0x22, 1);
    j2.status = JobStatus::Completed;
    j2.priority = 80;
    j2.created = at(10);
    j2.updated = at(20);
    store.insert_job(&j2, &t2).await.expect("insert job");
    let (mut j3, t3) = test_job(nth_id(0x11, 3), 0x23, 2);
    j3.created = at(30);
    j3.updated = at(30);
    store.insert_job(&j3, &t3).await.expect("insert job");
    // The largest id, but the oldest: another process made it in the same second.
    let (mut j0, t0) = test_job(nth_id(0x11, 9), 0x20, 1);
    j0.created = at(-5);
    j0.updated = at(-5);
    store.insert_job(&j0, &t0).await.expect("insert job");

    let ids = |jobs: Vec<Job>| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    let list = |q: JobQuery| {
        let store = store.clone();
        async move { store.list_jobs(&q).await.expect("list jobs") }
    };
    assert_eq!(
        ids(list(JobQuery::default()).await),
        [j3.id, j2.id, j1.id, j0.id],
        "newest first, by creation time"
    );
    assert_eq!(list(JobQuery::default()).await[1], j2);
    assert_eq!(
        ids(list(JobQuery {
            statuses: vec![JobStatus::Queued],
            ..JobQuery::default()
        })
        .await),
        [j3.id, j1.id, j0.id]
    );
    assert_eq!(
        ids(list(JobQuery {
            statuses: vec![JobStatus::Completed, JobStatus::Failed],
            ..JobQuery::default()
        })
        .await),
        [j2.id]
    );
    assert_eq!(
        ids(list(JobQuery {
            limit: Some(1),
            offset: 1,
            ..JobQuery::default()
        })
        .await),
        [j2.id]
    );

    // Both or neither: a duplicate job id, or a duplicate task id, stores nothing.
    let (dup_job, fresh_tasks) = test_job(j1.id, 0x24, 2);
    assert!(matches!(
        store.insert_job(&dup_job, &fresh_tasks).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(store.get_task(fresh_tasks[0].id).await.expect("get"), None);
    let (fresh_job, _) = test_job(nth_id(0x11, 4), 0x25, 1);
    assert!(matches!(
        store.insert_job(&fresh_job, &t1[..1]).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(store.get_job(fresh_job.id).await.expect("get"), None);
}

/// Cancel (§4.3): queued and claimed-by-manager tasks become canceled, active ones
/// cancel-requested, finished ones stay; each change goes through the outbox; the job is
/// cancel-requested until its last running task stopped, then canceled.
pub async fn job_cancel_cascades_to_tasks(store: Arc<dyn Store>) {
    let w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleep"]);
    add_worker(&store, &w).await;
    let (j, mut tasks) = test_job(nth_id(0x12, 1), 0x31, 4);
    tasks[1].priority = 90; // claimed first
    tasks[2].status = TaskStatus::Completed;
    tasks[3].status = TaskStatus::ClaimedByManager;
    let j = with_counts(j, &tasks);
    store.insert_job(&j, &tasks).await.expect("insert job");
    assert_eq!(claimed_id(&store, &w, at(1)).await, Some(tasks[1].id));
    assert_eq!(
        consume(&store, at(2)).await.len(),
        1,
        "the job became active"
    );
    assert_eq!(job(&store, j.id).await.status, JobStatus::Active);

    let (after, changed) = done(action(&store, j.id, JobAction::Cancel, at(3)).await);
    assert_eq!(changed, 3);
    assert_eq!(after.status, JobStatus::CancelRequested);
    assert_eq!(after.updated, at(3));
    assert_eq!(
        after.task_counts,
        counts_of(&[
            (TaskStatus::Canceled, 2),
            (TaskStatus::CancelRequested, 1),
            (TaskStatus::Completed, 1),
        ])
    );
    assert_eq!(job(&store, j.id).await, after);
    let t0 = task(&store, tasks[0].id).await;
    assert_eq!(t0.status, TaskStatus::Canceled);
    assert_eq!(t0.last_updated, Some(at(3)));
    let t1 = task(&store, tasks[1].id).await;
    assert_eq!(t1.status, TaskStatus::CancelRequested);
    assert_eq!(
        t1.worker_id,
        Some(w.id),
        "the worker keeps its task until it stops"
    );
    assert_eq!(
        task(&store, tasks[2].id).await.status,
        TaskStatus::Completed
    );
    assert_eq!(task(&store, tasks[3].id).await.status, TaskStatus::Canceled);
    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 3);
    let expected = [
        (tasks[0].id, TaskStatus::Canceled),
        (tasks[1].id, TaskStatus::CancelRequested),
        (tasks[3].id, TaskStatus::Canceled),
    ];
    for (u, (id, status)) in queued.iter().zip(expected) {
        assert_same_update(
            u,
            &crate::jobs::status::cascade_update(id, &status, &JobStatus::CancelRequested, at(3)),
        );
    }
    assert_eq!(t0.activity, queued[0].activity);

    // The worker hears it through may-i-run; canceling again does nothing; the job can be
    // neither re-queued nor deleted while a task stops.
    assert_eq!(
        store
            .may_i_run(t1.id, w.id, at(4))
            .await
            .expect("may i run"),
        MayIRun::NotRunnable(TaskStatus::CancelRequested)
    );
    let (again, changed) = done(action(&store, j.id, JobAction::Cancel, at(5)).await);
    assert_eq!((again.status, changed), (JobStatus::CancelRequested, 0));
    assert!(refused(
        &action(&store, j.id, JobAction::Requeue, at(5)).await
    ));
    assert!(refused(
        &action(&store, j.id, JobAction::Delete, at(5)).await
    ));

    // Consuming the cascade's own updates leaves the job cancel-requested.
    assert!(consume(&store, at(6)).await.is_empty());
    assert_eq!(job(&store, j.id).await.status, JobStatus::CancelRequested);

    // The worker returns the task: canceled; the consumer finishes the job.
    assert_eq!(
        store
            .return_task(t1.id, w.id, &w.identifier(), at(7))
            .await
            .expect("return"),
        ReturnOutcome::Canceled
    );
    let changes = consume(&store, at(8)).await;
    assert_eq!(
        changes,
        [JobStatusChange {
            job: j.id,
            from: JobStatus::CancelRequested,
            to: JobStatus::Canceled,
        }]
    );
    let ended = job(&store, j.id).await;
    assert_eq!(ended.status, JobStatus::Canceled);
    assert_eq!(
        ended.task_counts,
        counts_of(&[(TaskStatus::Canceled, 3), (TaskStatus::Completed, 1)])
    );
    assert!(refused(
        &action(&store, j.id, JobAction::Cancel, at(9)).await
    ));

    // A job with nothing running is canceled at once; unknown jobs are not found.
    let (idle, idle_tasks) = test_job(nth_id(0x12, 2), 0x32, 2);
    store.insert_job(&idle, &idle_tasks).await.expect("insert");
    let (after, changed) = done(action(&store, idle.id, JobAction::Cancel, at(10)).await);
    assert_eq!((after.status, changed), (JobStatus::Canceled, 2));
    assert_eq!(
        action(&store, nth_id(0x12, 99), JobAction::Cancel, at(10)).await,
        JobActionOutcome::NotFound
    );
}

/// Re-queue (§4.3): failed and canceled tasks are queued again (every task for a
/// completed job), without a worker; delete removes a finished job with its tasks, and
/// only a finished one.
pub async fn job_requeue_and_delete(store: Arc<dyn Store>) {
    let w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleep"]);
    add_worker(&store, &w).await;
    let (mut j, mut tasks) = test_job(nth_id(0x13, 1), 0x41, 3);
    tasks[0].status = TaskStatus::Failed;
    tasks[0].worker_id = Some(w.id);
    tasks[1].status = TaskStatus::Canceled;
    tasks[2].status = TaskStatus::Completed;
    j.status = JobStatus::Failed;
    let j = with_counts(j, &tasks);
    store.insert_job(&j, &tasks).await.expect("insert job");
    assert!(refused(
        &action(&store, j.id, JobAction::Cancel, at(1)).await
    ));

    let (after, changed) = done(action(&store, j.id, JobAction::Requeue, at(2)).await);
    assert_eq!(changed, 2);
    assert_eq!(after.status, JobStatus::Queued);
    assert_eq!(
        after.task_counts,
        counts_of(&[(TaskStatus::Queued, 2), (TaskStatus::Completed, 1)])
    );
    let t0 = task(&store, tasks[0].id).await;
    assert_eq!(t0.status, TaskStatus::Queued);
    assert_eq!(t0.worker_id, None);
    assert_eq!(task(&store, tasks[1].id).await.status, TaskStatus::Queued);
    assert_eq!(
        task(&store, tasks[2].id).await.status,
        TaskStatus::Completed
    );
    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 2);
    assert!(queued
        .iter()
        .all(|u| u.task_status == Some(TaskStatus::Queued) && u.worker == "-"));
    assert!(consume(&store, at(3)).await.is_empty());
    assert_eq!(job(&store, j.id).await.status, JobStatus::Queued);
    assert!(refused(
        &action(&store, j.id, JobAction::Delete, at(4)).await
    ));
    assert_eq!(claimed_id(&store, &w, at(5)).await, Some(tasks[0].id));

    // A completed job re-runs every task.
    let (mut c, mut c_tasks) = test_job(nth_id(0x13, 2), 0x42, 2);
    for t in &mut c_tasks {
        t.status = TaskStatus::Completed;
    }
    c.status = JobStatus::Completed;
    let c = with_counts(c, &c_tasks);
    store.insert_job(&c, &c_tasks).await.expect("insert job");
    let (after, changed) = done(action(&store, c.id, JobAction::Requeue, at(6)).await);
    assert_eq!((after.status, changed), (JobStatus::Queued, 2));
    assert_eq!(after.task_counts, counts_of(&[(TaskStatus::Queued, 2)]));

    // Delete: refused while a task of a finished job still stops, done afterwards.
    let (mut d, mut d_tasks) = test_job(nth_id(0x13, 3), 0x43, 3);
    d_tasks[0].status = TaskStatus::CancelRequested;
    d_tasks[1].status = TaskStatus::Canceled;
    d_tasks[2].status = TaskStatus::Completed;
    d.status = JobStatus::Canceled;
    let d = with_counts(d, &d_tasks);
    store.insert_job(&d, &d_tasks).await.expect("insert job");
    assert!(refused(
        &action(&store, d.id, JobAction::Delete, at(7)).await
    ));
    let mut stopped = TaskUpdate::new(d_tasks[0].id, at(8));
    stopped.task_status = Some(TaskStatus::Canceled);
    store.queue_update(stopped).await.expect("queue");
    let (gone, deleted) = done(action(&store, d.id, JobAction::Delete, at(9)).await);
    assert_eq!((gone.id, deleted), (d.id, 3));
    assert_eq!(store.get_job(d.id).await.expect("get"), None);
    for t in &d_tasks {
        assert_eq!(store.get_task(t.id).await.expect("get"), None);
    }
    assert_eq!(
        action(&store, d.id, JobAction::Delete, at(10)).await,
        JobActionOutcome::NotFound
    );
    // Updates of deleted tasks are consumed without effect.
    consume(&store, at(11)).await;
    assert_eq!(store.outbox_len().await.expect("len"), 0);
    assert_eq!(job(&store, j.id).await.status, JobStatus::Active);
}

/// The consumer's step (§4.2): a job follows its tasks through the outbox — active,
/// completed, failed (with the cascade that cancels the rest) — keeps its counts, and
/// consuming the same updates again changes nothing.
pub async fn apply_updates_to_jobs_follows_tasks(store: Arc<dyn Store>) {
    let w1 = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "w1", &["sleep"]);
    let w2 = test_worker(oid("a3a3a3a3a3a3a3a3a3a3a3a3"), "w2", &["sleep"]);
    add_worker(&store, &w1).await;
    add_worker(&store, &w2).await;

    // Two tasks, both completed: the job completes.
    let (small, small_tasks) = test_job(nth_id(0x14, 1), 0x51, 2);
    store
        .insert_job(&small, &small_tasks)
        .await
        .expect("insert");
    for (i, t) in small_tasks.iter().enumerate() {
        let now = at(10 * i as i64 + 1);
        assert_eq!(claimed_id(&store, &w1, now).await, Some(t.id));
        let u = worker_update(t.id, &w1, Some(TaskStatus::Completed), "done", now);
        assert_eq!(
            store.apply_worker_update(w1.id, u).await.expect("update"),
            WorkerUpdateOutcome::Applied
        );
    }
    let updates = outbox(&store).await;
    let changes = store
        .apply_updates_to_jobs(&updates, at(30))
        .await
        .expect("apply");
    assert_eq!(
        changes.iter().map(|c| c.to.clone()).collect::<Vec<_>>(),
        [JobStatus::Completed],
        "the current task statuses decide: every task is completed already"
    );
    let completed = job(&store, small.id).await;
    assert_eq!(completed.status, JobStatus::Completed);
    assert_eq!(completed.updated, at(30));
    assert_eq!(
        completed.task_counts,
        counts_of(&[(TaskStatus::Completed, 2)])
    );
    // Idempotent: the same updates again (a crash before the acknowledgement).
    assert!(store
        .apply_updates_to_jobs(&updates, at(31))
        .await
        .expect("apply")
        .is_empty());
    assert_eq!(job(&store, small.id).await, completed);
    ack_all(&store).await;

    // Ten tasks: the first active makes the job active; one failure in ten fails it and
    // cancels the rest.
    let (big, big_tasks) = test_job(nth_id(0x14, 2), 0x52, 10);
    store.insert_job(&big, &big_tasks).await.expect("insert");
    assert_eq!(claimed_id(&store, &w1, at(40)).await, Some(big_tasks[0].id));
    let changes = consume(&store, at(41)).await;
    assert_eq!(
        changes,
        [JobStatusChange {
            job: big.id,
            from: JobStatus::Queued,
            to: JobStatus::Active,
        }]
    );
    assert_eq!(
        job(&store, big.id).await.task_counts,
        counts_of(&[(TaskStatus::Active, 1), (TaskStatus::Queued, 9)])
    );
    assert_eq!(claimed_id(&store, &w2, at(42)).await, Some(big_tasks[1].id));
    let u = worker_update(
        big_tasks[0].id,
        &w1,
        Some(TaskStatus::Failed),
        "oops",
        at(43),
    );
    store.apply_worker_update(w1.id, u).await.expect("update");
    let changes = consume(&store, at(44)).await;
    assert_eq!(
        changes,
        [JobStatusChange {
            job: big.id,
            from: JobStatus::Active,
            to: JobStatus::Failed,
        }]
    );
    let failed = job(&store, big.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(
        failed.task_counts,
        counts_of(&[
            (TaskStatus::Failed, 1),
            (TaskStatus::CancelRequested, 1),
            (TaskStatus::Canceled, 8),
        ])
    );
    assert_eq!(
        task(&store, big_tasks[1].id).await.status,
        TaskStatus::CancelRequested
    );
    assert_eq!(
        task(&store, big_tasks[5].id).await.status,
        TaskStatus::Canceled
    );
    assert_eq!(
        store.outbox_len().await.expect("len"),
        9,
        "the cascade's updates wait in the outbox"
    );
    // Consuming them, and the running task's stop, leaves the job failed.
    assert!(consume(&store, at(45)).await.is_empty());
    store
        .return_task(big_tasks[1].id, w2.id, &w2.identifier(), at(46))
        .await
        .expect("return");
    assert!(consume(&store, at(47)).await.is_empty());
    let ended = job(&store, big.id).await;
    assert_eq!(ended.status, JobStatus::Failed);
    assert_eq!(
        ended.task_counts,
        counts_of(&[(TaskStatus::Failed, 1), (TaskStatus::Canceled, 9)])
    );

    // Updates without a status, of tasks without a job, or of unknown tasks: no effect.
    let loose = prio_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleep", 0, 50);
    let mut loose = loose;
    loose.job = None;
    add_tasks(&store, std::slice::from_ref(&loose)).await;
    let mut a = TaskUpdate::new(loose.id, at(50));
    a.task_status = Some(TaskStatus::Failed);
    let mut b = TaskUpdate::new(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), at(50));
    b.task_status = Some(TaskStatus::Completed);
    let c = TaskUpdate::new(big_tasks[2].id, at(50));
    assert!(store
        .apply_updates_to_jobs(&[a, b, c], at(51))
        .await
        .expect("apply")
        .is_empty());
    assert_eq!(job(&store, big.id).await, ended);
}

/// Generate one `#[tokio::test]` per conformance function. `$make` is an async fn
/// returning `(Arc<dyn Store>, G)`: a fresh, empty store, and a guard kept alive for the
/// test (a temporary directory, a database to drop, …). The store is closed at the end.
///
/// `conformance_tests!(optional $make)` does the same with a `$make` returning
/// `Option<(Arc<dyn Store>, G)>`: `None` skips the test (for a database server that is not
/// available; `$make` says why).
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@names each $make);
    };
    (optional $make:path) => {
        $crate::conformance_tests!(@names each_optional $make);
    };
    (@names $mode:ident $make:path) => {
        $crate::conformance_tests!(
            @$mode $make;
            tasks_round_trip_every_field,
            duplicate_insert_is_refused_atomically,
            upsert_replaces_whole_tasks,
            list_tasks_filters,
            list_tasks_orders,
            count_tasks_by_status,
            count_tasks_by_status_and_type,
            record_pings_only_for_own_runnable_tasks,
            write_deferred_contacts_reports_and_pings,
            claim_order,
            claim_filters_by_task_type,
            claim_follows_worker_tags,
            job_worker_tag_reaches_its_tasks,
            tags_survive_sign_on_and_off,
            tag_workers_on_many,
            latest_image_versions_and_rule,
            claim_parent_rules,
            claim_assigns_and_queues_two_updates,
            claim_returns_already_assigned_task,
            claim_after_stops_cancels_then_claims,
            claim_after_empty_claims_sees_new_work,
            claim_finds_free_task_behind_many_blocked,
            claim_ignores_non_active_tasks_of_worker,
            concurrent_claims_hand_out_each_task_once,
            outbox_order_and_ack,
            queue_update_applies_locally,
            unassign_task_requeues_only_own_active_task,
            worker_update_outcomes,
            worker_update_v2_multiple_workers_for_one_task,
            worker_update_v2_cancel_requested_task,
            worker_update_v2_task_rescheduling,
            may_i_run_outcomes,
            return_task_outcomes,
            sign_off_requeues_active_tasks,
            workers_insert_get_list,
            worker_secret_sha256_set_if_hash_unchanged,
            worker_seen_semantics,
            worker_sign_on_v2_sequence,
            worker_status_request_set_and_ack,
            contact_never_overrides_an_acknowledged_status,
            sign_on_wakes_an_asleep_worker,
            sign_off_withdraws_pending_requests,
            settings_set_get_clear,
            merge_downloaded_tasks_keeps_running_tasks,
            reserve_confirm_release,
            upstream_cancels_follow_v2,
            outbox_set_aside_after_unacknowledged_attempts,
            timeouts_fail_silent_active_tasks,
            timeouts_mark_silent_workers,
            cleanup_removes_only_old_finished_tasks,
            cleanup_walks_past_many_kept_parents,
            clean_slate_and_outbox_purge,
            clean_slate_removes_emptied_jobs,
            jobs_insert_get_list,
            job_cancel_cascades_to_tasks,
            job_requeue_and_delete,
            apply_updates_to_jobs_follows_tasks,
            task_log_keeps_worker_lines_in_order,
            task_log_cap_keeps_head_and_tail,
            task_log_retention_follows_the_task,
            webhook_queue_retries_gives_up_and_counts,
            last_words_of_a_canceled_task_are_kept,
            task_actions_follow_the_status_rules,
            canceling_one_task_stops_its_job,
            set_job_priority_reaches_tasks,
            forget_worker_follows_the_rule,
            failed_tasks_soft_fail_until_n_distinct_workers,
            retries_off_fail_at_once,
            claim_skips_workers_in_the_failure_record,
            requeue_clears_the_failure_record,
            blocklist_after_threshold_and_unblock,
            blocklisted_worker_gets_the_next_jobs_task,
            blocklisted_for_one_type_gets_the_jobs_other_type,
            no_worker_left_fails_the_job,
            maintenance_fails_stranded_tasks,
            tagged_job_without_worker_fails,
            timed_out_tasks_are_retried,
            timed_out_tasks_fail_without_retries,
        );
    };
    (@each $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, _guard) = $make().await;
                $crate::store::conformance::$name(store.clone()).await;
                store.close().await.expect("close the store");
            }
        )*
    };
    (@each_optional $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some((store, _guard)) = $make().await else {
                    return;
                };
                $crate::store::conformance::$name(store.clone()).await;
                store.close().await.expect("close the store");
            }
        )*
    };
}

#[allow(unused_imports)]
pub(crate) use crate::conformance_tests;
