//! The Chat4All domain: aggregates, their commands and events, value types and domain errors.
//!
//! Everything here is pure: decisions are made from an aggregate's own events plus the facts a
//! [`ConversationDirectory`] supplies, and time comes in with each command. The write side
//! (`chat4all-commands`) loads and stores aggregates; nothing in this crate does I/O.
//!
//! Two aggregates carry the messaging model:
//! * [`Conversation`]: who is in it (private: exactly two; group: 3 up to a limit), and how far each
//!   member has read. Read horizons only move forward.
//! * [`Message`]: one stream per client-chosen `message_id`, so a retried send lands on the same
//!   stream and is idempotent by construction. Per-recipient status only moves forward.
#![forbid(unsafe_code)]

pub mod conversation;
mod directory;
mod ids;
pub mod message;

pub use conversation::Conversation;
pub use directory::{ConversationDirectory, DirectoryError, Membership};
pub use ids::{ConversationId, IdError, MessageId, TenantId, UserId};
pub use message::Message;

/// The version every event type starts at; it moves only together with an upcaster.
pub const EVENT_VERSION_1: &str = "1.0";
