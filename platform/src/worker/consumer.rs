//! A member of a consumer group on one topic: gathers batches, hands them to the worker's
//! [`Handler`], retries what fails, and sets aside what keeps failing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{Backoff, DeadLetters, Origin, StoredOffsets};
use crate::lifecycle::RoleState;
use crate::KafkaSettings;

/// After an error from the consumer. Such errors are reports (a broker went away, the group
/// coordinator moved) while the client keeps fetching from the brokers that remain; they arrive
/// at the client's reconnect pace, so a long pause would only starve the healthy partitions
/// (a 500 ms pause per report held the read models back 30 s when one of three brokers died).
const CONSUME_ERROR_PAUSE: Duration = Duration::from_millis(10);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One record as a worker sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Records of one or more partitions, each partition's in offset order.
pub type Batch = BTreeMap<i32, Vec<Record>>;

/// A worker's own logic.
pub trait Handler: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Handles `batch`. For an exactly-once effect, the handler skips records below each
    /// partition's stored offset and stores the next offsets in the same transaction as its
    /// effects ([`StoredOffsets::lock`] and [`StoredOffsets::store`]).
    fn handle(&self, batch: &Batch) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether `error` will recur for the same records (a record that cannot be understood),
    /// rather than pass (a database that is briefly away).
    fn is_poison(&self, error: &Self::Error) -> bool;
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub topic: String,
    pub group_id: String,
    pub kafka: KafkaSettings,
    /// Where records that keep failing go (`{prefix}.dlq.v1`).
    pub dead_letter_topic: String,
    /// Records gathered into one batch at most.
    pub max_batch: usize,
    /// How long a batch keeps collecting once its first record arrived.
    pub gather: Duration,
    /// `fetch.wait.max.ms`: a fetch returns as soon as records exist on brokers that long-poll;
    /// one that does not holds every fetch for this long, the floor of a worker's latency.
    pub fetch_wait_ms: u32,
    /// How often a poison error is retried before its records are tried one by one and the
    /// one that fails is set aside.
    pub poison_attempts: u32,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct ConsumerStatus {
    handled: AtomicU64,
    errors: AtomicU64,
    beyond_end: AtomicU64,
    dead_lettered: AtomicU64,
}

impl ConsumerStatus {
    /// Records in batches the handler accepted.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Partitions whose stored offset lies beyond the end of the topic: the topic was deleted and
    /// recreated under the worker, which then waits for offsets that will never come.
    pub fn beyond_end(&self) -> u64 {
        self.beyond_end.load(Ordering::Relaxed)
    }

    /// Records set aside on the dead-letter topic.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
}

/// Remembers the partitions each rebalance assigns, so the loop can seek them to the stored
/// offsets, and reports the member ready once the group has given it partitions (or standing by
/// when it has given it none: more members than partitions).
pub struct AssignmentContext {
    assigned: Mutex<Vec<i32>>,
    owned: AtomicU64,
    role: RoleState,
}

impl AssignmentContext {
    fn owned_changed(&self, owned: u64) {
        if owned > 0 {
            self.role.ready();
        } else {
            self.role
                .standing_by("partitions: the group has assigned none to this member");
        }
    }
}

impl ClientContext for AssignmentContext {}

impl ConsumerContext for AssignmentContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| -> Vec<i32> {
            list.elements().iter().map(|e| e.partition()).collect()
        };
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions(list);
                tracing::info!(partitions = ?partitions, "partitions assigned");
                let owned = self.owned.load(Ordering::Relaxed) + partitions.len() as u64;
                self.owned.store(owned, Ordering::Relaxed);
                self.assigned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(partitions);
                self.owned_changed(owned);
            }
            Rebalance::Revoke(list) => {
                let partitions = partitions(list);
                tracing::info!(partitions = ?partitions, "partitions revoked");
                let owned = self
                    .owned
                    .load(Ordering::Relaxed)
                    .saturating_sub(partitions.len() as u64);
                self.owned.store(owned, Ordering::Relaxed);
            }
            Rebalance::Error(e) => tracing::warn!("rebalancing failed: {e}"),
        }
    }
}

