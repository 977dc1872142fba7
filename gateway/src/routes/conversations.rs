//! Conversation commands: create, add and remove members, mark read.

use std::sync::Arc;
use std::time::Instant;

use chat4all_commands::CreateConversationRequest;
use chat4all_domain::conversation::ConversationKind;
use chat4all_domain::{ConversationId, UserId};
use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::command::{command, Write};
use super::table::{route, RouteTable};
use crate::auth::{Principal, Scope};
use crate::body::{parse_json, parse_optional_json};
use crate::filters::{require, RequestMeta};
use crate::problem::{json_response, ApiError, ErrorCode, FieldError};
use crate::AppState;

const MAX_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 2_000;
const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    conversation_id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    members: Vec<String>,
    name: Option<String>,
    description: Option<String>,
    metadata: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMemberBody {
    user_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    up_to_seq: Option<u64>,
}

pub fn routes(
    state: Arc<AppState>,
    table: &mut RouteTable,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let create = route!(table, POST "v1" / "conversations")
        .and(command(state.clone()))
        .and_then(|cmd: Write| async move {
            let started = Instant::now();
            let result = match parse_json::<CreateBody>(&cmd.body) {
                Ok(body) => create(&cmd.state, &cmd.principal, &cmd.meta, body).await,
                Err(e) => Err(e),
            };
            cmd.finish("create_conversation", started, result).await
        });
    let add_member =
        route!(table, POST "v1" / "conversations" / {conversation_id: String} / "members")
            .and(command(state.clone()))
            .and_then(|id: String, cmd: Write| async move {
                let started = Instant::now();
                let result = match parse_json::<AddMemberBody>(&cmd.body) {
                    Ok(body) => add_member(&cmd.state, &cmd.principal, &cmd.meta, &id, body).await,
                    Err(e) => Err(e),
                };
                cmd.finish("add_member", started, result).await
            });
    let remove_member = route!(
        table,
        DELETE "v1" / "conversations" / {conversation_id: String} / "members" / {user_id: String}
    )
    .and(command(state.clone()))
    .and_then(|id: String, user: String, cmd: Write| async move {
        let started = Instant::now();
        let result = remove_member(&cmd.state, &cmd.principal, &cmd.meta, &id, &user).await;
        cmd.finish("remove_member", started, result).await
    });
    let read = route!(table, POST "v1" / "conversations" / {conversation_id: String} / "read")
        .and(command(state))
        .and_then(|id: String, cmd: Write| async move {
            let started = Instant::now();
            let result = match parse_optional_json::<ReadBody>(&cmd.body) {
                Ok(body) => mark_read(&cmd.state, &cmd.principal, &cmd.meta, &id, body).await,
                Err(e) => Err(e),
            };
            cmd.finish("mark_read", started, result).await
        });
    create
        .or(add_member)
        .unify()
        .or(remove_member)
        .unify()
        .or(read)
        .unify()
}

/// A path segment with its percent-escapes decoded (warp hands segments over raw); `None` when
/// an escape is malformed or the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A conversation id from the path; one that is not a UUID cannot exist.
fn path_conversation(id: &str) -> Result<ConversationId, ApiError> {
    ConversationId::parse(id)
        .map_err(|_| ApiError::of(ErrorCode::ConversationNotFound, "conversation not found"))
}

fn text_field(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<String>,
    max_chars: usize,
) -> Option<String> {
    let value = value?;
    if value.chars().count() > max_chars {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    } else if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Some(value)
}

fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v))
        }
        _ => false,
    }
}

