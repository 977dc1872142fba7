//! What may be asked of a conversation. Every command names its actor and carries the time it was
//! accepted, so deciding stays a pure function of the stream.

use chrono::{DateTime, Utc};

use super::ConversationKind;
use crate::{ConversationId, UserId};

/// Create a private or group conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateConversation {
    pub conversation_id: ConversationId,
    pub kind: ConversationKind,
    /// In the order given; duplicates are rejected rather than silently merged.
    pub members: Vec<UserId>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub actor: UserId,
    pub max_group_members: usize,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    Create(CreateConversation),
    /// A member adds someone to a group.
    AddMember {
        user: UserId,
        actor: UserId,
        max_group_members: usize,
        at: DateTime<Utc>,
    },
    /// A member leaves, or the creator or an administrator removes someone.
    RemoveMember {
        user: UserId,
        actor: UserId,
        actor_is_admin: bool,
        at: DateTime<Utc>,
    },
    /// A member has read every message up to `up_to_seq`.
    MarkRead {
        user: UserId,
        up_to_seq: u64,
        at: DateTime<Utc>,
    },
}
