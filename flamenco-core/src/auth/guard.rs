//! Keeping unverified authentication work from crowding out verified workers.
//!
//! * **bcrypt slots**: every bcrypt run for a request that is not verified yet (a
//!   registration, the first check of a worker that has no fast hash) waits for one of a
//!   few slots ([`AuthLimits::bcrypt_slots`], by default half the CPU cores, at least one).
//!   bcrypt takes 50–100 ms of CPU, so a flood of such requests can keep at most those
//!   cores busy; the others stay free for the workers whose secrets verify in
//!   microseconds. A request that waits longer than [`AuthLimits::bcrypt_wait`] for a slot
//!   is refused with 429.
//! * **Unverified attempts** (wrong secrets, unknown worker ids, and checks that need
//!   bcrypt) are counted per worker id and per client address in token buckets
//!   (governor's GCRA). Past the bucket, the answer is 429 with `Retry-After`, before any
//!   bcrypt. A right secret that verifies without bcrypt (the in-memory cache or the
//!   stored fast hash) is never counted nor refused, so a flood of wrong secrets for a
//!   worker does not lock that worker out.
//!
//! Client addresses are keyed as IPv4 addresses or IPv6 /64 networks (one host usually
//! owns a whole /64).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::model::ObjectId;

/// The limits of an [`AuthGuard`].
#[derive(Clone, Debug)]
pub struct AuthLimits {
    /// Unverified attempts one worker id may take at once …
    pub per_worker_burst: u32,
    /// … and then per minute.
    pub per_worker_per_minute: u32,
    /// Unverified attempts one client address may make at once …
    pub per_client_burst: u32,
    /// … and then per minute.
    pub per_client_per_minute: u32,
    /// bcrypt runs at once for unverified requests.
    pub bcrypt_slots: usize,
    /// How long a request waits for a bcrypt slot before it is refused with 429.
    pub bcrypt_wait: Duration,
}

impl Default for AuthLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        AuthLimits {
            per_worker_burst: 10,
            per_worker_per_minute: 10,
            per_client_burst: 60,
            per_client_per_minute: 120,
            bcrypt_slots: (cores / 2).max(1),
            bcrypt_wait: Duration::from_secs(10),
        }
    }
}

/// An attempt refused for now: too many unverified attempts, or no bcrypt slot in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// When to try again.
    pub retry_after: Duration,
    /// What was limited, for the 429's body.
    pub message: String,
}

/// The bcrypt slots and the unverified-attempt buckets of one Manager.
pub struct AuthGuard {
    limits: AuthLimits,
    slots: Semaphore,
    per_worker: DefaultKeyedRateLimiter<ObjectId>,
    per_client: DefaultKeyedRateLimiter<IpAddr>,
    counted: AtomicU64,
}

impl std::fmt::Debug for AuthGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGuard")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for AuthGuard {
    fn default() -> Self {
        AuthGuard::new(AuthLimits::default())
    }
}

/// Drop bucket entries that are full again every this many counted attempts, so a flood
/// from many addresses does not grow the maps without bound.
const PRUNE_EVERY: u64 = 1024;

