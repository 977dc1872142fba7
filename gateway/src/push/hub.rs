//! One Redis pub/sub connection per gateway instance, shared by all of its sockets.
//!
//! Sockets register interest in channels; the hub subscribes to a channel when its first local
//! socket needs it and unsubscribes when the last one leaves (reference counting), so Redis sees
//! one subscription per instance, not per socket. Every change goes through the hub's own task,
//! in order, so a subscribe racing an unsubscribe of the same channel cannot leave it
//! unsubscribed. After a lost connection the hub reconnects and subscribes to every channel
//! still wanted; what was published meanwhile is lost to Redis, and sockets recover it from the
//! read models (Redis pub/sub is fire-and-forget by design).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// A channel name, shared by every socket a frame goes to.
pub type Subject = Arc<str>;

/// A published frame, parsed once on arrival and shared by every local socket it goes to: the
/// routing facts each socket checks, and the frame as clients get it, ready to send.
#[derive(Debug)]
pub struct Published {
    pub kind: String,
    pub tenant: Option<String>,
    pub conversation: Option<uuid::Uuid>,
    /// The user the event is about (`user_id`).
    pub user: Option<String>,
    pub seq: Option<i64>,
    /// A join's `last_seq`: where the new member's part of the conversation starts.
    pub last_seq: Option<i64>,
    pub created_at: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// The revoked token of an internal revocation frame.
    pub jti: Option<String>,
    /// `{"type", "timestamp", "data"}` with `tenant_id` left out (user ids are only unique
    /// within a tenant, and the tenant is the client's own).
    pub frame: Utf8Bytes,
}

impl Published {
    /// `None` for a payload that is not a JSON frame.
    pub fn parse(payload: &str) -> Option<Self> {
        let mut value: serde_json::Value = serde_json::from_str(payload).ok()?;
        let kind = value.get("type")?.as_str()?.to_owned();
        let mut data = value
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_default();
        let text = |data: &serde_json::Value, key: &str| {
            data.get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let tenant = data
            .as_object_mut()
            .and_then(|o| o.remove("tenant_id"))
            .and_then(|t| t.as_str().map(str::to_owned));
        let published = Self {
            conversation: data
                .get("conversation_id")
                .and_then(serde_json::Value::as_str)
                .and_then(|c| uuid::Uuid::parse_str(c).ok()),
            user: text(&data, "user_id"),
            seq: data.get("seq").and_then(serde_json::Value::as_i64),
            last_seq: data.get("last_seq").and_then(serde_json::Value::as_i64),
            created_at: text(&data, "created_at")
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()),
            jti: text(&data, "jti"),
            frame: Utf8Bytes::from(
                serde_json::json!({
                    "type": kind,
                    "timestamp": value.get("timestamp"),
                    "data": data,
                })
                .to_string(),
            ),
            kind,
            tenant,
        };
        Some(published)
    }
}

const RECONNECT: Duration = Duration::from_millis(500);
/// How long a subscription may take before the socket goes on without the acknowledgement (it
/// is restored with the others when the connection comes back).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A local socket's end: where its frames go, and how it is told it fell behind.
#[derive(Clone)]
pub struct Subscriber {
    pub id: u64,
    pub queue: mpsc::Sender<(Subject, Arc<Published>)>,
    pub slow: CancellationToken,
}

enum Control {
    Subscribe {
        subscriber: Subscriber,
        channels: Vec<String>,
        done: oneshot::Sender<()>,
    },
    Unsubscribe {
        id: u64,
        channels: Vec<String>,
    },
}

/// The handle sockets use; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    prefix: String,
    commands: mpsc::UnboundedSender<Control>,
    publisher: Option<redis::aio::ConnectionManager>,
}

impl Hub {
    /// Starts the hub's task on `client`; it runs until `stop`.
    pub fn start(
        client: redis::Client,
        publisher: Option<redis::aio::ConnectionManager>,
        prefix: String,
        stop: CancellationToken,
    ) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(client, receiver, stop));
        Self {
            prefix,
            commands,
            publisher,
        }
    }

    /// The full Redis channel name of `name` (`conversation:{id}`, `user:{id}`).
    pub fn subject(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Registers `subscriber` on `channels`; returns once Redis has acknowledged them (or the
    /// hub is not connected, in which case they are subscribed on reconnection).
    pub async fn subscribe(&self, subscriber: Subscriber, channels: Vec<String>) {
        let (done, acknowledged) = oneshot::channel();
        if self
            .commands
            .send(Control::Subscribe {
                subscriber,
                channels,
                done,
            })
            .is_ok()
        {
            let _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT * 2, acknowledged).await;
        }
    }

    pub fn unsubscribe(&self, id: u64, channels: Vec<String>) {
        let _ = self.commands.send(Control::Unsubscribe { id, channels });
    }

    /// Publishes an ephemeral frame (typing) to every instance.
    pub async fn publish(&self, channel: &str, frame: &str) -> redis::RedisResult<()> {
        let Some(publisher) = &self.publisher else {
            return Ok(());
        };
        let mut publisher = publisher.clone();
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(frame)
            .query_async::<i64>(&mut publisher)
            .await
            .map(drop)
    }
}

#[derive(Default)]
struct Registry {
    channels: HashMap<String, HashMap<u64, Subscriber>>,
}

impl Registry {
    /// Adds the subscriber; returns the channels nobody here listened to before.
    fn add(&mut self, subscriber: &Subscriber, channels: Vec<String>) -> Vec<String> {
        let mut fresh = Vec::new();
        for channel in channels {
            let listeners = self.channels.entry(channel.clone()).or_default();
            if listeners.is_empty() {
                fresh.push(channel);
            }
            listeners.insert(subscriber.id, subscriber.clone());
        }
        fresh
    }

