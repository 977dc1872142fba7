//! Producing events to the broker: idempotent, fully acknowledged, in the store's order.

use std::time::Duration;

use chat4all_platform::KafkaSettings;
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::util::Timeout;

use chat4all_eventstore::envelope::{encode, key, traceparent};
use chat4all_eventstore::StoredEvent;

/// A record ready for the producer: key, value and the headers' values.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub key: String,
    pub value: Vec<u8>,
    pub event_type: String,
    pub traceparent: Option<String>,
}

impl Encoded {
    pub fn of(event: &StoredEvent) -> Self {
        let mut value = Vec::with_capacity(event.payload.len() + event.metadata.len() + 400);
        encode(event, &mut value);
        Self {
            key: key(event).to_owned(),
            value,
            event_type: event.event_type.clone(),
            traceparent: traceparent(event),
        }
    }
}

/// Records handed to the producer whose acknowledgements are still to come.
pub struct Pending {
    deliveries: Vec<DeliveryFuture>,
}

impl Pending {
    /// Waits for every acknowledgement.
    ///
    /// # Errors
    /// The first record the broker did not take.
    pub async fn acknowledged(self, timeout: Duration) -> Result<(), KafkaError> {
        let outcomes = tokio::time::timeout(timeout, join_all(self.deliveries))
            .await
            .map_err(|_| KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut))?;
        for outcome in outcomes {
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e),
                Err(_cancelled) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }
}

/// Produces to one topic.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    delivery_timeout: Duration,
}

impl Publisher {
    /// A producer with the delivery guarantees the relay relies on.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn new(
        settings: &KafkaSettings,
        topic: String,
        delivery_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let producer = settings
            .client_config()
            // Retries inside the producer never duplicate or reorder within a partition...
            .set("enable.idempotence", "true")
            // ...and a record counts as delivered only once every in-sync replica has it.
            .set("acks", "all")
            // A gap (a record failing while later ones succeed) is raised instead of tolerated;
            // the relay then re-sends the whole batch, so consumers see a prefix and then all of
            // it in order, never a hole.
            .set("enable.gapless.guarantee", "true")
            .set("compression.type", "zstd")
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            // Never expire queued records: the gapless guarantee does not cover expiries, and an
            // expired record followed by a delivered later one would put an aggregate's events
            // out of order. The relay bounds the wait itself and then purges everything.
            .set("message.timeout.ms", "0")
            .create()?;
        Ok(Self {
            producer,
            topic,
            delivery_timeout,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends `events` in order and waits until the broker acknowledged every one.
    ///
    /// # Errors
    /// The first delivery failure; the caller re-sends the whole batch.
    pub async fn publish(&self, events: &[StoredEvent]) -> Result<(), KafkaError> {
        let records: Vec<Encoded> = events.iter().map(Encoded::of).collect();
        self.enqueue(&records)
            .await?
            .acknowledged(self.delivery_timeout)
            .await
    }

    /// Hands `records` to the producer in order, without waiting for the broker; the returned
    /// [`Pending`] resolves once all of them are acknowledged. Several batches may be pending
    /// at once: the producer keeps their order.
    ///
    /// # Errors
    /// The producer refused a record.
    pub async fn enqueue(&self, records: &[Encoded]) -> Result<Pending, KafkaError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for encoded in records {
            let mut headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: "event_type",
                    value: Some(encoded.event_type.as_bytes()),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json".as_bytes()),
                });
            if let Some(tp) = &encoded.traceparent {
                headers = headers.insert(Header {
                    key: "traceparent",
                    value: Some(tp.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&self.topic)
                .key(&encoded.key)
                .payload(&encoded.value)
                .headers(headers);
            // Records are enqueued strictly in order; a full local queue is waited out for this
            // record rather than letting a later one overtake it.
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        Ok(Pending { deliveries })
    }

    /// Waits for everything enqueued to be delivered (on shutdown).
    /// Drops everything queued or in flight, before the producer is abandoned after a failure:
    /// nothing of it may reach the broker after the re-sent records.
    pub fn purge(&self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
    }

    pub fn delivery_timeout(&self) -> Duration {
        self.delivery_timeout
    }

    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!("flushing the producer: {e}");
        }
    }
}
