//! The MongoDB store against a real server: the test server `scripts/test.sh` starts
//! (SecantusDB), or any MongoDB named by `FLAMENCO_TEST_MONGODB_URL`. The whole
//! conformance suite, two Managers sharing one database, a database left by the Go
//! Manager v2, the documents' shape, query plans, and failing fast when the server is
//! unreachable. Each test uses a database of its own, dropped afterwards.
//!
//! Without `FLAMENCO_TEST_MONGODB_URL` the tests that need a server skip with a notice,
//! except under `CI=true`, where they fail.

use flamenco_core::store::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flamenco_core::model::{ObjectId, Task, TaskStatus, TaskUpdate};
use flamenco_core::store::conformance::{
    at, claim_request, nth_id, oid, prio_task, test_task, test_worker, worker_update,
};
use flamenco_core::store::mongo::testing::TestDatabase;
use flamenco_core::store::mongo::MongoStore;
use flamenco_core::store::{Store, StoreError};
use flamenco_core::updates::WorkerUpdateOutcome;
use futures::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, Document};

async fn make() -> Option<(Arc<dyn Store>, TestDatabase)> {
    // The test harness names the thread after the test.
    let test = std::thread::current()
        .name()
        .unwrap_or("a conformance case")
        .to_string();
    let db = TestDatabase::new(&test)?;
    let store = MongoStore::connect(&db.url)
        .await
        .expect("connect to the test MongoDB server");
    Some((Arc::new(store), db))
}

/// Every conformance case, on a fresh database each.
mod conformance {
    flamenco_core::conformance_tests!(optional super::make);
}

/// A raw driver handle on the test database, for looking at and planting documents.
async fn raw(db: &TestDatabase) -> mongodb::Database {
    let client = mongodb::Client::with_uri_str(&db.url)
        .await
        .expect("raw client");
    client.database(&db.name)
}

async fn all(coll: &mongodb::Collection<Document>, filter: Document) -> Vec<Document> {
    coll.find(filter)
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect")
}

fn bson_id(id: ObjectId) -> Bson {
    Bson::ObjectId(mongodb::bson::oid::ObjectId::from_bytes(id.bytes()))
}

/// Two Manager processes (two stores, two connection pools) on one database, eight
/// workers each claiming and completing concurrently: every task is handed out exactly
/// once, and each task's updates are queued in the order they happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_managers_on_one_database_never_hand_out_a_task_twice() {
    let Some(db) = TestDatabase::new("two_managers_on_one_database_never_hand_out_a_task_twice")
    else {
        return;
    };
    const TASKS: u32 = 200;
    const WORKERS_EACH: u32 = 8;
    let managers: Vec<Arc<dyn Store>> = vec![
        Arc::new(MongoStore::connect(&db.url).await.expect("manager A")),
        Arc::new(MongoStore::connect(&db.url).await.expect("manager B")),
    ];
    let tasks: Vec<Task> = (0..TASKS)
        .map(|n| prio_task(nth_id(0x50, n), "sleeping", (n % 3) as i32, (n % 7) as i32))
        .collect();
    managers[0].insert_tasks(&tasks).await.expect("insert");

    let started = Instant::now();
    let mut handles = Vec::new();
    // Whether any call went unanswered and was repeated (a loaded test server): then an
    // update may be queued twice (at least once), never out of order.
    let retries = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (m, store) in managers.iter().enumerate() {
        for n in 0..WORKERS_EACH {
            let w = test_worker(
                nth_id(0x60 + m as u8, n),
                &format!("m{m}-w{n}"),
                &["sleeping"],
            );
            store.insert_worker(&w).await.expect("worker");
            let store = store.clone();
            let retries = retries.clone();
            handles.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                // A claim the server did not answer in time may still be applied, even
                // after later claims (the server works through its backlog): the worker
                // asks again (as a real one does after a 503), and a later claim may give
                // that task back as already assigned. Only then is `already_assigned`
                // allowed; the property under test (no task handed out twice) still holds.
                let mut unanswered = false;
                for tick in 0.. {
                    let claimed = match store.claim_task(&claim_request(&w, at(tick))).await {
                        Ok(claimed) => claimed,
                        Err(StoreError::Unavailable(why)) => {
                            eprintln!("claim unanswered ({why}); asking again");
                            unanswered = true;
                            retries.store(true, std::sync::atomic::Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => panic!("claim: {e}"),
                    };
                    let Some(claimed) = claimed else {
                        break;
                    };
                    assert!(!claimed.already_assigned || unanswered);
                    assert_eq!(claimed.task.worker_id, Some(w.id));
                    let done = worker_update(
                        claimed.task.id,
                        &w,
                        Some(TaskStatus::Completed),
                        "done",
                        at(tick),
                    );
                    // An update the server did not answer in time is sent again, as the
                    // worker's queue does; only the first answer must be `Applied`.
                    let mut retried = false;
                    let outcome = loop {
                        match store.apply_worker_update(w.id, done.clone()).await {
                            Ok(outcome) => break outcome,
                            Err(StoreError::Unavailable(why)) => {
                                eprintln!("update unanswered ({why}); sending again");
                                retried = true;
                                retries.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(e) => panic!("update: {e}"),
                        }
                    };
                    assert!(
                        retried || outcome == WorkerUpdateOutcome::Applied,
                        "{outcome:?}"
                    );
                    mine.push(claimed.task.id);
                }
                (m, w.id, mine)
            }));
        }
    }
    let mut seen = BTreeSet::new();
    let mut per_manager = [0usize; 2];
    for h in handles {
        let (m, worker_id, mine) = h.await.expect("claimer panicked");
        per_manager[m] += mine.len();
        for id in mine {
            assert!(seen.insert(id), "task {id} was handed out twice");
            let t = managers[1 - m]
                .get_task(id)
                .await
                .expect("get")
                .expect("task");
            assert_eq!(t.worker_id, Some(worker_id));
            assert_eq!(t.status, TaskStatus::Completed);
        }
    }
    eprintln!(
        "two managers: {TASKS} tasks claimed and completed in {:?} (A {}, B {})",
        started.elapsed(),
        per_manager[0],
        per_manager[1]
    );
    assert_eq!(seen.len(), TASKS as usize);
    assert!(
        per_manager.iter().all(|&n| n > 0),
        "both managers handed out tasks: {per_manager:?}"
    );
    // Per task, the outbox holds `active`, the assignment log line, then `completed`.
    let queued = managers[1].outbox_peek(10_000).await.expect("peek");
    let repeated = retries.load(std::sync::atomic::Ordering::Relaxed);
    if repeated {
        assert!(queued.len() >= 3 * TASKS as usize, "{}", queued.len());
    } else {
        assert_eq!(queued.len(), 3 * TASKS as usize);
    }
    let mut by_task: BTreeMap<ObjectId, Vec<&TaskUpdate>> = BTreeMap::new();
    for u in &queued {
        by_task.entry(u.task_id).or_default().push(u);
    }
    for (task, updates) in by_task {
        let mut statuses: Vec<Option<&str>> = updates
            .iter()
            .map(|u| u.task_status.as_ref().map(|s| s.as_str()))
            .collect();
        if repeated {
            // At least once: a claim made again after an unanswered one returns the same
            // task and queues its assignment pair again; an update made again repeats.
            statuses.dedup();
            while statuses.len() > 3
                && statuses[..4] == [Some("active"), None, Some("active"), None]
            {
                statuses.drain(..2);
            }
        }
        assert_eq!(
            statuses,
            vec![Some("active"), None, Some("completed")],
            "outbox order of task {task}"
        );
    }
    for m in managers {
        m.close().await.expect("close");
    }
}

