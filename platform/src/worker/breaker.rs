//! A circuit breaker: after repeated failures of a dependency, stop calling it for a while, then
//! let one trial call through to find out whether it is back.
//!
//! Calls to a provider that is down only waste time and the provider's patience; a worker that
//! keeps hammering one also delays the work it could do for others. The breaker is per
//! dependency (per channel, for delivery workers) and takes the time as an argument, so its
//! transitions are tested without waiting.

use std::time::{Duration, Instant};

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; consecutive failures are counted.
    Closed { failures: u32 },
    /// Calls are refused until `until`.
    Open { until: Instant },
    /// One trial call is out; its outcome closes or re-opens the breaker.
    HalfOpen,
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: BreakerState,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures and stays open for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn is_open(&self, now: Instant) -> bool {
        matches!(self.state, BreakerState::Open { until } if now < until)
    }

    /// Whether a call may go out at `now`. An open breaker whose time is up lets exactly one
    /// trial through (and refuses the rest until the trial reports back).
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// How long until a call may go out (zero when one may now).
    pub fn retry_in(&self, now: Instant) -> Duration {
        match self.state {
            BreakerState::Open { until } => until.saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    pub fn success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    /// Records a failed call; returns whether this failure opened the breaker.
    pub fn failure(&mut self, now: Instant) -> bool {
        let failures = match self.state {
            BreakerState::Closed { failures } => failures + 1,
            // A failed trial re-opens at once.
            BreakerState::HalfOpen => self.threshold,
            BreakerState::Open { .. } => return false,
        };
        if failures >= self.threshold {
            self.state = BreakerState::Open {
                until: now + self.open_for,
            };
            true
        } else {
            self.state = BreakerState::Closed { failures };
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures_only() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(3, OPEN_FOR);
        assert!(!breaker.failure(now));
        assert!(!breaker.failure(now));
        breaker.success();
        assert!(!breaker.failure(now));
        assert!(!breaker.failure(now));
        assert!(breaker.allow(now));
        assert!(
            breaker.failure(now),
            "the third consecutive failure opens it"
        );
        assert!(breaker.is_open(now));
        assert!(!breaker.allow(now + Duration::from_secs(29)));
        assert_eq!(
            breaker.retry_in(now + Duration::from_secs(10)),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn after_the_open_time_one_trial_goes_out_and_decides() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(1, OPEN_FOR);
        breaker.failure(now);
        let later = now + OPEN_FOR;
        assert!(breaker.allow(later), "the trial");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(!breaker.allow(later), "only one trial at a time");
        breaker.failure(later);
        assert!(breaker.is_open(later), "a failed trial re-opens");
        let again = later + OPEN_FOR;
        assert!(breaker.allow(again));
        breaker.success();
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
        assert!(breaker.allow(again));
    }
}
