//! The messages read model: each message under its conversation's `seq`, with the furthest
//! status any recipient reached.

use chat4all_domain::message::{MessageContent, MessageEvent, MessageStatus};
use chat4all_eventstore::Envelope;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::history::HistoryRow;
use super::{malformed, rfc3339, Key, Working};
use crate::frames::{self, Notification};
use crate::views::MessageView;
use crate::ProjectionError;

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    pub(super) conversation_id: Uuid,
    pub(super) seq: i64,
    pub(super) sender_id: String,
    pub(super) status: String,
    pub(super) version: i64,
    #[sqlx(skip)]
    pub(super) new: Option<NewMessage>,
    #[sqlx(skip)]
    pub(super) dirty: bool,
}

pub(super) struct NewMessage {
    pub(super) content: Value,
    pub(super) channels: Value,
    pub(super) created_at: DateTime<Utc>,
}

pub(super) struct HorizonRead {
    pub(super) conversation: Key,
    pub(super) reader: String,
    pub(super) after: i64,
    pub(super) through: i64,
    pub(super) at: DateTime<Utc>,
}

/// Status only moves forward: a message shows the furthest any recipient reached.
pub(super) fn rank(status: &str) -> u8 {
    match status {
        "accepted" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        _ => 4,
    }
}

impl Working {
    pub(super) fn message(
        &mut self,
        event: &Envelope,
        payload: MessageEvent,
    ) -> Result<(), ProjectionError> {
        match payload {
            MessageEvent::MessageSent(sent) => self.sent(event, sent),
            MessageEvent::MessageDelivered(e) => self.recipient_status(
                event,
                e.message_id.as_uuid(),
                MessageStatus::Delivered,
                e.user_id.as_str(),
                e.delivered_at,
            ),
            MessageEvent::MessageRead(e) => self.recipient_status(
                event,
                e.message_id.as_uuid(),
                MessageStatus::Read,
                e.user_id.as_str(),
                e.read_at,
            ),
        }
    }

    pub(super) fn sent(
        &mut self,
        event: &Envelope,
        sent: chat4all_domain::message::MessageSent,
    ) -> Result<(), ProjectionError> {
        let tenant = event.tenant_id.as_str();
        let message = sent.message_id.as_uuid();
        let key: Key = (event.tenant_id.clone(), message);
        if self.messages.contains_key(&key) {
            return Ok(());
        }
        let conversation_key: Key = (event.tenant_id.clone(), sent.conversation_id.as_uuid());
        let conversation = conversation_key.1;
        let row = self
            .conversations
            .get_mut(&conversation_key)
            .ok_or_else(|| {
                malformed(format!(
                    "message {message} of unknown conversation {conversation}"
                ))
            })?;
        row.last_seq += 1;
        row.updated_at = row.updated_at.max(sent.sent_at);
        let seq = row.last_seq;
        let preview: String = match &sent.content {
            MessageContent::Text { text } => text.chars().take(100).collect(),
            MessageContent::File { caption, .. } => caption
                .as_deref()
                .unwrap_or("[file]")
                .chars()
                .take(100)
                .collect(),
        };
        row.last_message = Some(json!({"message_id": message, "sender_id": sent.sender_id,
                                       "preview": preview, "seq": seq, "created_at": rfc3339(sent.sent_at)}));
        row.dirty = true;
        let sender = sent.sender_id.as_str();
        // Only the sender's row changes: everyone else's unread count follows from `last_seq`.
        if let Some(member) = self
            .members
            .get_mut(&conversation_key)
            .and_then(|m| m.get_mut(sender))
        {
            if member.last_read_seq < seq {
                member.own_since_read += 1;
                member.dirty = true;
            }
        }
        let content = serde_json::to_value(&sent.content).map_err(malformed)?;
        let channels = serde_json::to_value(&sent.channels).map_err(malformed)?;
        if self.announce {
            let view = MessageView {
                message_id: message,
                conversation_id: conversation,
                tenant_id: Some(tenant.to_owned()),
                seq,
                sender_id: sent.sender_id.as_str().to_owned(),
                content: content.clone(),
                channels: channels.clone(),
                status: MessageStatus::Accepted.as_str().to_owned(),
                deliveries: Vec::new(),
                created_at: sent.sent_at,
                edited_at: None,
            };
            self.notifications.push(Notification {
                subject: frames::conversation_subject(conversation),
                frame: frames::message_created(sent.sent_at, &view),
            });
        }
        self.messages.insert(
            key.clone(),
            MessageRow {
                conversation_id: conversation,
                seq,
                status: "accepted".to_owned(),
                version: event.sequence,
                sender_id: sender.to_owned(),
                new: Some(NewMessage {
                    content,
                    channels,
                    created_at: sent.sent_at,
                }),
                dirty: true,
            },
        );
        self.created.push(key);
        Ok(())
    }