/// A database as the Go Manager v2 left it opens as it is: ObjectIds, binary secrets,
/// numbers stored as doubles and int64, updates without our `seq`, the single settings
/// document, v2's own indices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_database_opens_as_it_is() {
    let Some(db) = TestDatabase::new("a_v2_database_opens_as_it_is") else {
        return;
    };
    let raw = raw(&db).await;
    let tasks = raw.collection::<Document>("flamenco_tasks");
    let workers = raw.collection::<Document>("flamenco_workers");
    let queue = raw.collection::<Document>("task_update_queue");
    let settings = raw.collection::<Document>("settings");
    tasks
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "status": 1, "priority": 1 })
                .build(),
        )
        .await
        .expect("v2 index");

    let task_id = oid("5941a6d1c379cf4c1b4f9a1e");
    let parent = oid("5941a6d1c379cf4c1b4f9a00");
    tasks
        .insert_one(doc! {
            "_id": bson_id(task_id),
            "_etag": "e1",
            "job": bson_id(oid("5941a6d1c379cf4c1b4f9a0b")),
            "manager": bson_id(oid("5941a6d1c379cf4c1b4f9a0c")),
            "project": bson_id(oid("5941a6d1c379cf4c1b4f9a0d")),
            "user": bson_id(oid("5941a6d1c379cf4c1b4f9a0e")),
            "name": "render frame 1",
            "status": "queued",
            "priority": 50_i64,
            "job_priority": 10_i32,
            "job_type": "blender-render",
            "task_type": "sleeping",
            "commands": [
                { "name": "echo", "settings": { "message": "hi", "frames": 3.0_f64 } },
            ],
            "parents": [bson_id(parent)],
            "worker": "worker1",
            "last_updated": mongodb::bson::DateTime::from_millis(1_497_000_000_000),
        })
        .await
        .expect("v2 task");
    let worker_id = oid("5941a6d1c379cf4c1b4f9a2e");
    workers
        .insert_one(doc! {
            "_id": bson_id(worker_id),
            "hashed_secret": Binary { subtype: BinarySubtype::Generic, bytes: b"$2a$10$abcdefghijklmnopqrstuv".to_vec() },
            "nickname": "node1",
            "address": "10.0.0.5",
            "status": "awake",
            "platform": "linux",
            "time_cost": 0_i32,
            "last_activity": mongodb::bson::DateTime::from_millis(1_497_000_000_000),
            "supported_task_types": ["sleeping"],
            "software": "Flamenco-Worker/2.0.6",
        })
        .await
        .expect("v2 worker");
    let u1 = oid("5941a6d1c379cf4c1b4f9a31");
    let u2 = oid("5941a6d1c379cf4c1b4f9a32");
    for (id, ms) in [(u2, 1_497_000_000_000_i64), (u1, 1_497_000_000_000)] {
        queue
            .insert_one(doc! {
                "_id": bson_id(id),
                "task_id": bson_id(task_id),
                "task_status": "active",
                "received_on_manager": mongodb::bson::DateTime::from_millis(ms),
                "task_progress_percentage": 0_i32,
                "current_command_idx": 0_i32,
                "command_progress_percentage": 0_i32,
                "worker": "",
            })
            .await
            .expect("v2 update");
    }
    settings
        .insert_one(doc! { "depsgraph_last_modified": "Fri, 09 Jun 2017 10:39:31 GMT" })
        .await
        .expect("v2 settings");

    let store = MongoStore::connect(&db.url)
        .await
        .expect("open a v2 database");
    let t = store
        .get_task(task_id)
        .await
        .expect("get")
        .expect("the v2 task");
    assert_eq!(t.priority, 50);
    assert_eq!(t.job_priority, 10);
    assert_eq!(t.parents, vec![parent]);
    assert_eq!(
        t.commands[0].settings["frames"],
        serde_json::json!(3),
        "a whole double as v2 sent it"
    );
    assert_eq!(
        t.last_updated,
        chrono::DateTime::from_timestamp_millis(1_497_000_000_000)
    );
    let w = store
        .get_worker(worker_id)
        .await
        .expect("get")
        .expect("the v2 worker");
    assert_eq!(w.hashed_secret, "$2a$10$abcdefghijklmnopqrstuv");
    assert_eq!(w.status_requested, None);
    // No fast hash in a v2 document. Storing one (upgrade on login) keeps `hashed_secret`
    // the bcrypt binary a v2 Manager reads, and adds a string field v2 ignores.
    assert_eq!(w.secret_sha256, "");
    assert!(store
        .set_worker_secret_sha256(worker_id, &w.hashed_secret, "hmac-sha256$a$b$c")
        .await
        .expect("set fast hash"));
    let raw_worker = workers
        .find_one(doc! { "_id": bson_id(worker_id) })
        .await
        .expect("find")
        .expect("the v2 worker");
    assert!(
        matches!(raw_worker.get("hashed_secret"), Some(Bson::Binary(b)) if b.bytes == b"$2a$10$abcdefghijklmnopqrstuv"),
        "{raw_worker}"
    );
    assert_eq!(
        raw_worker.get_str("secret_sha256").expect("string"),
        "hmac-sha256$a$b$c"
    );
    let queued = store.outbox_peek(10).await.expect("peek");
    assert_eq!(
        queued.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![u1, u2],
        "v2's updates in their queueing (_id) order"
    );
    assert_eq!(
        store
            .get_setting("depsgraph_last_modified")
            .await
            .expect("setting")
            .as_deref(),
        Some("Fri, 09 Jun 2017 10:39:31 GMT")
    );
    store
        .set_setting(
            "depsgraph_last_modified",
            Some("Sat, 10 Jun 2017 10:00:00 GMT"),
        )
        .await
        .expect("set");
    assert_eq!(
        settings.count_documents(doc! {}).await.expect("count"),
        1,
        "still one settings document"
    );

    // The v2 worker claims the v2 task (its parent is not here, so it does not block);
    // the new updates queue after v2's.
    let claimed = store
        .claim_task(&claim_request(&w, at(0)))
        .await
        .expect("claim")
        .expect("the v2 task");
    assert_eq!(claimed.task.id, task_id);
    let queued = store.outbox_peek(10).await.expect("peek");
    assert_eq!(queued.len(), 4);
    assert_eq!(
        &queued[..2].iter().map(|u| u.id).collect::<Vec<_>>(),
        &[u1, u2]
    );

    let index_keys: Vec<Document> = tasks
        .list_indexes()
        .await
        .expect("indexes")
        .try_collect::<Vec<_>>()
        .await
        .expect("indexes")
        .into_iter()
        .map(|i| i.keys)
        .collect();
    assert_eq!(
        index_keys
            .iter()
            .filter(|k| **k == doc! { "status": 1, "priority": 1 })
            .count(),
        1,
        "v2's index is kept, not duplicated: {index_keys:?}"
    );
    store.close().await.expect("close");
}