fn validate_create(body: CreateBody) -> Result<CreateConversationRequest, ApiError> {
    let mut errors = Vec::new();
    let conversation_id = body.conversation_id.as_deref().and_then(|id| {
        ConversationId::parse(id)
            .map_err(|e| errors.push(FieldError::new("conversation_id", e.to_string())))
            .ok()
    });
    let kind = match body.kind.as_str() {
        "private" => Some(ConversationKind::Private),
        "group" => Some(ConversationKind::Group),
        _ => {
            errors.push(FieldError::new("type", "must be \"private\" or \"group\""));
            None
        }
    };
    let members: Vec<UserId> = body
        .members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            UserId::parse(m)
                .map_err(|e| errors.push(FieldError::new(format!("members[{i}]"), e.to_string())))
                .ok()
        })
        .collect();
    let name = text_field(&mut errors, "name", body.name, MAX_NAME_CHARS);
    let description = text_field(
        &mut errors,
        "description",
        body.description,
        MAX_DESCRIPTION_CHARS,
    );
    if let Some(metadata) = &body.metadata {
        if !metadata.is_object() {
            errors.push(FieldError::new("metadata", "must be a JSON object"));
        } else if contains_nul(metadata) {
            // Postgres' jsonb cannot store U+0000, so it is refused here, not by the store.
            errors.push(FieldError::new(
                "metadata",
                "must not contain NUL characters",
            ));
        } else if metadata.to_string().len() > MAX_METADATA_BYTES {
            errors.push(FieldError::new(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
            ));
        }
    }
    match kind {
        Some(kind) if errors.is_empty() => Ok(CreateConversationRequest {
            conversation_id,
            kind,
            members,
            name,
            description,
            metadata: body.metadata,
        }),
        _ => Err(ApiError::validation(errors)),
    }
}

async fn create(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    body: CreateBody,
) -> Result<Response, ApiError> {
    require(principal, Scope::Write)?;
    let request = validate_create(body)?;
    let reply = state
        .commands
        .create_conversation(&meta.command_context(principal), request, Utc::now())
        .await?;
    let c = reply.conversation;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({
            "conversation_id": c.conversation_id,
            "type": c.kind.as_str(),
            "members": c.members,
            "name": c.name,
            "description": c.description,
            "metadata": c.metadata,
            "created_by": c.created_by,
            "created_at": c.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "position": reply.position,
        }),
    ))
}

async fn add_member(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    id: &str,
    body: AddMemberBody,
) -> Result<Response, ApiError> {
    require(principal, Scope::Write)?;
    let conversation = path_conversation(id)?;
    let user = UserId::parse(&body.user_id)
        .map_err(|e| ApiError::validation(vec![FieldError::new("user_id", e.to_string())]))?;
    let position = state
        .commands
        .add_member(
            &meta.command_context(principal),
            conversation,
            user.clone(),
            Utc::now(),
        )
        .await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({"conversation_id": conversation, "user_id": user, "position": position}),
    ))
}

async fn remove_member(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    id: &str,
    user: &str,
) -> Result<Response, ApiError> {
    require(principal, Scope::Write)?;
    let conversation = path_conversation(id)?;
    let user = percent_decode(user)
        .and_then(|u| UserId::parse(&u).ok())
        .ok_or_else(|| {
            ApiError::of(
                ErrorCode::MemberNotFound,
                "no such member in this conversation",
            )
        })?;
    let position = state
        .commands
        .remove_member(
            &meta.command_context(principal),
            conversation,
            user.clone(),
            Utc::now(),
        )
        .await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({"conversation_id": conversation, "user_id": user, "position": position}),
    ))
}

async fn mark_read(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    id: &str,
    body: Option<ReadBody>,
) -> Result<Response, ApiError> {
    require(principal, Scope::Write)?;
    let conversation = path_conversation(id)?;
    let up_to_seq = body.and_then(|b| b.up_to_seq);
    let reply = state
        .commands
        .mark_read(
            &meta.command_context(principal),
            conversation,
            up_to_seq,
            Utc::now(),
        )
        .await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "conversation_id": reply.conversation_id,
            "up_to_seq": reply.up_to_seq,
            "position": reply.position,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(
            percent_decode("dave%40x.io%3A1").as_deref(),
            Some("dave@x.io:1")
        );
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
