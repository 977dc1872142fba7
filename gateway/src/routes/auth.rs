//! The OAuth 2.0 endpoints: `POST /auth/token` (client credentials, RFC 6749 §4.4, and the
//! refresh grant, §6), `/auth/refresh`, `/auth/revoke` (RFC 7009) and `/auth/introspect`
//! (RFC 7662).
//!
//! Client authentication comes in the body (`client_id`, `client_secret`) or as HTTP Basic;
//! using both at once is refused (RFC 6749 §2.3). The body is a form or JSON. Repeated failures
//! for one client id or from one address are throttled (429) across every instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::table::{route, RouteTable};
use crate::auth::clients::{find_client, verify_secret, ClientRecord};
use crate::auth::{refresh, Scope};
use crate::body::bounded_bytes;
use crate::filters::{strip_scheme, with_state};
use crate::problem::{json_response, OAuthCode, OAuthError};
use crate::AppState;

/// Clients differ in whether they pad Basic credentials; both decode.
const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Argon2 checks running at once; each takes ~19 MiB and a core for tens of milliseconds, so an
/// unbounded number would let anyone exhaust the machine without credentials.
pub const MAX_SECRET_CHECKS: usize = 4;
const SECRET_CHECK_WAIT: Duration = Duration::from_secs(5);

/// Token requests are small; anything bigger is not one.
const MAX_TOKEN_REQUEST_BYTES: u64 = 16 * 1024;

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    refresh_token: Option<String>,
    token: Option<String>,
    token_type_hint: Option<String>,
}

/// What one `/auth/*` endpoint does with a parsed request.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Token,
    Refresh,
    Revoke,
    Introspect,
}

impl Endpoint {
    fn route(self) -> &'static str {
        match self {
            Self::Token => "auth_token",
            Self::Refresh => "auth_refresh",
            Self::Revoke => "auth_revoke",
            Self::Introspect => "auth_introspect",
        }
    }
}

/// A request's facts the `/auth/*` endpoints need, read raw so that a header that is not
/// visible ASCII is an OAuth error like any other bad credential, not a generic rejection.
struct Raw {
    content_type: Option<String>,
    authorization: Option<String>,
    address: Option<String>,
    body: Bytes,
}

pub fn routes(
    state: Arc<AppState>,
    table: &mut RouteTable,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    route!(table, POST "auth" / "token")
        .map(|| Endpoint::Token)
        .or(route!(table, POST "auth" / "refresh").map(|| Endpoint::Refresh))
        .unify()
        .or(route!(table, POST "auth" / "revoke").map(|| Endpoint::Revoke))
        .unify()
        .or(route!(table, POST "auth" / "introspect").map(|| Endpoint::Introspect))
        .unify()
        .and(with_state(state))
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(bounded_bytes(MAX_TOKEN_REQUEST_BYTES).or_else(|_| async {
            Err(warp::reject::custom(OAuthError::new(
                OAuthCode::InvalidRequest,
                "the request body is too large",
            )))
        }))
        .and_then(
            |endpoint: Endpoint,
             state: Arc<AppState>,
             headers: HeaderMap,
             remote: Option<std::net::SocketAddr>,
             body: Bytes| async move {
                let started = Instant::now();
                let text = |name: header::HeaderName| {
                    headers
                        .get(name)
                        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
                };
                let raw = Raw {
                    content_type: text(header::CONTENT_TYPE),
                    authorization: text(header::AUTHORIZATION),
                    address: remote.map(|a| a.ip().to_string()),
                    body,
                };
                let result = match endpoint {
                    Endpoint::Token => token(&state, &raw).await,
                    Endpoint::Refresh => refresh_endpoint(&state, &raw).await,
                    Endpoint::Revoke => revoke(&state, &raw).await,
                    Endpoint::Introspect => introspect(&state, &raw).await,
                };
                let status = result
                    .as_ref()
                    .map_or_else(OAuthError::status, Response::status);
                crate::metrics::record_request(endpoint.route(), status.as_u16(), started);
                result.map_err(warp::reject::custom)
            },
        )
}

fn parse_request(content_type: Option<&str>, body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media.as_str() {
        "application/json" => serde_json::from_slice(body).map_err(|e| {
            OAuthError::new(
                OAuthCode::InvalidRequest,
                format!("the JSON body is invalid: {e}"),
            )
        }),
        "application/x-www-form-urlencoded" | "" => {
            serde_urlencoded::from_bytes(body).map_err(|e| {
                OAuthError::new(
                    OAuthCode::InvalidRequest,
                    format!("the form body is invalid: {e}"),
                )
            })
        }
        other => Err(OAuthError::new(
            OAuthCode::InvalidRequest,
            format!("unsupported content type {other:?}; use a form or JSON"),
        )),
    }
}

