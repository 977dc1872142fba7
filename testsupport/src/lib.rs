//! Shared set-up for the workspace's tests, so that no crate's tests copy another's: fresh
//! migrated databases, a topic read back from the broker, clients and access tokens, and the
//! metrics text parsed.
//!
//! A development dependency only. It may use any crate of the workspace, which is what lets a
//! crate's tests set up a scenario (a client and its token, say) without depending on a sibling
//! crate that the layering keeps it from.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod auth;
pub mod database;
pub mod engine;
pub mod kafka;
pub mod metrics;
pub mod writes;