    pub(super) fn recipient_status(
        &mut self,
        event: &Envelope,
        message: Uuid,
        status: MessageStatus,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let tenant = event.tenant_id.as_str();
        let key: Key = (event.tenant_id.clone(), message);
        let row = self
            .messages
            .get_mut(&key)
            .ok_or_else(|| malformed(format!("status of unknown message {message}")))?;
        if row.version >= event.sequence {
            return Ok(());
        }
        // Status only moves forward: the message shows the furthest any recipient reached.
        let old_status = row.status.clone();
        if rank(status.as_str()) > rank(&old_status) {
            status.as_str().clone_into(&mut row.status);
        }
        row.version = event.sequence;
        row.dirty = true;
        let (conversation, seq, new_status) = (row.conversation_id, row.seq, row.status.clone());
        self.history.push(HistoryRow {
            message: key,
            sequence: event.sequence,
            status: status.as_str(),
            user_id: Some(user.to_owned()),
            at,
        });
        if new_status != old_status && self.announce {
            self.notifications
                .push(frames::status_updated(&frames::StatusUpdated {
                    tenant_id: tenant,
                    conversation_id: conversation,
                    message_id: message,
                    seq,
                    old_status: &old_status,
                    new_status: &new_status,
                    channel: None,
                    updated_at: at,
                }));
        }
        Ok(())
    }

    /// A member read the conversation through `through`: every message of others in
    /// `(after, through]` is read. Messages the batch holds change here; the rest in the database
    /// when the batch is stored.
    pub(super) fn read_through(
        &mut self,
        conversation: &Key,
        reader: &str,
        after: i64,
        through: i64,
        at: DateTime<Utc>,
    ) {
        let mut changed = Vec::new();
        for ((tenant, id), m) in &mut self.messages {
            if *tenant == conversation.0
                && m.conversation_id == conversation.1
                && m.seq > after
                && m.seq <= through
                && m.sender_id != reader
                && rank(&m.status) < rank(MessageStatus::Read.as_str())
            {
                let old = std::mem::replace(&mut m.status, MessageStatus::Read.as_str().to_owned());
                m.dirty = true;
                changed.push((m.seq, *id, old));
            }
        }
        if self.announce {
            changed.sort_unstable();
            for (seq, message, old) in changed {
                self.notifications
                    .push(frames::status_updated(&frames::StatusUpdated {
                        tenant_id: &conversation.0,
                        conversation_id: conversation.1,
                        message_id: message,
                        seq,
                        old_status: &old,
                        new_status: MessageStatus::Read.as_str(),
                        channel: None,
                        updated_at: at,
                    }));
            }
        }
        self.horizon_reads.push(HorizonRead {
            conversation: conversation.clone(),
            reader: reader.to_owned(),
            after,
            through,
            at,
        });
    }

