//! Task logs over HTTP: `GET /api/tasks/{id}` and `/log` (tail, range, text, bad input),
//! the live `/log/stream` (a new line arrives; a reconnect resumes after `Last-Event-ID`),
//! and the last words of a canceled task (kept for its own worker, 409 for others).

mod common;

use std::time::Duration;

use common::{oid, test_task, TestManager};
use flamenco_core::model::{TaskStatus, TaskUpdate};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// How long a stream test waits for an event before failing.
const DEADLINE: Duration = Duration::from_secs(20);

async fn get(tm: &TestManager, path: &str) -> (StatusCode, Value) {
    let resp = tm.client.get(tm.url(path)).send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn texts(body: &Value) -> Vec<String> {
    body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["text"].as_str().expect("text").to_string())
        .collect()
}

/// A task with three updates' worth of log from one worker.
async fn task_with_log(tm: &TestManager) -> (flamenco_core::model::ObjectId, common::TestWorker) {
    let mut t = test_task("1aaa", "testing");
    t.parents.clear();
    tm.enqueue(vec![t]).await;
    let w = tm.register("worker1", "linux", &["testing"]).await;
    let id = oid("1aaa");
    for (i, log) in ["starting\n", "frame 1\nframe 2\n", "Blender quit\n"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            w.update(id, json!({"activity": format!("step {i}"), "log": log}))
                .await,
            StatusCode::NO_CONTENT
        );
    }
    (id, w)
}

