//! Prometheus metrics (`GET /metrics`, docs/metrics.md).
//!
//! [`Metrics`] owns the registry of what is counted as it happens: task claims, accepted
//! worker updates, upstream calls, HTTP requests (recorded by the daemon's middleware), open
//! connections and event streams (kept by the daemon's accept loop and stream guard) and
//! store operation latency (recorded by [`crate::store::instrumented::InstrumentedStore`]).
//! What describes the current state (tasks by status and type, workers by status, the
//! outbox, the upstream connection) is read at scrape time by [`scrape`] with a handful of
//! cheap store calls (one grouped count for the tasks, never a task listing) and encoded
//! from a registry made for that scrape, so a label value that no longer exists (a status
//! with no task left) disappears instead of lingering.
//!
//! The exposition is the OpenMetrics text format ([`CONTENT_TYPE`]), which Prometheus
//! reads natively.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::store::Claimed;
use crate::updates::WorkerUpdateOutcome;
use crate::Manager;

/// The content type of [`scrape`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `outcome` values of `flamenco_task_claims_total`.
pub mod claim_outcome {
    /// A queued task was handed to the worker.
    pub const ASSIGNED: &str = "assigned";
    /// The worker got the task it already had `active` again.
    pub const REASSIGNED: &str = "reassigned";
    /// Nothing was schedulable for the worker (204).
    pub const EMPTY: &str = "empty";
    pub const ALL: [&str; 3] = [ASSIGNED, REASSIGNED, EMPTY];
}

/// `outcome` values of `flamenco_task_updates_total`.
pub mod update_outcome {
    /// Accepted and stored (204).
    pub const APPLIED: &str = "applied";
    /// The task is unknown (404).
    pub const NOT_FOUND: &str = "not_found";
    /// The task belongs to another worker (409).
    pub const ASSIGNED_TO_OTHER: &str = "assigned_to_other";
    /// The task's status does not take worker updates, e.g. canceled (409).
    pub const NOT_RUNNABLE: &str = "not_runnable";
    /// The last words of a canceled task from its own worker: log and activity kept, the
    /// status not applied (204).
    pub const LAST_WORDS: &str = "last_words";
    pub const ALL: [&str; 5] = [
        APPLIED,
        NOT_FOUND,
        ASSIGNED_TO_OTHER,
        NOT_RUNNABLE,
        LAST_WORDS,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// How many distinct HTTP method and route labels are kept; later ones count as
/// [`OTHER_LABEL`]. The daemon's routes are its router's patterns (a few dozen) and
/// unmatched paths share one label, so the cap is never reached by the daemon itself.
const MAX_HTTP_LABELS: usize = 256;

/// The label of a method or route beyond [`MAX_HTTP_LABELS`].
const OTHER_LABEL: &str = "other";

/// The one `&'static str` for a method or route label, so that recording a request
/// allocates nothing: each distinct value is leaked once, at most [`MAX_HTTP_LABELS`]
/// of them.
fn http_label(value: &str) -> &'static str {
    static LABELS: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());
    let find = |labels: &[&'static str]| labels.iter().copied().find(|l| *l == value);
    if let Some(found) = find(&LABELS.read().unwrap_or_else(|e| e.into_inner())) {
        return found;
    }
    let mut labels = LABELS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = find(&labels) {
        return found;
    }
    if labels.len() >= MAX_HTTP_LABELS {
        return OTHER_LABEL;
    }
    let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
    labels.push(leaked);
    leaked
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    status: String,
    task_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    mode: &'static str,
    store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `class` values of `flamenco_http_connections` (docs/security.md, "Connection starvation").
pub mod connection_class {
    /// From an address where a worker has authenticated: may use the reserved slots.
    pub const WORKER: &str = "worker";
    /// Any other client.
    pub const OTHER: &str = "other";
    pub const ALL: [&str; 2] = [WORKER, OTHER];
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.1 ms … 6.5 s: store operations and upstream calls.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 9))
}

