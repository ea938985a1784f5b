//! Webhooks end to end against a local receiver that fails on purpose (an axum server on
//! 127.0.0.1 that answers 500 the first N times, then 200): a completed job produces one
//! signed delivery; failures are retried with backoff and delivered once; a pending
//! delivery survives a restart of the Manager (the store reopened); hopeless deliveries
//! are given up and shown. Times move on a `ManualClock`, and each send pass waits for
//! the receiver's answer, so nothing here sleeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::Duration;
use flamenco_core::clock::ManualClock;
use flamenco_core::config::Config;
use flamenco_core::jobs::JobSubmission;
use flamenco_core::manager::Manager;
use flamenco_core::model::{JobStatus, TaskStatus, TaskUpdate};
use flamenco_core::store::conformance::{at, claim_request, test_worker, worker_update};
use flamenco_core::store::sqlite::SqliteStore;
use flamenco_core::store::{JobStatusChange, NewWebhookDelivery};
use flamenco_core::webhooks::send::Sender;
use flamenco_core::webhooks::{
    self, WebhookConfig, WebhookEvent, DELIVERY_HEADER, MAX_ATTEMPTS, SIGNATURE_HEADER,
};
use serde_json::{json, Value};

const SECRET: &str = "webhook-test-secret";

/// One request the receiver saw.
#[derive(Clone, Debug)]
struct Seen {
    headers: HeaderMap,
    body: String,
    accepted: bool,
}

#[derive(Default)]
struct Receiver {
    fail_first: usize,
    calls: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl Receiver {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn accepted(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.accepted).collect()
    }
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: String) -> StatusCode {
    let n = r.calls.fetch_add(1, Ordering::SeqCst);
    let accepted = n >= r.fail_first;
    r.seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
        headers,
        body,
        accepted,
    });
    if accepted {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Start a receiver on a free port in 19100–19199 that fails the first `fail_first`
/// requests; returns it and its URL.
async fn receiver(fail_first: usize) -> (Arc<Receiver>, String) {
    let state = Arc::new(Receiver {
        fail_first,
        ..Default::default()
    });
    let mut listener = None;
    for port in 19100..19200 {
        if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            listener = Some(l);
            break;
        }
    }
    let listener = listener.expect("a free port in 19100-19199");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (state, url)
}

fn config(url: &str, events: &[WebhookEvent]) -> Config {
    Config {
        webhooks: vec![WebhookConfig {
            url: url.into(),
            secret: SECRET.into(),
            events: events.to_vec(),
        }],
        ..Config::default()
    }
}

fn manager(dir: &std::path::Path, config: Config, clock: Arc<ManualClock>) -> Manager {
    let store = SqliteStore::open(dir).expect("open the store");
    Manager::with_store(config, Arc::new(store), clock)
}

/// What each test starts with: a receiver failing its first `fail_first` requests, and a
/// Manager on a fresh store (its folder kept for a restart) sending it `events`, on a
/// manual clock at `at(0)`.
struct Fixture {
    rx: Arc<Receiver>,
    url: String,
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    cfg: Config,
    m: Manager,
}

impl Fixture {
    async fn start(fail_first: usize, events: &[WebhookEvent]) -> Fixture {
        let (rx, url) = receiver(fail_first).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(at(0)));
        let cfg = config(&url, events);
        let m = manager(dir.path(), cfg.clone(), clock.clone());
        Fixture {
            rx,
            url,
            dir,
            clock,
            cfg,
            m,
        }
    }

    /// A sender for the configured webhooks.
    fn sender(&self) -> Sender {
        Sender::new(self.cfg.webhooks.clone()).expect("sender")
    }
}

/// Queue the deliveries of one job's status change `from` → `to`; returns them.
async fn enqueue_job_change(
    m: &Manager,
    cfg: &Config,
    from: JobStatus,
    to: JobStatus,
) -> Vec<NewWebhookDelivery> {
    let change = JobStatusChange {
        job: flamenco_core::model::ObjectId::new(),
        from,
        to,
    };
    let deliveries =
        webhooks::job_status_deliveries(&cfg.webhooks, &[change], |_| None, |_| None, m.now());
    m.store()
        .webhook_enqueue(&deliveries)
        .await
        .expect("enqueue");
    deliveries
}