/// What this store writes has v2's field names and BSON types, and omits empty fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_have_the_v2_shape() {
    let Some(db) = TestDatabase::new("documents_have_the_v2_shape") else {
        return;
    };
    let store = MongoStore::connect(&db.url).await.expect("connect");
    let described = store.describe();
    assert!(
        described.contains(&format!("/{}", db.name))
            && described.ends_with(&format!(" (database {})", db.name)),
        "{described}"
    );
    let raw = raw(&db).await;
    let mut t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    t.parents.clear();
    t.etag.clear();
    t.worker.clear();
    let w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    store
        .insert_tasks(std::slice::from_ref(&t))
        .await
        .expect("insert");
    store.insert_worker(&w).await.expect("worker");

    let d = &all(&raw.collection("flamenco_tasks"), doc! {}).await[0];
    assert!(matches!(d.get("_id"), Some(Bson::ObjectId(_))), "{d}");
    assert!(matches!(d.get("job"), Some(Bson::ObjectId(_))), "{d}");
    assert!(matches!(d.get("priority"), Some(Bson::Int32(50))), "{d}");
    for absent in [
        "_etag",
        "log",
        "activity",
        "parents",
        "worker",
        "worker_id",
        "last_updated",
    ] {
        assert!(d.get(absent).is_none(), "{absent} should be omitted: {d}");
    }
    let d = &all(&raw.collection("flamenco_workers"), doc! {}).await[0];
    assert!(
        matches!(d.get("hashed_secret"), Some(Bson::Binary(b)) if b.bytes == w.hashed_secret.as_bytes()),
        "{d}"
    );
    assert!(d.get("current_task").is_none(), "{d}");
    assert!(d.get("status_requested").is_none(), "{d}");

    let tasks_claimed_id = store
        .claim_task(&claim_request(&w, at(5)))
        .await
        .expect("claim")
        .expect("task")
        .task
        .id;
    let d = &all(&raw.collection("flamenco_tasks"), doc! {}).await[0];
    assert_eq!(d.get_str("status").expect("status"), "active");
    assert_eq!(d.get_str("worker").expect("worker"), "workerLnx");
    assert!(matches!(d.get("worker_id"), Some(Bson::ObjectId(_))), "{d}");
    assert!(
        matches!(d.get("last_worker_ping"), Some(Bson::DateTime(_))),
        "{d}"
    );
    // The claim leaves the worker alone; the Manager's flush writes `current_task`.
    let d = &all(&raw.collection("flamenco_workers"), doc! {}).await[0];
    assert!(d.get("current_task").is_none(), "{d}");
    let contact = flamenco_core::store::Seen {
        now: at(5),
        address: String::new(),
        software: String::new(),
        mark_awake: false,
        task_report: None,
        current_task: Some(tasks_claimed_id),
    };
    store
        .write_deferred(&[(w.id, contact)], &[])
        .await
        .expect("flush");
    let d = &all(&raw.collection("flamenco_workers"), doc! {}).await[0];
    assert!(
        matches!(d.get("current_task"), Some(Bson::ObjectId(id)) if id.to_hex() == tasks_claimed_id.to_string()),
        "{d}"
    );
    // The assignment's two updates wait in the task (`outbox`, ours), and in no
    // collection of their own.
    assert!(all(&raw.collection("task_update_queue"), doc! {})
        .await
        .is_empty());
    let d = &all(&raw.collection("flamenco_tasks"), doc! {}).await[0];
    assert!(matches!(d.get("outbox_at"), Some(Bson::Int64(_))), "{d}");
    assert!(matches!(d.get("outbox_bytes"), Some(Bson::Int64(_))), "{d}");
    let updates: Vec<Document> = d
        .get_array("outbox")
        .expect("outbox")
        .iter()
        .map(|e| e.as_document().expect("an entry").clone())
        .collect();
    assert_eq!(updates.len(), 2);
    for u in &updates {
        assert!(matches!(u.get("_id"), Some(Bson::ObjectId(_))), "{u}");
        assert!(matches!(u.get("task_id"), Some(Bson::ObjectId(_))), "{u}");
        assert!(
            matches!(u.get("received_on_manager"), Some(Bson::DateTime(_))),
            "{u}"
        );
        assert!(matches!(u.get("seq"), Some(Bson::Int64(_))), "{u}");
        assert!(u.get("log").is_none() || u.get_str("log").is_ok_and(|l| !l.is_empty()));
    }
    assert!(
        updates.iter().any(|u| u.get("task_status").is_none()),
        "an update without status omits task_status"
    );
    // Made for whichever task the claim chose: they name it.
    for u in &updates {
        assert_eq!(
            u.get_object_id("task_id").expect("task_id").to_hex(),
            tasks_claimed_id.to_string(),
            "{u}"
        );
    }
    let assigned = updates
        .iter()
        .find_map(|u| u.get_str("activity").ok())
        .expect("the assignment's activity");
    assert_eq!(
        assigned,
        format!(
            "Manager assigned task {tasks_claimed_id} to worker {}",
            w.identifier()
        )
    );
    // Taken by the job source: the task is v2's shape again.
    let sent = store.outbox_peek(10).await.expect("peek");
    let ids: Vec<_> = sent.iter().map(|u| u.id).collect();
    assert_eq!(store.outbox_ack(&ids).await.expect("ack"), 2);
    let d = &all(&raw.collection("flamenco_tasks"), doc! {}).await[0];
    for ours in ["outbox", "outbox_at", "outbox_bytes"] {
        assert!(d.get(ours).is_none(), "{ours} should be gone: {d}");
    }
    store.close().await.expect("close");
}

