//! Which Manager leads: several Managers may share one MongoDB database, but the loops that
//! must run once per site (upstream download, push and cancel polling, the timeout check,
//! cleanup, the standalone job consumer, the webhook sender) run only on the holder of the
//! leader lease ([`crate::store::coordination`]). Every Manager serves workers, the API and
//! the dashboard. docs/operations.md, "Several Managers on one MongoDB".
//!
//! [`run`] is the daemon's side: it takes or renews the lease every third of
//! `leader_lease`, starts the singleton loops when this Manager gets it, and stops them at
//! once when it loses it: when another Manager holds it, or when no renewal succeeded
//! before this Manager's own view of the lease ran out. That view is kept on monotonic
//! time from when each successful attempt was *sent*, minus a tenth of the lease as a
//! margin, so it ends before the store (which counts from when it received the attempt,
//! on its own clock) lets anyone else take over. On a clean stop the loops are stopped and
//! the lease is released, so another Manager takes over at once; after `kill -9` it
//! expires and is taken within `leader_lease`.
//!
//! The embedded store is never shared (its data-directory lock), so there this Manager
//! leads from the start, without a lease.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::manager::Manager;
use crate::store::{Lease, LEADER_LEASE};

/// `leader_lease` unless configured.
pub const DEFAULT_LEADER_LEASE: Duration = Duration::from_secs(10);
/// The shortest `leader_lease` accepted: renewals every third of it must fit a round trip
/// to a loaded database.
pub const MIN_LEADER_LEASE: Duration = Duration::from_secs(1);
/// The longest `leader_lease` accepted: a dead leader's work waits this long.
pub const MAX_LEADER_LEASE: Duration = Duration::from_secs(600);
/// The longest `instance_name`, in characters.
pub const MAX_INSTANCE_NAME: usize = 100;

/// `leader_lease` as configured, checked.
pub fn check_lease(lease: Duration) -> Result<Duration, String> {
    if lease < MIN_LEADER_LEASE || lease > MAX_LEADER_LEASE {
        return Err(format!(
            "leader_lease: {} is out of range: use between {} and {} (default {}); a leader \
             that dies is replaced within it, and it is renewed every third of it",
            crate::config::format_duration(lease),
            crate::config::format_duration(MIN_LEADER_LEASE),
            crate::config::format_duration(MAX_LEADER_LEASE),
            crate::config::format_duration(DEFAULT_LEADER_LEASE),
        ));
    }
    Ok(lease)
}

/// `instance_name` as configured, checked: empty (a generated name), or up to
/// [`MAX_INSTANCE_NAME`] characters with no control characters; surrounding spaces are
/// removed.
pub fn check_instance_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.chars().count() > MAX_INSTANCE_NAME {
        return Err(format!(
            "instance_name: too long ({} characters); use at most {MAX_INSTANCE_NAME}, or leave \
             it empty for host name, process id and a random suffix",
            name.chars().count()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(
            "instance_name: contains a control character; use a plain name such as the host name"
                .into(),
        );
    }
    Ok(name.to_string())
}

/// A name for this process when `instance_name` is empty: `<host>-<pid>-<4 hex digits>`.
pub fn generated_instance_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host: String = host
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_INSTANCE_NAME - 16)
        .collect();
    format!(
        "{}-{}-{:04x}",
        if host.is_empty() { "manager" } else { &host },
        std::process::id(),
        rand::random::<u16>()
    )
}

/// The lease holder of a Manager: its instance name and its process's token,
/// `<instance name>#<token>`. The instance name alone is not enough: two Managers given
/// the same `instance_name` (a copied configuration file) would both renew "their" lease
/// and both lead.
pub fn lease_holder(instance: &str, token: &str) -> String {
    format!("{instance}#{token}")
}

/// The instance name in a lease holder ([`lease_holder`]): the part before the last `#`,
/// or all of it (a lease taken by a version without tokens).
pub fn holder_instance(holder: &str) -> &str {
    holder.rsplit_once('#').map_or(holder, |(name, _)| name)
}