    /// Removes the subscriber; returns the channels nobody here listens to any more.
    fn remove(&mut self, id: u64, channels: Vec<String>) -> Vec<String> {
        let mut gone = Vec::new();
        for channel in channels {
            if let Some(listeners) = self.channels.get_mut(&channel) {
                listeners.remove(&id);
                if listeners.is_empty() {
                    self.channels.remove(&channel);
                    gone.push(channel);
                }
            }
        }
        gone
    }

    fn dispatch(&mut self, channel: &str, payload: &str) {
        let Some(listeners) = self.channels.get_mut(channel) else {
            return;
        };
        let Some(payload) = Published::parse(payload).map(Arc::new) else {
            tracing::debug!(channel, "push: ignored a payload that is not a frame");
            return;
        };
        let channel = Subject::from(channel);
        listeners.retain(|_, subscriber| {
            match subscriber
                .queue
                .try_send((channel.clone(), payload.clone()))
            {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // The socket closes itself and its client resumes later; its queue stays
                    // bounded meanwhile.
                    subscriber.slow.cancel();
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

async fn connect(client: &redis::Client) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    Ok(client.get_async_pubsub().await?.split())
}

async fn run(
    client: redis::Client,
    mut commands: mpsc::UnboundedReceiver<Control>,
    stop: CancellationToken,
) {
    let mut registry = Registry::default();
    let mut connection: Option<(PubSubSink, PubSubStream)> = None;
    let mut reconnect = tokio::time::interval(RECONNECT);
    reconnect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if connection.is_none() {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = reconnect.tick() => {}
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    // Not connected: bookkeeping only; the channels are subscribed on reconnection.
                    match command {
                        Control::Subscribe { subscriber, channels, done } => {
                            registry.add(&subscriber, channels);
                            let _ = done.send(());
                        }
                        Control::Unsubscribe { id, channels } => {
                            registry.remove(id, channels);
                        }
                    }
                    continue;
                }
            }
            match connect(&client).await {
                Ok((mut sink, stream)) => {
                    let wanted: Vec<&String> = registry.channels.keys().collect();
                    if !wanted.is_empty() {
                        if let Err(e) = sink.subscribe(wanted).await {
                            tracing::warn!("restoring push subscriptions failed: {e}");
                            continue;
                        }
                    }
                    tracing::info!(
                        channels = registry.channels.len(),
                        "push: subscribed to Redis"
                    );
                    metrics::gauge!("chat4all_ws_redis_connected").set(1.0);
                    connection = Some((sink, stream));
                }
                Err(e) => {
                    tracing::debug!("push: Redis unavailable: {e}");
                    continue;
                }
            }
        }
        let Some((sink, stream)) = connection.as_mut() else {
            continue;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            message = stream.next() => {
                let Some(message) = message else {
                    tracing::warn!("push: lost the Redis connection; reconnecting");
                    metrics::gauge!("chat4all_ws_redis_connected").set(0.0);
                    connection = None;
                    continue;
                };
                let channel = message.get_channel_name().to_owned();
                let Ok(payload) = message.get_payload::<String>() else { continue };
                registry.dispatch(&channel, &payload);
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                let failed = match command {
                    Control::Subscribe { subscriber, channels, done } => {
                        let fresh = registry.add(&subscriber, channels);
                        let result = if fresh.is_empty() {
                            Ok(Ok(()))
                        } else {
                            tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&fresh)).await
                        };
                        let _ = done.send(());
                        !matches!(result, Ok(Ok(())))
                    }
                    Control::Unsubscribe { id, channels } => {
                        let gone = registry.remove(id, channels);
                        if gone.is_empty() {
                            false
                        } else {
                            !matches!(
                                tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.unsubscribe(&gone)).await,
                                Ok(Ok(()))
                            )
                        }
                    }
                };
                if failed {
                    // Start over: reconnecting subscribes to exactly what the registry wants.
                    tracing::warn!("push: a subscription change failed; reconnecting to Redis");
                    metrics::gauge!("chat4all_ws_redis_connected").set(0.0);
                    connection = None;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Published;

    #[test]
    fn a_frame_is_parsed_once_into_its_routing_facts_and_the_tenant_is_left_out() {
        let published = Published::parse(
            r#"{"type":"message.created","timestamp":"2026-11-29T10:00:00.000Z","data":{
                "tenant_id":"acme","conversation_id":"01a22729-9c33-74a5-a327-f4f1b3121518",
                "seq":7,"user_id":"bob","created_at":"2026-11-29T10:00:00.000Z","text":"hi"}}"#,
        )
        .unwrap();
        assert_eq!(published.kind, "message.created");
        assert_eq!(published.tenant.as_deref(), Some("acme"));
        assert_eq!(published.seq, Some(7));
        assert_eq!(published.user.as_deref(), Some("bob"));
        assert!(published.conversation.is_some() && published.created_at.is_some());
        let frame: serde_json::Value = serde_json::from_str(published.frame.as_str()).unwrap();
        assert_eq!(frame["type"], "message.created");
        assert_eq!(frame["timestamp"], "2026-11-29T10:00:00.000Z");
        assert_eq!(frame["data"]["text"], "hi");
        assert!(frame["data"].get("tenant_id").is_none());

        assert!(Published::parse("not json").is_none());
        assert!(Published::parse(r#"{"data": {}}"#).is_none());
        assert!(Published::parse("[1]").is_none());
    }
}
