//! The projector: consumes the events topic and applies each partition's events in order, in one
//! Postgres transaction per batch that also stores the next offset of every partition in it.
//!
//! Offsets in Postgres are the truth: records below a partition's stored offset are skipped (a
//! re-delivery after a crash or a rebalance), so each event takes effect once. Kafka's own
//! committed offsets are written after the database commit, only so that a restarted consumer does
//! not re-read more than it must. After each commit the applied events are announced on Redis for
//! the push layer; Redis is fire-and-forget, and subscribers recover gaps from the read models.
//!
//! Group membership, seeking to the stored offsets, retries and dead letters for an event that
//! cannot be understood come from the worker kit (`chat4all_platform::worker`); this module is
//! only what applying means.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chat4all_eventstore::Envelope;
use chat4all_platform::lifecycle::RoleState;
use chat4all_platform::worker::{
    Batch, Consumer, ConsumerConfig, ConsumerStatus, Handler, StoredOffsets,
};
use chat4all_platform::{KafkaSettings, Settings, SettingsError};
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::{apply_batch, Notification, ProjectionError};

/// The name under which the live read models keep their offsets.
pub const PROJECTION: &str = "read_models";
const MAX_BATCH: usize = 2_000;
/// How long a batch keeps collecting once its first record arrived.
const GATHER: Duration = Duration::from_millis(2);
/// A batch whose events cannot be understood is retried this often before its records are
/// applied one by one and the one that fails is set aside on the dead letters.
const POISON_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    pub topic: String,
    pub group_id: String,
    /// The deployment's prefix: of Redis subjects (`{prefix}:conversation:{id}`) and of the
    /// dead-letter topic.
    pub prefix: String,
    pub kafka: KafkaSettings,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct ProjectorStatus {
    applied: AtomicU64,
    skipped: AtomicU64,
    consumer: std::sync::OnceLock<Arc<ConsumerStatus>>,
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

    fn consumer(&self) -> Option<&ConsumerStatus> {
        self.consumer.get().map(AsRef::as_ref)
    }

    pub fn errors(&self) -> u64 {
        self.consumer().map_or(0, ConsumerStatus::errors)
    }

    /// Partitions whose stored offset lies beyond the end of the topic: the topic was deleted and
    /// recreated under the read models, which then wait for offsets that will never come.
    pub fn beyond_end(&self) -> u64 {
        self.consumer().map_or(0, ConsumerStatus::beyond_end)
    }

    /// Records that kept failing and were set aside on the dead-letter topic.
    pub fn dead_lettered(&self) -> u64 {
        self.consumer().map_or(0, ConsumerStatus::dead_lettered)
    }
}

pub struct Projector {
    pool: PgPool,
    config: ProjectorConfig,
    redis: Option<redis::aio::ConnectionManager>,
    status: Arc<ProjectorStatus>,
    offsets: StoredOffsets,
    role: RoleState,
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
                prefix: settings.topic_prefix.clone(),
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
            offsets: StoredOffsets::new(pool.clone(), PROJECTION, config.topic.clone()),
            pool,
            config,
            redis,
            status: Arc::default(),
            role: RoleState::new("projector"),
        }
    }

    pub fn status(&self) -> Arc<ProjectorStatus> {
        self.status.clone()
    }

    /// What the projector is doing, for `/ready`.
    pub fn role(&self) -> RoleState {
        self.role.clone()
    }

    /// Applies records of one or more partitions (each partition's in offset order) in one
    /// transaction that also stores each partition's next offset; returns what to announce.
    /// Records below their partition's stored offset are skipped.
    ///
    /// # Errors
    /// A store failure or a record that cannot be understood; nothing of the batch took effect.
    pub async fn apply_batch(&self, batch: &Batch) -> Result<Vec<Notification>, ProjectionError> {
        let partitions: Vec<i32> = batch.keys().copied().collect();
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let stored = self.offsets.lock(&mut tx, &partitions).await?;
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
        self.offsets
            .store(&mut tx, &partitions, &next_offsets)
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
            let subject = format!("{}:{}", self.config.prefix, notification.subject);
            pipeline
                .cmd("PUBLISH")
                .arg(subject)
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

    /// Consumes and applies until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let consumer = Consumer::new(
            ConsumerConfig {
                topic: self.config.topic.clone(),
                group_id: self.config.group_id.clone(),
                kafka: self.config.kafka.clone(),
                dead_letter_topic: KafkaSettings::dead_letter_topic(&self.config.prefix),
                max_batch: MAX_BATCH,
                gather: GATHER,
                fetch_wait_ms: 10,
                poison_attempts: POISON_ATTEMPTS,
            },
            self.offsets.clone(),
            self.role.clone(),
        );
        let _ = self.status.consumer.set(consumer.status());
        consumer.run(&self, stop).await;
        tracing::info!("projector stopped");
    }
}

impl Handler for Projector {
    type Error = ProjectionError;

    async fn handle(&self, batch: &Batch) -> Result<(), ProjectionError> {
        let notifications = self.apply_batch(batch).await?;
        self.announce(notifications).await;
        metrics::counter!("chat4all_projector_applied_total")
            .increment(batch.values().map(|r| r.len() as u64).sum());
        Ok(())
    }

    fn is_poison(&self, error: &ProjectionError) -> bool {
        matches!(error, ProjectionError::Malformed(_))
    }
}
