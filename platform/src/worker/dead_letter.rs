//! Dead letters: a record that keeps failing is set aside on `{prefix}.dlq.v1`, with where it
//! came from and why, so that its partition can move on and an operator can look at it.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::Record;
use crate::KafkaSettings;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a dead letter came from.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub reason: &'a str,
}

/// The producer of one deployment's dead-letter topic.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    /// A producer that counts a dead letter as written only once every in-sync replica has it.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn new(settings: &KafkaSettings, topic: String) -> Result<Self, KafkaError> {
        let producer = settings
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(Self { producer, topic })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `record` to the dead-letter topic with its origin in headers (`source_topic`,
    /// `source_partition`, `source_offset`, `consumer_group`, `error`), and waits for the broker.
    ///
    /// # Errors
    /// The broker did not take it; the caller must not move past the record then.
    pub async fn publish(&self, record: &Record, origin: &Origin<'_>) -> Result<(), KafkaError> {
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: "source_topic",
                value: Some(origin.topic.as_bytes()),
            })
            .insert(Header {
                key: "source_partition",
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: "source_offset",
                value: Some(offset.as_bytes()),
            })
            .insert(Header {
                key: "consumer_group",
                value: Some(origin.group.as_bytes()),
            })
            .insert(Header {
                key: "error",
                value: Some(origin.reason.as_bytes()),
            });
        let mut message = FutureRecord::to(&self.topic)
            .payload(&record.value)
            .headers(headers);
        if let Some(key) = &record.key {
            message = message.key(key);
        }
        self.producer
            .send(message, DELIVERY_TIMEOUT)
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }
}
