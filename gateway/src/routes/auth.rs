//! `POST /auth/token`: the OAuth 2.0 client credentials grant (RFC 6749 §4.4).
//!
//! Client authentication comes in the body (`client_id`, `client_secret`) or as HTTP Basic;
//! using both at once is refused (RFC 6749 §2.3). The body is a form or JSON.

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

use crate::auth::clients::{find_client, verify_secret};
use crate::auth::Scope;
use crate::body::bounded_bytes;
use crate::filters::{strip_scheme, with_state};
use crate::problem::{json_response, OAuthError};
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

#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("auth" / "token")
        .and(warp::post())
        .and(with_state(state))
        .and(warp::header::headers_cloned())
        .and(bounded_bytes(MAX_TOKEN_REQUEST_BYTES).or_else(|_| async {
            Err(warp::reject::custom(OAuthError::bad_request(
                "invalid_request",
                "the token request body is too large",
            )))
        }))
        .and_then(
            |state: Arc<AppState>, headers: HeaderMap, body: Bytes| async move {
                let started = Instant::now();
                // Read raw, so that a header that is not visible ASCII is an OAuth error like any
                // other bad credential rather than a generic header rejection.
                let text = |name: header::HeaderName| {
                    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
                };
                let result = token(
                    &state,
                    text(header::CONTENT_TYPE),
                    text(header::AUTHORIZATION),
                    &body,
                )
                .await;
                let status = result.as_ref().map_or_else(|e| e.status, Response::status);
                crate::metrics::record_request("auth_token", status.as_u16(), started);
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
            OAuthError::bad_request("invalid_request", format!("the JSON body is invalid: {e}"))
        }),
        "application/x-www-form-urlencoded" | "" => {
            serde_urlencoded::from_bytes(body).map_err(|e| {
                OAuthError::bad_request("invalid_request", format!("the form body is invalid: {e}"))
            })
        }
        other => Err(OAuthError::bad_request(
            "invalid_request",
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

async fn token(
    state: &AppState,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let request = parse_request(content_type, body)?;
    let grant_type = request
        .grant_type
        .as_deref()
        .ok_or_else(|| OAuthError::bad_request("invalid_request", "grant_type is required"))?;
    if grant_type != "client_credentials" {
        return Err(OAuthError::bad_request(
            "unsupported_grant_type",
            format!("grant_type {grant_type:?} is not supported"),
        ));
    }
    let (client_id, secret) = match (authorization, request.client_id, request.client_secret) {
        (Some(header), None, None) => basic_credentials(header)?,
        (None, Some(id), Some(secret)) => (id, secret),
        (Some(_), _, _) => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "authenticate the client with HTTP Basic or in the body, not both",
            ))
        }
        (None, _, _) => return Err(OAuthError::invalid_client()),
    };
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
    let client = match client {
        Some(client) if matches => client,
        _ => {
            tracing::info!(client_id = %client_id, "client authentication failed");
            return Err(OAuthError::invalid_client());
        }
    };
    let allowed: Vec<Scope> = client
        .scopes
        .iter()
        .filter_map(|s| Scope::parse(s))
        .collect();
    let scopes = match request.scope.as_deref().map(str::trim) {
        None | Some("") => allowed,
        Some(requested) => {
            let requested = Scope::parse_list(requested).map_err(|unknown| {
                OAuthError::bad_request("invalid_scope", format!("unknown scope {unknown:?}"))
            })?;
            if let Some(extra) = requested.iter().find(|s| !allowed.contains(s)) {
                return Err(OAuthError::bad_request(
                    "invalid_scope",
                    format!("the client may not request the '{}' scope", extra.as_str()),
                ));
            }
            requested
        }
    };
    let (access_token, _claims) = state
        .tokens
        .issue(
            &client.tenant_id,
            &client.user_id,
            &client.client_id,
            &scopes,
        )
        .map_err(|e| {
            tracing::error!("signing a token failed: {e}");
            OAuthError::server_error()
        })?;
    let mut response = json_response(
        StatusCode::OK,
        &serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": state.tokens.ttl_secs(),
            "scope": Scope::join(&scopes),
        }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
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
