//! The gateway's own metrics; the recorder itself lives in `chat4all_platform::metrics`.

use std::time::Instant;

pub use chat4all_platform::metrics::{install, render, upkeep};

/// Records one answered request.
pub fn record_request(route: &'static str, status: u16, started: Instant) {
    let status = status.to_string();
    metrics::counter!("chat4all_http_requests_total", "route" => route, "status" => status)
        .increment(1);
    metrics::histogram!("chat4all_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
}
