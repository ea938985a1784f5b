//! Coordination between Managers that share one store: the leader lease (docs/operations.md,
//! "Several Managers on one MongoDB").
//!
//! [`CoordinationStore`] is the storage side: one lease document per name, taken or renewed
//! with one atomic compare-and-set, released by its holder, read for display. Who runs
//! what once it is held is decided by [`crate::leader`].
//!
//! The rule every backend follows is [`next_lease`]: the lease goes to the asker when
//! nobody holds it, when the asker holds it already (a renewal), or when it has expired;
//! otherwise it stays as it is. Expiry is judged on **the store's clock**: MongoDB compares
//! and computes with the server's `$$NOW`, so Managers whose clocks disagree still agree on
//! who holds the lease. The embedded store is never shared (its data-directory lock keeps
//! a second daemon out), so its answer is always "you hold it" ([`Lease::expires`] `None`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// The lease that decides which Manager runs the once-per-site loops.
pub const LEADER_LEASE: &str = "leader";

/// A lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The lease's name (e.g. [`LEADER_LEASE`]).
    pub name: String,
    /// Who holds it (or held it last, when [`Lease::expires`] has passed).
    pub holder: String,
    /// When this holder took it (renewals keep it), on the store's clock.
    pub acquired: Option<DateTime<Utc>>,
    /// When it expires unless renewed, on the store's clock; `None`: it never does (the
    /// embedded store, which one process owns).
    pub expires: Option<DateTime<Utc>>,
    /// Counts changes of holder: each new holder gets the next term. Two terms never
    /// overlap, so the term also tells whether leadership changed between two reads.
    pub term: i64,
    /// The store's clock when this answer was made (`None` when unknown), so that the time
    /// left is `expires - store_now` whatever the asker's clock says.
    pub store_now: Option<DateTime<Utc>>,
    /// Released by its holder (a clean stop): free for anyone at once.
    pub released: bool,
}

impl Lease {
    /// Whether `holder` holds it at the store's time `now`.
    pub fn held_by(&self, holder: &str, now: DateTime<Utc>) -> bool {
        self.holder == holder && self.is_valid(now)
    }

    /// Whether someone holds it at the store's time `now` (not released, not expired).
    pub fn is_valid(&self, now: DateTime<Utc>) -> bool {
        !self.released && self.expires.is_none_or(|e| e > now)
    }

    /// Time left at the answer's own time ([`Lease::store_now`]); `None` when it does not
    /// expire or the store's time is unknown.
    pub fn remaining(&self) -> Option<chrono::Duration> {
        Some((self.expires? - self.store_now?).max(chrono::Duration::zero()))
    }
}

/// The lease rule, as a pure function of the stored lease (`current`, `None` when there
/// is none yet) and the store's time `now`: what the lease becomes when `holder` asks for
/// it for `duration`. Backends must answer exactly this (MongoDB in one
/// `find_one_and_update`; see `mongo/coordination.rs`).
pub fn next_lease(
    current: Option<&Lease>,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
    duration: chrono::Duration,
) -> Lease {
    let renewal = current.is_some_and(|c| c.holder == holder && !c.released);
    let free = current.is_none_or(|c| !c.is_valid(now));
    match current {
        Some(c) if !renewal && !free => Lease {
            store_now: Some(now),
            ..c.clone()
        },
        _ => Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            acquired: if renewal {
                current.and_then(|c| c.acquired)
            } else {
                Some(now)
            },
            expires: Some(now + duration),
            term: match current {
                Some(c) if renewal => c.term,
                Some(c) => c.term + 1,
                None => 1,
            },
            store_now: Some(now),
            released: false,
        },
    }
}

/// The release rule: `holder` gives the lease up; anyone else's release changes nothing.
pub fn released_lease(current: &Lease, holder: &str, now: DateTime<Utc>) -> Option<Lease> {
    (current.holder == holder && !current.released).then(|| Lease {
        released: true,
        expires: Some(now),
        store_now: Some(now),
        ..current.clone()
    })
}

/// Storage of leases, for Managers sharing one store.
#[async_trait]
pub trait CoordinationStore: Send + Sync {
    /// Whether several Managers may use this store at once (MongoDB), so that the leader
    /// lease is needed. `false` for the embedded store: one process has it, and it always
    /// leads.
    fn coordination_shared(&self) -> bool;

