//! Gap-safe tailing of the event store: the one reader of the store's global order, for the relay
//! (publishing) and replay (rebuilding read models).
//!
//! `global_position` is taken when a row is inserted but becomes visible when its transaction
//! commits, so transactions commit "out of order": a reader that remembers the highest position it
//! has seen and asks for `global_position > last` skips every event of a transaction that was
//! still open when a later-positioned one became visible, silently and forever.
//!
//! Instead, events are read in `(tx_id, global_position)` order and only from transactions older
//! than the oldest transaction still in flight (`pg_snapshot_xmin` of the reader's snapshot). Every
//! transaction below that horizon has finished, so nothing can appear behind the checkpoint
//! later: each committed event is returned exactly once across successive reads. The price is
//! that a long-open transaction anywhere on the server holds the horizon back (the relay exports
//! its age as a metric, and the engine's sessions set `idle_in_transaction_session_timeout`).
//!
//! Transaction ids are `xid8`, which has no sqlx mapping; they travel as text and fit an `i64`
//! (epoch << 32 | xid) for any realistic epoch.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};

use crate::StoreError;

/// Where a reader is: the `(tx_id, global_position)` of the last event it consumed.
/// `Checkpoint::default()` is before every event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Checkpoint {
    pub tx_id: i64,
    pub position: i64,
}

/// An event as stored, with its place in the global order.
///
/// `payload` and `metadata` stay the JSON text the store produced: the relay only splices them
/// into envelopes, so parsing them would be wasted work on its hottest path. The few facts the
/// envelope names separately are extracted by the query.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    pub global_position: i64,
    pub tx_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// JSON text.
    pub payload: String,
    /// JSON text.
    pub metadata: String,
    pub tenant_id: Option<String>,
    pub conversation_id: Option<String>,
    pub occurred_at: Option<String>,
    pub trace_id: Option<String>,
    pub hash: Vec<u8>,
}

impl StoredEvent {
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tx_id: self.tx_id,
            position: self.global_position,
        }
    }
}

/// Up to `limit` events after `after`, in `(tx_id, global_position)` order, all from
/// transactions that have finished.
///
/// # Errors
/// A database failure.
pub async fn read_batch<'c>(
    executor: impl PgExecutor<'c>,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{}{}",
            include_str!("columns.sql"),
            include_str!("read_batch.sql")
        )
    });
    Ok(sqlx::query_as(&STATEMENT)
        .bind(after.tx_id.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(executor)
        .await?)
}

/// Whether the reader should look again soon rather than wait for a notification: committed
/// events after `after` wait behind a transaction that is still open, or a transaction is in
/// flight that may commit without notifying.
///
/// # Errors
/// A database failure.
pub async fn held_back(pool: &PgPool, after: Checkpoint) -> Result<bool, StoreError> {
    // Committed events behind the horizon, or any transaction in flight: only one in-flight
    // transaction at a time carries the insert notification, so one that commits after the
    // carrier may never announce itself, and the reader must come back for it.
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events \
          WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
            AND tx_id >= pg_snapshot_xmin(pg_current_snapshot())) \
         OR pg_snapshot_xmin(pg_current_snapshot()) <> pg_snapshot_xmax(pg_current_snapshot())",
    )
    .bind(after.tx_id.to_string())
    .bind(after.position)
    .fetch_one(pool)
    .await?)
}

/// Whether `checkpoint` names a transaction id this cluster has not reached: the store was
/// restored from a logical dump into a new cluster, and reading on would skip every new event.
///
/// # Errors
/// A database failure.
pub async fn checkpoint_ahead(pool: &PgPool, checkpoint: Checkpoint) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT $1::text::xid8 >= pg_snapshot_xmax(pg_current_snapshot())")
            .bind(checkpoint.tx_id.to_string())
            .fetch_one(pool)
            .await?,
    )
}

/// How far a reader at a checkpoint is behind the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, sqlx::FromRow)]
pub struct Behind {
    /// Committed events after the checkpoint in the reader's order (capped at a million, so a
    /// huge backlog costs a bounded scan of the tail index).
    pub events: i64,
    /// Age of the oldest of them, in seconds.
    pub seconds: f64,
    /// Age of the oldest transaction open anywhere on the server, which holds the horizon back.
    pub oldest_transaction_seconds: f64,
}

/// How far `checkpoint` is behind the store.
///
/// # Errors
/// A database failure.
pub async fn behind(pool: &PgPool, checkpoint: Checkpoint) -> Result<Behind, StoreError> {
    Ok(sqlx::query_as(include_str!("behind.sql"))
        .bind(checkpoint.tx_id.to_string())
        .bind(checkpoint.position)
        .fetch_one(pool)
        .await?)
}

/// The place in the reader's order of the event at `position`, if there is one.
///
/// # Errors
/// A database failure.
pub async fn checkpoint_of(pool: &PgPool, position: i64) -> Result<Option<Checkpoint>, StoreError> {
    let tx_id: Option<i64> =
        sqlx::query_scalar("SELECT tx_id::text::bigint FROM events WHERE global_position = $1")
            .bind(position)
            .fetch_optional(pool)
            .await?;
    Ok(tx_id.map(|tx_id| Checkpoint { tx_id, position }))
}
