//! Applying one event to the read models, inside the caller's transaction.
//!
//! The same function serves the live projector (events from Kafka) and replay (events from the
//! store in the relay's order), so a rebuild equals the live model by construction.

use chat4all_domain::conversation::ConversationEvent;
use chat4all_domain::message::{MessageEvent, MessageStatus};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ProjectionError;

/// An event as the projector needs it: from a Kafka envelope or a row of the store.
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectedEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub tenant_id: String,
    pub payload: Value,
}

impl ProjectedEvent {
    /// Parses a relay envelope.
    ///
    /// # Errors
    /// The bytes are not an envelope.
    pub fn from_envelope(bytes: &[u8]) -> Result<Self, ProjectionError> {
        serde_json::from_slice(bytes).map_err(|e| ProjectionError::Malformed(e.to_string()))
    }
}

/// Something subscribers should hear about, once the transaction that applied it has committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `conversation:{id}` or `user:{id}`, after the deployment's prefix.
    pub channel: String,
    /// A WebSocket frame: `{"type", "timestamp", "data"}`.
    pub frame: Value,
}

/// A membership change goes to the conversation's subscribers and to the user's own, so that the
/// user's sockets start or stop following the conversation.
fn announce_membership(
    notifications: &mut Vec<Notification>,
    channel: &str,
    user: &str,
    frame: Value,
) {
    notifications.push(Notification {
        channel: channel.to_owned(),
        frame: frame.clone(),
    });
    notifications.push(Notification {
        channel: format!("user:{user}"),
        frame,
    });
}

