//! Tests of the SQLite store: the shared conformance suite, then what is specific to
//! SQLite (reopening, a second process on the same file, schema versions, closing, the
//! claim's query plan).

use std::sync::Arc;

use super::*;
use crate::model::{Task, TaskStatus, TaskUpdate};
use crate::store::conformance::{self, at, claim_request, oid, prio_task, test_worker};
use crate::store::prelude::*;
use crate::store::TaskQuery;
use crate::updates::MayIRun;

async fn make() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open the store");
    (Arc::new(store), dir)
}

crate::store::conformance::conformance_tests!(make);

fn open(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir).expect("open the store"))
}

#[tokio::test]
async fn describe_names_the_absolute_database_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("nested/data");
    let store = SqliteStore::open(&data).expect("open creates the directory");
    let expected = std::path::absolute(data.join(DATABASE_FILE)).expect("absolute");
    assert_eq!(store.describe(), format!("sqlite:{}", expected.display()));
    assert!(expected.exists());
    store.close().await.expect("close");
}

#[tokio::test]
async fn reopening_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = conformance::test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    let w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "workerLnx", &["sleeping"]);
    {
        let store = open(dir.path());
        store
            .insert_tasks(std::slice::from_ref(&t))
            .await
            .expect("insert");
        store.insert_worker(&w).await.expect("insert worker");
        store
            .claim_task(&claim_request(&w, at(1)))
            .await
            .expect("claim")
            .expect("a task");
        // The Manager's flush after the claim: the worker's `current_task`.
        let contact = crate::store::Seen {
            now: at(1),
            address: String::new(),
            software: String::new(),
            mark_awake: false,
            task_report: None,
            current_task: Some(t.id),
        };
        store
            .write_deferred(&[(w.id, contact)], &[])
            .await
            .expect("flush");
        store.set_setting("k", Some("v")).await.expect("set");
        store.close().await.expect("close");
    }
    let options = SqliteOptions {
        synchronous: Synchronous::Full,
        ..SqliteOptions::default()
    };
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open_with(dir.path(), options).expect("reopen"));
    let again = store.get_task(t.id).await.expect("get").expect("task kept");
    assert_eq!(again.status, TaskStatus::Active);
    assert_eq!(again.worker_id, Some(w.id));
    assert_eq!(again.commands, t.commands);
    assert_eq!(again.parents, t.parents);
    assert_eq!(store.outbox_len().await.expect("len"), 2);
    assert_eq!(
        store
            .get_worker(w.id)
            .await
            .expect("get")
            .expect("worker")
            .current_task,
        Some(t.id)
    );
    assert_eq!(
        store.get_setting("k").await.expect("get").as_deref(),
        Some("v")
    );
    store.close().await.expect("close");
}

/// The CLI opens the database while the daemon runs: both see and write the same data,
/// and claims from both never hand out a task twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_store_on_the_same_directory_shares_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = open(dir.path());
    let cli = open(dir.path());

    let tasks: Vec<Task> = (0..100)
        .map(|n| prio_task(conformance::nth_id(0x50, n), "sleeping", 0, 50))
        .collect();
    daemon.insert_tasks(&tasks[..50]).await.expect("insert");
    cli.insert_tasks(&tasks[50..]).await.expect("insert");
    assert_eq!(
        cli.list_tasks(&TaskQuery::default())
            .await
            .expect("list")
            .len(),
        100
    );
    cli.set_setting("from", Some("cli")).await.expect("set");
    assert_eq!(
        daemon.get_setting("from").await.expect("get").as_deref(),
        Some("cli")
    );

    let mut handles = Vec::new();
    for n in 0..8u32 {
        let store = if n % 2 == 0 {
            daemon.clone()
        } else {
            cli.clone()
        };
        let w = test_worker(
            conformance::nth_id(0x60, n),
            &format!("w{n}"),
            &["sleeping"],
        );
        store.insert_worker(&w).await.expect("insert worker");
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(c) = store
                .claim_task(&claim_request(&w, at(1)))
                .await
                .expect("claim")
            {
                mine.push(c.task.id);
                let mut done = TaskUpdate::new(c.task.id, at(2));
                done.task_status = Some(TaskStatus::Completed);
                store.apply_worker_update(w.id, done).await.expect("update");
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("join"));
    }
    all.sort();
    let mut expected: Vec<ObjectId> = tasks.iter().map(|t| t.id).collect();
    expected.sort();
    assert_eq!(all, expected, "every task claimed exactly once");
    assert_eq!(daemon.outbox_len().await.expect("len"), 300);
    daemon.close().await.expect("close");
    // The CLI keeps working after the daemon closed.
    assert_eq!(cli.outbox_len().await.expect("len"), 300);
    cli.close().await.expect("close");
}

