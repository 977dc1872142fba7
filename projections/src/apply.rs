//! Applying a batch of events to the read models, inside the caller's transaction.
//!
//! The same function serves the live projector (events from Kafka) and replay (events from the
//! store in the relay's order), so a rebuild equals the live model by construction.
//!
//! A batch is applied set-wise: the rows it touches are loaded (and locked) in a few statements,
//! the events are applied to them in memory in order, and the changed rows are written back with
//! one statement per table. Per-event statements would cost a handful of round trips per event,
//! which is what bounds a projector or a replay, not the database's work.

use chat4all_domain::conversation::ConversationEvent;
use chat4all_domain::message::{MessageContent, MessageEvent, MessageStatus};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use chat4all_eventstore::Envelope;

use crate::ProjectionError;

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
    event: &Envelope,
) -> Result<Vec<Notification>, ProjectionError> {
    apply_batch(conn, std::slice::from_ref(event)).await
}

/// Applies `events` in order, each unless its aggregate already reflects it; returns what to
/// announce, in the same order.
///
/// # Errors
/// A store failure or an event that cannot be understood; the caller's transaction must then be
/// rolled back, since part of the batch may have been written.
pub async fn apply_batch(
    conn: &mut PgConnection,
    events: &[Envelope],
) -> Result<Vec<Notification>, ProjectionError> {
    apply_events(conn, events, Mode::Live).await
}

/// [`apply_batch`] for a rebuild, which has nobody to announce to and is the only writer of each
/// conversation's rows, so it takes no row locks (each would be one more write per row).
///
/// # Errors
/// As [`apply_batch`].
pub async fn apply_batch_silently(
    conn: &mut PgConnection,
    events: &[Envelope],
) -> Result<(), ProjectionError> {
    apply_events(conn, events, Mode::Rebuild).await.map(drop)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Announces, and locks the rows it loads: a partition's batches are serialised by its
    /// offset row, but a conversation's events can straddle two partitions after the topic's
    /// partition count changed.
    Live,
    Rebuild,
}

async fn apply_events(
    conn: &mut PgConnection,
    events: &[Envelope],
    mode: Mode,
) -> Result<Vec<Notification>, ProjectionError> {
    let decoded = decode(events)?;
    if decoded.is_empty() {
        return Ok(Vec::new());
    }
    let mut working = Working::load(conn, &decoded, mode == Mode::Live).await?;
    working.announce = mode == Mode::Live;
    for (event, payload) in decoded {
        match payload {
            Payload::Conversation(payload) => working.conversation(conn, event, payload).await?,
            Payload::Message(payload) => working.message(event, payload)?,
        }
    }
    working.store(conn).await?;
    Ok(working.notifications)
}

enum Payload {
    Conversation(ConversationEvent),
    Message(MessageEvent),
}

/// `(tenant, id)` of a conversation or a message.
type Key = (String, Uuid);

fn decode(events: &[Envelope]) -> Result<Vec<(&Envelope, Payload)>, ProjectionError> {
    let mut decoded = Vec::with_capacity(events.len());
    for event in events {
        let payload = match event.aggregate_type.as_str() {
            "Conversation" => Payload::Conversation(
                serde_json::from_str::<ConversationEvent>(event.payload.get())
                    .map_err(malformed)?,
            ),
            "Message" => Payload::Message(
                serde_json::from_str::<MessageEvent>(event.payload.get()).map_err(malformed)?,
            ),
            other => {
                tracing::debug!(
                    aggregate_type = other,
                    "no read model for this aggregate type"
                );
                continue;
            }
        };
        decoded.push((event, payload));
    }
    Ok(decoded)
}

fn conversation_of(payload: &Payload) -> Uuid {
    match payload {
        Payload::Conversation(event) => conversation_id(event),
        Payload::Message(MessageEvent::MessageSent(e)) => e.conversation_id.as_uuid(),
        Payload::Message(MessageEvent::MessageDelivered(e)) => e.conversation_id.as_uuid(),
        Payload::Message(MessageEvent::MessageRead(e)) => e.conversation_id.as_uuid(),
    }
}

