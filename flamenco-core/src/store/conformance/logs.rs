//! Conformance cases for task logs ([`crate::store::TaskLogStore`]) and for the last words
//! of canceled tasks: every backend keeps a worker's lines in order, caps them with head,
//! tail and one marker, stores them with the update that brought them, and deletes them
//! with their task.

use std::sync::Arc;

use super::{
    add_tasks, add_worker, at, nth_id, oid, outbox, task, test_job, test_task, test_worker,
    worker_update,
};
use crate::jobs::status::JobAction;
use crate::model::{JobStatus, ObjectId, Task, TaskStatus};
use crate::store::logs::{dropped_marker, TaskLogEntry, MAX_READ_LINES};
use crate::store::{JobActionOutcome, Store, TaskLogLimits, TaskLogQuery};
use crate::updates::WorkerUpdateOutcome;

/// Every stored entry of a task's log, as text.
async fn whole_log(store: &Arc<dyn Store>, id: ObjectId) -> Vec<String> {
    let page = store
        .read_task_log(
            id,
            TaskLogQuery::From {
                from: 0,
                limit: MAX_READ_LINES,
            },
        )
        .await
        .expect("read the log");
    page.entries.iter().map(TaskLogEntry::text).collect()
}

/// Lines sent with accepted updates are kept in order, numbered from 0, readable as a
/// tail or a range; refused updates store nothing; `append_task_log` adds lines too.
pub async fn task_log_keeps_worker_lines_in_order(store: Arc<dyn Store>) {
    let w1 = test_worker(oid("a1a1a1a1a1a1a1a1a1a1a1a1"), "worker1", &["testing"]);
    let w2 = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "worker2", &["testing"]);
    add_worker(&store, &w1).await;
    add_worker(&store, &w2).await;
    let mut t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    t.status = TaskStatus::Active;
    t.worker_id = Some(w1.id);
    add_tasks(&store, std::slice::from_ref(&t)).await;

    assert!(whole_log(&store, t.id).await.is_empty());
    for i in 0..5 {
        let mut u = worker_update(t.id, &w1, None, "", at(i));
        u.log = format!("line {i}a\nline {i}b\n");
        assert_eq!(
            store.apply_worker_update(w1.id, u).await.expect("update"),
            WorkerUpdateOutcome::Applied
        );
    }
    // Refused updates keep nothing: another worker's, an unknown task's.
    let mut other = worker_update(t.id, &w2, None, "", at(10));
    other.log = "not mine".into();
    assert_eq!(
        store
            .apply_worker_update(w2.id, other)
            .await
            .expect("update"),
        WorkerUpdateOutcome::AssignedToOther
    );
    let mut ghost = worker_update(oid("9aaaaaaaaaaaaaaaaaaaaaaa"), &w1, None, "", at(11));
    ghost.log = "nobody's".into();
    assert_eq!(
        store
            .apply_worker_update(w1.id, ghost)
            .await
            .expect("update"),
        WorkerUpdateOutcome::NotFound
    );
    assert!(whole_log(&store, oid("9aaaaaaaaaaaaaaaaaaaaaaa"))
        .await
        .is_empty());
    // An update without log lines adds none.
    let u = worker_update(t.id, &w1, None, "busy", at(12));
    store.apply_worker_update(w1.id, u).await.expect("update");

    let expected: Vec<String> = (0..5)
        .flat_map(|i| [format!("line {i}a"), format!("line {i}b")])
        .collect();
    assert_eq!(whole_log(&store, t.id).await, expected);

    let tail = store
        .read_task_log(t.id, TaskLogQuery::Tail(3))
        .await
        .expect("tail");
    assert_eq!(
        tail.entries,
        vec![
            TaskLogEntry::Line {
                line: 7,
                text: "line 3b".into()
            },
            TaskLogEntry::Line {
                line: 8,
                text: "line 4a".into()
            },
            TaskLogEntry::Line {
                line: 9,
                text: "line 4b".into()
            },
        ]
    );
    assert_eq!(tail.next_line, 10);
    assert_eq!(tail.end.next_line, 10);
    let range = store
        .read_task_log(t.id, TaskLogQuery::From { from: 4, limit: 2 })
        .await
        .expect("range");
    let texts: Vec<String> = range.entries.iter().map(TaskLogEntry::text).collect();
    assert_eq!(texts, ["line 2a", "line 2b"]);
    assert_eq!(range.next_line, 6);
    let past = store
        .read_task_log(t.id, TaskLogQuery::From { from: 10, limit: 5 })
        .await
        .expect("past the end");
    assert!(past.entries.is_empty());
    assert_eq!(past.next_line, 10);
    assert_eq!(store.task_log_end(t.id).await.expect("end").next_line, 10);

    // Lines added directly (not with an update) follow; `\r\n` and a final newline are
    // not part of the lines.
    store
        .append_task_log(t.id, "extra 1\r\nextra 2\n")
        .await
        .expect("append");
    let log = whole_log(&store, t.id).await;
    assert_eq!(&log[10..], ["extra 1", "extra 2"]);

    // The outbox still carries each update's log, as sent (upstream mode forwards it).
    let queued = outbox(&store).await;
    assert_eq!(queued[0].log, "line 0a\nline 0b\n");
}

