//! The write side: the PostgreSQL event store and the command services the gateway calls.
//!
//! Aggregates (from `chat4all-domain`) are loaded from and appended to the `events` table through
//! postgres-es and cqrs-es's `PersistedEventStore`, with the appends of `chat4all-eventstore`. Appends are single statements that return the
//! events' global positions, so every accepted command can answer with its consistency token
//! without another round trip. Membership facts that a message command needs come from the event
//! store itself ([`StoreDirectory`]), never from read models: commands stay correct while
//! projections lag or are being rebuilt.
#![forbid(unsafe_code)]

mod context;
mod directory;
mod error;
mod executor;
mod repository;
mod service;
mod snapshot;

pub use context::CommandContext;
pub use directory::StoreDirectory;
pub use error::CommandError;
pub use executor::{Executed, Executor};
pub use repository::StoreRepository;
pub use service::{
    CommandService, ConversationReply, CreateConversationRequest, Limits, ReadReply,
    SendMessageRequest, SentReply, StatusReply,
};
pub use snapshot::Snapshots;

pub use chat4all_eventstore::Position;
