//! Which connections are served, so that no client can starve the workers
//! (docs/security.md, "Connection starvation").
//!
//! Every accepted connection is sorted by its client address ([`ClientKey`]: an IPv4
//! address, or an IPv6 /64, which one client usually owns whole):
//!
//! * **worker**: a worker has authenticated from this address (since this process started,
//!   or, seeded at start, a signed-on worker's last known address). Such connections may use
//!   every slot of `max_connections`, including the `reserved_worker_connections`.
//! * **other**: everything else (dashboards, `/imagewatch`, registrations, slow or hostile
//!   clients). Together they hold at most `max_connections − reserved_worker_connections`,
//!   and one address at most `max_connections_per_ip`.
//!
//! A connection over its class's limit is closed at once, with a `503` and `Retry-After`
//! written first on plain HTTP (it cannot be sent before a TLS handshake). Nothing waits:
//! a hostile crowd of many addresses fills the "other" slots and is refused from then on,
//! while the reserve stays free for workers. A connection of class "other" that
//! authenticates as a worker moves to class "worker" at once, and its address with it.
//!
//! [`Admission::admit`] hands out a [`ConnectionSlot`] that gives the place back when
//! dropped; the server puts a [`ConnectionHandle`] in each request's extensions, and
//! [`crate::auth::AuthedWorker`] calls [`ConnectionHandle::worker_authenticated`]. The
//! counts are the `flamenco_http_connections{class}` gauges (docs/metrics.md).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flamenco_core::metrics::{connection_class, Metrics};
use prometheus_client::metrics::gauge::Gauge;

/// How many worker addresses are remembered; past it the longest unseen is forgotten.
pub const MAX_WORKER_ADDRESSES: usize = 65_536;

/// `Retry-After` of a refused connection, in seconds.
pub const REFUSED_RETRY_AFTER_SECS: u64 = 10;

/// At most one warning about refused connections per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A client address as the limits count it: an IPv4 address (IPv4-mapped IPv6 included),
/// or the /64 prefix of an IPv6 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn new(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Why a connection was refused (the `reason` label of
/// `flamenco_http_connections_refused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address already has `max_connections_per_ip` connections open.
    PerIp,
    /// The slots not reserved for workers are all taken.
    OthersFull,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::PerIp => "per_ip",
            Refused::OthersFull => "others_full",
        }
    }

    /// The plain-HTTP answer written before closing.
    pub fn http_response(self) -> Vec<u8> {
        let message = match self {
            Refused::PerIp => "too many connections from your address (the Manager's max_connections_per_ip); close some, or retry later",
            Refused::OthersFull => "the Manager is busy: the connections not reserved for workers are all in use (max_connections, reserved_worker_connections); retry later",
        };
        let body = serde_json::json!({ "error": message }).to_string();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: {REFUSED_RETRY_AFTER_SECS}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// The admission limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionLimits {
    /// All connections together (the accept loop waits when they are all open).
    pub max_connections: usize,
    /// Slots only worker addresses may use.
    pub reserved_worker_connections: usize,
    /// Connections of class "other" from one address; 0: no limit.
    pub max_connections_per_ip: usize,
}

/// The connection counts and worker addresses of one listener.
pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
    workers_gauge: Gauge,
    others_gauge: Gauge,
    metrics: Option<Metrics>,
}

#[derive(Default)]
struct State {
    /// Open connections of class "other".
    others: usize,
    /// Open connections of class "other" per address (no entry when 0).
    others_by_key: HashMap<ClientKey, usize>,
    /// Addresses where a worker authenticated, with when it last did.
    worker_keys: HashMap<ClientKey, Instant>,
    refusals: RefusalLog,
}

#[derive(Default)]
struct RefusalLog {
    last_logged: Option<Instant>,
    per_ip: u64,
    others_full: u64,
}

