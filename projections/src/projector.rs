//! The projector: consumes the events topic and applies each partition's events in order, in one
//! Postgres transaction per batch that also stores the next offset of every partition in it.
//!
//! Offsets in Postgres are the truth: records below a partition's stored offset are skipped (a
//! re-delivery after a crash or a rebalance), so each event takes effect once. Kafka's own
//! committed offsets are written after the database commit, only so that a restarted consumer does
//! not re-read more than it must. After each commit the applied events are announced on Redis for
//! the push layer; Redis is fire-and-forget, and subscribers recover gaps from the read models.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chat4all_platform::{KafkaSettings, Settings, SettingsError};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;

use chat4all_eventstore::Envelope;

use crate::{apply_batch, Notification, ProjectionError};

/// The name under which the live read models keep their offsets.
pub const PROJECTION: &str = "read_models";
const MAX_BATCH: usize = 2_000;
/// How long a batch keeps collecting once its first record arrived.
const GATHER: Duration = Duration::from_millis(2);
const RETRY: Duration = Duration::from_millis(500);
/// After an error from the consumer. Such errors are reports (a broker went away, the group
/// coordinator moved) while the client keeps fetching from the brokers that remain; they arrive
/// at the client's reconnect pace, so a long pause would only starve the healthy partitions
/// (a 500 ms pause per report held the read models back 30 s when one of three brokers died).
const CONSUME_ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    pub topic: String,
    pub group_id: String,
    /// Prefix of Redis channels (`{prefix}:conversation:{id}`).
    pub channel_prefix: String,
    pub kafka: KafkaSettings,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct ProjectorStatus {
    applied: AtomicU64,
    skipped: AtomicU64,
    errors: AtomicU64,
    beyond_end: AtomicU64,
}

/// Remembers the partitions each rebalance assigns, so the loop can seek them to the offsets
/// stored with the read models.
#[derive(Default)]
pub struct AssignmentContext {
    assigned: Mutex<Vec<i32>>,
}

impl ClientContext for AssignmentContext {}

impl ConsumerContext for AssignmentContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let partitions: Vec<i32> = partitions
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(partitions = ?partitions, "partitions assigned");
                let mut assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
                assigned.extend(partitions);
            }
            Rebalance::Revoke(partitions) => {
                let partitions: Vec<i32> = partitions
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(partitions = ?partitions, "partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!("rebalancing failed: {e}"),
        }
    }
}

impl ProjectorStatus {
    /// Records whose events were applied (or were no-ops by their aggregate's guard).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Records skipped because their partition's stored offset was already past them.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Partitions whose stored offset lies beyond the end of the topic: the topic was deleted and
    /// recreated under the read models, which then wait for offsets that will never come.
    pub fn beyond_end(&self) -> u64 {
        self.beyond_end.load(Ordering::Relaxed)
    }
}

/// One record of a partition batch.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: i64,
    pub value: Vec<u8>,
}

pub struct Projector {
    pool: PgPool,
    config: ProjectorConfig,
    redis: Option<redis::aio::ConnectionManager>,
    status: Arc<ProjectorStatus>,
}

