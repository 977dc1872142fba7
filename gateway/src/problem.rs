//! Every error answer of the API, built in one place.
//!
//! Outside `/auth/*` errors are `application/problem+json` (RFC 9457) with a stable snake_case
//! `code` and, for validation, per-field `errors`. `/auth/*` errors use the OAuth 2.0 shape
//! (RFC 6749 §5.2). A 5xx never carries internals: the cause chain goes to the log only.

use std::convert::Infallible;

use chat4all_commands::CommandError;
use chat4all_domain::conversation::ConversationError;
use chat4all_domain::message::MessageError;
use serde::Serialize;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Rejection, Reply};

/// One field's problem, named by its JSON path (`content.text`, `members[2]`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An API error, rendered as problem+json.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after: Option<u64>,
    /// Set for 401s: the `WWW-Authenticate` challenge.
    pub challenge: Option<String>,
    /// Further headers (e.g. `X-Projection-Position` on query errors); boxed, being rare, to
    /// keep the error small.
    pub headers: Option<Box<Vec<(&'static str, HeaderValue)>>>,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            challenge: None,
            headers: None,
        }
    }

    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers
            .get_or_insert_with(Box::default)
            .push((name, value));
        self
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        Self {
            errors,
            ..Self::new(StatusCode::BAD_REQUEST, "validation_failed", detail)
        }
    }

    pub fn field(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            errors: vec![FieldError::new(field, message.clone())],
            ..Self::new(StatusCode::BAD_REQUEST, code, format!("{field}: {message}"))
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            challenge: Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                detail.replace('"', "'")
            )),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", detail)
        }
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
        }
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Problem<'a> {
            #[serde(rename = "type")]
            kind: String,
            title: &'a str,
            status: u16,
            detail: &'a str,
            code: &'a str,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            errors: &'a [FieldError],
        }
        let body = Problem {
            kind: format!(
                "https://chat4all.dev/problems/{}",
                self.code.replace('_', "-")
            ),
            title: self.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            errors: &self.errors,
        };
        let mut response = json_response(self.status, &body);
        set_content_type(&mut response, "application/problem+json");
        if let Some(challenge) = &self.challenge {
            insert_header(&mut response, header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after {
            insert_header(&mut response, header::RETRY_AFTER, &secs.to_string());
        }
        for (name, value) in self.headers.into_iter().flat_map(|h| *h) {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// An OAuth 2.0 error of the `/auth/*` endpoints.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// `Retry-After` of a throttled request.
    pub retry_after: Option<u64>,
}

impl warp::reject::Reject for OAuthError {}

impl OAuthError {
    pub fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    pub fn invalid_client() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "client authentication failed".to_owned(),
            retry_after: None,
        }
    }

    pub fn server_error() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "temporarily_unavailable",
            description: "the authorization server cannot answer right now".to_owned(),
            retry_after: None,
        }
    }

    /// Too many failed attempts for a client or from an address.
    pub fn throttled(retry_after: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "slow_down",
            description: "too many failed attempts; try again later".to_owned(),
            retry_after: Some(retry_after),
        }
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.error, "error_description": self.description});
        let mut response = json_response(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            insert_header(
                &mut response,
                header::WWW_AUTHENTICATE,
                "Basic realm=\"chat4all\"",
            );
        }
        if let Some(seconds) = self.retry_after {
            insert_header(&mut response, header::RETRY_AFTER, &seconds.to_string());
        }
        insert_header(&mut response, header::CACHE_CONTROL, "no-store");
        response
    }
}

pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut response = match serde_json::to_vec(body) {
        Ok(bytes) => Response::new(bytes.into()),
        Err(e) => {
            tracing::error!("serialising a response failed: {e}");
            let mut r = Response::new(Vec::new().into());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return r;
        }
    };
    *response.status_mut() = status;
    set_content_type(&mut response, "application/json");
    response
}

fn set_content_type(response: &mut Response, value: &'static str) {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
}

