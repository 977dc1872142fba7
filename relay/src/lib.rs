//! The relay: streams the event store to Kafka, in order, without gaps, at least once.
//!
//! This crate's foundation is [`tail`]: reading committed events in a global order that never
//! skips one, whatever the concurrency of writers. Publishing to Kafka, leadership and
//! checkpoints build on it.
#![forbid(unsafe_code)]

pub mod tail;

pub use tail::{read_batch, Checkpoint, StoredEvent};

/// Failures of the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
}
