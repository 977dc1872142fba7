//! Runs commands against aggregates: load, decide, append, retry on a lost race.
//!
//! This is cqrs-es's `CqrsFramework::execute` (load the aggregate, `handle`, commit the events)
//! with what the API needs and the framework does not give: the aggregate's state after the
//! command and the global positions of what was appended, and a bounded retry when another writer
//! appended to the same stream first (postgres-es reports that as `AggregateConflict` and leaves
//! retrying to the caller).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventStore};
use rand::Rng;
use sqlx::PgPool;

use crate::repository::{StoreRepository, APPENDED};
use crate::snapshot::Snapshots;
use chat4all_eventstore::Appender;

use crate::Position;

/// How often a command is re-run against a stream that another writer keeps changing.
pub const MAX_ATTEMPTS: u32 = 12;

/// The outcome of an accepted command.
#[derive(Debug)]
pub struct Executed<A> {
    /// The aggregate's state after the command.
    pub aggregate: A,
    /// The stream's last sequence after the command (0: the stream is still empty).
    pub last_sequence: i64,
    /// `(sequence, global_position)` of each event the command appended; empty for a no-op.
    pub appended: Vec<(i64, Position)>,
}

/// Executes commands of one aggregate type against the event store.
pub struct Executor<A: Aggregate> {
    store: PersistedEventStore<StoreRepository, A>,
    services: A::Services,
    pool: PgPool,
    snapshots: Option<Snapshots>,
}

impl<A> Executor<A>
where
    A: Aggregate + Clone,
    A::Command: Clone,
{
    pub fn new(pool: PgPool, appender: Appender, services: A::Services) -> Self {
        Self {
            store: PersistedEventStore::new_event_store(StoreRepository::new(
                pool.clone(),
                appender,
            )),
            services,
            pool,
            snapshots: None,
        }
    }

    /// Snapshots the aggregate every `every` events, for streams that grow without bound;
    /// `version` identifies the aggregate's state format (see [`Snapshots::new`]).
    #[must_use]
    pub fn with_snapshots(mut self, every: usize, version: i32) -> Self {
        self.snapshots = Some(Snapshots::new(self.pool.clone(), every, version));
        self
    }

    /// The stream's current state and last sequence (0 for an empty stream).
    ///
    /// # Errors
    /// A store failure.
    pub async fn load(&self, aggregate_id: &str) -> Result<(A, i64), AggregateError<A::Error>> {
        let context = self.load_context(aggregate_id).await?;
        Ok((context.aggregate, to_i64(context.current_sequence)))
    }

    async fn load_context(
        &self,
        aggregate_id: &str,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        if let Some(snapshots) = &self.snapshots {
            if let Some((aggregate, current_sequence)) = snapshots.load::<A>(aggregate_id).await? {
                return Ok(EventStoreAggregateContext {
                    aggregate_id: aggregate_id.to_owned(),
                    aggregate,
                    current_sequence,
                    current_snapshot: None,
                });
            }
        }
        self.store.load_aggregate(aggregate_id).await
    }

    /// Runs `command` on the stream `aggregate_id`, re-running it (on freshly loaded state) when
    /// another writer appended first.
    ///
    /// # Errors
    /// The aggregate's refusal, `AggregateConflict` after [`MAX_ATTEMPTS`] lost races, or a store
    /// failure.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
    ) -> Result<Executed<A>, AggregateError<A::Error>> {
        self.run(aggregate_id, command, metadata, false).await
    }

    /// [`Executor::execute`] for commands that nearly always start a new stream (a send under a
    /// fresh client-chosen id): the first attempt decides on empty state without reading the
    /// stream, saving a round trip. If the stream did exist, the append hits the primary key
    /// like any lost race, and the retry decides on the real state, so the outcome is the same.
    ///
    /// # Errors
    /// As [`Executor::execute`].
    pub async fn execute_expecting_new(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
    ) -> Result<Executed<A>, AggregateError<A::Error>> {
        self.run(aggregate_id, command, metadata, true).await
    }

    async fn run(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
        expect_new: bool,
    ) -> Result<Executed<A>, AggregateError<A::Error>> {
        let mut attempt = 1;
        loop {
            let assume_empty = expect_new && attempt == 1;
            match self
                .execute_once(
                    aggregate_id,
                    command.clone(),
                    metadata.clone(),
                    assume_empty,
                )
                .await
            {
                // The guess that the stream was new may have been wrong: a conflict says so, and a
                // refusal might (a retried send after its sender left must still answer as the
                // original did). Either way, decide again on the stream as stored.
                Err(AggregateError::AggregateConflict | AggregateError::UserError(_))
                    if assume_empty =>
                {
                    attempt += 1;
                }
                Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                    metrics_conflict(A::TYPE);
                    // Jitter spreads the contenders out so that one of them wins the next round.
                    let backoff = rand::thread_rng().gen_range(0..(2u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn execute_once(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
        assume_empty: bool,
    ) -> Result<Executed<A>, AggregateError<A::Error>> {
        let mut context = if assume_empty {
            EventStoreAggregateContext {
                aggregate_id: aggregate_id.to_owned(),
                aggregate: A::default(),
                current_sequence: 0,
                current_snapshot: None,
            }
        } else {
            self.load_context(aggregate_id).await?
        };
        let sink = EventSink::<A>::default();
        context
            .aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(AggregateError::UserError)?;
        let events = sink.collect().await;
        let loaded_sequence = context.current_sequence;
        let aggregate = context.aggregate.clone();
        if events.is_empty() {
            return Ok(Executed {
                aggregate,
                last_sequence: to_i64(loaded_sequence),
                appended: Vec::new(),
            });
        }
        let count = events.len();
        let appended = APPENDED
            .scope(RefCell::new(Vec::new()), async {
                self.store.commit(events, context, metadata).await?;
                Ok::<_, AggregateError<A::Error>>(APPENDED.with(|slot| slot.take()))
            })
            .await?;
        if let Some(snapshots) = &self.snapshots {
            if snapshots.due(loaded_sequence, loaded_sequence + count) {
                snapshots
                    .save(aggregate_id, &aggregate, loaded_sequence + count)
                    .await;
            }
        }
        Ok(Executed {
            aggregate,
            last_sequence: to_i64(loaded_sequence + count),
            appended,
        })
    }

    /// The global position of event `sequence` of stream `aggregate_id`, for answers to commands
    /// that appended nothing (a retry) but must repeat the original position.
    ///
    /// # Errors
    /// A store failure.
    pub async fn position_of(
        &self,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<Position>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT global_position FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_optional(&self.pool)
        .await
    }
}

fn to_i64(n: usize) -> i64 {
    // Stream lengths are bounded by postgres-es's i32 sequence binding.
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn metrics_conflict(aggregate_type: &'static str) {
    tracing::debug!(aggregate_type, "optimistic concurrency conflict, retrying");
}
