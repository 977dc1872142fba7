//! Integration tests of the relay against the real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod tail;