/// `client_id:client_secret` from an HTTP Basic header, both form-urlencoded (RFC 6749 §2.3.1).
fn basic_credentials(header: &str) -> Result<(String, String), OAuthError> {
    let encoded = strip_scheme(header, "Basic").ok_or_else(OAuthError::invalid_client)?;
    let decoded = BASE64_ANY_PADDING
        .decode(encoded.trim())
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(OAuthError::invalid_client)?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(OAuthError::invalid_client)?;
    let unescape = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|mut v| v.pop())
            .map(|(_, v)| v)
    };
    match (unescape(id), unescape(secret)) {
        (Some(id), Some(secret)) => Ok((id, secret)),
        _ => Err(OAuthError::invalid_client()),
    }
}

/// Authenticates the client of a request (HTTP Basic or body credentials, not both), throttling
/// repeated failures per client id and per source address.
async fn authenticate_client(
    state: &AppState,
    raw: &Raw,
    request: &TokenRequest,
) -> Result<ClientRecord, OAuthError> {
    let (client_id, secret) = match (
        raw.authorization.as_deref(),
        &request.client_id,
        &request.client_secret,
    ) {
        (Some(header), None, None) => basic_credentials(header)?,
        (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
        (Some(_), _, _) => {
            return Err(OAuthError::new(
                OAuthCode::InvalidRequest,
                "authenticate the client with HTTP Basic or in the body, not both",
            ))
        }
        (None, _, _) => return Err(OAuthError::invalid_client()),
    };
    let address = raw.address.as_deref();
    if let Some(wait) = state.auth_throttle.blocked(&client_id, address).await {
        return Err(OAuthError::throttled(wait));
    }
    let client = find_client(&state.pool, &client_id).await.map_err(|e| {
        tracing::error!("looking up a client failed: {e}");
        OAuthError::server_error()
    })?;
    // An unknown client costs as much as a wrong secret, so timing does not reveal which ids exist.
    let hash = client.as_ref().map_or_else(
        || crate::auth::clients::DUMMY_HASH.to_owned(),
        |c| c.secret_hash.clone(),
    );
    let Ok(Ok(_permit)) =
        tokio::time::timeout(SECRET_CHECK_WAIT, state.secret_checks.acquire()).await
    else {
        return Err(OAuthError::server_error());
    };
    let matches = tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
        .await
        .unwrap_or(false);
    match client {
        Some(client) if matches => Ok(client),
        _ => {
            tracing::info!(client_id = %client_id, "client authentication failed");
            state.auth_throttle.failed(&client_id, address).await;
            Err(OAuthError::invalid_client())
        }
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Signs an access token and answers the token response with `refresh_token`.
fn token_response(
    state: &AppState,
    access: (String, crate::auth::Claims),
    refresh_token: &str,
) -> Response {
    let (access_token, claims) = access;
    no_store(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": state.tokens.ttl_secs(),
            "refresh_token": refresh_token,
            "scope": claims.scope,
        }),
    ))
}

fn signing_failed(e: &jsonwebtoken::errors::Error) -> OAuthError {
    tracing::error!("signing a token failed: {e}");
    OAuthError::server_error()
}

fn storage_failed(e: &sqlx::Error) -> OAuthError {
    tracing::error!("storing a refresh token failed: {e}");
    OAuthError::server_error()
}

async fn token(state: &AppState, raw: &Raw) -> Result<Response, OAuthError> {
    let request = parse_request(raw.content_type.as_deref(), &raw.body)?;
    let grant_type = request
        .grant_type
        .as_deref()
        .ok_or_else(|| OAuthError::new(OAuthCode::InvalidRequest, "grant_type is required"))?;
    match grant_type {
        "client_credentials" => client_credentials(state, raw, &request).await,
        "refresh_token" => {
            // A client that authenticates must own the token; the token alone also suffices,
            // as with `/auth/refresh`.
            let client = if raw.authorization.is_some() || request.client_id.is_some() {
                Some(authenticate_client(state, raw, &request).await?)
            } else {
                None
            };
            let token = request.refresh_token.as_deref().ok_or_else(|| {
                OAuthError::new(OAuthCode::InvalidRequest, "refresh_token is required")
            })?;
            refresh(state, token, client.as_ref()).await
        }
        other => Err(OAuthError::new(
            OAuthCode::UnsupportedGrantType,
            format!("grant_type {other:?} is not supported"),
        )),
    }
}

