//! Applying the store's events, in the relay's order, builds the read models; applying them
//! again changes nothing.

use chat4all_eventstore::{read_batch, Checkpoint, Envelope};
pub use chat4all_projections::testing::snapshot;
use chat4all_projections::{apply, apply_batch, Notification};
use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::writes::{
    create_conversation, CommandContext, CommandService, ConversationId, ConversationKind,
    CreateConversationRequest, Limits, MessageId, RecipientStatus, UserId,
};
use chrono::Utc;
use sqlx::{Connection, PgPool};

pub fn ctx(user: &str) -> CommandContext {
    chat4all_testsupport::writes::context(user)
}

pub async fn send(
    service: &CommandService,
    user: &str,
    conversation: ConversationId,
    text: &str,
) -> MessageId {
    chat4all_testsupport::writes::send_text(service, user, conversation, text).await
}

/// Applies every stored event in the relay's order, in one transaction per event.
pub async fn project_all(pool: &PgPool) -> Vec<Notification> {
    let mut conn = pool.acquire().await.unwrap();
    let mut notifications = Vec::new();
    for event in stored_events(pool).await {
        let mut tx = conn.begin().await.unwrap();
        notifications.extend(apply(&mut tx, &event).await.unwrap());
        tx.commit().await.unwrap();
    }
    notifications
}

/// Applies every stored event in the relay's order, `size` events per transaction.
pub async fn project_in_batches(pool: &PgPool, size: usize) -> Vec<Notification> {
    let mut conn = pool.acquire().await.unwrap();
    let mut notifications = Vec::new();
    for batch in stored_events(pool).await.chunks(size) {
        let mut tx = conn.begin().await.unwrap();
        notifications.extend(apply_batch(&mut tx, batch).await.unwrap());
        tx.commit().await.unwrap();
    }
    notifications
}

