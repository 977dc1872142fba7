//! Every WebSocket frame the engine sends, built here and only here: the frames the projector
//! announces on Redis after a commit, and the ones the gateway's sockets make themselves
//! (`connection.established`, `resume.completed`, `typing`, `ping`, `error`).
//!
//! A frame is `{"type", "timestamp", "data"}` (API.md, WebSocket push). Announced frames carry
//! `tenant_id` in `data` for the push layer's routing; the gateway removes it before a frame
//! reaches a client, since user ids are unique per tenant only.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::views::{as_rfc3339, MessageView};

/// Something subscribers should hear about, once the transaction that applied it has committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The Redis subject: `conversation:{id}` or `user:{id}`, after the deployment's prefix.
    pub subject: String,
    /// A WebSocket frame: `{"type", "timestamp", "data"}`.
    pub frame: Value,
}

/// Times as the API writes them: RFC 3339, UTC, milliseconds.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The subject of a conversation's events.
pub fn conversation_subject(conversation: Uuid) -> String {
    format!("conversation:{conversation}")
}

/// The subject of a user's own events (membership changes), which their sockets follow.
pub fn user_subject(user: &str) -> String {
    format!("user:{user}")
}

#[derive(Serialize)]
struct Frame<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: T,
}

fn frame(kind: &str, at: DateTime<Utc>, data: impl Serialize) -> Value {
    // Serialising these plain structs of strings, numbers and ids cannot fail.
    serde_json::to_value(Frame {
        kind,
        timestamp: rfc3339(at),
        data,
    })
    .unwrap_or(Value::Null)
}

/// `message.created` `{Message}`.
pub fn message_created(at: DateTime<Utc>, message: &MessageView) -> Value {
    frame("message.created", at, message)
}

/// `message.status_updated`.
#[derive(Debug, Serialize)]
pub struct StatusUpdated<'a> {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub tenant_id: &'a str,
    pub seq: i64,
    pub old_status: &'a str,
    pub new_status: &'a str,
    /// The delivery channel the change came from; `None` for in-app status.
    pub channel: Option<&'a str>,
    #[serde(serialize_with = "as_rfc3339")]
    pub updated_at: DateTime<Utc>,
}

pub fn status_updated(update: &StatusUpdated<'_>) -> Notification {
    Notification {
        subject: conversation_subject(update.conversation_id),
        frame: frame("message.status_updated", update.updated_at, update),
    }
}

/// `conversation.created`, to each member's own subject.
#[derive(Debug, Serialize)]
pub struct ConversationCreated<'a> {
    pub conversation_id: Uuid,
    pub tenant_id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub members: Vec<&'a str>,
    /// The member this copy is addressed to.
    pub user_id: &'a str,
}

pub fn conversation_created(at: DateTime<Utc>, created: &ConversationCreated<'_>) -> Notification {
    Notification {
        subject: user_subject(created.user_id),
        frame: frame("conversation.created", at, created),
    }
}

/// `conversation.member_joined` and `conversation.member_left`.
#[derive(Debug, Serialize)]
pub struct MembershipChanged<'a> {
    pub conversation_id: Uuid,
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_by: Option<&'a str>,
    /// On a join: the conversation's last `seq` when the member joined. What follows is theirs,
    /// so a socket that starts following the conversation on this frame fetches from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
}

/// A membership change goes to the conversation's subscribers and to the user's own, so that the
/// user's sockets start or stop following the conversation.
pub fn membership_changed(at: DateTime<Utc>, change: &MembershipChanged<'_>) -> [Notification; 2] {
    let kind = if change.removed_by.is_some() {
        "conversation.member_left"
    } else {
        "conversation.member_joined"
    };
    let frame = frame(kind, at, change);
    [
        Notification {
            subject: conversation_subject(change.conversation_id),
            frame: frame.clone(),
        },
        Notification {
            subject: user_subject(change.user_id),
            frame,
        },
    ]
}

