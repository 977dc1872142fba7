//! Helpers for tests of the read models, here and in the crates that build on them.

use sqlx::PgPool;

/// Every read-model row as comparable text, in a fixed order: two models are equal exactly
/// when their snapshots are.
///
/// # Panics
/// If the query fails (a test helper).
#[allow(clippy::unwrap_used)]
pub async fn snapshot(pool: &PgPool) -> String {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT string_agg(t, '|' ORDER BY t) FROM \
         (SELECT row_to_json(m)::text AS t FROM rm_messages m UNION ALL \
          SELECT row_to_json(x)::text FROM rm_members x UNION ALL \
          SELECT row_to_json(c)::text FROM rm_conversations c UNION ALL \
          SELECT row_to_json(h)::text FROM rm_message_history h) s",
    )
    .fetch_one(pool)
    .await
    .unwrap()
    .unwrap_or_default()
}