/// With a small cap, a long log keeps its first and last lines with one marker between
/// them that counts what was dropped; the numbers of the kept lines do not change.
pub async fn task_log_cap_keeps_head_and_tail(store: Arc<dyn Store>) {
    store.set_task_log_limits(TaskLogLimits { max_bytes: 2048 });
    let w1 = test_worker(oid("a1a1a1a1a1a1a1a1a1a1a1a1"), "worker1", &["testing"]);
    add_worker(&store, &w1).await;
    let mut t = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    t.status = TaskStatus::Active;
    t.worker_id = Some(w1.id);
    add_tasks(&store, std::slice::from_ref(&t)).await;
    // 60 updates of 4 lines of 18 bytes (with the newline): 4320 bytes in all.
    for i in 0..60 {
        let mut u = worker_update(t.id, &w1, None, "", at(i));
        u.log = (0..4)
            .map(|j| format!("update {i:03} line {j}"))
            .collect::<Vec<_>>()
            .join("\n");
        store.apply_worker_update(w1.id, u).await.expect("update");
    }
    let log = whole_log(&store, t.id).await;
    assert_eq!(log[0], "update 000 line 0");
    assert_eq!(log.last().map(String::as_str), Some("update 059 line 3"));
    let markers: Vec<&String> = log.iter().filter(|l| l.ends_with("dropped …")).collect();
    assert_eq!(markers.len(), 1, "{log:?}");
    let kept_lines = log.len() as u64 - 1;
    let kept_bytes: u64 = log
        .iter()
        .filter(|l| !l.ends_with("dropped …"))
        .map(|l| l.len() as u64 + 1)
        .sum();
    assert!(kept_bytes <= 2048, "{kept_bytes} bytes kept");
    assert!(kept_bytes >= 1024, "{kept_bytes} bytes kept");
    let dropped_lines = 240 - kept_lines;
    let dropped_bytes = 240 * 18 - kept_bytes;
    assert_eq!(
        markers[0].as_str(),
        dropped_marker(dropped_lines, dropped_bytes)
    );
    // Reading the tail gives the real line numbers.
    let tail = store
        .read_task_log(t.id, TaskLogQuery::Tail(1))
        .await
        .expect("tail");
    assert_eq!(
        tail.entries,
        vec![TaskLogEntry::Line {
            line: 239,
            text: "update 059 line 3".into()
        }]
    );
    // The limits can be turned off: nothing more is kept.
    store.set_task_log_limits(TaskLogLimits::OFF);
    let mut u = worker_update(t.id, &w1, None, "", at(100));
    u.log = "not kept".into();
    store.apply_worker_update(w1.id, u).await.expect("update");
    assert_eq!(whole_log(&store, t.id).await, log);
    assert_eq!(
        store.task_log_limits(),
        TaskLogLimits::OFF,
        "the limits read back"
    );
}

