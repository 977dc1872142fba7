//! What every Chat4All role shares: typed settings, Kafka clients and topics, readiness,
//! telemetry, shutdown, one role lifecycle ([`lifecycle`]) and the worker kit ([`worker`]).
//!
//! Settings own their conversions (`DatabaseSettings::pool`, `KafkaSettings::client_config`,
//! `RedisSettings::client`): nothing else assembles connection strings.
#![forbid(unsafe_code)]

pub mod health;
pub mod kafka;
pub mod lifecycle;
pub mod metrics;
mod secret;
mod settings;
mod shutdown;
mod telemetry;
pub mod worker;

pub use secret::Secret;
pub use settings::{
    DatabaseSettings, KafkaSettings, PushSettings, RedisSettings, RelaySettings, Settings,
    SettingsError,
};
pub use shutdown::shutdown_on_signals;
pub use telemetry::init_telemetry;
