//! End-to-end tests of the `chat4all` binary: the real executable, the real services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod architecture;
mod bench;
mod broker;
mod cli;
mod cluster;
mod crash;
mod kafka;
mod model;
mod outage;
mod process;
mod projector;
mod push;
mod relay;
mod roles;
