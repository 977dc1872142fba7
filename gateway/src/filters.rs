//! Filters shared by the routes: state, authentication, scopes, request metadata.

use std::convert::Infallible;
use std::sync::Arc;

use chat4all_commands::CommandContext;
use warp::http::header::AUTHORIZATION;
use warp::http::HeaderMap;
use warp::{Filter, Rejection};

use crate::auth::{Principal, Scope};
use crate::problem::{ApiError, ErrorCode};
use crate::AppState;

pub fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The caller behind `Authorization: Bearer <JWT>`; 401 with a challenge otherwise.
pub fn authenticated(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    warp::header::headers_cloned().and_then(move |headers: HeaderMap| {
        let state = state.clone();
        async move {
            let header = headers.get(AUTHORIZATION).ok_or_else(|| {
                warp::reject::custom(ApiError::unauthorized("a bearer token is required"))
            })?;
            let token = header
                .to_str()
                .ok()
                .and_then(|h| strip_scheme(h, "Bearer"))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    warp::reject::custom(ApiError::unauthorized(
                        "the Authorization header must be 'Bearer <token>'",
                    ))
                })?;
            state
                .tokens
                .verify(token)
                .await
                .map_err(|e| warp::reject::custom(ApiError::unauthorized(e.to_string())))
        }
    })
}

/// The credentials after an HTTP authentication scheme name, which is case-insensitive.
pub fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (name, rest) = header.split_once(' ')?;
    name.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Refuses a principal without `scope` with 403 `insufficient_scope`.
///
/// # Errors
/// The 403 answer.
pub fn require(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.has(scope) {
        Ok(())
    } else {
        Err(ApiError::of(
            ErrorCode::InsufficientScope,
            format!("this operation needs the '{}' scope", scope.as_str()),
        ))
    }
}

/// Tracing facts of a request, stored with the events it causes.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub trace_id: String,
    pub correlation_id: String,
    pub request_id: String,
}

impl RequestMeta {
    pub fn command_context(&self, principal: &Principal) -> CommandContext {
        CommandContext {
            tenant: principal.tenant.clone(),
            actor: principal.user.clone(),
            is_admin: principal.has(Scope::Admin),
            trace_id: self.trace_id.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.request_id.clone(),
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2))
    .then(|| trace.to_owned())
}

/// Continues the caller's trace (`traceparent`) or starts one; keeps a caller-supplied
/// `X-Correlation-Id` when it is reasonable, else correlates by trace.
pub fn request_meta() -> impl Filter<Extract = (RequestMeta,), Error = Infallible> + Clone {
    warp::header::optional::<String>("traceparent")
        .or(warp::any().map(|| None))
        .unify()
        .and(
            warp::header::optional::<String>("x-correlation-id")
                .or(warp::any().map(|| None))
                .unify(),
        )
        .map(|traceparent: Option<String>, correlation: Option<String>| {
            let trace_id = traceparent
                .as_deref()
                .and_then(trace_id_of)
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            let correlation_id = correlation
                .filter(|c| {
                    !c.is_empty() && c.len() <= 128 && c.bytes().all(|b| b.is_ascii_graphic())
                })
                .unwrap_or_else(|| trace_id.clone());
            RequestMeta {
                trace_id,
                correlation_id,
                request_id: uuid::Uuid::new_v4().to_string(),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::trace_id_of;

    #[test]
    fn traceparent_is_checked_before_it_is_trusted() {
        assert_eq!(
            trace_id_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
            None
        );
        assert_eq!(
            trace_id_of("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
    }
}
