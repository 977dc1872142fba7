//! Operations endpoints: liveness, readiness, metrics, the JWK set, the OpenAPI document.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use chat4all_platform::lifecycle;

use super::table::{route, RouteTable};
use crate::filters::with_state;
use crate::problem::{json_response, ErrorCode, OAuthCode};
use crate::AppState;

/// The OpenAPI 3.1 document of every route, as written; a test checks its paths against the
/// route table. The error codes are not written in it but filled in by [`openapi_document`].
const OPENAPI: &str = include_str!("../../openapi.json");

/// Where the document's error schemas keep their codes, and the codes that go there.
fn code_lists() -> [(&'static str, Vec<&'static str>); 2] {
    [
        (
            "/components/schemas/Problem/properties/code",
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect(),
        ),
        (
            "/components/schemas/OAuthError/properties/error",
            OAuthCode::ALL.iter().map(|c| c.as_str()).collect(),
        ),
    ]
}

/// The served OpenAPI document: the written one with every error code the gateway can answer
/// listed (`enum`) from the code enums, so the document cannot drift from the code.
///
/// # Errors
/// A written document that is not JSON, or lacks one of the error schemas.
fn openapi_document() -> Result<Bytes, String> {
    let mut document: Value =
        serde_json::from_str(OPENAPI).map_err(|e| format!("openapi.json is not JSON: {e}"))?;
    for (pointer, codes) in code_lists() {
        let schema = document
            .pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("openapi.json has no schema at {pointer}"))?;
        schema.insert("enum".to_owned(), codes.into());
    }
    serde_json::to_vec(&document)
        .map(Bytes::from)
        .map_err(|e| format!("the OpenAPI document cannot be written: {e}"))
}

pub fn routes(
    state: Arc<AppState>,
    table: &mut RouteTable,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    // Liveness: answering at all is the point; the roles say what the process is doing.
    let health = route!(table, GET "health")
        .and(with_state(state.clone()))
        .map(|state: Arc<AppState>| {
            let (live, body) = lifecycle::liveness(&state.roles);
            let status = if live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(status, &body)
        });
    let ready = route!(table, GET "ready")
        .and(with_state(state.clone()))
        .then(|state: Arc<AppState>| async move {
            let report = lifecycle::readiness(&state.readiness, &state.roles).await;
            let status = if report.dependencies.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(status, &report)
        });
    let metrics = route!(table, GET "metrics").map(|| {
        let mut response = Response::new(crate::metrics::render().into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    });
    let jwks = route!(table, GET ".well-known" / "jwks.json")
        .and(with_state(state))
        .map(|state: Arc<AppState>| json_response(StatusCode::OK, &state.tokens.jwks()));
    let document = openapi_document().unwrap_or_else(|e| {
        // Caught by this module's tests; a document without its code lists still beats none.
        tracing::error!("serving the OpenAPI document as written: {e}");
        Bytes::from_static(OPENAPI.as_bytes())
    });
    let openapi = route!(table, GET "openapi.json").map(move || {
        let mut response = Response::new(document.clone().into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    });
    health
        .or(openapi)
        .unify()
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(jwks)
        .unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_document_lists_every_error_code() {
        let document = openapi_document().unwrap_or_else(|e| panic!("{e}"));
        let document: Value = serde_json::from_slice(&document).unwrap_or_default();
        for (pointer, codes) in code_lists() {
            assert_eq!(
                document.pointer(&format!("{pointer}/enum")),
                Some(&Value::from(codes)),
                "{pointer}"
            );
        }
        assert_eq!(
            document.pointer("/components/schemas/Problem/properties/code/enum/0"),
            Some(&Value::from("validation_failed"))
        );
    }
}
