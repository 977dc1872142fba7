//! The commands the API offers, in the API's terms: each validates what only the write side can
//! know, runs the aggregate, and answers with what the client needs, including `position`.

use std::sync::Arc;

use chat4all_domain::conversation::{
    ConversationCommand, ConversationCreated, ConversationError, ConversationKind,
    CreateConversation, DEFAULT_MAX_GROUP_MEMBERS,
};
use chat4all_domain::message::{
    Channel, MessageCommand, MessageContent, MessageStatus, RecipientStatus, SendMessage,
};
use chat4all_domain::{
    Conversation, ConversationDirectory, ConversationId, Message, MessageId, UserId,
};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use sqlx::PgPool;

use crate::executor::MAX_ATTEMPTS;
use chat4all_eventstore::Appender;

use crate::{CommandContext, CommandError, Executed, Executor, Position, StoreDirectory};

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

#[derive(Debug, Clone)]
pub struct CreateConversationRequest {
    /// Chosen by the client to make creation retryable; generated otherwise.
    pub conversation_id: Option<ConversationId>,
    pub kind: ConversationKind,
    pub members: Vec<UserId>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct ConversationReply {
    pub conversation: ConversationCreated,
    pub position: Position,
}

#[derive(Debug, Clone)]
pub struct SendMessageRequest {
    pub message_id: Option<MessageId>,
    pub conversation_id: ConversationId,
    pub content: MessageContent,
    pub channels: Vec<Channel>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentReply {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReply {
    pub message_id: MessageId,
    /// The message's status after the command (unchanged when the report was a step back).
    pub status: MessageStatus,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReply {
    pub conversation_id: ConversationId,
    /// The caller's read horizon after the command.
    pub up_to_seq: u64,
    pub position: Position,
}

/// The write side's entry point.
pub struct CommandService {
    conversations: Executor<Conversation>,
    messages: Executor<Message>,
    directory: StoreDirectory,
    pool: PgPool,
    limits: Limits,
}

fn refused<E>(err: AggregateError<E>) -> CommandError
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
    async fn position<A>(
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

    /// # Errors
    /// The conversation's refusal (invalid members, an existing id with other content) or a
    /// store failure.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %ctx.tenant))]
    pub async fn create_conversation(
        &self,
        ctx: &CommandContext,
        request: CreateConversationRequest,
        at: DateTime<Utc>,
    ) -> Result<ConversationReply, CommandError> {
        let id = request
            .conversation_id
            .unwrap_or_else(ConversationId::generate);
        let stream = ctx.tenant.stream_id(id);
        let command = ConversationCommand::Create(CreateConversation {
            conversation_id: id,
            kind: request.kind,
            members: request.members,
            name: request.name,
            description: request.description,
            metadata: request.metadata,
            actor: ctx.actor.clone(),
            max_group_members: self.limits.max_group_members,
            at,
        });
        let executed = self
            .conversations
            .execute(&stream, command, ctx.metadata(at))
            .await
            .map_err(refused)?;
        let position = Self::position(&self.conversations, &stream, &executed, 1).await?;
        let conversation = executed
            .aggregate
            .created
            .ok_or_else(|| CommandError::Store("created conversation has no state".into()))?;
        Ok(ConversationReply {
            conversation,
            position,
        })
    }

    /// # Errors
    /// Not found (or not a member), a private conversation, a full group, or a store failure.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %ctx.tenant, conversation_id = %conversation))]
    pub async fn add_member(
        &self,
        ctx: &CommandContext,
        conversation: ConversationId,
        user: UserId,
        at: DateTime<Utc>,
    ) -> Result<Position, CommandError> {
        let command = ConversationCommand::AddMember {
            user,
            actor: ctx.actor.clone(),
            max_group_members: self.limits.max_group_members,
            at,
        };
        self.conversation_command(ctx, conversation, command, at)
            .await
    }

    /// # Errors
    /// Not found (or not a member), not allowed, not a member to remove, or a store failure.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %ctx.tenant, conversation_id = %conversation))]
    pub async fn remove_member(
        &self,
        ctx: &CommandContext,
        conversation: ConversationId,
        user: UserId,
        at: DateTime<Utc>,
    ) -> Result<Position, CommandError> {
        let command = ConversationCommand::RemoveMember {
            user,
            actor: ctx.actor.clone(),
            actor_is_admin: ctx.is_admin,
            at,
        };
        self.conversation_command(ctx, conversation, command, at)
            .await
    }

    async fn conversation_command(
        &self,
        ctx: &CommandContext,
        conversation: ConversationId,
        command: ConversationCommand,
        at: DateTime<Utc>,
    ) -> Result<Position, CommandError> {
        let stream = ctx.tenant.stream_id(conversation);
        let executed = self
            .conversations
            .execute(&stream, command, ctx.metadata(at))
            .await
            .map_err(refused)?;
        if !executed.appended.is_empty() {
            self.directory.forget(&ctx.tenant, conversation);
        }
        let last = executed.last_sequence;
        Self::position(&self.conversations, &stream, &executed, last).await
    }

    /// Advances the caller's read horizon to `up_to_seq`, or to the conversation's last message.
    ///
    /// # Errors
    /// Not found (or not a member), a horizon beyond the last message, or a store failure.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %ctx.tenant, conversation_id = %conversation))]
    pub async fn mark_read(
        &self,
        ctx: &CommandContext,
        conversation: ConversationId,
        up_to_seq: Option<u64>,
        at: DateTime<Utc>,
    ) -> Result<ReadReply, CommandError> {
        // Membership first, so that a non-member learns nothing about the message count.
        let member = self
            .directory
            .membership(&ctx.tenant, conversation)
            .await
            .map_err(|e| CommandError::Store(Box::new(e)))?
            .is_some_and(|m| m.contains(&ctx.actor));
        if !member {
            return Err(ConversationError::NotFound.into());
        }
        // Every committed message has a seq no larger than the number of messages committed, so
        // that count bounds any horizon that can refer to a real message.
        let last = self.messages_in_store(ctx, conversation).await?;
        let up_to_seq = match up_to_seq {
            Some(requested) if requested > last => {
                return Err(CommandError::SeqOutOfRange { requested, last })
            }
            Some(requested) => requested,
            None => last,
        };
        let stream = ctx.tenant.stream_id(conversation);
        let command = ConversationCommand::MarkRead {
            user: ctx.actor.clone(),
            up_to_seq,
            at,
        };
        let executed = self
            .conversations
            .execute(&stream, command, ctx.metadata(at))
            .await
            .map_err(refused)?;
        let last_sequence = executed.last_sequence;
        let position =
            Self::position(&self.conversations, &stream, &executed, last_sequence).await?;
        Ok(ReadReply {
            conversation_id: conversation,
            up_to_seq: executed.aggregate.read_horizon(&ctx.actor),
            position,
        })
    }

    async fn messages_in_store(
        &self,
        ctx: &CommandContext,
        conversation: ConversationId,
    ) -> Result<u64, CommandError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events \
             WHERE aggregate_type = 'Message' AND event_type = 'MessageSent' \
               AND metadata ->> 'tenant_id' = $1 \
               AND payload -> 'MessageSent' ->> 'conversation_id' = $2",
        )
        .bind(ctx.tenant.as_str())
        .bind(conversation.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Sends a message; a retry with the same `message_id` and content answers as the first call.
    ///
    /// # Errors
    /// `message_id` reused for other content, unknown conversation (or not a member), invalid
    /// content, or a store failure.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %ctx.tenant, conversation_id = %request.conversation_id))]
    pub async fn send_message(
        &self,
        ctx: &CommandContext,
        request: SendMessageRequest,
        at: DateTime<Utc>,
    ) -> Result<SentReply, CommandError> {
        let message_id = request.message_id.unwrap_or_else(MessageId::generate);
        let mut channels = request.channels;
        channels.sort_unstable();
        channels.dedup();
        let stream = ctx.tenant.stream_id(message_id);
        let command = MessageCommand::Send(SendMessage {
            tenant: ctx.tenant.clone(),
            message_id,
            conversation_id: request.conversation_id,
            sender: ctx.actor.clone(),
            content: request.content,
            channels,
            at,
        });
        let executed = self
            .messages
            .execute_expecting_new(&stream, command, ctx.metadata(at))
            .await
            .map_err(refused)?;
        // The answer to a retry repeats the original one, whose position is the MessageSent's.
        let position = match executed.appended.first() {
            Some((_, position)) => *position,
            None => Self::position(&self.messages, &stream, &executed, 1).await?,
        };
        Ok(SentReply {
            message_id,
            conversation_id: request.conversation_id,
            position,
        })
    }

    /// A recipient reports delivery or reading; a step back is acknowledged without effect.
    ///
    /// # Errors
    /// Unknown message (or not visible to the caller), the sender reporting, or a store failure.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %ctx.tenant, message_id = %message_id))]
    pub async fn mark_status(
        &self,
        ctx: &CommandContext,
        message_id: MessageId,
        status: RecipientStatus,
        at: DateTime<Utc>,
    ) -> Result<StatusReply, CommandError> {
        let stream = ctx.tenant.stream_id(message_id);
        let command = MessageCommand::MarkStatus {
            tenant: ctx.tenant.clone(),
            user: ctx.actor.clone(),
            status,
            at,
        };
        let executed = self
            .messages
            .execute(&stream, command, ctx.metadata(at))
            .await
            .map_err(refused)?;
        let last = executed.last_sequence;
        let position = Self::position(&self.messages, &stream, &executed, last).await?;
        Ok(StatusReply {
            message_id,
            status: executed.aggregate.status,
            position,
        })
    }
}
