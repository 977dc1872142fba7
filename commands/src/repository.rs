//! The event repository behind cqrs-es's `PersistedEventStore`.
//!
//! Reads are postgres-es's own. Appends differ in one way that matters on the hot path: all of a
//! command's events go in as one `INSERT ... SELECT unnest(...)` statement, which is atomic on its
//! own, so an append costs one round trip instead of three (BEGIN, INSERT per event, COMMIT), and
//! it returns the global positions the command must answer with. A command's single event (the
//! common case) goes through the [`Appender`]'s group commit instead. The positions are handed back
//! through a task-local slot that [`crate::Executor`] opens around each commit, because cqrs-es's
//! `EventStore::commit` has no way to return them.

use std::cell::RefCell;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

use chat4all_eventstore::append::append_stream;
use chat4all_eventstore::{Append, AppendError, Appender, Position, StreamEvent};

tokio::task_local! {
    /// `(sequence, global_position)` of the events appended by the current command.
    pub(crate) static APPENDED: RefCell<Vec<(i64, Position)>>;
}

/// postgres-es reads plus single-statement appends that report positions.
pub struct StoreRepository {
    pool: PgPool,
    reads: PostgresEventRepository,
    appender: Appender,
}

impl StoreRepository {
    pub fn new(pool: PgPool, appender: Appender) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
            appender,
        }
    }

    async fn append_one<A: Aggregate>(
        &self,
        event: &SerializedEvent,
    ) -> Result<(i64, Position), PersistenceError> {
        let sequence = i64::try_from(event.sequence)
            .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        let position = self
            .appender
            .append(Append {
                aggregate_type: A::TYPE,
                aggregate_id: event.aggregate_id.clone(),
                sequence,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
            })
            .await
            .map_err(|e| match e {
                AppendError::Conflict => PersistenceError::OptimisticLockError,
                other => PersistenceError::ConnectionError(Box::new(other)),
            })?;
        Ok((sequence, position))
    }
}

fn persistence_error(err: sqlx::Error) -> PersistenceError {
    match &err {
        // The primary key (aggregate_type, aggregate_id, sequence) is the optimistic lock.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            PersistenceError::ConnectionError(Box::new(err))
        }
        _ => PersistenceError::UnknownError(Box::new(err)),
    }
}

impl PersistedEventRepository for StoreRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    /// Aggregates are rebuilt from their events here: cqrs-es 0.5's snapshot store applies a
    /// command's events twice when rebuilding, so long streams use our own snapshots instead.
    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let first = match events {
            [] => return Ok(()),
            // A command's single event goes through group commit; several events of one command
            // must be all-or-nothing, which a shared batch statement would not guarantee.
            [only] => {
                let appended = self.append_one::<A>(only).await?;
                let _ = APPENDED.try_with(|slot| slot.borrow_mut().push(appended));
                return Ok(());
            }
            [first, ..] => first,
        };
        let sequences = events
            .iter()
            .map(|e| {
                i64::try_from(e.sequence).map_err(|e| PersistenceError::UnknownError(Box::new(e)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stream: Vec<StreamEvent<'_>> = events
            .iter()
            .zip(sequences)
            .map(|(e, sequence)| StreamEvent {
                sequence,
                event_type: &e.event_type,
                event_version: &e.event_version,
                payload: &e.payload,
                metadata: &e.metadata,
            })
            .collect();
        let rows = append_stream(&self.pool, A::TYPE, first.aggregate_id.as_str(), &stream)
            .await
            .map_err(persistence_error)?;
        // Outside an executor's scope nobody asked for the positions; that is not an error.
        let _ = APPENDED.try_with(|slot| slot.borrow_mut().extend(rows));
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}