fn quota(burst: u32, per_minute: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

/// The key a client address is counted under: IPv4 (IPv4-mapped IPv6 included) as is,
/// IPv6 as its /64 network.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl AuthGuard {
    pub fn new(limits: AuthLimits) -> AuthGuard {
        AuthGuard {
            slots: Semaphore::new(limits.bcrypt_slots.max(1)),
            per_worker: DefaultKeyedRateLimiter::keyed(quota(
                limits.per_worker_burst,
                limits.per_worker_per_minute,
            )),
            per_client: DefaultKeyedRateLimiter::keyed(quota(
                limits.per_client_burst,
                limits.per_client_per_minute,
            )),
            limits,
            counted: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> &AuthLimits {
        &self.limits
    }

    /// Count one unverified attempt of `client` for `worker` (`None` when the id names no
    /// worker: then only the client is counted). `Err` when either is over its bucket; the
    /// attempt must then be refused without further work.
    pub fn count_unverified(
        &self,
        worker: Option<ObjectId>,
        client: Option<IpAddr>,
    ) -> Result<(), Throttled> {
        if self.counted.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.per_worker.retain_recent();
            self.per_client.retain_recent();
            self.per_worker.shrink_to_fit();
            self.per_client.shrink_to_fit();
        }
        let now = self.per_client.clock().now();
        if let Some(ip) = client {
            if let Err(not_until) = self.per_client.check_key(&client_key(ip)) {
                let wait = not_until.wait_time_from(now);
                return Err(Throttled {
                    retry_after: wait,
                    message: format!(
                        "too many failed or unverified worker logins from {ip}: at most {} at once and {} per minute; retry in {}s",
                        self.limits.per_client_burst,
                        self.limits.per_client_per_minute,
                        whole_seconds(wait)
                    ),
                });
            }
        }
        if let Some(id) = worker {
            if let Err(not_until) = self.per_worker.check_key(&id) {
                let wait = not_until.wait_time_from(now);
                return Err(Throttled {
                    retry_after: wait,
                    message: format!(
                        "too many failed or unverified logins for worker {id}: at most {} at once and {} per minute; retry in {}s",
                        self.limits.per_worker_burst,
                        self.limits.per_worker_per_minute,
                        whole_seconds(wait)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Wait for a bcrypt slot (at most [`AuthLimits::bcrypt_wait`]). Hold the permit while
    /// bcrypt runs.
    pub async fn bcrypt_slot(&self) -> Result<SemaphorePermit<'_>, Throttled> {
        let busy = || {
            Throttled {
            retry_after: Duration::from_secs(5),
            message: format!(
                "the Manager is busy checking other secrets (more than {} waiting for one of its {} bcrypt slots); retry in 5s",
                crate::config::format_duration(self.limits.bcrypt_wait),
                self.limits.bcrypt_slots.max(1)
            ),
        }
        };
        match tokio::time::timeout(self.limits.bcrypt_wait, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(busy()),
        }
    }

    /// Free bcrypt slots right now (for tests and metrics).
    pub fn free_bcrypt_slots(&self) -> usize {
        self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn small() -> AuthLimits {
        AuthLimits {
            per_worker_burst: 3,
            per_worker_per_minute: 1,
            per_client_burst: 5,
            per_client_per_minute: 1,
            bcrypt_slots: 1,
            bcrypt_wait: Duration::from_millis(50),
        }
    }

    #[test]
    fn per_worker_bucket_then_429() {
        let guard = AuthGuard::new(small());
        let (a, b) = (ObjectId::new(), ObjectId::new());
        for _ in 0..3 {
            guard
                .count_unverified(Some(a), None)
                .expect("within the burst");
        }
        let refused = guard.count_unverified(Some(a), None).expect_err("over");
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_secs(60));
        assert!(refused.message.contains(&a.to_hex()), "{}", refused.message);
        guard
            .count_unverified(Some(b), None)
            .expect("another worker has its own bucket");
    }

    #[test]
    fn per_client_bucket_counts_across_worker_ids() {
        let guard = AuthGuard::new(small());
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        for _ in 0..5 {
            guard
                .count_unverified(Some(ObjectId::new()), Some(ip))
                .expect("within the burst");
        }
        let refused = guard
            .count_unverified(Some(ObjectId::new()), Some(ip))
            .expect_err("the address is over");
        assert!(refused.message.contains("10.1.2.3"), "{}", refused.message);
        // Unknown ids count against the address alone.
        assert!(guard.count_unverified(None, Some(ip)).is_err());
        let other = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 4));
        guard
            .count_unverified(None, Some(other))
            .expect("another address has its own bucket");
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(client_key(mapped), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(
            client_key(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
    }

    #[tokio::test]
    async fn bcrypt_slots_are_bounded_and_waiting_is_limited() {
        let guard = AuthGuard::new(small());
        let held = guard.bcrypt_slot().await.expect("a free slot");
        assert_eq!(guard.free_bcrypt_slots(), 0);
        let refused = guard.bcrypt_slot().await.expect_err("no slot within 50 ms");
        assert!(refused.message.contains("busy"), "{}", refused.message);
        drop(held);
        let _again = guard.bcrypt_slot().await.expect("free again");
    }

    #[test]
    fn defaults_leave_a_core_free_on_two_cores() {
        let limits = AuthLimits::default();
        assert!(limits.bcrypt_slots >= 1);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        if cores >= 2 {
            assert!(limits.bcrypt_slots < cores);
        }
    }
}
