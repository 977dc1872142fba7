//! Loading from a snapshot gives exactly the state a full replay gives.

use std::collections::HashMap;

use chat4all_commands::Executor;
use chat4all_domain::conversation::{ConversationCommand, ConversationKind, CreateConversation};
use chat4all_domain::{Conversation, ConversationId, UserId};
use chat4all_eventstore::Appender;
use chat4all_testsupport::database::fresh_database;
use chrono::{TimeZone, Utc};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn at(second: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + second, 0).unwrap()
}

#[tokio::test]
async fn a_long_conversation_loads_the_same_from_snapshot_and_from_replay() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    let snapshotted: Executor<Conversation> =
        Executor::new(pool.clone(), appender.clone(), ()).with_snapshots(10, 1);
    let replayed: Executor<Conversation> = Executor::new(pool.clone(), appender, ());
    let id = ConversationId::generate();
    let stream = format!("acme:{id}");
    let create = ConversationCommand::Create(CreateConversation {
        conversation_id: id,
        kind: ConversationKind::Group,
        members: vec![user("alice"), user("bob"), user("carol")],
        name: Some("team".to_owned()),
        description: None,
        metadata: None,
        actor: user("alice"),
        max_group_members: 100,
        at: at(0),
    });
    snapshotted
        .execute(&stream, create, HashMap::new())
        .await
        .unwrap();

    let readers = ["alice", "bob", "carol", "dave"];
    for step in 1..=57_u64 {
        let command = match step {
            13 => ConversationCommand::AddMember {
                user: user("dave"),
                actor: user("alice"),
                max_group_members: 100,
                at: at(13),
            },
            31 => ConversationCommand::RemoveMember {
                user: user("bob"),
                actor: user("bob"),
                actor_is_admin: false,
                at: at(31),
            },
            _ => {
                let reader = readers[usize::try_from(step).unwrap() % readers.len()];
                let member = step > 13 || reader != "dave";
                let present = step < 31 || reader != "bob";
                if !(member && present) {
                    continue;
                }
                ConversationCommand::MarkRead {
                    user: user(reader),
                    up_to_seq: step,
                    at: at(i64::try_from(step).unwrap()),
                }
            }
        };
        snapshotted
            .execute(&stream, command, HashMap::new())
            .await
            .unwrap();
    }

    let (from_snapshot, snapshot_sequence) = snapshotted.load(&stream).await.unwrap();
    let (from_replay, replay_sequence) = replayed.load(&stream).await.unwrap();
    assert_eq!(snapshot_sequence, replay_sequence);
    assert_eq!(from_snapshot, from_replay);
    assert!(!from_replay.is_member(&user("bob")));
    assert_eq!(from_replay.read_horizon(&user("dave")), 55);

    let taken: i64 =
        sqlx::query_scalar("SELECT last_sequence FROM snapshots WHERE aggregate_id = $1")
            .bind(&stream)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(taken % 10, 0, "snapshots are taken at boundaries");
    assert!(
        taken > 30 && taken <= replay_sequence,
        "a recent snapshot exists: {taken}"
    );

    // A snapshot of another state format is ignored.
    let newer: Executor<Conversation> =
        Executor::new(pool.clone(), Appender::start(pool.clone()), ()).with_snapshots(10, 2);
    assert_eq!(newer.load(&stream).await.unwrap().0, from_replay);

    // A snapshot that no longer fits the aggregate is ignored, not trusted.
    sqlx::query("UPDATE snapshots SET payload = '[]'")
        .execute(&pool)
        .await
        .unwrap();
    let (after_corruption, _) = snapshotted.load(&stream).await.unwrap();
    assert_eq!(after_corruption, from_replay);
}
