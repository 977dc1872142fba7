//! Integration tests of the write side against the real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod service;
mod snapshots;
