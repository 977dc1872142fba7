//! Kafka as every role uses it: client settings, the engine's topics (created with the configured
//! partitions, replicas and `min.insync.replicas`, and checked against them when they already
//! exist), consumer groups that hand a crashed member's partitions on within seconds, and a
//! readiness probe that asks the brokers a question rather than only opening a socket.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::ClientConfig;

use crate::KafkaSettings;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer that stops heartbeating (a crash, `kill -9`, a cut network) loses its partitions
/// after this long. Brokers refuse less than their `group.min.session.timeout.ms`, 6 s by
/// default, so this is the shortest that every broker accepts.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// What [`KafkaSettings::ensure_topic`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicCheck {
    /// The topic did not exist and was created with the configured layout.
    pub created: bool,
    /// How an existing topic differs from the settings, one sentence each (also logged as
    /// errors); empty when it matches.
    pub mismatches: Vec<String>,
}

impl KafkaSettings {
    /// The topic every event is published to.
    pub fn events_topic(prefix: &str) -> String {
        format!("{prefix}.events.v1")
    }

    /// Where the deployment's workers set aside records that keep failing.
    pub fn dead_letter_topic(prefix: &str) -> String {
        format!("{prefix}.dlq.v1")
    }

    /// The settings every Kafka client of the engine starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", "chat4all")
            .set("log_level", "3");
        config
    }

    /// A consumer of group `group_id` whose offsets the caller keeps (in Postgres): Kafka's
    /// commits are only informative, so auto-commit is off.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("topic.metadata.refresh.interval.ms", "10000")
            // A member that dies hands its partitions over after this long, not the default 45 s.
            .set(
                "session.timeout.ms",
                SESSION_TIMEOUT.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1500")
            // How long a rebalance waits for every member to rejoin; a member that died just
            // before one must not hold the whole group for the default five minutes.
            .set("max.poll.interval.ms", "30000");
        if let Some(instance) = &self.group_instance_id {
            // Static membership: a restarted member with the same id gets its partitions back
            // at once, without a rebalance, as long as it returns within the session timeout.
            config.set("group.instance.id", instance);
        }
        config
    }

    /// Creates `topic` with the configured partitions, replicas and `min.insync.replicas` if it
    /// does not exist yet; an existing topic is compared with them, and every difference is
    /// logged as an error (the engine still runs: repartitioning is an operator's decision).
    ///
    /// # Errors
    /// The broker refused or could not be reached.
    pub async fn ensure_topic(&self, topic: &str) -> Result<TopicCheck, KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let min_isr = self.min_insync_replicas.to_string();
        let new_topic = NewTopic::new(
            topic,
            self.partitions,
            TopicReplication::Fixed(self.replication_factor),
        )
        .set("min.insync.replicas", &min_isr);
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        for result in admin.create_topics([&new_topic], &options).await? {
            match result {
                Ok(_) => {
                    tracing::info!(
                        topic,
                        partitions = self.partitions,
                        replication_factor = self.replication_factor,
                        min_insync_replicas = self.min_insync_replicas,
                        "created topic"
                    );
                    return Ok(TopicCheck {
                        created: true,
                        mismatches: Vec::new(),
                    });
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    tracing::error!(topic = %name, "creating the topic failed: {code}");
                    return Err(KafkaError::AdminOp(code));
                }
            }
        }
        let mismatches = self.compare(&admin, topic).await?;
        for mismatch in &mismatches {
            tracing::error!(
                topic,
                "the topic does not match the settings: {mismatch}; \
                 the engine runs on it as it is, but its guarantees are those of the topic"
            );
        }
        Ok(TopicCheck {
            created: false,
            mismatches,
        })
    }

    async fn compare(
        &self,
        admin: &AdminClient<DefaultClientContext>,
        topic: &str,
    ) -> Result<Vec<String>, KafkaError> {
        // A topic created a moment ago (by this call's race partner, another role) may not have
        // reached every broker's metadata yet: it shows no partitions until it has.
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        let metadata = loop {
            let metadata = fetch_metadata(self.client_config(), Some(topic.to_owned())).await?;
            let settled = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            if settled || tokio::time::Instant::now() >= deadline {
                break metadata;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut mismatches = Vec::new();
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if let Some(found) = found {
            let partitions = found.partitions().len();
            if i32::try_from(partitions).ok() != Some(self.partitions) {
                mismatches.push(format!(
                    "it has {partitions} partitions, the settings say {} (CHAT4ALL_KAFKA__PARTITIONS)",
                    self.partitions
                ));
            }
            if let Some(replicas) = found.partitions().iter().map(|p| p.replicas().len()).min() {
                if i32::try_from(replicas).ok() != Some(self.replication_factor) {
                    mismatches.push(format!(
                        "it has {replicas} replicas, the settings say {} (CHAT4ALL_KAFKA__REPLICATION_FACTOR)",
                        self.replication_factor
                    ));
                }
            }
        }
        let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
        for resource in admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
            .await?
            .into_iter()
            .flatten()
        {
            let min_isr = resource
                .get("min.insync.replicas")
                .and_then(|e| e.value.as_deref())
                .and_then(|v| v.parse::<i32>().ok());
            if let Some(min_isr) = min_isr.filter(|m| *m != self.min_insync_replicas) {
                mismatches.push(format!(
                    "its min.insync.replicas is {min_isr}, the settings say {} (CHAT4ALL_KAFKA__MIN_INSYNC_REPLICAS)",
                    self.min_insync_replicas
                ));
            }
        }
        Ok(mismatches)
    }
}

/// librdkafka's metadata call blocks its thread for up to the timeout, so it runs off the
/// async workers.
async fn fetch_metadata(
    config: ClientConfig,
    topic: Option<String>,
) -> Result<Metadata, KafkaError> {
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        client.fetch_metadata(topic.as_deref(), ADMIN_TIMEOUT)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// What the readiness probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaHealth {
    Ok,
    /// No broker answered a metadata request in time: down, cut off, or accepting connections
    /// without serving them.
    Unreachable(String),
    /// The brokers answer, but producing to the topic would fail: a partition without a leader,
    /// or fewer in-sync replicas than `min.insync.replicas`.
    Degraded(String),
}

/// Asks the brokers for the topic's metadata: who leads each partition and which replicas are
/// in sync. Keeps one client, so a probe costs one request on an open connection.
pub struct KafkaProbe {
    config: ClientConfig,
    topic: String,
    min_insync_replicas: usize,
    client: Mutex<Option<Arc<BaseConsumer>>>,
}

impl KafkaProbe {
    /// A probe of `topic` (an absent topic counts as healthy: the relay creates it).
    pub fn new(settings: &KafkaSettings, topic: String) -> Self {
        Self {
            config: settings.client_config(),
            topic,
            min_insync_replicas: usize::try_from(settings.min_insync_replicas).unwrap_or(1),
            client: Mutex::new(None),
        }
    }

    fn client(&self) -> Result<Arc<BaseConsumer>, KafkaError> {
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let client = Arc::new(self.config.create::<BaseConsumer>()?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// A probe that cannot run at all reports [`KafkaHealth::Unreachable`].
    pub async fn check(self: &Arc<Self>, timeout: Duration) -> KafkaHealth {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.check_blocking(timeout))
            .await
            .unwrap_or_else(|e| KafkaHealth::Unreachable(format!("the probe failed: {e}")))
    }

    fn check_blocking(&self, timeout: Duration) -> KafkaHealth {
        let metadata = match self
            .client()
            .and_then(|c| c.fetch_metadata(Some(&self.topic), timeout))
        {
            Ok(metadata) => metadata,
            Err(e) => {
                return KafkaHealth::Unreachable(format!(
                    "no broker answered a metadata request within {} ms: {e}",
                    timeout.as_millis()
                ))
            }
        };
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return KafkaHealth::Ok;
        };
        if topic.error().is_some() || topic.partitions().is_empty() {
            // Not created yet (the relay creates it), which is no reason to turn traffic away.
            return KafkaHealth::Ok;
        }
        for partition in topic.partitions() {
            if partition.leader() < 0 {
                return KafkaHealth::Degraded(format!(
                    "partition {} of {} has no leader",
                    partition.id(),
                    self.topic
                ));
            }
            if partition.isr().len() < self.min_insync_replicas {
                return KafkaHealth::Degraded(format!(
                    "partition {} of {} has {} in-sync replicas, fewer than min.insync.replicas {}: producing fails",
                    partition.id(),
                    self.topic,
                    partition.isr().len(),
                    self.min_insync_replicas
                ));
            }
        }
        KafkaHealth::Ok
    }
}