/// Submit a one-task sleep job, run its task to `status` with a simulated worker, and let
/// the standalone consumer follow.
async fn run_one_task_job(m: &Manager, clock: &ManualClock, status: TaskStatus) {
    let settings = json!({"frames": "1", "chunk_size": 1, "time_in_seconds": 1});
    let mut sub = JobSubmission::new("sleep", settings.as_object().cloned().expect("object"));
    sub.name = Some("shot 010".into());
    m.submit_job(sub).await.expect("submit");
    let w = test_worker(flamenco_core::model::ObjectId::new(), "w1", &["sleep"]);
    m.store().insert_worker(&w).await.expect("worker");
    clock.advance(Duration::seconds(1));
    let claimed = m
        .store()
        .claim_task(&claim_request(&w, m.now()))
        .await
        .expect("claim")
        .expect("a task");
    clock.advance(Duration::seconds(1));
    let update: TaskUpdate = worker_update(claimed.task.id, &w, Some(status), "done", m.now());
    m.store()
        .apply_worker_update(w.id, update)
        .await
        .expect("update");
    m.drain_outbox_to_jobs().await.expect("consume");
}

fn body_of(s: &Seen) -> Value {
    serde_json::from_str(&s.body).expect("a JSON body")
}

#[tokio::test]
async fn a_completed_job_sends_one_signed_delivery() {
    let f = Fixture::start(0, &[WebhookEvent::JobStatus]).await;
    run_one_task_job(&f.m, &f.clock, TaskStatus::Completed).await;

    let sender = f.sender();
    let report = sender.send_due_now(&f.m).await.expect("send");
    assert_eq!(report.failed + report.given_up, 0, "{report:?}");
    let seen = f.rx.accepted();
    assert_eq!(seen.len(), report.delivered);
    let completed: Vec<_> = seen
        .iter()
        .filter(|s| body_of(s)["job"]["status"] == "completed")
        .collect();
    assert_eq!(
        completed.len(),
        1,
        "one delivery for the completion: {seen:?}"
    );
    let s = completed[0];
    let body = body_of(s);
    assert_eq!(body["event"], "job-status");
    assert_eq!(body["job"]["name"], "shot 010");
    // The claim and the completion are consumed in one pass: one change, queued → completed.
    assert_eq!(body["job"]["previous_status"], "queued");
    let sig = s.headers[SIGNATURE_HEADER].to_str().expect("ascii");
    assert!(webhooks::verify(SECRET, s.body.as_bytes(), sig), "{sig}");
    assert!(!webhooks::verify("wrong", s.body.as_bytes(), sig));
    assert_eq!(
        s.headers[DELIVERY_HEADER].to_str().expect("ascii"),
        body["id"].as_str().expect("id")
    );
    assert_eq!(s.headers["content-type"], "application/json");

    // Nothing left, and nothing sent twice.
    assert_eq!(
        sender.send_due_now(&f.m).await.expect("send").attempted(),
        0
    );
    assert_eq!(
        f.m.metrics().webhooks().delivered(&f.url),
        report.delivered as u64
    );
    f.m.close().await.expect("close");
}

#[tokio::test]
async fn a_failed_task_sends_task_failed() {
    let f = Fixture::start(0, &[WebhookEvent::TaskFailed]).await;
    run_one_task_job(&f.m, &f.clock, TaskStatus::Failed).await;
    let sender = f.sender();
    sender.send_due_now(&f.m).await.expect("send");
    let seen = f.rx.accepted();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let body = body_of(&seen[0]);
    assert_eq!(body["event"], "task-failed");
    assert_eq!(body["task"]["status"], "failed");
    assert!(body["task"]["job"].is_string(), "{body}");
    f.m.close().await.expect("close");
}