fn insert_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        use StatusCode as S;
        match err {
            CommandError::Conversation(e) => {
                let detail = e.to_string();
                match e {
                    ConversationError::NotFound => {
                        Self::not_found("conversation_not_found", detail)
                    }
                    ConversationError::AlreadyExists => {
                        Self::new(S::CONFLICT, "conversation_id_conflict", detail)
                    }
                    ConversationError::DuplicateMember(_) => {
                        Self::field("duplicate_member", "members", detail)
                    }
                    ConversationError::CreatorNotMember => {
                        Self::field("caller_not_member", "members", detail)
                    }
                    ConversationError::PrivateNeedsTwoMembers { .. } => {
                        Self::field("private_needs_two_members", "members", detail)
                    }
                    ConversationError::GroupSize { .. } => {
                        Self::field("group_size_out_of_range", "members", detail)
                    }
                    ConversationError::PrivateMembersFixed => {
                        Self::new(S::BAD_REQUEST, "private_members_fixed", detail)
                    }
                    ConversationError::GroupFull { .. } => {
                        Self::new(S::CONFLICT, "group_full", detail)
                    }
                    ConversationError::MemberNotFound(_) => {
                        Self::not_found("member_not_found", detail)
                    }
                    ConversationError::NotAllowed => Self::new(S::FORBIDDEN, "not_allowed", detail),
                }
            }
            CommandError::Message(e) => {
                let detail = e.to_string();
                match e {
                    MessageError::IdConflict => {
                        Self::new(S::CONFLICT, "message_id_conflict", detail)
                    }
                    MessageError::ConversationNotFound => {
                        Self::not_found("conversation_not_found", detail)
                    }
                    MessageError::NotFound => Self::not_found("message_not_found", detail),
                    MessageError::EmptyText
                    | MessageError::TextTooLong { .. }
                    | MessageError::TextHasNul => {
                        Self::validation(vec![FieldError::new("content.text", detail)])
                    }
                    MessageError::FileNotReady => {
                        Self::field("file_not_ready", "content.file_id", detail)
                    }
                    MessageError::NotARecipient => {
                        Self::new(S::FORBIDDEN, "not_a_recipient", detail)
                    }
                    MessageError::Directory(cause) => store_unavailable(&cause),
                }
            }
            CommandError::SeqOutOfRange { .. } => {
                Self::field("seq_out_of_range", "up_to_seq", err.to_string())
            }
            CommandError::Contention { .. } => Self::unavailable(
                "contention",
                "too many concurrent changes to the same resource; retry",
                1,
            ),
            CommandError::Store(cause) => store_unavailable(cause.as_ref()),
        }
    }
}

fn store_unavailable(cause: &(dyn std::error::Error + 'static)) -> ApiError {
    tracing::error!(error = %ErrorChain(cause), "event store unavailable");
    ApiError::unavailable(
        "store_unavailable",
        "the event store is unavailable; retry",
        1,
    )
}

/// Displays an error with all of its sources, for logs.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// A complete answer given by a filter before any handler ran (a rate-limit refusal, an
/// idempotent replay), kept as parts because a rejection must be `Sync`.
#[derive(Debug)]
pub struct Answered {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl warp::reject::Reject for Answered {}

impl Answered {
    /// Takes a response whose body is a complete buffer (as every `json_response` is).
    pub fn from_response(response: Response) -> Self {
        use http_body_util::BodyExt;
        let (parts, body) = response.into_parts();
        // Built from a buffer, so the body is ready at once.
        let bytes = futures::FutureExt::now_or_never(body.collect())
            .and_then(Result::ok)
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: bytes,
        }
    }

    fn to_response(&self) -> Response {
        let mut response = Response::new(self.body.clone().into());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// The one place rejections become responses.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    if let Some(answered) = rejection.find::<Answered>() {
        return Ok(answered.to_response());
    }
    if let Some(e) = rejection.find::<ApiError>() {
        return Ok(e.clone().into_response());
    }
    if let Some(e) = rejection.find::<OAuthError>() {
        return Ok(OAuthError {
            status: e.status,
            error: e.error,
            description: e.description.clone(),
            retry_after: e.retry_after,
        }
        .into_response());
    }
    let error = if rejection.is_not_found() {
        ApiError::not_found("not_found", "no such resource")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this resource",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is too large",
        )
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be application/json",
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_header", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::new(StatusCode::BAD_REQUEST, "missing_header", e.to_string())
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the request could not be processed",
        )
    };
    Ok(error.into_response())
}

/// Handlers answer `Result<Response, ApiError>`; this turns the error side into a rejection that
/// [`recover`] renders, so rendering stays in one place.
pub fn reply(result: Result<Response, ApiError>) -> Result<Response, Rejection> {
    result.map_err(warp::reject::custom)
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        ApiError::into_response(self)
    }
}