async fn client_credentials(
    state: &AppState,
    raw: &Raw,
    request: &TokenRequest,
) -> Result<Response, OAuthError> {
    let client = authenticate_client(state, raw, request).await?;
    let allowed: Vec<Scope> = client
        .scopes
        .iter()
        .filter_map(|s| Scope::parse(s))
        .collect();
    let scopes = match request.scope.as_deref().map(str::trim) {
        None | Some("") => allowed,
        Some(requested) => {
            let requested = Scope::parse_list(requested).map_err(|unknown| {
                OAuthError::new(
                    OAuthCode::InvalidScope,
                    format!("unknown scope {unknown:?}"),
                )
            })?;
            if let Some(extra) = requested.iter().find(|s| !allowed.contains(s)) {
                return Err(OAuthError::new(
                    OAuthCode::InvalidScope,
                    format!("the client may not request the '{}' scope", extra.as_str()),
                ));
            }
            requested
        }
    };
    let access = state
        .tokens
        .issue(
            &client.tenant_id,
            &client.user_id,
            &client.client_id,
            &scopes,
        )
        .map_err(|e| signing_failed(&e))?;
    let scope_names: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    let refresh_token = refresh::issue(
        &state.pool,
        &client.client_id,
        &scope_names,
        state.refresh_ttl_secs,
        (&access.1.jti, access.1.exp),
    )
    .await
    .map_err(|e| storage_failed(&e))?;
    Ok(token_response(state, access, &refresh_token))
}

/// The refresh grant: rotation, and family revocation on replay.
async fn refresh(
    state: &AppState,
    token: &str,
    client: Option<&ClientRecord>,
) -> Result<Response, OAuthError> {
    let invalid = || OAuthError::new(OAuthCode::InvalidGrant, "the refresh token is invalid");
    if !refresh::looks_like_refresh_token(token) {
        return Err(invalid());
    }
    if let Some(client) = client {
        let grant = refresh::find(&state.pool, token)
            .await
            .map_err(|e| storage_failed(&e))?;
        if grant.is_none_or(|g| g.client_id != client.client_id) {
            return Err(invalid());
        }
    }
    // The next access token's id and expiry are fixed before it is signed, so the rotation can
    // record them for a later family revocation.
    let jti = uuid::Uuid::new_v4().to_string();
    let exp = crate::auth::now_secs() + state.tokens.ttl_secs();
    let rotation = refresh::rotate(&state.pool, token, state.refresh_ttl_secs, (&jti, exp))
        .await
        .map_err(|e| storage_failed(&e))?;
    match rotation {
        refresh::Rotation::Invalid => Err(invalid()),
        refresh::Rotation::Replayed { access, grant } => {
            tracing::warn!(
                client_id = %grant.client_id,
                family = %grant.family_id,
                "a rotated refresh token was presented again; its family is revoked"
            );
            revoke_access_tokens(state, &access, &grant.tenant_id, &grant.user_id).await;
            Err(OAuthError::new(
                OAuthCode::InvalidGrant,
                "the refresh token was already used; every token of its family is revoked",
            ))
        }
        refresh::Rotation::Rotated { token: next, grant } => {
            let scopes: Vec<Scope> = grant
                .scopes
                .iter()
                .filter_map(|s| Scope::parse(s))
                .collect();
            let access = state
                .tokens
                .issue_with(
                    &grant.tenant_id,
                    &grant.user_id,
                    &grant.client_id,
                    &scopes,
                    jti,
                    exp,
                )
                .map_err(|e| signing_failed(&e))?;
            Ok(token_response(state, access, &next))
        }
    }
}

