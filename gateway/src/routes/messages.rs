//! Message commands: send, and recipients' delivery and read reports.

use std::sync::Arc;
use std::time::Instant;

use chat4all_commands::SendMessageRequest;
use chat4all_domain::message::{Channel, MessageContent, RecipientStatus};
use chat4all_domain::{ConversationId, MessageId};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::command::{command, Write};
use super::table::{route, RouteTable};
use crate::auth::{Principal, Scope};
use crate::body::parse_json;
use crate::filters::{require, RequestMeta};
use crate::problem::{json_response, ApiError, ErrorCode, FieldError};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    message_id: Option<String>,
    conversation_id: String,
    content: Value,
    channels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: RecipientStatus,
}

pub fn routes(
    state: Arc<AppState>,
    table: &mut RouteTable,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let send = route!(table, POST "v1" / "messages")
        .and(command(state.clone()))
        .and_then(|cmd: Write| async move {
            let started = Instant::now();
            let result = match parse_json::<SendBody>(&cmd.body) {
                Ok(body) => send(&cmd.state, &cmd.principal, &cmd.meta, body).await,
                Err(e) => Err(e),
            };
            cmd.finish("send_message", started, result).await
        });
    let status = route!(table, POST "v1" / "messages" / {message_id: String} / "status")
        .and(command(state))
        .and_then(|id: String, cmd: Write| async move {
            let started = Instant::now();
            let result = match parse_json::<StatusBody>(&cmd.body) {
                Ok(body) => mark_status(&cmd.state, &cmd.principal, &cmd.meta, &id, body).await,
                Err(e) => Err(e),
            };
            cmd.finish("message_status", started, result).await
        });
    send.or(status).unify()
}

/// `content` is a string (a text) or `{"type": "text", "text"}` / `{"type": "file", "file_id",
/// "caption"?}`; parsed by hand so every fault names its field.
fn parse_content(value: Value, errors: &mut Vec<FieldError>) -> Option<MessageContent> {
    let mut object = match value {
        Value::String(text) => return Some(MessageContent::Text { text }),
        Value::Object(object) => object,
        _ => {
            errors.push(FieldError::new(
                "content",
                "must be a string or an object with a type",
            ));
            return None;
        }
    };
    let mut take_string = |object: &mut serde_json::Map<String, Value>,
                           key: &str,
                           required: bool| match object.remove(key) {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) if !required => None,
        None | Some(Value::Null) => {
            errors.push(FieldError::new(format!("content.{key}"), "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(
                format!("content.{key}"),
                "must be a string",
            ));
            None
        }
    };
    let kind = take_string(&mut object, "type", true);
    let content = match kind.as_deref() {
        Some("text") => {
            take_string(&mut object, "text", true).map(|text| MessageContent::Text { text })
        }
        Some("file") => {
            let file_id = take_string(&mut object, "file_id", true);
            let caption = take_string(&mut object, "caption", false);
            file_id.map(|file_id| MessageContent::File { file_id, caption })
        }
        Some(_) => {
            errors.push(FieldError::new(
                "content.type",
                "must be \"text\" or \"file\"",
            ));
            None
        }
        None => None,
    };
    for unknown in object.keys() {
        errors.push(FieldError::new(
            format!("content.{unknown}"),
            "unknown field",
        ));
    }
    content
}

fn parse_channels(names: Option<Vec<String>>, errors: &mut Vec<FieldError>) -> Vec<Channel> {
    let mut channels = Vec::new();
    for (i, name) in names.unwrap_or_default().iter().enumerate() {
        if name == "all" {
            channels.extend(Channel::ALL);
        } else if let Some(channel) = Channel::parse(name) {
            channels.push(channel);
        } else {
            errors.push(FieldError::new(
                format!("channels[{i}]"),
                format!(
                    "unknown channel {name:?}; use whatsapp, instagram, telegram, messenger or all"
                ),
            ));
        }
    }
    channels
}

fn validate_send(body: SendBody) -> Result<SendMessageRequest, ApiError> {
    let mut errors = Vec::new();
    let message_id = body.message_id.as_deref().and_then(|id| {
        MessageId::parse(id)
            .map_err(|e| errors.push(FieldError::new("message_id", e.to_string())))
            .ok()
    });
    let conversation_id = ConversationId::parse(&body.conversation_id)
        .map_err(|e| errors.push(FieldError::new("conversation_id", e.to_string())))
        .ok();
    let content = parse_content(body.content, &mut errors);
    let channels = parse_channels(body.channels, &mut errors);
    match (conversation_id, content) {
        (Some(conversation_id), Some(content)) if errors.is_empty() => Ok(SendMessageRequest {
            message_id,
            conversation_id,
            content,
            channels,
        }),
        _ => Err(ApiError::validation(errors)),
    }
}

async fn send(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    body: SendBody,
) -> Result<Response, ApiError> {
    require(principal, Scope::Write)?;
    let request = validate_send(body)?;
    let reply = state
        .commands
        .send_message(&meta.command_context(principal), request, Utc::now())
        .await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "message_id": reply.message_id,
            "conversation_id": reply.conversation_id,
            "status": "accepted",
            "position": reply.position,
        }),
    ))
}

async fn mark_status(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    id: &str,
    body: StatusBody,
) -> Result<Response, ApiError> {
    require(principal, Scope::Write)?;
    let message_id = MessageId::parse(id)
        .map_err(|_| ApiError::of(ErrorCode::MessageNotFound, "message not found"))?;
    let reply = state
        .commands
        .mark_status(
            &meta.command_context(principal),
            message_id,
            body.status,
            Utc::now(),
        )
        .await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "message_id": reply.message_id,
            "status": reply.status.as_str(),
            "position": reply.position,
        }),
    ))
}