/// What this Manager knows about leadership: whether it leads, the lease as last seen, and
/// whether its singleton loops run. Read by `/metrics`, the dashboard and `/healthz`.
#[derive(Debug)]
pub struct Leadership {
    /// This process's name when `instance_name` is empty.
    generated_name: String,
    /// This process's random token: the lease holder is `<instance name>#<token>`
    /// ([`lease_holder`]), so two Managers given the same `instance_name` are still two
    /// holders.
    token: String,
    leading: AtomicBool,
    /// Sets of singleton loops not finished yet (started, stop not complete).
    running: Arc<AtomicUsize>,
    last: Mutex<Option<Lease>>,
    /// The last lease attempt failed (the store did not answer): its error.
    store_error: Mutex<Option<String>>,
    changes: watch::Sender<bool>,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership {
            generated_name: generated_instance_name(),
            token: format!("{:08x}", rand::random::<u32>()),
            leading: AtomicBool::new(false),
            running: Arc::new(AtomicUsize::new(0)),
            last: Mutex::new(None),
            store_error: Mutex::new(None),
            changes: watch::channel(false).0,
        }
    }
}

impl Leadership {
    pub(crate) fn generated_name(&self) -> &str {
        &self.generated_name
    }

    /// This process's random token (see [`lease_holder`]).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether this Manager leads now (runs, or is about to run, the singleton loops).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Whether singleton loops started by this Manager are still running (they finish
    /// shortly after it stops leading: a push in progress completes).
    pub fn loops_running(&self) -> bool {
        self.running.load(Ordering::Acquire) > 0
    }

    /// The lease as this Manager last saw it (`None` before the first answer, and with the
    /// embedded store).
    pub fn last_seen(&self) -> Option<Lease> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The error of the last lease attempt, when it failed.
    pub fn store_error(&self) -> Option<String> {
        self.store_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A receiver that sees every change of [`Leadership::is_leader`].
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
        self.changes.send_replace(leading);
    }

    fn seen(&self, lease: Lease) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
        *self.store_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn failed(&self, error: String) {
        *self.store_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

/// This Manager's own view of its lease, on monotonic time (pure; the daemon's [`run`]
/// feeds it the answers).
#[derive(Debug)]
pub struct LeaseView {
    duration: Duration,
    valid_until: Option<Instant>,
}

impl LeaseView {
    pub fn new(duration: Duration) -> LeaseView {
        LeaseView {
            duration,
            valid_until: None,
        }
    }

    /// How often the lease is asked for: a third of it.
    pub fn period(&self) -> Duration {
        self.duration / 3
    }

    /// The part of the lease this Manager does not count on: a tenth.
    pub fn margin(&self) -> Duration {
        self.duration / 10
    }

    /// Record the answer to an attempt sent at `sent`; true when `me` holds the lease.
    pub fn on_answer(&mut self, sent: Instant, lease: &Lease, me: &str) -> bool {
        let held = lease.holder == me
            && !lease.released
            && match (lease.expires, lease.store_now) {
                (Some(expires), Some(now)) => expires > now,
                (None, _) => true,
                (Some(_), None) => true,
            };
        self.valid_until = held.then(|| sent + self.duration - self.margin());
        held
    }

    /// Forget the lease (released, or given up).
    pub fn clear(&mut self) {
        self.valid_until = None;
    }

    /// Until when this Manager may act as the leader without another successful renewal.
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }

    /// Whether this Manager holds the lease at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|until| now < until)
    }

    /// When to ask next after an attempt sent at `sent` that got `answer`: a third of the
    /// lease later; a follower that saw another's lease about to expire asks right after
    /// it does (so a dead leader is replaced within the lease, not the lease plus a
    /// period).
    pub fn next_attempt(&self, sent: Instant, answer: Option<&Lease>) -> Instant {
        let regular = sent + self.period();
        if self.valid_until.is_some() {
            return regular;
        }
        match answer
            .and_then(Lease::remaining)
            .and_then(|r| r.to_std().ok())
        {
            Some(left) => regular.min(sent + left + Duration::from_millis(20)),
            None => regular,
        }
    }
}