/// 0.5 ms … 1.9 s: HTTP requests.
fn http_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.5, 10))
}

/// The process's metrics. Cheap to clone (one `Arc`); recording is lock-free once a label
/// combination exists (a read lock and a hash lookup to find it, tens of nanoseconds).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    claims: Family<OutcomeLabels, Counter>,
    task_updates: Family<OutcomeLabels, Counter>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_duration: Histograms<EndpointLabels>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<RouteLabels>,
    store_duration: Histograms<OperationLabels>,
    connections: ConnectionMetrics,
    webhooks: crate::webhooks::metrics::WebhookMetrics,
}

/// Open connections and event streams, and the ones refused (kept apart from [`Inner`]'s
/// request metrics: the daemon's accept loop and stream guard update them).
struct ConnectionMetrics {
    open: Family<ClassLabels, Gauge>,
    refused: Family<ReasonLabels, Counter>,
    streams: Gauge,
    streams_refused: Family<ReasonLabels, Counter>,
}

impl ConnectionMetrics {
    fn register(registry: &mut Registry) -> ConnectionMetrics {
        let open = Family::<ClassLabels, Gauge>::default();
        registry.register(
            "flamenco_http_connections",
            "Open client connections, by class: worker (from an address where a worker has authenticated; may use reserved_worker_connections) or other",
            open.clone(),
        );
        for class in connection_class::ALL {
            let _ = open.get_or_create(&ClassLabels { class });
        }
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "flamenco_http_connections_refused",
            "Connections closed on arrival, by reason: per_ip (max_connections_per_ip), others_full (the slots not reserved for workers are taken)",
            refused.clone(),
        );
        let streams = Gauge::default();
        registry.register(
            "flamenco_http_streams",
            "Open long-lived event streams (/imagewatch and the like)",
            streams.clone(),
        );
        let streams_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "flamenco_http_streams_refused",
            "Event streams refused with 503, by reason: total (max_streams), per_ip (max_streams_per_ip)",
            streams_refused.clone(),
        );
        ConnectionMetrics {
            open,
            refused,
            streams,
            streams_refused,
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered. The claim and update outcomes start
    /// at 0, so that `increase()` over them is defined before the first claim.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let claims = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "flamenco_task_claims",
            "Task requests from workers (POST /task), by outcome: assigned (a queued task was handed out), reassigned (the worker's own active task again), empty (nothing schedulable)",
            claims.clone(),
        );
        let task_updates = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "flamenco_task_updates",
            "Worker task updates (POST /tasks/{task_id}/update), by outcome: applied, not_found, assigned_to_other, not_runnable",
            task_updates.clone(),
        );
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "flamenco_upstream_requests",
            "Calls to the Flamenco Server (upstream mode), by endpoint (startup, download, push, refetch) and outcome (2xx, 3xx, 4xx, 5xx, network_error)",
            upstream_requests.clone(),
        );
        let upstream_duration: Histograms<EndpointLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "flamenco_upstream_request_duration",
            "Time from sending a call to the Flamenco Server until its answer's body was read (or the call failed), by endpoint",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "flamenco_http_requests",
            "HTTP requests served, by method, route template (unmatched for unknown paths) and status code",
            http_requests.clone(),
        );
        let http_duration: Histograms<RouteLabels> = Family::new_with_constructor(http_histogram);
        registry.register_with_unit(
            "flamenco_http_request_duration",
            "Time to produce an HTTP response (until its headers), by method and route template",
            Unit::Seconds,
            http_duration.clone(),
        );
        let store_duration: Histograms<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "flamenco_store_operation_duration",
            "Time of each store operation (the Store trait's method name), successful or not",
            Unit::Seconds,
            store_duration.clone(),
        );
        let connections = ConnectionMetrics::register(&mut registry);
        let webhooks = crate::webhooks::metrics::WebhookMetrics::register(&mut registry);
        for outcome in claim_outcome::ALL {
            let _ = claims.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in update_outcome::ALL {
            let _ = task_updates.get_or_create(&OutcomeLabels { outcome });
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                claims,
                task_updates,
                upstream_requests,
                upstream_duration,
                http_requests,
                http_duration,
                store_duration,
                connections,
                webhooks,
            }),
        }
    }

    /// The webhook delivery metrics (docs/webhooks.md).
    pub fn webhooks(&self) -> &crate::webhooks::metrics::WebhookMetrics {
        &self.inner.webhooks
    }

    /// A worker's task request ended with this claim (`None`: nothing schedulable).
    pub fn record_claim(&self, claimed: Option<&Claimed>) {
        let outcome = match claimed {
            None => claim_outcome::EMPTY,
            Some(c) if c.already_assigned => claim_outcome::REASSIGNED,
            Some(_) => claim_outcome::ASSIGNED,
        };
        self.inner
            .claims
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A worker's task update was decided.
    pub fn record_task_update(&self, outcome: &WorkerUpdateOutcome) {
        let outcome = match outcome {
            WorkerUpdateOutcome::Applied => update_outcome::APPLIED,
            WorkerUpdateOutcome::NotFound => update_outcome::NOT_FOUND,
            WorkerUpdateOutcome::AssignedToOther => update_outcome::ASSIGNED_TO_OTHER,
            WorkerUpdateOutcome::NotRunnable(_) => update_outcome::NOT_RUNNABLE,
            WorkerUpdateOutcome::LastWords(_) => update_outcome::LAST_WORDS,
        };
        self.inner
            .task_updates
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// One call to the Flamenco Server: `outcome` is the answer's status class (`2xx` …)
    /// or `network_error` when there was no answer.
    pub fn record_upstream_request(
        &self,
        endpoint: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.inner
            .upstream_requests
            .get_or_create(&UpstreamLabels { endpoint, outcome })
            .inc();
        self.inner
            .upstream_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    /// One HTTP request. `route` must be a route template (`/tasks/{task_id}/update`) or
    /// `unmatched`, never the raw path: ids would make one series per task. Beyond 256
    /// distinct methods and routes, later ones are counted as `other`.
    pub fn record_http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let (method, route) = (http_label(method), http_label(route));
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .inc();
        self.inner
            .http_duration
            .get_or_create(&RouteLabels { method, route })
            .observe(elapsed.as_secs_f64());
    }

    /// One store operation took `elapsed`.
    pub fn record_store_operation(&self, operation: &'static str, elapsed: Duration) {
        self.inner
            .store_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// The gauge of open connections of `class` ([`connection_class`]); the daemon's accept
    /// loop increments and decrements it.
    pub fn connection_gauge(&self, class: &'static str) -> Gauge {
        self.inner
            .connections
            .open
            .get_or_create(&ClassLabels { class })
            .clone()
    }

    /// A connection was closed on arrival (`per_ip`, `others_full`).
    pub fn record_connection_refused(&self, reason: &'static str) {
        self.inner
            .connections
            .refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Open connections, every class together.
    pub fn open_connections(&self) -> i64 {
        connection_class::ALL
            .iter()
            .map(|class| self.connection_gauge(class).get())
            .sum()
    }

    /// The gauge of open event streams; the daemon's stream guard keeps it.
    pub fn stream_gauge(&self) -> Gauge {
        self.inner.connections.streams.clone()
    }

    /// An event stream was refused (`total`, `per_ip`).
    pub fn record_stream_refused(&self, reason: &'static str) {
        self.inner
            .connections
            .streams_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The registry of the counters and histograms (for embedding in another exposition).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }
}

/// The upstream outcome label for an answer's status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `store` label of `flamenco_build_info`, from [`crate::store::Store::describe`].
fn store_kind(describe: &str) -> &'static str {
    if describe.starts_with("sqlite") {
        "sqlite"
    } else if describe.starts_with("mongodb") {
        "mongodb"
    } else {
        "other"
    }
}

fn timestamp_gauge(registry: &mut Registry, name: &str, help: &str, at: Option<i64>) {
    // Absent until the first success: a 0 would read as "52 years ago".
    if let Some(ms) = at {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(ms as f64 / 1000.0);
        registry.register_with_unit(name, help, Unit::Seconds, g);
    }
}

/// The whole exposition: the counters and histograms, plus the state read now from the
/// store (tasks by status and type, workers by status, outbox depth and age) and the
/// upstream connection. When the store cannot answer, its gauges are left out and
/// `flamenco_store_up` is 0; the rest is still served.
pub async fn scrape(manager: &Manager) -> String {
    let store = manager.store();
    let mut reg = Registry::default();
    let mut store_ok = true;

    let info = Info::new(BuildLabels {
        version: crate::VERSION,
        mode: if manager.config().is_upstream() {
            "upstream"
        } else {
            "standalone"
        },
        store: store_kind(&store.describe()),
    });
    reg.register(
        "flamenco_build",
        "The Manager's version, mode (standalone or upstream) and store backend; always 1",
        info,
    );

    match store.count_tasks_by_status_and_type().await {
        Ok(counts) => {
            let tasks = Family::<TaskLabels, Gauge>::default();
            for ((status, task_type), n) in counts {
                tasks
                    .get_or_create(&TaskLabels { status, task_type })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            reg.register(
                "flamenco_tasks",
                "Tasks in the store, by status and task type",
                tasks,
            );
        }
        Err(e) => {
            store_ok = false;
            tracing::warn!("metrics: cannot count tasks: {e}");
        }
    }

    match store.list_workers().await {
        Ok(list) => {
            let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
            for w in list {
                // v2 stores a registered worker that never signed on with status "".
                let status = if w.status.is_empty() {
                    "registered".to_string()
                } else {
                    w.status
                };
                *by_status.entry(status).or_default() += 1;
            }
            let workers = Family::<StatusLabels, Gauge>::default();
            for (status, n) in by_status {
                workers.get_or_create(&StatusLabels { status }).set(n);
            }
            reg.register("flamenco_workers", "Registered workers, by status", workers);
        }
        Err(e) => {
            store_ok = false;
            tracing::warn!("metrics: cannot list workers: {e}");
        }
    }

    match store.outbox_len().await {
        Ok(n) => {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
            reg.register(
                "flamenco_outbox_updates",
                "Task updates waiting in the outbox (to push to the Flamenco Server, or for the standalone consumer); set-aside updates not included",
                g,
            );
        }
        Err(e) => {
            store_ok = false;
            tracing::warn!("metrics: cannot count the outbox: {e}");
        }
    }

    match store.outbox_peek(1).await {
        Ok(oldest) => {
            let age = oldest
                .first()
                .map(|u| (manager.now() - u.received_on_manager).num_milliseconds())
                .unwrap_or(0)
                .max(0);
            let g = Gauge::<f64, AtomicU64>::default();
            g.set(age as f64 / 1000.0);
            reg.register_with_unit(
                "flamenco_outbox_oldest_age",
                "Age of the oldest update waiting in the outbox; 0 when it is empty",
                Unit::Seconds,
                g,
            );
        }
        Err(e) => {
            store_ok = false;
            tracing::warn!("metrics: cannot read the outbox: {e}");
        }
    }

    match store.outbox_set_aside_len().await {
        Ok(n) => {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
            reg.register(
                "flamenco_outbox_set_aside_updates",
                "Updates the Flamenco Server never acknowledged, set aside (`flamenco push --retry-set-aside` sends them again)",
                g,
            );
        }
        Err(e) => {
            store_ok = false;
            tracing::warn!("metrics: cannot count set-aside updates: {e}");
        }
    }

    let up = Gauge::<i64>::default();
    up.set(i64::from(store_ok));
    reg.register(
        "flamenco_store_up",
        "1 when the store answered every query of this scrape, else 0",
        up,
    );

    if let Some(upstream) = manager.upstream() {
        register_upstream(&mut reg, &upstream.status());
    }
    manager.latest_images().stats().register(&mut reg);
    crate::leader::register_metrics(manager, &mut reg);

    let mut out = String::new();
    // Writing to a String cannot fail; the encoder only reports formatter errors.
    let _ = encode_registry(&mut out, manager.metrics().registry());
    let _ = encode_registry(&mut out, &reg);
    let _ = encode_eof(&mut out);
    out
}

fn register_upstream(reg: &mut Registry, status: &crate::upstream::UpstreamStatus) {
    let millis = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_millis());
    timestamp_gauge(
        reg,
        "flamenco_upstream_last_success_timestamp",
        "When a call to the Flamenco Server last succeeded (Unix time)",
        millis(status.last_success),
    );
    timestamp_gauge(
        reg,
        "flamenco_upstream_last_push_success_timestamp",
        "When a push of task updates last succeeded (Unix time)",
        millis(status.last_push),
    );
    timestamp_gauge(
        reg,
        "flamenco_upstream_last_download_success_timestamp",
        "When a task download last succeeded (Unix time)",
        millis(status.last_download),
    );
    let failures = Gauge::<i64>::default();
    failures.set(i64::from(status.consecutive_push_failures));
    reg.register(
        "flamenco_upstream_consecutive_push_failures",
        "Failed pushes since the last successful one",
        failures,
    );
    let failures = Gauge::<i64>::default();
    failures.set(i64::from(status.consecutive_download_failures));
    reg.register(
        "flamenco_upstream_consecutive_download_failures",
        "Failed task downloads since the last successful one",
        failures,
    );
    let t = &status.totals;
    for (name, help, value) in [
        (
            "flamenco_upstream_updates_pushed",
            "Task updates sent to the Flamenco Server (an update sent twice counts twice)",
            t.updates_sent,
        ),
        (
            "flamenco_upstream_updates_acknowledged",
            "Task updates the Flamenco Server acknowledged",
            t.updates_acknowledged,
        ),
        (
            "flamenco_upstream_updates_set_aside",
            "Task updates set aside because the Flamenco Server never acknowledged them",
            t.updates_set_aside,
        ),
        (
            "flamenco_upstream_tasks_downloaded",
            "Tasks received in downloads from the Flamenco Server",
            t.tasks_downloaded,
        ),
    ] {
        reg.register(name, help, ConstCounter::new(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        encode_registry(&mut out, m.registry()).expect("encode");
        out
    }

    #[test]
    fn connection_and_stream_gauges_are_exposed() {
        let m = Metrics::new();
        let text0 = text(&m);
        assert!(
            text0.contains("flamenco_http_connections{class=\"worker\"} 0"),
            "{text0}"
        );
        assert!(text0.contains("flamenco_http_streams 0"), "{text0}");
        let others = m.connection_gauge(connection_class::OTHER);
        others.inc();
        others.inc();
        m.connection_gauge(connection_class::WORKER).inc();
        m.stream_gauge().inc();
        m.record_connection_refused("others_full");
        m.record_stream_refused("per_ip");
        assert_eq!(m.open_connections(), 3);
        let text = text(&m);
        assert!(
            text.contains("flamenco_http_connections{class=\"other\"} 2"),
            "{text}"
        );
        assert!(text.contains("flamenco_http_streams 1"), "{text}");
        assert!(
            text.contains("flamenco_http_connections_refused_total{reason=\"others_full\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flamenco_http_streams_refused_total{reason=\"per_ip\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn outcomes_start_at_zero_and_count() {
        let m = Metrics::new();
        let t = text(&m);
        assert!(
            t.contains("flamenco_task_claims_total{outcome=\"assigned\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("flamenco_task_updates_total{outcome=\"not_runnable\"} 0"),
            "{t}"
        );
        m.record_claim(None);
        m.record_claim(None);
        m.record_task_update(&WorkerUpdateOutcome::AssignedToOther);
        let t = text(&m);
        assert!(
            t.contains("flamenco_task_claims_total{outcome=\"empty\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("flamenco_task_updates_total{outcome=\"assigned_to_other\"} 1"),
            "{t}"
        );
    }

    #[test]
    fn http_labels_are_kept_once() {
        let a = http_label("/tasks/{task_id}/update");
        let b = http_label(&String::from("/tasks/{task_id}/update"));
        assert_eq!(a, "/tasks/{task_id}/update");
        assert!(std::ptr::eq(a, b), "the same route was leaked twice");
    }

    #[test]
    fn histograms_have_seconds_in_their_names() {
        let m = Metrics::new();
        m.record_store_operation("claim_task", Duration::from_micros(300));
        m.record_upstream_request("push", status_class(503), Duration::from_millis(20));
        m.record_http_request("POST", "/task", 204, Duration::from_millis(2));
        let t = text(&m);
        assert!(
            t.contains("# TYPE flamenco_store_operation_duration_seconds histogram"),
            "{t}"
        );
        assert!(
            t.contains("flamenco_store_operation_duration_seconds_bucket{le=\"0.0004\",operation=\"claim_task\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("flamenco_upstream_requests_total{endpoint=\"push\",outcome=\"5xx\"} 1"),
            "{t}"
        );
        assert!(
            t.contains(
                "flamenco_http_requests_total{method=\"POST\",route=\"/task\",status=\"204\"} 1"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "flamenco_http_request_duration_seconds_count{method=\"POST\",route=\"/task\"} 1"
            ),
            "{t}"
        );
    }

    #[tokio::test]
    async fn upstream_calls_are_counted_by_endpoint_and_outcome() {
        use flamenco_testserver::{Endpoint, Fault, TestServer};

        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = TestServer::start().await;
        let creds = server.add_manager();
        let config = crate::config::Config {
            flamenco: server.url(),
            manager_id: creds.id.clone(),
            manager_secret: creds.token.clone(),
            ..crate::config::Config::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::sqlite::SqliteStore::open(dir.path()).expect("open");
        let manager =
            Manager::try_with_store(config, Arc::new(store), Arc::new(crate::clock::SystemClock))
                .expect("manager");
        let client = manager.upstream().expect("upstream mode").client();
        client.depsgraph(None).await.expect("download");
        server.fail_times(Endpoint::Depsgraph, Fault::Status(503), 1);
        assert!(client.depsgraph(None).await.is_err());

        let t = scrape(&manager).await;
        for line in [
            r#"flamenco_upstream_requests_total{endpoint="download",outcome="2xx"} 1"#,
            r#"flamenco_upstream_requests_total{endpoint="download",outcome="5xx"} 1"#,
            r#"flamenco_upstream_request_duration_seconds_count{endpoint="download"} 2"#,
            "flamenco_upstream_consecutive_push_failures 0",
            "flamenco_upstream_updates_pushed_total 0",
            "flamenco_store_up 1",
        ] {
            assert!(t.lines().any(|l| l == line), "no {line:?} in:\n{t}");
        }
        assert!(t.contains(r#"mode="upstream",store="sqlite""#), "{t}");
        // Not called: no series.
        assert!(!t.contains(r#"endpoint="push""#), "{t}");
        manager.close().await.expect("close");
    }

    #[test]
    fn status_classes_and_store_kinds() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(502), "5xx");
        assert_eq!(store_kind("sqlite:/srv/data"), "sqlite");
        assert_eq!(
            store_kind("mongodb+srv://host (database flamenco)"),
            "mongodb"
        );
        assert_eq!(store_kind("memory"), "other");
    }
}
