//! The relay as operators run it: crashes, a standby taking over, a broker outage.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat4all_commands::{
    CommandContext, CommandService, CreateConversationRequest, Limits, SendMessageRequest,
};
use chat4all_domain::conversation::ConversationKind;
use chat4all_domain::message::MessageContent;
use chat4all_domain::{ConversationId, UserId};
use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::kafka::bootstrap;
use chat4all_testsupport::kafka::{consume, Record};
use chrono::Utc;
use sqlx::{ConnectOptions, PgPool};

use crate::process::{message, Process};

const BATCH: usize = 50;

fn ctx() -> CommandContext {
    chat4all_testsupport::writes::context("alice")
}

/// Writers sending messages into a few conversations until `total` messages are sent.
async fn write(service: Arc<CommandService>, total: usize) {
    let mut conversations = Vec::new();
    for _ in 0..4 {
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
        let reply = service
            .create_conversation(&ctx(), request, Utc::now())
            .await
            .unwrap();
        conversations.push(reply.conversation.conversation_id);
    }
    let writers: Vec<_> = conversations
        .into_iter()
        .map(|conversation: ConversationId| {
            let service = service.clone();
            tokio::spawn(async move {
                for i in 0..total / 4 {
                    let request = SendMessageRequest {
                        message_id: None,
                        conversation_id: conversation,
                        content: MessageContent::Text {
                            text: format!("message {i}"),
                        },
                        channels: vec![],
                    };
                    service
                        .send_message(&ctx(), request, Utc::now())
                        .await
                        .unwrap();
                    if i % 50 == 0 {
                        // Spread the writes over time so the relay is mid-stream when things fail.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
}

async fn checkpoint(pool: &PgPool, deployment: &str) -> i64 {
    sqlx::query_scalar("SELECT position FROM relay_checkpoints WHERE deployment = $1")
        .bind(deployment)
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn until_checkpoint_passes(pool: &PgPool, deployment: &str, position: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(pool, deployment).await <= position {
        assert!(
            Instant::now() < deadline,
            "the relay made no progress past {position}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn event_count(pool: &PgPool) -> usize {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    usize::try_from(n).unwrap()
}

/// Reads the topic until every stored event is there; returns (records, distinct events).
async fn read_back(topic: &str, expected: usize) -> (Vec<Record>, usize) {
    let records = consume(&bootstrap(), topic, expected, Duration::from_secs(90)).await;
    let distinct: HashSet<_> = records.iter().map(Record::identity).collect();
    (records.clone(), distinct.len())
}

fn relay_env(url: &str, prefix: &str, bootstrap: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", url),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap),
        ("CHAT4ALL_TOPIC_PREFIX", prefix),
        ("CHAT4ALL_METRICS_LISTEN", "127.0.0.1:0"),
        ("CHAT4ALL_KAFKA__PARTITIONS", "4"),
        ("CHAT4ALL_RELAY__BATCH_SIZE", "50"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn spawn_relay(env: &[(String, String)]) -> Process {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Process::spawn(&["relay"], &env)
}

fn leads(entry: &serde_json::Value) -> bool {
    message(entry) == "this relay now leads"
}

#[tokio::test]
async fn a_relay_killed_mid_stream_resumes_without_losing_anything() {
    let (options, pool) = fresh_database().await;
    let url = options.to_url_lossy().to_string();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let env = relay_env(&url, &prefix, &bootstrap());
    let service = Arc::new(CommandService::new(pool.clone(), Limits::default()));
    let writing = tokio::spawn(write(service, 2_000));

    let mut relay = spawn_relay(&env);
    until_checkpoint_passes(&pool, &prefix, 300).await;
    relay.crash();
    let at_crash = checkpoint(&pool, &prefix).await;
    let mut relay = spawn_relay(&env);
    writing.await.unwrap();
    let expected = event_count(&pool).await;
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        at_crash < last,
        "the crash came after everything was published; it proves nothing"
    );
    until_checkpoint_passes(&pool, &prefix, last - 1).await;

    let (records, distinct) = read_back(&format!("{prefix}.events.v1"), expected).await;
    assert_eq!(
        distinct, expected,
        "every event is on the topic after the crash"
    );
    assert!(
        records.len() - distinct <= BATCH * chat4all_relay::IN_FLIGHT,
        "{} duplicates: more than the unacknowledged window",
        records.len() - distinct
    );
    relay.signal("-TERM");
    assert!(relay.wait_exit(Duration::from_secs(20)).await.success());
}

#[tokio::test]
async fn a_standby_takes_over_within_ten_seconds_of_the_leaders_death() {
    let (options, pool) = fresh_database().await;
    let url = options.to_url_lossy().to_string();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let env = relay_env(&url, &prefix, &bootstrap());
    let service = Arc::new(CommandService::new(pool.clone(), Limits::default()));

    let mut first = spawn_relay(&env);
    assert!(
        first.wait_for_log(Duration::from_secs(30), leads).is_some(),
        "the first relay leads"
    );
    let mut second = spawn_relay(&env);
    assert!(
        second
            .wait_for_log(Duration::from_secs(30), |e| message(e)
                .contains("waiting as standby"))
            .is_some(),
        "the second relay stands by"
    );
    let writing = tokio::spawn(write(service, 1_200));
    until_checkpoint_passes(&pool, &prefix, 100).await;
    assert!(
        !second.drain().iter().any(leads),
        "only one relay leads (and publishes) at a time"
    );

    first.crash();
    let died = Instant::now();
    assert!(
        second
            .wait_for_log(Duration::from_secs(10), leads)
            .is_some(),
        "the standby did not take over within 10 s"
    );
    let took_over = died.elapsed();
    let at_takeover = checkpoint(&pool, &prefix).await;
    writing.await.unwrap();
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        at_takeover < last,
        "the leader died after publishing everything; it proves nothing"
    );
    // The standby, now leading, is the one that publishes the rest.
    until_checkpoint_passes(&pool, &prefix, last - 1).await;
    let expected = event_count(&pool).await;
    let (_, distinct) = read_back(&format!("{prefix}.events.v1"), expected).await;
    assert_eq!(
        distinct, expected,
        "nothing is missing after the takeover ({took_over:?})"
    );
}
