//! Integration tests of the projections against the real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apply;
mod projector;
mod replay;