/// The winning plan of an `explain` answer, as text.
fn winning_plan(plan: &Document) -> String {
    plan.get_document("queryPlanner")
        .and_then(|q| q.get_document("winningPlan"))
        .expect("winning plan")
        .to_string()
}

/// A query's winning plan uses `index` (a name, or "IXSCAN" for any index) and, when
/// `ordered`, no in-memory sort. SecantusDB's planner scans for some queries the index
/// serves on MongoDB: there a scan is a NOTICE, not a failure.
fn check_plan(what: &str, winning: &str, secantus: bool, index: &str, ordered: bool) {
    if secantus && !winning.contains("IXSCAN") {
        eprintln!("NOTICE: SecantusDB scans for the {what} (a planner limit): {winning}");
        return;
    }
    assert!(winning.contains(index), "{what}: {winning}");
    if ordered {
        assert!(
            !winning.contains("\"SORT\""),
            "{what}, the index gives the order: {winning}"
        );
    }
}

/// The indexed lookups use their index; the claim's candidate query too where the server's
/// planner can (MongoDB; SecantusDB's planner scans for a compound `$in` filter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_use_their_indexes() {
    let Some(db) = TestDatabase::new("queries_use_their_indexes") else {
        return;
    };
    let store = MongoStore::connect(&db.url).await.expect("connect");
    let tasks: Vec<Task> = (0..50u32)
        .map(|n| {
            let mut t = prio_task(nth_id(0x70, n), if n % 2 == 0 { "a" } else { "b" }, 0, 50);
            t.status = [
                TaskStatus::Queued,
                TaskStatus::Completed,
                TaskStatus::Active,
            ][n as usize % 3]
                .clone();
            t
        })
        .collect();
    store.insert_tasks(&tasks).await.expect("insert");
    let raw = raw(&db).await;
    let explain = |filter: Document, sort: Document| {
        let raw = raw.clone();
        async move {
            raw.run_command(doc! {
                "explain": { "find": "flamenco_tasks", "filter": filter, "sort": sort, "limit": 8 },
                "verbosity": "queryPlanner",
            })
            .await
            .expect("explain")
        }
    };
    let plan = explain(
        doc! { "status": "active", "worker_id": bson_id(nth_id(0x71, 1)) },
        doc! { "_id": 1 },
    )
    .await;
    let winning = winning_plan(&plan);
    assert!(
        winning.contains("IXSCAN"),
        "already-assigned lookup: {winning}"
    );
    let secantus = plan
        .get_document("serverInfo")
        .and_then(|s| s.get_str("host"))
        .is_ok_and(|h| h == "secantus");
    let cutoff = chrono::DateTime::from_timestamp(1_000, 0).expect("time");
    // The standalone claim's first read (the worker's active and cancel-requested tasks):
    // the same index, asked for no order, so no sort at all. (SecantusDB's explain says
    // COLLSCAN for `$in` + equality; its execution uses the index for `status` and
    // filters `worker_id`, docs/performance.md.)
    let plan = explain(
        MongoStore::own_open_tasks_query(nth_id(0x71, 1)),
        Document::new(),
    )
    .await;
    let winning = winning_plan(&plan);
    assert!(
        !winning.contains("\"SORT\""),
        "own open tasks, no sort: {winning}"
    );
    check_plan("own-tasks query", &winning, secantus, "IXSCAN", false);

    let (filter, sort) = MongoStore::claim_query(&["a".to_string()], &["gpu".to_string()]);
    let winning = winning_plan(&explain(filter, sort).await);
    check_plan("claim query", &winning, secantus, "IXSCAN", true);
    // A blocklisted worker's claim leaves out its blocked jobs with `$nin` on `job`, a
    // key of the same index: still that index, still no sort.
    let (mut filter, sort) = MongoStore::claim_query(&["a".to_string()], &[]);
    filter.insert(
        "job",
        doc! { "$nin": [bson_id(nth_id(0x72, 1)), bson_id(nth_id(0x72, 2))] },
    );
    let winning = winning_plan(&explain(filter, sort).await);
    check_plan(
        "blocklisted claim query",
        &winning,
        secantus,
        "IXSCAN",
        true,
    );
    // The cleanup walks the finished tasks untouched since the cutoff by
    // `{status, last_updated, _id}`, one status at a time: bounded by the cutoff, in the
    // index's order.
    for (filter, sort) in MongoStore::cleanup_queries(cutoff) {
        let winning = winning_plan(&explain(filter, sort).await);
        check_plan(
            "cleanup query",
            &winning,
            secantus,
            "status_1_last_updated_1__id_1",
            true,
        );
    }
    // The outbox's reader walks the tasks with waiting updates in the order of their
    // sparse index; its acknowledgement finds the tasks holding the updates through the
    // other one. (Checked with one task waiting.)
    store
        .queue_update(TaskUpdate::new(tasks[0].id, at(1)))
        .await
        .expect("queue");
    for (what, filter, sort) in MongoStore::outbox_queries() {
        let ordered = !sort.is_empty();
        let winning = winning_plan(&explain(filter, sort).await);
        let index = if ordered {
            "outbox_at_1"
        } else {
            "outbox._id_1"
        };
        check_plan(what, &winning, secantus, index, ordered);
    }
    // The timeout's candidates are asked in no order: no sort on the server.
    let winning = winning_plan(&explain(MongoStore::timeout_query(cutoff), Document::new()).await);
    assert!(
        !winning.contains("\"SORT\""),
        "timeouts, no sort: {winning}"
    );
    check_plan("timeout query", &winning, secantus, "IXSCAN", false);
    // The cleanup's index is partial: a running task's updates move no key in it.
    let indexes: Vec<mongodb::IndexModel> = raw
        .collection::<Document>("flamenco_tasks")
        .list_indexes()
        .await
        .expect("list indexes")
        .try_collect()
        .await
        .expect("indexes");
    let cleanup = indexes
        .iter()
        .find(|m| m.keys == doc! { "status": 1, "last_updated": 1, "_id": 1 })
        .expect("the cleanup index");
    assert_eq!(
        cleanup
            .options
            .as_ref()
            .and_then(|o| o.partial_filter_expression.as_ref()),
        Some(&doc! { "status": { "$gte": "canceled", "$lte": "failed" } }),
        "{cleanup:?}"
    );
    store.close().await.expect("close");
}

