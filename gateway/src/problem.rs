//! Every error answer of the API, built in one place.
//!
//! Outside `/auth/*` errors are `application/problem+json` (RFC 9457) with a stable snake_case
//! `code` and, for validation, per-field `errors`. `/auth/*` errors use the OAuth 2.0 shape
//! (RFC 6749 §5.2). A 5xx never carries internals: the cause chain goes to the log only. The
//! codes themselves, and the status each goes with, are declared in [`crate::codes`].

use std::convert::Infallible;

use chat4all_commands::CommandError;
use chat4all_domain::conversation::ConversationError;
use chat4all_domain::message::MessageError;
use serde::Serialize;

pub use crate::codes::{ErrorCode, OAuthCode};
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

/// An API error, rendered as problem+json. Its status is its code's ([`ErrorCode::status`]).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
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
    /// An answer with `code` (and so its status).
    pub fn of(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            challenge: None,
            headers: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers
            .get_or_insert_with(Box::default)
            .push((name, value));
        self
    }

    /// Adds `Retry-After` (seconds).
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        Self {
            errors,
            ..Self::of(ErrorCode::ValidationFailed, detail)
        }
    }

    /// A 400-class `code` about one `field`.
    pub fn field(code: ErrorCode, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            errors: vec![FieldError::new(field, message.clone())],
            ..Self::of(code, format!("{field}: {message}"))
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            challenge: Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                detail.replace('"', "'")
            )),
            ..Self::of(ErrorCode::InvalidToken, detail)
        }
    }

    fn title(&self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }

    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Problem<'a> {
            #[serde(rename = "type")]
            kind: String,
            title: &'a str,
            status: u16,
            detail: &'a str,
            code: ErrorCode,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            errors: &'a [FieldError],
        }
        let status = self.status();
        let body = Problem {
            kind: format!(
                "https://chat4all.dev/problems/{}",
                self.code.as_str().replace('_', "-")
            ),
            title: self.title(),
            status: status.as_u16(),
            detail: &self.detail,
            code: self.code,
            errors: &self.errors,
        };
        let mut response = json_response(status, &body);
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

/// An OAuth 2.0 error of the `/auth/*` endpoints. Its status is its code's.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub code: OAuthCode,
    pub description: String,
    /// `Retry-After` of a throttled request.
    pub retry_after: Option<u64>,
}

impl warp::reject::Reject for OAuthError {}

impl OAuthError {
    pub fn new(code: OAuthCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    pub fn invalid_client() -> Self {
        Self::new(OAuthCode::InvalidClient, "client authentication failed")
    }

    pub fn server_error() -> Self {
        Self::new(
            OAuthCode::TemporarilyUnavailable,
            "the authorization server cannot answer right now",
        )
    }

    /// Too many failed attempts for a client or from an address.
    pub fn throttled(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                OAuthCode::SlowDown,
                "too many failed attempts; try again later",
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "error_description": self.description});
        let mut response = json_response(self.status(), &body);
        if self.status() == StatusCode::UNAUTHORIZED {
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
        use ErrorCode as C;
        match err {
            CommandError::Conversation(e) => {
                let detail = e.to_string();
                match e {
                    ConversationError::NotFound => Self::of(C::ConversationNotFound, detail),
                    ConversationError::AlreadyExists => Self::of(C::ConversationIdConflict, detail),
                    ConversationError::DuplicateMember(_) => {
                        Self::field(C::DuplicateMember, "members", detail)
                    }
                    ConversationError::CreatorNotMember => {
                        Self::field(C::CallerNotMember, "members", detail)
                    }
                    ConversationError::PrivateNeedsTwoMembers { .. } => {
                        Self::field(C::PrivateNeedsTwoMembers, "members", detail)
                    }
                    ConversationError::GroupSize { .. } => {
                        Self::field(C::GroupSizeOutOfRange, "members", detail)
                    }
                    ConversationError::PrivateMembersFixed => {
                        Self::of(C::PrivateMembersFixed, detail)
                    }
                    ConversationError::GroupFull { .. } => Self::of(C::GroupFull, detail),
                    ConversationError::MemberNotFound(_) => Self::of(C::MemberNotFound, detail),
                    ConversationError::NotAllowed => Self::of(C::NotAllowed, detail),
                }
            }
            CommandError::Message(e) => {
                let detail = e.to_string();
                match e {
                    MessageError::IdConflict => Self::of(C::MessageIdConflict, detail),
                    MessageError::ConversationNotFound => Self::of(C::ConversationNotFound, detail),
                    MessageError::NotFound => Self::of(C::MessageNotFound, detail),
                    MessageError::EmptyText
                    | MessageError::TextTooLong { .. }
                    | MessageError::TextHasNul => {
                        Self::validation(vec![FieldError::new("content.text", detail)])
                    }
                    MessageError::FileNotReady => {
                        Self::field(C::FileNotReady, "content.file_id", detail)
                    }
                    MessageError::NotARecipient => Self::of(C::NotARecipient, detail),
                    MessageError::Directory(cause) => store_unavailable(&cause),
                }
            }
            CommandError::SeqOutOfRange { .. } => {
                Self::field(C::SeqOutOfRange, "up_to_seq", err.to_string())
            }
            CommandError::Contention { .. } => Self::of(
                C::Contention,
                "too many concurrent changes to the same resource; retry",
            )
            .retry_after(1),
            CommandError::Store(cause) => store_unavailable(cause.as_ref()),
        }
    }
}

fn store_unavailable(cause: &(dyn std::error::Error + 'static)) -> ApiError {
    tracing::error!(error = %ErrorChain(cause), "event store unavailable");
    ApiError::of(
        ErrorCode::StoreUnavailable,
        "the event store is unavailable; retry",
    )
    .retry_after(1)
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
        return Ok(e.clone().into_response());
    }
    let error = if rejection.is_not_found() {
        ApiError::of(ErrorCode::NotFound, "no such resource")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::of(
            ErrorCode::MethodNotAllowed,
            "this method is not allowed on this resource",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::of(ErrorCode::PayloadTooLarge, "the body is too large")
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::of(
            ErrorCode::UnsupportedMediaType,
            "the body must be application/json",
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::of(ErrorCode::InvalidQuery, e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::of(ErrorCode::InvalidHeader, e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::of(ErrorCode::MissingHeader, e.to_string())
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::of(
            ErrorCode::InternalError,
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
