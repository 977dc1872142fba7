//! Writing through the real command side, for the tests of everything downstream of it (the
//! relay, the projector, replay): they need events as the engine writes them, and may not
//! depend on the write side themselves.

pub use chat4all_commands::{
    CommandContext, CommandService, CreateConversationRequest, Limits, SendMessageRequest,
};
pub use chat4all_domain::conversation::ConversationKind;
pub use chat4all_domain::message::{MessageContent, RecipientStatus};
pub use chat4all_domain::{ConversationId, MessageId, TenantId, UserId};

/// A command context for `user` of tenant `acme`.
///
/// # Panics
/// When `user` is not a valid user id.
pub fn context(user: &str) -> CommandContext {
    CommandContext {
        tenant: TenantId::parse("acme").unwrap(),
        actor: user_id(user),
        is_admin: false,
        trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
        correlation_id: "test-correlation".to_owned(),
        causation_id: "test-request".to_owned(),
    }
}

/// # Panics
/// When `user` is not a valid user id.
pub fn user_id(user: &str) -> UserId {
    UserId::parse(user).unwrap_or_else(|e| panic!("{user}: {e}"))
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
        members: members.iter().map(|u| user_id(u)).collect(),
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

/// Sends `text` from `user` to `conversation`.
///
/// # Panics
/// When the store refuses it.
pub async fn send_text(
    service: &CommandService,
    user: &str,
    conversation: ConversationId,
    text: &str,
) -> MessageId {
    let request = SendMessageRequest {
        message_id: None,
        conversation_id: conversation,
        content: MessageContent::Text {
            text: text.to_owned(),
        },
        channels: vec![],
    };
    service
        .send_message(&context(user), request, chrono::Utc::now())
        .await
        .unwrap_or_else(|e| panic!("sending: {e}"))
        .message_id
}