#[tokio::test]
async fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.close().await.expect("close");
    drop(store);
    {
        let conn = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("raw open");
        conn.pragma_update(None, "user_version", 99)
            .expect("set version");
    }
    match SqliteStore::open(dir.path()) {
        Err(StoreError::Corrupt(msg)) => {
            assert!(msg.contains("schema version 99"), "{msg}");
            assert!(msg.contains("newer"), "{msg}");
        }
        Err(e) => panic!("expected Corrupt, got {e:?}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(DATABASE_FILE), vec![b'x'; 4096]).expect("write");
    match SqliteStore::open(dir.path()) {
        Err(StoreError::Corrupt(_)) => {}
        Err(e) => panic!("expected Corrupt, got {e:?}"),
        Ok(_) => panic!("garbage must be refused"),
    }
}

#[tokio::test]
async fn closed_store_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let t = conformance::test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "sleeping");
    store
        .insert_tasks(std::slice::from_ref(&t))
        .await
        .expect("insert");
    store.close().await.expect("close");
    store.close().await.expect("closing twice is harmless");

    let unavailable = |r: StoreResult<()>| match r {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    };
    unavailable(store.get_task(t.id).await.map(|_| ()));
    unavailable(store.list_tasks(&TaskQuery::default()).await.map(|_| ()));
    unavailable(store.outbox_len().await.map(|_| ()));
    unavailable(store.insert_tasks(&[]).await);
    let w = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "w", &["sleeping"]);
    unavailable(
        store
            .claim_task(&claim_request(&w, at(1)))
            .await
            .map(|_| ()),
    );
    unavailable(store.set_setting("k", Some("v")).await);
    unavailable(store.get_setting("k").await.map(|_| ()));
}

