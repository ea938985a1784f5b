//! Time as the Manager sees it: the system clock, or a clock tests move by hand.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// A source of "now". Store operations take `now` as an argument; only the SDK reads a clock.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; for tests of timeouts and cleanup.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Notices jumps of the wall clock by comparing it with monotonic time.
///
/// Timeouts compare stored wall-clock times (a task's last ping, a worker's last contact)
/// with "now", so a wall clock set forward by an hour would make every active task look
/// an hour silent and fail it. The daemon's timeout loop therefore asks this guard before
/// each round: between two rounds the wall clock must have advanced as much as monotonic
/// time did (within `tolerance`). When it did not (a jump either way, or the host was
/// suspended), the round is skipped and so is every round for the next `grace` of
/// monotonic time — long enough (the longest timeout interval) for every live worker to
/// report again with a time on the new clock. Timeouts are thus deferred by at most
/// `grace` after a jump, never fired because of it.
#[derive(Debug)]
pub struct JumpGuard {
    tolerance: std::time::Duration,
    grace: std::time::Duration,
    last: Option<(DateTime<Utc>, tokio::time::Instant)>,
    grace_until: Option<tokio::time::Instant>,
}

/// What [`JumpGuard::check`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JumpVerdict {
    /// The clocks agree: run the round.
    Run,
    /// The wall clock just jumped by this much more (or, negative, less) than monotonic
    /// time advanced: skip.
    Jumped(Duration),
    /// Still within the grace period after a jump: skip.
    Deferred,
}

impl JumpGuard {
    /// Below `tolerance` of disagreement the clocks count as agreeing (NTP slews the wall
    /// clock by well under a second per minute).
    pub fn new(tolerance: std::time::Duration, grace: std::time::Duration) -> JumpGuard {
        JumpGuard {
            tolerance,
            grace,
            last: None,
            grace_until: None,
        }
    }

    /// Record the clocks at a round (`wall` from the Manager's clock, `mono` monotonic)
    /// and say whether the round may run.
    pub fn check(&mut self, wall: DateTime<Utc>, mono: tokio::time::Instant) -> JumpVerdict {
        let previous = self.last.replace((wall, mono));
        if let Some((last_wall, last_mono)) = previous {
            let mono_elapsed = Duration::from_std(mono.saturating_duration_since(last_mono))
                .unwrap_or(Duration::MAX);
            let skew = (wall - last_wall)
                .checked_sub(&mono_elapsed)
                .unwrap_or(Duration::MIN);
            let tolerance = Duration::from_std(self.tolerance).unwrap_or(Duration::MAX);
            if skew.abs() > tolerance {
                self.grace_until = Some(mono + self.grace);
                return JumpVerdict::Jumped(skew);
            }
        }
        match self.grace_until {
            Some(until) if mono < until => JumpVerdict::Deferred,
            _ => {
                self.grace_until = None;
                JumpVerdict::Run
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn agreeing_clocks_run_every_round() {
        let mut g = JumpGuard::new(Std::from_secs(5), Std::from_secs(600));
        let m = tokio::time::Instant::now();
        for i in 0..10i64 {
            // 60 s a round, the wall clock drifting by up to 2 s either way.
            let wall = t0() + Duration::seconds(60 * i + (i % 3) - 1);
            let mono = m + Std::from_secs(60 * i as u64);
            assert_eq!(g.check(wall, mono), JumpVerdict::Run, "round {i}");
        }
    }

    #[test]
    fn a_forward_jump_defers_rounds_for_the_grace_period() {
        let mut g = JumpGuard::new(Std::from_secs(5), Std::from_secs(600));
        let m = tokio::time::Instant::now();
        assert_eq!(g.check(t0(), m), JumpVerdict::Run);
        // One minute later by the monotonic clock, but the wall clock says 61 minutes.
        let wall = t0() + Duration::minutes(61);
        assert_eq!(
            g.check(wall, m + Std::from_secs(60)),
            JumpVerdict::Jumped(Duration::minutes(60))
        );
        // The clocks agree again, but the grace period (10 min from the jump) holds.
        for k in 1..10u64 {
            let wall = t0() + Duration::minutes(61 + k as i64);
            assert_eq!(
                g.check(wall, m + Std::from_secs(60 + 60 * k)),
                JumpVerdict::Deferred,
                "minute {k} after the jump"
            );
        }
        let wall = t0() + Duration::minutes(71);
        assert_eq!(g.check(wall, m + Std::from_secs(660)), JumpVerdict::Run);
    }

    #[test]
    fn a_backward_jump_is_noticed_too() {
        let mut g = JumpGuard::new(Std::from_secs(5), Std::from_secs(120));
        let m = tokio::time::Instant::now();
        assert_eq!(g.check(t0(), m), JumpVerdict::Run);
        let wall = t0() - Duration::minutes(30);
        assert_eq!(
            g.check(wall, m + Std::from_secs(60)),
            JumpVerdict::Jumped(Duration::minutes(-31))
        );
        assert_eq!(
            g.check(wall + Duration::seconds(60), m + Std::from_secs(120)),
            JumpVerdict::Deferred
        );
        assert_eq!(
            g.check(wall + Duration::seconds(120), m + Std::from_secs(180)),
            JumpVerdict::Run
        );
    }

    #[test]
    fn small_disagreements_within_the_tolerance_do_not_count() {
        let mut g = JumpGuard::new(Std::from_secs(5), Std::from_secs(600));
        let m = tokio::time::Instant::now();
        assert_eq!(g.check(t0(), m), JumpVerdict::Run);
        let wall = t0() + Duration::seconds(65);
        assert_eq!(g.check(wall, m + Std::from_secs(60)), JumpVerdict::Run);
        let wall = wall + Duration::seconds(66);
        assert_eq!(
            g.check(wall, m + Std::from_secs(120)),
            JumpVerdict::Jumped(Duration::seconds(6))
        );
    }
}
