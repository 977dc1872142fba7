//! The router. Every route is declared with [`table::route!`], which records it in the route
//! table and matches its path and method first, so authentication and body parsing run only
//! for the one route that matches.

mod auth;
mod command;
mod conversations;
mod messages;
mod ops;
mod queries;
pub(crate) mod table;

pub use auth::MAX_SECRET_CHECKS;
pub use table::RouteSpec;

use std::sync::Arc;
use std::time::Instant;

use warp::filters::BoxedFilter;
use warp::http::Method;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use table::RouteTable;

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
        Err(e) => e.status().as_u16(),
    };
    crate::metrics::record_request(route, status, started);
    result.map_err(warp::reject::custom)
}

/// Every route of the gateway, with errors rendered, and the table of what it serves.
pub fn all(state: Arc<AppState>) -> (BoxedFilter<(Response,)>, Vec<RouteSpec>) {
    let mut table = RouteTable::default();
    let v1 = conversations::routes(state.clone(), &mut table)
        .or(messages::routes(state.clone(), &mut table))
        .unify()
        .or(queries::routes(state.clone(), &mut table));
    let ops = ops::routes(state.clone(), &mut table);
    // The push module matches its own path; it is recorded here, where it joins the router.
    table.declare(Method::GET, "/ws");
    let push = crate::push::route(state.clone());
    let auth = auth::routes(state, &mut table);
    let router = ops
        .or(push)
        .unify()
        .or(auth)
        .unify()
        .or(v1.unify())
        .unify()
        .recover(recover)
        .unify()
        .map(Reply::into_response)
        .boxed();
    (router, table.into_specs())
}
