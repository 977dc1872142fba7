//! What every state-changing request under `/v1` goes through before and after its handler,
//! built from pieces a route composes after matching its path and method:
//!
//! 1. authentication (401), with the request's trace facts ([`RequestMeta`]);
//! 2. its body: read whole within 1 MiB ([`command`]), or handed over as a bounded stream
//!    ([`streamed_command`]) for bodies too large to hold; either way 413 past the bound;
//! 3. the per-user rate limit (429), whose `X-RateLimit-*` headers go on every later answer;
//! 4. for a whole body, `Idempotency-Key` on `POST`s (it fingerprints the body, so a streamed
//!    body, never held whole, takes no key); for a streamed body, the scope (403), so that no
//!    byte is read for a caller that may not send it. A JSON command's handler checks its scope
//!    itself, after parsing its body, as it always has.
//!
//! [`Write::finish`] then stores the answer under the key and adds the rate-limit headers.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::auth::{Principal, Scope};
use crate::body::{bounded_bytes, bounded_stream, BodyStream, MAX_BODY_BYTES};
use crate::filters::{authenticated, request_meta, require, with_state, RequestMeta};
use crate::idempotency::{self, Claim, Lookup};
use crate::limits::Standing;
use crate::problem::{Answered, ApiError, ErrorCode};
use crate::AppState;

/// A state-changing request that may run, with its body `B`: the raw bytes (handlers parse
/// them, so they can be fingerprinted first) or a [`BodyStream`].
pub struct Write<B = Bytes> {
    pub state: Arc<AppState>,
    pub principal: Principal,
    pub meta: RequestMeta,
    pub body: B,
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

/// Admits a state-changing request with a JSON body (its path and method already matched).
pub fn command(state: Arc<AppState>) -> impl Filter<Extract = (Write,), Error = Rejection> + Clone {
    admitted(state, bounded_bytes(MAX_BODY_BYTES))
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and_then(
            |cmd: Write, method: Method, path: warp::path::FullPath, headers: HeaderMap| {
                cmd.claim_key(method, path, headers)
            },
        )
}

/// Admits a state-changing request whose body the handler reads as it arrives, up to `limit`
/// bytes, once the caller is known to hold `scope` (so no byte is read for a refused caller).
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "no route streams its body yet; file chunk uploads will"
    )
)]
pub fn streamed_command(
    state: Arc<AppState>,
    scope: Scope,
    limit: u64,
) -> impl Filter<Extract = (Write<BodyStream>,), Error = Rejection> + Clone {
    admitted(state, bounded_stream(limit)).and_then(move |cmd: Write<BodyStream>| async move {
        match require(&cmd.principal, scope) {
            Ok(()) => Ok(cmd),
            Err(refused) => Err(answered(refused.into_response(), cmd.standing.as_ref())),
        }
    })
}

/// Authentication, then `body`, then the rate limit: the pieces every command shares.
fn admitted<B, F>(
    state: Arc<AppState>,
    body: F,
) -> impl Filter<Extract = (Write<B>,), Error = Rejection> + Clone
where
    F: Filter<Extract = (B,), Error = Rejection> + Clone + Send + Sync + 'static,
    B: Send + 'static,
{
    with_state(state.clone())
        .and(authenticated(state))
        .and(request_meta())
        .and(body)
        .and_then(
            |state: Arc<AppState>, principal: Principal, meta: RequestMeta, body: B| async move {
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
                Ok(Write {
                    state,
                    principal,
                    meta,
                    body,
                    standing,
                    claim: None,
                })
            },
        )
}