impl Admission {
    /// Limits for one listener; the gauges and counters go to `metrics` when given (the
    /// main listener), else to private gauges (the redirect listener, tests).
    pub fn new(limits: AdmissionLimits, metrics: Option<Metrics>) -> Arc<Admission> {
        let (workers_gauge, others_gauge) = match &metrics {
            Some(m) => (
                m.connection_gauge(connection_class::WORKER),
                m.connection_gauge(connection_class::OTHER),
            ),
            None => (Gauge::default(), Gauge::default()),
        };
        Arc::new(Admission {
            limits: AdmissionLimits {
                max_connections: limits.max_connections.max(1),
                // The configuration checks this; a programmatic mistake gets the default.
                reserved_worker_connections: if limits.reserved_worker_connections
                    < limits.max_connections.max(1)
                {
                    limits.reserved_worker_connections
                } else {
                    limits.max_connections.max(1) / 4
                },
                max_connections_per_ip: limits.max_connections_per_ip,
            },
            state: Mutex::new(State::default()),
            workers_gauge,
            others_gauge,
            metrics,
        })
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// The most connections of class "other" open at once.
    pub fn others_max(&self) -> usize {
        self.limits.max_connections - self.limits.reserved_worker_connections
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under a panic elsewhere: every update is a few
        // integer changes done before anything that could panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for a new connection from `ip`, or why there is none. The caller has
    /// already checked `max_connections` (the accept loop's semaphore).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let key = ClientKey::new(ip);
        let mut state = self.state();
        if state.worker_keys.contains_key(&key) {
            drop(state);
            self.workers_gauge.inc();
            return Ok(ConnectionSlot::new(self.clone(), key, true));
        }
        let refused = if self.limits.max_connections_per_ip > 0
            && state.others_by_key.get(&key).copied().unwrap_or(0)
                >= self.limits.max_connections_per_ip
        {
            Some(Refused::PerIp)
        } else if state.others >= self.others_max() {
            Some(Refused::OthersFull)
        } else {
            None
        };
        if let Some(reason) = refused {
            self.note_refusal(&mut state, reason);
            drop(state);
            if let Some(m) = &self.metrics {
                m.record_connection_refused(reason.label());
            }
            return Err(reason);
        }
        state.others += 1;
        *state.others_by_key.entry(key).or_default() += 1;
        drop(state);
        self.others_gauge.inc();
        Ok(ConnectionSlot::new(self.clone(), key, false))
    }

    /// Count a refusal, and warn about the refusals so far at most once a minute.
    fn note_refusal(&self, state: &mut State, reason: Refused) {
        let log = &mut state.refusals;
        match reason {
            Refused::PerIp => log.per_ip += 1,
            Refused::OthersFull => log.others_full += 1,
        }
        let now = Instant::now();
        if log
            .last_logged
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            "refusing connections (503): {} over max_connections_per_ip ({}), {} while the {} connections not reserved for workers were all in use; \
             addresses with a signed-on worker keep {} reserved slots. Counts since the last such message; at most one a minute",
            log.per_ip,
            self.limits.max_connections_per_ip,
            log.others_full,
            self.others_max(),
            self.limits.reserved_worker_connections,
        );
        *log = RefusalLog {
            last_logged: Some(now),
            per_ip: 0,
            others_full: 0,
        };
    }

    /// Remember `ip` as a worker's address: its connections may use the reserve.
    pub fn trust(&self, ip: IpAddr) {
        let key = ClientKey::new(ip);
        let mut state = self.state();
        Self::trust_key(&mut state, key);
    }

    fn trust_key(state: &mut State, key: ClientKey) {
        let now = Instant::now();
        if state.worker_keys.len() >= MAX_WORKER_ADDRESSES && !state.worker_keys.contains_key(&key)
        {
            // Forget the address unseen the longest (rare: a scan over the map).
            if let Some(oldest) = state
                .worker_keys
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| *k)
            {
                state.worker_keys.remove(&oldest);
            }
        }
        state.worker_keys.insert(key, now);
    }

    /// Whether connections from `ip` count as a worker's.
    pub fn is_worker_address(&self, ip: IpAddr) -> bool {
        self.state().worker_keys.contains_key(&ClientKey::new(ip))
    }

    /// Open connections, (worker, other).
    pub fn open(&self) -> (usize, usize) {
        let others = self.state().others;
        let workers = usize::try_from(self.workers_gauge.get()).unwrap_or(0);
        (workers, others)
    }

    /// A connection of class "other" from `key` became a worker's.
    fn promote(&self, key: ClientKey) {
        let mut state = self.state();
        Self::release_other(&mut state, key);
        Self::trust_key(&mut state, key);
        drop(state);
        self.others_gauge.dec();
        self.workers_gauge.inc();
    }

    fn release_other(state: &mut State, key: ClientKey) {
        state.others = state.others.saturating_sub(1);
        if let Some(n) = state.others_by_key.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                state.others_by_key.remove(&key);
            }
        }
    }

    fn release(&self, key: ClientKey, worker: bool) {
        if worker {
            self.workers_gauge.dec();
        } else {
            Self::release_other(&mut self.state(), key);
            self.others_gauge.dec();
        }
    }
}

/// One admitted connection's place; given back when dropped (when the connection ends).
pub struct ConnectionSlot {
    handle: ConnectionHandle,
}

impl ConnectionSlot {
    fn new(admission: Arc<Admission>, key: ClientKey, worker: bool) -> ConnectionSlot {
        ConnectionSlot {
            handle: ConnectionHandle(Arc::new(SlotState {
                admission,
                key,
                worker: AtomicBool::new(worker),
            })),
        }
    }