fn conversation_id(event: &ConversationEvent) -> Uuid {
    match event {
        ConversationEvent::ConversationCreated(e) => e.conversation_id,
        ConversationEvent::MemberJoined(e) => e.conversation_id,
        ConversationEvent::MemberLeft(e) => e.conversation_id,
        ConversationEvent::ReadHorizonAdvanced(e) => e.conversation_id,
    }
    .as_uuid()
}

/// The member whose row the event may change (a creation's members are all new).
fn member_of(payload: &Payload) -> Option<&str> {
    match payload {
        Payload::Conversation(ConversationEvent::MemberJoined(e)) => Some(e.user_id.as_str()),
        Payload::Conversation(ConversationEvent::MemberLeft(e)) => Some(e.user_id.as_str()),
        Payload::Conversation(ConversationEvent::ReadHorizonAdvanced(e)) => {
            Some(e.user_id.as_str())
        }
        Payload::Message(MessageEvent::MessageSent(e)) => Some(e.sender_id.as_str()),
        Payload::Conversation(ConversationEvent::ConversationCreated(_))
        | Payload::Message(MessageEvent::MessageDelivered(_) | MessageEvent::MessageRead(_)) => {
            None
        }
    }
}

fn message_of(payload: &Payload) -> Option<Uuid> {
    match payload {
        Payload::Message(MessageEvent::MessageSent(e)) => Some(e.message_id.as_uuid()),
        Payload::Message(MessageEvent::MessageDelivered(e)) => Some(e.message_id.as_uuid()),
        Payload::Message(MessageEvent::MessageRead(e)) => Some(e.message_id.as_uuid()),
        Payload::Conversation(_) => None,
    }
}

#[derive(sqlx::FromRow)]
struct ConversationRow {
    tenant_id: String,
    conversation_id: Uuid,
    kind: String,
    name: Option<String>,
    description: Option<String>,
    metadata: Option<Value>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_seq: i64,
    last_message: Option<Value>,
    version: i64,
    #[sqlx(skip)]
    dirty: bool,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    tenant_id: String,
    conversation_id: Uuid,
    user_id: String,
    joined_at: DateTime<Utc>,
    last_read_seq: i64,
    /// The member's own messages after `last_read_seq`, which are not unread for them.
    own_since_read: i64,
    #[sqlx(skip)]
    dirty: bool,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    conversation_id: Uuid,
    seq: i64,
    sender_id: String,
    status: String,
    version: i64,
    #[sqlx(skip)]
    new: Option<NewMessage>,
    #[sqlx(skip)]
    dirty: bool,
}

struct NewMessage {
    content: Value,
    channels: Value,
    created_at: DateTime<Utc>,
}

struct HistoryRow {
    message: Key,
    sequence: i64,
    status: &'static str,
    user_id: Option<String>,
    at: DateTime<Utc>,
}

struct HorizonRead {
    conversation: Key,
    reader: String,
    after: i64,
    through: i64,
    at: DateTime<Utc>,
}

/// Status only moves forward: a message shows the furthest any recipient reached.
fn rank(status: &str) -> u8 {
    match status {
        "accepted" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        _ => 4,
    }
}

fn status_updated(
    tenant: &str,
    conversation: Uuid,
    message: Uuid,
    seq: i64,
    old_status: &str,
    new_status: &str,
    at: DateTime<Utc>,
) -> Notification {
    Notification {
        channel: format!("conversation:{conversation}"),
        frame: frame(
            "message.status_updated",
            at,
            json!({"message_id": message, "conversation_id": conversation, "tenant_id": tenant, "seq": seq,
                   "old_status": old_status, "new_status": new_status, "channel": null,
                   "updated_at": rfc3339(at)}),
        ),
    }
}

