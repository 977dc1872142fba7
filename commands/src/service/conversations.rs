//! The commands of conversations: create, add and remove members, mark read.

use chat4all_domain::conversation::{
    ConversationCommand, ConversationCreated, ConversationError, ConversationKind,
    CreateConversation,
};
use chat4all_domain::{ConversationDirectory, ConversationId, UserId};
use chrono::{DateTime, Utc};

use super::{refused, CommandService};
use crate::{CommandContext, CommandError, Position};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReply {
    pub conversation_id: ConversationId,
    /// The caller's read horizon after the command.
    pub up_to_seq: u64,
    pub position: Position,
}

impl CommandService {
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
}