    /// Take or renew lease `name` for `holder` for `duration` ([`next_lease`], on the
    /// store's clock) in one atomic step, and return the lease as it is afterwards: held by
    /// `holder` when it got it, else by whoever holds it.
    async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        duration: std::time::Duration,
    ) -> StoreResult<Lease>;

    /// Give lease `name` up if `holder` holds it ([`released_lease`]): others may take it
    /// at once. True when it was released.
    async fn lease_release(&self, name: &str, holder: &str) -> StoreResult<bool>;

    /// Lease `name` as stored, with the store's time ([`Lease::store_now`]); `None` when
    /// nobody ever took it.
    async fn lease_current(&self, name: &str) -> StoreResult<Option<Lease>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use chrono::Duration;

    fn clock() -> ManualClock {
        ManualClock::new(
            DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
                .expect("time")
                .with_timezone(&Utc),
        )
    }

    /// A lease table kept by the rules alone: what a backend must do.
    fn ask(table: &mut Option<Lease>, who: &str, now: DateTime<Utc>) -> Lease {
        let next = next_lease(
            table.as_ref(),
            LEADER_LEASE,
            who,
            now,
            Duration::seconds(10),
        );
        *table = Some(next.clone());
        next
    }

    #[test]
    fn the_first_asker_takes_the_lease_and_renews_it() {
        let c = clock();
        let mut table = None;
        let got = ask(&mut table, "a", c.now());
        assert!(got.held_by("a", c.now()));
        assert_eq!(got.term, 1);
        assert_eq!(got.expires, Some(c.now() + Duration::seconds(10)));
        let taken = got.acquired;
        c.advance(Duration::seconds(3));
        let renewed = ask(&mut table, "a", c.now());
        assert_eq!(renewed.term, 1, "a renewal keeps the term");
        assert_eq!(renewed.acquired, taken, "and when it was taken");
        assert_eq!(renewed.expires, Some(c.now() + Duration::seconds(10)));
        assert_eq!(renewed.remaining(), Some(Duration::seconds(10)));
    }

    #[test]
    fn nobody_else_gets_a_valid_lease_and_anyone_gets_an_expired_one() {
        let c = clock();
        let mut table = None;
        ask(&mut table, "a", c.now());
        c.advance(Duration::seconds(9));
        let refused = ask(&mut table, "b", c.now());
        assert!(refused.held_by("a", c.now()), "{refused:?}");
        assert_eq!(refused.remaining(), Some(Duration::seconds(1)));
        // Exactly at expiry it is free: the holder's own view ended a margin earlier.
        c.advance(Duration::seconds(1));
        let taken = ask(&mut table, "b", c.now());
        assert!(taken.held_by("b", c.now()));
        assert!(!taken.held_by("a", c.now()));
        assert_eq!(taken.term, 2, "a new holder is a new term");
        assert_eq!(taken.acquired, Some(c.now()));
        // The old holder, back late, does not get it back.
        c.advance(Duration::seconds(1));
        let late = ask(&mut table, "a", c.now());
        assert!(late.held_by("b", c.now()), "{late:?}");
        assert_eq!(late.term, 2);
    }

    #[test]
    fn an_expired_lease_renewed_by_its_holder_keeps_its_term() {
        let c = clock();
        let mut table = None;
        ask(&mut table, "a", c.now());
        c.advance(Duration::seconds(30));
        let again = ask(&mut table, "a", c.now());
        assert!(again.held_by("a", c.now()));
        assert_eq!(again.term, 1, "nobody held it in between");
    }

    #[test]
    fn a_release_frees_the_lease_at_once_and_only_the_holder_can_release() {
        let c = clock();
        let mut table = None;
        let held = ask(&mut table, "a", c.now());
        assert_eq!(released_lease(&held, "b", c.now()), None);
        let released = released_lease(&held, "a", c.now()).expect("released");
        assert!(!released.is_valid(c.now()));
        assert_eq!(released_lease(&released, "a", c.now()), None, "once");
        table = Some(released);
        let taken = ask(&mut table, "b", c.now());
        assert!(taken.held_by("b", c.now()));
        assert_eq!(taken.term, 2);
        // A released lease taken again by its old holder is a new term too.
        let mut table = Some(released_lease(&taken, "b", c.now()).expect("released"));
        let back = ask(&mut table, "b", c.now());
        assert_eq!(back.term, 3);
        assert_eq!(back.acquired, Some(c.now()));
    }

    #[test]
    fn a_lease_that_does_not_expire_is_always_valid() {
        let c = clock();
        let lease = Lease {
            name: LEADER_LEASE.into(),
            holder: "only".into(),
            acquired: None,
            expires: None,
            term: 1,
            store_now: None,
            released: false,
        };
        assert!(lease.held_by("only", c.now()));
        assert_eq!(lease.remaining(), None);
    }
}
