//! Group commit keeps every append's own outcome.

use chat4all_eventstore::{Append, AppendError, Appender};
use chat4all_testsupport::database::fresh_database;
use serde_json::json;

fn append(stream: &str, sequence: i64, payload: serde_json::Value) -> Append {
    Append {
        aggregate_type: "Test",
        aggregate_id: stream.to_owned(),
        sequence,
        event_type: "Happened".to_owned(),
        event_version: "1.0".to_owned(),
        payload,
        metadata: json!({"tenant_id": "t"}),
    }
}

#[tokio::test]
async fn concurrent_appends_to_distinct_streams_all_land_once() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let appender = appender.clone();
            tokio::spawn(async move {
                appender
                    .append(append(&format!("s{i}"), 1, json!({"i": i})))
                    .await
            })
        })
        .collect();
    let mut positions = Vec::new();
    for task in tasks {
        positions.push(task.await.unwrap().unwrap());
    }
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), 500, "each append has its own position");
    let stored: Vec<i64> = sqlx::query_scalar("SELECT global_position FROM events ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        stored, positions,
        "the positions answered are the positions stored"
    );
}

#[tokio::test]
async fn racing_appends_to_one_stream_position_have_exactly_one_winner() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let appender = appender.clone();
            tokio::spawn(async move {
                appender
                    .append(append("contested", 1, json!({"i": i})))
                    .await
            })
        })
        .collect();
    let (mut won, mut lost) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(AppendError::Conflict) => lost += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((won, lost), (1, 49));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_row_the_store_refuses_fails_alone() {
    let (_, pool) = fresh_database().await;
    let appender = Appender::start(pool.clone());
    // jsonb cannot hold U+0000: this row makes any statement carrying it fail.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let appender = appender.clone();
            let payload = if i == 20 {
                json!({"bad": "\u{0}"})
            } else {
                json!({"i": i})
            };
            tokio::spawn(async move {
                (
                    i,
                    appender.append(append(&format!("s{i}"), 1, payload)).await,
                )
            })
        })
        .collect();
    for task in tasks {
        let (i, outcome) = task.await.unwrap();
        if i == 20 {
            assert!(matches!(outcome, Err(AppendError::Store(_))), "{outcome:?}");
        } else {
            assert!(
                outcome.is_ok(),
                "append {i} failed with its neighbour: {outcome:?}"
            );
        }
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 39);
}
