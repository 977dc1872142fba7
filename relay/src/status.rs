//! What the relay is doing, for metrics and for tests that watch it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use chat4all_eventstore::{Behind, Checkpoint};

/// Shared, lock-free view of the relay's state; every field is also exported as a metric.
#[derive(Debug, Default)]
pub struct RelayStatus {
    leader: AtomicBool,
    published: AtomicU64,
    errors: AtomicU64,
    checkpoint_tx: AtomicI64,
    checkpoint_position: AtomicI64,
    lag_events: AtomicI64,
    /// Milliseconds, to keep the atomics integral.
    lag_ms: AtomicI64,
    oldest_transaction_ms: AtomicI64,
}

impl RelayStatus {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn checkpoint_position(&self) -> i64 {
        self.checkpoint_position.load(Ordering::Relaxed)
    }

    /// The last checkpoint stored (as far as this process knows).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tx_id: self.checkpoint_tx.load(Ordering::Relaxed),
            position: self.checkpoint_position.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_checkpoint(&self, checkpoint: Checkpoint) {
        self.checkpoint_tx
            .store(checkpoint.tx_id, Ordering::Relaxed);
        self.checkpoint_position
            .store(checkpoint.position, Ordering::Relaxed);
    }

    /// Committed events not yet acknowledged by the broker (including those held back).
    pub fn lag_events(&self) -> i64 {
        self.lag_events.load(Ordering::Relaxed)
    }

    /// Age of the oldest event not yet acknowledged, in seconds.
    pub fn lag_seconds(&self) -> f64 {
        self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Age of the oldest open transaction on the server, which holds the read horizon back.
    pub fn oldest_transaction_seconds(&self) -> f64 {
        self.oldest_transaction_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
        metrics::gauge!("chat4all_relay_leader").set(if leader { 1.0 } else { 0.0 });
    }

    pub(crate) fn published_batch(&self, events: usize, checkpoint: Checkpoint) {
        self.published.fetch_add(events as u64, Ordering::Relaxed);
        self.set_checkpoint(checkpoint);
        metrics::counter!("chat4all_relay_published_total").increment(events as u64);
        metrics::histogram!("chat4all_relay_batch_size").record(events as f64);
    }

    pub(crate) fn error(&self, kind: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("chat4all_relay_errors_total", "kind" => kind).increment(1);
    }

    pub(crate) fn observed(&self, behind: Behind) {
        let Behind {
            events: lag_events,
            seconds: lag_seconds,
            oldest_transaction_seconds,
        } = behind;
        self.lag_events.store(lag_events, Ordering::Relaxed);
        self.lag_ms
            .store((lag_seconds * 1000.0) as i64, Ordering::Relaxed);
        self.oldest_transaction_ms.store(
            (oldest_transaction_seconds * 1000.0) as i64,
            Ordering::Relaxed,
        );
        metrics::gauge!("chat4all_relay_lag_events").set(lag_events as f64);
        metrics::gauge!("chat4all_relay_lag_seconds").set(lag_seconds);
        metrics::gauge!("chat4all_relay_oldest_transaction_seconds")
            .set(oldest_transaction_seconds);
    }
}
