//! One WebSocket connection: subscriptions, ordering, resume, liveness and limits.
//!
//! Everything a socket does happens in its own task, one step at a time, so the order in which
//! frames reach the client is the order in which this task decided to send them. Messages are
//! tracked per conversation by `seq`: a frame at or below what the client already has is a
//! duplicate and dropped; a frame beyond the next expected `seq` means something was lost on the
//! way (Redis pub/sub is fire-and-forget), and the gap is filled from the read models first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat4all_projections::{frames, MessagesFrom};
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warp::hyper::upgrade::Upgraded;

use super::hub::{Published, Subject, Subscriber};
use super::{Push, CLOSE_MALFORMED, CLOSE_RATE, CLOSE_UNAUTHORIZED};
use crate::auth::Principal;

/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages replayed per conversation on `resume` (or to fill a gap) before the client is told
/// to refetch through the query API instead.
const REPLAY_LIMIT: usize = 1_000;
const PAGE: i64 = 100;
/// Standard close code for "try again later": the client should reconnect and resume.
const CLOSE_SLOW: u16 = 1013;
const CLOSE_IDLE: u16 = 1001;

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// Why a connection ends, and the close frame it gets.
struct Close(u16, &'static str);

struct Connection {
    push: Arc<Push>,
    principal: Principal,
    id: u64,
    subscriber: Subscriber,
    sink: futures::stream::SplitSink<Socket, Message>,
    /// Conversations the user is a member of, as far as this socket knows.
    conversations: HashSet<Uuid>,
    /// The last `seq` the client has of each conversation, where known.
    last_seq: HashMap<Uuid, i64>,
    /// The full Redis channel name of the user's own channel.
    user_channel: String,
    /// Full Redis channel names this socket is registered on.
    channels: HashSet<String>,
    frames: FrameBudget,
}

/// The client's frame allowance: `per_minute`, refilled continuously.
struct FrameBudget {
    per_minute: f64,
    tokens: f64,
    at: Instant,
}

impl FrameBudget {
    fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            tokens: f64::from(per_minute),
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        self.tokens = (self.tokens + refill).min(self.per_minute);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub async fn serve(socket: Socket, principal: Principal, id: u64, push: Arc<Push>) {
    let (sink, mut stream) = socket.split();
    let (queue, mut incoming) =
        mpsc::channel::<(Subject, Arc<Published>)>(push.config.send_queue_frames.max(1));
    let slow = CancellationToken::new();
    let subscriber = Subscriber {
        id,
        queue,
        slow: slow.clone(),
    };
    let frames = FrameBudget::new(push.config.frames_per_minute);
    let user_channel = push
        .hub
        .subject(&frames::user_subject(principal.user.as_str()));
    let mut connection = Connection {
        user_channel,
        push: push.clone(),
        principal,
        id,
        subscriber,
        sink,
        conversations: HashSet::new(),
        last_seq: HashMap::new(),
        channels: HashSet::new(),
        frames,
    };
    metrics::gauge!("chat4all_ws_connections").increment(1.0);
    let close = connection.run(&mut stream, &mut incoming, &slow).await;
    if let Some(Close(code, reason)) = close {
        if code == CLOSE_SLOW {
            metrics::counter!("chat4all_ws_slow_consumer_closes_total").increment(1);
        }
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT,
            connection.sink.send(close_frame(code, reason)),
        )
        .await;
    }
    let _ = connection.sink.close().await;
    push.hub
        .unsubscribe(id, connection.channels.drain().collect());
    push.release(&connection.principal, id);
    metrics::gauge!("chat4all_ws_connections").decrement(1.0);
}

impl Connection {
    fn user(&self) -> &str {
        self.principal.user.as_str()
    }

    fn tenant(&self) -> &str {
        self.principal.tenant.as_str()
    }

    async fn send(&mut self, text: String) -> Result<(), Close> {
        self.send_frame(Utf8Bytes::from(text)).await
    }

    /// Sends a frame as it is (published frames are shared by every socket they go to).
    async fn send_frame(&mut self, frame: Utf8Bytes) -> Result<(), Close> {
        let timeout = Duration::from_secs(self.push.config.send_timeout_secs.max(1));
        match tokio::time::timeout(timeout, self.sink.send(Message::Text(frame))).await {
            Ok(Ok(())) => {
                metrics::counter!("chat4all_ws_frames_sent_total").increment(1);
                Ok(())
            }
            Ok(Err(_)) => Err(Close(1006, "")),
            Err(_) => Err(Close(CLOSE_SLOW, "too slow to receive")),
        }
    }

    async fn subscribe(&mut self, names: Vec<String>) {
        let channels: Vec<String> = names
            .iter()
            .map(|n| self.push.hub.subject(n))
            .filter(|c| !self.channels.contains(c))
            .collect();
        if channels.is_empty() {
            return;
        }
        self.channels.extend(channels.iter().cloned());
        self.push
            .hub
            .subscribe(self.subscriber.clone(), channels)
            .await;
    }

    fn unsubscribe(&mut self, name: &str) {
        let channel = self.push.hub.subject(name);
        if self.channels.remove(&channel) {
            self.push.hub.unsubscribe(self.id, vec![channel]);
        }
    }

    async fn run(
        &mut self,
        stream: &mut futures::stream::SplitStream<Socket>,
        incoming: &mut mpsc::Receiver<(Subject, Arc<Published>)>,
        slow: &CancellationToken,
    ) -> Option<Close> {
        // The user's own channel first, then the read models: a conversation joined in between
        // is either already in the read models or announced on the channel.
        let user_channel = frames::user_subject(self.user());
        self.subscribe(vec![user_channel]).await;
        let conversations = match self
            .push
            .queries
            .member_conversations(self.tenant(), self.user())
            .await
        {
            Ok(conversations) => conversations,
            Err(e) => {
                tracing::warn!("push: loading the user's conversations failed: {e}");
                return Some(Close(1011, "temporarily unavailable"));
            }
        };
        self.conversations.extend(conversations.iter().copied());
        self.subscribe(
            conversations
                .iter()
                .map(|c| frames::conversation_subject(*c))
                .collect(),
        )
        .await;
        let established = frames::connection_established(
            Utc::now(),
            self.user(),
            Uuid::new_v4(),
            &self.push.instance,
        );
        if let Err(close) = self.send(established.to_string()).await {
            return Some(close);
        }

        let expires_in = Duration::from_secs(
            self.principal
                .expires_at
                .saturating_sub(crate::auth::now_secs()),
        );
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let ping_every = Duration::from_secs(self.push.config.ping_interval_secs.max(1));
        let idle_close = Duration::from_secs(self.push.config.idle_timeout_secs.max(1));
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut heard = Instant::now();
        let stop = self.push.stop.clone();
        loop {
            let step = tokio::select! {
                () = stop.cancelled() => Err(Close(1001, "server shutting down")),
                () = slow.cancelled() => Err(Close(CLOSE_SLOW, "too slow to receive")),
                () = &mut expiry => Err(Close(CLOSE_UNAUTHORIZED, "token expired")),
                _ = ping.tick() => {
                    if heard.elapsed() >= idle_close {
                        Err(Close(CLOSE_IDLE, "no frame from the client in time"))
                    } else {
                        self.send(frames::ping(Utc::now()).to_string()).await
                    }
                }
                received = stream.next() => match received {
                    None | Some(Err(_)) => return None,
                    Some(Ok(message)) => {
                        heard = Instant::now();
                        self.on_client_frame(message).await
                    }
                },
                published = incoming.recv() => match published {
                    Some((channel, payload)) => self.on_published(&channel, &payload).await,
                    None => Err(Close(1011, "")),
                },
            };
            if let Err(close) = step {
                return Some(close);
            }
        }
    }

    async fn on_client_frame(&mut self, message: Message) -> Result<(), Close> {
        if message.is_close() {
            return Err(Close(1000, ""));
        }
        if message.is_ping() || message.is_pong() {
            return Ok(());
        }
        if !self.frames.take() {
            return Err(Close(CLOSE_RATE, "too many frames"));
        }
        let Message::Text(text) = message else {
            return Err(Close(CLOSE_MALFORMED, "frames must be JSON text"));
        };
        let Ok(Value::Object(frame)) = serde_json::from_str::<Value>(text.as_str()) else {
            return Err(Close(CLOSE_MALFORMED, "a frame must be a JSON object"));
        };
        let data = frame.get("data").cloned().unwrap_or(Value::Null);
        match frame.get("type").and_then(Value::as_str) {
            Some("pong" | "ping") => Ok(()),
            Some("resume") => self.resume(&data).await,
            Some("typing") => self.typing(&data).await,
            _ => Err(Close(CLOSE_MALFORMED, "unknown frame type")),
        }
    }

    async fn typing(&mut self, data: &Value) -> Result<(), Close> {
        let Some(conversation) = data
            .get("conversation_id")
            .and_then(Value::as_str)
            .and_then(|c| Uuid::parse_str(c).ok())
        else {
            return Err(Close(CLOSE_MALFORMED, "typing needs a conversation_id"));
        };
        if !self.conversations.contains(&conversation) {
            let error = frames::error(
                Utc::now(),
                "not_a_member",
                "typing is for members of the conversation",
            );
            return self.send(error.to_string()).await;
        }
        let typing = frames::typing(
            Utc::now(),
            &frames::Typing {
                conversation_id: conversation,
                user_id: self.user(),
                tenant_id: self.tenant(),
            },
        );
        let subject = self.push.hub.subject(&typing.subject);
        if let Err(e) = self
            .push
            .hub
            .publish(&subject, &typing.frame.to_string())
            .await
        {
            tracing::debug!("push: publishing typing failed: {e}");
        }
        Ok(())
    }

    async fn resume(&mut self, data: &Value) -> Result<(), Close> {
        let Some(positions) = data.get("positions").and_then(Value::as_object) else {
            return Err(Close(CLOSE_MALFORMED, "resume needs positions"));
        };
        let mut wanted = Vec::with_capacity(positions.len());
        for (conversation, seq) in positions {
            let (Ok(conversation), Some(seq)) = (Uuid::parse_str(conversation), seq.as_i64())
            else {
                return Err(Close(
                    CLOSE_MALFORMED,
                    "positions map conversation ids to seq numbers",
                ));
            };
            wanted.push((conversation, seq.max(0)));
        }
        let mut recovered = true;
        let mut replayed = 0;
        for (conversation, seq) in wanted {
            if !self.conversations.contains(&conversation) {
                // Not (or no longer) a member: nothing to replay, and nothing to reveal.
                recovered = false;
                continue;
            }
            let known = self.last_seq.get(&conversation).copied().unwrap_or(0);
            self.last_seq.insert(conversation, seq.max(known));
            let (sent, complete) = self.fill(conversation, seq, None).await?;
            replayed += sent;
            recovered &= complete;
        }
        let replayed = u64::try_from(replayed).unwrap_or(u64::MAX);
        let completed = frames::resume_completed(Utc::now(), recovered, replayed);
        self.send(completed.to_string()).await
    }

    /// Sends the messages of `conversation` after `after` (below `before`, if given) from the
    /// read models, at most [`REPLAY_LIMIT`]; returns how many it sent, and whether that was
    /// all of them (false when there were more, or the read models could not answer).
    async fn fill(
        &mut self,
        conversation: Uuid,
        mut after: i64,
        before: Option<i64>,
    ) -> Result<(usize, bool), Close> {
        let mut sent = 0;
        loop {
            let page = self
                .push
                .queries
                .messages(
                    self.tenant(),
                    self.user(),
                    conversation,
                    MessagesFrom::After(after),
                    PAGE,
                )
                .await;
            let Ok(Some(page)) = page else {
                return Ok((sent, false));
            };
            let more = page.next_cursor.is_some();
            for message in page.items {
                let seq = message.seq;
                if before.is_some_and(|b| seq >= b) {
                    return Ok((sent, true));
                }
                after = seq;
                if seq <= self.last_seq.get(&conversation).copied().unwrap_or(0) {
                    continue;
                }
                // Only a message beyond the limit makes the replay incomplete.
                if sent >= REPLAY_LIMIT {
                    return Ok((sent, false));
                }
                self.last_seq.insert(conversation, seq);
                self.send(frames::message_created(Utc::now(), &message).to_string())
                    .await?;
                sent += 1;
            }
            if !more {
                return Ok((sent, true));
            }
        }
    }

    async fn on_published(&mut self, channel: &str, published: &Published) -> Result<(), Close> {
        // Channels are per conversation and per user id; a user id is only unique in its tenant.
        if published.tenant.as_deref() != Some(self.tenant()) {
            return Ok(());
        }
        let about_me = published.user.as_deref() == Some(self.user());
        let on_user_channel = channel == self.user_channel;
        match (published.kind.as_str(), published.conversation) {
            ("message.created", Some(conversation)) => {
                let Some(seq) = published.seq else {
                    return Ok(());
                };
                if !self.conversations.contains(&conversation) {
                    return Ok(());
                }
                if let Some(&last) = self.last_seq.get(&conversation) {
                    if seq <= last {
                        return Ok(());
                    }
                    if seq > last + 1 {
                        // Lost on the way: what is missing is in the read models already,
                        // since a message is published only after its batch committed.
                        self.fill(conversation, last, Some(seq)).await?;
                    }
                }
                self.last_seq.insert(conversation, seq);
                if let Some(created) = published.created_at {
                    let age = Utc::now().signed_duration_since(created);
                    if let Ok(age) = age.to_std() {
                        metrics::histogram!("chat4all_push_latency_seconds")
                            .record(age.as_secs_f64());
                    }
                }
            }
            ("conversation.created" | "conversation.member_joined", Some(conversation)) => {
                if !about_me {
                    // Others joining: only on the conversation's channel.
                } else if on_user_channel {
                    if self.conversations.insert(conversation) {
                        self.subscribe(vec![frames::conversation_subject(conversation)])
                            .await;
                        // Messages after the creation or the join may have been published
                        // before this socket listened: the client gets them from the read
                        // models, after the creation or join itself.
                        let from = published.last_seq.unwrap_or(0);
                        self.send_frame(published.frame.clone()).await?;
                        self.last_seq.insert(conversation, from);
                        self.fill(conversation, from, None).await?;
                        return Ok(());
                    }
                } else {
                    // The user's own join also arrives on the user's channel.
                    return Ok(());
                }
            }
            ("conversation.member_left", Some(conversation)) if about_me => {
                // The user's own leave also arrives on the user's channel; that copy counts.
                if !on_user_channel {
                    return Ok(());
                }
                self.conversations.remove(&conversation);
                self.last_seq.remove(&conversation);
                self.unsubscribe(&frames::conversation_subject(conversation));
            }
            ("typing", _) if about_me => return Ok(()),
            (crate::auth::revocations::REVOKED_FRAME, _) => {
                // Internal: never forwarded. Only this socket's own token matters.
                if published.jti.as_deref() == Some(self.principal.jti.as_str()) {
                    return Err(Close(CLOSE_UNAUTHORIZED, "token revoked"));
                }
                return Ok(());
            }
            _ => {}
        }
        // A conversation the user is not (or no longer) in: its channel still delivers what
        // was published before the unsubscription took effect, which is not for this user.
        if let Some(conversation) = published.conversation {
            let own_leave = published.kind == "conversation.member_left" && about_me;
            if !own_leave && !self.conversations.contains(&conversation) {
                return Ok(());
            }
        }
        self.send_frame(published.frame.clone()).await
    }
}

/// Closes a socket that may not be served, with `code`.
pub async fn refuse(mut socket: Socket, code: u16, reason: &'static str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(close_frame(code, reason))).await;
    let _ = socket.close(None).await;
}
