//! A goose load test of the Chat4All HTTP API with the users' reference mix: each simulated user
//! signs in with its own client (one token per user), opens a group with two others, then sends
//! ten messages for every conversation listing, thinking 1–5 s between requests.
//!
//! Credentials come from `CHAT4ALL_LOAD_CLIENTS`, a file of `chat4all clients create --json`
//! lines (one per line, read and write scopes); user N takes line N modulo their number, so
//! create at least as many as `--users`. Everything else is goose's own command line:
//!
//! ```sh
//! CHAT4ALL_LOAD_CLIENTS=clients.jsonl chat4all-load --host http://127.0.0.1:8080 \
//!     --users 100 --increase-rate 10 --run-time 60s --no-reset-metrics \
//!     --report-file bench-results/load.html
//! ```
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::Duration;

use goose::prelude::*;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Client {
    client_id: String,
    client_secret: String,
    user_id: String,
}

/// What a simulated user keeps between requests.
#[derive(Debug, Clone)]
struct Session {
    token: String,
    conversation: String,
    sent: u64,
}

static CLIENTS: OnceLock<Vec<Client>> = OnceLock::new();

fn clients() -> &'static [Client] {
    CLIENTS.get().map_or(&[], Vec::as_slice)
}

fn load_clients() -> Result<Vec<Client>, String> {
    let path = std::env::var("CHAT4ALL_LOAD_CLIENTS").map_err(|_| {
        "set CHAT4ALL_LOAD_CLIENTS to a file of `chat4all clients create --json` lines".to_owned()
    })?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let clients: Vec<Client> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| format!("{path} line {}: {e}", i + 1))
        })
        .collect::<Result<_, _>>()?;
    if clients.len() < 3 {
        return Err(format!(
            "{path}: at least 3 clients are needed (a group has 3 members)"
        ));
    }
    Ok(clients)
}

fn failure(what: &str, detail: impl std::fmt::Display) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(format!("{what}: {detail}")))
}

/// Sends `body` as JSON to `path` with the user's token, named `name` in the report.
async fn post_json(
    user: &mut GooseUser,
    name: &str,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, Box<TransactionError>> {
    let builder = user
        .get_request_builder(&GooseMethod::Post, path)?
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    let request = GooseRequest::builder()
        .name(name)
        .set_request_builder(builder)
        .build();
    let answer = user.request(request).await?;
    let response = answer.response.map_err(|e| failure(name, e))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| failure(name, e))?;
    if !status.is_success() {
        return Err(failure(name, format!("{status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| failure(name, e))
}

async fn sign_in(user: &mut GooseUser) -> TransactionResult {
    let all = clients();
    let index = user.weighted_users_index % all.len();
    let me = &all[index];
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", me.client_id.as_str()),
        ("client_secret", me.client_secret.as_str()),
    ];
    let answer = user.post_form("/auth/token", &form).await?;
    let response = answer.response.map_err(|e| failure("sign in", e))?;
    let token: serde_json::Value = response.json().await.map_err(|e| failure("sign in", e))?;
    let token = token["access_token"]
        .as_str()
        .ok_or_else(|| failure("sign in", "no access_token"))?
        .to_owned();
    let others = [
        &all[(index + 1) % all.len()].user_id,
        &all[(index + 2) % all.len()].user_id,
    ];
    let created = post_json(
        user,
        "create conversation",
        "/v1/conversations",
        &token,
        &serde_json::json!({
            "type": "group",
            "name": format!("load {index}"),
            "members": [me.user_id, others[0], others[1]],
        }),
    )
    .await?;
    let conversation = created["conversation_id"]
        .as_str()
        .ok_or_else(|| failure("create conversation", "no conversation_id"))?
        .to_owned();
    user.set_session_data(Session {
        token,
        conversation,
        sent: 0,
    });
    Ok(())
}

async fn send_message(user: &mut GooseUser) -> TransactionResult {
    let Some(session) = user.get_session_data::<Session>().cloned() else {
        return Err(failure("send", "not signed in"));
    };
    post_json(
        user,
        "send message",
        "/v1/messages",
        &session.token,
        &serde_json::json!({
            "conversation_id": session.conversation,
            "content": {"type": "text", "text": format!("load message {}", session.sent)},
        }),
    )
    .await?;
    if let Some(session) = user.get_session_data_mut::<Session>() {
        session.sent += 1;
    }
    Ok(())
}

async fn list_conversations(user: &mut GooseUser) -> TransactionResult {
    let Some(token) = user.get_session_data::<Session>().map(|s| s.token.clone()) else {
        return Err(failure("list", "not signed in"));
    };
    let builder = user
        .get_request_builder(&GooseMethod::Get, "/v1/conversations?limit=20")?
        .bearer_auth(token);
    let request = GooseRequest::builder()
        .name("list conversations")
        .set_request_builder(builder)
        .build();
    user.request(request).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    match load_clients() {
        Ok(loaded) => {
            let _ = CLIENTS.set(loaded);
        }
        Err(e) => {
            eprintln!("chat4all-load: {e}");
            std::process::exit(2);
        }
    }
    GooseAttack::initialize()?
        .register_scenario(
            scenario!("Chat")
                .set_wait_time(Duration::from_secs(1), Duration::from_secs(5))?
                .register_transaction(transaction!(sign_in).set_on_start())
                .register_transaction(transaction!(send_message).set_weight(10)?)
                .register_transaction(transaction!(list_conversations).set_weight(1)?),
        )
        .execute()
        .await?;
    Ok(())
}
