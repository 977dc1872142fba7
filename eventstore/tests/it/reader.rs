//! The gap-safe read returns every committed event exactly once, even when transactions commit
//! out of position order.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chat4all_eventstore::{read_batch, Checkpoint, StoredEvent};
use chat4all_testsupport::database::fresh_database;
use sqlx::{Connection, PgConnection, PgPool};

async fn insert(conn: &mut PgConnection, id: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Test', $1, 1, 'Happened', '1.0', '{}', '{\"tenant_id\":\"t\"}') RETURNING global_position",
    )
    .bind(id)
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Reads from `after` until `want` events arrived or the deadline passes; the horizon is
/// cluster-wide, so an unrelated transaction elsewhere may hold it back for a moment.
async fn read_until(pool: &PgPool, after: &mut Checkpoint, want: usize) -> Vec<StoredEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let batch = read_batch(pool, *after, 100).await.unwrap();
        if let Some(last) = batch.last() {
            *after = last.checkpoint();
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        got.extend(batch);
    }
    got
}

#[tokio::test]
async fn transactions_committing_out_of_order_are_neither_skipped_nor_repeated() {
    let (options, pool) = fresh_database().await;
    let mut held = PgConnection::connect_with(&options).await.unwrap();
    let mut other = PgConnection::connect_with(&options).await.unwrap();

    let mut checkpoint = Checkpoint::default();
    let mut first = PgConnection::connect_with(&options).await.unwrap();
    insert(&mut first, "before").await;
    let seen = read_until(&pool, &mut checkpoint, 1).await;
    assert_eq!(seen.len(), 1);

    // The held transaction takes its position first and commits last.
    sqlx::query("BEGIN").execute(&mut held).await.unwrap();
    let held_position = insert(&mut held, "held").await;
    let later_a = insert(&mut other, "later-a").await;
    let later_b = insert(&mut other, "later-b").await;
    assert!(held_position < later_a && later_a < later_b);

    // While it is open, nothing at or after it may be handed out: a reader that did would move
    // its checkpoint past the held event and never return it.
    let during = read_batch(&pool, checkpoint, 100).await.unwrap();
    assert!(
        during.is_empty(),
        "events behind an open transaction were returned: {during:?}"
    );
    // A reader comparing positions alone would already see the later events, and lose the held one.
    let naive: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE global_position > $1 ORDER BY 1",
    )
    .bind(seen[0].global_position)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(naive, vec![later_a, later_b]);

    sqlx::query("COMMIT").execute(&mut held).await.unwrap();
    let after_commit = read_until(&pool, &mut checkpoint, 3).await;
    let positions: Vec<i64> = after_commit.iter().map(|e| e.global_position).collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        vec![held_position, later_a, later_b],
        "each event exactly once"
    );

    // And nothing more turns up afterwards.
    let again = read_batch(&pool, checkpoint, 100).await.unwrap();
    assert!(again.is_empty(), "events returned twice: {again:?}");
}

#[tokio::test]
async fn many_concurrent_writers_are_all_read_exactly_once() {
    let (options, pool) = fresh_database().await;
    let writers = 8;
    let per_writer = 50;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect_with(&options).await.unwrap();
            for i in 0..per_writer {
                // Some transactions hold their position for a while before committing.
                let mut tx = conn.begin().await.unwrap();
                insert(&mut tx, &format!("w{w}-{i}")).await;
                if i % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    let mut checkpoint = Checkpoint::default();
    let mut seen = Vec::new();
    // Read concurrently with the writers, as the relay does.
    let reader = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < writers * per_writer && Instant::now() < deadline {
            let batch = read_batch(&pool, checkpoint, 37).await.unwrap();
            if let Some(last) = batch.last() {
                checkpoint = last.checkpoint();
            } else {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen.extend(batch.into_iter().map(|e| e.aggregate_id));
        }
    };
    let (_, results) = tokio::join!(reader, futures_join(tasks));
    results.into_iter().for_each(|r| r.unwrap());
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), writers * per_writer, "every event read");
    assert_eq!(unique.len(), seen.len(), "no event read twice");
}

async fn futures_join(
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> Vec<Result<(), tokio::task::JoinError>> {
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await);
    }
    results
}
