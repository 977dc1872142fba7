//! WebSocket push: `GET /ws`, fed by the projector's announcements on Redis.
//!
//! The token is checked before the upgrade (a bad one is an HTTP 401 like any other request).
//! Each instance shares one Redis subscription per channel among its sockets ([`hub`]); each
//! socket keeps its conversations in `seq` order, resumes from the read models and is closed
//! rather than allowed to buffer without bound ([`socket`]).

pub mod hub;
mod leases;
mod socket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use warp::http::header::AUTHORIZATION;
use warp::http::{HeaderMap, StatusCode};
use warp::hyper::upgrade::OnUpgrade;
use warp::{Filter, Rejection, Reply};

use crate::auth::Principal;
use crate::filters::strip_scheme;
use crate::problem::{ApiError, ErrorCode};
use crate::AppState;

pub use hub::Hub;

pub const CLOSE_UNAUTHORIZED: u16 = 4001;
pub const CLOSE_TOO_MANY: u16 = 4002;
pub const CLOSE_MALFORMED: u16 = 4003;
pub const CLOSE_RATE: u16 = 4008;

pub use chat4all_platform::PushSettings as PushConfig;

/// The push layer of one gateway instance.
pub struct Push {
    hub: Hub,
    queries: chat4all_projections::Queries,
    config: PushConfig,
    /// Names this instance in `connection.established`.
    instance: String,
    /// Sockets per user on this instance.
    connections: Mutex<HashMap<(String, String), usize>>,
    /// Sockets per user on every instance.
    leases: leases::Leases,
    next_id: AtomicU64,
    stop: CancellationToken,
}

impl Push {
    pub fn new(
        hub: Hub,
        redis: Option<redis::aio::ConnectionManager>,
        prefix: &str,
        queries: chat4all_projections::Queries,
        config: PushConfig,
        stop: CancellationToken,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".to_owned());
        let instance = format!("{host}-{}", std::process::id());
        Self {
            hub,
            queries,
            config,
            leases: leases::Leases::new(redis, prefix, &instance),
            instance,
            connections: Mutex::default(),
            next_id: AtomicU64::new(1),
            stop,
        }
    }

    /// Closes every socket (with 1001) and stops the hub.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn key(principal: &Principal) -> (String, String) {
        (
            principal.tenant.as_str().to_owned(),
            principal.user.as_str().to_owned(),
        )
    }

    /// Renews this instance's socket leases until the push layer stops.
    pub async fn renew_leases(&self) {
        self.leases.renew_periodically(self.stop.clone()).await;
    }

    /// Counts a new socket of the user, here and across instances; false when the user already
    /// has as many as allowed.
    async fn admit(&self, principal: &Principal, socket: u64) -> bool {
        let limit = self.config.connections_per_user;
        {
            let mut connections = self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = connections.entry(Self::key(principal)).or_default();
            if *count >= limit {
                return false;
            }
            *count += 1;
        }
        let admission = self
            .leases
            .admit(
                principal.tenant.as_str(),
                principal.user.as_str(),
                socket,
                limit,
            )
            .await;
        if admission == leases::Admission::Refused {
            self.release_local(principal);
            return false;
        }
        true
    }

    fn release(&self, principal: &Principal, socket: u64) {
        self.leases.release(socket);
        self.release_local(principal);
    }

    fn release_local(&self, principal: &Principal) {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = Self::key(principal);
        if let Some(count) = connections.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                connections.remove(&key);
            }
        }
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The caller of `/ws`: the token from `?token=` or `Authorization: Bearer`; 401 otherwise.
fn ws_principal(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    warp::query::<TokenQuery>()
        .or(warp::any().map(|| TokenQuery { token: None }))
        .unify()
        .and(warp::header::headers_cloned())
        .and_then(move |query: TokenQuery, headers: HeaderMap| {
            let state = state.clone();
            async move {
                let token = query.token.or_else(|| {
                    headers
                        .get(AUTHORIZATION)
                        .and_then(|h| h.to_str().ok())
                        .and_then(|h| strip_scheme(h, "Bearer"))
                        .map(|t| t.trim().to_owned())
                });
                let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
                    warp::reject::custom(ApiError::unauthorized(
                        "a token is required: ?token=<access token> or Authorization: Bearer",
                    ))
                })?;
                state
                    .tokens
                    .verify(&token)
                    .await
                    .map_err(|e| warp::reject::custom(ApiError::unauthorized(e.to_string())))
            }
        })
}

/// The WebSocket handshake headers of a request, if it is one.
fn websocket_key() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::header::headers_cloned().and_then(|headers: HeaderMap| async move {
        let has = |name: &str, token: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|v| v.trim().eq_ignore_ascii_case(token))
        };
        let key = headers
            .get("sec-websocket-key")
            .and_then(|k| k.to_str().ok())
            .map(str::to_owned);
        match key {
            Some(key)
                if has("connection", "upgrade")
                    && has("upgrade", "websocket")
                    && has("sec-websocket-version", "13") =>
            {
                Ok(key)
            }
            _ => Err(warp::reject::custom(ApiError::of(
                ErrorCode::WebsocketUpgradeRequired,
                "GET /ws is a WebSocket (RFC 6455) handshake",
            ))),
        }
    })
}

/// Small buffers per socket: frames are small, and 10,000 idle sockets must fit in little memory.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// `GET /ws`.
pub fn route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let push = state.push.clone();
    warp::path("ws")
        .and(warp::path::end())
        .and(warp::get())
        .and(ws_principal(state))
        .and(websocket_key())
        .and(warp::ext::optional::<OnUpgrade>())
        .and_then(
            move |principal: Principal, key: String, upgrade: Option<OnUpgrade>| {
                let push = push.clone();
                async move {
                    let upgrade = upgrade.ok_or_else(|| {
                        warp::reject::custom(ApiError::of(
                            ErrorCode::WebsocketUpgradeRequired,
                            "this connection cannot be upgraded",
                        ))
                    })?;
                    tokio::spawn(async move {
                        let upgraded = match upgrade.await {
                            Ok(upgraded) => upgraded,
                            Err(e) => {
                                tracing::debug!("push: the upgrade failed: {e}");
                                return;
                            }
                        };
                        let socket = socket::Socket::from_raw_socket(
                            TokioIo::new(upgraded),
                            Role::Server,
                            Some(socket_config()),
                        )
                        .await;
                        let id = push.next_id();
                        if push.admit(&principal, id).await {
                            socket::serve(socket, principal, id, push).await;
                        } else {
                            socket::refuse(
                                socket,
                                CLOSE_TOO_MANY,
                                "too many connections for this user",
                            )
                            .await;
                        }
                    });
                    let response = http::Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("connection", "upgrade")
                        .header("upgrade", "websocket")
                        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                        .body(warp::hyper::body::Bytes::new())
                        .map_err(|_| {
                            warp::reject::custom(ApiError::of(
                                ErrorCode::InternalError,
                                "the handshake could not be answered",
                            ))
                        })?;
                    Ok::<_, Rejection>(response.into_response())
                }
            },
        )
}
