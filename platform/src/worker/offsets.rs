//! Consumer offsets kept in Postgres beside a worker's effects: the truth about what a worker
//! has done, since they commit in the same transaction as its effects.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};

/// One worker's offsets in one topic (`projection_offsets`, keyed by the worker's name).
#[derive(Debug, Clone)]
pub struct StoredOffsets {
    pool: PgPool,
    name: String,
    topic: String,
}

impl StoredOffsets {
    pub fn new(pool: PgPool, name: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            pool,
            name: name.into(),
            topic: topic.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Locks `partitions`' offset rows inside the caller's transaction (creating missing ones,
    /// so that the lock covers new partitions too) and returns each one's next offset. Two
    /// members briefly owning a partition during a rebalance take turns on its row.
    ///
    /// # Errors
    /// A database failure.
    pub async fn lock(
        &self,
        tx: &mut PgConnection,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, sqlx::Error> {
        sqlx::query(
            "INSERT INTO projection_offsets (projection, topic, kafka_partition, next_offset) \
             SELECT $1, $2, p, 0 FROM unnest($3::int4[]) AS p ON CONFLICT DO NOTHING",
        )
        .bind(&self.name)
        .bind(&self.topic)
        .bind(partitions)
        .execute(&mut *tx)
        .await?;
        let stored: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT kafka_partition, next_offset FROM projection_offsets \
             WHERE projection = $1 AND topic = $2 AND kafka_partition = ANY($3) \
             ORDER BY kafka_partition FOR UPDATE",
        )
        .bind(&self.name)
        .bind(&self.topic)
        .bind(partitions)
        .fetch_all(&mut *tx)
        .await?;
        Ok(stored.into_iter().collect())
    }

    /// Stores each partition's next offset inside the caller's transaction (after [`lock`]).
    ///
    /// # Errors
    /// A database failure.
    ///
    /// [`lock`]: StoredOffsets::lock
    pub async fn store(
        &self,
        tx: &mut PgConnection,
        partitions: &[i32],
        next_offsets: &[i64],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE projection_offsets o SET next_offset = n.next_offset \
               FROM unnest($3::int4[], $4::int8[]) AS n(kafka_partition, next_offset) \
              WHERE o.projection = $1 AND o.topic = $2 AND o.kafka_partition = n.kafka_partition",
        )
        .bind(&self.name)
        .bind(&self.topic)
        .bind(partitions)
        .bind(next_offsets)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// The next offset stored for `partition`, if the worker has ever stored one.
    ///
    /// # Errors
    /// A database failure.
    pub async fn next(&self, partition: i32) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT next_offset FROM projection_offsets \
             WHERE projection = $1 AND topic = $2 AND kafka_partition = $3",
        )
        .bind(&self.name)
        .bind(&self.topic)
        .bind(partition)
        .fetch_optional(&self.pool)
        .await
    }

    /// Moves `partition` past `offset` (never back): the record there was set aside.
    ///
    /// # Errors
    /// A database failure.
    pub async fn skip(&self, partition: i32, offset: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO projection_offsets (projection, topic, kafka_partition, next_offset) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (projection, topic, kafka_partition) DO UPDATE \
             SET next_offset = greatest(projection_offsets.next_offset, EXCLUDED.next_offset)",
        )
        .bind(&self.name)
        .bind(&self.topic)
        .bind(partition)
        .bind(offset + 1)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
