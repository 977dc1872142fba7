//! Set-up for tests of the write side and of the crates built on it (behind the `testing`
//! feature, so that production builds never carry it).

#![allow(clippy::unwrap_used)]

use chat4all_domain::conversation::ConversationKind;
use chat4all_domain::{ConversationId, TenantId, UserId};

use crate::{CommandContext, CommandService, CreateConversationRequest};

/// A command context for `user` of tenant `acme`, as tests need one.
///
/// # Panics
/// When `user` is not a valid user id.
pub fn context(user: &str) -> CommandContext {
    CommandContext {
        tenant: TenantId::parse("acme").unwrap_or_else(|e| panic!("{e}")),
        actor: UserId::parse(user).unwrap_or_else(|e| panic!("{user}: {e}")),
        is_admin: false,
        trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
        correlation_id: "test-correlation".to_owned(),
        causation_id: "test-request".to_owned(),
    }
}

/// Creates a conversation of `kind` with `members` (the first is the creator) in tenant `acme`.
///
/// # Panics
/// When the store refuses it.
pub async fn create_conversation(
    service: &CommandService,
    kind: ConversationKind,
    members: &[&str],
) -> ConversationId {
    let request = CreateConversationRequest {
        conversation_id: None,
        kind,
        members: members
            .iter()
            .map(|u| UserId::parse(u).unwrap_or_else(|e| panic!("{u}: {e}")))
            .collect(),
        name: None,
        description: None,
        metadata: None,
    };
    service
        .create_conversation(&context(members[0]), request, chrono::Utc::now())
        .await
        .unwrap_or_else(|e| panic!("creating a conversation: {e}"))
        .conversation
        .conversation_id
}