#[tokio::test]
async fn close_drains_queued_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    let mut pending = Vec::new();
    for n in 0..50u32 {
        let store = store.clone();
        pending.push(tokio::spawn(async move {
            let t = prio_task(conformance::nth_id(0x70, n), "sleeping", 0, 50);
            store.insert_tasks(&[t]).await
        }));
    }
    // Let the inserts reach the queue, then close.
    tokio::task::yield_now().await;
    store.close().await.expect("close");
    let mut ok = 0;
    for p in pending {
        match p.await.expect("join") {
            Ok(()) => ok += 1,
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let reopened = open(dir.path());
    let stored = reopened
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list")
        .len();
    assert_eq!(
        stored, ok,
        "every acknowledged insert is stored, and only those"
    );
    reopened.close().await.expect("close");
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    {
        let conn = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("raw open");
        conn.execute(
            "INSERT INTO tasks (id, status, commands) VALUES (x'0102', 'queued', '[]')",
            [],
        )
        .expect("insert a short id");
    }
    match store.list_tasks(&TaskQuery::default()).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("id"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    store.close().await.expect("close");
}

/// The claim walks the partial index in order: no full sort of the queue. A worker with
/// tags walks one range of it per tag (and the untagged one), never a scan; only the
/// branches' winners (a row each) are sorted.
#[test]
fn claim_query_plan_uses_the_schedule_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = plan_test_connection(dir.path());
    let check = |conn: &rusqlite::Connection| {
        let plan = query_plan(conn, &tasks::next_schedulable_sql(0));
        println!("{plan}");
        assert!(
            plan.starts_with("SEARCH t USING INDEX tasks_schedule (worker_tag=?)\n"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE FOR ORDER BY"), "{plan}");
        for tags in [1, 3] {
            let plan = query_plan(conn, &tasks::next_schedulable_sql(tags));
            println!("{tags} tags:\n{plan}");
            let walks = plan
                .lines()
                .filter(|l| l.trim() == "SEARCH t USING INDEX tasks_schedule (worker_tag=?)")
                .count();
            assert_eq!(
                walks,
                tags + 1,
                "one walk per tag and the untagged one: {plan}"
            );
            assert!(!plan.contains("SCAN t"), "{plan}");
            // No sort beside an index walk: each walk stops at its first match. (The
            // sorts SQLite adds to merge the branches sort their one-row results.)
            let lines: Vec<(usize, &str)> = plan
                .lines()
                .map(|l| (l.len() - l.trim_start().len(), l.trim()))
                .collect();
            for (i, (depth, text)) in lines.iter().enumerate() {
                if !text.starts_with("SEARCH t ") {
                    continue;
                }
                let sibling_sort = lines[i + 1..]
                    .iter()
                    .take_while(|(d, _)| d >= depth)
                    .any(|(d, t)| d == depth && t.contains("TEMP B-TREE"));
                assert!(!sibling_sort, "a sort of an index walk: {plan}");
            }
        }
    };
    check(&conn);
    // With statistics of a table that is mostly finished work, the plan stays.
    for n in 0..2_000u32 {
        let mut t = prio_task(conformance::nth_id(0x10, n), "sleeping", (n % 5) as i32, 50);
        if n % 100 != 0 {
            t.status = TaskStatus::Completed;
        }
        if n % 3 == 0 {
            t.worker_tag = Some(format!("tag{}", n % 7));
        }
        tasks::insert(&conn, &[t]).expect("insert");
    }
    conn.execute_batch("ANALYZE").expect("analyze");
    check(&conn);
}

/// The cleanup walks the finished tasks by age (`tasks_finished_by_age`, schema version
/// 13) and stops at the first one too young: never a walk of every finished task, which
/// held the writer for 300–540 ms at the end of each cleanup in the soak. The plan holds
/// with statistics of a table that is mostly finished work, too.
#[test]
fn cleanup_query_plan_walks_the_finished_tasks_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = plan_test_connection(dir.path());
    let check = |conn: &rusqlite::Connection| {
        let plan = query_plan(conn, maintenance::DELETABLE_FINISHED);
        println!("{plan}");
        assert!(
            plan.starts_with("SEARCH t USING INDEX tasks_finished_by_age (<expr><?)\n"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN t"), "{plan}");
    };
    check(&conn);
    for n in 0..2_000u32 {
        let mut t = prio_task(conformance::nth_id(0x10, n), "sleeping", 0, 50);
        if n % 100 != 0 {
            t.status = TaskStatus::Completed;
        }
        t.last_updated = Some(at(i64::from(n)));
        tasks::insert(&conn, &[t]).expect("insert");
    }
    conn.execute_batch("ANALYZE").expect("analyze");
    check(&conn);
}

/// A write connection to a new database in `dir`, for the query plan tests.
fn plan_test_connection(dir: &Path) -> rusqlite::Connection {
    let cfg = ConnConfig {
        synchronous: "NORMAL",
        busy_timeout: Duration::from_secs(5),
    };
    schema::open_writer(&dir.join(DATABASE_FILE), &cfg).expect("open")
}

fn query_plan(conn: &rusqlite::Connection, sql: &str) -> String {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    // ?1 the worker id, then the type and the tags.
    let args: Vec<rusqlite::types::Value> = (0..stmt.parameter_count())
        .map(|i| match i {
            0 => rusqlite::types::Value::Blob(vec![1; 12]),
            1 => rusqlite::types::Value::Text("sleeping".into()),
            n => rusqlite::types::Value::Text(format!("tag{n}")),
        })
        .collect();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(3)?,
            ))
        })
        .expect("query");
    let mut depth: std::collections::HashMap<i64, usize> = Default::default();
    let mut out = String::new();
    for row in rows {
        let (id, parent, detail) = row.expect("row");
        let d = depth.get(&parent).map_or(0, |d| d + 1);
        depth.insert(id, d);
        out.push_str(&format!("{}{detail}\n", "  ".repeat(d)));
    }
    out
}

