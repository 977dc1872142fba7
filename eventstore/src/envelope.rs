//! The record every event becomes on the topic: a JSON envelope, keyed by conversation.
//!
//! Envelope value: `{position, aggregate_type, aggregate_id, sequence,
//! event_type, event_version, tenant_id, conversation_id, occurred_at, payload, metadata, hash}`,
//! with `payload` and `metadata` exactly as stored and `hash` in hex. The relay writes it
//! ([`encode`]); every consumer reads it back as an [`Envelope`], and replay builds the same
//! [`Envelope`] from a stored row, so both paths feed consumers one type.

use std::io::Write;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::StoredEvent;

/// An event as consumers see it: decoded from a record of the events topic, or built from a
/// stored row by replay.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// Empty for an event stored without a tenant (none of the engine's own commands does that).
    #[serde(deserialize_with = "null_as_empty")]
    pub tenant_id: String,
    pub conversation_id: Option<String>,
    pub occurred_at: Option<String>,
    /// Kept as JSON text, so that a consumer parses it once, straight into its own event type.
    pub payload: Box<RawValue>,
    pub metadata: Box<RawValue>,
    /// The event's link in its stream's hash chain, in hex.
    pub hash: String,
}

fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

impl Envelope {
    /// Reads a record's value.
    ///
    /// # Errors
    /// The bytes are not an envelope.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The envelope the relay would publish for `event`, without the round trip through bytes.
    ///
    /// # Errors
    /// The stored payload or metadata is not JSON (the store's `jsonb` columns rule that out).
    pub fn from_stored(event: StoredEvent) -> Result<Self, serde_json::Error> {
        Ok(Self {
            position: event.global_position,
            hash: hex(&event.hash),
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            tenant_id: event.tenant_id.unwrap_or_default(),
            conversation_id: event.conversation_id,
            occurred_at: event.occurred_at,
            payload: RawValue::from_string(event.payload)?,
            metadata: RawValue::from_string(event.metadata)?,
        })
    }
}

/// Writes the envelope of `event` as JSON. The stored payload and metadata are spliced in as
/// they are (they are JSON already); everything else goes through serde's string escaping.
pub fn encode(event: &StoredEvent, out: &mut Vec<u8>) {
    fn field<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) {
        // Writing to a Vec cannot fail, and these values (strings, integers, options of them)
        // always serialise.
        let _ = write!(out, "\"{name}\":");
        let _ = serde_json::to_writer(&mut *out, value);
        out.push(b',');
    }
    out.push(b'{');
    field(out, "position", &event.global_position);
    field(out, "aggregate_type", &event.aggregate_type);
    field(out, "aggregate_id", &event.aggregate_id);
    field(out, "sequence", &event.sequence);
    field(out, "event_type", &event.event_type);
    field(out, "event_version", &event.event_version);
    field(out, "tenant_id", &event.tenant_id);
    field(out, "conversation_id", &event.conversation_id);
    field(out, "occurred_at", &event.occurred_at);
    out.extend_from_slice(b"\"payload\":");
    out.extend_from_slice(event.payload.as_bytes());
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(event.metadata.as_bytes());
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hex(&event.hash).as_bytes());
    out.extend_from_slice(b"\"}");
}

/// The record key: the conversation, so that a conversation's events share a partition and keep
/// their order; events outside any conversation are keyed by their stream.
pub fn key(event: &StoredEvent) -> &str {
    event
        .conversation_id
        .as_deref()
        .unwrap_or(&event.aggregate_id)
}

/// A W3C `traceparent` continuing the trace of the request that caused the event; the span id is
/// derived from the event's position, so every record has its own and re-sends repeat it.
pub fn traceparent(event: &StoredEvent) -> Option<String> {
    let trace = event.trace_id.as_deref()?;
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
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(conversation: Option<&str>) -> StoredEvent {
        StoredEvent {
            global_position: 42,
            tx_id: 7,
            aggregate_type: "Message".to_owned(),
            aggregate_id: "acme:m1".to_owned(),
            sequence: 1,
            event_type: "MessageSent".to_owned(),
            event_version: "1.0".to_owned(),
            payload: r#"{"MessageSent": {"conversation_id": "c1", "text": "a \"quoted\" word"}}"#
                .to_owned(),
            metadata: r#"{"tenant_id": "acme"}"#.to_owned(),
            tenant_id: Some("acme".to_owned()),
            conversation_id: conversation.map(str::to_owned),
            occurred_at: Some("2026-11-29T10:00:00.000Z".to_owned()),
            trace_id: Some("0AF7651916CD43DD8448EB211C80319C".to_owned()),
            hash: vec![0xab, 0x01],
        }
    }

    #[test]
    fn the_envelope_is_json_with_the_stored_payload_inside() {
        let mut out = Vec::new();
        encode(&event(Some("c1")), &mut out);
        let envelope: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(
            envelope,
            json!({
                "position": 42, "aggregate_type": "Message", "aggregate_id": "acme:m1",
                "sequence": 1, "event_type": "MessageSent", "event_version": "1.0",
                "tenant_id": "acme", "conversation_id": "c1",
                "occurred_at": "2026-11-29T10:00:00.000Z",
                "payload": {"MessageSent": {"conversation_id": "c1", "text": "a \"quoted\" word"}},
                "metadata": {"tenant_id": "acme"}, "hash": "ab01",
            })
        );
    }

    #[test]
    fn an_encoded_envelope_decodes_to_what_replay_builds_from_the_row() {
        let stored = event(Some("c1"));
        let mut out = Vec::new();
        encode(&stored, &mut out);
        let decoded = Envelope::decode(&out).unwrap_or_else(|e| panic!("{e}"));
        let built = Envelope::from_stored(stored).unwrap_or_else(|e| panic!("{e}"));
        for envelope in [&decoded, &built] {
            assert_eq!(envelope.position, 42);
            assert_eq!(envelope.aggregate_id, "acme:m1");
            assert_eq!(envelope.tenant_id, "acme");
            assert_eq!(envelope.conversation_id.as_deref(), Some("c1"));
            assert_eq!(envelope.hash, "ab01");
        }
        let payload =
            |e: &Envelope| serde_json::from_str::<serde_json::Value>(e.payload.get()).ok();
        assert_eq!(payload(&decoded), payload(&built));
        assert_eq!(
            payload(&decoded).unwrap_or_default()["MessageSent"]["text"],
            "a \"quoted\" word"
        );
    }

    #[test]
    fn an_event_without_tenant_decodes_with_an_empty_one() {
        let mut stored = event(None);
        stored.tenant_id = None;
        let mut out = Vec::new();
        encode(&stored, &mut out);
        let decoded = Envelope::decode(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.tenant_id, "");
        assert_eq!(decoded.conversation_id, None);
        assert!(Envelope::decode(b"{\"position\": 1}").is_err());
    }

    #[test]
    fn records_are_keyed_by_conversation_or_else_stream() {
        assert_eq!(key(&event(Some("c1"))), "c1");
        assert_eq!(key(&event(None)), "acme:m1");
    }

    #[test]
    fn traceparent_continues_the_request_trace() {
        assert_eq!(
            traceparent(&event(None)).as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-000000000000002a-01")
        );
        let mut untraced = event(None);
        untraced.trace_id = Some("not-a-trace".to_owned());
        assert_eq!(traceparent(&untraced), None);
    }
}
