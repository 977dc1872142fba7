//! Read models: built from the events topic by the projector, rebuilt from the store by replay,
//! read by the query API.
//!
//! Each event is applied exactly once in effect: a partition's events are applied in order inside
//! one Postgres transaction that also stores that partition's next offset, and every read-model
//! row remembers the last sequence of its aggregate it reflects, so a re-delivered event changes
//! nothing. Messages are numbered per conversation (`seq`) in the order the relay published them,
//! which every reader and subscriber shares.
#![forbid(unsafe_code)]

pub mod apply;
pub mod frames;
pub mod projector;
pub mod queries;
pub mod replay;
#[cfg(feature = "testing")]
pub mod testing;
pub mod views;

pub use apply::{apply, apply_batch, apply_batch_silently};
pub use frames::Notification;
pub use projector::{Projector, ProjectorConfig, ProjectorStatus, PROJECTION};
pub use queries::{ListCursor, MessagesFrom, Queries};
pub use views::Page;

/// Failures of projecting; none loses an event: the batch is retried.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read models: {0}")]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    EventStore(#[from] chat4all_eventstore::StoreError),
    #[error("an event could not be understood: {0}")]
    Malformed(String),
    #[error("broker: {0}")]
    Broker(#[from] rdkafka::error::KafkaError),
}
