//! What the failure tests check in the read models and the store, and the client set-up they
//! share: counted by id, never by eye.

use sqlx::PgPool;

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

pub async fn projected_messages(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM rm_messages").await
}

pub async fn stored_messages(pool: &PgPool) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM events WHERE event_type = 'MessageSent'",
    )
    .await
}

/// How many of `ids` have no row in the read models.
pub async fn missing_from_read_models(pool: &PgPool, ids: &[uuid::Uuid]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::uuid[]) AS a(id) \
         WHERE NOT EXISTS (SELECT 1 FROM rm_messages m WHERE m.message_id = a.id)",
    )
    .bind(ids)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every message projected once, every conversation numbered 1..n without a gap, and the
/// conversations' counters agreeing with the rows.
pub async fn assert_projected_once_without_gaps(pool: &PgPool) {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT message_id) FROM rm_messages")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(rows, distinct, "a message was projected twice");
    let gaps = count(
        pool,
        "SELECT count(*) FROM (SELECT conversation_id, count(*) AS n, max(seq) AS top, min(seq) AS low \
           FROM rm_messages GROUP BY conversation_id) c WHERE n <> top OR low <> 1",
    )
    .await;
    assert_eq!(gaps, 0, "every conversation is numbered 1..n without a gap");
    let counted = count(
        pool,
        "SELECT coalesce(sum(last_seq), 0)::bigint FROM rm_conversations",
    )
    .await;
    assert_eq!(counted, rows, "the conversations count what they hold");
}

pub use chat4all_testsupport::auth::token;
