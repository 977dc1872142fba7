//! Three brokers, three replicas, two in sync: with traffic flowing, the broker that leads a
//! partition of the events topic is killed with `kill -9`. The relay and the projector carry on
//! with the new leaders; no acknowledged message is lost or doubled in the store, the topic or
//! the read models; the broker then restarts and rejoins every partition's in-sync set.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat4all_commands::{CommandService, Limits, SendMessageRequest};
use chat4all_domain::conversation::ConversationKind;
use chat4all_domain::message::MessageContent;
use chat4all_platform::KafkaSettings;
use chat4all_projections::{Projector, ProjectorConfig};
use chat4all_relay::{Relay, RelayConfig};
use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::kafka::{consume, Record};
use chat4all_testsupport::writes::create_conversation;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::broker::Cluster;
use crate::model::{
    assert_projected_once_without_gaps, count, missing_from_read_models, projected_messages,
    stored_messages,
};

const PARTITIONS: i32 = 4;

/// `(leader, in-sync replicas)` of every partition of `topic`, as the brokers report them.
fn layout(bootstrap: &str, topic: &str) -> Vec<(i32, usize)> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create()
        .unwrap();
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return Vec::new();
    };
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| (p.leader(), p.isr().len()))
        .collect()
}

/// The longest stretch without a change of a growing count.
struct Progress {
    last: i64,
    since: Instant,
    longest: Duration,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            last: 0,
            since: Instant::now(),
            longest: Duration::ZERO,
        }
    }
}

impl Progress {
    fn observe(&mut self, now: i64) {
        if now != self.last {
            if self.last > 0 {
                self.longest = self.longest.max(self.since.elapsed());
            }
            (self.last, self.since) = (now, Instant::now());
        }
    }
}

