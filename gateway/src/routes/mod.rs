//! The route table. Path and method come first in every route, so authentication and body
//! parsing run only for the one route that matches.

mod auth;
mod command;

pub use auth::MAX_SECRET_CHECKS;
mod conversations;
mod messages;
mod ops;
mod queries;

use std::sync::Arc;
use std::time::Instant;

use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::problem::{recover, ApiError};
use crate::AppState;

/// Wraps a handler's result: errors become rejections rendered by `recover`, and the answer is
/// counted under `route`.
pub(crate) fn answer(
    route: &'static str,
    started: Instant,
    result: Result<Response, ApiError>,
) -> Result<Response, Rejection> {
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    crate::metrics::record_request(route, status, started);
    result.map_err(warp::reject::custom)
}

pub fn all(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    let v1 = conversations::routes(state.clone())
        .or(messages::routes(state.clone()))
        .unify()
        .or(queries::routes(state.clone()));
    ops::routes(state.clone())
        .or(crate::push::route(state.clone()))
        .unify()
        .or(auth::routes(state))
        .unify()
        .or(v1.unify())
        .unify()
        .recover(recover)
        .unify()
        .map(Reply::into_response)
}
