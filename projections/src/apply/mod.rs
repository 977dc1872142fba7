//! Applying a batch of events to the read models, inside the caller's transaction.
//!
//! The same function serves the live projector (events from Kafka) and replay (events from the
//! store in the relay's order), so a rebuild equals the live model by construction.
//!
//! A batch is applied set-wise: the rows it touches are loaded (and locked) in a few statements,
//! the events are applied to them in memory in order, and the changed rows are written back with
//! one statement per table. Per-event statements would cost a handful of round trips per event,
//! which is what bounds a projector or a replay, not the database's work.
//!
//! One module per read model: `conversations` (the list and detail rows), `members` (membership,
//! read horizons, unread counts), `messages` (messages by `seq` and their status) and `history`
//! (each message's status changes). Each applies its events to the batch's working rows and
//! writes its table back; this module loads the rows and runs the events through in order.

use chat4all_domain::conversation::ConversationEvent;
use std::collections::{BTreeMap, HashMap, HashSet};

use chat4all_domain::message::MessageEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use chat4all_eventstore::Envelope;

use crate::frames::{rfc3339, Notification};
use crate::ProjectionError;

mod conversations;
mod history;
mod members;
mod messages;

use conversations::ConversationRow;
use history::HistoryRow;
use members::MemberRow;
use messages::{HorizonRead, MessageRow};

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

    /// Writes back every row the batch changed, one statement per table and kind of change.
    async fn store(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        self.store_conversations(conn).await?;
        self.store_members(conn).await?;
        self.store_messages(conn).await?;
        self.store_history(conn).await?;
        self.store_horizon_reads(conn).await
    }
}
