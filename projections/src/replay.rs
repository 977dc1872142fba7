//! Rebuilding the read models from the event store itself, while the live projector keeps running.
//!
//! The rebuild applies every event, in the relay's `(tx_id, global_position)` order and with the
//! same [`apply`] as the projector, to fresh tables in a schema of their own (`rebuild`): the
//! apply statements name tables without a schema, and the rebuilding connections put `rebuild`
//! first on their `search_path`. Once it has caught up, it locks the projector's offsets (pausing
//! the projector between batches), applies what was committed meanwhile, and swaps the fresh
//! tables in, all in one transaction. Everything the live projector had applied was published
//! by the relay, so it was committed below an earlier horizon and is in the rebuild; what the
//! projector applies afterwards is either new or skipped by the guards.

use std::time::Instant;

use sqlx::{Connection, PgConnection, PgPool};

use crate::{apply_batch, ProjectedEvent, ProjectionError};

/// The read-model tables, rebuilt and swapped together.
pub const TABLES: [&str; 4] = [
    "rm_conversations",
    "rm_members",
    "rm_messages",
    "rm_message_history",
];
const BATCH: i64 = 5_000;

/// Progress of a rebuild, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub applied: u64,
    pub total: u64,
    pub started: Instant,
}

#[derive(sqlx::FromRow)]
struct Row {
    global_position: i64,
    tx_id: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    tenant_id: Option<String>,
    payload: serde_json::Value,
}

async fn read(conn: &mut PgConnection, after: (i64, i64)) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(
        "SELECT global_position, tx_id::text::bigint AS tx_id, aggregate_type, aggregate_id, sequence, \
                event_type, metadata ->> 'tenant_id' AS tenant_id, payload \
           FROM public.events \
          WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
            AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
          ORDER BY events.tx_id, events.global_position \
          LIMIT $3",
    )
    .bind(after.0.to_string())
    .bind(after.1)
    .bind(BATCH)
    .fetch_all(conn)
    .await
}

/// Applies everything after `after` that is below the horizon, committing each batch when
/// `commit_batches` (otherwise inside the caller's transaction); returns the new `after`.
async fn apply_all(
    conn: &mut PgConnection,
    mut after: (i64, i64),
    commit_batches: bool,
    progress: &mut Progress,
    report: &mut impl FnMut(Progress),
) -> Result<(i64, i64), ProjectionError> {
    loop {
        let rows = read(conn, after).await?;
        let Some(last) = rows.last() else {
            return Ok(after);
        };
        after = (last.tx_id, last.global_position);
        if commit_batches {
            sqlx::query("BEGIN").execute(&mut *conn).await?;
        }
        let events: Vec<ProjectedEvent> = rows
            .into_iter()
            .map(|row| ProjectedEvent {
                position: row.global_position,
                aggregate_type: row.aggregate_type,
                aggregate_id: row.aggregate_id,
                sequence: row.sequence,
                event_type: row.event_type,
                tenant_id: row.tenant_id.unwrap_or_default(),
                payload: row.payload,
            })
            .collect();
        apply_batch(conn, &events).await?;
        progress.applied += events.len() as u64;
        if commit_batches {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        }
        report(*progress);
    }
}

/// Rebuilds every read model from the store and swaps the result in; returns the events applied.
///
/// # Errors
/// A store failure or an event that cannot be understood; the live tables are untouched then.
pub async fn rebuild(
    pool: &PgPool,
    mut report: impl FnMut(Progress),
) -> Result<u64, ProjectionError> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("DROP SCHEMA IF EXISTS rebuild CASCADE")
        .execute(&mut conn)
        .await?;
    sqlx::query("CREATE SCHEMA rebuild")
        .execute(&mut conn)
        .await?;
    for table in TABLES {
        sqlx::query(&format!(
            "CREATE TABLE rebuild.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut conn)
        .await?;
    }
    sqlx::query("SET search_path = rebuild, public")
        .execute(&mut conn)
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM public.events")
        .fetch_one(&mut conn)
        .await?;
    let mut progress = Progress {
        applied: 0,
        total: u64::try_from(total).unwrap_or(0),
        started: Instant::now(),
    };
    let after = apply_all(&mut conn, (0, 0), true, &mut progress, &mut report).await?;

    // Catch up and swap with the projector paused: its batches lock their offset rows.
    let mut tx = conn.begin().await?;
    sqlx::query("LOCK TABLE public.projection_offsets IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    apply_all(&mut tx, after, false, &mut progress, &mut report).await?;
    sqlx::query("DROP SCHEMA IF EXISTS replaced CASCADE")
        .execute(&mut *tx)
        .await?;
    sqlx::query("CREATE SCHEMA replaced")
        .execute(&mut *tx)
        .await?;
    for table in TABLES {
        sqlx::query(&format!("ALTER TABLE public.{table} SET SCHEMA replaced"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE rebuild.{table} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DROP SCHEMA replaced CASCADE")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DROP SCHEMA rebuild CASCADE")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    sqlx::query("RESET search_path").execute(&mut conn).await?;
    conn.close().await?;
    Ok(progress.applied)
}