fn frame(kind: &str, at: DateTime<Utc>, data: Value) -> Value {
    json!({"type": kind, "timestamp": rfc3339(at), "data": data})
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn malformed(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Malformed(e.to_string())
}

/// Applies `event` unless its aggregate already reflects it; returns what to announce.
///
/// # Errors
/// A store failure or an event that cannot be understood.
pub async fn apply(
    conn: &mut PgConnection,
    event: &ProjectedEvent,
) -> Result<Vec<Notification>, ProjectionError> {
    match event.aggregate_type.as_str() {
        "Conversation" => {
            let payload: ConversationEvent =
                serde_json::from_value(event.payload.clone()).map_err(malformed)?;
            apply_conversation(conn, event, payload).await
        }
        "Message" => {
            let payload: MessageEvent =
                serde_json::from_value(event.payload.clone()).map_err(malformed)?;
            apply_message(conn, event, payload).await
        }
        other => {
            tracing::debug!(
                aggregate_type = other,
                "no read model for this aggregate type"
            );
            Ok(Vec::new())
        }
    }
}

/// The conversation row's applied sequence, locked for this transaction.
async fn conversation_version(
    conn: &mut PgConnection,
    tenant: &str,
    conversation: Uuid,
) -> Result<Option<i64>, ProjectionError> {
    Ok(sqlx::query_scalar(
        "SELECT version FROM rm_conversations WHERE tenant_id = $1 AND conversation_id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(conversation)
    .fetch_optional(&mut *conn)
    .await?)
}

async fn apply_conversation(
    conn: &mut PgConnection,
    event: &ProjectedEvent,
    payload: ConversationEvent,
) -> Result<Vec<Notification>, ProjectionError> {
    let tenant = event.tenant_id.as_str();
    let conversation = match &payload {
        ConversationEvent::ConversationCreated(e) => e.conversation_id,
        ConversationEvent::MemberJoined(e) => e.conversation_id,
        ConversationEvent::MemberLeft(e) => e.conversation_id,
        ConversationEvent::ReadHorizonAdvanced(e) => e.conversation_id,
    }
    .as_uuid();
    let version = conversation_version(conn, tenant, conversation).await?;
    if version.is_some_and(|v| v >= event.sequence) {
        return Ok(Vec::new());
    }
    let mut notifications = Vec::new();
    let channel = format!("conversation:{conversation}");
    match payload {
        ConversationEvent::ConversationCreated(created) => {
            sqlx::query(
                "INSERT INTO rm_conversations (tenant_id, conversation_id, kind, name, description, metadata, \
                 created_by, created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
            )
            .bind(tenant)
            .bind(conversation)
            .bind(created.kind.as_str())
            .bind(&created.name)
            .bind(&created.description)
            .bind(&created.metadata)
            .bind(created.created_by.as_str())
            .bind(created.created_at)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
            for member in &created.members {
                sqlx::query(
                    "INSERT INTO rm_members (tenant_id, conversation_id, user_id, joined_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(tenant)
                .bind(conversation)
                .bind(member.as_str())
                .bind(created.created_at)
                .execute(&mut *conn)
                .await?;
                notifications.push(Notification {
                    channel: format!("user:{member}"),
                    frame: frame(
                        "conversation.created",
                        created.created_at,
                        json!({
                            "conversation_id": conversation, "tenant_id": tenant,
                            "type": created.kind.as_str(), "name": created.name,
                            "members": created.members, "user_id": member,
                        }),
                    ),
                });
            }
            return Ok(notifications);
        }
        ConversationEvent::MemberJoined(joined) => {
            sqlx::query(
                "INSERT INTO rm_members (tenant_id, conversation_id, user_id, joined_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, conversation_id, user_id) DO UPDATE \
                 SET joined_at = EXCLUDED.joined_at, last_read_seq = 0, unread_count = 0",
            )
            .bind(tenant)
            .bind(conversation)
            .bind(joined.user_id.as_str())
            .bind(joined.joined_at)
            .execute(&mut *conn)
            .await?;
            let data = json!({"conversation_id": conversation, "tenant_id": tenant,
                              "user_id": joined.user_id, "added_by": joined.added_by});
            let announce = frame("conversation.member_joined", joined.joined_at, data);
            announce_membership(
                &mut notifications,
                &channel,
                joined.user_id.as_str(),
                announce,
            );
        }
        ConversationEvent::MemberLeft(left) => {
            sqlx::query("DELETE FROM rm_members WHERE tenant_id = $1 AND conversation_id = $2 AND user_id = $3")
                .bind(tenant)
                .bind(conversation)
                .bind(left.user_id.as_str())
                .execute(&mut *conn)
                .await?;
            let data = json!({"conversation_id": conversation, "tenant_id": tenant,
                              "user_id": left.user_id, "removed_by": left.removed_by});
            let announce = frame("conversation.member_left", left.left_at, data);
            announce_membership(
                &mut notifications,
                &channel,
                left.user_id.as_str(),
                announce,
            );
        }
        ConversationEvent::ReadHorizonAdvanced(read) => {
            let up_to = i64::try_from(read.up_to_seq).unwrap_or(i64::MAX);
            sqlx::query(
                "UPDATE rm_members m SET last_read_seq = greatest(m.last_read_seq, $4), \
                 unread_count = (SELECT count(*) FROM rm_messages x \
                                  WHERE x.tenant_id = $1 AND x.conversation_id = $2 \
                                    AND x.seq > greatest(m.last_read_seq, $4) AND x.sender_id <> $3) \
                 WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.user_id = $3",
            )
            .bind(tenant)
            .bind(conversation)
            .bind(read.user_id.as_str())
            .bind(up_to)
            .execute(&mut *conn)
            .await?;
            notifications.push(Notification {
                channel: channel.clone(),
                frame: frame(
                    "conversation.read",
                    read.read_at,
                    json!({"conversation_id": conversation, "tenant_id": tenant,
                           "user_id": read.user_id, "up_to_seq": up_to, "read_at": rfc3339(read.read_at)}),
                ),
            });
        }
    }
    sqlx::query(
        "UPDATE rm_conversations SET version = $3 WHERE tenant_id = $1 AND conversation_id = $2",
    )
    .bind(tenant)
    .bind(conversation)
    .bind(event.sequence)
    .execute(&mut *conn)
    .await?;
    Ok(notifications)
}

async fn apply_message(
    conn: &mut PgConnection,
    event: &ProjectedEvent,
    payload: MessageEvent,
) -> Result<Vec<Notification>, ProjectionError> {
    let tenant = event.tenant_id.as_str();
    match payload {
        MessageEvent::MessageSent(sent) => {
            let message = sent.message_id.as_uuid();
            let conversation = sent.conversation_id.as_uuid();
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM rm_messages WHERE tenant_id = $1 AND message_id = $2",
            )
            .bind(tenant)
            .bind(message)
            .fetch_optional(&mut *conn)
            .await?;
            if exists.is_some() {
                return Ok(Vec::new());
            }
            // The conversation's row is locked while its next seq is taken.
            let seq: i64 = sqlx::query_scalar(
                "UPDATE rm_conversations SET last_seq = last_seq + 1, updated_at = greatest(updated_at, $3) \
                 WHERE tenant_id = $1 AND conversation_id = $2 RETURNING last_seq",
            )
            .bind(tenant)
            .bind(conversation)
            .bind(sent.sent_at)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| malformed(format!("message {message} of unknown conversation {conversation}")))?;
            let content = serde_json::to_value(&sent.content).map_err(malformed)?;
            let channels = serde_json::to_value(&sent.channels).map_err(malformed)?;
            let preview: String = match &sent.content {
                chat4all_domain::message::MessageContent::Text { text } => {
                    text.chars().take(100).collect()
                }
                chat4all_domain::message::MessageContent::File { caption, .. } => caption
                    .clone()
                    .unwrap_or_else(|| "[file]".to_owned())
                    .chars()
                    .take(100)
                    .collect(),
            };
            let last_message = json!({"message_id": message, "sender_id": sent.sender_id,
                                      "preview": preview, "seq": seq, "created_at": rfc3339(sent.sent_at)});
            sqlx::query("UPDATE rm_conversations SET last_message = $3 WHERE tenant_id = $1 AND conversation_id = $2")
                .bind(tenant)
                .bind(conversation)
                .bind(&last_message)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO rm_messages (tenant_id, message_id, conversation_id, seq, sender_id, content, channels, \
                 status, created_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, 'accepted', $8, $9)",
            )
            .bind(tenant)
            .bind(message)
            .bind(conversation)
            .bind(seq)
            .bind(sent.sender_id.as_str())
            .bind(&content)
            .bind(&channels)
            .bind(sent.sent_at)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
            history(
                conn,
                tenant,
                message,
                event.sequence,
                "accepted",
                None,
                sent.sent_at,
            )
            .await?;
            sqlx::query(
                "UPDATE rm_members SET unread_count = unread_count + 1 \
                 WHERE tenant_id = $1 AND conversation_id = $2 AND user_id <> $3 AND last_read_seq < $4",
            )
            .bind(tenant)
            .bind(conversation)
            .bind(sent.sender_id.as_str())
            .bind(seq)
            .execute(&mut *conn)
            .await?;
            let data = json!({
                "message_id": message, "conversation_id": conversation, "tenant_id": tenant, "seq": seq,
                "sender_id": sent.sender_id, "content": content, "channels": channels, "status": "accepted",
                "deliveries": [], "created_at": rfc3339(sent.sent_at), "edited_at": null,
            });
            Ok(vec![Notification {
                channel: format!("conversation:{conversation}"),
                frame: frame("message.created", sent.sent_at, data),
            }])
        }
        MessageEvent::MessageDelivered(e) => {
            recipient_status(
                conn,
                event,
                e.message_id.as_uuid(),
                MessageStatus::Delivered,
                e.user_id.as_str(),
                e.delivered_at,
            )
            .await
        }
        MessageEvent::MessageRead(e) => {
            recipient_status(
                conn,
                event,
                e.message_id.as_uuid(),
                MessageStatus::Read,
                e.user_id.as_str(),
                e.read_at,
            )
            .await
        }
    }
}