/// An unreachable server is reported within a few seconds, with the URL (password hidden)
/// and what to do. Needs no server.
#[tokio::test]
async fn an_unreachable_server_fails_fast_with_a_clear_message() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("mongodb://flamenco:hunter2@127.0.0.1:{port}/farm");
    let started = Instant::now();
    let err = match MongoStore::connect(&url).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    let StoreError::Unavailable(message) = &err else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert!(
        message.starts_with(&format!(
            "cannot reach MongoDB at mongodb://flamenco:****@127.0.0.1:{port}/farm: "
        )),
        "{message}"
    );
    assert!(
        message.ends_with("; check database_url or start MongoDB"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

/// A blocklisted worker's claim reads its blocklist entries once (one `find` of
/// `flamenco_job_blocklist`: one command more than a claim of a worker without entries,
/// which sends none) and gets the next job's task; the free worker still gets the
/// blocked job's task first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocklisted_claim_reads_its_entries_once() {
    use flamenco_core::jobs::retry::RetryPolicy;
    use flamenco_core::model::worker_status;
    use flamenco_core::store::conformance::test_job;
    use flamenco_core::store::mongo::testing::connect_logged;

    let Some(db) = TestDatabase::new("blocklisted_claim_reads_its_entries_once") else {
        return;
    };
    let (store, log) = connect_logged(&db.url).await.expect("connect");
    let store: Arc<dyn Store> = Arc::new(store);
    store.set_retry_policy(RetryPolicy::standalone(5, 1));
    let (a, a_tasks) = test_job(nth_id(0x81, 1), 0x82, 3);
    let (b, b_tasks) = test_job(nth_id(0x81, 2), 0x83, 1);
    store.insert_job(&a, &a_tasks).await.expect("insert job a");
    store.insert_job(&b, &b_tasks).await.expect("insert job b");
    let mut workers = Vec::new();
    for (n, name) in [(1, "w1"), (2, "w2")] {
        let mut w = test_worker(nth_id(0x84, n), name, &["sleep"]);
        w.status = worker_status::AWAKE.into();
        store.insert_worker(&w).await.expect("insert worker");
        workers.push(w);
    }
    let (w1, w2) = (&workers[0], &workers[1]);
    let log = &log;
    let claim = |w: &flamenco_core::model::Worker, ms: i64| {
        let store = store.clone();
        let req = claim_request(w, at(ms));
        async move {
            let got = store.claim_task(&req).await.expect("claim");
            (got.map(|c| c.task.id), log.take())
        }
    };
    log.take();
    let (got, _) = claim(w1, 1000).await;
    assert_eq!(got, Some(a_tasks[0].id));
    let outcome = store
        .apply_worker_update(
            w1.id,
            worker_update(
                a_tasks[0].id,
                w1,
                Some(TaskStatus::Failed),
                "exit 1",
                at(1010),
            ),
        )
        .await
        .expect("fail");
    assert_eq!(outcome, WorkerUpdateOutcome::Applied);
    assert_eq!(store.job_blocklist(a.id).await.expect("list").len(), 1);
    log.take();
    let (got, blocked) = claim(w1, 1020).await;
    println!(
        "blocklisted claim: {} commands: {}",
        blocked.len(),
        blocked.join(", ")
    );
    assert_eq!(got, Some(b_tasks[0].id), "the next job's task");
    let (got, free) = claim(w2, 1030).await;
    println!("free claim: {} commands: {}", free.len(), free.join(", "));
    assert_eq!(got, Some(a_tasks[0].id), "the blocked job's first task");
    let reads = |commands: &[String]| {
        commands
            .iter()
            .filter(|c| *c == "find flamenco_job_blocklist")
            .count()
    };
    assert_eq!(reads(&blocked), 1, "{blocked:?}");
    assert_eq!(reads(&free), 0, "{free:?}");
    assert_eq!(blocked.len(), free.len() + 1, "{blocked:?} / {free:?}");
}

/// A store on `db` whose commands are recorded, with `n` workers each running an active
/// task of its own; the log holds only what comes after the setup.
async fn logged_busy_workers(
    db: &TestDatabase,
    n: u32,
) -> (
    Arc<dyn Store>,
    flamenco_core::store::mongo::testing::CommandLog,
    Vec<(flamenco_core::model::Worker, Task)>,
) {
    let (store, log) = flamenco_core::store::mongo::testing::connect_logged(&db.url)
        .await
        .expect("connect");
    let store: Arc<dyn Store> = Arc::new(store);
    let mut pairs = Vec::new();
    for n in 1..=n {
        let w = test_worker(nth_id(0x91, n), &format!("w{n}"), &["testing"]);
        store.insert_worker(&w).await.expect("insert worker");
        let mut t = test_task(nth_id(0x92, n), "testing");
        t.status = TaskStatus::Active;
        t.worker_id = Some(w.id);
        store.insert_tasks(&[t.clone()]).await.expect("insert task");
        pairs.push((w, t));
    }
    log.take();
    (store, log, pairs)
}

/// A worker's update is ONE command: the task's compare-and-set also queues the update in
/// the task (`outbox_entries`). 32 workers' updates sent at once are all stored, each
/// exactly once, with distinct `seq`, and nothing touches `task_update_queue` or the old
/// counter. A worker's second update, sent after its first was answered, comes after it
/// in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_queue_in_their_tasks() {
    let Some(db) = TestDatabase::new("concurrent_updates_queue_in_their_tasks") else {
        return;
    };
    const N: u32 = 32;
    let (store, log, pairs) = logged_busy_workers(&db, N).await;
    let sends = pairs.iter().map(|(w, t)| {
        let store = store.clone();
        let (w, t) = (w.clone(), t.clone());
        async move {
            let first = worker_update(t.id, &w, None, "rendering 1", at(10));
            let outcome = store
                .apply_worker_update(w.id, first)
                .await
                .expect("update");
            assert_eq!(outcome, WorkerUpdateOutcome::Applied);
            let second = worker_update(t.id, &w, None, "rendering 2", at(20));
            let outcome = store
                .apply_worker_update(w.id, second)
                .await
                .expect("update");
            assert_eq!(outcome, WorkerUpdateOutcome::Applied);
        }
    });
    futures::future::join_all(sends).await;
    let commands = log.take();
    println!("{} updates: {commands:?}", 2 * N);
    assert_eq!(
        commands,
        vec!["update flamenco_tasks".to_string(); 2 * N as usize],
        "one command per update, and no other"
    );

    let queued = store.outbox_peek(1_000).await.expect("peek");
    assert_eq!(queued.len(), 2 * N as usize, "every update once");
    let ids: BTreeSet<_> = queued.iter().map(|u| u.id).collect();
    assert_eq!(ids.len(), queued.len(), "distinct updates");
    let mut seen: BTreeMap<flamenco_core::model::ObjectId, Vec<String>> = BTreeMap::new();
    for u in &queued {
        seen.entry(u.task_id).or_default().push(u.activity.clone());
    }
    assert_eq!(seen.len(), N as usize);
    for (task, activities) in &seen {
        assert_eq!(
            activities,
            &["rendering 1", "rendering 2"],
            "the outbox order of task {task}"
        );
    }
    let mut seqs = BTreeSet::new();
    for d in all(&raw(&db).await.collection("flamenco_tasks"), doc! {}).await {
        for e in d.get_array("outbox").expect("outbox") {
            let e = e.as_document().expect("an entry");
            assert!(seqs.insert(e.get_i64("seq").expect("seq")), "distinct seq");
        }
    }
    assert_eq!(seqs.len(), 2 * N as usize);
}

