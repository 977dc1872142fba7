//! Queries over the read models: conversation list and detail, message pages, one message.
//!
//! Every answer carries `X-Projection-Position`; `?min_position=N` first waits (up to 5 s) until
//! the event at position N is applied, which is how a client reads its own writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat4all_domain::{ConversationId, MessageId};
use chat4all_projections::{ListCursor, MessagesFrom, Page};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::answer;
use super::table::{route, RouteTable};
use crate::auth::{Principal, Scope};
use crate::filters::{authenticated, require, with_state};
use crate::problem::{json_response, ApiError, ErrorCode};
use crate::AppState;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 100;
const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);
const MIN_POSITION_POLL: Duration = Duration::from_millis(10);

type Params = HashMap<String, String>;

fn params() -> impl Filter<Extract = (Params,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move {
            serde_urlencoded::from_str::<Vec<(String, String)>>(&raw)
                .map(|pairs| pairs.into_iter().collect::<Params>())
                .map_err(|e| {
                    warp::reject::custom(ApiError::of(
                        ErrorCode::InvalidQuery,
                        format!("the query string is malformed: {e}"),
                    ))
                })
        })
}

fn number(params: &Params, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            raw.parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::field(
                        ErrorCode::ValidationFailed,
                        name,
                        format!("must be an integer from {min} to {max}"),
                    )
                })
        })
        .transpose()
}

fn limit(params: &Params) -> Result<i64, ApiError> {
    Ok(number(params, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT))
}

fn invalid_cursor() -> ApiError {
    ApiError::field(
        ErrorCode::InvalidCursor,
        "cursor",
        "not a cursor this API issued",
    )
}

/// Waits until the read models reflect the event at `min_position`, if one was asked for.
async fn wait_for(
    state: &AppState,
    principal: &Principal,
    params: &Params,
) -> Result<(), ApiError> {
    let Some(position) = number(params, "min_position", 1, i64::MAX)? else {
        return Ok(());
    };
    let deadline = Instant::now() + MIN_POSITION_WAIT;
    loop {
        match state
            .queries
            .applied(principal.tenant.as_str(), position)
            .await
        {
            Ok(true) => return Ok(()),
            Ok(false) if Instant::now() < deadline => tokio::time::sleep(MIN_POSITION_POLL).await,
            Ok(false) => {
                return Err(ApiError::of(
                    ErrorCode::ProjectionLagging,
                    format!("the read models have not reached position {position} yet"),
                )
                .retry_after(1))
            }
            Err(e) => return Err(read_failed(&e)),
        }
    }
}

fn read_failed(e: &sqlx::Error) -> ApiError {
    tracing::error!("reading the read models failed: {e}");
    ApiError::of(
        ErrorCode::StoreUnavailable,
        "the read models are unavailable; retry",
    )
    .retry_after(1)
}

/// Adds `X-Projection-Position` to an answer.
async fn positioned(
    state: &AppState,
    result: Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    let position = state.queries.position().await.unwrap_or(0);
    let header = HeaderValue::from(position);
    match result {
        Ok(mut response) => {
            response
                .headers_mut()
                .insert("x-projection-position", header);
            Ok(response)
        }
        Err(e) => Err(e.with_header("x-projection-position", header)),
    }
}

fn page<T: serde::Serialize>(page: Page<T>) -> Response {
    json_response(StatusCode::OK, &page)
}

fn conversation_not_found() -> ApiError {
    ApiError::of(ErrorCode::ConversationNotFound, "conversation not found")
}

async fn list(state: &AppState, p: &Principal, params: &Params) -> Result<Response, ApiError> {
    require(p, Scope::Read)?;
    let limit = limit(params)?;
    let cursor = params
        .get("cursor")
        .map(|c| ListCursor::decode(c).ok_or_else(invalid_cursor))
        .transpose()?;
    wait_for(state, p, params).await?;
    let found = state
        .queries
        .conversations(p.tenant.as_str(), p.user.as_str(), limit, cursor)
        .await
        .map_err(|e| read_failed(&e))?;
    Ok(page(found))
}

