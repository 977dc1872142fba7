//! What the query API reads: the read models, scoped to a tenant and to what the caller may see.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::views::{
    ConversationDetail, ConversationSummary, MemberView, MessageDetail, MessageView, Page,
    StatusEntry,
};
use crate::PROJECTION;

/// Where a conversation list page starts: after this `(updated_at, conversation_id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub updated_at_micros: i64,
    pub conversation_id: Uuid,
}

impl ListCursor {
    pub fn encode(&self) -> String {
        format!(
            "c1.{}.{}",
            self.updated_at_micros,
            self.conversation_id.simple()
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        if parts.next()? != "c1" {
            return None;
        }
        let updated_at_micros = parts.next()?.parse().ok()?;
        let conversation_id = Uuid::try_parse(parts.next()?).ok()?;
        parts.next().is_none().then_some(Self {
            updated_at_micros,
            conversation_id,
        })
    }
}

/// Direction and start of a message page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagesFrom {
    /// The newest messages (`before_seq` pages backwards from there).
    Before(i64),
    After(i64),
}

impl MessagesFrom {
    pub fn encode(&self) -> String {
        match self {
            Self::Before(seq) => format!("m1.b.{seq}"),
            Self::After(seq) => format!("m1.a.{seq}"),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("m1.")?;
        let (kind, seq) = rest.split_once('.')?;
        let seq: i64 = seq.parse().ok().filter(|s| *s >= 0)?;
        match kind {
            "b" => Some(Self::Before(seq)),
            "a" => Some(Self::After(seq)),
            _ => None,
        }
    }
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// The read models' query side.
#[derive(Clone)]
pub struct Queries {
    pool: PgPool,
}

impl Queries {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The position of the last event applied (informational).
    ///
    /// # Errors
    /// A database failure.
    pub async fn position(&self) -> Result<i64, sqlx::Error> {
        Ok(
            sqlx::query_scalar("SELECT position FROM projection_position WHERE projection = $1")
                .bind(PROJECTION)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }

    /// Whether the event at `position` (and so everything before it in its stream) is applied.
    /// An event of another tenant counts as applied, so that nothing about it can be learnt.
    ///
    /// # Errors
    /// A database failure.
    pub async fn applied(&self, tenant: &str, position: i64) -> Result<bool, sqlx::Error> {
        let event: Option<(String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, sequence, metadata ->> 'tenant_id' FROM events \
             WHERE global_position = $1",
        )
        .bind(position)
        .fetch_optional(&self.pool)
        .await?;
        let Some((aggregate_type, aggregate_id, sequence, event_tenant)) = event else {
            return Ok(false);
        };
        if event_tenant.as_deref() != Some(tenant) {
            return Ok(true);
        }
        let Some(id) = aggregate_id
            .split_once(':')
            .and_then(|(_, id)| Uuid::try_parse(id).ok())
        else {
            return Ok(true);
        };
        let table = match aggregate_type.as_str() {
            "Conversation" => {
                "SELECT version FROM rm_conversations WHERE tenant_id = $1 AND conversation_id = $2"
            }
            "Message" => "SELECT version FROM rm_messages WHERE tenant_id = $1 AND message_id = $2",
            _ => return Ok(true),
        };
        let version: Option<i64> = sqlx::query_scalar(table)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(version.is_some_and(|v| v >= sequence))
    }

    /// Every conversation `user` is a member of (for push subscriptions).
    ///
    /// # Errors
    /// A database failure.
    pub async fn member_conversations(
        &self,
        tenant: &str,
        user: &str,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT conversation_id FROM rm_members WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_all(&self.pool)
        .await
    }

    /// The caller's conversations, most recent activity first.
    ///
    /// # Errors
    /// A database failure.
    pub async fn conversations(
        &self,
        tenant: &str,
        user: &str,
        limit: i64,
        after: Option<ListCursor>,
    ) -> Result<Page<ConversationSummary>, sqlx::Error> {
        let rows: Vec<ConversationSummary> = sqlx::query_as(
            "SELECT c.conversation_id, c.kind, c.name, \
                    (SELECT count(*) FROM rm_members x WHERE x.tenant_id = c.tenant_id AND x.conversation_id = c.conversation_id) AS member_count, \
                    c.last_message, greatest(c.last_seq - m.last_read_seq - m.own_since_read, 0) AS unread_count, c.updated_at \
               FROM rm_members m \
               JOIN rm_conversations c ON c.tenant_id = m.tenant_id AND c.conversation_id = m.conversation_id \
              WHERE m.tenant_id = $1 AND m.user_id = $2 \
                AND ($3::bigint IS NULL OR (c.updated_at, c.conversation_id) < (to_timestamp($3::bigint / 1e6), $4)) \
              ORDER BY c.updated_at DESC, c.conversation_id DESC \
              LIMIT $5",
        )
        .bind(tenant)
        .bind(user)
        .bind(after.map(|c| c.updated_at_micros))
        .bind(after.map(|c| c.conversation_id))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        let rows = &rows[..rows.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
        let next_cursor = more.then(|| {
            rows.last().map(|r| {
                ListCursor {
                    updated_at_micros: micros(r.updated_at),
                    conversation_id: r.conversation_id,
                }
                .encode()
            })
        });
        Ok(Page {
            items: rows.to_vec(),
            next_cursor: next_cursor.flatten(),
        })
    }

    /// A conversation the caller is a member of, with its members; `None` otherwise.
    ///
    /// # Errors
    /// A database failure.
    pub async fn conversation(
        &self,
        tenant: &str,
        user: &str,
        conversation: Uuid,
    ) -> Result<Option<ConversationDetail>, sqlx::Error> {
        if !self.is_member(tenant, user, conversation).await? {
            return Ok(None);
        }
        let row: Option<DetailRow> = sqlx::query_as(
            "SELECT kind, name, description, created_at, last_seq FROM rm_conversations \
             WHERE tenant_id = $1 AND conversation_id = $2",
        )
        .bind(tenant)
        .bind(conversation)
        .fetch_optional(&self.pool)
        .await?;
        let Some(DetailRow {
            kind,
            name,
            description,
            created_at,
            last_seq,
        }) = row
        else {
            return Ok(None);
        };
        let members: Vec<MemberView> = sqlx::query_as(
            "SELECT user_id, joined_at, last_read_seq FROM rm_members \
             WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY joined_at, user_id",
        )
        .bind(tenant)
        .bind(conversation)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(ConversationDetail {
            conversation_id: conversation,
            kind,
            name,
            description,
            members,
            created_at,
            last_seq,
        }))
    }

    async fn is_member(
        &self,
        tenant: &str,
        user: &str,
        conversation: Uuid,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM rm_members WHERE tenant_id = $1 AND conversation_id = $2 AND user_id = $3)",
        )
        .bind(tenant)
        .bind(conversation)
        .bind(user)
        .fetch_one(&self.pool)
        .await
    }

    /// A page of a conversation's messages in `seq` order; `None` if the caller is not a member.
    ///
    /// # Errors
    /// A database failure.
    pub async fn messages(
        &self,
        tenant: &str,
        user: &str,
        conversation: Uuid,
        from: MessagesFrom,
        limit: i64,
    ) -> Result<Option<Page<MessageView>>, sqlx::Error> {
        if !self.is_member(tenant, user, conversation).await? {
            return Ok(None);
        }
        let (sql, bound) = match from {
            MessagesFrom::Before(seq) => (
                "SELECT * FROM (SELECT conversation_id, message_id, seq, sender_id, content, channels, status, created_at, edited_at \
                   FROM rm_messages WHERE tenant_id = $1 AND conversation_id = $2 AND seq < $3 \
                  ORDER BY seq DESC LIMIT $4) page ORDER BY seq",
                seq,
            ),
            MessagesFrom::After(seq) => (
                "SELECT conversation_id, message_id, seq, sender_id, content, channels, status, created_at, edited_at \
                   FROM rm_messages WHERE tenant_id = $1 AND conversation_id = $2 AND seq > $3 \
                  ORDER BY seq LIMIT $4",
                seq,
            ),
        };
        let mut rows: Vec<MessageView> = sqlx::query_as(sql)
            .bind(tenant)
            .bind(conversation)
            .bind(bound)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        if more {
            match from {
                // The extra row is the oldest of a backward page, the newest of a forward one.
                MessagesFrom::Before(_) => {
                    rows.remove(0);
                }
                MessagesFrom::After(_) => {
                    rows.pop();
                }
            }
        }
        let next_cursor = if more {
            match from {
                MessagesFrom::Before(_) => {
                    rows.first().map(|r| MessagesFrom::Before(r.seq).encode())
                }
                MessagesFrom::After(_) => rows.last().map(|r| MessagesFrom::After(r.seq).encode()),
            }
        } else {
            None
        };
        Ok(Some(Page {
            items: rows,
            next_cursor,
        }))
    }

    /// One message with its status history; `None` unless the caller is a member of its
    /// conversation.
    ///
    /// # Errors
    /// A database failure.
    pub async fn message(
        &self,
        tenant: &str,
        user: &str,
        message: Uuid,
    ) -> Result<Option<MessageDetail>, sqlx::Error> {
        let row: Option<MessageView> = sqlx::query_as(
            "SELECT conversation_id, message_id, seq, sender_id, content, channels, status, created_at, edited_at \
               FROM rm_messages WHERE tenant_id = $1 AND message_id = $2",
        )
        .bind(tenant)
        .bind(message)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let conversation = row.conversation_id;
        if !self.is_member(tenant, user, conversation).await? {
            return Ok(None);
        }
        let stored: Vec<StatusEntry> = sqlx::query_as(
            "SELECT status, channel, at FROM rm_message_history \
             WHERE tenant_id = $1 AND message_id = $2 ORDER BY sequence",
        )
        .bind(tenant)
        .bind(message)
        .fetch_all(&self.pool)
        .await?;
        // Acceptance is the message row itself; the history table holds what happened after.
        let accepted = StatusEntry {
            status: "accepted".to_owned(),
            channel: None,
            at: row.created_at,
        };
        let history = std::iter::once(accepted).chain(stored).collect();
        Ok(Some(MessageDetail {
            message: row,
            history,
        }))
    }
}

#[derive(Debug, sqlx::FromRow)]
struct DetailRow {
    kind: String,
    name: Option<String>,
    description: Option<String>,
    created_at: DateTime<Utc>,
    last_seq: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = ListCursor {
            updated_at_micros: 1_795_930_009_123_456,
            conversation_id: Uuid::nil(),
        };
        assert_eq!(ListCursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "c1",
            "c1.x.y",
            "c2.1.00000000000000000000000000000000",
            "c1.1.nope",
            "c1.1.00000000000000000000000000000000.extra",
        ] {
            assert_eq!(ListCursor::decode(bad), None, "{bad}");
        }
        for from in [MessagesFrom::Before(7), MessagesFrom::After(0)] {
            assert_eq!(MessagesFrom::decode(&from.encode()), Some(from));
        }
        for bad in ["m1.b.-1", "m1.x.3", "m1.b", "b.3", "m1.a.1e3"] {
            assert_eq!(MessagesFrom::decode(bad), None, "{bad}");
        }
    }
}