/// Logs follow their tasks: the cleanup, a job delete and the clean slate delete them; a
/// download that replaces a task keeps them.
pub async fn task_log_retention_follows_the_task(store: Arc<dyn Store>) {
    let finished = |id: ObjectId| {
        let mut t = test_task(id, "testing");
        t.parents.clear();
        t.status = TaskStatus::Completed;
        t.last_updated = Some(at(1_000));
        t
    };
    let old = finished(nth_id(0x51, 1));
    let mut recent = finished(nth_id(0x51, 2));
    recent.last_updated = Some(at(500_000));
    add_tasks(&store, &[old.clone(), recent.clone()]).await;
    for t in [&old, &recent] {
        store
            .append_task_log(t.id, &format!("log of {}", t.id))
            .await
            .expect("append");
    }
    // A download replacing the task keeps its log.
    let mut downloaded = recent.clone();
    downloaded.priority = 99;
    store
        .merge_downloaded_tasks(&[downloaded], at(600_000))
        .await
        .expect("merge");
    assert_eq!(whole_log(&store, recent.id).await.len(), 1);

    // Cleanup: the old task and its log go, the recent one stays.
    let n = store
        .delete_finished_tasks(at(100_000), 100)
        .await
        .expect("cleanup")
        .rows;
    assert_eq!(n, 1);
    assert!(whole_log(&store, old.id).await.is_empty());
    assert_eq!(
        whole_log(&store, recent.id).await,
        [format!("log of {}", recent.id)]
    );
    // A task made later under the same id does not inherit the log.
    add_tasks(&store, std::slice::from_ref(&old)).await;
    assert!(whole_log(&store, old.id).await.is_empty());
    assert_eq!(store.task_log_end(old.id).await.expect("end").next_line, 0);

    // Job delete.
    let (mut j, mut tasks) = test_job(nth_id(0x52, 1), 0x53, 2);
    for t in &mut tasks {
        t.status = TaskStatus::Completed;
    }
    j.status = JobStatus::Completed;
    j.task_counts = crate::model::TaskCounts::from_statuses(tasks.iter().map(|t| &t.status));
    store.insert_job(&j, &tasks).await.expect("insert job");
    for t in &tasks {
        store
            .append_task_log(t.id, "rendered")
            .await
            .expect("append");
    }
    match store
        .job_action(j.id, JobAction::Delete, at(700_000))
        .await
        .expect("delete")
    {
        JobActionOutcome::Done { tasks: n, .. } => assert_eq!(n, 2),
        other => panic!("the delete was not done: {other:?}"),
    }
    for t in &tasks {
        assert!(whole_log(&store, t.id).await.is_empty());
    }
    assert_eq!(whole_log(&store, recent.id).await.len(), 1);

    // Clean slate.
    let others: Vec<Task> = (10..13)
        .map(|i| test_task(nth_id(0x54, i), "testing"))
        .collect();
    add_tasks(&store, &others).await;
    for t in &others {
        store.append_task_log(t.id, "queued").await.expect("append");
    }
    while store.delete_tasks(2).await.expect("clean slate").rows > 0 {}
    for t in others.iter().chain([&recent, &old]) {
        assert!(whole_log(&store, t.id).await.is_empty(), "{}", t.id);
    }
}

/// A canceled or cancel-requested task takes its own worker's last words (log and
/// activity, 204) without any status change, local or queued; another worker is still
/// refused, and a canceled task nobody ran takes no update.
pub async fn last_words_of_a_canceled_task_are_kept(store: Arc<dyn Store>) {
    let w1 = test_worker(oid("a1a1a1a1a1a1a1a1a1a1a1a1"), "worker1", &["testing"]);
    let w2 = test_worker(oid("a2a2a2a2a2a2a2a2a2a2a2a2"), "worker2", &["testing"]);
    add_worker(&store, &w1).await;
    add_worker(&store, &w2).await;
    let mut stopping = test_task(oid("1aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    stopping.status = TaskStatus::CancelRequested;
    stopping.worker_id = Some(w1.id);
    let mut canceled = test_task(oid("2aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    canceled.status = TaskStatus::Canceled;
    canceled.worker_id = Some(w1.id);
    let mut never_ran = test_task(oid("3aaaaaaaaaaaaaaaaaaaaaaa"), "testing");
    never_ran.status = TaskStatus::Canceled;
    add_tasks(
        &store,
        &[stopping.clone(), canceled.clone(), never_ran.clone()],
    )
    .await;

    for (t, status, words) in [
        (&stopping, TaskStatus::CancelRequested, TaskStatus::Canceled),
        (&canceled, TaskStatus::Canceled, TaskStatus::Failed),
    ] {
        let mut u = worker_update(t.id, &w1, Some(words), "Task was canceled", at(5));
        u.log = "exec: TERMinating subprocess".into();
        assert_eq!(
            store.apply_worker_update(w1.id, u).await.expect("update"),
            WorkerUpdateOutcome::LastWords(status.clone())
        );
        let after = task(&store, t.id).await;
        assert_eq!(after.status, status, "the status does not change");
        assert_eq!(after.activity, "Task was canceled");
        assert_eq!(
            whole_log(&store, t.id).await,
            ["exec: TERMinating subprocess"]
        );
    }
    let queued = outbox(&store).await;
    assert_eq!(queued.len(), 2);
    for u in &queued {
        assert_eq!(
            u.task_status, None,
            "last words are queued without a status"
        );
        assert_eq!(u.log, "exec: TERMinating subprocess");
        assert_eq!(u.activity, "Task was canceled");
    }

    // Another worker: 409 as in v2, nothing kept.
    let mut u = worker_update(stopping.id, &w2, None, "intruder", at(6));
    u.log = "not mine".into();
    assert_eq!(
        store.apply_worker_update(w2.id, u).await.expect("update"),
        WorkerUpdateOutcome::AssignedToOther
    );
    let mut u = worker_update(never_ran.id, &w1, None, "late", at(7));
    u.log = "nobody ran it".into();
    assert_eq!(
        store.apply_worker_update(w1.id, u).await.expect("update"),
        WorkerUpdateOutcome::NotRunnable(TaskStatus::Canceled)
    );
    assert!(whole_log(&store, never_ran.id).await.is_empty());
    assert_eq!(task(&store, never_ran.id).await, never_ran);
    assert_eq!(outbox(&store).await.len(), 2);
}
