//! HTTP integration tests of the gateway: the real application on a free port, a fresh migrated
//! database per test, real HTTP requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod auth;
mod conversations;
mod following;
mod hardening;
mod helpers;
mod limits;
mod membership;
mod messages;
mod ops;
mod push;
mod queries;
mod readiness;
mod refresh_expiry;
mod resume;
mod status;
mod throttle;
mod tokens;
mod ws;