async fn detail(
    state: &AppState,
    p: &Principal,
    id: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    require(p, Scope::Read)?;
    let conversation = ConversationId::parse(id).map_err(|_| conversation_not_found())?;
    wait_for(state, p, params).await?;
    let found = state
        .queries
        .conversation(p.tenant.as_str(), p.user.as_str(), conversation.as_uuid())
        .await
        .map_err(|e| read_failed(&e))?;
    found
        .map(|body| json_response(StatusCode::OK, &body))
        .ok_or_else(conversation_not_found)
}

async fn messages(
    state: &AppState,
    p: &Principal,
    id: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    require(p, Scope::Read)?;
    let conversation = ConversationId::parse(id).map_err(|_| conversation_not_found())?;
    let limit = limit(params)?;
    let before = number(params, "before_seq", 1, i64::MAX)?;
    let after = number(params, "after_seq", 0, i64::MAX)?;
    let cursor = params
        .get("cursor")
        .map(|c| MessagesFrom::decode(c).ok_or_else(invalid_cursor))
        .transpose()?;
    let from = match (before, after, cursor) {
        (Some(seq), None, None) => MessagesFrom::Before(seq),
        (None, Some(seq), None) => MessagesFrom::After(seq),
        (None, None, Some(from)) => from,
        (None, None, None) => MessagesFrom::Before(i64::MAX),
        _ => {
            return Err(ApiError::field(
                ErrorCode::ValidationFailed,
                "before_seq",
                "give at most one of before_seq, after_seq and cursor",
            ))
        }
    };
    wait_for(state, p, params).await?;
    let found = state
        .queries
        .messages(
            p.tenant.as_str(),
            p.user.as_str(),
            conversation.as_uuid(),
            from,
            limit,
        )
        .await
        .map_err(|e| read_failed(&e))?;
    found.map(page).ok_or_else(conversation_not_found)
}

async fn message(
    state: &AppState,
    p: &Principal,
    id: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    require(p, Scope::Read)?;
    let not_found = || ApiError::of(ErrorCode::MessageNotFound, "message not found");
    let message = MessageId::parse(id).map_err(|_| not_found())?;
    wait_for(state, p, params).await?;
    let found = state
        .queries
        .message(p.tenant.as_str(), p.user.as_str(), message.as_uuid())
        .await
        .map_err(|e| read_failed(&e))?;
    found
        .map(|body| json_response(StatusCode::OK, &body))
        .ok_or_else(not_found)
}

pub fn routes(
    state: Arc<AppState>,
    table: &mut RouteTable,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let list = route!(table, GET "v1" / "conversations")
        .and(with_state(state.clone()))
        .and(authenticated(state.clone()))
        .and(params())
        .and_then(
            |state: Arc<AppState>, p: Principal, params: Params| async move {
                let started = Instant::now();
                let result = positioned(&state, list(&state, &p, &params).await).await;
                answer("list_conversations", started, result)
            },
        );
    let detail = route!(table, GET "v1" / "conversations" / {conversation_id: String})
        .and(with_state(state.clone()))
        .and(authenticated(state.clone()))
        .and(params())
        .and_then(
            |id: String, state: Arc<AppState>, p: Principal, params: Params| async move {
                let started = Instant::now();
                let result = positioned(&state, detail(&state, &p, &id, &params).await).await;
                answer("get_conversation", started, result)
            },
        );
    let messages =
        route!(table, GET "v1" / "conversations" / {conversation_id: String} / "messages")
            .and(with_state(state.clone()))
            .and(authenticated(state.clone()))
            .and(params())
            .and_then(
                |id: String, state: Arc<AppState>, p: Principal, params: Params| async move {
                    let started = Instant::now();
                    let result = positioned(&state, messages(&state, &p, &id, &params).await).await;
                    answer("list_messages", started, result)
                },
            );
    let message = route!(table, GET "v1" / "messages" / {message_id: String})
        .and(with_state(state.clone()))
        .and(authenticated(state))
        .and(params())
        .and_then(
            |id: String, state: Arc<AppState>, p: Principal, params: Params| async move {
                let started = Instant::now();
                let result = positioned(&state, message(&state, &p, &id, &params).await).await;
                answer("get_message", started, result)
            },
        );
    list.or(detail)
        .unify()
        .or(messages)
        .unify()
        .or(message)
        .unify()
}