/// One member of a worker's consumer group.
pub struct Consumer {
    config: ConsumerConfig,
    offsets: StoredOffsets,
    status: Arc<ConsumerStatus>,
    role: RoleState,
    dead_letters: tokio::sync::OnceCell<DeadLetters>,
}

impl Consumer {
    pub fn new(config: ConsumerConfig, offsets: StoredOffsets, role: RoleState) -> Self {
        Self {
            config,
            offsets,
            status: Arc::default(),
            role,
            dead_letters: tokio::sync::OnceCell::new(),
        }
    }

    pub fn status(&self) -> Arc<ConsumerStatus> {
        self.status.clone()
    }

    pub fn offsets(&self) -> &StoredOffsets {
        &self.offsets
    }

    fn stream(&self) -> Result<StreamConsumer<AssignmentContext>, KafkaError> {
        let consumer: StreamConsumer<AssignmentContext> = self
            .config
            .kafka
            .consumer_config(&self.config.group_id)
            .set("fetch.wait.max.ms", self.config.fetch_wait_ms.to_string())
            .create_with_context(AssignmentContext {
                assigned: Mutex::default(),
                owned: AtomicU64::new(0),
                role: self.role.clone(),
            })?;
        consumer.subscribe(&[&self.config.topic])?;
        Ok(consumer)
    }

    /// Joins the group once the topic exists (subscribing to a missing topic would leave the
    /// group without partitions until the next metadata refresh, minutes later).
    async fn join(&self, stop: &CancellationToken) -> Option<StreamConsumer<AssignmentContext>> {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            let joined = async {
                self.config.kafka.ensure_topic(&self.config.topic).await?;
                self.stream()
            };
            match joined.await {
                Ok(joined) => {
                    self.role.waiting(format!(
                        "a partition assignment in group {}",
                        self.config.group_id
                    ));
                    return Some(joined);
                }
                Err(e) => {
                    tracing::warn!(topic = %self.config.topic, "cannot start consuming yet: {e}");
                    if !backoff.sleep(stop).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Consumes and hands batches to `handler` until `stop`.
    pub async fn run<H: Handler>(&self, handler: &H, stop: CancellationToken) {
        self.role
            .waiting(format!("the topic {} on the broker", self.config.topic));
        let Some(consumer) = self.join(&stop).await else {
            self.role.stopped();
            return;
        };
        tracing::info!(
            role = self.role.report().role,
            topic = %self.config.topic,
            group = %self.config.group_id,
            "consuming"
        );
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => break,
                received = consumer.recv() => received,
            };
            self.seek_assigned(&consumer).await;
            let mut batch = Batch::new();
            match first {
                Ok(m) => take(&mut batch, &m),
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("consuming failed: {e}");
                    tokio::time::sleep(CONSUME_ERROR_PAUSE).await;
                    continue;
                }
            }
            let mut count = 1;
            while count < self.config.max_batch {
                match tokio::time::timeout(self.config.gather, consumer.recv()).await {
                    Ok(Ok(m)) => {
                        take(&mut batch, &m);
                        count += 1;
                    }
                    _ => break,
                }
            }
            if !self.process(handler, &batch, &stop).await {
                break;
            }
            self.status
                .handled
                .fetch_add(count as u64, Ordering::Relaxed);
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
            // Informational only (the database holds the truth), so failures are merely logged.
            if let Err(e) = consumer.commit(&commit, CommitMode::Async) {
                tracing::debug!("committing offsets to the broker: {e}");
            }
        }
        self.role.draining();
        drop(consumer);
        self.role.stopped();
        tracing::info!(group = %self.config.group_id, "consumer stopped");
    }

