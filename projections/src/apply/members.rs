//! The members read model: who belongs to each conversation, with read horizons and the own
//! messages after them, from which unread counts follow.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::BTreeMap;
use uuid::Uuid;

use super::{Key, Working};
use crate::ProjectionError;

#[derive(sqlx::FromRow)]
pub(super) struct MemberRow {
    pub(super) tenant_id: String,
    pub(super) conversation_id: Uuid,
    pub(super) user_id: String,
    pub(super) joined_at: DateTime<Utc>,
    pub(super) last_read_seq: i64,
    /// The member's own messages after `last_read_seq`, which are not unread for them.
    pub(super) own_since_read: i64,
    #[sqlx(skip)]
    pub(super) dirty: bool,
}

impl Working {
    /// The user's own messages after `horizon`: those already stored plus those this batch created.
    pub(super) async fn own_after(
        &self,
        conn: &mut PgConnection,
        conversation: &Key,
        user: &str,
        horizon: i64,
    ) -> Result<i64, ProjectionError> {
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM rm_messages \
              WHERE tenant_id = $1 AND conversation_id = $2 AND seq > $3 AND sender_id = $4",
        )
        .bind(&conversation.0)
        .bind(conversation.1)
        .bind(horizon)
        .bind(user)
        .fetch_one(&mut *conn)
        .await?;
        let fresh = self
            .created
            .iter()
            .filter_map(|key| self.messages.get(key))
            .filter(|m| m.conversation_id == conversation.1 && m.seq > horizon)
            .filter(|m| m.new.is_some() && m.sender_id == user)
            .count();
        Ok(stored + i64::try_from(fresh).unwrap_or(i64::MAX))
    }

    pub(super) async fn store_members(
        &self,
        conn: &mut PgConnection,
    ) -> Result<(), ProjectionError> {
        if !self.left.is_empty() {
            sqlx::query(
                "DELETE FROM rm_members m USING unnest($1::text[], $2::uuid[], $3::text[]) AS k(t, c, u) \
                  WHERE m.tenant_id = k.t AND m.conversation_id = k.c AND m.user_id = k.u",
            )
            .bind(self.left.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
            .bind(self.left.iter().map(|(k, _)| k.1).collect::<Vec<_>>())
            .bind(self.left.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let rows: Vec<&MemberRow> = self
            .members
            .values()
            .flat_map(BTreeMap::values)
            .filter(|m| m.dirty)
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO rm_members (tenant_id, conversation_id, user_id, joined_at, last_read_seq, own_since_read) \
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::int8[], $6::int8[]) \
             ON CONFLICT (tenant_id, conversation_id, user_id) DO UPDATE SET \
                 joined_at = EXCLUDED.joined_at, last_read_seq = EXCLUDED.last_read_seq, \
                 own_since_read = EXCLUDED.own_since_read",
        )
        .bind(rows.iter().map(|m| m.tenant_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.conversation_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.joined_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.last_read_seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.own_since_read).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
