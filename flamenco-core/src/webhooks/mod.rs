//! Webhooks: the Manager tells other systems what happened, by POSTing JSON to the URLs the
//! configuration lists (`webhooks`, docs/webhooks.md).
//!
//! * [`WebhookConfig`]: one configured receiver (URL, optional secret, events).
//! * Events are queued durably in the store ([`crate::store::WebhookStore`]) where they
//!   happen: job status changes and task failures by the standalone consumer
//!   ([`crate::jobs::consumer`]), which is off the worker API's path, job status
//!   changes made by job actions, and worker status changes (`enqueue.rs`).
//! * [`send`] delivers due deliveries in the background, signs them
//!   ([`signature`]), and retries failures with capped exponential backoff
//!   ([`backoff`]); [`metrics`] counts what happened per URL.

mod enqueue;
pub mod metrics;
pub mod send;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::model::{ObjectId, TaskUpdate};
use crate::store::{JobStatusChange, NewWebhookDelivery, WebhookQueueStats};

/// The header carrying the body's HMAC-SHA256: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Flamenco-Signature";
/// The header carrying the event name.
pub const EVENT_HEADER: &str = "X-Flamenco-Event";
/// The header carrying the delivery id (the same on every attempt of one delivery).
pub const DELIVERY_HEADER: &str = "X-Flamenco-Delivery";

/// The wait before the first retry; it doubles with each failed attempt …
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// … up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A delivery is given up after this many failed attempts (about 21 hours of trying).
pub const MAX_ATTEMPTS: u32 = 30;
/// The longest one attempt may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a webhook can be told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookEvent {
    /// A job's status changed.
    JobStatus,
    /// A task failed.
    TaskFailed,
    /// A worker's status changed (sign-on, sign-off, an acknowledged status, woken by
    /// contact, timed out).
    WorkerStatus,
}

impl WebhookEvent {
    pub fn as_str(&self) -> &'static str {
        match self {
            WebhookEvent::JobStatus => "job-status",
            WebhookEvent::TaskFailed => "task-failed",
            WebhookEvent::WorkerStatus => "worker-status",
        }
    }
}

/// One configured receiver.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where deliveries are POSTed: an `http://` or `https://` URL.
    pub url: String,
    /// When set, every delivery carries [`SIGNATURE_HEADER`].
    #[serde(default)]
    pub secret: String,
    /// The events sent to it.
    pub events: Vec<WebhookEvent>,
}

impl WebhookConfig {
    /// Check one entry (`index` for the message): a valid http(s) URL with a host, and at
    /// least one event.
    pub fn validate(&self, index: usize) -> Result<(), String> {
        let url = reqwest::Url::parse(self.url.trim()).map_err(|e| {
            format!(
                "webhooks[{index}].url: {:?} is not a valid URL ({e}); expected e.g. https://hooks.example.com/flamenco",
                self.url
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "webhooks[{index}].url: {:?} must be an http:// or https:// URL with a host",
                self.url
            ));
        }
        if self.events.is_empty() {
            return Err(format!(
                "webhooks[{index}].events is empty; list at least one of job-status, task-failed, worker-status"
            ));
        }
        Ok(())
    }

    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.events.contains(&event)
    }
}