impl Write {
    /// Claims the request's `Idempotency-Key` (on `POST`s), or answers in its place: the
    /// stored answer of an earlier identical request, or a conflict.
    async fn claim_key(
        mut self,
        method: Method,
        path: warp::path::FullPath,
        headers: HeaderMap,
    ) -> Result<Self, Rejection> {
        let standing = self.standing;
        let refuse = |response: Response| answered(response, standing.as_ref());
        if method != Method::POST {
            return Ok(self);
        }
        let Some(key) = idempotency_key(&headers).map_err(|e| refuse(e.into_response()))? else {
            return Ok(self);
        };
        let fingerprint = idempotency::fingerprint(method.as_str(), path.as_str(), &self.body);
        let outcome = idempotency::claim(
            &self.state.pool,
            self.principal.tenant.as_str(),
            self.principal.user.as_str(),
            &key,
            &fingerprint,
        )
        .await
        .map_err(|e| {
            tracing::error!("claiming an idempotency key failed: {e}");
            refuse(store_unavailable().into_response())
        })?;
        match outcome {
            Lookup::Claimed(claim) => {
                self.claim = Some(claim);
                Ok(self)
            }
            Lookup::Replay { status, body } => {
                let mut response = replayed(status, &body);
                response.headers_mut().insert(
                    HeaderName::from_static("idempotent-replayed"),
                    HeaderValue::from_static("true"),
                );
                Err(refuse(response))
            }
            Lookup::Reused => Err(refuse(
                ApiError::of(
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used for a different request",
                )
                .into_response(),
            )),
            Lookup::InProgress => Err(refuse(
                ApiError::of(
                    ErrorCode::IdempotencyKeyInUse,
                    "a request with this Idempotency-Key is still running",
                )
                .retry_after(1)
                .into_response(),
            )),
        }
    }
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

impl<B> Write<B> {
    /// Turns the handler's result into the answer: stored under the idempotency key (or the
    /// claim released on a 5xx), with the rate-limit headers, counted under `route`.
    pub async fn finish(
        self,
        route: &'static str,
        started: Instant,
        result: Result<Response, ApiError>,
    ) -> Result<Response, Rejection> {
        // Only what the answer needs is kept across the awaits below, so a body (a stream
        // the handler may not have finished) need not be shareable between threads.
        let Self {
            state,
            standing,
            claim,
            ..
        } = self;
        let response = result.unwrap_or_else(ApiError::into_response);
        let status = response.status();
        let response = match &claim {
            None => response,
            Some(claim) => remember(&state.pool, claim, response).await,
        };
        crate::metrics::record_request(route, status.as_u16(), started);
        Ok(with_headers(response, standing.as_ref()))
    }
}

async fn remember(pool: &sqlx::PgPool, claim: &Claim, response: Response) -> Response {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::StreamExt;
    use serde_json::{json, Value};
    use tokio::sync::mpsc;

    use super::*;
    use crate::problem::{json_response, recover};

    /// The largest streamed body the test route takes.
    const LIMIT: u64 = 8;

    /// A gateway's state on a fresh database, with `rate_limit` state-changing requests per
    /// minute (0: off), under a Redis prefix of its own.
    async fn state(rate_limit: u32) -> Arc<AppState> {
        let (options, _pool) = chat4all_testsupport::database::fresh_database().await;
        let env = [
            (
                "DATABASE_URL",
                sqlx::ConnectOptions::to_url_lossy(&options).to_string(),
            ),
            ("CHAT4ALL_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "CHAT4ALL_TOPIC_PREFIX",
                format!("t{}", uuid::Uuid::new_v4().simple()),
            ),
            ("CHAT4ALL_RATE_LIMIT_PER_MINUTE", rate_limit.to_string()),
        ];
        let settings = chat4all_platform::Settings::load_from(
            None,
            env.map(|(name, value)| (name.to_owned(), value)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let app = crate::Application::build(&settings)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        app.state.clone()
    }

    fn token(state: &AppState, scopes: &[Scope]) -> String {
        state
            .tokens
            .issue("acme", "alice", "c4a_test", scopes)
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    }

    /// Serves `PUT /chunk`, a streamed command that reports each chunk's length on `seen` as it
    /// arrives and answers with the bytes it read; `runs` counts the handler's runs.
    async fn serve(
        state: Arc<AppState>,
        seen: mpsc::UnboundedSender<usize>,
    ) -> (String, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let route = warp::path!("chunk")
            .and(warp::put())
            .and(streamed_command(state, Scope::Write, LIMIT))
            .and_then(move |mut cmd: Write<BodyStream>| {
                counted.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                async move {
                    let started = Instant::now();
                    let mut read = 0;
                    let mut failed = None;
                    while let Some(chunk) = cmd.body.next().await {
                        match chunk {
                            Ok(chunk) => {
                                read += chunk.len();
                                let _ = seen.send(chunk.len());
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    let result = match failed {
                        Some(e) => Err(e),
                        None => Ok(json_response(StatusCode::OK, &json!({"read": read}))),
                    };
                    cmd.finish("test_chunk", started, result).await
                }
            })
            .recover(recover)
            .unify();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!(
            "http://{}/chunk",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        tokio::spawn(warp::serve(route).incoming(listener).run());
        (url, runs)
    }

    async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    #[tokio::test]
    async fn a_streamed_body_reaches_the_handler_as_it_arrives() {
        let state = state(0).await;
        let token = token(&state, &[Scope::Write]);
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let (url, _) = serve(state, seen_tx).await;
        // The second chunk is sent only once the handler has read the first: a body buffered
        // whole before the handler ran would never complete.
        let (first_read_tx, first_read) = tokio::sync::oneshot::channel::<()>();
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abcd"))])
            .chain(futures::stream::once(async move {
                let _ = first_read.await;
                Ok(Bytes::from_static(b"efgh"))
            }));
        let request = reqwest::Client::new()
            .put(&url)
            .bearer_auth(&token)
            .body(reqwest::Body::wrap_stream(body));
        let sent = tokio::spawn(answer(request));
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), seen.recv()).await;
        assert_eq!(
            first.ok().flatten(),
            Some(4),
            "the first chunk never reached the handler"
        );
        let _ = first_read_tx.send(());
        let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(10), sent)
            .await
            .unwrap_or_else(|_| panic!("no answer"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((status, body), (200, json!({"read": 8})));
    }

    #[tokio::test]
    async fn a_streamed_body_past_its_bound_is_cut_off_with_413() {
        let state = state(0).await;
        let token = token(&state, &[Scope::Write]);
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let (url, runs) = serve(state, seen_tx).await;
        let http = reqwest::Client::new();

        // Announced too large: refused before the handler runs.
        let (status, body) = answer(http.put(&url).bearer_auth(&token).body(vec![b'x'; 9])).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (413, Some("payload_too_large"))
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0);

        // Chunked, no length: the handler gets what fits, then the 413.
        let chunks = futures::stream::iter(
            (0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"abcd"))),
        );
        let request = http
            .put(&url)
            .bearer_auth(&token)
            .body(reqwest::Body::wrap_stream(chunks));
        let (status, body) = answer(request).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (413, Some("payload_too_large"))
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let mut read = 0;
        while let Ok(n) = seen.try_recv() {
            read += n;
        }
        assert!(read as u64 <= LIMIT, "the handler was given {read} bytes");
    }

    #[tokio::test]
    async fn a_streamed_command_is_authenticated_scoped_and_rate_limited_before_it_reads() {
        let state = state(1).await;
        let writer = token(&state, &[Scope::Write]);
        let reader = token(&state, &[Scope::Read]);
        let (seen_tx, _seen) = mpsc::unbounded_channel();
        let (url, runs) = serve(state, seen_tx).await;
        let http = reqwest::Client::new();

        let (status, body) = answer(http.put(&url).body("abcd")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_token"))
        );

        let (status, body) = answer(http.put(&url).bearer_auth(&reader).body("abcd")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("insufficient_scope"))
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0);

        // The reader's refusal counted against alice's limit of one a minute.
        let (status, body) = answer(http.put(&url).bearer_auth(&writer).body("abcd")).await;
        assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}