async fn history(
    conn: &mut PgConnection,
    tenant: &str,
    message: Uuid,
    sequence: i64,
    status: &str,
    user: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO rm_message_history (tenant_id, message_id, sequence, status, user_id, at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(message)
    .bind(sequence)
    .bind(status)
    .bind(user)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn recipient_status(
    conn: &mut PgConnection,
    event: &ProjectedEvent,
    message: Uuid,
    status: MessageStatus,
    user: &str,
    at: DateTime<Utc>,
) -> Result<Vec<Notification>, ProjectionError> {
    let tenant = event.tenant_id.as_str();
    let row: Option<(i64, String, Uuid, i64)> = sqlx::query_as(
        "SELECT version, status, conversation_id, seq FROM rm_messages \
         WHERE tenant_id = $1 AND message_id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(message)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((version, old_status, conversation, seq)) = row else {
        return Err(malformed(format!("status of unknown message {message}")));
    };
    if version >= event.sequence {
        return Ok(Vec::new());
    }
    // Status only moves forward: the message shows the furthest any recipient reached.
    let rank = |s: &str| match s {
        "accepted" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        _ => 4,
    };
    let new_status = if rank(status.as_str()) > rank(&old_status) {
        status.as_str()
    } else {
        old_status.as_str()
    };
    sqlx::query(
        "UPDATE rm_messages SET status = $3, version = $4 WHERE tenant_id = $1 AND message_id = $2",
    )
    .bind(tenant)
    .bind(message)
    .bind(new_status)
    .bind(event.sequence)
    .execute(&mut *conn)
    .await?;
    history(
        conn,
        tenant,
        message,
        event.sequence,
        status.as_str(),
        Some(user),
        at,
    )
    .await?;
    if new_status == old_status {
        return Ok(Vec::new());
    }
    Ok(vec![Notification {
        channel: format!("conversation:{conversation}"),
        frame: frame(
            "message.status_updated",
            at,
            json!({"message_id": message, "conversation_id": conversation, "tenant_id": tenant, "seq": seq,
                   "old_status": old_status, "new_status": new_status, "channel": null,
                   "updated_at": rfc3339(at)}),
        ),
    }])
}
