//! The hash chain: every event links to its stream's previous one, and verification names the
//! event where a changed, rewritten or removed event breaks it.

use chat4all_eventstore::chain::{verify_all, verify_stream, Problem};
use chat4all_eventstore::{Append, Appender};
use chat4all_testsupport::database::fresh_database;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

async fn append_stream(appender: &Appender, stream: &str, events: i64) {
    for sequence in 1..=events {
        appender
            .append(Append {
                aggregate_type: "Test",
                aggregate_id: stream.to_owned(),
                sequence,
                event_type: "Happened".to_owned(),
                event_version: "1.0".to_owned(),
                payload: json!({"Happened": {"n": sequence, "text": "é \"quoted\""}}),
                metadata: json!({"tenant_id": "acme", "actor": "alice"}),
            })
            .await
            .unwrap();
    }
}

/// Lets a test do what an attacker with write access to the table would.
async fn tamper(pool: &PgPool, statement: &str) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(statement).execute(&mut *tx).await.unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn each_event_hash_covers_its_streams_previous_hash_and_its_own_columns() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    append_stream(&appender, "acme:one", 4).await;
    append_stream(&appender, "acme:two", 2).await;
    let rows: Vec<(String, i64, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, payload::text, metadata::text, hash FROM events \
         ORDER BY aggregate_id, sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 6);
    let mut previous: Option<(String, Vec<u8>)> = None;
    for (stream, sequence, payload, metadata, hash) in rows {
        // Recomputed here from the documented definition, not with the store's own function.
        let mut digest = Sha256::new();
        if let Some((previous_stream, previous_hash)) = &previous {
            if *previous_stream == stream {
                digest.update(previous_hash);
            }
        }
        digest.update(
            format!("Test\n{stream}\n{sequence}\nHappened\n1.0\n{payload}\n{metadata}").as_bytes(),
        );
        assert_eq!(
            digest.finalize().to_vec(),
            hash,
            "event {sequence} of {stream} does not link to its predecessor"
        );
        if sequence == 1 {
            assert!(previous.as_ref().is_none_or(|(s, _)| *s != stream));
        }
        previous = Some((stream, hash));
    }
}

#[tokio::test]
async fn an_untouched_store_verifies() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    append_stream(&appender, "acme:one", 3).await;
    append_stream(&appender, "acme:two", 2).await;
    let mut reported = Vec::new();
    let all = verify_all(&pool, |n| reported.push(n)).await.unwrap();
    assert!(all.intact(), "{:?}", all.breaks);
    assert_eq!((all.events, all.streams), (5, 2));
    assert_eq!(reported.last(), Some(&5));
    let one = verify_stream(&pool, "Test", "acme:one").await.unwrap();
    assert!(one.intact());
    assert_eq!((one.events, one.streams), (3, 1));
}

#[tokio::test]
async fn a_changed_event_is_named() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    append_stream(&appender, "acme:one", 4).await;
    append_stream(&appender, "acme:two", 2).await;
    tamper(
        &pool,
        "UPDATE events SET payload = '{\"Happened\": {\"n\": 99}}' \
         WHERE aggregate_id = 'acme:one' AND sequence = 2",
    )
    .await;
    let all = verify_all(&pool, |_| {}).await.unwrap();
    assert_eq!(all.breaks.len(), 1, "{:?}", all.breaks);
    let broken = &all.breaks[0];
    assert_eq!(
        (
            broken.aggregate_id.as_str(),
            broken.sequence,
            broken.problem
        ),
        ("acme:one", 2, Problem::Altered)
    );
    assert!(verify_stream(&pool, "Test", "acme:two")
        .await
        .unwrap()
        .intact());
}

#[tokio::test]
async fn a_rewritten_hash_breaks_the_next_link() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    append_stream(&appender, "acme:one", 4).await;
    // The attacker changes event 2 and recomputes its hash, but not its successors'.
    tamper(
        &pool,
        "UPDATE events e SET payload = '{\"Happened\": {\"n\": 99}}', \
                hash = event_hash(p.hash, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, \
                                  e.event_version, '{\"Happened\": {\"n\": 99}}', e.metadata) \
           FROM events p \
          WHERE e.aggregate_id = 'acme:one' AND e.sequence = 2 \
            AND p.aggregate_id = 'acme:one' AND p.sequence = 1",
    )
    .await;
    let one = verify_stream(&pool, "Test", "acme:one").await.unwrap();
    assert_eq!(one.breaks.len(), 1, "{:?}", one.breaks);
    assert_eq!(
        (one.breaks[0].sequence, one.breaks[0].problem),
        (3, Problem::Altered)
    );
}

#[tokio::test]
async fn a_removed_event_is_named_by_its_sequence() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    append_stream(&appender, "acme:one", 4).await;
    append_stream(&appender, "acme:two", 2).await;
    tamper(
        &pool,
        "DELETE FROM events WHERE aggregate_id = 'acme:one' AND sequence = 2",
    )
    .await;
    tamper(
        &pool,
        "DELETE FROM events WHERE aggregate_id = 'acme:two' AND sequence = 1",
    )
    .await;
    let all = verify_all(&pool, |_| {}).await.unwrap();
    let named: Vec<(&str, i64, Problem)> = all
        .breaks
        .iter()
        .map(|b| (b.aggregate_id.as_str(), b.sequence, b.problem))
        .collect();
    assert_eq!(
        named,
        [
            ("acme:one", 3, Problem::Missing { expected: 2 }),
            ("acme:two", 2, Problem::Missing { expected: 1 }),
        ]
    );
}