/// Claims with 100,000 queued tasks: run with `--ignored --nocapture` to measure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn claim_speed_with_a_big_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    let tasks: Vec<Task> = (0..100_000u32)
        .map(|n| {
            prio_task(
                conformance::nth_id(0x10, n),
                "sleeping",
                (n % 10) as i32,
                (n % 100) as i32,
            )
        })
        .collect();
    let started = std::time::Instant::now();
    for chunk in tasks.chunks(5_000) {
        store.insert_tasks(chunk).await.expect("insert");
    }
    println!("inserted 100k tasks in {:?}", started.elapsed());

    let workers = 32u32;
    let per_worker = 500u32;
    let started = std::time::Instant::now();
    let mut handles = Vec::new();
    for n in 0..workers {
        let store = store.clone();
        let w = test_worker(
            conformance::nth_id(0x40, n),
            &format!("w{n}"),
            &["sleeping"],
        );
        store.insert_worker(&w).await.expect("worker");
        handles.push(tokio::spawn(async move {
            for i in 0..per_worker {
                let c = store
                    .claim_task(&claim_request(&w, at(i as i64)))
                    .await
                    .expect("claim")
                    .expect("task");
                let mut done = TaskUpdate::new(c.task.id, at(i as i64));
                done.task_status = Some(TaskStatus::Completed);
                store.apply_worker_update(w.id, done).await.expect("update");
                store
                    .may_i_run(c.task.id, w.id, at(i as i64))
                    .await
                    .expect("may i run");
            }
        }));
    }
    for h in handles {
        h.await.expect("join");
    }
    let cycles = workers * per_worker;
    let elapsed = started.elapsed();
    println!(
        "{cycles} claim+update+may-i-run cycles in {elapsed:?}: {:.0} cycles/s",
        cycles as f64 / elapsed.as_secs_f64()
    );

    // may-i-run alone: 64 callers, each with an active task.
    let mut pairs = Vec::new();
    for n in 0..64u32 {
        let w = test_worker(
            conformance::nth_id(0x45, n),
            &format!("m{n}"),
            &["sleeping"],
        );
        store.insert_worker(&w).await.expect("worker");
        let c = store
            .claim_task(&claim_request(&w, at(0)))
            .await
            .expect("claim")
            .expect("task");
        pairs.push((w.id, c.task.id));
    }
    let per_caller = 1_000u32;
    let started = std::time::Instant::now();
    let mut handles = Vec::new();
    for (worker_id, task_id) in pairs {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_caller {
                let answer = store
                    .may_i_run(task_id, worker_id, at(i as i64))
                    .await
                    .expect("may i run");
                assert_eq!(answer, MayIRun::Yes);
            }
        }));
    }
    for h in handles {
        h.await.expect("join");
    }
    let elapsed = started.elapsed();
    println!(
        "{} may-i-run in {elapsed:?}: {:.0}/s",
        64 * per_caller,
        (64 * per_caller) as f64 / elapsed.as_secs_f64()
    );
    store.close().await.expect("close");
}

/// The metrics scrape's count per (status, task type) reads the covering index only: no
/// table scan, no temporary B-tree.
#[test]
fn count_by_status_and_type_uses_a_covering_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = plan_test_connection(dir.path());
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT status, task_type, count(*) FROM tasks GROUP BY status, task_type",
        )
        .expect("explain")
        .query_map([], |row| row.get::<_, String>(3))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        plan,
        ["SCAN tasks USING COVERING INDEX tasks_by_status_type"],
        "{plan:?}"
    );
}

/// `SqliteOptions::synchronous` (the `database_synchronous` key) really reaches SQLite:
/// `PRAGMA synchronous` reads 1 (NORMAL) or 2 (FULL) on the writer's connection, which is
/// the one that commits.
#[tokio::test]
async fn synchronous_option_sets_the_writer_pragma() {
    for (synchronous, want) in [(Synchronous::Normal, 1i64), (Synchronous::Full, 2)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(dir.path(), options).expect("open");
        let got = store
            .writer
            .run_outside_transaction(|c| {
                c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
                    .map_err(|e| crate::store::StoreError::Other(e.to_string()))
            })
            .await
            .expect("read the pragma");
        assert_eq!(got, want, "{synchronous:?}");
        store.close().await.expect("close");
    }
}

