//! The commands the API offers, in the API's terms: each validates what only the write side can
//! know, runs the aggregate, and answers with what the client needs, including `position`.
//!
//! One module per aggregate (`conversations`, `messages`); a new aggregate's commands add a
//! module of their own.

use std::sync::Arc;

use chat4all_domain::conversation::DEFAULT_MAX_GROUP_MEMBERS;
use chat4all_domain::{Conversation, ConversationDirectory, Message};
use chat4all_eventstore::Appender;
use cqrs_es::AggregateError;
use sqlx::PgPool;

use crate::executor::MAX_ATTEMPTS;
use crate::{CommandError, Executed, Executor, Position, StoreDirectory};

mod conversations;
mod messages;

pub use conversations::{ConversationReply, CreateConversationRequest, ReadReply};
pub use messages::{SendMessageRequest, SentReply, StatusReply};

/// Conversation events between snapshots.
pub const CONVERSATION_SNAPSHOT_EVERY: usize = 100;
/// The `Conversation` state format in snapshots; bump it with any change to its fields or `apply`.
pub const CONVERSATION_SNAPSHOT_VERSION: i32 = 1;

/// Limits a deployment may tune.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_group_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_group_members: DEFAULT_MAX_GROUP_MEMBERS,
        }
    }
}

/// The write side's entry point.
pub struct CommandService {
    conversations: Executor<Conversation>,
    messages: Executor<Message>,
    directory: StoreDirectory,
    pool: PgPool,
    limits: Limits,
}

pub(super) fn refused<E>(err: AggregateError<E>) -> CommandError
where
    E: std::error::Error + Into<CommandError>,
{
    match err {
        AggregateError::UserError(e) => e.into(),
        AggregateError::AggregateConflict => CommandError::Contention {
            attempts: MAX_ATTEMPTS,
        },
        AggregateError::DatabaseConnectionError(e)
        | AggregateError::DeserializationError(e)
        | AggregateError::UnexpectedError(e) => CommandError::Store(e),
    }
}

impl CommandService {
    pub fn new(pool: PgPool, limits: Limits) -> Self {
        let directory = StoreDirectory::new(pool.clone());
        let services: Arc<dyn ConversationDirectory> = Arc::new(directory.clone());
        let appender = Appender::start(pool.clone());
        Self {
            // Read horizons make a busy conversation's stream grow without bound.
            conversations: Executor::new(pool.clone(), appender.clone(), ())
                .with_snapshots(CONVERSATION_SNAPSHOT_EVERY, CONVERSATION_SNAPSHOT_VERSION),
            messages: Executor::new(pool.clone(), appender, services),
            directory,
            pool,
            limits,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The membership directory, whose cache needs [`StoreDirectory::listen`] running.
    pub fn directory(&self) -> &StoreDirectory {
        &self.directory
    }

    /// The answer's position: the last appended event's, or for a no-op the position of the
    /// stream's event `sequence` (the one the original command appended).
    pub(super) async fn position<A>(
        executor: &Executor<A>,
        stream: &str,
        executed: &Executed<A>,
        sequence: i64,
    ) -> Result<Position, CommandError>
    where
        A: cqrs_es::Aggregate + Clone,
        A::Command: Clone,
    {
        if let Some((_, position)) = executed.appended.last() {
            return Ok(*position);
        }
        executor
            .position_of(stream, sequence)
            .await?
            .ok_or_else(|| CommandError::Store("an acknowledged event is missing".into()))
    }
}
