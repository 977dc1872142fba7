//! Verifying the hash chain the store writes on every append.
//!
//! Each event's `hash` is `sha256(previous hash of its stream ‖ canonical bytes of the event)`,
//! computed by the appending transaction (see the hash-chain migration). Verification recomputes
//! every link with the same function and checks that each stream's sequences follow one another
//! from 1, so an event whose stored columns were changed, a hash rewritten without its
//! successors, and an event removed from the middle of a stream are each found and named.
//! (Removing a stream's last events, or rewriting a whole stream consistently, needs an anchor
//! outside the table: signed checkpoints over the stream heads.)

use futures::TryStreamExt;
use sqlx::PgPool;

use crate::StoreError;

/// What is wrong with one event of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Its stored hash is not the hash of its predecessor's hash and its own columns: the event
    /// (or its hash) was changed after it was written, or its predecessor's hash was.
    Altered,
    /// The event before it in its stream, sequence `expected`, is missing.
    Missing { expected: i64 },
}

/// One event at which a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub position: i64,
    pub problem: Problem,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub events: u64,
    pub streams: u64,
    /// Every event at which a chain breaks, in stream order; empty when everything holds.
    pub breaks: Vec<Break>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.breaks.is_empty()
    }
}

#[derive(sqlx::FromRow)]
struct Link {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    global_position: i64,
    previous_sequence: Option<i64>,
    intact: bool,
}

/// Verifies one stream.
///
/// # Errors
/// A database failure.
pub async fn verify_stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Verification, StoreError> {
    let statement = format!(
        "{} WHERE aggregate_type = $1 AND aggregate_id = $2 \
         WINDOW stream AS (PARTITION BY aggregate_type, aggregate_id ORDER BY sequence) \
         ORDER BY sequence",
        include_str!("chain.sql")
    );
    let links = sqlx::query_as::<_, Link>(&statement)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch(pool);
    check(links, |_| {}).await
}

/// Verifies every stream of the store in constant memory, calling `progress` with the number of
/// events checked so far every 10,000 events.
///
/// # Errors
/// A database failure.
pub async fn verify_all(
    pool: &PgPool,
    progress: impl FnMut(u64),
) -> Result<Verification, StoreError> {
    let statement = format!(
        "{} WINDOW stream AS (PARTITION BY aggregate_type, aggregate_id ORDER BY sequence) \
         ORDER BY aggregate_type, aggregate_id, sequence",
        include_str!("chain.sql")
    );
    let links = sqlx::query_as::<_, Link>(&statement).fetch(pool);
    check(links, progress).await
}

async fn check(
    links: impl futures::Stream<Item = Result<Link, sqlx::Error>>,
    mut progress: impl FnMut(u64),
) -> Result<Verification, StoreError> {
    let mut verification = Verification::default();
    futures::pin_mut!(links);
    while let Some(link) = links.try_next().await? {
        verification.events += 1;
        if link.previous_sequence.is_none() {
            verification.streams += 1;
        }
        let expected = link.sequence - 1;
        let problem = if link.previous_sequence.unwrap_or(0) != expected {
            Some(Problem::Missing { expected })
        } else if !link.intact {
            Some(Problem::Altered)
        } else {
            None
        };
        if let Some(problem) = problem {
            verification.breaks.push(Break {
                aggregate_type: link.aggregate_type,
                aggregate_id: link.aggregate_id,
                sequence: link.sequence,
                position: link.global_position,
                problem,
            });
        }
        if verification.events % 10_000 == 0 {
            progress(verification.events);
        }
    }
    progress(verification.events);
    Ok(verification)
}