#[tokio::test]
async fn task_and_log_reads() {
    let tm = TestManager::start().await;
    let (id, _w) = task_with_log(&tm).await;

    let (status, task) = get(&tm, &format!("/api/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(task["_id"], id.to_hex());
    assert_eq!(task["activity"], "step 2");

    // The default: the tail (the whole log here).
    let (status, log) = get(&tm, &format!("/api/tasks/{id}/log")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        texts(&log),
        ["starting", "frame 1", "frame 2", "Blender quit"]
    );
    assert_eq!(log["entries"][0]["line"], 0);
    assert_eq!(
        (log["next_line"].as_u64(), log["end_line"].as_u64()),
        (Some(4), Some(4))
    );

    let (_, log) = get(&tm, &format!("/api/tasks/{id}/log?tail=2")).await;
    assert_eq!(texts(&log), ["frame 2", "Blender quit"]);
    let (_, log) = get(&tm, &format!("/api/tasks/{id}/log?from=1&limit=2")).await;
    assert_eq!(texts(&log), ["frame 1", "frame 2"]);
    assert_eq!(log["next_line"], 3);

    // Plain text, by parameter or by Accept header.
    let resp = tm
        .client
        .get(tm.url(&format!("/api/tasks/{id}/log?format=text&from=2")))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(resp.headers()["x-flamenco-next-line"], "4");
    assert_eq!(resp.text().await.unwrap(), "frame 2\nBlender quit\n");
    let resp = tm
        .client
        .get(tm.url(&format!("/api/tasks/{id}/log?tail=1")))
        .header("Accept", "text/plain")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.text().await.unwrap(), "Blender quit\n");

    // Bad input: 400 naming the field; unknown task: 404.
    for (query, field) in [
        ("tail=0", "tail"),
        ("tail=abc", "tail"),
        ("from=-3", "from"),
        ("limit=20000", "limit"),
        ("tail=2&from=1", "tail"),
        ("format=xml", "format"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = get(&tm, &format!("/api/tasks/{id}/log?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let (status, _) = get(&tm, "/api/tasks/nothex/log").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let other = oid("9aaa");
    for path in [
        format!("/api/tasks/{other}"),
        format!("/api/tasks/{other}/log"),
        format!("/api/tasks/{other}/log/stream"),
    ] {
        let (status, body) = get(&tm, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("unknown"),
            "{body}"
        );
    }
    tm.stop().await;
}

/// Reads SSE frames from a response until `want` holds for the events seen so far.
struct Events {
    resp: reqwest::Response,
    buffer: String,
    /// `(event, id, data)` of every complete event.
    seen: Vec<(String, String, String)>,
}

impl Events {
    fn new(resp: reqwest::Response) -> Events {
        Events {
            resp,
            buffer: String::new(),
            seen: Vec::new(),
        }
    }

    async fn until(&mut self, what: &str, want: impl Fn(&[(String, String, String)]) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !want(&self.seen) {
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}; saw {:?}", self.seen))
                .expect("read the stream")
                .unwrap_or_else(|| panic!("the stream ended before {what}"));
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) =
                    ("message".to_string(), String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = v.strip_prefix(' ').unwrap_or(v).to_string();
                    }
                }
                if !data.is_empty() || event != "message" {
                    self.seen.push((event, id, data));
                }
            }
        }
    }
}

#[tokio::test]
async fn log_stream_sends_new_lines_and_resumes() {
    let tm = TestManager::start().await;
    let (id, w) = task_with_log(&tm).await;
    let resp = tm
        .client
        .get(tm.url(&format!("/api/tasks/{id}/log/stream?tail=1")))
        .send()
        .await
        .expect("open the stream");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut events = Events::new(resp);
    events.until("the backlog", |seen| !seen.is_empty()).await;
    assert_eq!(
        events.seen[0],
        ("message".into(), "3".into(), "Blender quit".into())
    );
    // A new line, sent after the stream opened, arrives.
    assert_eq!(
        w.update(id, json!({"log": "Saved: frame_0003.png"})).await,
        StatusCode::NO_CONTENT
    );
    events.until("the new line", |seen| seen.len() >= 2).await;
    assert_eq!(
        events.seen[1],
        ("message".into(), "4".into(), "Saved: frame_0003.png".into())
    );
    // A line stored by another way (not through this process's updates) arrives too.
    tm.manager
        .store()
        .append_task_log(id, "written elsewhere")
        .await
        .expect("append");
    events
        .until("the line stored elsewhere", |seen| seen.len() >= 3)
        .await;
    assert_eq!(events.seen[2].2, "written elsewhere");
    drop(events);

    // A reconnect with Last-Event-ID gets what follows that line.
    let resp = tm
        .client
        .get(tm.url(&format!("/api/tasks/{id}/log/stream")))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .expect("reopen the stream");
    let mut events = Events::new(resp);
    events
        .until("the resumed lines", |seen| seen.len() >= 3)
        .await;
    let ids: Vec<&str> = events.seen.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(ids, ["3", "4", "5"]);
    drop(events);

    let (status, body) = get(&tm, &format!("/api/tasks/{id}/log/stream?limit=3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    tm.stop().await;
}

/// Issue #11 item 3 over HTTP: a worker stopping a canceled task gets 204 for its last
/// updates, which keep their log and activity but not their status; another worker 409.
#[tokio::test]
async fn last_words_of_a_canceled_task() {
    let tm = TestManager::start().await;
    let mut t = test_task("1aaa", "testing");
    t.parents.clear();
    tm.enqueue(vec![t]).await;
    let w = tm.register("worker1", "linux", &["testing"]).await;
    let other = tm.register("worker2", "linux", &["testing"]).await;
    let id = oid("1aaa");
    assert_eq!(w.task().await.0, StatusCode::OK);
    assert_eq!(
        w.update(id, json!({"task_status": "active", "log": "rendering"}))
            .await,
        StatusCode::NO_CONTENT
    );
    let mut cancel = TaskUpdate::new(id, chrono::Utc::now());
    cancel.task_status = Some(TaskStatus::CancelRequested);
    tm.manager
        .store()
        .queue_update(cancel)
        .await
        .expect("cancel");
    let before = tm.outbox().await.len();

    assert_eq!(
        w.update(
            id,
            json!({"task_status": "canceled", "activity": "Task was canceled",
                   "log": "exec: TERMinating subprocess pid=30889"})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let task = tm.task(id).await;
    assert_eq!(task.status, TaskStatus::CancelRequested);
    assert_eq!(task.activity, "Task was canceled");
    let queued = tm.outbox().await;
    assert_eq!(queued.len(), before + 1);
    assert_eq!(queued.last().unwrap().task_status, None);
    let (_, log) = get(&tm, &format!("/api/tasks/{id}/log")).await;
    assert_eq!(
        texts(&log),
        ["rendering", "exec: TERMinating subprocess pid=30889"]
    );

    assert_eq!(
        other.update(id, json!({"log": "not mine"})).await,
        StatusCode::CONFLICT
    );
    let (_, log) = get(&tm, &format!("/api/tasks/{id}/log")).await;
    assert_eq!(texts(&log).len(), 2);
    tm.stop().await;
}
