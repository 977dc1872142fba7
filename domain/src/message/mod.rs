//! The `Message` aggregate: one stream per client-chosen message id.
//!
//! Because the client chooses the id, a retried send loads the stream it already wrote and answers
//! from it: the same content is a no-op, other content a conflict. Status is tracked per recipient
//! and only moves forward (delivered, then read); the message's own status is the furthest any
//! recipient has reached.

mod commands;
mod error;
mod events;

use std::collections::BTreeMap;
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

pub use commands::{MessageCommand, SendMessage};
pub use error::MessageError;
pub use events::{MessageDelivered, MessageEvent, MessageRead, MessageSent};

use crate::{ConversationDirectory, UserId};

/// Longest text, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 65_536;

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    Text {
        text: String,
    },
    File {
        file_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
}

impl MessageContent {
    /// Checks what does not depend on any other aggregate.
    ///
    /// # Errors
    /// Empty text, text over [`MAX_TEXT_BYTES`] or containing NUL; a caption with the same faults.
    pub fn validate(&self) -> Result<(), MessageError> {
        fn text_ok(text: &str) -> Result<(), MessageError> {
            if text.is_empty() {
                Err(MessageError::EmptyText)
            } else if text.len() > MAX_TEXT_BYTES {
                Err(MessageError::TextTooLong {
                    max: MAX_TEXT_BYTES,
                    got: text.len(),
                })
            } else if text.contains('\0') {
                Err(MessageError::TextHasNul)
            } else {
                Ok(())
            }
        }
        match self {
            Self::Text { text } => text_ok(text),
            Self::File { caption, .. } => caption.as_deref().map_or(Ok(()), text_ok),
        }
    }
}

/// An outside channel a message is also delivered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Whatsapp,
    Instagram,
    Telegram,
    Messenger,
}

impl Channel {
    pub const ALL: [Self; 4] = [
        Self::Whatsapp,
        Self::Instagram,
        Self::Telegram,
        Self::Messenger,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
            Self::Instagram => "instagram",
            Self::Telegram => "telegram",
            Self::Messenger => "messenger",
        }
    }

    /// Parses one channel name of the API (`"all"` is handled by the caller, as it is a set).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// A message's status; the order of the variants is the order status moves in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    #[default]
    Accepted,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }
}

/// What a recipient may report about a message it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    Delivered,
    Read,
}

impl From<RecipientStatus> for MessageStatus {
    fn from(s: RecipientStatus) -> Self {
        match s {
            RecipientStatus::Delivered => Self::Delivered,
            RecipientStatus::Read => Self::Read,
        }
    }
}

/// State rebuilt from a message's events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Message {
    pub sent: Option<MessageSent>,
    pub status: MessageStatus,
    pub recipients: BTreeMap<UserId, RecipientStatus>,
}

impl Message {
    fn advance(&mut self, user: UserId, status: RecipientStatus) {
        let entry = self.recipients.entry(user).or_insert(status);
        *entry = (*entry).max(status);
        self.status = self.status.max(status.into());
    }
}

/// The services a message command may consult.
pub type MessageServices = Arc<dyn ConversationDirectory>;

impl Aggregate for Message {
    const TYPE: &'static str = "Message";
    type Command = MessageCommand;
    type Event = MessageEvent;
    type Error = MessageError;
    type Services = MessageServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        directory: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            MessageCommand::Send(cmd) => {
                if let Some(sent) = &self.sent {
                    return if sent.same_request_as(&cmd) {
                        Ok(())
                    } else {
                        Err(MessageError::IdConflict)
                    };
                }
                cmd.content.validate()?;
                if matches!(cmd.content, MessageContent::File { .. }) {
                    // Files become sendable once their upload has completed; uploads are not
                    // part of this engine version, so no file can be ready yet.
                    return Err(MessageError::FileNotReady);
                }
                let membership = directory
                    .membership(&cmd.tenant, cmd.conversation_id)
                    .await?
                    .ok_or(MessageError::ConversationNotFound)?;
                if !membership.contains(&cmd.sender) {
                    return Err(MessageError::ConversationNotFound);
                }
                let event = MessageEvent::MessageSent(MessageSent {
                    message_id: cmd.message_id,
                    conversation_id: cmd.conversation_id,
                    sender_id: cmd.sender,
                    content: cmd.content,
                    channels: cmd.channels,
                    sent_at: cmd.at,
                });
                sink.write(event, self).await;
                Ok(())
            }
            MessageCommand::MarkStatus {
                tenant,
                user,
                status,
                at,
            } => {
                let sent = self.sent.as_ref().ok_or(MessageError::NotFound)?;
                let membership = directory
                    .membership(&tenant, sent.conversation_id)
                    .await?
                    .ok_or(MessageError::NotFound)?;
                if !membership.contains(&user) {
                    return Err(MessageError::NotFound);
                }
                if sent.sender_id == user {
                    return Err(MessageError::NotARecipient);
                }
                if self.recipients.get(&user).is_some_and(|s| *s >= status) {
                    return Ok(());
                }
                let (message_id, conversation_id) = (sent.message_id, sent.conversation_id);
                let event = match status {
                    RecipientStatus::Delivered => {
                        MessageEvent::MessageDelivered(MessageDelivered {
                            message_id,
                            conversation_id,
                            user_id: user,
                            delivered_at: at,
                        })
                    }
                    RecipientStatus::Read => MessageEvent::MessageRead(MessageRead {
                        message_id,
                        conversation_id,
                        user_id: user,
                        read_at: at,
                    }),
                };
                sink.write(event, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            MessageEvent::MessageSent(sent) => self.sent = Some(sent),
            MessageEvent::MessageDelivered(e) => {
                self.advance(e.user_id, RecipientStatus::Delivered)
            }
            MessageEvent::MessageRead(e) => self.advance(e.user_id, RecipientStatus::Read),
        }
    }
}

#[cfg(test)]
mod tests;
