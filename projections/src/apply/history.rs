//! The status history read model: every status change of every message, by recipient.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Key, Working};
use crate::ProjectionError;

pub(super) struct HistoryRow {
    pub(super) message: Key,
    pub(super) sequence: i64,
    pub(super) status: &'static str,
    pub(super) user_id: Option<String>,
    pub(super) at: DateTime<Utc>,
}

impl Working {
    pub(super) async fn store_history(
        &self,
        conn: &mut PgConnection,
    ) -> Result<(), ProjectionError> {
        if self.history.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO rm_message_history (tenant_id, message_id, sequence, status, user_id, at) \
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::int8[], $4::text[], $5::text[], $6::timestamptz[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(self.history.iter().map(|h| h.message.0.as_str()).collect::<Vec<_>>())
        .bind(self.history.iter().map(|h| h.message.1).collect::<Vec<_>>())
        .bind(self.history.iter().map(|h| h.sequence).collect::<Vec<_>>())
        .bind(self.history.iter().map(|h| h.status).collect::<Vec<_>>())
        .bind(self.history.iter().map(|h| h.user_id.as_deref()).collect::<Vec<_>>())
        .bind(self.history.iter().map(|h| h.at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
