//! The conversations read model: one row per conversation (kind, name, last message, `last_seq`),
//! behind the conversation list and detail.

use chat4all_domain::conversation::ConversationEvent;
use chat4all_eventstore::Envelope;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::members::MemberRow;
use super::{conversation_id, malformed, Key, Working};
use crate::frames;
use crate::ProjectionError;

#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    pub(super) tenant_id: String,
    pub(super) conversation_id: Uuid,
    pub(super) kind: String,
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) metadata: Option<Value>,
    pub(super) created_by: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) last_seq: i64,
    pub(super) last_message: Option<Value>,
    pub(super) version: i64,
    #[sqlx(skip)]
    pub(super) dirty: bool,
}

impl Working {
    pub(super) fn conversation_mut(
        &mut self,
        key: &Key,
    ) -> Result<&mut ConversationRow, ProjectionError> {
        self.conversations
            .get_mut(key)
            .ok_or_else(|| malformed(format!("event of unknown conversation {}", key.1)))
    }

    pub(super) async fn conversation(
        &mut self,
        conn: &mut PgConnection,
        event: &Envelope,
        payload: ConversationEvent,
    ) -> Result<(), ProjectionError> {
        let tenant = event.tenant_id.as_str();
        let conversation = conversation_id(&payload);
        let key: Key = (event.tenant_id.clone(), conversation);
        if self
            .conversations
            .get(&key)
            .is_some_and(|c| c.version >= event.sequence)
        {
            return Ok(());
        }
        match payload {
            ConversationEvent::ConversationCreated(created) => {
                self.conversations.insert(
                    key.clone(),
                    ConversationRow {
                        tenant_id: event.tenant_id.clone(),
                        conversation_id: conversation,
                        kind: created.kind.as_str().to_owned(),
                        name: created.name.clone(),
                        description: created.description.clone(),
                        metadata: created.metadata.clone(),
                        created_by: created.created_by.as_str().to_owned(),
                        created_at: created.created_at,
                        updated_at: created.created_at,
                        last_seq: 0,
                        last_message: None,
                        version: event.sequence,
                        dirty: true,
                    },
                );
                let members = self.members.entry(key).or_default();
                for member in &created.members {
                    members.insert(
                        member.as_str().to_owned(),
                        MemberRow {
                            tenant_id: event.tenant_id.clone(),
                            conversation_id: conversation,
                            user_id: member.as_str().to_owned(),
                            joined_at: created.created_at,
                            last_read_seq: 0,
                            own_since_read: 0,
                            dirty: true,
                        },
                    );
                    if self.announce {
                        self.notifications.push(frames::conversation_created(
                            created.created_at,
                            &frames::ConversationCreated {
                                conversation_id: conversation,
                                tenant_id: tenant,
                                kind: created.kind.as_str(),
                                name: created.name.as_deref(),
                                members: created.members.iter().map(|m| m.as_str()).collect(),
                                user_id: member.as_str(),
                            },
                        ));
                    }
                }
                return Ok(());
            }
            ConversationEvent::MemberJoined(joined) => {
                // What was said before joining is history, not unread.
                let last_seq = self.conversation_mut(&key)?.last_seq;
                let user = joined.user_id.as_str().to_owned();
                self.members.entry(key.clone()).or_default().insert(
                    user.clone(),
                    MemberRow {
                        tenant_id: event.tenant_id.clone(),
                        conversation_id: conversation,
                        user_id: user,
                        joined_at: joined.joined_at,
                        last_read_seq: last_seq,
                        own_since_read: 0,
                        dirty: true,
                    },
                );
                if self.announce {
                    self.notifications.extend(frames::membership_changed(
                        joined.joined_at,
                        &frames::MembershipChanged {
                            conversation_id: conversation,
                            tenant_id: tenant,
                            user_id: joined.user_id.as_str(),
                            added_by: Some(joined.added_by.as_str()),
                            removed_by: None,
                            last_seq: Some(last_seq),
                        },
                    ));
                }
            }
            ConversationEvent::MemberLeft(left) => {
                self.conversation_mut(&key)?;
                let user = left.user_id.as_str().to_owned();
                if let Some(members) = self.members.get_mut(&key) {
                    members.remove(&user);
                }
                self.left.push((key.clone(), user));
                if self.announce {
                    self.notifications.extend(frames::membership_changed(
                        left.left_at,
                        &frames::MembershipChanged {
                            conversation_id: conversation,
                            tenant_id: tenant,
                            user_id: left.user_id.as_str(),
                            added_by: None,
                            removed_by: Some(left.removed_by.as_str()),
                            last_seq: None,
                        },
                    ));
                }
            }
            ConversationEvent::ReadHorizonAdvanced(read) => {
                let up_to = i64::try_from(read.up_to_seq).unwrap_or(i64::MAX);
                let last_seq = self.conversation_mut(&key)?.last_seq;
                let user = read.user_id.as_str();
                let previous = self
                    .members
                    .get(&key)
                    .and_then(|m| m.get(user))
                    .map(|m| m.last_read_seq);
                let mut newly_read = None;
                if let Some(previous) = previous {
                    let horizon = previous.max(up_to);
                    let own = if horizon >= last_seq {
                        0
                    } else {
                        self.own_after(conn, &key, user, horizon).await?
                    };
                    if let Some(member) = self.members.get_mut(&key).and_then(|m| m.get_mut(user)) {
                        member.last_read_seq = horizon;
                        member.own_since_read = own;
                        member.dirty = true;
                    }
                    newly_read = Some((previous, horizon.min(last_seq)));
                }
                if self.announce {
                    self.notifications
                        .push(frames::conversation_read(&frames::ConversationRead {
                            conversation_id: conversation,
                            tenant_id: tenant,
                            user_id: read.user_id.as_str(),
                            up_to_seq: up_to,
                            read_at: read.read_at,
                        }));
                }
                if let Some((after, through)) = newly_read.filter(|(a, t)| t > a) {
                    self.read_through(&key, user, after, through, read.read_at);
                }
            }
        }
        let row = self.conversation_mut(&key)?;
        row.version = event.sequence;
        row.dirty = true;
        Ok(())
    }

    pub(super) async fn store_conversations(
        &self,
        conn: &mut PgConnection,
    ) -> Result<(), ProjectionError> {
        let rows: Vec<&ConversationRow> = self.conversations.values().filter(|c| c.dirty).collect();
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO rm_conversations (tenant_id, conversation_id, kind, name, description, metadata, \
                    created_by, created_at, updated_at, last_seq, last_message, version) \
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[], \
                                  $7::text[], $8::timestamptz[], $9::timestamptz[], $10::int8[], $11::jsonb[], $12::int8[]) \
             ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET \
                 updated_at = EXCLUDED.updated_at, last_seq = EXCLUDED.last_seq, \
                 last_message = EXCLUDED.last_message, version = EXCLUDED.version",
        )
        .bind(rows.iter().map(|c| c.tenant_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.conversation_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.name.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.description.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.metadata.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.created_by.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.created_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.updated_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.last_seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.last_message.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.version).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
