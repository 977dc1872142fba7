//! Integration tests of the relay against the real Postgres and the real broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod relay;