/// The log lines of concurrent updates share their chunks' insert (`group_commit`), and
/// every task's log still reads back whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_share_log_chunk_inserts() {
    use flamenco_core::store::{TaskLogEntry, TaskLogQuery};

    let Some(db) = TestDatabase::new("concurrent_updates_share_log_chunk_inserts") else {
        return;
    };
    const N: u32 = 32;
    let (store, log, pairs) = logged_busy_workers(&db, N).await;
    let sends = pairs.iter().map(|(w, t)| {
        let store = store.clone();
        let (w, t) = (w.clone(), t.clone());
        async move {
            for round in 1..=2 {
                let mut u = worker_update(t.id, &w, None, "rendering", at(10 * round));
                u.log = format!(
                    "{} line {round}a\n{} line {round}b\n",
                    w.nickname, w.nickname
                );
                let outcome = store.apply_worker_update(w.id, u).await.expect("update");
                assert_eq!(outcome, WorkerUpdateOutcome::Applied);
            }
        }
    });
    futures::future::join_all(sends).await;
    let commands = log.take();
    let inserts = commands
        .iter()
        .filter(|c| *c == "insert task_log_chunks")
        .count();
    println!("{} updates with log lines: {inserts} chunk inserts", 2 * N);
    assert!(inserts >= 1, "{commands:?}");
    assert!(
        inserts < 2 * N as usize,
        "no update shared its chunks' insert: {inserts} inserts for {} updates",
        2 * N
    );
    for (w, t) in &pairs {
        let page = store
            .read_task_log(
                t.id,
                TaskLogQuery::From {
                    from: 0,
                    limit: 100,
                },
            )
            .await
            .expect("read log");
        let lines: Vec<(u64, String)> = page
            .entries
            .iter()
            .map(|e| match e {
                TaskLogEntry::Line { line, text } => (*line, text.clone()),
                other => panic!("nothing was dropped, yet {other:?}"),
            })
            .collect();
        let n = &w.nickname;
        let expected: Vec<(u64, String)> = ["1a", "1b", "2a", "2b"]
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64, format!("{n} line {l}")))
            .collect();
        assert_eq!(lines, expected, "the log of task {}", t.id);
    }
}

