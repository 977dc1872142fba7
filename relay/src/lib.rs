//! The relay: streams the event store to Kafka, in order, without gaps, at least once.
//!
//! The event store is the outbox. One relay per deployment (the leader, holding a Postgres
//! advisory lock; any others wait as standbys) reads committed events in the store's gap-safe
//! order (`chat4all_eventstore::reader`), publishes them to `{prefix}.events.v1` keyed by conversation, waits for the
//! broker to acknowledge every one, and only then moves its checkpoint. While the broker
//! acknowledges one batch the next is already being read and sent (at most [`IN_FLIGHT`] batches
//! ahead), so a crash re-sends at most that unacknowledged window; nothing is ever skipped.
//!
//! Consumers deduplicate by `(aggregate_type, aggregate_id, sequence)`: an event carrying a
//! sequence its consumer has already applied for that aggregate is a re-delivery.
#![forbid(unsafe_code)]

mod leader;
mod publisher;
mod relay;
mod status;

pub use leader::{rebase, Leadership};
pub use publisher::{Encoded, Pending, Publisher};
pub use relay::{Observer, Outcome, Pipeline, Relay, RelayConfig, IN_FLIGHT};
pub use status::RelayStatus;

use chat4all_eventstore::StoreError;

/// Failures of the relay. None of them loses an event: the batch is re-read and re-sent.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Broker(#[from] rdkafka::error::KafkaError),
    #[error("the leadership connection was lost: {0}")]
    LostLeadership(#[source] sqlx::Error),
    #[error(
        "the checkpoint (transaction {0}) is ahead of this cluster's transaction ids: the store was \
         restored into a new cluster; rebase it with `chat4all relay rebase --after-position N`"
    )]
    CheckpointAhead(i64),
}

impl From<sqlx::Error> for RelayError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(err))
    }
}
