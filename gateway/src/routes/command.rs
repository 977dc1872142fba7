//! What every state-changing request under `/v1` goes through before and after its handler:
//! authentication, the per-user rate limit (with its `X-RateLimit-*` headers on every answer),
//! and `Idempotency-Key` on `POST`s.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::auth::Principal;
use crate::body::{bounded_bytes, MAX_BODY_BYTES};
use crate::filters::{authenticated, request_meta, RequestMeta};
use crate::idempotency::{self, Claim, Outcome};
use crate::limits::Standing;
use crate::problem::{Answered, ApiError, ErrorCode};
use crate::AppState;

/// A state-changing request that may run.
pub struct Command {
    pub state: Arc<AppState>,
    pub principal: Principal,
    pub meta: RequestMeta,
    /// The raw body (handlers parse it, so it can be fingerprinted first).
    pub body: Bytes,
    standing: Option<Standing>,
    claim: Option<Claim>,
}

fn with_headers(mut response: Response, standing: Option<&Standing>) -> Response {
    if let Some(standing) = standing {
        for (name, value) in standing.headers() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
        }
    }
    response
}

/// An answer given before the handler ran (429, a replay, a key conflict).
fn answered(response: Response, standing: Option<&Standing>) -> Rejection {
    warp::reject::custom(Answered::from_response(with_headers(response, standing)))
}

fn store_unavailable() -> ApiError {
    ApiError::of(
        ErrorCode::TemporarilyUnavailable,
        "the request could not be recorded; retry it",
    )
    .retry_after(1)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    if !idempotency::valid_key(value.as_bytes()) {
        return Err(ApiError::of(
            ErrorCode::InvalidIdempotencyKey,
            "Idempotency-Key must be 1 to 200 printable ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(value.as_bytes()).into_owned()))
}

/// Admits a state-changing request (its path and method already matched).
pub fn command(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Command,), Error = Rejection> + Clone {
    let with_state = crate::filters::with_state(state.clone());
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(with_state)
        .and(authenticated(state))
        .and(request_meta())
        .and(bounded_bytes(MAX_BODY_BYTES))
        .and_then(
            |method: Method,
             path: warp::path::FullPath,
             headers: HeaderMap,
             state: Arc<AppState>,
             principal: Principal,
             meta: RequestMeta,
             body: Bytes| async move {
                let standing = state
                    .rate_limiter
                    .check(principal.tenant.as_str(), principal.user.as_str())
                    .await;
                if standing.is_some_and(|s| !s.admitted) {
                    let refused = ApiError::of(
                        ErrorCode::RateLimited,
                        "too many state-changing requests; see Retry-After",
                    );
                    return Err(answered(refused.into_response(), standing.as_ref()));
                }
                let key = if method == Method::POST {
                    idempotency_key(&headers)
                        .map_err(|e| answered(e.into_response(), standing.as_ref()))?
                } else {
                    None
                };
                let mut claim = None;
                if let Some(key) = key {
                    let fingerprint =
                        idempotency::fingerprint(method.as_str(), path.as_str(), &body);
                    let outcome = idempotency::claim(
                        &state.pool,
                        principal.tenant.as_str(),
                        principal.user.as_str(),
                        &key,
                        &fingerprint,
                    )
                    .await
                    .map_err(|e| {
                        tracing::error!("claiming an idempotency key failed: {e}");
                        answered(store_unavailable().into_response(), standing.as_ref())
                    })?;
                    match outcome {
                        Outcome::Claimed(c) => claim = Some(c),
                        Outcome::Replay { status, body } => {
                            let mut response = replayed(status, &body);
                            response.headers_mut().insert(
                                HeaderName::from_static("idempotent-replayed"),
                                HeaderValue::from_static("true"),
                            );
                            return Err(answered(response, standing.as_ref()));
                        }
                        Outcome::Reused => {
                            let conflict = ApiError::of(
                                ErrorCode::IdempotencyKeyReused,
                                "this Idempotency-Key was used for a different request",
                            );
                            return Err(answered(conflict.into_response(), standing.as_ref()));
                        }
                        Outcome::InProgress => {
                            let mut conflict = ApiError::of(
                                ErrorCode::IdempotencyKeyInUse,
                                "a request with this Idempotency-Key is still running",
                            )
                            .into_response();
                            conflict
                                .headers_mut()
                                .insert("retry-after", HeaderValue::from_static("1"));
                            return Err(answered(conflict, standing.as_ref()));
                        }
                    }
                }
                Ok::<_, Rejection>(Command {
                    state,
                    principal,
                    meta,
                    body,
                    standing,
                    claim,
                })
            },
        )
}

/// The stored answer of an idempotent request, as it was first given.
fn replayed(status: u16, body: &serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = crate::problem::json_response(status, body);
    if status.is_client_error() || status.is_server_error() {
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
    }
    response
}

impl Command {
    /// Turns the handler's result into the answer: stored under the idempotency key (or the
    /// claim released on a 5xx), with the rate-limit headers, counted under `route`.
    pub async fn finish(
        self,
        route: &'static str,
        started: Instant,
        result: Result<Response, ApiError>,
    ) -> Result<Response, Rejection> {
        let response = result.unwrap_or_else(ApiError::into_response);
        let status = response.status();
        let response = match &self.claim {
            None => response,
            Some(claim) => self.remember(claim, response).await,
        };
        crate::metrics::record_request(route, status.as_u16(), started);
        Ok(with_headers(response, self.standing.as_ref()))
    }

    async fn remember(&self, claim: &Claim, response: Response) -> Response {
        let pool = &self.state.pool;
        let (parts, body) = response.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                tracing::error!("reading a response to remember failed: {e}");
                let _ = idempotency::release(pool, claim).await;
                return store_unavailable().into_response();
            }
        };
        let stored = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(body) if !parts.status.is_server_error() => {
                idempotency::store(pool, claim, parts.status.as_u16(), &body).await
            }
            _ => idempotency::release(pool, claim).await,
        };
        if let Err(e) = stored {
            // The command ran; its answer still goes out. A retry will find the claim in
            // progress for a minute, then run again.
            tracing::error!("storing an idempotent answer failed: {e}");
        }
        Response::from_parts(parts, bytes.into())
    }
}
