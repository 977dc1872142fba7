//! The projector, end to end: relay → broker → projector → read models and Redis announcements;
//! re-delivered records take no effect; the live model equals a rebuild from the store.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chat4all_eventstore::{read_batch, Checkpoint};
use chat4all_platform::worker::Record;
use chat4all_platform::KafkaSettings;
use chat4all_projections::{Projector, ProjectorConfig};
use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::engine::Relay;
use chat4all_testsupport::writes::{
    create_conversation, CommandService, ConversationKind, CreateConversationRequest, Limits,
    UserId,
};
use chrono::Utc;
use futures::StreamExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::apply::{ctx, project_all, send, snapshot};

pub fn kafka() -> KafkaSettings {
    chat4all_testsupport::kafka::settings(4)
}

/// A relay publishing the test database's events to the test's own topic.
pub fn relay(pool: &PgPool, options: PgConnectOptions, prefix: &str) -> Relay {
    chat4all_testsupport::engine::relay(pool, options, prefix, kafka(), 100)
}

pub fn projector(
    pool: &PgPool,
    prefix: &str,
    redis: Option<redis::aio::ConnectionManager>,
) -> Projector {
    Projector::new(
        pool.clone(),
        ProjectorConfig {
            topic: KafkaSettings::events_topic(prefix),
            group_id: format!("{prefix}-projections"),
            prefix: prefix.to_owned(),
            kafka: kafka(),
        },
        redis,
    )
}