#[tokio::test]
async fn failures_are_retried_with_backoff_and_delivered_once() {
    let f = Fixture::start(3, &[WebhookEvent::JobStatus]).await;
    let deliveries =
        enqueue_job_change(&f.m, &f.cfg, JobStatus::Active, JobStatus::Completed).await;
    let sender = f.sender();

    // 10 s, 20 s, 40 s between the attempts: nothing is sent before its time.
    for wait in [10, 20, 40] {
        let report = sender.send_due_now(&f.m).await.expect("send");
        assert_eq!(report.failed, 1, "{report:?}");
        f.clock.advance(Duration::seconds(wait - 1));
        assert_eq!(
            sender.send_due_now(&f.m).await.expect("send").attempted(),
            0
        );
        f.clock.advance(Duration::seconds(1));
    }
    let report = sender.send_due_now(&f.m).await.expect("send");
    assert_eq!(report.delivered, 1, "{report:?}");
    f.clock.advance(Duration::hours(2));
    assert_eq!(
        sender.send_due_now(&f.m).await.expect("send").attempted(),
        0
    );

    let seen = f.rx.seen();
    assert_eq!(seen.len(), 4, "three failures and one success");
    assert_eq!(f.rx.accepted().len(), 1, "delivered exactly once");
    assert!(
        seen.iter().all(|s| s.body == deliveries[0].body),
        "same body"
    );
    assert_eq!(f.m.metrics().webhooks().failed(&f.url), 3);
    assert_eq!(f.m.metrics().webhooks().delivered(&f.url), 1);
    assert!(f.m.store().webhook_stats().await.expect("stats").is_empty());
    f.m.close().await.expect("close");
}

#[tokio::test]
async fn a_pending_delivery_survives_a_restart() {
    let Fixture {
        rx,
        dir,
        clock,
        cfg,
        m,
        ..
    } = Fixture::start(1, &[WebhookEvent::JobStatus]).await;
    run_one_task_job(&m, &clock, TaskStatus::Completed).await;
    let queued = m.store().webhook_due(m.now(), 100).await.expect("due");
    assert!(!queued.is_empty());
    // The first attempt fails; the Manager stops with the rest pending.
    let sender = Sender::new(cfg.webhooks.clone()).expect("sender");
    let first = sender.send_due_now(&m).await.expect("send");
    assert_eq!(first.failed, 1, "{first:?}");
    m.close().await.expect("close");
    drop(m);

    clock.advance(Duration::minutes(5));
    let m = manager(dir.path(), cfg.clone(), clock.clone());
    let stats = m.store().webhook_stats().await.expect("stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].queued, queued.len() as u64);
    assert!(
        stats[0].last_error.as_deref().unwrap_or("").contains("500"),
        "{stats:?}"
    );
    let sender = Sender::new(cfg.webhooks).expect("sender");
    let report = sender.send_due_now(&m).await.expect("send");
    assert_eq!(report.delivered, queued.len(), "{report:?}");
    let mut got: Vec<String> = rx.accepted().into_iter().map(|s| s.body).collect();
    let mut want: Vec<String> = queued.into_iter().map(|d| d.body).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "each delivery arrives once, unchanged");
    m.close().await.expect("close");
}

#[tokio::test]
async fn hopeless_deliveries_are_given_up_and_shown() {
    let f = Fixture::start(usize::MAX, &[WebhookEvent::JobStatus]).await;
    enqueue_job_change(&f.m, &f.cfg, JobStatus::Active, JobStatus::Failed).await;
    let sender = f.sender();
    let mut given_up = 0;
    for _ in 0..MAX_ATTEMPTS {
        given_up += sender.send_due_now(&f.m).await.expect("send").given_up;
        f.clock.advance(Duration::hours(1));
    }
    assert_eq!(given_up, 1);
    assert_eq!(f.rx.seen().len(), MAX_ATTEMPTS as usize);
    f.clock.advance(Duration::days(30));
    assert_eq!(
        sender.send_due_now(&f.m).await.expect("send").attempted(),
        0
    );
    let stats = f.m.store().webhook_stats().await.expect("stats");
    assert_eq!((stats[0].queued, stats[0].failed), (0, 1), "{stats:?}");
    assert!(stats[0].last_error.as_deref().unwrap_or("").contains("500"));
    f.m.close().await.expect("close");
}

