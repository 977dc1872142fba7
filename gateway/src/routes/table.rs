//! The router's own list of what it serves, written by the declarations that build its filters.
//!
//! Every route is declared with [`route!`], which both records `(method, path)` in a
//! [`RouteTable`] (the path written as the OpenAPI document writes it, parameters in braces) and
//! builds the warp filter that matches exactly that method and path. The two cannot disagree,
//! so a test can hold the OpenAPI document against the table and catch a route served but not
//! documented, or documented but not served.

use warp::http::Method;

/// One operation the router serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    pub method: Method,
    /// The path template, e.g. `/v1/conversations/{conversation_id}`.
    pub path: &'static str,
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// The routes declared so far, in declaration order.
#[derive(Debug, Default, Clone)]
pub struct RouteTable(Vec<RouteSpec>);

impl RouteTable {
    /// Records a route. [`route!`] calls this for every route it builds; the only other caller
    /// is the router for filters it takes whole from elsewhere (`GET /ws`).
    pub fn declare(&mut self, method: Method, path: &'static str) {
        self.0.push(RouteSpec { method, path });
    }

    pub fn into_specs(self) -> Vec<RouteSpec> {
        self.0
    }
}

/// Declares a route in a [`RouteTable`] and returns the filter matching it:
///
/// ```text
/// route!(table, POST "v1" / "messages" / {message_id: String} / "status")
/// ```
///
/// matches `POST /v1/messages/<id>/status` (and no longer path), extracts `(String,)`, and
/// records `POST /v1/messages/{message_id}/status`. A segment is a literal or `{name: Type}`,
/// `Type` parsed from the segment as `warp::path::param` does. The path is matched before the
/// method, so a route on the same path with another method still answers 405, not 404.
macro_rules! route {
    (@template $literal:literal) => {
        $literal
    };
    (@template {$name:ident: $type:ty}) => {
        concat!("{", stringify!($name), "}")
    };
    (@segment $literal:literal) => {
        ::warp::path($literal)
    };
    (@segment {$name:ident: $type:ty}) => {
        ::warp::path::param::<$type>()
    };
    (@method GET) => {
        ::warp::get()
    };
    (@method POST) => {
        ::warp::post()
    };
    (@method PUT) => {
        ::warp::put()
    };
    (@method PATCH) => {
        ::warp::patch()
    };
    (@method DELETE) => {
        ::warp::delete()
    };
    ($table:expr, $method:ident $($segment:tt)/+) => {{
        $table.declare(
            ::warp::http::Method::$method,
            concat!($("/", $crate::routes::table::route!(@template $segment)),+),
        );
        ::warp::any()
            $(.and($crate::routes::table::route!(@segment $segment)))+
            .and(::warp::path::end())
            .and($crate::routes::table::route!(@method $method))
    }};
}

pub(crate) use route;

#[cfg(test)]
mod tests {
    use warp::Filter;

    use super::*;

    #[tokio::test]
    async fn a_declared_route_matches_what_it_records() {
        let mut table = RouteTable::default();
        let filter = route!(table, DELETE "v1" / "items" / {item_id: String} / "tags" / {tag: u32})
            .map(|item: String, tag: u32| format!("{item}:{tag}"));
        assert_eq!(
            table.clone().into_specs(),
            vec![RouteSpec {
                method: Method::DELETE,
                path: "/v1/items/{item_id}/tags/{tag}",
            }]
        );
        let matched = warp::test::request()
            .method("DELETE")
            .path("/v1/items/abc/tags/7")
            .filter(&filter)
            .await;
        assert_eq!(matched.ok().as_deref(), Some("abc:7"));
        for (method, path) in [
            ("GET", "/v1/items/abc/tags/7"),
            ("DELETE", "/v1/items/abc/tags/7/more"),
            ("DELETE", "/v1/items/abc/tags/seven"),
            ("DELETE", "/v1/items/abc"),
        ] {
            let missed = warp::test::request()
                .method(method)
                .path(path)
                .filter(&filter)
                .await;
            assert!(missed.is_err(), "{method} {path} matched");
        }
    }
}
