//! The relay loop: lead, read below the horizon, publish, wait for acknowledgements, checkpoint.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chat4all_platform::lifecycle::RoleState;
use chat4all_platform::worker::Backoff;
use chat4all_platform::{KafkaSettings, Settings, SettingsError};
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use chat4all_eventstore::reader::{behind, checkpoint_ahead, held_back};
use chat4all_eventstore::{read_batch, Behind, Checkpoint, StoredEvent};

use crate::{Encoded, Leadership, Pending, Publisher, RelayError, RelayStatus};

/// The channel the insert trigger notifies (see the event store migration).
const CHANNEL: &str = "chat4all_events";
/// First re-poll while committed events wait behind an open transaction; doubles up to the max.
const HELD_BACK_FIRST: Duration = Duration::from_millis(2);
const HELD_BACK_MAX: Duration = Duration::from_millis(50);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Batches read and sent ahead of the broker's acknowledgements.
pub const IN_FLIGHT: usize = 4;
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
    /// This many more events were handed to the producer (acknowledgements still to come).
    Enqueued(usize),
    /// This many events were acknowledged by the broker and checkpointed.
    Published(usize),
    /// Nothing to publish; `held_back` when committed events wait behind an open transaction.
    Idle { held_back: bool },
}

/// Batches handed to the producer and not yet acknowledged, read ahead of the checkpoint: the next
/// batch is read and encoded while the broker acknowledges the previous ones.
pub struct Pipeline {
    publisher: Publisher,
    in_flight: VecDeque<InFlight>,
    /// The last event handed to the producer.
    read_to: Checkpoint,
    /// The last event acknowledged and checkpointed.
    checkpoint: Checkpoint,
    /// Whether the last read filled a whole batch (more is probably waiting).
    behind: bool,
}

struct InFlight {
    pending: Pending,
    events: Vec<StoredEvent>,
    last: Checkpoint,
}

impl Pipeline {
    pub fn new(publisher: Publisher, checkpoint: Checkpoint) -> Self {
        Self {
            publisher,
            in_flight: VecDeque::new(),
            read_to: checkpoint,
            checkpoint,
            behind: true,
        }
    }

    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// Forgets everything not acknowledged (after a failure): it will be read and sent again.
    fn rewind(&mut self, publisher: Publisher) {
        self.publisher.purge();
        self.in_flight.clear();
        self.read_to = self.checkpoint;
        self.publisher = publisher;
        self.behind = true;
    }
}

/// One deployment's relay.
pub struct Relay {
    pool: PgPool,
    options: PgConnectOptions,
    config: RelayConfig,
    status: Arc<RelayStatus>,
    observer: Option<Observer>,
    role: RoleState,
}

/// Called with every batch the broker acknowledged, before it is checkpointed (benchmarks
/// measure commit-to-acknowledgement latency with it).
pub type Observer = Arc<dyn Fn(&[StoredEvent]) + Send + Sync>;