/// The metrics scrape's grouped count with 100,000 tasks: run with `--ignored --nocapture`
/// to measure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn count_by_status_and_type_speed_with_100k_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    let types = ["blender-render", "sleep", "exr-merge", "file-management"];
    let tasks: Vec<Task> = (0..100_000u32)
        .map(|n| {
            let mut t = prio_task(conformance::nth_id(0x10, n), types[n as usize % 4], 0, 50);
            if n % 3 == 0 {
                t.status = TaskStatus::Completed;
            }
            t
        })
        .collect();
    store.insert_tasks(&tasks).await.expect("insert");
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let counts = store.count_tasks_by_status_and_type().await.expect("count");
        println!("grouped count of 100,000 tasks: {:?}", started.elapsed());
        assert_eq!(counts.values().sum::<u64>(), 100_000);
    }
    store.close().await.expect("close");
}

#[test]
fn unavailable_sqlite_errors_say_what_to_do() {
    use rusqlite::ffi;
    for (code, advice) in [
        (ffi::SQLITE_FULL, "free disk space"),
        (
            ffi::SQLITE_READONLY,
            "check the permissions of the data directory",
        ),
        (ffi::SQLITE_IOERR, "check the disk and the file system"),
        (ffi::SQLITE_BUSY, "locked by another process"),
        (ffi::SQLITE_CANTOPEN, "may read and write it"),
    ] {
        let e = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        match super::rows::map_err(e) {
            StoreError::Unavailable(m) => {
                assert!(m.contains(advice), "{code}: {m}");
                assert!(m.contains("(SQLite: "), "{code}: {m}");
            }
            other => panic!("{code}: {other:?}"),
        }
    }
}

/// Another program holding the write lock longer than the busy timeout: the write is
/// refused as unavailable, says why, and goes through once the lock is released.
#[tokio::test]
async fn a_write_lock_held_elsewhere_is_unavailable_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = SqliteOptions {
        busy_timeout: std::time::Duration::from_millis(100),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir.path(), options).expect("open");
    let other = rusqlite::Connection::open(store.path()).expect("second connection");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    match store.set_setting("k", Some("v")).await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("locked by another process"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    other.execute_batch("ROLLBACK").expect("release");
    store
        .set_setting("k", Some("v"))
        .await
        .expect("now it works");
    assert_eq!(
        store.get_setting("k").await.expect("get").as_deref(),
        Some("v")
    );
    assert_eq!(
        store.integrity_check().await.expect("check"),
        Vec::<String>::new()
    );
    store.close().await.expect("close");
}

// ---- WAL size and the final checkpoint ----

