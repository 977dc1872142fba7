//! The command service against the real store: concurrency, retries and answers.

use chat4all_commands::{CommandContext, CommandError, CommandService, Limits, SendMessageRequest};
use chat4all_domain::conversation::ConversationKind;
use chat4all_domain::message::{MessageContent, MessageError};
use chat4all_domain::{MessageId, UserId};
use chat4all_testsupport::database::fresh_database;
use chrono::Utc;

fn ctx(user: &str) -> CommandContext {
    chat4all_testsupport::writes::context(user)
}

async fn group(service: &CommandService) -> chat4all_domain::ConversationId {
    chat4all_testsupport::writes::create_conversation(
        service,
        ConversationKind::Group,
        &["alice", "bob", "carol"],
    )
    .await
}

fn text(
    conversation: chat4all_domain::ConversationId,
    id: MessageId,
    text: &str,
) -> SendMessageRequest {
    SendMessageRequest {
        message_id: Some(id),
        conversation_id: conversation,
        content: MessageContent::Text {
            text: text.to_owned(),
        },
        channels: vec![],
    }
}

#[tokio::test]
async fn the_same_send_racing_itself_is_stored_once_and_answered_alike() {
    let (_, pool) = fresh_database().await;
    let service = std::sync::Arc::new(CommandService::new(pool.clone(), Limits::default()));
    let conversation = group(&service).await;
    let id = MessageId::generate();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .send_message(&ctx("bob"), text(conversation, id, "once"), Utc::now())
                    .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageSent'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(count, 1);

    let other = service
        .send_message(&ctx("bob"), text(conversation, id, "twice"), Utc::now())
        .await;
    assert!(
        matches!(other, Err(CommandError::Message(MessageError::IdConflict))),
        "{other:?}"
    );
}

#[tokio::test]
async fn concurrent_joins_to_one_conversation_all_land() {
    let (_, pool) = fresh_database().await;
    let service = std::sync::Arc::new(CommandService::new(pool.clone(), Limits::default()));
    let conversation = group(&service).await;
    // Every join appends to the same stream: all but one lose each race and are re-run.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                let user = UserId::parse(&format!("user{i}")).unwrap();
                service
                    .add_member(&ctx("alice"), conversation, user, Utc::now())
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let joined: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MemberJoined'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(joined, 12);
    let sequences: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_type = 'Conversation' ORDER BY sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        sequences,
        (1..=13).collect::<Vec<_>>(),
        "one gap-free stream"
    );
}
