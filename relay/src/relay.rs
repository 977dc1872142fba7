//! The relay loop: lead, read below the horizon, publish, wait for acknowledgements, checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat4all_platform::KafkaSettings;
use rand::Rng;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::tail::held_back;
use crate::{read_batch, Checkpoint, Leadership, Publisher, RelayError, RelayStatus, StoredEvent};

/// The channel the insert trigger notifies (see the event store migration).
const CHANNEL: &str = "chat4all_events";
/// First re-poll while committed events wait behind an open transaction; doubles up to the max.
const HELD_BACK_FIRST: Duration = Duration::from_millis(2);
const HELD_BACK_MAX: Duration = Duration::from_millis(100);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often lag and horizon figures are refreshed.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// What one deployment's relay needs to know.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The deployment (the topic prefix): one leader per deployment.
    pub deployment: String,
    pub topic: String,
    pub kafka: KafkaSettings,
    pub batch_size: i64,
    pub idle_poll: Duration,
    pub delivery_timeout: Duration,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This many events were acknowledged by the broker and checkpointed.
    Published(usize),
    /// Nothing to publish; `held_back` when committed events wait behind an open transaction.
    Idle { held_back: bool },
}

/// One deployment's relay.
pub struct Relay {
    pool: PgPool,
    options: PgConnectOptions,
    config: RelayConfig,
    status: Arc<RelayStatus>,
    observer: Option<Observer>,
}

/// Called with every batch the broker acknowledged, before it is checkpointed (benchmarks
/// measure commit-to-acknowledgement latency with it).
pub type Observer = Arc<dyn Fn(&[StoredEvent]) + Send + Sync>;

/// Exponential backoff with full jitter.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: BACKOFF_FIRST,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }

    fn wait(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let millis = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(rand::thread_rng().gen_range(millis / 2..=millis))
    }
}

impl Relay {
    pub fn new(pool: PgPool, options: PgConnectOptions, config: RelayConfig) -> Self {
        Self {
            pool,
            options,
            config,
            status: Arc::default(),
            observer: None,
        }
    }

    #[must_use]
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn status(&self) -> Arc<RelayStatus> {
        self.status.clone()
    }

    /// One step: the next batch after `checkpoint`, published and acknowledged, then
    /// checkpointed through the leadership connection.
    ///
    /// # Errors
    /// A store or broker failure (nothing was checkpointed; the batch will be re-sent), or lost
    /// leadership.
    pub async fn publish_batch(
        &self,
        leadership: &mut Leadership,
        publisher: &Publisher,
        checkpoint: &mut Checkpoint,
    ) -> Result<Outcome, RelayError> {
        let events = read_batch(&self.pool, *checkpoint, self.config.batch_size).await?;
        let Some(last) = events.last().map(StoredEvent::checkpoint) else {
            let held_back = held_back(&self.pool, *checkpoint).await?;
            return Ok(Outcome::Idle { held_back });
        };
        publisher.publish(&events).await?;
        if let Some(observe) = &self.observer {
            observe(&events);
        }
        leadership.store(last).await?;
        *checkpoint = last;
        self.status.published_batch(events.len(), last.position);
        Ok(Outcome::Published(events.len()))
    }

    /// Leads (or waits to lead) and relays until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            self.status.set_leader(false);
            let Some(mut leadership) =
                Leadership::acquire(&self.options, &self.config.deployment, &stop).await
            else {
                break;
            };
            self.status.set_leader(true);
            let result = self.lead(&mut leadership, &stop).await;
            self.status.set_leader(false);
            leadership.release().await;
            match result {
                Ok(()) => break,
                Err(e) => {
                    self.status.error("leadership");
                    tracing::warn!("relay stepped down: {e}");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(BACKOFF_FIRST) => {}
                    }
                }
            }
        }
        tracing::info!("relay stopped");
    }

    async fn lead(
        &self,
        leadership: &mut Leadership,
        stop: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut backoff = Backoff::new();
        // The broker may be down when leadership starts: keep trying, never skip.
        while let Err(e) = Publisher::ensure_topic(&self.config.kafka, &self.config.topic).await {
            self.status.error("broker");
            tracing::warn!(topic = %self.config.topic, "cannot create the topic yet: {e}");
            let wait = backoff.wait();
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
            leadership.confirm().await?;
        }
        backoff.reset();
        let mut checkpoint = leadership.checkpoint().await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let mut publisher = self.publisher()?;
        let mut held_back_wait = HELD_BACK_FIRST;
        let mut wait = Duration::ZERO;
        let mut observed = Instant::now() - OBSERVE_EVERY;
        tracing::info!(topic = %self.config.topic, ?checkpoint, "relaying");
        loop {
            if !wait.is_zero() {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(wait) => {}
                    received = listener.recv() => {
                        // A broken listener must not turn the wait into a busy loop.
                        if received.is_err() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
            if stop.is_cancelled() {
                publisher.flush(self.config.delivery_timeout);
                return Ok(());
            }
            if observed.elapsed() >= OBSERVE_EVERY {
                self.observe(checkpoint).await;
                observed = Instant::now();
            }
            wait = match self
                .publish_batch(leadership, &publisher, &mut checkpoint)
                .await
            {
                Ok(Outcome::Published(_)) => {
                    backoff.reset();
                    held_back_wait = HELD_BACK_FIRST;
                    Duration::ZERO
                }
                Ok(Outcome::Idle { held_back: true }) => {
                    let wait = held_back_wait;
                    held_back_wait = (held_back_wait * 2).min(HELD_BACK_MAX);
                    wait
                }
                Ok(Outcome::Idle { held_back: false }) => {
                    held_back_wait = HELD_BACK_FIRST;
                    self.config.idle_poll
                }
                Err(RelayError::LostLeadership(e)) => return Err(RelayError::LostLeadership(e)),
                Err(RelayError::Broker(e)) => {
                    self.status.error("broker");
                    tracing::warn!("publishing failed, the batch will be re-sent: {e}");
                    // A fresh producer starts a fresh idempotence session, so the re-sent batch
                    // cannot be rejected as out of sequence after a gap.
                    publisher = self.publisher()?;
                    backoff.wait()
                }
                Err(RelayError::Store(e)) => {
                    self.status.error("store");
                    tracing::warn!("reading the event store failed: {e}");
                    backoff.wait()
                }
            };
        }
    }

    fn publisher(&self) -> Result<Publisher, RelayError> {
        Ok(Publisher::new(
            &self.config.kafka,
            self.config.topic.clone(),
            self.config.delivery_timeout,
        )?)
    }

    /// Refreshes lag and horizon figures; failures only leave them stale.
    async fn observe(&self, checkpoint: Checkpoint) {
        let figures = sqlx::query_as::<_, (i64, f64, f64)>(include_str!("observe.sql"))
            .bind(checkpoint.tx_id.to_string())
            .bind(checkpoint.position)
            .fetch_one(&self.pool)
            .await;
        match figures {
            Ok((lag_events, lag_seconds, oldest)) => {
                self.status.observed(lag_events, lag_seconds, oldest)
            }
            Err(e) => tracing::debug!("relay figures unavailable: {e}"),
        }
    }
}
