//! One stream's events, up to a point: the history an aggregate's state is rebuilt from, for
//! the audit API's point-in-time answers and for tests.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::reader::checkpoint_of;
use crate::{StoreError, StoredEvent};

/// Where a stream's history stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Everything committed.
    Latest,
    /// Events up to and including this sequence of the stream.
    Sequence(i64),
    /// Events the relay publishes no later than the event at this global position (the store's
    /// `(tx_id, global_position)` order, which every consumer follows), whatever its stream.
    Position(i64),
    /// Events recorded at or before this time.
    Time(DateTime<Utc>),
}

/// The events of stream `aggregate_type`/`aggregate_id` up to `until`, in sequence order.
///
/// # Errors
/// [`StoreError::UnknownPosition`] when `until` names a position no event has, or a database
/// failure.
pub async fn load(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    until: Until,
) -> Result<Vec<StoredEvent>, StoreError> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} WHERE aggregate_type = $1 AND aggregate_id = $2 \
               AND ($3::int8 IS NULL OR sequence <= $3) \
               AND ($5::int8 IS NULL OR (tx_id, global_position) <= ($4::text::xid8, $5)) \
               AND ($6::timestamptz IS NULL OR recorded_at <= $6) \
             ORDER BY sequence",
            include_str!("columns.sql")
        )
    });
    let (mut sequence, mut checkpoint, mut time) = (None, None, None);
    match until {
        Until::Latest => {}
        Until::Sequence(n) => sequence = Some(n),
        Until::Position(n) => {
            let at = checkpoint_of(pool, n)
                .await?
                .ok_or(StoreError::UnknownPosition(n))?;
            checkpoint = Some(at);
        }
        Until::Time(t) => time = Some(t),
    }
    Ok(sqlx::query_as(&STATEMENT)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .bind(checkpoint.map(|c| c.tx_id.to_string()))
        .bind(checkpoint.map(|c| c.position))
        .bind(time)
        .fetch_all(pool)
        .await?)
}
