//! What happened to a message. Variant names are the stored `event_type` and never change. Every
//! event names its conversation, so consumers can route any of them without loading the stream.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{Channel, MessageContent, SendMessage};
use crate::{ConversationId, MessageId, UserId, EVENT_VERSION_1};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSent {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    pub content: MessageContent,
    pub channels: Vec<Channel>,
    pub sent_at: DateTime<Utc>,
}

impl MessageSent {
    /// Whether `cmd` is a retry of the send that produced this event.
    pub fn same_request_as(&self, cmd: &SendMessage) -> bool {
        self.conversation_id == cmd.conversation_id
            && self.sender_id == cmd.sender
            && self.content == cmd.content
            && self.channels == cmd.channels
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDelivered {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub delivered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRead {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub read_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MessageEvent {
    MessageSent(MessageSent),
    MessageDelivered(MessageDelivered),
    MessageRead(MessageRead),
}

impl DomainEvent for MessageEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MessageSent(_) => "MessageSent",
            Self::MessageDelivered(_) => "MessageDelivered",
            Self::MessageRead(_) => "MessageRead",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}
