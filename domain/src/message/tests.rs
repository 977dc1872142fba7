#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::json;

use super::{
    Channel, Message, MessageCommand, MessageContent, MessageDelivered, MessageError, MessageEvent,
    MessageRead, MessageSent, MessageServices, MessageStatus, RecipientStatus, SendMessage,
    MAX_TEXT_BYTES,
};
use crate::conversation::ConversationKind;
use crate::{
    ConversationDirectory, ConversationId, DirectoryError, Membership, MessageId, TenantId, UserId,
    EVENT_VERSION_1,
};

/// Answers from a fixed set of conversations, keyed by tenant and conversation.
struct FakeDirectory(BTreeMap<(TenantId, ConversationId), Membership>);

#[async_trait]
impl ConversationDirectory for FakeDirectory {
    async fn membership(
        &self,
        tenant: &TenantId,
        conversation: ConversationId,
    ) -> Result<Option<Arc<Membership>>, DirectoryError> {
        Ok(self
            .0
            .get(&(tenant.clone(), conversation))
            .cloned()
            .map(Arc::new))
    }
}

/// A directory whose store cannot be reached.
struct UnreachableDirectory;

#[async_trait]
impl ConversationDirectory for UnreachableDirectory {
    async fn membership(
        &self,
        _tenant: &TenantId,
        _conversation: ConversationId,
    ) -> Result<Option<Arc<Membership>>, DirectoryError> {
        Err(DirectoryError("connection refused".into()))
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn other_tenant() -> TenantId {
    TenantId::parse("globex").unwrap()
}

fn conversation_id() -> ConversationId {
    ConversationId::parse("0190c7a4-5b1e-7d3a-9f00-0000000000c1").unwrap()
}

fn other_conversation_id() -> ConversationId {
    ConversationId::parse("0190c7a4-5b1e-7d3a-9f00-0000000000c2").unwrap()
}

fn message_id() -> MessageId {
    MessageId::parse("0190c7a4-5b1e-7d3a-9f00-0000000000a1").unwrap()
}

fn membership(members: &[&str]) -> Membership {
    Membership {
        kind: ConversationKind::Group,
        members: members.iter().map(|m| user(m)).collect::<BTreeSet<_>>(),
    }
}

/// The tenant's conversation of alice, bob and carol; another conversation of alice and dave.
fn directory() -> MessageServices {
    Arc::new(FakeDirectory(BTreeMap::from([
        (
            (tenant(), conversation_id()),
            membership(&["alice", "bob", "carol"]),
        ),
        (
            (tenant(), other_conversation_id()),
            membership(&["alice", "dave"]),
        ),
    ])))
}

fn empty_directory() -> MessageServices {
    Arc::new(FakeDirectory(BTreeMap::new()))
}

fn unreachable_directory() -> MessageServices {
    Arc::new(UnreachableDirectory)
}

fn framework() -> TestFramework<Message> {
    TestFramework::with(directory())
}

fn text(value: &str) -> MessageContent {
    MessageContent::Text {
        text: value.to_owned(),
    }
}

fn send_cmd(content: MessageContent) -> SendMessage {
    SendMessage {
        tenant: tenant(),
        message_id: message_id(),
        conversation_id: conversation_id(),
        sender: user("alice"),
        content,
        channels: vec![Channel::Whatsapp, Channel::Telegram],
        at: at(0),
    }
}

fn send(content: MessageContent) -> MessageCommand {
    MessageCommand::Send(send_cmd(content))
}

fn send_text(value: &str) -> MessageCommand {
    send(text(value))
}

fn sent_from(cmd: &SendMessage) -> MessageEvent {
    MessageEvent::MessageSent(MessageSent {
        message_id: cmd.message_id,
        conversation_id: cmd.conversation_id,
        sender_id: cmd.sender.clone(),
        content: cmd.content.clone(),
        channels: cmd.channels.clone(),
        sent_at: cmd.at,
    })
}

/// alice's "hello" to the conversation of alice, bob and carol.
fn hello_sent() -> MessageEvent {
    sent_from(&send_cmd(text("hello")))
}

fn mark(who: &str, status: RecipientStatus) -> MessageCommand {
    MessageCommand::MarkStatus {
        tenant: tenant(),
        user: user(who),
        status,
        at: at(60),
    }
}

fn delivered(who: &str) -> MessageEvent {
    MessageEvent::MessageDelivered(MessageDelivered {
        message_id: message_id(),
        conversation_id: conversation_id(),
        user_id: user(who),
        delivered_at: at(60),
    })
}

fn read(who: &str) -> MessageEvent {
    MessageEvent::MessageRead(MessageRead {
        message_id: message_id(),
        conversation_id: conversation_id(),
        user_id: user(who),
        read_at: at(60),
    })
}

fn state_after(events: Vec<MessageEvent>) -> Message {
    let mut message = Message::default();
    for event in events {
        message.apply(event);
    }
    message
}

fn directory_failure() -> MessageError {
    MessageError::Directory(DirectoryError("any".into()))
}

async fn assert_retry_conflicts(change: impl FnOnce(&mut SendMessage)) {
    let mut cmd = send_cmd(text("hello"));
    change(&mut cmd);
    framework()
        .given(vec![hello_sent()])
        .when_async(MessageCommand::Send(cmd))
        .await
        .then_expect_error(MessageError::IdConflict);
}

// ---- send ----

#[tokio::test]
async fn a_member_sends_a_text_message() {
    framework()
        .given_no_previous_events()
        .when_async(send_text("hello"))
        .await
        .then_expect_events(vec![MessageEvent::MessageSent(MessageSent {
            message_id: message_id(),
            conversation_id: conversation_id(),
            sender_id: user("alice"),
            content: MessageContent::Text {
                text: "hello".to_owned(),
            },
            channels: vec![Channel::Whatsapp, Channel::Telegram],
            sent_at: at(0),
        })]);
}

#[tokio::test]
async fn a_message_without_channels_is_sent() {
    let mut cmd = send_cmd(text("hello"));
    cmd.channels.clear();
    let expected = sent_from(&cmd);
    framework()
        .given_no_previous_events()
        .when_async(MessageCommand::Send(cmd))
        .await
        .then_expect_events(vec![expected]);
}

#[tokio::test]
async fn sending_to_an_unknown_conversation_is_rejected() {
    TestFramework::<Message>::with(empty_directory())
        .given_no_previous_events()
        .when_async(send_text("hello"))
        .await
        .then_expect_error(MessageError::ConversationNotFound);
}

#[tokio::test]
async fn sending_to_a_conversation_of_another_tenant_is_rejected() {
    let mut cmd = send_cmd(text("hello"));
    cmd.tenant = other_tenant();
    framework()
        .given_no_previous_events()
        .when_async(MessageCommand::Send(cmd))
        .await
        .then_expect_error(MessageError::ConversationNotFound);
}

#[tokio::test]
async fn sending_by_a_non_member_is_rejected_as_not_found() {
    let mut cmd = send_cmd(text("hello"));
    cmd.sender = user("dave");
    framework()
        .given_no_previous_events()
        .when_async(MessageCommand::Send(cmd))
        .await
        .then_expect_error(MessageError::ConversationNotFound);
}

#[tokio::test]
async fn sending_checks_membership_of_the_named_conversation() {
    let mut cmd = send_cmd(text("hello"));
    cmd.conversation_id = other_conversation_id();
    cmd.sender = user("dave");
    let expected = sent_from(&cmd);
    framework()
        .given_no_previous_events()
        .when_async(MessageCommand::Send(cmd))
        .await
        .then_expect_events(vec![expected]);
}

#[tokio::test]
async fn sending_empty_text_is_rejected() {
    framework()
        .given_no_previous_events()
        .when_async(send_text(""))
        .await
        .then_expect_error(MessageError::EmptyText);
}

#[tokio::test]
async fn sending_text_of_exactly_the_limit_succeeds() {
    let long = "a".repeat(65_536);
    assert_eq!(long.len(), MAX_TEXT_BYTES);
    framework()
        .given_no_previous_events()
        .when_async(send_text(&long))
        .await
        .then_expect_events(vec![sent_from(&send_cmd(text(&long)))]);
}

#[tokio::test]
async fn sending_text_one_byte_over_the_limit_is_rejected() {
    framework()
        .given_no_previous_events()
        .when_async(send_text(&"a".repeat(65_537)))
        .await
        .then_expect_error(MessageError::TextTooLong {
            max: 65_536,
            got: 65_537,
        });
}

#[tokio::test]
async fn text_length_is_counted_in_utf8_bytes() {
    let fits = "é".repeat(32_768);
    framework()
        .given_no_previous_events()
        .when_async(send_text(&fits))
        .await
        .then_expect_events(vec![sent_from(&send_cmd(text(&fits)))]);

    let over = "é".repeat(32_769);
    assert!(over.chars().count() < MAX_TEXT_BYTES);
    framework()
        .given_no_previous_events()
        .when_async(send_text(&over))
        .await
        .then_expect_error(MessageError::TextTooLong {
            max: 65_536,
            got: 65_538,
        });
}

#[tokio::test]
async fn text_of_four_byte_characters_is_counted_in_bytes() {
    framework()
        .given_no_previous_events()
        .when_async(send_text(&"😀".repeat(16_385)))
        .await
        .then_expect_error(MessageError::TextTooLong {
            max: 65_536,
            got: 65_540,
        });
}

#[tokio::test]
async fn sending_text_containing_nul_is_rejected() {
    framework()
        .given_no_previous_events()
        .when_async(send_text("hel\0lo"))
        .await
        .then_expect_error(MessageError::TextHasNul);
}

#[tokio::test]
async fn sending_a_file_is_rejected_as_not_ready() {
    framework()
        .given_no_previous_events()
        .when_async(send(MessageContent::File {
            file_id: "file-1".to_owned(),
            caption: Some("the plan".to_owned()),
        }))
        .await
        .then_expect_error(MessageError::FileNotReady);
}

#[tokio::test]
async fn a_file_caption_is_validated_like_text() {
    let file = |caption: &str| {
        send(MessageContent::File {
            file_id: "file-1".to_owned(),
            caption: Some(caption.to_owned()),
        })
    };
    let cases = [
        (String::new(), MessageError::EmptyText),
        ("a\0b".to_owned(), MessageError::TextHasNul),
        (
            "a".repeat(65_537),
            MessageError::TextTooLong {
                max: 65_536,
                got: 65_537,
            },
        ),
    ];
    for (caption, expected) in cases {
        framework()
            .given_no_previous_events()
            .when_async(file(&caption))
            .await
            .then_expect_error(expected);
    }
}

#[tokio::test]
async fn content_is_validated_before_the_directory_is_asked() {
    TestFramework::<Message>::with(unreachable_directory())
        .given_no_previous_events()
        .when_async(send_text(""))
        .await
        .then_expect_error(MessageError::EmptyText);
}

#[tokio::test]
async fn retrying_the_same_send_later_records_nothing() {
    let mut retry = send_cmd(text("hello"));
    retry.at = at(3_600);
    framework()
        .given(vec![hello_sent()])
        .when_async(MessageCommand::Send(retry))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_retry_is_answered_from_the_stream_without_the_directory() {
    TestFramework::<Message>::with(unreachable_directory())
        .given(vec![hello_sent()])
        .when_async(send_text("hello"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn reusing_the_id_for_different_text_conflicts() {
    assert_retry_conflicts(|c| c.content = text("goodbye")).await;
}

#[tokio::test]
async fn reusing_the_id_for_a_different_conversation_conflicts() {
    assert_retry_conflicts(|c| c.conversation_id = other_conversation_id()).await;
}

#[tokio::test]
async fn reusing_the_id_for_a_different_sender_conflicts() {
    assert_retry_conflicts(|c| c.sender = user("bob")).await;
}

#[tokio::test]
async fn reusing_the_id_for_different_channels_conflicts() {
    assert_retry_conflicts(|c| c.channels = vec![Channel::Whatsapp]).await;
}

#[tokio::test]
async fn reusing_the_id_for_file_content_conflicts() {
    assert_retry_conflicts(|c| {
        c.content = MessageContent::File {
            file_id: "file-1".to_owned(),
            caption: None,
        }
    })
    .await;
}

#[tokio::test]
async fn sending_when_the_directory_is_unreachable_fails() {
    TestFramework::<Message>::with(unreachable_directory())
        .given_no_previous_events()
        .when_async(send_text("hello"))
        .await
        .then_expect_error(directory_failure());
}

#[tokio::test]
async fn a_directory_failure_keeps_its_cause() {
    let result = TestFramework::<Message>::with(unreachable_directory())
        .given_no_previous_events()
        .when_async(send_text("hello"))
        .await
        .inspect_result();
    let Err(MessageError::Directory(error)) = result else {
        panic!("expected a directory error, got {result:?}");
    };
    assert_eq!(
        error.to_string(),
        "conversation directory unavailable: connection refused"
    );
}

// ---- status ----

#[tokio::test]
async fn a_recipient_reports_delivery() {
    framework()
        .given(vec![hello_sent()])
        .when_async(mark("bob", RecipientStatus::Delivered))
        .await
        .then_expect_events(vec![MessageEvent::MessageDelivered(MessageDelivered {
            message_id: message_id(),
            conversation_id: conversation_id(),
            user_id: user("bob"),
            delivered_at: at(60),
        })]);
}

#[tokio::test]
async fn a_recipient_reports_reading() {
    framework()
        .given(vec![hello_sent()])
        .when_async(mark("bob", RecipientStatus::Read))
        .await
        .then_expect_events(vec![MessageEvent::MessageRead(MessageRead {
            message_id: message_id(),
            conversation_id: conversation_id(),
            user_id: user("bob"),
            read_at: at(60),
        })]);
}

#[tokio::test]
async fn reading_after_delivery_is_recorded() {
    framework()
        .given(vec![hello_sent(), delivered("bob")])
        .when_async(mark("bob", RecipientStatus::Read))
        .await
        .then_expect_events(vec![read("bob")]);
}

#[tokio::test]
async fn delivery_after_reading_records_nothing() {
    framework()
        .given(vec![hello_sent(), read("bob")])
        .when_async(mark("bob", RecipientStatus::Delivered))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn reading_twice_records_nothing() {
    framework()
        .given(vec![hello_sent(), read("bob")])
        .when_async(mark("bob", RecipientStatus::Read))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn delivery_twice_records_nothing() {
    framework()
        .given(vec![hello_sent(), delivered("bob")])
        .when_async(mark("bob", RecipientStatus::Delivered))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn status_is_tracked_per_recipient() {
    framework()
        .given(vec![hello_sent(), read("bob")])
        .when_async(mark("carol", RecipientStatus::Delivered))
        .await
        .then_expect_events(vec![delivered("carol")]);
}

#[tokio::test]
async fn the_sender_cannot_report_status() {
    framework()
        .given(vec![hello_sent()])
        .when_async(mark("alice", RecipientStatus::Read))
        .await
        .then_expect_error(MessageError::NotARecipient);
}

#[tokio::test]
async fn a_non_member_reporting_status_is_not_found() {
    framework()
        .given(vec![hello_sent()])
        .when_async(mark("dave", RecipientStatus::Delivered))
        .await
        .then_expect_error(MessageError::NotFound);
}

#[tokio::test]
async fn reporting_status_of_an_unknown_message_is_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(mark("bob", RecipientStatus::Delivered))
        .await
        .then_expect_error(MessageError::NotFound);
}

#[tokio::test]
async fn reporting_status_from_another_tenant_is_not_found() {
    framework()
        .given(vec![hello_sent()])
        .when_async(MessageCommand::MarkStatus {
            tenant: other_tenant(),
            user: user("bob"),
            status: RecipientStatus::Read,
            at: at(60),
        })
        .await
        .then_expect_error(MessageError::NotFound);
}

#[tokio::test]
async fn reporting_status_when_the_conversation_is_gone_is_not_found() {
    TestFramework::<Message>::with(empty_directory())
        .given(vec![hello_sent()])
        .when_async(mark("bob", RecipientStatus::Read))
        .await
        .then_expect_error(MessageError::NotFound);
}

#[tokio::test]
async fn reporting_status_when_the_directory_is_unreachable_fails() {
    TestFramework::<Message>::with(unreachable_directory())
        .given(vec![hello_sent()])
        .when_async(mark("bob", RecipientStatus::Read))
        .await
        .then_expect_error(directory_failure());
}

// ---- state ----

#[test]
fn a_new_message_state_is_not_sent() {
    let message = Message::default();
    assert!(message.sent.is_none());
    assert_eq!(message.status, MessageStatus::Accepted);
    assert!(message.recipients.is_empty());
}

#[test]
fn applying_message_sent_records_it() {
    let message = state_after(vec![hello_sent()]);
    let MessageEvent::MessageSent(expected) = hello_sent() else {
        unreachable!("hello_sent builds a MessageSent");
    };
    assert_eq!(message.sent, Some(expected));
    assert!(message.recipients.is_empty());
}

#[test]
fn the_message_status_is_the_furthest_any_recipient_reached() {
    let delivered_only = state_after(vec![hello_sent(), delivered("bob")]);
    assert_eq!(delivered_only.status, MessageStatus::Delivered);

    let message = state_after(vec![
        hello_sent(),
        delivered("bob"),
        read("carol"),
        delivered("carol"),
    ]);
    assert_eq!(message.status, MessageStatus::Read);
    assert_eq!(
        message.recipients,
        BTreeMap::from([
            (user("bob"), RecipientStatus::Delivered),
            (user("carol"), RecipientStatus::Read),
        ])
    );
}

#[test]
fn a_later_delivery_does_not_lower_a_recipients_status() {
    let message = state_after(vec![hello_sent(), read("bob"), delivered("bob")]);
    assert_eq!(
        message.recipients.get(&user("bob")),
        Some(&RecipientStatus::Read)
    );
    assert_eq!(message.status, MessageStatus::Read);
}

#[test]
fn recipient_status_orders_delivered_before_read() {
    assert!(RecipientStatus::Delivered < RecipientStatus::Read);
    assert_eq!(
        MessageStatus::from(RecipientStatus::Delivered),
        MessageStatus::Delivered
    );
    assert_eq!(
        MessageStatus::from(RecipientStatus::Read),
        MessageStatus::Read
    );
}

// ---- stored form ----

#[test]
fn message_sent_is_stored_externally_tagged_with_tagged_content() {
    assert_eq!(
        serde_json::to_value(hello_sent()).unwrap(),
        json!({
            "MessageSent": {
                "message_id": "0190c7a4-5b1e-7d3a-9f00-0000000000a1",
                "conversation_id": "0190c7a4-5b1e-7d3a-9f00-0000000000c1",
                "sender_id": "alice",
                "content": { "type": "text", "text": "hello" },
                "channels": ["whatsapp", "telegram"],
                "sent_at": "2023-11-14T22:13:20Z",
            }
        })
    );
}

#[test]
fn status_events_are_stored_externally_tagged() {
    assert_eq!(
        serde_json::to_value(delivered("bob")).unwrap(),
        json!({
            "MessageDelivered": {
                "message_id": "0190c7a4-5b1e-7d3a-9f00-0000000000a1",
                "conversation_id": "0190c7a4-5b1e-7d3a-9f00-0000000000c1",
                "user_id": "bob",
                "delivered_at": "2023-11-14T22:14:20Z",
            }
        })
    );
    assert_eq!(
        serde_json::to_value(read("bob")).unwrap(),
        json!({
            "MessageRead": {
                "message_id": "0190c7a4-5b1e-7d3a-9f00-0000000000a1",
                "conversation_id": "0190c7a4-5b1e-7d3a-9f00-0000000000c1",
                "user_id": "bob",
                "read_at": "2023-11-14T22:14:20Z",
            }
        })
    );
}

#[test]
fn file_content_is_tagged_and_omits_a_missing_caption() {
    let without = MessageContent::File {
        file_id: "file-1".to_owned(),
        caption: None,
    };
    assert_eq!(
        serde_json::to_value(&without).unwrap(),
        json!({ "type": "file", "file_id": "file-1" })
    );
    let with = MessageContent::File {
        file_id: "file-1".to_owned(),
        caption: Some("the plan".to_owned()),
    };
    assert_eq!(
        serde_json::to_value(&with).unwrap(),
        json!({ "type": "file", "file_id": "file-1", "caption": "the plan" })
    );
    let read_back: MessageContent =
        serde_json::from_value(json!({ "type": "file", "file_id": "file-1" })).unwrap();
    assert_eq!(read_back, without);
}

#[test]
fn every_event_type_is_its_variant_name_at_version_one() {
    let cases = [
        (hello_sent(), "MessageSent"),
        (delivered("bob"), "MessageDelivered"),
        (read("bob"), "MessageRead"),
    ];
    for (event, name) in cases {
        assert_eq!(event.event_type(), name);
        assert_eq!(event.event_version(), EVENT_VERSION_1);
        assert_eq!(event.event_version(), "1.0");
        let value = serde_json::to_value(&event).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, [name], "stored tag of {name}");
        let back: MessageEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn stored_events_with_invalid_ids_are_refused_on_read() {
    let stored = json!({
        "MessageRead": {
            "message_id": "0190c7a4-5b1e-7d3a-9f00-0000000000a1",
            "conversation_id": "0190c7a4-5b1e-7d3a-9f00-0000000000c1",
            "user_id": "not a user",
            "read_at": "2023-11-14T22:14:20Z",
        }
    });
    assert!(serde_json::from_value::<MessageEvent>(stored).is_err());
}

#[test]
fn directory_errors_compare_by_kind_only() {
    assert_eq!(
        MessageError::Directory(DirectoryError("one".into())),
        MessageError::Directory(DirectoryError("two".into()))
    );
    assert_ne!(directory_failure(), MessageError::NotFound);
    assert_ne!(
        MessageError::TextTooLong { max: 1, got: 2 },
        MessageError::TextTooLong { max: 1, got: 3 }
    );
}