impl Projector {
    /// The projector of the deployment `settings` describe: one member of its consumer group
    /// (start several to share the partitions).
    ///
    /// # Errors
    /// Unusable database settings.
    pub async fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        let pool = settings.database.pool()?;
        // Without Redis the read models are still built; only live announcements are lost, and
        // subscribers recover those from the read models.
        let redis = match settings.redis.client() {
            Ok(client) => match redis::aio::ConnectionManager::new(client).await {
                Ok(manager) => Some(manager),
                Err(e) => {
                    tracing::warn!("Redis unavailable, projecting without announcements: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::warn!("REDIS_URL is not usable: {e}");
                None
            }
        };
        Ok(Self::new(
            pool,
            ProjectorConfig {
                topic: KafkaSettings::events_topic(&settings.topic_prefix),
                group_id: format!("{}-projections", settings.topic_prefix),
                channel_prefix: settings.topic_prefix.clone(),
                kafka: settings.kafka.clone(),
            },
            redis,
        ))
    }

    pub fn new(
        pool: PgPool,
        config: ProjectorConfig,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> Self {
        Self {
            pool,
            config,
            redis,
            status: Arc::default(),
        }
    }

    pub fn status(&self) -> Arc<ProjectorStatus> {
        self.status.clone()
    }

    /// Applies records of one or more partitions (each partition's in offset order) in one
    /// transaction that also stores each partition's next offset; returns what to announce.
    /// Records below their partition's stored offset are skipped.
    ///
    /// # Errors
    /// A store failure or a record that cannot be understood; nothing of the batch took effect.
    pub async fn apply_batch(
        &self,
        batch: &BTreeMap<i32, Vec<Record>>,
    ) -> Result<Vec<Notification>, ProjectionError> {
        let partitions: Vec<i32> = batch.keys().copied().collect();
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        // Every partition gets its row first, so that the lock below covers new partitions too
        // (two members briefly owning a partition during a rebalance take turns on it).
        sqlx::query(
            "INSERT INTO projection_offsets (projection, topic, kafka_partition, next_offset) \
             SELECT $1, $2, p, 0 FROM unnest($3::int4[]) AS p ON CONFLICT DO NOTHING",
        )
        .bind(PROJECTION)
        .bind(&self.config.topic)
        .bind(&partitions)
        .execute(&mut *tx)
        .await?;
        let stored: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT kafka_partition, next_offset FROM projection_offsets \
             WHERE projection = $1 AND topic = $2 AND kafka_partition = ANY($3) \
             ORDER BY kafka_partition FOR UPDATE",
        )
        .bind(PROJECTION)
        .bind(&self.config.topic)
        .bind(&partitions)
        .fetch_all(&mut *tx)
        .await?;
        let stored: HashMap<i32, i64> = stored.into_iter().collect();
        let mut events = Vec::new();
        let mut next_offsets = Vec::with_capacity(partitions.len());
        let mut skipped = 0;
        for (partition, records) in batch {
            let mut next = stored.get(partition).copied().unwrap_or(0);
            for record in records {
                if record.offset < next {
                    skipped += 1;
                    continue;
                }
                events.push(
                    Envelope::decode(&record.value)
                        .map_err(|e| ProjectionError::Malformed(e.to_string()))?,
                );
                next = record.offset + 1;
            }
            next_offsets.push(next);
        }
        let notifications = apply_batch(&mut tx, &events).await?;
        sqlx::query(
            "UPDATE projection_offsets o SET next_offset = n.next_offset \
               FROM unnest($3::int4[], $4::int8[]) AS n(kafka_partition, next_offset) \
              WHERE o.projection = $1 AND o.topic = $2 AND o.kafka_partition = n.kafka_partition",
        )
        .bind(PROJECTION)
        .bind(&self.config.topic)
        .bind(&partitions)
        .bind(&next_offsets)
        .execute(&mut *tx)
        .await?;
        if let Some(position) = events.iter().map(|e| e.position).max() {
            sqlx::query(
                "INSERT INTO projection_position (projection, position) VALUES ($1, $2) \
                 ON CONFLICT (projection) DO UPDATE \
                 SET position = greatest(projection_position.position, EXCLUDED.position), updated_at = now()",
            )
            .bind(PROJECTION)
            .bind(position)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.status.skipped.fetch_add(skipped, Ordering::Relaxed);
        self.status
            .applied
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(notifications)
    }

    async fn announce(&self, notifications: Vec<Notification>) {
        let Some(redis) = &self.redis else { return };
        if notifications.is_empty() {
            return;
        }
        // One round trip for the whole batch, in order.
        let mut pipeline = redis::pipe();
        for notification in &notifications {
            let channel = format!("{}:{}", self.config.channel_prefix, notification.channel);
            pipeline
                .cmd("PUBLISH")
                .arg(channel)
                .arg(notification.frame.to_string())
                .ignore();
        }
        let mut redis = redis.clone();
        let published: redis::RedisResult<()> = pipeline.query_async(&mut redis).await;
        if let Err(e) = published {
            metrics::counter!("chat4all_projector_announce_errors_total").increment(1);
            tracing::debug!("announcing {} events failed: {e}", notifications.len());
        }
    }

    /// Seeks newly assigned partitions to the offsets stored with the read models (Kafka's own
    /// committed offsets may lag them), and says loudly when a stored offset is past the end.
    async fn seek_assigned(&self, consumer: &StreamConsumer<AssignmentContext>) {
        let newly: Vec<i32> = std::mem::take(
            &mut *consumer
                .context()
                .assigned
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for partition in newly {
            let stored: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
                "SELECT next_offset FROM projection_offsets \
                 WHERE projection = $1 AND topic = $2 AND kafka_partition = $3",
            )
            .bind(PROJECTION)
            .bind(&self.config.topic)
            .bind(partition)
            .fetch_optional(&self.pool)
            .await;
            let Ok(Some(next)) = stored else { continue };
            if let Ok((_, high)) =
                consumer.fetch_watermarks(&self.config.topic, partition, Duration::from_secs(2))
            {
                if next > high {
                    self.status.beyond_end.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("chat4all_projector_offsets_beyond_end_total").increment(1);
                    tracing::error!(
                        topic = %self.config.topic, partition, stored = next, end = high,
                        "the read models are further along this partition than the topic holds: \
                         was the topic recreated? Rebuild with `chat4all replay` and reset the offsets"
                    );
                    continue;
                }
            }
            // Seeking right after an assignment can fail before fetching starts; records below
            // the stored offset are skipped anyway, so a failed seek only costs re-reading.
            if let Err(e) = consumer.seek(
                &self.config.topic,
                partition,
                Offset::Offset(next),
                Duration::from_secs(1),
            ) {
                tracing::debug!(partition, "seeking to the stored offset failed: {e}");
            }
        }
    }

    fn consumer(&self) -> Result<StreamConsumer<AssignmentContext>, ProjectionError> {
        Ok(self
            .config
            .kafka
            .consumer_config(&self.config.group_id)
            // A fetch returns as soon as records exist on brokers that long-poll; one that does
            // not holds every fetch for this long, and it is the floor of push latency.
            .set("fetch.wait.max.ms", "10")
            .create_with_context(AssignmentContext::default())?)
    }

    /// Consumes and applies until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let consumer = loop {
            // Subscribing to a topic that does not exist yet would leave the group without
            // partitions until the next metadata refresh, minutes later.
            let ready = self.config.kafka.ensure_topic(&self.config.topic).await;
            match ready
                .map(|_| ())
                .map_err(ProjectionError::from)
                .and_then(|()| self.consumer())
                .and_then(|c| {
                    c.subscribe(&[&self.config.topic])?;
                    Ok(c)
                }) {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!("cannot start consuming yet: {e}");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        };
        tracing::info!(topic = %self.config.topic, group = %self.config.group_id, "projecting");
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => break,
                received = consumer.recv() => received,
            };
            self.seek_assigned(&consumer).await;
            let mut batch: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
            let mut take = |m: &rdkafka::message::BorrowedMessage<'_>| {
                batch.entry(m.partition()).or_default().push(Record {
                    offset: m.offset(),
                    value: m.payload().unwrap_or_default().to_vec(),
                });
            };
            match first {
                Ok(m) => take(&m),
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("consuming failed: {e}");
                    tokio::time::sleep(CONSUME_ERROR_PAUSE).await;
                    continue;
                }
            }
            let mut count = 1;
            while count < MAX_BATCH {
                match tokio::time::timeout(GATHER, consumer.recv()).await {
                    Ok(Ok(m)) => {
                        take(&m);
                        count += 1;
                    }
                    _ => break,
                }
            }
            loop {
                match self.apply_batch(&batch).await {
                    Ok(notifications) => {
                        self.announce(notifications).await;
                        break;
                    }
                    Err(e) => {
                        self.status.errors.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("chat4all_projector_errors_total").increment(1);
                        tracing::warn!("applying a batch failed, retrying: {e}");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(RETRY) => {}
                        }
                    }
                }
            }
            let mut commit = TopicPartitionList::new();
            for (partition, records) in &batch {
                if let Some(last) = records.last() {
                    let _ = commit.add_partition_offset(
                        &self.config.topic,
                        *partition,
                        Offset::Offset(last.offset + 1),
                    );
                }
            }
            metrics::counter!("chat4all_projector_applied_total").increment(count as u64);
            // Informational only (the database holds the truth), so failures are merely logged.
            if let Err(e) = consumer.commit(&commit, CommitMode::Async) {
                tracing::debug!("committing offsets to the broker: {e}");
            }
        }
        tracing::info!("projector stopped");
    }
}
