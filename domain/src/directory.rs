//! What a command may ask about other aggregates. A message needs to know whether its sender (or a
//! recipient updating its status) is a member of the conversation; that fact belongs to the
//! `Conversation` aggregate, so it comes in through this trait, implemented by the write side
//! from the event store itself (never from read models, which may lag).

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::conversation::ConversationKind;
use crate::{ConversationId, TenantId, UserId};

/// The current members of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub kind: ConversationKind,
    pub members: BTreeSet<UserId>,
}

impl Membership {
    pub fn contains(&self, user: &UserId) -> bool {
        self.members.contains(user)
    }
}

/// The directory could not answer (the store is unreachable); the command must fail without effect.
#[derive(Debug, thiserror::Error)]
#[error("conversation directory unavailable: {0}")]
pub struct DirectoryError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Answers membership questions for the `Message` aggregate.
#[async_trait]
pub trait ConversationDirectory: Send + Sync {
    /// The conversation's current membership, or `None` when it does not exist in this tenant.
    /// Shared, because implementations cache it and every send asks.
    ///
    /// # Errors
    /// [`DirectoryError`] when the answer cannot be obtained.
    async fn membership(
        &self,
        tenant: &TenantId,
        conversation: ConversationId,
    ) -> Result<Option<Arc<Membership>>, DirectoryError>;
}
