//! Projector processes sharing partitions: one stops mid-stream, another joins; the read models
//! end identical to a rebuild from the store, with no message counted twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat4all_commands::testing::fresh_database;
use chat4all_commands::{
    CommandContext, CommandService, CreateConversationRequest, Limits, SendMessageRequest,
};
use chat4all_domain::conversation::ConversationKind;
use chat4all_domain::message::MessageContent;
use chat4all_domain::UserId;
use chrono::Utc;
use sqlx::{ConnectOptions, PgPool};

use crate::process::{message, Process};

fn ctx(user: &str) -> CommandContext {
    chat4all_commands::testing::context(user)
}

async fn model(pool: &PgPool) -> String {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT string_agg(t, '|' ORDER BY t) FROM \
         (SELECT row_to_json(m)::text AS t FROM rm_messages m UNION ALL \
          SELECT row_to_json(x)::text FROM rm_members x UNION ALL \
          SELECT row_to_json(c)::text FROM rm_conversations c UNION ALL \
          SELECT row_to_json(h)::text FROM rm_message_history h) s",
    )
    .fetch_one(pool)
    .await
    .unwrap()
    .unwrap_or_default()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn projectors_stopped_and_rebalanced_leave_the_model_a_rebuild_would_give() {
    let (options, pool) = fresh_database().await;
    let url = options.to_url_lossy().to_string();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let bootstrap =
        std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("CHAT4ALL_TOPIC_PREFIX", prefix.as_str()),
        ("CHAT4ALL_METRICS_LISTEN", "127.0.0.1:0"),
        ("CHAT4ALL_KAFKA__PARTITIONS", "4"),
    ];
    let _relay = Process::spawn(&["relay"], &env);
    let mut first = Process::spawn(&["project"], &env);
    let _second = Process::spawn(&["project"], &env);
    assert!(first
        .wait_for_log(Duration::from_secs(30), |e| message(e) == "projecting")
        .is_some());

    let service = Arc::new(CommandService::new(pool.clone(), Limits::default()));
    let mut conversations = Vec::new();
    for _ in 0..8 {
        let request = CreateConversationRequest {
            conversation_id: None,
            kind: ConversationKind::Group,
            members: ["alice", "bob", "carol"]
                .map(|u| UserId::parse(u).unwrap())
                .to_vec(),
            name: None,
            description: None,
            metadata: None,
        };
        conversations.push(
            service
                .create_conversation(&ctx("alice"), request, Utc::now())
                .await
                .unwrap()
                .conversation
                .conversation_id,
        );
    }
    let total = 800;
    let writing = {
        let service = service.clone();
        tokio::spawn(async move {
            for i in 0..total {
                let request = SendMessageRequest {
                    message_id: None,
                    conversation_id: conversations[i % conversations.len()],
                    content: MessageContent::Text {
                        text: format!("m{i}"),
                    },
                    channels: vec![],
                };
                service
                    .send_message(&ctx(["alice", "bob", "carol"][i % 3]), request, Utc::now())
                    .await
                    .unwrap();
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pool, "SELECT count(*) FROM rm_messages").await < 100 {
        assert!(Instant::now() < deadline, "the projectors made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopped mid-stream: it finishes its batch and leaves the group, which rebalances its
    // partitions to the others (a crash's re-delivery is covered by the projections' own tests).
    first.signal("-TERM");
    assert!(first.wait_exit(Duration::from_secs(30)).await.success());
    let _third = Process::spawn(&["project"], &env);
    writing.await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&pool, "SELECT count(*) FROM rm_messages").await < i64::try_from(total).unwrap() {
        assert!(
            Instant::now() < deadline,
            "the projectors did not catch up after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No message counted twice and no seq gap, in any conversation.
    let gaps = count(
        &pool,
        "SELECT count(*) FROM (SELECT conversation_id, count(*) AS n, max(seq) AS top, min(seq) AS low \
           FROM rm_messages GROUP BY conversation_id) c WHERE n <> top OR low <> 1",
    )
    .await;
    assert_eq!(gaps, 0);
    let counted = count(
        &pool,
        "SELECT coalesce(sum(last_seq), 0)::bigint FROM rm_conversations",
    )
    .await;
    assert_eq!(counted, i64::try_from(total).unwrap());

    // Identical to the model rebuilt from the store alone.
    let live = model(&pool).await;
    chat4all_projections::replay::rebuild(&pool, |_| {})
        .await
        .unwrap();
    assert_eq!(model(&pool).await, live);
}
