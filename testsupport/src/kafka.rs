//! The broker as tests use it: the bootstrap servers, unique deployment prefixes, and a topic
//! read back from the beginning with every record's partition, offset, key and headers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The broker the test script started (`KAFKA_BOOTSTRAP_SERVERS`), or the development one.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The test broker's settings, topics made with `partitions` partitions on one replica.
pub fn settings(partitions: i32) -> chat4all_platform::KafkaSettings {
    chat4all_platform::KafkaSettings {
        bootstrap_servers: bootstrap(),
        partitions,
        replication_factor: 1,
        min_insync_replicas: 1,
        group_instance_id: None,
    }
}

/// A deployment prefix (topics, groups, Redis subjects) no other test uses.
pub fn unique_prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
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
            self.envelope["aggregate_type"]
                .as_str()
                .expect("test consumer")
                .to_owned(),
            self.envelope["aggregate_id"]
                .as_str()
                .expect("test consumer")
                .to_owned(),
            self.envelope["sequence"].as_i64().expect("test consumer"),
        )
    }
}

/// A record of any topic, its value as bytes.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Reads the events topic `topic` from the beginning until at least `want` records arrived (then
/// a little longer, to catch anything extra) or the deadline passes.
///
/// # Panics
/// When a record is not a JSON envelope.
pub async fn consume(bootstrap: &str, topic: &str, want: usize, deadline: Duration) -> Vec<Record> {
    consume_raw(bootstrap, topic, want, deadline)
        .await
        .into_iter()
        .map(|raw| Record {
            partition: raw.partition,
            offset: raw.offset,
            key: raw.key,
            envelope: serde_json::from_slice(&raw.value).expect("test consumer"),
            headers: raw.headers,
        })
        .collect()
}

/// [`consume`] for any topic.
pub async fn consume_raw(
    bootstrap: &str,
    topic: &str,
    want: usize,
    deadline: Duration,
) -> Vec<RawRecord> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()
            .expect("test consumer");
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
                    list.add_partition_offset(
                        &topic,
                        i32::try_from(p).expect("test consumer"),
                        Offset::Beginning,
                    )
                    .expect("test consumer");
                }
                consumer.assign(&list).expect("test consumer");
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
                records.push(RawRecord {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    value: message.payload().unwrap_or_default().to_vec(),
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
    .expect("test consumer")
}
