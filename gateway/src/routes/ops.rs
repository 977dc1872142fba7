//! Operations endpoints: liveness, readiness, metrics, the JWK set, the OpenAPI document.

use std::sync::Arc;

use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::filters::with_state;
use crate::problem::json_response;
use crate::AppState;

/// The OpenAPI 3.1 document of every route; a test checks it against what is served.
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    let ready = warp::path!("ready")
        .and(warp::get())
        .and(with_state(state.clone()))
        .then(|state: Arc<AppState>| async move {
            let report = state.readiness.check().await;
            let status = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(status, &report)
        });
    let metrics = warp::path!("metrics").and(warp::get()).map(|| {
        let mut response = Response::new(crate::metrics::render().into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    });
    let jwks = warp::path!(".well-known" / "jwks.json")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: Arc<AppState>| json_response(StatusCode::OK, &state.tokens.jwks()));
    let openapi = warp::path!("openapi.json").and(warp::get()).map(|| {
        let mut response = Response::new(OPENAPI.into());
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