/// A task whose outbox holds `TASK_LIMIT_BYTES` (4 MiB) of updates the job source has not
/// taken refuses its worker's next update with `Unavailable` (503: the worker keeps it
/// and sends it again), changing nothing; once the job source takes them, the same
/// update is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_task_outbox_refuses_worker_updates_until_taken() {
    let Some((store, _db)) = make().await else {
        return;
    };
    let w = test_worker(oid("a3a3a3a3a3a3a3a3a3a3a3a3"), "w", &["testing"]);
    store.insert_worker(&w).await.expect("worker");
    let mut t = test_task(oid("1bbbbbbbbbbbbbbbbbbbbbbb"), "testing");
    t.status = TaskStatus::Active;
    t.worker_id = Some(w.id);
    store.insert_tasks(&[t.clone()]).await.expect("task");
    let big = |n: i64| {
        let mut u = worker_update(t.id, &w, None, &format!("update {n}"), at(n));
        u.log = format!("{}\n", "x".repeat(1 << 20));
        u
    };
    let mut accepted = 0;
    let refused = loop {
        match store.apply_worker_update(w.id, big(accepted)).await {
            Ok(outcome) => {
                assert_eq!(outcome, WorkerUpdateOutcome::Applied);
                accepted += 1;
                assert!(accepted < 10, "never refused");
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&refused, StoreError::Unavailable(m) if m.contains("has not taken yet")),
        "{refused:?}"
    );
    assert_eq!(accepted, 3, "4 MiB hold three updates of 1 MiB");
    let stored = store.get_task(t.id).await.expect("get").expect("task");
    assert_eq!(
        stored.activity, "update 2",
        "the refused update changed nothing"
    );
    assert_eq!(store.outbox_len().await.expect("len"), 3);

    let sent: Vec<ObjectId> = store
        .outbox_peek(10)
        .await
        .expect("peek")
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(store.outbox_ack(&sent).await.expect("ack"), 3);
    assert_eq!(
        store
            .apply_worker_update(w.id, big(3))
            .await
            .expect("update"),
        WorkerUpdateOutcome::Applied
    );
    let stored = store.get_task(t.id).await.expect("get").expect("task");
    assert_eq!(stored.activity, "update 3");
}