/// `conversation.read`.
#[derive(Debug, Serialize)]
pub struct ConversationRead<'a> {
    pub conversation_id: Uuid,
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub up_to_seq: i64,
    #[serde(serialize_with = "as_rfc3339")]
    pub read_at: DateTime<Utc>,
}

pub fn conversation_read(read: &ConversationRead<'_>) -> Notification {
    Notification {
        subject: conversation_subject(read.conversation_id),
        frame: frame("conversation.read", read.read_at, read),
    }
}

/// `typing`, ephemeral: published by the gateway, never stored.
#[derive(Debug, Serialize)]
pub struct Typing<'a> {
    pub conversation_id: Uuid,
    pub user_id: &'a str,
    pub tenant_id: &'a str,
}

pub fn typing(at: DateTime<Utc>, typing: &Typing<'_>) -> Notification {
    Notification {
        subject: conversation_subject(typing.conversation_id),
        frame: frame("typing", at, typing),
    }
}

/// `connection.established`, a socket's first frame.
pub fn connection_established(
    at: DateTime<Utc>,
    user_id: &str,
    session_id: Uuid,
    server_instance: &str,
) -> Value {
    #[derive(Serialize)]
    struct Established<'a> {
        user_id: &'a str,
        session_id: Uuid,
        server_instance: &'a str,
    }
    frame(
        "connection.established",
        at,
        Established {
            user_id,
            session_id,
            server_instance,
        },
    )
}

/// `resume.completed`: `recovered: false` when the gap could not be filled.
pub fn resume_completed(at: DateTime<Utc>, recovered: bool, replayed: u64) -> Value {
    #[derive(Serialize)]
    struct Completed {
        recovered: bool,
        replayed: u64,
    }
    frame(
        "resume.completed",
        at,
        Completed {
            recovered,
            replayed,
        },
    )
}

/// `ping`, every 30 s.
pub fn ping(at: DateTime<Utc>) -> Value {
    frame("ping", at, serde_json::Map::new())
}

/// `error` `{"code", "detail"}`: a client frame the server refused without closing.
pub fn error(at: DateTime<Utc>, code: &str, detail: &str) -> Value {
    #[derive(Serialize)]
    struct Error<'a> {
        code: &'a str,
        detail: &'a str,
    }
    frame("error", at, Error { code, detail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T10:00:00.123Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn frames_have_the_shape_of_the_contract() {
        let conversation = Uuid::nil();
        let read = conversation_read(&ConversationRead {
            conversation_id: conversation,
            tenant_id: "acme",
            user_id: "bob",
            up_to_seq: 7,
            read_at: at(),
        });
        assert_eq!(read.subject, format!("conversation:{conversation}"));
        assert_eq!(
            read.frame,
            json!({"type": "conversation.read", "timestamp": "2026-11-29T10:00:00.123Z",
                   "data": {"conversation_id": conversation, "tenant_id": "acme", "user_id": "bob",
                            "up_to_seq": 7, "read_at": "2026-11-29T10:00:00.123Z"}})
        );
        let [to_conversation, to_user] = membership_changed(
            at(),
            &MembershipChanged {
                conversation_id: conversation,
                tenant_id: "acme",
                user_id: "dave",
                added_by: None,
                removed_by: Some("alice"),
                last_seq: None,
            },
        );
        assert_eq!(to_conversation.frame["type"], "conversation.member_left");
        assert_eq!(to_user.subject, "user:dave");
        assert!(to_user.frame["data"].get("added_by").is_none());
        assert_eq!(
            resume_completed(at(), false, 0)["data"],
            json!({"recovered": false, "replayed": 0})
        );
        assert_eq!(ping(at())["data"], json!({}));
        assert_eq!(
            error(at(), "not_a_member", "no")["data"],
            json!({"code": "not_a_member", "detail": "no"})
        );
    }
}
