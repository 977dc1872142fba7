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

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::mpsc;

use chat4all_eventstore::{read_batch, Checkpoint, Envelope, StoredEvent};

use crate::{apply_batch_silently, ProjectionError};

/// The read-model tables, rebuilt and swapped together.
pub const TABLES: [&str; 4] = [
    "rm_conversations",
    "rm_members",
    "rm_messages",
    "rm_message_history",
];
const BATCH: i64 = 20_000;

/// Progress of a rebuild, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub applied: u64,
    pub total: u64,
    pub started: Instant,
}

/// Which worker applies `event`: every event of a conversation goes to the same one, in order,
/// since no read-model row spans two conversations.
fn shard(event: &StoredEvent, workers: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    event
        .conversation_id
        .as_deref()
        .unwrap_or(&event.aggregate_id)
        .hash(&mut hasher);
    usize::try_from(hasher.finish() % workers as u64).unwrap_or(0)
}

fn envelope(event: StoredEvent) -> Result<Envelope, ProjectionError> {
    Envelope::from_stored(event).map_err(|e| ProjectionError::Malformed(e.to_string()))
}

async fn read(
    conn: &mut PgConnection,
    after: Checkpoint,
) -> Result<Vec<StoredEvent>, ProjectionError> {
    Ok(read_batch(conn, after, BATCH).await?)
}

/// A connection that writes to the rebuild's tables.
async fn rebuilding_connection(pool: &PgPool) -> Result<PgConnection, ProjectionError> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("SET search_path = rebuild, public")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Applies everything below the horizon after `after`, spread over `workers` connections by
/// conversation, each batch committed on its own; returns the new `after`.
///
/// A rebuild is bound by the database's work per event, not by round trips, so only more
/// backends working at once make it faster.
async fn apply_in_parallel(
    pool: &PgPool,
    reader: &mut PgConnection,
    mut after: Checkpoint,
    workers: usize,
    progress: &mut Progress,
    report: &mut impl FnMut(Progress),
) -> Result<Checkpoint, ProjectionError> {
    let applied = Arc::new(AtomicU64::new(progress.applied));
    let mut queues = Vec::with_capacity(workers);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut conn = rebuilding_connection(pool).await?;
        let (queue, mut batches) = mpsc::channel::<Vec<Envelope>>(2);
        let applied = applied.clone();
        queues.push(queue);
        tasks.push(tokio::spawn(async move {
            while let Some(events) = batches.recv().await {
                let mut tx = conn.begin().await?;
                apply_batch_silently(&mut tx, &events).await?;
                tx.commit().await?;
                applied.fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            conn.close().await?;
            Ok::<(), ProjectionError>(())
        }));
    }
    let mut stopped = false;
    while !stopped {
        let rows = read(reader, after).await?;
        let Some(last) = rows.last() else { break };
        after = last.checkpoint();
        let mut shards: Vec<Vec<Envelope>> = vec![Vec::new(); workers];
        for row in rows {
            let shard = shard(&row, workers);
            shards[shard].push(envelope(row)?);
        }
        for (queue, events) in queues.iter().zip(shards) {
            // A worker that stopped has failed; its error is collected below.
            if !events.is_empty() && queue.send(events).await.is_err() {
                stopped = true;
            }
        }
        progress.applied = applied.load(Ordering::Relaxed);
        report(*progress);
    }
    drop(queues);
    for task in tasks {
        task.await
            .map_err(|e| ProjectionError::Malformed(format!("a rebuild worker failed: {e}")))??;
    }
    progress.applied = applied.load(Ordering::Relaxed);
    report(*progress);
    Ok(after)
}

/// Applies everything below the horizon after `after` inside the caller's transaction.
async fn apply_rest(
    conn: &mut PgConnection,
    mut after: Checkpoint,
    progress: &mut Progress,
    report: &mut impl FnMut(Progress),
) -> Result<(), ProjectionError> {
    loop {
        let rows = read(conn, after).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.checkpoint();
        let events = rows
            .into_iter()
            .map(envelope)
            .collect::<Result<Vec<_>, _>>()?;
        apply_batch_silently(conn, &events).await?;
        progress.applied += events.len() as u64;
        report(*progress);
    }
}

/// Creates `rebuild.{table}` shaped like `public.{table}`, with its indexes and constraints under
/// their own names (names are per schema), so that the swap keeps every name later migrations
/// may refer to.
async fn create_like(conn: &mut PgConnection, table: &str) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "CREATE TABLE rebuild.{table} (LIKE public.{table} INCLUDING ALL EXCLUDING INDEXES)"
    ))
    .execute(&mut *conn)
    .await?;
    let statements: Vec<String> = sqlx::query_scalar(
        "SELECT format('ALTER TABLE rebuild.%I ADD CONSTRAINT %I %s', $1, conname, pg_get_constraintdef(oid)) \
           FROM pg_constraint \
          WHERE conrelid = ('public.' || $1)::regclass AND contype IN ('p', 'u', 'x') \
         UNION ALL \
         SELECT replace(pg_get_indexdef(indexrelid), ' ON public.' || $1 || ' ', ' ON rebuild.' || $1 || ' ') \
           FROM pg_index \
          WHERE indrelid = ('public.' || $1)::regclass \
            AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE conrelid = ('public.' || $1)::regclass)",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    for statement in statements {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    Ok(())
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
        create_like(&mut conn, table).await?;
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM public.events")
        .fetch_one(&mut conn)
        .await?;
    let mut progress = Progress {
        applied: 0,
        total: u64::try_from(total).unwrap_or(0),
        started: Instant::now(),
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let after = apply_in_parallel(
        pool,
        &mut conn,
        Checkpoint::default(),
        workers,
        &mut progress,
        &mut report,
    )
    .await?;

    // Catch up and swap with the projector paused: its batches lock their offset rows.
    sqlx::query("SET search_path = rebuild, public")
        .execute(&mut conn)
        .await?;
    let mut tx = conn.begin().await?;
    sqlx::query("LOCK TABLE public.projection_offsets IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    apply_rest(&mut tx, after, &mut progress, &mut report).await?;
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