/// Updates that an earlier version (or v2) queued in `task_update_queue` are sent before
/// those waiting in the tasks; deleting a task moves its waiting updates to the
/// collection, in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_queued_by_an_earlier_version_come_first() {
    let Some(db) = TestDatabase::new("updates_queued_by_an_earlier_version_come_first") else {
        return;
    };
    let store = MongoStore::connect(&db.url).await.expect("connect");
    let t = test_task(oid("1ccccccccccccccccccccccc"), "testing");
    store
        .insert_tasks(std::slice::from_ref(&t))
        .await
        .expect("task");
    let earlier = TaskUpdate::new(t.id, at(1));
    raw(&db)
        .await
        .collection::<Document>("task_update_queue")
        .insert_one(doc! {
            "_id": bson_id(earlier.id),
            "task_id": bson_id(t.id),
            "received_on_manager": mongodb::bson::DateTime::from_millis(1_000),
            "task_progress_percentage": 0_i64,
            "current_command_idx": 0_i64,
            "command_progress_percentage": 0_i64,
            "worker": "",
            "seq": 7_i64,
        })
        .await
        .expect("plant");
    let mut now = TaskUpdate::new(t.id, at(2));
    now.activity = "queued now".into();
    store.queue_update(now.clone()).await.expect("queue");
    let ids = |v: Vec<TaskUpdate>| v.iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.outbox_peek(10).await.expect("peek")),
        vec![earlier.id, now.id]
    );

    // Deleting the task (clean slate) keeps both, in order.
    assert_eq!(store.delete_tasks(10).await.expect("delete").rows, 1);
    assert_eq!(
        ids(store.outbox_peek(10).await.expect("peek")),
        vec![earlier.id, now.id]
    );
    let moved = all(
        &raw(&db).await.collection("task_update_queue"),
        doc! { "_id": bson_id(now.id) },
    )
    .await;
    assert_eq!(moved.len(), 1, "moved to the collection");
    assert_eq!(moved[0].get_str("activity").ok(), Some("queued now"));
    store.close().await.expect("close");
}

/// The log ends an earlier version kept in `task_log_ends` move into their tasks at
/// connect (`log_next_line`, `log_next_byte`), so the next append goes after the lines
/// already stored; the end of a task that does not exist stays where it was. Connecting
/// again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_ends_of_an_earlier_version_move_into_their_tasks() {
    let Some(db) = TestDatabase::new("log_ends_of_an_earlier_version_move_into_their_tasks") else {
        return;
    };
    let raw = raw(&db).await;
    let t = test_task(oid("1ddddddddddddddddddddddd"), "testing");
    let gone = oid("2ddddddddddddddddddddddd");
    {
        let store = MongoStore::connect(&db.url).await.expect("connect");
        store
            .insert_tasks(std::slice::from_ref(&t))
            .await
            .expect("task");
        store.close().await.expect("close");
    }
    let ends = raw.collection::<Document>("task_log_ends");
    ends.insert_many([
        doc! { "_id": bson_id(t.id), "next_line": 5_i64, "next_byte": 50_i64 },
        doc! { "_id": bson_id(gone), "next_line": 2_i64, "next_byte": 9_i64 },
    ])
    .await
    .expect("plant the ends");

    for round in 0..2 {
        let store = MongoStore::connect(&db.url).await.expect("connect");
        let end = store.task_log_end(t.id).await.expect("end");
        assert_eq!((end.next_line, end.next_byte), (5 + round, 50 + 5 * round));
        let end = store.task_log_end(gone).await.expect("end");
        assert_eq!(
            (end.next_line, end.next_byte),
            (2, 9),
            "a missing task's end stays"
        );
        let left: Vec<Bson> = all(&ends, doc! {})
            .await
            .iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        assert_eq!(left, vec![bson_id(gone)]);
        store.append_task_log(t.id, "line\n").await.expect("append");
        let end = store.task_log_end(t.id).await.expect("end");
        assert_eq!((end.next_line, end.next_byte), (6 + round, 55 + 5 * round));
        let page = store
            .read_task_log(t.id, flamenco_core::store::logs::TaskLogQuery::Tail(10))
            .await
            .expect("read");
        let last = flamenco_core::store::logs::TaskLogEntry::Line {
            line: 5 + round,
            text: "line".into(),
        };
        assert_eq!(page.entries.last(), Some(&last), "{:?}", page.entries);
        store.close().await.expect("close");
    }
    let d = &all(&raw.collection("flamenco_tasks"), doc! {}).await[0];
    assert_eq!(d.get_i64("log_next_line").ok(), Some(7), "{d}");
}

/// Told that the outbox's reader needs no log text (standalone mode), the store queues
/// updates without it, and the lines are still in the task's log; told otherwise
/// (upstream mode, the default), the queued update carries them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_outbox_entries_leave_out_the_log_text() {
    let Some((store, _db)) = make().await else {
        return;
    };
    let w = test_worker(oid("a4a4a4a4a4a4a4a4a4a4a4a4"), "w", &["testing"]);
    store.insert_worker(&w).await.expect("worker");
    let mut t = test_task(oid("1eeeeeeeeeeeeeeeeeeeeeee"), "testing");
    t.status = TaskStatus::Active;
    t.worker_id = Some(w.id);
    store
        .insert_tasks(std::slice::from_ref(&t))
        .await
        .expect("task");
    let send = |n: i64| {
        let mut u = worker_update(t.id, &w, None, &format!("update {n}"), at(n));
        u.log = format!("frame {n}\n");
        u
    };
    store.set_outbox_log_text(false);
    store
        .apply_worker_update(w.id, send(1))
        .await
        .expect("update");
    store.set_outbox_log_text(true);
    store
        .apply_worker_update(w.id, send(2))
        .await
        .expect("update");
    let queued = store.outbox_peek(10).await.expect("peek");
    let logs: Vec<&str> = queued.iter().map(|u| u.log.as_str()).collect();
    assert_eq!(logs, ["", "frame 2\n"]);
    let page = store
        .read_task_log(t.id, flamenco_core::store::logs::TaskLogQuery::Tail(10))
        .await
        .expect("read");
    let lines: Vec<String> = page
        .entries
        .iter()
        .filter_map(|e| match e {
            flamenco_core::store::logs::TaskLogEntry::Line { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["frame 1", "frame 2"]);
}