impl Relay {
    /// The relay of the deployment `settings` describe (it leads or stands by on its own).
    ///
    /// # Errors
    /// Unusable database settings.
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        Ok(Self::new(
            settings.database.pool()?,
            settings.database.connect_options()?,
            RelayConfig {
                deployment: settings.topic_prefix.clone(),
                topic: KafkaSettings::events_topic(&settings.topic_prefix),
                kafka: settings.kafka.clone(),
                batch_size: settings.relay.batch_size,
                idle_poll: Duration::from_millis(settings.relay.idle_poll_ms),
                delivery_timeout: Duration::from_millis(settings.relay.delivery_timeout_ms),
            },
        ))
    }

    pub fn new(pool: PgPool, options: PgConnectOptions, config: RelayConfig) -> Self {
        Self {
            pool,
            options,
            config,
            status: Arc::default(),
            observer: None,
            role: RoleState::new("relay"),
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

    /// What the relay is doing, for `/ready`: standing by, waiting for the topic, relaying.
    pub fn role(&self) -> RoleState {
        self.role.clone()
    }

    /// One step: read and enqueue the next batch while the pipeline has room and the store has
    /// more, otherwise wait for the oldest batch's acknowledgements and checkpoint it (through the
    /// leadership connection).
    ///
    /// # Errors
    /// A store or broker failure (nothing unacknowledged was checkpointed; the caller rewinds and
    /// everything after the checkpoint is sent again), or lost leadership.
    pub async fn step(
        &self,
        leadership: &mut Leadership,
        pipeline: &mut Pipeline,
    ) -> Result<Outcome, RelayError> {
        if pipeline.in_flight.len() < IN_FLIGHT
            && (pipeline.behind || pipeline.in_flight.is_empty())
        {
            let events = read_batch(&self.pool, pipeline.read_to, self.config.batch_size).await?;
            pipeline.behind =
                i64::try_from(events.len()).unwrap_or(i64::MAX) >= self.config.batch_size;
            if let Some(last) = events.last().map(StoredEvent::checkpoint) {
                let records: Vec<Encoded> = events.iter().map(Encoded::of).collect();
                let pending = pipeline.publisher.enqueue(&records).await?;
                pipeline.read_to = last;
                let count = events.len();
                pipeline.in_flight.push_back(InFlight {
                    pending,
                    events,
                    last,
                });
                return Ok(Outcome::Enqueued(count));
            }
            if pipeline.in_flight.is_empty() {
                let held_back = held_back(&self.pool, pipeline.read_to).await?;
                return Ok(Outcome::Idle { held_back });
            }
        }
        let Some(oldest) = pipeline.in_flight.pop_front() else {
            return Ok(Outcome::Idle { held_back: false });
        };
        oldest
            .pending
            .acknowledged(pipeline.publisher.delivery_timeout())
            .await?;
        if let Some(observe) = &self.observer {
            observe(&oldest.events);
        }
        leadership.store(oldest.last).await?;
        pipeline.checkpoint = oldest.last;
        self.status
            .published_batch(oldest.events.len(), oldest.last);
        Ok(Outcome::Published(oldest.events.len()))
    }

    /// Leads (or waits to lead) and relays until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        // Lag and horizon figures are gathered beside the loop, never in its way.
        let figures = tokio::spawn(observe_periodically(
            self.pool.clone(),
            self.status.clone(),
            stop.clone(),
        ));
        self.relay_until(&stop).await;
        self.role.stopped();
        let _ = figures.await;
        tracing::info!("relay stopped");
    }

    async fn relay_until(&self, stop: &CancellationToken) {
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        while !stop.is_cancelled() {
            self.status.set_leader(false);
            let Some(mut leadership) =
                Leadership::acquire(&self.options, &self.config.deployment, &self.role, stop).await
            else {
                break;
            };
            self.status.set_leader(true);
            let result = self.lead(&mut leadership, stop).await;
            self.status.set_leader(false);
            leadership.release().await;
            match result {
                Ok(()) => break,
                Err(e) => {
                    self.status.error("leadership");
                    if matches!(e, RelayError::CheckpointAhead(_)) {
                        tracing::error!("relay refuses to run: {e}");
                    } else {
                        tracing::warn!("relay stepped down: {e}");
                    }
                    let wait = backoff.wait();
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn lead(
        &self,
        leadership: &mut Leadership,
        stop: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        self.role
            .waiting(format!("the topic {} on the broker", self.config.topic));
        // The broker may be down when leadership starts: keep trying, never skip.
        while let Err(e) = self.config.kafka.ensure_topic(&self.config.topic).await {
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
        let checkpoint = leadership.checkpoint().await?;
        if checkpoint_ahead(&self.pool, checkpoint).await? {
            return Err(RelayError::CheckpointAhead(checkpoint.tx_id));
        }
        let mut pipeline = Pipeline::new(self.publisher()?, checkpoint);
        self.status.set_checkpoint(pipeline.checkpoint());
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let mut held_back_wait = HELD_BACK_FIRST;
        let mut wait = Duration::ZERO;
        tracing::info!(topic = %self.config.topic, checkpoint = ?pipeline.checkpoint(), "relaying");
        self.role.ready();
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
                self.role.draining();
                // Whatever is in flight gets its acknowledgements checkpointed before leaving;
                // nothing new is read.
                pipeline.behind = false;
                while !pipeline.in_flight.is_empty() {
                    if self.step(leadership, &mut pipeline).await.is_err() {
                        break;
                    }
                }
                return Ok(());
            }
            wait = match self.step(leadership, &mut pipeline).await {
                Ok(Outcome::Enqueued(_)) => Duration::ZERO,
                Ok(Outcome::Published(_)) => {
                    // Only an acknowledgement proves the broker is back; an enqueue does not.
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
                Err(e @ (RelayError::LostLeadership(_) | RelayError::CheckpointAhead(_))) => {
                    return Err(e)
                }
                Err(RelayError::Broker(e)) => {
                    self.status.error("broker");
                    tracing::warn!(
                        "publishing failed; everything unacknowledged will be re-sent: {e}"
                    );
                    // A fresh producer starts a fresh idempotence session, so the re-sent
                    // records cannot be rejected as out of sequence after a gap.
                    pipeline.rewind(self.publisher()?);
                    backoff.wait()
                }
                Err(RelayError::Store(e)) => {
                    self.status.error("store");
                    tracing::warn!("reading the event store failed: {e}");
                    pipeline.rewind(self.publisher()?);
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
}

/// Refreshes lag and horizon figures every second until `stop`; failures only leave them stale.
async fn observe_periodically(pool: PgPool, status: Arc<RelayStatus>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(OBSERVE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // A standby has nothing to lag behind; its figures would only raise false alarms.
        if !status.is_leader() {
            status.observed(Behind::default());
            continue;
        }
        match behind(&pool, status.checkpoint()).await {
            Ok(figures) => status.observed(figures),
            Err(e) => tracing::debug!("relay figures unavailable: {e}"),
        }
    }
}
