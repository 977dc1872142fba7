//! A rebuild from the store, while messages keep coming and the projector keeps running, loses
//! nothing and ends equal to the live model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::writes::{create_conversation, CommandService, ConversationKind, Limits};
use tokio_util::sync::CancellationToken;

use crate::apply::{project_all, send, snapshot};
use crate::projector::{projector, relay};

#[tokio::test]
async fn a_replay_during_traffic_loses_nothing_and_equals_the_live_model() {
    let (options, pool) = fresh_database().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let stop = CancellationToken::new();
    let relay = relay(&pool, options, &prefix);
    let relay = tokio::spawn(relay.run(stop.clone()));
    let live = projector(&pool, &prefix, None);
    let status = live.status();
    let live = tokio::spawn(live.run(stop.clone()));

    let service = Arc::new(CommandService::new(pool.clone(), Limits::default()));
    let conversation = create_conversation(
        &service,
        ConversationKind::Group,
        &["alice", "bob", "carol"],
    )
    .await;
    let sending = {
        let service = service.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                send(
                    &service,
                    ["alice", "bob", "carol"][i % 3],
                    conversation,
                    &format!("m{i}"),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Replay twice while the traffic flows.
    let mut reports = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        chat4all_projections::replay::rebuild(&pool, |_| reports += 1)
            .await
            .unwrap();
    }
    sending.await.unwrap();
    assert!(reports > 0, "progress was reported");

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_messages")
            .fetch_one(&pool)
            .await
            .unwrap();
        if messages == 60 && status.applied() >= u64::try_from(events).unwrap() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live model did not catch up: {messages} messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    relay.await.unwrap();
    live.await.unwrap();

    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM rm_messages ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        seqs,
        (1..=60).collect::<Vec<_>>(),
        "nothing lost, nothing counted twice"
    );
    let live_model = snapshot(&pool).await;
    sqlx::query("TRUNCATE rm_conversations, rm_members, rm_messages, rm_message_history")
        .execute(&pool)
        .await
        .unwrap();
    project_all(&pool).await;
    assert_eq!(
        snapshot(&pool).await,
        live_model,
        "the model after replays equals one built from the store"
    );
}

async fn index_names(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT tablename::text, indexname::text FROM pg_indexes \
          WHERE schemaname = 'public' AND tablename LIKE 'rm\\_%' ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_swap_keeps_every_index_under_its_name() {
    let (_, pool) = fresh_database().await;
    let before = index_names(&pool).await;
    assert!(before.contains(&("rm_members".to_owned(), "rm_members_by_user".to_owned())));
    chat4all_projections::replay::rebuild(&pool, |_| {})
        .await
        .unwrap();
    assert_eq!(index_names(&pool).await, before);
}
