//! The record every event becomes on the topic: a JSON envelope, keyed by conversation.

use serde::Serialize;

use crate::StoredEvent;

/// The JSON value of a Kafka record (ARCHITECTURE.md).
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub position: i64,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub tenant_id: Option<&'a str>,
    pub conversation_id: Option<&'a str>,
    pub occurred_at: Option<&'a str>,
    pub payload: &'a serde_json::Value,
    pub metadata: &'a serde_json::Value,
    /// Hex of the event's link in its stream's hash chain.
    pub hash: String,
}

impl<'a> Envelope<'a> {
    pub fn of(event: &'a StoredEvent) -> Self {
        Self {
            position: event.global_position,
            aggregate_type: &event.aggregate_type,
            aggregate_id: &event.aggregate_id,
            sequence: event.sequence,
            event_type: &event.event_type,
            event_version: &event.event_version,
            tenant_id: event.metadata.get("tenant_id").and_then(|v| v.as_str()),
            conversation_id: conversation_id(event),
            occurred_at: event.metadata.get("occurred_at").and_then(|v| v.as_str()),
            payload: &event.payload,
            metadata: &event.metadata,
            hash: hex(&event.hash),
        }
    }
}

/// The conversation an event belongs to: named in every conversation and message event's payload
/// (`{"<EventType>": {"conversation_id": ...}}`); a conversation's own stream id ends with it.
pub fn conversation_id(event: &StoredEvent) -> Option<&str> {
    event
        .payload
        .get(&event.event_type)
        .and_then(|inner| inner.get("conversation_id"))
        .and_then(|v| v.as_str())
        .or_else(|| {
            (event.aggregate_type == "Conversation")
                .then(|| event.aggregate_id.split_once(':').map(|(_, id)| id))
                .flatten()
        })
}

/// The record key: the conversation, so that a conversation's events share a partition and keep
/// their order; events outside any conversation are keyed by their stream.
pub fn key(event: &StoredEvent) -> &str {
    conversation_id(event).unwrap_or(&event.aggregate_id)
}

/// A W3C `traceparent` continuing the trace of the request that caused the event; the span id is
/// derived from the event's position, so every record has its own and re-sends repeat it.
pub fn traceparent(event: &StoredEvent) -> Option<String> {
    let trace = event.metadata.get("trace_id")?.as_str()?;
    let valid = trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| {
        format!(
            "00-{}-{:016x}-01",
            trace.to_ascii_lowercase(),
            event.global_position.max(1)
        )
    })
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload: serde_json::Value,
    ) -> StoredEvent {
        StoredEvent {
            global_position: 42,
            tx_id: 7,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence: 1,
            event_type: event_type.to_owned(),
            event_version: "1.0".to_owned(),
            payload,
            metadata: json!({"tenant_id": "acme", "trace_id": "0af7651916cd43dd8448eb211c80319c", "occurred_at": "2026-11-29T10:00:00.000Z"}),
            hash: vec![0xab, 0x01],
        }
    }

    #[test]
    fn message_events_are_keyed_by_their_conversation() {
        let e = event(
            "Message",
            "acme:m1",
            "MessageSent",
            json!({"MessageSent": {"conversation_id": "c1"}}),
        );
        assert_eq!(key(&e), "c1");
        let envelope = serde_json::to_value(Envelope::of(&e)).unwrap_or_default();
        assert_eq!(envelope["conversation_id"], "c1");
        assert_eq!(envelope["tenant_id"], "acme");
        assert_eq!(envelope["position"], 42);
        assert_eq!(envelope["hash"], "ab01");
        assert_eq!(envelope["occurred_at"], "2026-11-29T10:00:00.000Z");
    }

    #[test]
    fn conversation_events_fall_back_to_their_stream_id() {
        let e = event("Conversation", "acme:c2", "Renamed", json!({"Renamed": {}}));
        assert_eq!(key(&e), "c2");
        let other = event("Upload", "acme:u1", "Started", json!({}));
        assert_eq!(key(&other), "acme:u1");
    }

    #[test]
    fn traceparent_continues_the_request_trace() {
        let e = event("Message", "acme:m1", "MessageSent", json!({}));
        assert_eq!(
            traceparent(&e).as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-000000000000002a-01")
        );
    }
}
