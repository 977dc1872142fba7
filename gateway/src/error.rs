//! Failures of building or running the gateway (not of a request: those are `ApiError`s).

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Settings(#[from] chat4all_platform::SettingsError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("hashing a client secret failed: {0}")]
    Hash(String),
    #[error("invalid listen address {addr:?}: {reason}")]
    ListenAddress { addr: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}
