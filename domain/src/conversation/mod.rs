//! The `Conversation` aggregate: membership and read horizons of one conversation.
//!
//! Invariants: a private conversation has exactly two members, for its whole life; a group starts
//! with 3 up to `max_group_members` distinct members and never grows past that; the creator is a
//! member; only members act; each member's read horizon only moves forward.

mod commands;
mod error;
mod events;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

pub use commands::{ConversationCommand, CreateConversation};
pub use error::ConversationError;
pub use events::{
    ConversationCreated, ConversationEvent, MemberJoined, MemberLeft, ReadHorizonAdvanced,
};

use crate::{ConversationId, UserId};

/// Private (one to one) or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Private,
    Group,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Group => "group",
        }
    }
}

/// The smallest group: two people are a private conversation.
pub const MIN_GROUP_MEMBERS: usize = 3;
/// The default largest group; deployments may configure another.
pub const DEFAULT_MAX_GROUP_MEMBERS: usize = 100;

/// A member and the facts kept about it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberState {
    pub joined_at: Option<DateTime<Utc>>,
    pub last_read_seq: u64,
}

/// State rebuilt from a conversation's events; `None` details mean "not created yet".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Conversation {
    pub created: Option<ConversationCreated>,
    pub members: BTreeMap<UserId, MemberState>,
}

impl Conversation {
    pub fn id(&self) -> Option<ConversationId> {
        self.created.as_ref().map(|c| c.conversation_id)
    }

    pub fn is_member(&self, user: &UserId) -> bool {
        self.members.contains_key(user)
    }

    pub fn read_horizon(&self, user: &UserId) -> u64 {
        self.members.get(user).map_or(0, |m| m.last_read_seq)
    }

    fn require_created(&self) -> Result<&ConversationCreated, ConversationError> {
        self.created.as_ref().ok_or(ConversationError::NotFound)
    }

    /// A member acting on the conversation; anyone else is told it does not exist, so that
    /// conversations one cannot see cannot be probed.
    fn require_member(&self, actor: &UserId) -> Result<&ConversationCreated, ConversationError> {
        let created = self.require_created()?;
        if self.is_member(actor) {
            Ok(created)
        } else {
            Err(ConversationError::NotFound)
        }
    }

    fn decide_create(
        &self,
        cmd: CreateConversation,
    ) -> Result<Option<ConversationEvent>, ConversationError> {
        if let Some(existing) = &self.created {
            // The client-chosen id makes creation retryable: the same request is a no-op.
            return if existing.same_request_as(&cmd) {
                Ok(None)
            } else {
                Err(ConversationError::AlreadyExists)
            };
        }
        let mut seen = std::collections::BTreeSet::new();
        for member in &cmd.members {
            if !seen.insert(member) {
                return Err(ConversationError::DuplicateMember(member.clone()));
            }
        }
        if !seen.contains(&cmd.actor) {
            return Err(ConversationError::CreatorNotMember);
        }
        match cmd.kind {
            ConversationKind::Private if cmd.members.len() != 2 => {
                return Err(ConversationError::PrivateNeedsTwoMembers {
                    got: cmd.members.len(),
                })
            }
            ConversationKind::Group
                if !(MIN_GROUP_MEMBERS..=cmd.max_group_members).contains(&cmd.members.len()) =>
            {
                return Err(ConversationError::GroupSize {
                    min: MIN_GROUP_MEMBERS,
                    max: cmd.max_group_members,
                    got: cmd.members.len(),
                })
            }
            _ => {}
        }
        Ok(Some(ConversationEvent::ConversationCreated(
            ConversationCreated {
                conversation_id: cmd.conversation_id,
                kind: cmd.kind,
                members: cmd.members,
                name: cmd.name,
                description: cmd.description,
                metadata: cmd.metadata,
                created_by: cmd.actor,
                created_at: cmd.at,
            },
        )))
    }

    fn decide(
        &self,
        command: ConversationCommand,
    ) -> Result<Option<ConversationEvent>, ConversationError> {
        match command {
            ConversationCommand::Create(cmd) => self.decide_create(cmd),
            ConversationCommand::AddMember {
                user,
                actor,
                max_group_members,
                at,
            } => {
                let created = self.require_member(&actor)?;
                if created.kind == ConversationKind::Private {
                    return Err(ConversationError::PrivateMembersFixed);
                }
                if self.is_member(&user) {
                    return Ok(None);
                }
                if self.members.len() >= max_group_members {
                    return Err(ConversationError::GroupFull {
                        max: max_group_members,
                    });
                }
                Ok(Some(ConversationEvent::MemberJoined(MemberJoined {
                    conversation_id: created.conversation_id,
                    user_id: user,
                    added_by: actor,
                    joined_at: at,
                })))
            }
            ConversationCommand::RemoveMember {
                user,
                actor,
                actor_is_admin,
                at,
            } => {
                let created = self.require_created()?;
                if !self.is_member(&actor) && !actor_is_admin {
                    return Err(ConversationError::NotFound);
                }
                if created.kind == ConversationKind::Private {
                    return Err(ConversationError::PrivateMembersFixed);
                }
                if user != actor && !actor_is_admin && created.created_by != actor {
                    return Err(ConversationError::NotAllowed);
                }
                if !self.is_member(&user) {
                    return Err(ConversationError::MemberNotFound(user));
                }
                Ok(Some(ConversationEvent::MemberLeft(MemberLeft {
                    conversation_id: created.conversation_id,
                    user_id: user,
                    removed_by: actor,
                    left_at: at,
                })))
            }
            ConversationCommand::MarkRead {
                user,
                up_to_seq,
                at,
            } => {
                let created = self.require_member(&user)?;
                // Horizons only move forward; an older horizon is acknowledged, not an error,
                // because read receipts from several devices race each other.
                if up_to_seq <= self.read_horizon(&user) {
                    return Ok(None);
                }
                Ok(Some(ConversationEvent::ReadHorizonAdvanced(
                    ReadHorizonAdvanced {
                        conversation_id: created.conversation_id,
                        user_id: user,
                        up_to_seq,
                        read_at: at,
                    },
                )))
            }
        }
    }
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "Conversation";
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = ConversationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ConversationEvent::ConversationCreated(created) => {
                for user in &created.members {
                    self.members.insert(
                        user.clone(),
                        MemberState {
                            joined_at: Some(created.created_at),
                            last_read_seq: 0,
                        },
                    );
                }
                self.created = Some(created);
            }
            ConversationEvent::MemberJoined(joined) => {
                self.members.insert(
                    joined.user_id,
                    MemberState {
                        joined_at: Some(joined.joined_at),
                        last_read_seq: 0,
                    },
                );
            }
            ConversationEvent::MemberLeft(left) => {
                self.members.remove(&left.user_id);
            }
            ConversationEvent::ReadHorizonAdvanced(read) => {
                if let Some(member) = self.members.get_mut(&read.user_id) {
                    member.last_read_seq = member.last_read_seq.max(read.up_to_seq);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