/// Every stored event, in the relay's order.
pub async fn stored_events(pool: &PgPool) -> Vec<Envelope> {
    // The gap-safe read holds back events committed after the oldest transaction still open
    // anywhere in the cluster (other tests run alongside): read until every stored event is in.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut after = Checkpoint::default();
    let mut events = Vec::new();
    loop {
        let batch = read_batch(pool, after, 100).await.unwrap();
        let Some(last) = batch.last() else {
            if i64::try_from(events.len()).unwrap() >= stored {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stored events stayed held back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        after = last.checkpoint();
        events.extend(
            batch
                .into_iter()
                .map(|stored| Envelope::from_stored(stored).unwrap()),
        );
    }
    events
}

async fn clear_read_models(pool: &PgPool) {
    sqlx::query("TRUNCATE rm_conversations, rm_members, rm_messages, rm_message_history")
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_batch_applies_exactly_as_the_same_events_one_by_one() {
    let (_, pool) = fresh_database().await;
    let service = CommandService::new(pool.clone(), Limits::default());
    let user = |u: &str| UserId::parse(u).unwrap();
    let group = create_conversation(
        &service,
        ConversationKind::Group,
        &["alice", "bob", "carol"],
    )
    .await;
    let private = create_conversation(&service, ConversationKind::Private, &["alice", "bob"]).await;
    let first = send(&service, "alice", group, "one").await;
    send(&service, "bob", private, "hi").await;
    send(&service, "bob", group, "two").await;
    // A read horizon below messages that the same batch created after it, and above others.
    service
        .mark_read(&ctx("carol"), group, Some(1), Utc::now())
        .await
        .unwrap();
    send(&service, "alice", group, "three").await;
    service
        .add_member(&ctx("alice"), group, user("dave"), Utc::now())
        .await
        .unwrap();
    send(&service, "carol", group, "four").await;
    service
        .mark_status(&ctx("bob"), first, RecipientStatus::Delivered, Utc::now())
        .await
        .unwrap();
    service
        .mark_status(&ctx("carol"), first, RecipientStatus::Read, Utc::now())
        .await
        .unwrap();
    service
        .remove_member(&ctx("carol"), group, user("carol"), Utc::now())
        .await
        .unwrap();
    send(&service, "dave", group, "five").await;
    service
        .add_member(&ctx("alice"), group, user("carol"), Utc::now())
        .await
        .unwrap();
    send(&service, "alice", group, "six").await;
    service
        .mark_read(&ctx("dave"), group, Some(5), Utc::now())
        .await
        .unwrap();
    service
        .mark_read(&ctx("alice"), private, None, Utc::now())
        .await
        .unwrap();

    let one_by_one = project_all(&pool).await;
    let expected = snapshot(&pool).await;
    let members: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT m.user_id, m.last_read_seq, greatest(c.last_seq - m.last_read_seq - m.own_since_read, 0) \
           FROM rm_members m JOIN rm_conversations c USING (tenant_id, conversation_id) \
          WHERE conversation_id = $1 ORDER BY user_id",
    )
    .bind(group.as_uuid())
    .fetch_all(&pool)
    .await
    .unwrap();
    // dave joined after "three" and read up to "five"; carol rejoined after "five": what was said
    // before joining is not unread, so only "six" is unread for either.
    assert_eq!(
        members,
        vec![
            ("alice".to_owned(), 0, 3),
            ("bob".to_owned(), 0, 5),
            ("carol".to_owned(), 5, 1),
            ("dave".to_owned(), 5, 1),
        ]
    );
    // Reading a conversation marks read what others said up to the horizon (and only what was
    // not already read: dave's horizon started where he joined).
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT content->>'text', status FROM rm_messages ORDER BY created_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected_statuses = [
        ("one", "read"),
        ("hi", "read"),
        ("two", "accepted"),
        ("three", "accepted"),
        ("four", "read"),
        ("five", "accepted"),
        ("six", "accepted"),
    ]
    .map(|(t, s)| (t.to_owned(), s.to_owned()));
    assert_eq!(statuses, expected_statuses);
    let read_updates = |notifications: &[Notification]| {
        let mut updates: Vec<String> = notifications
            .iter()
            .filter(|n| n.frame["type"] == "message.status_updated")
            .map(|n| {
                format!(
                    "{} {}",
                    n.frame["data"]["seq"], n.frame["data"]["new_status"]
                )
            })
            .collect();
        updates.sort();
        updates
    };
    assert_eq!(
        read_updates(&one_by_one),
        ["1 \"read\"", "1 \"read\"", "4 \"read\""].map(str::to_owned),
        "one and hi were read by horizons before any receipt, four by dave's"
    );
    let in_order = |notifications: &[Notification]| {
        notifications
            .iter()
            .filter(|n| n.frame["type"] != "message.status_updated")
            .cloned()
            .collect::<Vec<_>>()
    };
    for size in [1000, 3, 7] {
        clear_read_models(&pool).await;
        let batched = project_in_batches(&pool, size).await;
        assert_eq!(snapshot(&pool).await, expected, "batches of {size}");
        // Status changes that a horizon makes to stored messages are announced at the end of
        // their batch; everything else in the same order.
        assert_eq!(
            in_order(&batched),
            in_order(&one_by_one),
            "announcements in batches of {size}"
        );
        assert_eq!(
            read_updates(&batched),
            read_updates(&one_by_one),
            "batches of {size}"
        );
        // And once more, as a re-delivery: nothing changes, nothing is announced.
        assert!(project_in_batches(&pool, size).await.is_empty());
        assert_eq!(
            snapshot(&pool).await,
            expected,
            "re-delivered in batches of {size}"
        );
    }
}

#[tokio::test]
async fn messages_are_numbered_per_conversation_and_counted_unread_until_read() {
    let (_, pool) = fresh_database().await;
    let service = CommandService::new(pool.clone(), Limits::default());
    let request = CreateConversationRequest {
        conversation_id: None,
        kind: ConversationKind::Group,
        members: ["alice", "bob", "carol"]
            .map(|u| UserId::parse(u).unwrap())
            .to_vec(),
        name: Some("team".to_owned()),
        description: None,
        metadata: None,
    };
    let conversation = service
        .create_conversation(&ctx("alice"), request, Utc::now())
        .await
        .unwrap()
        .conversation
        .conversation_id;
    let first = send(&service, "alice", conversation, "one").await;
    send(&service, "bob", conversation, "two").await;
    send(&service, "alice", conversation, "three").await;
    service
        .mark_status(&ctx("bob"), first, RecipientStatus::Read, Utc::now())
        .await
        .unwrap();
    service
        .mark_read(&ctx("bob"), conversation, Some(2), Utc::now())
        .await
        .unwrap();

    let notifications = project_all(&pool).await;
    let seqs: Vec<(String, i64)> =
        sqlx::query_as("SELECT content->>'text', seq FROM rm_messages ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        seqs,
        vec![
            ("one".to_owned(), 1),
            ("two".to_owned(), 2),
            ("three".to_owned(), 3)
        ]
    );
    let members: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT m.user_id, m.last_read_seq, greatest(c.last_seq - m.last_read_seq - m.own_since_read, 0) \
           FROM rm_members m JOIN rm_conversations c USING (tenant_id, conversation_id) ORDER BY user_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // alice: bob's one message; bob read up to 2, so alice's third is unread; carol: all three.
    assert_eq!(
        members,
        vec![
            ("alice".to_owned(), 0, 1),
            ("bob".to_owned(), 2, 1),
            ("carol".to_owned(), 0, 3)
        ]
    );
    let (last_seq, preview): (i64, String) =
        sqlx::query_as("SELECT last_seq, last_message->>'preview' FROM rm_conversations")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((last_seq, preview.as_str()), (3, "three"));
    let status: String = sqlx::query_scalar("SELECT status FROM rm_messages WHERE seq = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "read");
    let created: Vec<_> = notifications
        .iter()
        .filter(|n| n.frame["type"] == "message.created")
        .collect();
    assert_eq!(created.len(), 3);
    assert_eq!(created[2].frame["data"]["seq"], 3);
    assert_eq!(created[0].subject, format!("conversation:{conversation}"));

    // Everything again, as after a crash before the offsets were stored: no effect at all.
    let before = snapshot(&pool).await;
    let again = project_all(&pool).await;
    assert!(
        again.is_empty(),
        "a re-delivery announces nothing: {again:?}"
    );
    assert_eq!(snapshot(&pool).await, before);
}