/// One set of running singleton loops.
struct Singletons {
    stop_watch: watch::Sender<bool>,
    stop_token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Counts a set of singleton loops as running while it lives.
struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Singletons {
    fn start(manager: &Arc<Manager>) -> Singletons {
        let (stop_watch, stopped) = watch::channel(false);
        let stop_token = CancellationToken::new();
        let running = manager.leadership().running.clone();
        running.fetch_add(1, Ordering::AcqRel);
        let guard = RunningGuard(running);
        let (m, token) = (manager.clone(), stop_token.clone());
        let task = tokio::spawn(async move {
            let _guard = guard;
            tokio::join!(
                crate::maintenance::run_singleton_loops(m.clone(), stopped.clone()),
                // Returns at once in upstream mode (the pusher drains the outbox there).
                crate::jobs::consumer::run(m.clone(), stopped),
                // Returns at once in standalone mode.
                crate::upstream::run(m, token),
            );
        });
        Singletons {
            stop_watch,
            stop_token,
            task,
        }
    }

    /// Tell the loops to stop (they finish what they are doing: a push in progress
    /// completes).
    fn stop(&self) {
        let _ = self.stop_watch.send(true);
        self.stop_token.cancel();
    }
}

/// Run the leader election and the singleton loops until `shutdown`, then stop the loops
/// and release the lease. See the module documentation.
pub async fn run(manager: Arc<Manager>, shutdown: CancellationToken) {
    let store = manager.store().clone();
    let leadership = manager.leadership();
    let me = manager.lease_holder();
    if !store.coordination_shared() {
        leadership.set_leading(true);
        let loops = Singletons::start(&manager);
        shutdown.cancelled().await;
        loops.stop();
        leadership.set_leading(false);
        if let Err(e) = loops.task.await {
            tracing::error!("the background loops ended abnormally: {e}");
        }
        return;
    }
    let duration = manager.config().leader_lease;
    let mut view = LeaseView::new(duration);
    let mut loops: Option<Singletons> = None;
    // Loops told to stop that may still be finishing; new ones start only after them.
    let mut stopping: Vec<Singletons> = Vec::new();
    let mut next = Instant::now();
    let mut failing = false;
    tracing::info!(
        instance = %manager.instance_name(),
        holder = %me,
        "several Managers may share this database: the singleton loops run on the holder of the leader lease ({})",
        crate::config::format_duration(duration)
    );
    'election: loop {
        // Wait for the next attempt; a leader whose view runs out meanwhile steps down.
        loop {
            let until = view.valid_until().filter(|_| loops.is_some());
            tokio::select! {
                _ = shutdown.cancelled() => break 'election,
                _ = tokio::time::sleep_until(next) => break,
                _ = sleep_until_opt(until) => {
                    step_down(leadership, &mut loops, &mut stopping, &mut view,
                        "no renewal of the leader lease succeeded in time");
                }
            }
        }
        let sent = Instant::now();
        // A slow answer is waited for up to a whole lease (a leader steps down meanwhile
        // when its view runs out, below); only then is the attempt given up.
        let attempt =
            tokio::time::timeout(duration, store.lease_acquire(LEADER_LEASE, &me, duration));
        tokio::pin!(attempt);
        let answer = loop {
            let until = view.valid_until().filter(|_| loops.is_some());
            tokio::select! {
                answer = &mut attempt => break answer,
                _ = sleep_until_opt(until) => {
                    step_down(leadership, &mut loops, &mut stopping, &mut view,
                        "no renewal of the leader lease succeeded in time");
                }
            }
        };
        let answer = match answer {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the store did not answer within {}",
                crate::config::format_duration(duration)
            )),
        };
        match answer {
            Ok(lease) => {
                if failing {
                    tracing::info!("the leader lease can be read again");
                    failing = false;
                }
                let held = view.on_answer(sent, &lease, &me);
                leadership.seen(lease.clone());
                if held && view.holds(Instant::now()) {
                    stopping.retain(|s| !s.task.is_finished());
                    if loops.is_none() && stopping.is_empty() {
                        tracing::info!(
                            holder = %me,
                            term = lease.term,
                            "this Manager leads: starting the singleton loops"
                        );
                        leadership.set_leading(true);
                        loops = Some(Singletons::start(&manager));
                    }
                } else if !held && loops.is_some() {
                    let why = format!("the leader lease is held by {}", lease.holder);
                    step_down(leadership, &mut loops, &mut stopping, &mut view, &why);
                }
                next = view.next_attempt(sent, Some(&lease));
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot take or renew the leader lease: {e}");
                    failing = true;
                }
                leadership.failed(e);
                next = view.next_attempt(sent, None);
            }
        }
    }
    // A clean stop: the loops first (a push in progress completes), then the lease, so
    // that the next leader never overlaps with this one.
    let held = loops.is_some();
    if let Some(l) = loops.take() {
        l.stop();
        stopping.push(l);
    }
    leadership.set_leading(false);
    for s in stopping {
        match tokio::time::timeout(duration, s.task).await {
            Ok(Err(e)) => tracing::error!("the singleton loops ended abnormally: {e}"),
            Ok(Ok(())) => {}
            Err(_) => {
                // Still busy: keep the lease; it expires by itself.
                tracing::warn!(
                    "the singleton loops did not stop within {}; the leader lease is left to expire",
                    crate::config::format_duration(duration)
                );
                return;
            }
        }
    }
    if held {
        match tokio::time::timeout(duration, store.lease_release(LEADER_LEASE, &me)).await {
            Ok(Ok(true)) => tracing::info!(holder = %me, "released the leader lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!("cannot release the leader lease (it expires by itself): {e}")
            }
            Err(_) => tracing::warn!("releasing the leader lease timed out (it expires by itself)"),
        }
    }
}