fn wal_size(store: &SqliteStore) -> u64 {
    let wal = format!("{}-wal", store.path().display());
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// A task whose commands carry `payload` bytes, so that each insert writes new pages.
fn heavy_task(n: u32, payload: &str) -> Task {
    let mut t = prio_task(nth_task_id(n), "sleeping", 0, 50);
    t.commands = vec![crate::model::Command::new(
        "echo",
        serde_json::json!({ "message": payload }),
    )];
    t
}

fn nth_task_id(n: u32) -> ObjectId {
    conformance::nth_id(0x7a, n)
}

/// The WAL stays bounded under many writes (with reads between them, as the daemon's
/// readers do): it peaks at about `wal_autocheckpoint` pages plus the last batch, and is
/// rewound (and truncated to `journal_size_limit`) after each checkpoint, instead of
/// growing to tens of MB before the first checkpoint. Closing checkpoints it away.
#[tokio::test]
async fn the_wal_stays_bounded_under_many_writes() {
    // The bound docs/storage.md states: 1,000 pages of 4 KiB with their frame headers,
    // plus the write that crosses the threshold, within 5 MiB.
    let bound: u64 = 5 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let payload = "x".repeat(2048);
    let writes = 6_000u32;
    let mut peak = 0;
    let started = std::time::Instant::now();
    for n in 0..writes {
        store
            .insert_tasks(&[heavy_task(n, &payload)])
            .await
            .expect("insert");
        if n % 50 == 0 {
            store.get_task(nth_task_id(n)).await.expect("read");
        }
        peak = peak.max(wal_size(&store));
    }
    let db = std::fs::metadata(store.path()).expect("db").len();
    eprintln!(
        "WAL after {writes} writes of {} B: peak {peak} B (bound {bound} B); database {db} B; \
         {:.0} writes/s",
        payload.len(),
        f64::from(writes) / started.elapsed().as_secs_f64()
    );
    assert!(
        db + peak > 3 * bound,
        "the test wrote enough to need several checkpoints ({db} B)"
    );
    assert!(peak <= bound, "the WAL grew to {peak} B, over {bound} B");
    store.close().await.expect("close");
    assert_eq!(
        wal_size(&store),
        0,
        "closing checkpoints and truncates the WAL"
    );
}

/// With the disk full, closing fails with one message that names the database, the data
/// directory, the disk and how full it is, says that nothing is lost and what to do. Once
/// there is room, the next start finds every committed write.
#[tokio::test]
async fn a_full_disk_at_close_says_where_and_loses_nothing() {
    let Some(disk) = crate::testing::SmallDisk::mount(
        "a_full_disk_at_close_says_where_and_loses_nothing",
        16 << 20,
    ) else {
        return;
    };
    let data = disk.path().join("data");
    let store = SqliteStore::open(&data).expect("open");
    // New pages in the WAL, fewer than a checkpoint's worth: the final checkpoint must
    // grow the database file.
    let payload = "y".repeat(2048);
    for n in 0..600 {
        store
            .insert_tasks(&[heavy_task(n, &payload)])
            .await
            .expect("insert");
    }
    assert!(wal_size(&store) > 1 << 20, "{}", wal_size(&store));
    disk.fill();
    let err = store
        .close()
        .await
        .expect_err("the final checkpoint has no room");
    let text = err.to_string();
    eprintln!("{text}");
    for part in [
        "final checkpoint",
        "is full",
        &format!("data_dir {}", data.display()),
        &format!("mounted at {}", disk.path().display()),
        "0 B of",
        "Nothing acknowledged is lost",
        "flamenco.sqlite-wal",
        "Free space on",
    ] {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }

    disk.free();
    let again = SqliteStore::open(&data).expect("reopen with room");
    for n in [0, 299, 599] {
        assert!(
            again
                .get_task(nth_task_id(n))
                .await
                .expect("read")
                .is_some(),
            "task {n} survived"
        );
    }
    assert_eq!(
        again.integrity_check().await.expect("check"),
        Vec::<String>::new()
    );
    again.close().await.expect("close with room");
}

/// The statements a blocklisted worker's claim uses to skip a blocked job are seeks of
/// `tasks_schedule_by_job` (each walk starts at its job and type, in the claim's order: no
/// sort) and a primary-key lookup of `job_blocklist`, never a scan.
#[test]
fn blocked_job_skips_are_seeks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = plan_test_connection(dir.path());
    let [first, next, best, blocked] = tasks::past_blocks_sql();
    for (sql, want) in [
        (
            first,
            "SEARCH t USING INDEX tasks_schedule_by_job (worker_tag=? AND job_priority<?)",
        ),
        (
            next,
            "SEARCH t USING INDEX tasks_schedule_by_job \
             (worker_tag=? AND job_priority=? AND job>?)",
        ),
        (
            best,
            "SEARCH t USING INDEX tasks_schedule_by_job \
             (worker_tag=? AND job_priority=? AND job=? AND task_type=?)",
        ),
        (
            blocked,
            "SEARCH job_blocklist USING PRIMARY KEY (job=? AND task_type=? AND worker_id=?)",
        ),
    ] {
        let plan = query_plan(&conn, sql);
        println!("{plan}");
        // The seeks of a job read one row; whether SQLite counts the index as covering
        // does not matter.
        let head = plan.lines().next().unwrap_or_default().trim();
        assert_eq!(head.replace("COVERING INDEX", "INDEX"), want, "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        assert!(!plan.contains("SCAN"), "{plan}");
    }
}

/// A worker blocklisted for a big job at the head of the queue gets the next job's task,
/// and its claim does the same work whether the blocked job has 50 tasks or 5,000
/// (SQLite's count of virtual machine steps of every statement the claim ran): it does
/// not walk the blocked job's tasks. A worker that is not blocklisted gets the head.
#[test]
fn blocklisted_claim_does_not_walk_the_blocked_job() {
    let steps_for = |n: u32| -> i64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = ConnConfig {
            synchronous: "NORMAL",
            busy_timeout: Duration::from_secs(5),
        };
        let conn = schema::open_writer(&dir.path().join(DATABASE_FILE), &cfg).expect("open");
        let (a, b) = (conformance::nth_id(0x20, 1), conformance::nth_id(0x20, 2));
        for job in [a, b] {
            conn.execute(
                "INSERT INTO jobs (id, status, created, updated) VALUES (?1, 'active', 0, 0)",
                [job.bytes().to_vec()],
            )
            .expect("insert job");
        }
        let mut all: Vec<Task> = (0..n)
            .map(|i| {
                let mut t = prio_task(conformance::nth_id(0x30, i), "sleeping", 0, 50);
                t.job = Some(a);
                t
            })
            .collect();
        let mut other = prio_task(conformance::nth_id(0x31, 1), "sleeping", 0, 50);
        other.job = Some(b);
        all.push(other.clone());
        tasks::insert(&conn, &all).expect("insert tasks");
        let (blocked, free) = (conformance::nth_id(0x40, 1), conformance::nth_id(0x40, 2));
        conn.execute(
            "INSERT INTO job_blocklist (job, task_type, worker_id, added) \
             VALUES (?1, 'sleeping', ?2, 0)",
            [a.bytes().to_vec(), blocked.bytes().to_vec()],
        )
        .expect("block");
        let types = ["sleeping".to_string()];
        let claim = |worker| {
            tasks::next_schedulable(&conn, worker, &types, &[])
                .expect("claim")
                .map(|t| t.id)
        };
        assert_eq!(claim(free), Some(all[0].id), "the head, for a free worker");
        let statements: Vec<String> = std::iter::once(tasks::next_schedulable_sql(0))
            .chain(tasks::past_blocks_sql().map(str::to_string))
            .collect();
        for sql in &statements {
            conn.prepare_cached(sql)
                .expect("prepare")
                .reset_status(rusqlite::StatementStatus::VmStep);
        }
        assert_eq!(claim(blocked), Some(other.id), "the next job's task");
        statements
            .iter()
            .map(|sql| {
                i64::from(
                    conn.prepare_cached(sql)
                        .expect("prepare")
                        .get_status(rusqlite::StatementStatus::VmStep),
                )
            })
            .sum()
    };
    let (small, big) = (steps_for(50), steps_for(5_000));
    println!("VM steps of a blocklisted claim: {small} (50 blocked tasks), {big} (5,000)");
    assert!(small > 0, "the claim's statements were counted");
    assert!(
        big < small + 500,
        "the claim walks the blocked job: {small} steps for 50 tasks, {big} for 5,000"
    );
}

// ---- read transactions on the calling thread ----

/// A read transaction ends whatever its read returns: the connection goes back to the
/// pool in autocommit mode (a snapshot left open would hold back every checkpoint), and
/// the statements inside it see one snapshot.
#[tokio::test]
async fn read_transactions_end_before_the_connection_goes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open the store");
    let inside = store
        .readers
        .run_here_in_transaction(|c| Ok(c.is_autocommit()))
        .await
        .expect("read");
    assert!(!inside, "the read runs inside a transaction");
    let failed: StoreResult<()> = store
        .readers
        .run_here_in_transaction(|_| Err(StoreError::Unavailable("a failing read".into())))
        .await;
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "{failed:?}"
    );
    for _ in 0..4 {
        let autocommit = store
            .readers
            .run_here(|c| Ok(c.is_autocommit()))
            .await
            .expect("read");
        assert!(
            autocommit,
            "no transaction left open on a pooled connection"
        );
    }
    store.close().await.expect("close");
}