async fn revoke_access_tokens(
    state: &AppState,
    access: &[(String, u64)],
    tenant: &str,
    user: &str,
) {
    for (jti, exp) in access {
        if let Err(e) = state
            .tokens
            .revocations()
            .revoke(jti, *exp, tenant, user)
            .await
        {
            tracing::error!("revoking access token {jti} failed: {e}");
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

/// `POST /auth/refresh {"refresh_token"}`: the refresh grant without client authentication.
async fn refresh_endpoint(state: &AppState, raw: &Raw) -> Result<Response, OAuthError> {
    let body: RefreshBody = serde_json::from_slice(&raw.body).map_err(|e| {
        OAuthError::new(
            OAuthCode::InvalidRequest,
            format!("expected {{\"refresh_token\": \"...\"}}: {e}"),
        )
    })?;
    refresh(state, &body.refresh_token, None).await
}

/// The authenticated client of a revocation or introspection request, and the request, which
/// names a `token`.
async fn client_and_token(
    state: &AppState,
    raw: &Raw,
) -> Result<(ClientRecord, TokenRequest), OAuthError> {
    let request = parse_request(raw.content_type.as_deref(), &raw.body)?;
    let client = authenticate_client(state, raw, &request).await?;
    if request.token.is_none() {
        return Err(OAuthError::new(
            OAuthCode::InvalidRequest,
            "token is required",
        ));
    }
    Ok((client, request))
}

/// `POST /auth/revoke` (RFC 7009): 200 whether or not the token was known.
async fn revoke(state: &AppState, raw: &Raw) -> Result<Response, OAuthError> {
    let (client, request) = client_and_token(state, raw).await?;
    let token = request.token.as_deref().unwrap_or_default();
    if let Some(hint) = request.token_type_hint.as_deref() {
        if !matches!(hint, "access_token" | "refresh_token") {
            return Err(OAuthError::new(
                OAuthCode::UnsupportedTokenType,
                format!("token_type_hint {hint:?} is not supported"),
            ));
        }
    }
    if refresh::looks_like_refresh_token(token) {
        let revoked = refresh::revoke(&state.pool, token, &client.client_id)
            .await
            .map_err(|e| storage_failed(&e))?;
        if let Some(access) = revoked {
            revoke_access_tokens(state, &access, &client.tenant_id, &client.user_id).await;
        }
    } else if let Ok(principal) = state.tokens.verify_signed(token).await {
        // Only the client a token was issued to may revoke it (RFC 7009 §2.1).
        if principal.client_id == client.client_id {
            state
                .tokens
                .revocations()
                .revoke(
                    &principal.jti,
                    principal.expires_at,
                    principal.tenant.as_str(),
                    principal.user.as_str(),
                )
                .await
                .map_err(|e| {
                    tracing::error!("recording a revocation failed: {e}");
                    OAuthError::server_error()
                })?;
        }
    }
    Ok(no_store(json_response(
        StatusCode::OK,
        &serde_json::json!({}),
    )))
}

/// `POST /auth/introspect` (RFC 7662). Tokens of other tenants are inactive to the caller.
async fn introspect(state: &AppState, raw: &Raw) -> Result<Response, OAuthError> {
    let (client, request) = client_and_token(state, raw).await?;
    let token = request.token.as_deref().unwrap_or_default();
    let inactive = || {
        no_store(json_response(
            StatusCode::OK,
            &serde_json::json!({"active": false}),
        ))
    };
    if refresh::looks_like_refresh_token(token) {
        let grant = refresh::find(&state.pool, token)
            .await
            .map_err(|e| storage_failed(&e))?;
        return Ok(match grant {
            Some(grant) if grant.active() && grant.tenant_id == client.tenant_id => {
                no_store(json_response(
                    StatusCode::OK,
                    &serde_json::json!({
                        "active": true,
                        "token_type": "refresh_token",
                        "sub": grant.user_id,
                        "tenant_id": grant.tenant_id,
                        "client_id": grant.client_id,
                        "scope": grant.scopes.join(" "),
                        "exp": grant.expires_at.timestamp(),
                    }),
                ))
            }
            _ => inactive(),
        });
    }
    Ok(match state.tokens.verify(token).await {
        Ok(principal) if principal.tenant.as_str() == client.tenant_id => no_store(json_response(
            StatusCode::OK,
            &serde_json::json!({
                "active": true,
                "token_type": "access_token",
                "sub": principal.user.as_str(),
                "tenant_id": principal.tenant.as_str(),
                "client_id": principal.client_id,
                "scope": Scope::join(&principal.scopes),
                "exp": principal.expires_at,
                "jti": principal.jti,
            }),
        )),
        _ => inactive(),
    })
}

#[cfg(test)]
mod tests {
    use super::basic_credentials;
    use base64::Engine;

    #[test]
    fn basic_credentials_are_decoded_and_unescaped() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("c4a_x:s%2Bcret")
        );
        let (id, secret) = basic_credentials(&header).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((id.as_str(), secret.as_str()), ("c4a_x", "s+cret"));
        assert!(basic_credentials("Basic !!!").is_err());
        assert!(basic_credentials("Bearer abc").is_err());
        let unpadded = format!(
            "BASIC {}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode("c4a_x:s")
        );
        assert!(basic_credentials(&unpadded).is_ok());
    }
}
