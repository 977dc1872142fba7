//! Exponential backoff with jitter, for every retry loop of the engine.

use std::time::Duration;

use rand::Rng;

/// Waits that double from `first` up to `max`, each drawn at random from the upper half of the
/// current ceiling ("equal jitter"): retries of many processes spread out instead of arriving
/// together, and no wait is ever much shorter than the schedule says.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// Starts the schedule again (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The next wait; the one after it is twice as long, up to the maximum.
    pub fn wait(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let micros = u64::try_from(ceiling.as_micros())
            .unwrap_or(u64::MAX)
            .max(2);
        Duration::from_micros(rand::thread_rng().gen_range(micros / 2..=micros))
    }

    /// Sleeps the next wait, or returns `false` at once when `stop` is cancelled first.
    pub async fn sleep(&mut self, stop: &tokio_util::sync::CancellationToken) -> bool {
        let wait = self.wait();
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_their_jitter_up_to_the_maximum_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let ceilings = [100, 200, 400, 700, 700];
        for ceiling in ceilings {
            let wait = backoff.wait();
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                wait <= ceiling && wait >= ceiling / 2,
                "{wait:?} for {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.wait() <= Duration::from_millis(100));
    }

    #[test]
    fn waits_are_spread_out() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            seen.insert(backoff.wait());
        }
        assert!(seen.len() > 1, "every wait was the same");
    }
}
