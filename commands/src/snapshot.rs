//! Snapshots for long streams, written by the executor beside (never instead of) events.
//!
//! cqrs-es's own snapshot store applies a command's events twice when it rebuilds, so it is not
//! used. Here a snapshot is the aggregate's serialised state at `last_sequence`, taken every
//! `every` events after a successful append; loading is that state plus every later event, which
//! is exactly a full replay as long as `apply` is deterministic (the tests compare the two).

use cqrs_es::persist::{PersistedEventRepository, PersistenceError};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

/// Reads and writes snapshots of one aggregate type.
pub struct Snapshots {
    pool: PgPool,
    reads: PostgresEventRepository,
    every: usize,
    version: i32,
}

fn unknown(e: impl std::error::Error + Send + Sync + 'static) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

impl Snapshots {
    /// `version` names the aggregate's state shape and `apply` logic: bump it when either
    /// changes, and older snapshots are ignored (a full replay rebuilds them).
    pub fn new(pool: PgPool, every: usize, version: i32) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
            every: every.max(1),
            version,
        }
    }

    /// The state and last sequence of a stream from its snapshot and later events, or `None` when
    /// there is no usable snapshot.
    ///
    /// # Errors
    /// A store failure, or a stored event that does not deserialise.
    pub async fn load<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<(A, usize)>, PersistenceError> {
        let row: Option<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT last_sequence, payload FROM snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(self.version)
        .fetch_optional(&self.pool)
        .await
        .map_err(unknown)?;
        let Some((last_sequence, payload)) = row else {
            return Ok(None);
        };
        let Ok(mut aggregate) = serde_json::from_value::<A>(payload) else {
            tracing::warn!(
                aggregate_type = A::TYPE,
                aggregate_id,
                "ignoring a snapshot that no longer deserialises"
            );
            return Ok(None);
        };
        let mut sequence = usize::try_from(last_sequence).map_err(unknown)?;
        for event in self
            .reads
            .get_last_events::<A>(aggregate_id, sequence)
            .await?
        {
            aggregate.apply(serde_json::from_value(event.payload)?);
            sequence = event.sequence;
        }
        Ok(Some((aggregate, sequence)))
    }

    /// Whether appending from `before` to `after` crossed a snapshot boundary.
    pub fn due(&self, before: usize, after: usize) -> bool {
        before / self.every != after / self.every
    }

    /// Stores `aggregate` as the state at `last_sequence`, unless a later snapshot exists.
    /// Best effort: a failure costs only a longer replay next time.
    pub async fn save<A: Aggregate>(
        &self,
        aggregate_id: &str,
        aggregate: &A,
        last_sequence: usize,
    ) {
        let saved = async {
            let payload = serde_json::to_value(aggregate).map_err(unknown)?;
            sqlx::query(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, payload, version) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
                 SET last_sequence = EXCLUDED.last_sequence, payload = EXCLUDED.payload, \
                     version = EXCLUDED.version, taken_at = now() \
                 WHERE snapshots.last_sequence < EXCLUDED.last_sequence \
                    OR snapshots.version <> EXCLUDED.version",
            )
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(i64::try_from(last_sequence).map_err(unknown)?)
            .bind(payload)
            .bind(self.version)
            .execute(&self.pool)
            .await
            .map_err(unknown)?;
            Ok::<_, PersistenceError>(())
        };
        if let Err(e) = saved.await {
            tracing::warn!(
                aggregate_type = A::TYPE,
                aggregate_id,
                "taking a snapshot failed: {e}"
            );
        }
    }
}