    /// Handles `batch` until it succeeds; a poison error that persists sends the batch through
    /// record by record, and the record that keeps failing to the dead letters. Returns `false`
    /// when stopped first.
    async fn process<H: Handler>(
        &self,
        handler: &H,
        batch: &Batch,
        stop: &CancellationToken,
    ) -> bool {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let mut poisoned = 0;
        loop {
            match handler.handle(batch).await {
                Ok(()) => return true,
                Err(e) => {
                    self.failed(&e);
                    if handler.is_poison(&e) {
                        poisoned += 1;
                        if poisoned >= self.config.poison_attempts {
                            return self.one_by_one(handler, batch, stop).await;
                        }
                    }
                    if !backoff.sleep(stop).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn one_by_one<H: Handler>(
        &self,
        handler: &H,
        batch: &Batch,
        stop: &CancellationToken,
    ) -> bool {
        for (partition, records) in batch {
            for record in records {
                let single = Batch::from([(*partition, vec![record.clone()])]);
                let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
                let mut poisoned = 0;
                loop {
                    match handler.handle(&single).await {
                        Ok(()) => break,
                        Err(e) => {
                            self.failed(&e);
                            if handler.is_poison(&e) {
                                poisoned += 1;
                                if poisoned >= self.config.poison_attempts {
                                    if !self.set_aside(record, e.to_string(), stop).await {
                                        return false;
                                    }
                                    break;
                                }
                            }
                            if !backoff.sleep(stop).await {
                                return false;
                            }
                        }
                    }
                }
            }
        }
        true
    }

    /// Writes `record` to the dead letters, then moves its partition past it; neither step is
    /// skipped, however long the broker or the database take to come back.
    async fn set_aside(&self, record: &Record, reason: String, stop: &CancellationToken) -> bool {
        let origin = Origin {
            topic: &self.config.topic,
            group: &self.config.group_id,
            reason: &reason,
        };
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let dead_letters = loop {
            match self.dead_letters().await {
                Ok(dead_letters) => break dead_letters,
                Err(e) => {
                    tracing::warn!("cannot reach the dead-letter topic yet: {e}");
                    if !backoff.sleep(stop).await {
                        return false;
                    }
                }
            }
        };
        while let Err(e) = dead_letters.publish(record, &origin).await {
            tracing::warn!("writing a dead letter failed, retrying: {e}");
            if !backoff.sleep(stop).await {
                return false;
            }
        }
        backoff.reset();
        while let Err(e) = self.offsets.skip(record.partition, record.offset).await {
            tracing::warn!("moving past a dead letter failed, retrying: {e}");
            if !backoff.sleep(stop).await {
                return false;
            }
        }
        self.status.dead_lettered.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("chat4all_dead_letters_total", "group" => self.config.group_id.clone())
            .increment(1);
        tracing::error!(
            topic = %self.config.topic, partition = record.partition, offset = record.offset,
            dead_letters = %dead_letters.topic(), "a record kept failing and was set aside: {reason}"
        );
        true
    }

    /// The dead-letter producer, made (and its topic ensured) when the first record needs it: a
    /// worker that never sets anything aside costs the broker nothing, and starts no slower.
    async fn dead_letters(&self) -> Result<&DeadLetters, KafkaError> {
        self.dead_letters
            .get_or_try_init(|| async {
                self.config
                    .kafka
                    .ensure_topic(&self.config.dead_letter_topic)
                    .await?;
                DeadLetters::new(&self.config.kafka, self.config.dead_letter_topic.clone())
            })
            .await
    }

    fn failed(&self, error: &dyn std::error::Error) {
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("chat4all_worker_errors_total", "group" => self.config.group_id.clone())
            .increment(1);
        tracing::warn!(group = %self.config.group_id, "handling a batch failed, retrying: {error}");
    }

    /// Seeks newly assigned partitions to the offsets stored in Postgres (Kafka's own committed
    /// offsets may lag them), and says loudly when a stored offset is past the end.
    async fn seek_assigned(&self, consumer: &StreamConsumer<AssignmentContext>) {
        let newly: Vec<i32> = std::mem::take(
            &mut *consumer
                .context()
                .assigned
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for partition in newly {
            let Ok(Some(next)) = self.offsets.next(partition).await else {
                continue;
            };
            if let Ok((_, high)) =
                consumer.fetch_watermarks(&self.config.topic, partition, Duration::from_secs(2))
            {
                if next > high {
                    self.status.beyond_end.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("chat4all_consumer_offsets_beyond_end_total").increment(1);
                    tracing::error!(
                        topic = %self.config.topic, partition, stored = next, end = high,
                        worker = %self.offsets.name(),
                        "this worker is further along this partition than the topic holds: \
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
}

fn take(batch: &mut Batch, message: &BorrowedMessage<'_>) {
    batch.entry(message.partition()).or_default().push(Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().unwrap_or_default().to_vec(),
    });
}