/// The rows a batch touches, as the batch has left them so far.
#[derive(Default)]
struct Working {
    conversations: HashMap<Key, ConversationRow>,
    /// The members the batch's events name, by conversation and user, as the batch left them.
    members: HashMap<Key, BTreeMap<String, MemberRow>>,
    /// Memberships that ended; deleted before the current members are written.
    left: Vec<(Key, String)>,
    messages: HashMap<Key, MessageRow>,
    /// Messages created by the batch, in the order they were numbered.
    created: Vec<Key>,
    history: Vec<HistoryRow>,
    /// Read horizons that moved, for the stored messages they mark read.
    horizon_reads: Vec<HorizonRead>,
    /// Whether to build what subscribers should hear; a rebuild announces nothing.
    announce: bool,
    notifications: Vec<Notification>,
}

fn unzip_keys(keys: &HashSet<Key>) -> (Vec<String>, Vec<Uuid>) {
    let mut keys: Vec<&Key> = keys.iter().collect();
    // A fixed order, so that two writers locking overlapping rows cannot deadlock.
    keys.sort();
    keys.into_iter().map(|(t, id)| (t.clone(), *id)).unzip()
}

impl Working {
    /// Loads and locks every row the batch may touch.
    async fn load(
        conn: &mut PgConnection,
        decoded: &[(&Envelope, Payload)],
        lock: bool,
    ) -> Result<Self, ProjectionError> {
        let lock = |table: &str| {
            if lock {
                format!(" FOR UPDATE OF {table}")
            } else {
                String::new()
            }
        };
        let mut conversations = HashSet::new();
        let mut messages = HashSet::new();
        let mut members = HashSet::new();
        for (event, payload) in decoded {
            let conversation = conversation_of(payload);
            conversations.insert((event.tenant_id.clone(), conversation));
            if let Some(message) = message_of(payload) {
                messages.insert((event.tenant_id.clone(), message));
            }
            if let Some(user) = member_of(payload) {
                members.insert((event.tenant_id.as_str(), conversation, user));
            }
        }
        let mut working = Self::default();
        let (tenants, ids) = unzip_keys(&conversations);
        let rows: Vec<ConversationRow> = sqlx::query_as(&format!(
            "SELECT c.tenant_id, c.conversation_id, c.kind, c.name, c.description, c.metadata, c.created_by, \
                    c.created_at, c.updated_at, c.last_seq, c.last_message, c.version \
               FROM unnest($1::text[], $2::uuid[]) AS k(tenant_id, conversation_id) \
               JOIN rm_conversations c USING (tenant_id, conversation_id) \
              ORDER BY c.tenant_id, c.conversation_id{}",
            lock("c")
        ))
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            working
                .conversations
                .insert((row.tenant_id.clone(), row.conversation_id), row);
        }
        // Only the members the events name: a group's other members are not touched.
        let rows: Vec<MemberRow> = sqlx::query_as(
            "SELECT m.tenant_id, m.conversation_id, m.user_id, m.joined_at, m.last_read_seq, m.own_since_read \
               FROM unnest($1::text[], $2::uuid[], $3::text[]) AS k(tenant_id, conversation_id, user_id) \
               JOIN rm_members m USING (tenant_id, conversation_id, user_id)",
        )
        .bind(members.iter().map(|m| m.0).collect::<Vec<_>>())
        .bind(members.iter().map(|m| m.1).collect::<Vec<_>>())
        .bind(members.iter().map(|m| m.2).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        for key in conversations {
            working.members.insert(key, BTreeMap::new());
        }
        for row in rows {
            let key = (row.tenant_id.clone(), row.conversation_id);
            working
                .members
                .entry(key)
                .or_default()
                .insert(row.user_id.clone(), row);
        }
        if !messages.is_empty() {
            let (tenants, ids) = unzip_keys(&messages);
            let rows: Vec<(String, Uuid, MessageRow)> = sqlx::query_as::<
                _,
                (String, Uuid, Uuid, i64, String, String, i64),
            >(&format!(
                "SELECT m.tenant_id, m.message_id, m.conversation_id, m.seq, m.sender_id, m.status, m.version \
                   FROM unnest($1::text[], $2::uuid[]) AS k(tenant_id, message_id) \
                   JOIN rm_messages m USING (tenant_id, message_id) \
                  ORDER BY m.tenant_id, m.message_id{}",
                lock("m")
            ))
            .bind(&tenants)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|(tenant, id, conversation_id, seq, sender_id, status, version)| {
                (
                    tenant,
                    id,
                    MessageRow {
                        conversation_id,
                        seq,
                        sender_id,
                        status,
                        version,
                        new: None,
                        dirty: false,
                    },
                )
            })
            .collect();
            for (tenant, id, row) in rows {
                working.messages.insert((tenant, id), row);
            }
        }
        Ok(working)
    }

    fn conversation_mut(&mut self, key: &Key) -> Result<&mut ConversationRow, ProjectionError> {
        self.conversations
            .get_mut(key)
            .ok_or_else(|| malformed(format!("event of unknown conversation {}", key.1)))
    }

    async fn conversation(
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
        let channel = format!("conversation:{conversation}");
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
                        self.notifications.push(Notification {
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
                    let data = json!({"conversation_id": conversation, "tenant_id": tenant,
                                      "user_id": joined.user_id, "added_by": joined.added_by});
                    let announce = frame("conversation.member_joined", joined.joined_at, data);
                    announce_membership(
                        &mut self.notifications,
                        &channel,
                        joined.user_id.as_str(),
                        announce,
                    );
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
                    let data = json!({"conversation_id": conversation, "tenant_id": tenant,
                                      "user_id": left.user_id, "removed_by": left.removed_by});
                    let announce = frame("conversation.member_left", left.left_at, data);
                    announce_membership(
                        &mut self.notifications,
                        &channel,
                        left.user_id.as_str(),
                        announce,
                    );
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
                    self.notifications.push(Notification {
                        channel: channel.clone(),
                        frame: frame(
                            "conversation.read",
                            read.read_at,
                            json!({"conversation_id": conversation, "tenant_id": tenant,
                                   "user_id": read.user_id, "up_to_seq": up_to, "read_at": rfc3339(read.read_at)}),
                        ),
                    });
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

    /// The user's own messages after `horizon`: those already stored plus those this batch created.
    async fn own_after(
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

    fn message(&mut self, event: &Envelope, payload: MessageEvent) -> Result<(), ProjectionError> {
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

    fn sent(
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
            let data = json!({
                "message_id": message, "conversation_id": conversation, "tenant_id": tenant, "seq": seq,
                "sender_id": sent.sender_id, "content": content, "channels": channels, "status": "accepted",
                "deliveries": [], "created_at": rfc3339(sent.sent_at), "edited_at": null,
            });
            self.notifications.push(Notification {
                channel: format!("conversation:{conversation}"),
                frame: frame("message.created", sent.sent_at, data),
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

    fn recipient_status(
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
            self.notifications.push(status_updated(
                tenant,
                conversation,
                message,
                seq,
                &old_status,
                &new_status,
                at,
            ));
        }
        Ok(())
    }

    /// A member read the conversation through `through`: every message of others in
    /// `(after, through]` is read. Messages the batch holds change here; the rest in the database
    /// when the batch is stored.
    fn read_through(
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
                self.notifications.push(status_updated(
                    &conversation.0,
                    conversation.1,
                    message,
                    seq,
                    &old,
                    MessageStatus::Read.as_str(),
                    at,
                ));
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

    /// Writes back every row the batch changed, one statement per table and kind of change.
    async fn store(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        self.store_conversations(conn).await?;
        self.store_members(conn).await?;
        self.store_messages(conn).await?;
        self.store_history(conn).await?;
        self.store_horizon_reads(conn).await
    }

    /// Marks read the stored messages that moved read horizons cover; those the batch holds were
    /// marked in memory and are left alone here.
    async fn store_horizon_reads(
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
                    self.notifications.push(status_updated(
                        &read.conversation.0,
                        read.conversation.1,
                        message,
                        seq,
                        &old,
                        MessageStatus::Read.as_str(),
                        read.at,
                    ));
                }
            }
        }
        Ok(())
    }

    async fn store_conversations(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
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

    async fn store_members(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
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

    async fn store_messages(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
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

    async fn store_history(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
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
