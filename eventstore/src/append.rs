//! Appending to the store: group commit for single-event appends, one statement for a command's
//! several events.
//!
//! Most commands append exactly one event to their own stream (a send to a fresh message
//! stream), so under load many independent appends are waiting at the same moment. Each would
//! pay for its own statement and its own commit, and the commit (a WAL flush) dominates. The
//! appender takes every append waiting when a writer becomes free and stores them with one
//! multi-row statement in one transaction. Nobody waits for a timer: an append that arrives while
//! the writers are idle goes out at once, alone; batches only form while earlier ones are being
//! committed, which is exactly when waiting is free.
//!
//! Each append keeps its own outcome. A row whose `(aggregate_type, aggregate_id, sequence)`
//! already exists (a lost race) is skipped by `ON CONFLICT DO NOTHING` and reported to its caller
//! as a conflict, without failing the others. If the whole statement fails for another reason,
//! the rows are retried one by one, so a single bad row fails only its own caller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::Position;

/// Appends taken into one statement at most.
const MAX_BATCH: usize = 256;
/// Batches committing at the same time; more would only queue inside Postgres.
const WRITERS: usize = 4;
const QUEUE: usize = 4096;

/// One event to append, alone in its command.
#[derive(Debug)]
pub struct Append {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The stream already has an event at this sequence.
    #[error("the stream already has an event at this sequence")]
    Conflict,
    #[error("appending failed: {0}")]
    Store(#[source] Arc<sqlx::Error>),
    #[error("the appender has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<Position, AppendError>>;

/// A handle to the running writers; cloning shares them.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::Sender<(Append, Reply)>,
}

impl Appender {
    /// Starts the writers on `pool`; they stop when every handle is dropped.
    pub fn start(pool: PgPool) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(writer(pool.clone(), receiver.clone()));
        }
        Self { queue }
    }

    /// Appends one event, returning its global position once it is committed.
    ///
    /// # Errors
    /// A conflict on the stream's sequence, or a store failure.
    pub async fn append(&self, append: Append) -> Result<Position, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((append, reply))
            .await
            .map_err(|_| AppendError::Stopped)?;
        answer.await.map_err(|_| AppendError::Stopped)?
    }
}

async fn writer(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<(Append, Reply)>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        metrics::histogram!("chat4all_append_batch_size").record(batch.len() as f64);
        write(&pool, std::mem::take(&mut batch)).await;
    }
}

async fn write(pool: &PgPool, batch: Vec<(Append, Reply)>) {
    // Two appends to the same stream position cannot both win; the later one loses here, as it
    // would against the primary key, and keeps the statement's answers unambiguous.
    let mut seen = HashSet::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.len());
    for (append, reply) in batch {
        let key = (
            append.aggregate_type,
            append.aggregate_id.clone(),
            append.sequence,
        );
        if seen.insert(key) {
            rows.push((append, reply));
        } else {
            let _ = reply.send(Err(AppendError::Conflict));
        }
    }
    match insert(pool, &rows).await {
        Ok(positions) => answer(rows, positions),
        Err(e) if rows.len() > 1 && matches!(e, sqlx::Error::Database(_)) => {
            tracing::warn!(
                "a batch of {} appends failed ({e}); retrying them one by one",
                rows.len()
            );
            for row in rows {
                let single = vec![row];
                match insert(pool, &single).await {
                    Ok(positions) => answer(single, positions),
                    Err(e) => fail(single, e),
                }
            }
        }
        Err(e) => fail(rows, e),
    }
}

type Key = (String, String, i64);

async fn insert(
    pool: &PgPool,
    rows: &[(Append, Reply)],
) -> Result<Vec<(Key, Position)>, sqlx::Error> {
    let n = rows.len();
    let (
        mut types,
        mut ids,
        mut sequences,
        mut event_types,
        mut versions,
        mut payloads,
        mut metadata,
    ) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (a, _) in rows {
        types.push(a.aggregate_type);
        ids.push(a.aggregate_id.as_str());
        sequences.push(a.sequence);
        event_types.push(a.event_type.as_str());
        versions.push(a.event_version.as_str());
        payloads.push(&a.payload);
        metadata.push(&a.metadata);
    }
    let returned: Vec<(String, String, i64, Position)> =
        sqlx::query_as(include_str!("append_batch.sql"))
            .bind(&types)
            .bind(&ids)
            .bind(&sequences)
            .bind(&event_types)
            .bind(&versions)
            .bind(&payloads)
            .bind(&metadata)
            .fetch_all(pool)
            .await?;
    Ok(returned
        .into_iter()
        .map(|(t, id, seq, position)| ((t, id, seq), position))
        .collect())
}

fn answer(rows: Vec<(Append, Reply)>, positions: Vec<(Key, Position)>) {
    let positions: HashMap<Key, Position> = positions.into_iter().collect();
    for (append, reply) in rows {
        let key = (
            append.aggregate_type.to_owned(),
            append.aggregate_id,
            append.sequence,
        );
        let _ = reply.send(positions.get(&key).copied().ok_or(AppendError::Conflict));
    }
}

fn fail(rows: Vec<(Append, Reply)>, error: sqlx::Error) {
    let error = Arc::new(error);
    for (_, reply) in rows {
        let _ = reply.send(Err(AppendError::Store(error.clone())));
    }
}

/// One of several events a command appends to one stream.
#[derive(Debug)]
pub struct StreamEvent<'a> {
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
    pub metadata: &'a Value,
}

/// Appends a command's several events to one stream, all or nothing, in one statement (atomic on
/// its own: one round trip instead of BEGIN, an INSERT per event and COMMIT); returns
/// `(sequence, global_position)` of each. They do not go through group commit: a shared batch
/// statement would not keep one command's events all-or-nothing.
///
/// # Errors
/// A unique violation (`23505`) when another writer took one of the sequences first, or any
/// other store failure; nothing was appended then.
pub async fn append_stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    events: &[StreamEvent<'_>],
) -> Result<Vec<(i64, Position)>, sqlx::Error> {
    let mut sequences = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut metadata = Vec::with_capacity(events.len());
    for event in events {
        sequences.push(event.sequence);
        types.push(event.event_type);
        versions.push(event.event_version);
        payloads.push(event.payload);
        metadata.push(event.metadata);
    }
    sqlx::query_as(include_str!("append_stream.sql"))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(&sequences)
        .bind(&types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata)
        .fetch_all(pool)
        .await
}