async fn sleep_until_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn step_down(
    leadership: &Leadership,
    loops: &mut Option<Singletons>,
    stopping: &mut Vec<Singletons>,
    view: &mut LeaseView,
    why: &str,
) {
    view.clear();
    if let Some(l) = loops.take() {
        l.stop();
        stopping.push(l);
        tracing::warn!("this Manager no longer leads ({why}): stopping the singleton loops");
    }
    leadership.set_leading(false);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct HolderLabels {
    holder: String,
}

/// The leadership gauges of a scrape (docs/metrics.md): `flamenco_leader{instance}` (1
/// while this Manager leads), `flamenco_leader_holder_info{holder}` and
/// `flamenco_leader_term` (the lease as this Manager last saw it; absent before the first
/// answer). Read from memory: a scrape makes no store call for them.
pub fn register_metrics(manager: &Manager, reg: &mut prometheus_client::registry::Registry) {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let status = manager.leader_status();
    let leader = Family::<InstanceLabels, Gauge>::default();
    leader
        .get_or_create(&InstanceLabels {
            instance: status.instance,
        })
        .set(i64::from(status.leading));
    reg.register(
        "flamenco_leader",
        "1 while this Manager (instance) holds the leader lease and runs the once-per-site loops, else 0",
        leader,
    );
    if let Some(holder) = status.holder {
        reg.register(
            "flamenco_leader_holder",
            "The Manager holding the leader lease, as this Manager last saw it; always 1",
            prometheus_client::metrics::info::Info::new(HolderLabels { holder }),
        );
    }
    if let Some(term) = status.term {
        let g = Gauge::<i64>::default();
        g.set(term);
        reg.register(
            "flamenco_leader_term",
            "The leader lease's term: it grows by one each time another Manager takes the lease",
            g,
        );
    }
}

/// This Manager's view of leadership for the dashboard (`/api/status`'s `leader`):
/// `instance` (this Manager), `lease_holder` (this Manager's name in the lease,
/// [`lease_holder`]), `leading`, `shared` (several Managers may share the store),
/// `holder`, `term` and `expires` (the lease as last seen; `null` when unknown; `holder`
/// is a lease holder, `<instance>#<token>`, with a shared store, else `instance`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LeaderStatus {
    pub instance: String,
    pub lease_holder: String,
    pub leading: bool,
    pub shared: bool,
    pub holder: Option<String>,
    pub term: Option<i64>,
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

impl Manager {
    /// See [`LeaderStatus`]; from memory, no store call.
    pub fn leader_status(&self) -> LeaderStatus {
        let shared = self.store().coordination_shared();
        let leading = self.leadership().is_leader();
        let lease = if shared {
            self.leadership()
                .last_seen()
                .filter(|l| !l.released && l.store_now.is_none_or(|now| l.is_valid(now)))
        } else {
            None
        };
        LeaderStatus {
            instance: self.instance_name().to_string(),
            lease_holder: self.lease_holder(),
            leading,
            shared,
            holder: match &lease {
                Some(l) => Some(l.holder.clone()),
                None if !shared => Some(self.instance_name().to_string()),
                None => None,
            },
            term: lease.as_ref().map(|l| l.term),
            expires: lease.and_then(|l| l.expires),
        }
    }
}

/// The current holder of the leader lease as the store has it, for `flamenco config check
/// --connect`: one line, e.g. `leader: host-12-ab12 (term 3), expires in 8.2s`.
pub async fn describe_holder(manager: &Manager) -> Result<String, crate::store::StoreError> {
    if !manager.store().coordination_shared() {
        return Ok("leader: not shared (the embedded store has one Manager, which leads)".into());
    }
    Ok(match manager.store().lease_current(LEADER_LEASE).await? {
        None => "leader: nobody has taken the leader lease yet".into(),
        Some(lease) => {
            let valid = lease.store_now.is_none_or(|now| lease.is_valid(now));
            if valid {
                let left = lease
                    .remaining()
                    .and_then(|r| r.to_std().ok())
                    .map(|r| format!(", expires in {:.1}s", r.as_secs_f64()))
                    .unwrap_or_default();
                format!(
                    "leader: {} (term {}){left}; lease holder {}",
                    holder_instance(&lease.holder),
                    lease.term,
                    lease.holder
                )
            } else if lease.released {
                format!(
                    "leader: none (released by {}, term {})",
                    holder_instance(&lease.holder),
                    lease.term
                )
            } else {
                format!(
                    "leader: none (the lease of {} expired, term {})",
                    holder_instance(&lease.holder),
                    lease.term
                )
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn lease(holder: &str, left_ms: i64) -> Lease {
        let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        Lease {
            name: LEADER_LEASE.into(),
            holder: holder.into(),
            acquired: Some(now),
            expires: Some(now + chrono::Duration::milliseconds(left_ms)),
            term: 1,
            store_now: Some(now),
            released: false,
        }
    }

    #[test]
    fn a_held_lease_counts_from_when_the_attempt_was_sent_minus_a_margin() {
        let mut v = LeaseView::new(Duration::from_secs(10));
        let sent = Instant::now();
        assert!(v.on_answer(sent, &lease("me", 10_000), "me"));
        assert_eq!(v.valid_until(), Some(sent + Duration::from_secs(9)));
        assert!(v.holds(sent + Duration::from_millis(8_999)));
        assert!(!v.holds(sent + Duration::from_secs(9)));
        // Renewals every third of the lease: two chances before the view runs out.
        assert_eq!(
            v.next_attempt(sent, Some(&lease("me", 10_000))),
            sent + v.period()
        );
        assert!(sent + 2 * v.period() < v.valid_until().expect("held"));
    }

    #[test]
    fn another_holder_or_a_released_or_expired_lease_is_not_held() {
        let mut v = LeaseView::new(Duration::from_secs(10));
        let sent = Instant::now();
        assert!(v.on_answer(sent, &lease("me", 10_000), "me"));
        assert!(!v.on_answer(sent, &lease("other", 10_000), "me"));
        assert_eq!(
            v.valid_until(),
            None,
            "an answer naming another ends the view"
        );
        let mut released = lease("me", 10_000);
        released.released = true;
        assert!(!v.on_answer(sent, &released, "me"));
        assert!(!v.on_answer(sent, &lease("me", 0), "me"));
    }

    #[test]
    fn a_follower_asks_again_right_after_the_leaders_lease_expires() {
        let v = LeaseView::new(Duration::from_secs(9));
        let sent = Instant::now();
        // Another's lease with 1.5 s left: ask at 1.52 s, not the regular 3 s.
        assert_eq!(
            v.next_attempt(sent, Some(&lease("other", 1_500))),
            sent + Duration::from_millis(1_520)
        );
        // With 8 s left the regular period comes first.
        assert_eq!(
            v.next_attempt(sent, Some(&lease("other", 8_000))),
            sent + Duration::from_secs(3)
        );
        // No answer (the store failed): the regular period.
        assert_eq!(v.next_attempt(sent, None), sent + Duration::from_secs(3));
    }

    #[test]
    fn a_lease_that_never_expires_is_held() {
        let mut v = LeaseView::new(Duration::from_secs(10));
        let mut forever = lease("me", 0);
        forever.expires = None;
        assert!(v.on_answer(Instant::now(), &forever, "me"));
    }

    #[test]
    fn a_lease_holder_is_the_instance_name_and_a_token() {
        let holder = lease_holder("render#1", "0badcafe");
        assert_eq!(holder, "render#1#0badcafe");
        assert_eq!(holder_instance(&holder), "render#1");
        assert_eq!(holder_instance("old-style"), "old-style");
        let (a, b) = (Leadership::default(), Leadership::default());
        assert_eq!(a.token().len(), 8);
        assert!(a.token().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.token(), b.token(), "a token per process (random)");
    }

    #[test]
    fn lease_and_instance_name_settings_are_checked() {
        assert_eq!(
            check_lease(Duration::from_secs(10)),
            Ok(Duration::from_secs(10))
        );
        let err = check_lease(Duration::from_millis(500)).expect_err("too short");
        assert!(err.contains("leader_lease: 500ms is out of range"), "{err}");
        assert!(check_lease(Duration::from_secs(3600)).is_err());
        assert_eq!(check_instance_name("  m1 "), Ok("m1".into()));
        assert_eq!(check_instance_name(""), Ok(String::new()));
        assert!(check_instance_name("a\nb").is_err());
        assert!(check_instance_name(&"x".repeat(101)).is_err());
        let generated = generated_instance_name();
        assert!(
            generated.contains(&format!("-{}-", std::process::id())),
            "{generated}"
        );
        assert!(check_instance_name(&generated).is_ok());
    }
}