async fn count_messages(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM rm_messages")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn events_flow_from_the_store_to_the_read_models_and_to_redis() {
    if std::env::var_os("RUST_LOG").is_some() {
        chat4all_platform::init_telemetry();
    }
    let (options, pool) = fresh_database().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let stop = CancellationToken::new();
    let relay = relay(&pool, options.clone(), &prefix);
    let relay = tokio::spawn(relay.run(stop.clone()));
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(format!("{prefix}:conversation:*"))
        .await
        .unwrap();
    let redis = redis::aio::ConnectionManager::new(client).await.unwrap();
    let live = projector(&pool, &prefix, Some(redis));
    let status = live.status();
    let live = tokio::spawn(live.run(stop.clone()));

    let service = CommandService::new(pool.clone(), Limits::default());
    let conversation = create_conversation(
        &service,
        ConversationKind::Group,
        &["alice", "bob", "carol"],
    )
    .await;
    let senders = ["alice", "bob", "carol"];
    for i in 0..30 {
        send(&service, senders[i % 3], conversation, &format!("m{i}")).await;
    }
    service
        .mark_read(&ctx("carol"), conversation, Some(10), Utc::now())
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while count_messages(&pool).await < 30 || status.applied() < 32 {
        assert!(
            Instant::now() < deadline,
            "projected {} of 30 messages",
            count_messages(&pool).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM rm_messages ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        seqs,
        (1..=30).collect::<Vec<_>>(),
        "one gap-free seq per conversation"
    );

    // Every message was announced once, in seq order, on the conversation's channel.
    let mut announced = Vec::new();
    let mut messages = pubsub.on_message();
    while announced.len() < 30 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            message.get_channel_name(),
            format!("{prefix}:conversation:{conversation}")
        );
        let frame: serde_json::Value =
            serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
        if frame["type"] == "message.created" {
            announced.push(frame["data"]["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(announced, (1..=30).collect::<Vec<_>>());

    stop.cancel();
    relay.await.unwrap();
    live.await.unwrap();

    // The live model equals one rebuilt from the store alone.
    let live_model = snapshot(&pool).await;
    sqlx::query("TRUNCATE rm_conversations, rm_members, rm_messages, rm_message_history")
        .execute(&pool)
        .await
        .unwrap();
    project_all(&pool).await;
    assert_eq!(snapshot(&pool).await, live_model);
}

#[tokio::test]
async fn records_below_the_stored_offset_take_no_effect() {
    let (_, pool) = fresh_database().await;
    let service = CommandService::new(pool.clone(), Limits::default());
    let conversation =
        create_conversation(&service, ConversationKind::Private, &["alice", "bob"]).await;
    for i in 0..9 {
        send(&service, "alice", conversation, &format!("m{i}")).await;
    }
    // The reader stops below the server's oldest open transaction, which another test may hold
    // for a moment: wait until all ten events are below it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = read_batch(&pool, Checkpoint::default(), 100).await.unwrap();
        if events.len() == 10 {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 10 events readable",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let records: Vec<Record> = events
        .iter()
        .enumerate()
        .map(|(offset, event)| Record {
            partition: 0,
            offset: i64::try_from(offset).unwrap(),
            key: None,
            value: {
                let mut value = Vec::new();
                chat4all_eventstore::envelope::encode(event, &mut value);
                value
            },
        })
        .collect();
    let projector = projector(&pool, "unused", None);
    // A batch applied, then the process dies before anything else; after the restart the broker
    // delivers from an older offset: the overlap must be skipped, the rest applied.
    let first: Vec<Record> = records[..4].to_vec();
    projector
        .apply_batch(&BTreeMap::from([(0, first)]))
        .await
        .unwrap();
    projector
        .apply_batch(&BTreeMap::from([(0, records)]))
        .await
        .unwrap();
    let status = projector.status();
    assert_eq!((status.applied(), status.skipped()), (10, 4));
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM rm_messages ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
    let next: i64 = sqlx::query_scalar("SELECT next_offset FROM projection_offsets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(next, 10);
}

#[tokio::test]
async fn stored_offsets_past_the_end_of_a_recreated_topic_are_reported() {
    let (options, pool) = fresh_database().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let topic = KafkaSettings::events_topic(&prefix);
    let stop = CancellationToken::new();
    let relay = relay(&pool, options, &prefix);
    let relay = tokio::spawn(relay.run(stop.clone()));
    let service = CommandService::new(pool.clone(), Limits::default());
    let request = CreateConversationRequest {
        conversation_id: None,
        kind: ConversationKind::Private,
        members: ["alice", "bob"].map(|u| UserId::parse(u).unwrap()).to_vec(),
        name: None,
        description: None,
        metadata: None,
    };
    service
        .create_conversation(&ctx("alice"), request, Utc::now())
        .await
        .unwrap();
    // The read models believe they are far along every partition, as after the topic was
    // deleted and created again underneath them.
    for partition in 0..4 {
        sqlx::query("INSERT INTO projection_offsets (projection, topic, kafka_partition, next_offset) VALUES ('read_models', $1, $2, 1000000)")
            .bind(&topic)
            .bind(partition)
            .execute(&pool)
            .await
            .unwrap();
    }
    let live = projector(&pool, &prefix, None);
    let status = live.status();
    let live = tokio::spawn(live.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.beyond_end() == 0 {
        assert!(
            Instant::now() < deadline,
            "the impossible offsets went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conversations: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_conversations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        conversations, 0,
        "nothing below the stored offsets was applied"
    );
    stop.cancel();
    relay.await.unwrap();
    live.await.unwrap();
}

/// Produces `value` keyed by `key` to `topic`, as a misbehaving producer would.
async fn produce_raw(topic: &str, key: &str, value: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka().client_config().create().unwrap();
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_record_that_cannot_be_understood_is_set_aside_and_its_partition_moves_on() {
    let (options, pool) = fresh_database().await;
    let prefix = chat4all_testsupport::kafka::unique_prefix();
    let topic = KafkaSettings::events_topic(&prefix);
    kafka().ensure_topic(&topic).await.unwrap();
    let service = CommandService::new(pool.clone(), Limits::default());
    let conversation = create_conversation(
        &service,
        ConversationKind::Group,
        &["alice", "bob", "carol"],
    )
    .await;
    // Two poison records ahead of the conversation's own events, in its partition: one that is
    // not an envelope at all, one whose payload no aggregate knows.
    let key = conversation.to_string();
    produce_raw(&topic, &key, b"not an envelope").await;
    let unknown = serde_json::json!({
        "position": 1, "aggregate_type": "Message", "aggregate_id": "acme:x", "sequence": 1,
        "event_type": "MessageExploded", "event_version": "1.0", "tenant_id": "acme",
        "conversation_id": key, "occurred_at": null,
        "payload": {"MessageExploded": {}}, "metadata": {}, "hash": "00",
    });
    produce_raw(&topic, &key, unknown.to_string().as_bytes()).await;

    let stop = CancellationToken::new();
    let relay = tokio::spawn(relay(&pool, options, &prefix).run(stop.clone()));
    let live = projector(&pool, &prefix, None);
    let status = live.status();
    let role = live.role();
    let live = tokio::spawn(live.run(stop.clone()));
    for i in 0..5 {
        send(&service, "alice", conversation, &format!("m{i}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_messages(&pool).await < 5 || status.dead_lettered() < 2 {
        assert!(
            Instant::now() < deadline,
            "projected {} of 5 messages, {} dead letters",
            count_messages(&pool).await,
            status.dead_lettered()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(role.is_ready(), "{:?}", role.report());
    assert_eq!(status.dead_lettered(), 2);

    // Both are on the dead-letter topic, as they were, with where they came from and why.
    let letters = chat4all_testsupport::kafka::consume_raw(
        &kafka().bootstrap_servers,
        &KafkaSettings::dead_letter_topic(&prefix),
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].value, b"not an envelope");
    assert_eq!(letters[1].value, unknown.to_string().as_bytes());
    for letter in &letters {
        assert_eq!(letter.key, key);
        assert_eq!(letter.headers["source_topic"], topic);
        assert_eq!(
            letter.headers["consumer_group"],
            format!("{prefix}-projections")
        );
        assert!(!letter.headers["error"].is_empty());
    }
    assert_eq!(
        (
            letters[0].headers["source_partition"].as_str(),
            letters[0].headers["source_offset"].as_str()
        ),
        (letters[1].headers["source_partition"].as_str(), "0")
    );
    assert_eq!(letters[1].headers["source_offset"], "1");
    stop.cancel();
    relay.await.unwrap();
    live.await.unwrap();
}
