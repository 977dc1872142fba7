//! WebSocket clients of a test gateway: connecting (by `?token=` or by header), reading frames
//! with a deadline, and waiting until the read models have applied a position.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for a frame it expects.
const FRAME_DEADLINE: Duration = Duration::from_secs(30);

impl TestApp {
    /// The `ws://` URL of `/ws` with `query` (e.g. `?token=...`).
    pub fn ws_url(&self, query: &str) -> String {
        format!("{}/ws{query}", self.base.replacen("http://", "ws://", 1))
    }

    /// A socket authenticated with `?token=`, past its `connection.established` frame.
    pub async fn connect(&self, token: &str) -> Socket {
        let (mut socket, _) =
            tokio_tungstenite::connect_async(self.ws_url(&format!("?token={token}")))
                .await
                .unwrap();
        let first = next_frame(&mut socket).await;
        assert_eq!(first["type"], "connection.established", "{first}");
        socket
    }

    /// The handshake answered with `authorization` as the `Authorization` header (no query).
    pub async fn handshake_with_header(
        &self,
        authorization: &str,
    ) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        let mut request = self.ws_url("").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", authorization.parse().unwrap());
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(socket, _)| socket)
    }

    /// Waits until the read models have applied `position` (and everything before it in its
    /// conversation), across projector restarts: a `projection_lagging` answer is asked again.
    pub async fn until_applied(&self, token: &str, position: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self
                .get_as(&format!("/v1/conversations?min_position={position}"), token)
                .await;
            if answer.status == StatusCode::OK {
                return;
            }
            assert_eq!(
                answer.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{:?}",
                answer.body
            );
            assert!(
                Instant::now() < deadline,
                "position {position} was never applied"
            );
        }
    }
}

/// The next JSON frame from the server (pings skipped); panics when none comes in time.
pub async fn next_frame(socket: &mut Socket) -> Value {
    let deadline = Instant::now() + FRAME_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("no frame in time")
            .expect("the socket closed")
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] != "ping" {
                return frame;
            }
        }
    }
}

/// Every frame up to and including the first that `last` matches.
pub async fn frames_until(socket: &mut Socket, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(socket).await;
        let done = last(&frame);
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// Whether `frame` is a `message.created` of `conversation` with text `text`.
pub fn is_message(frame: &Value, conversation: &str, text: &str) -> bool {
    frame["type"] == "message.created"
        && frame["data"]["conversation_id"] == conversation
        && frame["data"]["content"]["text"] == text
}

/// The `seq`s of the `message.created` frames of `conversation` among `frames`, in order.
pub fn created_seqs(frames: &[Value], conversation: &str) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f["type"] == "message.created" && f["data"]["conversation_id"] == conversation)
        .map(|f| f["data"]["seq"].as_i64().unwrap())
        .collect()
}
