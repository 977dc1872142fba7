//! The worker kit: what every consumer of the events topic needs, so that a new worker writes
//! only its own logic.
//!
//! - [`Consumer`]: group membership, batches gathered per partition, seeking each newly assigned
//!   partition to the offset the worker stored in Postgres ([`StoredOffsets`]; Kafka's own
//!   commits are informational), retries with [`Backoff`], and dead letters for a record that
//!   keeps failing, so that one poison record never holds its partition forever.
//! - [`CircuitBreaker`]: stop calling a dependency that keeps failing, then try it again.
//! - [`DeadLetters`]: the `{prefix}.dlq.v1` producer.
//!
//! A worker implements [`Handler`]: it handles a batch (storing the batch's next offsets in the
//! same Postgres transaction as its effects, for an exactly-once effect) and says which of its
//! errors would recur for the same records.

mod backoff;
mod breaker;
mod consumer;
mod dead_letter;
mod offsets;

pub use backoff::Backoff;
pub use breaker::{BreakerState, CircuitBreaker};
pub use consumer::{Batch, Consumer, ConsumerConfig, ConsumerStatus, Handler, Record};
pub use dead_letter::{DeadLetters, Origin};
pub use offsets::StoredOffsets;