    /// The handle the connection's requests carry.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle.clone()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let state = &self.handle.0;
        // Swap so that a promotion racing with the end of the connection counts once.
        let worker = state.worker.swap(true, Ordering::AcqRel);
        state.admission.release(state.key, worker);
    }
}

struct SlotState {
    admission: Arc<Admission>,
    key: ClientKey,
    worker: AtomicBool,
}

/// A request's view of its connection (a request extension set by the server).
#[derive(Clone)]
pub struct ConnectionHandle(Arc<SlotState>);

impl ConnectionHandle {
    /// A worker authenticated on this connection: the connection and its address now count
    /// as a worker's. Costs one atomic load when it already does.
    pub fn worker_authenticated(&self) {
        let state = &self.0;
        if state.worker.load(Ordering::Acquire) {
            return;
        }
        if state
            .worker
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            state.admission.promote(state.key);
        }
    }

    /// Whether the connection counts as a worker's.
    pub fn is_worker(&self) -> bool {
        self.0.worker.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn admission(max: usize, reserved: usize, per_ip: usize) -> Arc<Admission> {
        Admission::new(
            AdmissionLimits {
                max_connections: max,
                reserved_worker_connections: reserved,
                max_connections_per_ip: per_ip,
            },
            None,
        )
    }

    #[test]
    fn keys_group_an_ipv6_64_and_unmap_ipv4() {
        assert_eq!(
            ClientKey::new(ip("2001:db8:1:2:aaaa::1")),
            ClientKey::new(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            ClientKey::new(ip("2001:db8:1:2::1")),
            ClientKey::new(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientKey::new(ip("::ffff:10.0.0.7")),
            ClientKey::new(ip("10.0.0.7"))
        );
        assert_eq!(
            ClientKey::new(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn others_are_capped_per_address_and_in_total_and_the_reserve_stays_for_workers() {
        let a = admission(6, 2, 2);
        let mut held = Vec::new();
        held.push(a.admit(ip("10.0.0.1")).expect("first"));
        held.push(a.admit(ip("10.0.0.1")).expect("second"));
        assert_eq!(a.admit(ip("10.0.0.1")).err(), Some(Refused::PerIp));
        held.push(a.admit(ip("10.0.0.2")).expect("other address"));
        held.push(a.admit(ip("10.0.0.3")).expect("fourth other"));
        // 4 of 6 are others: the remaining 2 are the workers' reserve.
        assert_eq!(a.admit(ip("10.0.0.4")).err(), Some(Refused::OthersFull));
        a.trust(ip("10.0.0.9"));
        held.push(
            a.admit(ip("10.0.0.9"))
                .expect("a worker address uses the reserve"),
        );
        assert!(held.last().expect("slot").handle().is_worker());
        assert_eq!(a.open(), (1, 4));
        held.clear();
        assert_eq!(a.open(), (0, 0));
        let again = a.admit(ip("10.0.0.4")).expect("room again");
        drop(again);
        assert_eq!(a.state().others_by_key.len(), 0, "no empty entries kept");
    }

    #[test]
    fn authenticating_moves_a_connection_and_its_address_to_the_workers() {
        let a = admission(4, 1, 0);
        let slot = a.admit(ip("10.0.0.5")).expect("admitted");
        assert!(!slot.handle().is_worker());
        assert_eq!(a.open(), (0, 1));
        slot.handle().worker_authenticated();
        slot.handle().worker_authenticated();
        assert_eq!(a.open(), (1, 0));
        assert!(a.is_worker_address(ip("10.0.0.5")));
        let next = a.admit(ip("10.0.0.5")).expect("admitted");
        assert!(next.handle().is_worker());
        drop(slot);
        drop(next);
        assert_eq!(a.open(), (0, 0));
    }

    #[test]
    fn refusals_answer_503_with_retry_after() {
        for reason in [Refused::PerIp, Refused::OthersFull] {
            let text = String::from_utf8(reason.http_response()).expect("utf-8");
            assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
            assert!(text.contains("\r\nRetry-After: 10\r\n"), "{text}");
            let body = text.split("\r\n\r\n").nth(1).expect("body");
            let json: serde_json::Value = serde_json::from_str(body).expect("json");
            assert!(json["error"]
                .as_str()
                .expect("error")
                .contains("max_connections"));
        }
    }

    #[test]
    fn the_worker_address_memory_is_bounded() {
        let a = admission(4, 1, 0);
        for n in 0..(MAX_WORKER_ADDRESSES as u32 + 10) {
            a.trust(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)));
        }
        assert_eq!(a.state().worker_keys.len(), MAX_WORKER_ADDRESSES);
    }
}
