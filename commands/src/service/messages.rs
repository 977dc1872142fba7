//! The commands of messages: send, and a recipient's delivery or read report.

use chat4all_domain::message::{
    Channel, MessageCommand, MessageContent, MessageStatus, RecipientStatus, SendMessage,
};
use chat4all_domain::{ConversationId, MessageId};
use chrono::{DateTime, Utc};

use super::{refused, CommandService};
use crate::{CommandContext, CommandError, Position};

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

impl CommandService {
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
