//! What happened to a conversation. Variant names are the stored `event_type` and never change;
//! a change of shape gets a new `event_version` and an upcaster.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{ConversationKind, CreateConversation};
use crate::{ConversationId, UserId, EVENT_VERSION_1};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationCreated {
    pub conversation_id: ConversationId,
    pub kind: ConversationKind,
    pub members: Vec<UserId>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
}

impl ConversationCreated {
    /// Whether `cmd` asks for exactly this conversation (a retry), ignoring when it was asked.
    pub fn same_request_as(&self, cmd: &CreateConversation) -> bool {
        self.kind == cmd.kind
            && self.members == cmd.members
            && self.name == cmd.name
            && self.description == cmd.description
            && self.metadata == cmd.metadata
            && self.created_by == cmd.actor
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberJoined {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub added_by: UserId,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberLeft {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub removed_by: UserId,
    pub left_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadHorizonAdvanced {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub up_to_seq: u64,
    pub read_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    ConversationCreated(ConversationCreated),
    MemberJoined(MemberJoined),
    MemberLeft(MemberLeft),
    ReadHorizonAdvanced(ReadHorizonAdvanced),
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ConversationCreated(_) => "ConversationCreated",
            Self::MemberJoined(_) => "MemberJoined",
            Self::MemberLeft(_) => "MemberLeft",
            Self::ReadHorizonAdvanced(_) => "ReadHorizonAdvanced",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}
