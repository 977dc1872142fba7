//! One stream's history up to a sequence, a position or a time.

use chat4all_eventstore::stream::load;
use chat4all_eventstore::{Append, Appender, StoreError, Until};
use chat4all_testsupport::database::fresh_database;
use chrono::{DateTime, Utc};
use serde_json::json;

async fn append(appender: &Appender, stream: &str, sequence: i64) -> i64 {
    appender
        .append(Append {
            aggregate_type: "Test",
            aggregate_id: stream.to_owned(),
            sequence,
            event_type: "Happened".to_owned(),
            event_version: "1.0".to_owned(),
            payload: json!({"Happened": {"n": sequence}}),
            metadata: json!({"tenant_id": "acme"}),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stream_loads_up_to_a_sequence_a_position_or_a_time() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    let mut positions = Vec::new();
    for sequence in 1..=2 {
        positions.push(append(&appender, "acme:s", sequence).await);
        append(&appender, "acme:other", sequence).await;
    }
    let between: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await
        .unwrap();
    for sequence in 3..=5 {
        positions.push(append(&appender, "acme:s", sequence).await);
    }
    let sequences = |events: Vec<chat4all_eventstore::StoredEvent>| {
        events.into_iter().map(|e| e.sequence).collect::<Vec<_>>()
    };
    let all = load(&pool, "Test", "acme:s", Until::Latest).await.unwrap();
    assert!(all.iter().all(|e| e.aggregate_id == "acme:s"));
    assert_eq!(sequences(all), [1, 2, 3, 4, 5]);
    assert_eq!(
        sequences(
            load(&pool, "Test", "acme:s", Until::Sequence(3))
                .await
                .unwrap()
        ),
        [1, 2, 3]
    );
    assert_eq!(
        sequences(
            load(&pool, "Test", "acme:s", Until::Position(positions[3]))
                .await
                .unwrap()
        ),
        [1, 2, 3, 4]
    );
    assert_eq!(
        sequences(
            load(&pool, "Test", "acme:s", Until::Time(between))
                .await
                .unwrap()
        ),
        [1, 2]
    );
    assert!(load(&pool, "Test", "acme:none", Until::Latest)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        load(&pool, "Test", "acme:s", Until::Position(1_000_000)).await,
        Err(StoreError::UnknownPosition(1_000_000))
    ));
}