    /// Marks read the stored messages that moved read horizons cover; those the batch holds were
    /// marked in memory and are left alone here.
    pub(super) async fn store_horizon_reads(
        &mut self,
        conn: &mut PgConnection,
    ) -> Result<(), ProjectionError> {
        for read in std::mem::take(&mut self.horizon_reads) {
            let held: Vec<Uuid> = self
                .messages
                .iter()
                .filter(|((tenant, _), m)| {
                    *tenant == read.conversation.0 && m.conversation_id == read.conversation.1
                })
                .map(|((_, id), _)| *id)
                .collect();
            let changed: Vec<(Uuid, i64, String)> = sqlx::query_as(
                "WITH target AS ( \
                     SELECT message_id, seq, status FROM rm_messages \
                      WHERE tenant_id = $1 AND conversation_id = $2 AND seq > $3 AND seq <= $4 \
                        AND sender_id <> $5 AND status IN ('accepted', 'sent', 'delivered') \
                        AND message_id <> ALL($6) \
                      ORDER BY seq FOR UPDATE) \
                 UPDATE rm_messages m SET status = 'read' FROM target t \
                  WHERE m.tenant_id = $1 AND m.message_id = t.message_id \
                 RETURNING t.message_id, t.seq, t.status",
            )
            .bind(&read.conversation.0)
            .bind(read.conversation.1)
            .bind(read.after)
            .bind(read.through)
            .bind(&read.reader)
            .bind(&held)
            .fetch_all(&mut *conn)
            .await?;
            if self.announce {
                let mut changed = changed;
                changed.sort_unstable_by_key(|(_, seq, _)| *seq);
                for (message, seq, old) in changed {
                    self.notifications
                        .push(frames::status_updated(&frames::StatusUpdated {
                            tenant_id: &read.conversation.0,
                            conversation_id: read.conversation.1,
                            message_id: message,
                            seq,
                            old_status: &old,
                            new_status: MessageStatus::Read.as_str(),
                            channel: None,
                            updated_at: read.at,
                        }));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn store_messages(
        &self,
        conn: &mut PgConnection,
    ) -> Result<(), ProjectionError> {
        let created: Vec<(&Key, &MessageRow, &NewMessage)> = self
            .created
            .iter()
            .filter_map(|key| self.messages.get(key).map(|m| (key, m)))
            .filter_map(|(key, m)| m.new.as_ref().map(|n| (key, m, n)))
            .collect();
        if !created.is_empty() {
            sqlx::query(
                "INSERT INTO rm_messages (tenant_id, message_id, conversation_id, seq, sender_id, content, \
                        channels, status, created_at, version) \
                 SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::int8[], $5::text[], $6::jsonb[], \
                                      $7::jsonb[], $8::text[], $9::timestamptz[], $10::int8[])",
            )
            .bind(created.iter().map(|(k, _, _)| k.0.as_str()).collect::<Vec<_>>())
            .bind(created.iter().map(|(k, _, _)| k.1).collect::<Vec<_>>())
            .bind(created.iter().map(|(_, m, _)| m.conversation_id).collect::<Vec<_>>())
            .bind(created.iter().map(|(_, m, _)| m.seq).collect::<Vec<_>>())
            .bind(created.iter().map(|(_, m, _)| m.sender_id.as_str()).collect::<Vec<_>>())
            .bind(created.iter().map(|(_, _, n)| n.content.clone()).collect::<Vec<_>>())
            .bind(created.iter().map(|(_, _, n)| n.channels.clone()).collect::<Vec<_>>())
            .bind(created.iter().map(|(_, m, _)| m.status.as_str()).collect::<Vec<_>>())
            .bind(created.iter().map(|(_, _, n)| n.created_at).collect::<Vec<_>>())
            .bind(created.iter().map(|(_, m, _)| m.version).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let updated: Vec<(&Key, &MessageRow)> = self
            .messages
            .iter()
            .filter(|(_, m)| m.dirty && m.new.is_none())
            .collect();
        if !updated.is_empty() {
            sqlx::query(
                "UPDATE rm_messages m SET status = k.status, version = k.version \
                   FROM unnest($1::text[], $2::uuid[], $3::text[], $4::int8[]) AS k(t, id, status, version) \
                  WHERE m.tenant_id = k.t AND m.message_id = k.id",
            )
            .bind(updated.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
            .bind(updated.iter().map(|(k, _)| k.1).collect::<Vec<_>>())
            .bind(updated.iter().map(|(_, m)| m.status.as_str()).collect::<Vec<_>>())
            .bind(updated.iter().map(|(_, m)| m.version).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
