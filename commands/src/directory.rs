//! Membership answers read from the event store, for the `Message` aggregate's decisions.

use async_trait::async_trait;
use chat4all_domain::conversation::ConversationEvent;
use chat4all_domain::{
    ConversationDirectory, ConversationId, DirectoryError, Membership, TenantId,
};
use sqlx::PgPool;

/// Folds a conversation's membership events (and only those: the partial index
/// `events_membership` skips read horizons, however many there are).
#[derive(Clone)]
pub struct StoreDirectory {
    pool: PgPool,
}

impl StoreDirectory {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl ConversationDirectory for StoreDirectory {
    async fn membership(
        &self,
        tenant: &TenantId,
        conversation: ConversationId,
    ) -> Result<Option<Membership>, DirectoryError> {
        let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
            "SELECT payload FROM events \
             WHERE aggregate_type = 'Conversation' AND aggregate_id = $1 \
               AND event_type IN ('ConversationCreated', 'MemberJoined', 'MemberLeft') \
             ORDER BY sequence",
        )
        .bind(tenant.stream_id(conversation))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| DirectoryError(Box::new(e)))?;
        let mut membership: Option<Membership> = None;
        for (payload,) in rows {
            let event: ConversationEvent =
                serde_json::from_value(payload).map_err(|e| DirectoryError(Box::new(e)))?;
            match event {
                ConversationEvent::ConversationCreated(created) => {
                    membership = Some(Membership {
                        kind: created.kind,
                        members: created.members.into_iter().collect(),
                    });
                }
                ConversationEvent::MemberJoined(joined) => {
                    if let Some(m) = membership.as_mut() {
                        m.members.insert(joined.user_id);
                    }
                }
                ConversationEvent::MemberLeft(left) => {
                    if let Some(m) = membership.as_mut() {
                        m.members.remove(&left.user_id);
                    }
                }
                ConversationEvent::ReadHorizonAdvanced(_) => {}
            }
        }
        Ok(membership)
    }
}