#[tokio::test]
async fn killing_a_partition_leader_loses_and_doubles_nothing() {
    let cluster = Cluster::start();
    let (options, pool) = fresh_database().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let kafka = KafkaSettings {
        bootstrap_servers: cluster.bootstrap.clone(),
        partitions: PARTITIONS,
        replication_factor: 3,
        min_insync_replicas: 2,
        group_instance_id: None,
    };
    let topic = KafkaSettings::events_topic(&prefix);
    let stop = CancellationToken::new();
    let relay = Relay::new(
        pool.clone(),
        options,
        RelayConfig {
            deployment: prefix.clone(),
            topic: topic.clone(),
            kafka: kafka.clone(),
            batch_size: 500,
            idle_poll: Duration::from_millis(200),
            delivery_timeout: Duration::from_secs(30),
        },
    );
    let relay_status = relay.status();
    let relaying = tokio::spawn(relay.run(stop.clone()));
    let projector = Projector::new(
        pool.clone(),
        ProjectorConfig {
            topic: topic.clone(),
            group_id: format!("{prefix}-projections"),
            prefix: prefix.clone(),
            kafka,
        },
        None,
    );
    let projecting = tokio::spawn(projector.run(stop.clone()));

    // Steady traffic, about 100 messages per second over eight conversations.
    let service = Arc::new(CommandService::new(pool.clone(), Limits::default()));
    let mut conversations = Vec::new();
    for _ in 0..8 {
        conversations.push(
            create_conversation(
                &service,
                ConversationKind::Group,
                &["alice", "bob", "carol"],
            )
            .await,
        );
    }
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (service, acknowledged, sending) =
            (service.clone(), acknowledged.clone(), sending.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(10));
            let mut i = 0;
            while sending.load(Ordering::Relaxed) {
                ticker.tick().await;
                let request = SendMessageRequest {
                    message_id: None,
                    conversation_id: conversations[i % conversations.len()],
                    content: MessageContent::Text {
                        text: format!("m{i}"),
                    },
                    channels: vec![],
                };
                let sent = service
                    .send_message(
                        &chat4all_testsupport::writes::context("alice"),
                        request,
                        Utc::now(),
                    )
                    .await
                    .unwrap();
                acknowledged.lock().unwrap().push(sent.message_id.as_uuid());
                i += 1;
            }
        })
    };
    // The longest time the relay and the read models each went without progress while traffic
    // flowed, from their first progress on (creating the topic is no pause).
    let sampler = {
        let (pool, stop, relay_status) = (pool.clone(), stop.clone(), relay_status.clone());
        tokio::spawn(async move {
            let mut relay = Progress::default();
            let mut projection = Progress::default();
            while !stop.is_cancelled() {
                relay.observe(i64::try_from(relay_status.published()).unwrap());
                projection.observe(projected_messages(&pool).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (relay.longest, projection.longest)
        })
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    while projected_messages(&pool).await < 300 {
        assert!(
            Instant::now() < deadline,
            "nothing was projected on the cluster"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = layout(&cluster.bootstrap, &topic)
        .first()
        .map(|(leader, _)| *leader)
        .unwrap();
    assert!(
        (1..=3).contains(&leader),
        "partition 0 has a leader: {leader}"
    );
    cluster.run(&["kill", &leader.to_string()]);
    let killed = Instant::now();
    let at_kill = projected_messages(&pool).await;

    // Carry on beside the dead broker until well past its leaderships' move.
    let deadline = Instant::now() + Duration::from_secs(90);
    while projected_messages(&pool).await < at_kill + 1_000 {
        assert!(
            Instant::now() < deadline,
            "projection stalled after broker {leader} was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let carried_on = killed.elapsed();
    let moved = layout(&cluster.bootstrap, &topic);
    assert!(
        moved
            .iter()
            .all(|(l, isr)| *l != leader && *l > 0 && *isr >= 2),
        "every partition has a live leader and two in sync: {moved:?}"
    );

    cluster.run(&["start", &leader.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = layout(&cluster.bootstrap, &topic);
        if now.len() == PARTITIONS as usize && now.iter().all(|(_, isr)| *isr == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {leader} did not rejoin every in-sync set: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rejoined = killed.elapsed();
    sending.store(false, Ordering::Relaxed);
    sender.await.unwrap();

    let acknowledged: Vec<uuid::Uuid> = acknowledged.lock().unwrap().clone();
    let expected = i64::try_from(acknowledged.len()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while projected_messages(&pool).await < expected {
        assert!(
            Instant::now() < deadline,
            "the read models did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    relaying.await.unwrap();
    projecting.await.unwrap();
    let (relay_pause, projection_pause) = sampler.await.unwrap();

    // The store: every acknowledged message, once.
    let stored = stored_messages(&pool).await;
    assert_eq!(
        stored, expected,
        "the store holds every acknowledged message"
    );
    // The topic: every stored event, none twice.
    let events = count(&pool, "SELECT count(*) FROM events").await;
    let records = consume(
        &cluster.bootstrap,
        &topic,
        usize::try_from(events).unwrap(),
        Duration::from_secs(60),
    )
    .await;
    let distinct: HashSet<_> = records.iter().map(Record::identity).collect();
    assert_eq!(
        i64::try_from(distinct.len()).unwrap(),
        events,
        "the topic holds every event"
    );
    assert_eq!(
        distinct.len(),
        records.len(),
        "no event is in the topic twice"
    );
    // The read models: every acknowledged message, once, numbered without a gap.
    let missing = missing_from_read_models(&pool, &acknowledged).await;
    assert_eq!(
        missing, 0,
        "every acknowledged message is in the read models"
    );
    assert_eq!(projected_messages(&pool).await, expected);
    assert_projected_once_without_gaps(&pool).await;
    println!(
        "broker {leader} killed: {expected} messages; longest pause of the relay {relay_pause:?} \
         ({} publishing errors), of the projection {projection_pause:?}; 1,000 more projected \
         {carried_on:?} after the kill; rejoined {rejoined:?} after it",
        relay_status.errors()
    );
}