/// Check a whole `webhooks` list: every entry, and no URL twice (metrics and the queue
/// are per URL).
pub fn validate_all(hooks: &[WebhookConfig]) -> Result<(), String> {
    for (i, hook) in hooks.iter().enumerate() {
        hook.validate(i)?;
        if hooks[..i].iter().any(|h| h.url.trim() == hook.url.trim()) {
            return Err(format!(
                "webhooks[{i}].url: {:?} is listed twice; list each URL once with all its events",
                hook.url
            ));
        }
    }
    Ok(())
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` under `secret` (constant time; for
/// receivers and tests).
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The wait after failed attempt number `attempts` (1 for the first failure):
/// [`FIRST_RETRY`] doubled each time, at most [`MAX_BACKOFF`]; `None` once
/// [`MAX_ATTEMPTS`] is reached (give up).
pub fn backoff(attempts: u32) -> Option<Duration> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    Some(FIRST_RETRY.saturating_mul(factor).min(MAX_BACKOFF))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The envelope every body shares: `{"id", "event", "time", <key>: <object>}`.
fn envelope(
    id: ObjectId,
    event: WebhookEvent,
    now: DateTime<Utc>,
    key: &str,
    object: Value,
) -> String {
    let mut body = serde_json::Map::new();
    body.insert("id".into(), Value::String(id.to_string()));
    body.insert("event".into(), Value::String(event.as_str().into()));
    body.insert("time".into(), Value::String(time(now)));
    body.insert(key.into(), object);
    Value::Object(body).to_string()
}

/// The deliveries for every webhook that wants `event`, with one body per webhook (each
/// has its own delivery id).
fn for_each_hook(
    hooks: &[WebhookConfig],
    event: WebhookEvent,
    now: DateTime<Utc>,
    key: &str,
    object: &Value,
    out: &mut Vec<NewWebhookDelivery>,
) {
    for hook in hooks.iter().filter(|h| h.wants(event)) {
        let id = ObjectId::new();
        out.push(NewWebhookDelivery {
            id,
            url: hook.url.trim().to_string(),
            event: event.as_str().to_string(),
            body: envelope(id, event, now, key, object.clone()),
            created: now,
        });
    }
}

/// Deliveries for job status changes. `name` gives a job's name when known; `reason` its
/// `status_reason` (why the Manager failed it, e.g. no worker left), sent only when there is
/// one.
pub fn job_status_deliveries(
    hooks: &[WebhookConfig],
    changes: &[JobStatusChange],
    name: impl Fn(ObjectId) -> Option<String>,
    reason: impl Fn(ObjectId) -> Option<String>,
    now: DateTime<Utc>,
) -> Vec<NewWebhookDelivery> {
    let mut out = Vec::new();
    for c in changes {
        let mut job = json!({
            "id": c.job.to_string(),
            "name": name(c.job),
            "status": c.to.as_str(),
            "previous_status": c.from.as_str(),
        });
        if let Some(reason) = reason(c.job) {
            job["status_reason"] = Value::String(reason);
        }
        for_each_hook(hooks, WebhookEvent::JobStatus, now, "job", &job, &mut out);
    }
    out
}

/// Deliveries for task updates that failed their task. `job_of` gives a task's job.
pub fn task_failed_deliveries(
    hooks: &[WebhookConfig],
    updates: &[TaskUpdate],
    job_of: impl Fn(ObjectId) -> Option<ObjectId>,
    now: DateTime<Utc>,
) -> Vec<NewWebhookDelivery> {
    let mut out = Vec::new();
    for u in updates {
        if u.task_status != Some(crate::model::TaskStatus::Failed) {
            continue;
        }
        let task = json!({
            "id": u.task_id.to_string(),
            "job": job_of(u.task_id).map(|j| j.to_string()),
            "status": "failed",
            "worker": u.worker,
            "activity": u.activity,
            "failed_at": time(u.received_on_manager),
        });
        for_each_hook(
            hooks,
            WebhookEvent::TaskFailed,
            now,
            "task",
            &task,
            &mut out,
        );
    }
    out
}

/// Deliveries for one worker whose status changed from `from` (`""`: none yet) to `to`;
/// none when the status did not change.
pub fn worker_status_deliveries(
    hooks: &[WebhookConfig],
    worker: &crate::model::Worker,
    from: &str,
    to: &str,
    now: DateTime<Utc>,
) -> Vec<NewWebhookDelivery> {
    let mut out = Vec::new();
    if from == to {
        return out;
    }
    let object = json!({
        "id": worker.id.to_string(),
        "nickname": worker.nickname,
        "address": worker.address,
        "status": to,
        "previous_status": from,
    });
    for_each_hook(
        hooks,
        WebhookEvent::WorkerStatus,
        now,
        "worker",
        &object,
        &mut out,
    );
    out
}

/// One line per configured webhook, and per URL still in the queue but no longer
/// configured, for `flamenco config check --connect`.
pub fn status_lines(hooks: &[WebhookConfig], stats: &[WebhookQueueStats]) -> Vec<String> {
    let line = |url: &str, s: Option<&WebhookQueueStats>, note: &str| match s {
        None => format!("webhook {url}{note}: nothing queued"),
        Some(s) => {
            let mut text = format!(
                "webhook {url}{note}: {} queued, {} given up",
                s.queued, s.failed
            );
            if let Some(e) = &s.last_error {
                text.push_str(&format!("; last error: {e}"));
            }
            text
        }
    };
    let mut out: Vec<String> = hooks
        .iter()
        .map(|h| {
            let url = h.url.trim();
            line(url, stats.iter().find(|s| s.url == url), "")
        })
        .collect();
    for s in stats {
        if !hooks.iter().any(|h| h.url.trim() == s.url) {
            out.push(line(&s.url, Some(s), " (no longer configured)"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str, events: &[WebhookEvent]) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret: String::new(),
            events: events.to_vec(),
        }
    }

    #[test]
    fn worker_status_goes_to_the_hooks_that_want_it_and_only_on_a_change() {
        let hooks = [
            hook("http://a/", &[WebhookEvent::WorkerStatus]),
            hook("http://b/", &[WebhookEvent::JobStatus]),
        ];
        let w = crate::store::conformance::test_worker(ObjectId::new(), "render-07", &[]);
        let now = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        assert!(worker_status_deliveries(&hooks, &w, "awake", "awake", now).is_empty());
        let out = worker_status_deliveries(&hooks, &w, "awake", "asleep", now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].url, "http://a/");
        assert_eq!(out[0].event, "worker-status");
        let body: Value = serde_json::from_str(&out[0].body).expect("json");
        assert_eq!(body["worker"]["status"], "asleep");
        assert_eq!(body["worker"]["previous_status"], "awake");
        assert_eq!(body["worker"]["nickname"], "render-07");
        assert_eq!(body["id"], out[0].id.to_string());
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify("Jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify("Jefe", b"what do ya want for nothing!", &sig));
        assert!(!verify("other", b"what do ya want for nothing?", &sig));
        assert!(!verify("Jefe", b"x", "sha1=00"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        assert_eq!(backoff(1), Some(Duration::from_secs(10)));
        assert_eq!(backoff(2), Some(Duration::from_secs(20)));
        assert_eq!(backoff(3), Some(Duration::from_secs(40)));
        assert_eq!(backoff(12), Some(MAX_BACKOFF));
        assert_eq!(backoff(MAX_ATTEMPTS - 1), Some(MAX_BACKOFF));
        assert_eq!(backoff(MAX_ATTEMPTS), None);
    }

    #[test]
    fn validation_names_the_entry_and_the_fix() {
        let ok = hook("https://hooks.example.com/x", &[WebhookEvent::JobStatus]);
        assert!(validate_all(std::slice::from_ref(&ok)).is_ok());
        let err = validate_all(&[hook("ftp://x/", &[WebhookEvent::JobStatus])]).unwrap_err();
        assert!(
            err.contains("webhooks[0].url") && err.contains("http"),
            "{err}"
        );
        let err = validate_all(&[hook("not a url", &[WebhookEvent::JobStatus])]).unwrap_err();
        assert!(err.contains("not a valid URL"), "{err}");
        let err = validate_all(&[hook("http://x/", &[])]).unwrap_err();
        assert!(err.contains("webhooks[0].events"), "{err}");
        let err = validate_all(&[ok.clone(), ok]).unwrap_err();
        assert!(
            err.contains("webhooks[1].url") && err.contains("twice"),
            "{err}"
        );
    }

    #[test]
    fn the_config_file_lists_webhooks_and_refuses_bad_ones() {
        use crate::config::Config;
        let path = std::path::Path::new("flamenco-manager.yaml");
        let c = Config::from_yaml(
            "webhooks:\n  - url: https://hooks.example.com/f\n    secret: s3cret\n    events: [job-status, task-failed]\n  - url: http://tracker.lan:8080/x\n    events: [worker-status]\n",
            path,
        )
        .expect("parses");
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(c.webhooks[0].secret, "s3cret");
        assert_eq!(
            c.webhooks[0].events,
            vec![WebhookEvent::JobStatus, WebhookEvent::TaskFailed]
        );
        assert_eq!(c.webhooks[1].secret, "");
        let shown = c.describe_effective();
        assert!(shown.contains("https://hooks.example.com/f"), "{shown}");
        assert!(!shown.contains("s3cret"), "the secret is masked: {shown}");
        for (bad, needle) in [
            (
                "webhooks:\n  - url: ftp://x/\n    events: [job-status]\n",
                "http",
            ),
            (
                "webhooks:\n  - url: http://x/\n    events: [job-done]\n",
                "job-done",
            ),
            ("webhooks:\n  - url: http://x/\n    events: []\n", "events"),
            (
                "webhooks:\n  - url: http://x/\n    event: [job-status]\n",
                "event",
            ),
        ] {
            let err = Config::from_yaml(bad, path).expect_err(bad).to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(Config::default().webhooks.is_empty());
    }

    #[test]
    fn status_lines_show_queue_failures_and_the_last_error() {
        let hooks = [
            hook("http://a/", &[WebhookEvent::JobStatus]),
            hook("http://b/", &[WebhookEvent::JobStatus]),
        ];
        let stats = [
            WebhookQueueStats {
                url: "http://a/".into(),
                queued: 3,
                failed: 1,
                last_error: Some("the receiver answered HTTP 500".into()),
            },
            WebhookQueueStats {
                url: "http://old/".into(),
                queued: 1,
                failed: 0,
                last_error: None,
            },
        ];
        assert_eq!(
            status_lines(&hooks, &stats),
            vec![
                "webhook http://a/: 3 queued, 1 given up; last error: the receiver answered HTTP 500",
                "webhook http://b/: nothing queued",
                "webhook http://old/ (no longer configured): 1 queued, 0 given up",
            ]
        );
    }

    #[test]
    fn job_status_bodies_have_the_documented_shape() {
        let hooks = [
            hook("http://a/", &[WebhookEvent::JobStatus]),
            hook("http://b/", &[WebhookEvent::TaskFailed]),
        ];
        let job = ObjectId::new();
        let now = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let change = JobStatusChange {
            job,
            from: crate::model::JobStatus::Active,
            to: crate::model::JobStatus::Completed,
        };
        let out =
            job_status_deliveries(&hooks, &[change], |_| Some("shot 10".into()), |_| None, now);
        assert_eq!(out.len(), 1, "only the hook that wants job-status");
        let d = &out[0];
        assert_eq!(d.url, "http://a/");
        let body: Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(
            body,
            json!({
                "id": d.id.to_string(),
                "event": "job-status",
                "time": "2023-11-14T22:13:20.123Z",
                "job": {"id": job.to_string(), "name": "shot 10", "status": "completed", "previous_status": "active"},
            })
        );
    }
}
