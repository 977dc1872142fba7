//! A relay per test (unique topic prefix), writers, and a consumer that reads the topic back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat4all_platform::KafkaSettings;
use chat4all_relay::{Relay, RelayConfig, RelayStatus};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

pub const PARTITIONS: i32 = 4;

pub fn kafka(bootstrap: &str) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: bootstrap.to_owned(),
        partitions: PARTITIONS,
        replication_factor: 1,
    }
}

pub fn default_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

pub fn unique_prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

pub struct RunningRelay {
    pub status: Arc<RelayStatus>,
    pub topic: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    pub fn start(
        pool: &PgPool,
        options: &PgConnectOptions,
        bootstrap: &str,
        batch_size: i64,
    ) -> Self {
        let prefix = unique_prefix();
        let topic = format!("{prefix}.events.v1");
        let relay = Relay::new(
            pool.clone(),
            options.clone(),
            RelayConfig {
                deployment: prefix,
                topic: topic.clone(),
                kafka: kafka(bootstrap),
                batch_size,
                idle_poll: Duration::from_millis(200),
                delivery_timeout: Duration::from_secs(5),
            },
        );
        let status = relay.status();
        let stop = CancellationToken::new();
        let task = tokio::spawn(relay.run(stop.clone()));
        Self {
            status,
            topic,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// A record as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub envelope: serde_json::Value,
    pub headers: HashMap<String, String>,
}

impl Record {
    pub fn identity(&self) -> (String, String, i64) {
        (
            self.envelope["aggregate_type"].as_str().unwrap().to_owned(),
            self.envelope["aggregate_id"].as_str().unwrap().to_owned(),
            self.envelope["sequence"].as_i64().unwrap(),
        )
    }
}

/// Reads `topic` from the beginning until at least `want` records arrived (then a little longer,
/// to catch anything extra) or the deadline passes.
pub async fn consume(bootstrap: &str, topic: &str, want: usize, deadline: Duration) -> Vec<Record> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()
            .unwrap();
        let until = Instant::now() + deadline;
        let mut assigned = false;
        let mut records = Vec::new();
        let mut settled_at: Option<Instant> = None;
        while Instant::now() < until {
            if !assigned {
                let Ok(metadata) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(2))
                else {
                    continue;
                };
                let partitions = metadata
                    .topics()
                    .first()
                    .map_or(0, |t| t.partitions().len());
                if partitions == 0 {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let mut list = TopicPartitionList::new();
                for p in 0..partitions {
                    list.add_partition_offset(&topic, i32::try_from(p).unwrap(), Offset::Beginning)
                        .unwrap();
                }
                consumer.assign(&list).unwrap();
                assigned = true;
            }
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_owned(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    envelope: serde_json::from_slice(message.payload().unwrap_or_default())
                        .unwrap(),
                    headers,
                });
            }
            if records.len() >= want {
                let settled = *settled_at.get_or_insert_with(Instant::now);
                if settled.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
        }
        records
    })
    .await
    .unwrap()
}

/// Inserts a message-like event in an open transaction of `conn` (the caller commits).
pub async fn insert_event(
    conn: &mut PgConnection,
    stream: &str,
    sequence: i64,
    conversation: &str,
) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Message', $1, $2, 'MessageDelivered', '1.0', \
                 jsonb_build_object('MessageDelivered', jsonb_build_object('conversation_id', $3::text)), \
                 '{\"tenant_id\": \"acme\", \"trace_id\": \"0af7651916cd43dd8448eb211c80319c\"}')",
    )
    .bind(stream)
    .bind(sequence)
    .bind(conversation)
    .execute(conn)
    .await
    .unwrap();
}

/// Polls `condition` until it holds or the deadline passes.
pub async fn eventually(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
