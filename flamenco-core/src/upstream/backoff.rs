//! Exponential backoff with jitter, for retrying upstream calls after failures.
//!
//! Each failure doubles the delay (from `initial` up to `cap`); the delay actually waited
//! is drawn uniformly from its upper half, so Managers that failed together do not retry
//! together. A success resets it.

use std::time::Duration;

/// The retry delay of one loop.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// `initial` is the first delay; no delay exceeds `cap` (which is raised to `initial`
    /// when smaller).
    pub fn new(initial: Duration, cap: Duration) -> Backoff {
        Backoff {
            initial,
            cap: cap.max(initial),
            failures: 0,
        }
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// A failure: how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = base / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        half + jitter
    }

    /// The largest delay the next failure can bring.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(30));
        self.initial.saturating_mul(factor).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} within {ceiling:?}");
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        assert_eq!(b.failures(), 8);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        // A cap below the initial delay is raised to it.
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.ceiling(), Duration::from_secs(2));
    }
}
