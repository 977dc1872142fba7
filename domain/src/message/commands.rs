//! What may be asked of a message.

use chrono::{DateTime, Utc};

use super::{Channel, MessageContent, RecipientStatus};
use crate::{ConversationId, MessageId, TenantId, UserId};

/// Send a message to a conversation (and, optionally, out to channels).
#[derive(Debug, Clone, PartialEq)]
pub struct SendMessage {
    pub tenant: TenantId,
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub sender: UserId,
    pub content: MessageContent,
    /// Sorted and without duplicates, so equal requests compare equal.
    pub channels: Vec<Channel>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MessageCommand {
    Send(SendMessage),
    /// A recipient reports that the message reached it, or that it has read it.
    MarkStatus {
        tenant: TenantId,
        user: UserId,
        status: RecipientStatus,
        at: DateTime<Utc>,
    },
}