#[tokio::test]
async fn a_job_action_sends_its_status_change() {
    let f = Fixture::start(0, &[WebhookEvent::JobStatus]).await;
    let settings = json!({"frames": "1-3", "chunk_size": 1, "time_in_seconds": 1});
    let job =
        f.m.submit_job(JobSubmission::new(
            "sleep",
            settings.as_object().cloned().expect("object"),
        ))
        .await
        .expect("submit");
    let canceled = f.m.cancel_job(job.id).await.expect("cancel");
    let sender = f.sender();
    sender.send_due_now(&f.m).await.expect("send");
    let seen = f.rx.accepted();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let body = body_of(&seen[0]);
    assert_eq!(body["job"]["id"], job.id.to_string());
    assert_eq!(body["job"]["previous_status"], "queued");
    assert_eq!(body["job"]["status"], canceled.status.as_str());
    f.m.close().await.expect("close");
}

/// Every change of a worker's status is sent as `worker-status`, with the status before
/// and after: sign-on, an acknowledged status, sign-off, contact waking a `down` worker,
/// and the worker timeout. A request that changes nothing sends nothing.
#[tokio::test]
async fn worker_status_changes_are_sent() {
    use flamenco_core::manager::Peer;
    use flamenco_core::protocol::SignOnRequest;

    let Fixture {
        rx,
        clock,
        cfg,
        m,
        dir: _dir,
        ..
    } = Fixture::start(0, &[WebhookEvent::WorkerStatus]).await;
    let id = flamenco_core::model::ObjectId::new();
    m.store()
        .insert_worker(&test_worker(id, "render-07", &["sleep"]))
        .await
        .expect("worker");
    let peer = Peer {
        host: "192.168.3.4".into(),
        host_port: "192.168.3.4:50000".into(),
        user_agent: "Flamenco-Worker/2.5".into(),
    };
    let current = || async { m.get_worker(id).await.expect("get").expect("the worker") };
    let sign_on = || SignOnRequest {
        supported_task_types: None,
        nickname: None,
    };

    m.sign_on(&current().await, sign_on(), &peer)
        .await
        .expect("sign on");
    m.sign_on(&current().await, sign_on(), &peer)
        .await
        .expect("sign on again: awake stays awake");
    m.ack_status_change(&current().await, "asleep")
        .await
        .expect("asleep");
    m.sign_off(&current().await).await.expect("sign off");
    m.next_task(&current().await, &peer)
        .await
        .expect("a poll wakes a down worker");
    // A second worker whose task times out: the task timeout makes it `timeout` too.
    let busy = flamenco_core::model::ObjectId::new();
    m.store()
        .insert_worker(&test_worker(busy, "render-08", &["sleep"]))
        .await
        .expect("worker");
    let busy_worker = m.get_worker(busy).await.expect("get").expect("busy");
    m.sign_on(&busy_worker, sign_on(), &peer)
        .await
        .expect("sign on");
    m.enqueue_tasks(vec![flamenco_core::model::Task::new(
        "t",
        "sleep",
        Vec::new(),
    )])
    .await
    .expect("enqueue");
    let busy_worker = m.get_worker(busy).await.expect("get").expect("busy");
    let next = m.next_task(&busy_worker, &peer).await.expect("claim");
    assert!(
        matches!(next, flamenco_core::manager::NextTask::Task(_)),
        "{next:?}"
    );
    clock.advance(Duration::from_std(cfg.active_worker_timeout_interval).expect("interval"));
    clock.advance(Duration::seconds(1));
    let report = m.check_timeouts_now().await.expect("timeouts");
    assert_eq!(report.timed_out_workers, vec![id]);
    assert_eq!(report.failed_tasks.len(), 1, "{report:?}");

    let sender = Sender::new(cfg.webhooks).expect("sender");
    let sent = sender.send_due_now(&m).await.expect("send");
    assert_eq!(sent.failed + sent.given_up, 0, "{sent:?}");
    let mut changes: Vec<(String, String)> = rx
        .accepted()
        .iter()
        .map(|s| {
            assert_eq!(s.headers["x-flamenco-event"], "worker-status");
            let sig = s.headers[SIGNATURE_HEADER].to_str().expect("ascii");
            assert!(webhooks::verify(SECRET, s.body.as_bytes(), sig));
            let body = body_of(s);
            assert_eq!(body["event"], "worker-status");
            let nickname = body["worker"]["nickname"].as_str().expect("nickname");
            let who = if body["worker"]["id"] == id.to_string() {
                assert_eq!(nickname, "render-07");
                ""
            } else {
                assert_eq!(body["worker"]["id"], busy.to_string());
                assert_eq!(nickname, "render-08");
                "busy "
            };
            (
                who.to_string()
                    + body["worker"]["previous_status"]
                        .as_str()
                        .expect("previous"),
                body["worker"]["status"]
                    .as_str()
                    .expect("status")
                    .to_string(),
            )
        })
        .collect();
    changes.sort();
    let mut want: Vec<(String, String)> = [
        ("", "awake"),
        ("awake", "asleep"),
        ("asleep", "down"),
        ("down", "awake"),
        ("awake", "timeout"),
        ("busy ", "awake"),
        ("busy awake", "timeout"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    assert_eq!(changes, want);
    m.close().await.expect("close");
}

/// A job the Manager fails because no worker can take its tasks (here: no worker has its
/// tag; docs/jobs.md "No worker left") sends its `job-status` change like any other: the
/// maintenance check marks it, the consumer fails it, the sender delivers it.
#[tokio::test]
async fn a_job_failed_for_lack_of_workers_sends_job_status() {
    let f = Fixture::start(0, &[WebhookEvent::JobStatus]).await;
    let settings = json!({"frames": "1-20", "chunk_size": 1, "time_in_seconds": 1});
    let mut sub = JobSubmission::new("sleep", settings.as_object().cloned().expect("object"))
        .with_worker_tag("gpu");
    sub.name = Some("shot 020".into());
    let job = f.m.submit_job(sub).await.expect("submit");
    let w = test_worker(flamenco_core::model::ObjectId::new(), "cpu-1", &["sleep"]);
    f.m.store().insert_worker(&w).await.expect("worker");
    let report = f.m.check_timeouts_now().await.expect("maintenance");
    assert_eq!(report.stranded.len(), 1, "{report:?}");
    assert_eq!(report.stranded[0].job, job.id);
    let consumed = f.m.drain_outbox_to_jobs().await.expect("consume");
    assert!(
        consumed
            .changes
            .iter()
            .any(|c| c.job == job.id && c.to == JobStatus::Failed),
        "{consumed:?}"
    );
    let sender = f.sender();
    let sent = sender.send_due_now(&f.m).await.expect("send");
    assert_eq!(sent.failed + sent.given_up, 0, "{sent:?}");
    let seen = f.rx.accepted();
    assert_eq!(seen.len(), 1, "one change, one delivery: {seen:?}");
    let body = body_of(&seen[0]);
    assert_eq!(body["event"], "job-status");
    assert_eq!(body["job"]["id"], job.id.to_string());
    assert_eq!(body["job"]["name"], "shot 020");
    assert_eq!(body["job"]["previous_status"], "queued");
    assert_eq!(body["job"]["status"], "failed");
    let reason = body["job"]["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no worker"),
        "the delivery says why the job failed: {body}"
    );
    let sig = seen[0].headers[SIGNATURE_HEADER].to_str().expect("ascii");
    assert!(webhooks::verify(SECRET, seen[0].body.as_bytes(), sig));
    let reason =
        f.m.job_status_reason(job.id)
            .await
            .expect("reason")
            .expect("the job says why");
    assert!(reason.starts_with("no worker has tag 'gpu'"), "{reason}");
    f.m.close().await.expect("close");
}
