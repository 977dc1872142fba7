//! The read views of the query API, each a type defined once: the answers of `GET
//! /v1/conversations`, `/v1/conversations/{id}`, `/v1/conversations/{id}/messages` and
//! `/v1/messages/{id}` (API.md), and the message inside `message.created` frames.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::frames::rfc3339;

/// A page of items and the cursor of the next one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A Message.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MessageView {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    /// Only in announced frames, for the push layer's routing (removed before a client sees it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(skip)]
    pub tenant_id: Option<String>,
    pub seq: i64,
    pub sender_id: String,
    pub content: Value,
    pub channels: Value,
    pub status: String,
    /// Per recipient and channel; channel deliveries do not exist yet, so always empty.
    #[sqlx(skip)]
    pub deliveries: Vec<Value>,
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "as_rfc3339_or_null")]
    pub edited_at: Option<DateTime<Utc>>,
}

/// One step of a message's status history.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StatusEntry {
    pub status: String,
    pub channel: Option<String>,
    #[serde(serialize_with = "as_rfc3339")]
    pub at: DateTime<Utc>,
}

/// A Message with its status history (`GET /v1/messages/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageView,
    pub history: Vec<StatusEntry>,
}

/// An item of the conversation list.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ConversationSummary {
    pub conversation_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub member_count: i64,
    pub last_message: Option<Value>,
    pub unread_count: i64,
    #[serde(serialize_with = "as_rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// A member in a conversation's detail.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MemberView {
    pub user_id: String,
    #[serde(serialize_with = "as_rfc3339")]
    pub joined_at: DateTime<Utc>,
    pub last_read_seq: i64,
}

/// A conversation with its members (`GET /v1/conversations/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationDetail {
    pub conversation_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub members: Vec<MemberView>,
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: DateTime<Utc>,
    pub last_seq: i64,
}

pub(crate) fn as_rfc3339<S: serde::Serializer>(
    at: &DateTime<Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*at))
}

fn as_rfc3339_or_null<S: serde::Serializer>(
    at: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&rfc3339(*at)),
        None => s.serialize_none(),
    }
}
