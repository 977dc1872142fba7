//! Integration tests of the event store against the real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod append;
mod chain;
mod reader;
mod stream;
