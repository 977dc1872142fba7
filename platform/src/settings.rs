//! Typed, layered settings: defaults < config file (`--config` or `CHAT4ALL_CONFIG`, TOML) <
//! environment. The documented variables (`DATABASE_URL`, `REDIS_URL`,
//! `KAFKA_BOOTSTRAP_SERVERS`, `CHAT4ALL_LISTEN`, `CHAT4ALL_TOPIC_PREFIX`,
//! `CHAT4ALL_RATE_LIMIT_PER_MINUTE`) and any `CHAT4ALL_SECTION__KEY` (e.g.
//! `CHAT4ALL_DATABASE__MAX_CONNECTIONS=64`) override the file.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::Secret;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Gateway address; port 0 picks a free port (the bound address is logged).
    pub listen: String,
    /// Prefix of every Kafka topic, consumer group and Redis channel.
    pub topic_prefix: String,
    /// State-changing requests per user per minute; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Largest group conversation.
    pub max_group_members: usize,
    /// How long draining may take after SIGINT/SIGTERM before the process gives up.
    pub shutdown_timeout_secs: u64,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    pub relay: RelaySettings,
    pub auth: AuthSettings,
    pub push: PushSettings,
    /// Where roles without the gateway serve `/metrics` and `/health`.
    pub metrics_listen: String,
}

/// WebSocket push limits (API.md's defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    /// Sockets one user may hold, across every gateway instance.
    pub connections_per_user: usize,
    /// Frames a client may send per minute.
    pub frames_per_minute: u32,
    /// How often the server sends `ping`.
    pub ping_interval_secs: u64,
    /// Silence from the client after which the socket is closed.
    pub idle_timeout_secs: u64,
    /// Frames waiting for one socket; a client that lets more pile up is too slow and closed.
    pub send_queue_frames: usize,
    /// How long one frame may take to go out before the client counts as too slow.
    pub send_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret<String>,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    /// Ends transactions left open by a stuck client: an open transaction holds back the event
    /// store's tailing horizon for every reader.
    pub idle_in_transaction_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: Secret<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// Partitions of topics the engine creates (100 in production configurations).
    pub partitions: i32,
    /// Replicas of topics the engine creates (3 in production, 1 on a single local broker).
    pub replication_factor: i32,
    /// `min.insync.replicas` of topics the engine creates: how many replicas must have a record
    /// before the broker acknowledges it to the relay (2 with 3 replicas, so that losing one
    /// broker neither loses an acknowledged event nor stops publishing).
    pub min_insync_replicas: i32,
    /// `group.instance.id` of this process's consumers (static membership), unique per process
    /// and stable across its restarts; unset, a crashed member's partitions move after the
    /// session timeout (6 s).
    #[serde(default)]
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// Events read and published per batch.
    pub batch_size: i64,
    /// How long an idle relay waits for an insert notification before looking anyway.
    pub idle_poll_ms: u64,
    /// How long the broker may take to acknowledge a message before the batch is retried.
    pub delivery_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `iss` of issued tokens, checked on every verification.
    pub issuer: String,
    /// `aud` of issued tokens, checked on every verification.
    pub audience: String,
    pub access_token_ttl_secs: u64,
    /// How long a refresh token lives unused (each use replaces it with a fresh one).
    pub refresh_token_ttl_secs: u64,
    /// `EdDSA` (Ed25519 keys with `kid`, published in the JWKS) or, only when chosen
    /// explicitly, `HS256` with `hs256_secret`.
    pub algorithm: String,
    /// The shared HS256 secret (at least 32 bytes); only with `algorithm = "HS256"`.
    pub hs256_secret: Option<Secret<String>>,
}

const DEFAULTS: &str = r#"
listen = "127.0.0.1:8080"
topic_prefix = "chat4all"
rate_limit_per_minute = 60
max_group_members = 100
shutdown_timeout_secs = 20
metrics_listen = "127.0.0.1:9464"

[database]
url = "postgres://postgres@127.0.0.1:5432/chat4all"
max_connections = 32
acquire_timeout_secs = 5
idle_in_transaction_timeout_secs = 30

[redis]
url = "redis://127.0.0.1:6379"

[kafka]
bootstrap_servers = "127.0.0.1:9092"
partitions = 16
replication_factor = 1
min_insync_replicas = 1

[relay]
batch_size = 2000
idle_poll_ms = 500
delivery_timeout_ms = 30000

[push]
connections_per_user = 10
frames_per_minute = 100
ping_interval_secs = 30
idle_timeout_secs = 60
send_queue_frames = 1024
send_timeout_secs = 10

[auth]
issuer = "chat4all"
audience = "chat4all-api"
access_token_ttl_secs = 900
refresh_token_ttl_secs = 2592000
algorithm = "EdDSA"
"#;

/// The documented variables without the `CHAT4ALL_` prefix.
const ALIASES: [(&str, &str); 3] = [
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
];

/// Top-level settings, spelled `CHAT4ALL_<KEY>` in the environment.
const TOP_LEVEL: [&str; 6] = [
    "listen",
    "metrics_listen",
    "topic_prefix",
    "rate_limit_per_minute",
    "max_group_members",
    "shutdown_timeout_secs",
];

impl Settings {
    /// Loads the layers in order; `file` (or `CHAT4ALL_CONFIG`) must exist when given.
    ///
    /// # Errors
    /// A missing or malformed file, an unknown key, or a value of the wrong type.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// [`Settings::load`] with an explicit environment, for tests.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        let from_env = env
            .iter()
            .find(|(k, _)| k == "CHAT4ALL_CONFIG")
            .map(|(_, v)| Path::new(v).to_path_buf());
        if let Some(path) = file.map(Path::to_path_buf).or(from_env) {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        for (key, value) in &env {
            if let Some((_, path)) = ALIASES.iter().find(|(name, _)| name == key) {
                builder = builder.set_override(*path, value.as_str())?;
            } else if let Some(rest) = key.strip_prefix("CHAT4ALL_") {
                // Other CHAT4ALL_ variables (the scripts' own, CHAT4ALL_CONFIG) are not settings.
                if rest.contains("__") || TOP_LEVEL.contains(&rest.to_ascii_lowercase().as_str()) {
                    let path = rest.to_ascii_lowercase().replace("__", ".");
                    builder = builder.set_override(path, value.as_str())?;
                }
            }
        }
        Ok(builder.build()?.try_deserialize()?)
    }
}

impl DatabaseSettings {
    /// # Errors
    /// When the URL does not parse.
    pub fn connect_options(&self) -> Result<PgConnectOptions, SettingsError> {
        let timeout = format!("{}s", self.idle_in_transaction_timeout_secs);
        Ok(self
            .url
            .expose()
            .parse::<PgConnectOptions>()
            .map_err(SettingsError::DatabaseUrl)?
            .options([("idle_in_transaction_session_timeout", timeout.as_str())])
            .application_name("chat4all")
            .disable_statement_logging())
    }

    /// A pool that connects lazily, so a role can start (and report not ready) while Postgres is
    /// still coming up.
    ///
    /// # Errors
    /// When the URL does not parse.
    pub fn pool(&self) -> Result<PgPool, SettingsError> {
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            // The default pings every connection on every checkout: a second round trip per
            // query. A broken connection fails its query instead, which callers already handle.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(self.acquire_timeout_secs))
            .connect_lazy_with(self.connect_options()?))
    }

    /// A pool that has proven it can reach the server.
    ///
    /// # Errors
    /// A bad URL or an unreachable server.
    pub async fn connect(&self) -> Result<PgPool, SettingsError> {
        let pool = self.pool()?;
        pool.acquire().await.map_err(SettingsError::Connect)?;
        Ok(pool)
    }
}

impl RedisSettings {
    /// # Errors
    /// When the URL does not parse.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(self.url.expose().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_work_without_any_configuration() {
        let s = Settings::load_from(None, env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.topic_prefix, "chat4all");
        assert_eq!(s.rate_limit_per_minute, 60);
        assert_eq!(
            s.database.url.expose(),
            "postgres://postgres@127.0.0.1:5432/chat4all"
        );
        assert_eq!(s.redis.url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(s.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(
            (s.kafka.replication_factor, s.kafka.min_insync_replicas),
            (1, 1),
            "one local broker"
        );
        assert_eq!(s.kafka.group_instance_id, None);
    }

    #[test]
    fn the_topic_layout_and_static_membership_are_settings() {
        let s = Settings::load_from(
            None,
            env(&[
                ("CHAT4ALL_KAFKA__PARTITIONS", "100"),
                ("CHAT4ALL_KAFKA__REPLICATION_FACTOR", "3"),
                ("CHAT4ALL_KAFKA__MIN_INSYNC_REPLICAS", "2"),
                ("CHAT4ALL_KAFKA__GROUP_INSTANCE_ID", "projector-0"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.kafka.partitions, 100);
        assert_eq!(s.kafka.replication_factor, 3);
        assert_eq!(s.kafka.min_insync_replicas, 2);
        assert_eq!(s.kafka.group_instance_id.as_deref(), Some("projector-0"));
        let consumer = s.kafka.consumer_config("g");
        assert_eq!(consumer.get("group.instance.id"), Some("projector-0"));
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn documented_variables_and_nested_keys_override() {
        let s = Settings::load_from(
            None,
            env(&[
                ("DATABASE_URL", "postgres://x@db:5432/y"),
                ("CHAT4ALL_LISTEN", "0.0.0.0:0"),
                ("CHAT4ALL_TOPIC_PREFIX", "t1"),
                ("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "0"),
                ("CHAT4ALL_DATABASE__MAX_CONNECTIONS", "7"),
                ("CHAT4ALL_MAX_GROUP_MEMBERS", "12"),
                ("CHAT4ALL_UNRELATED", "ignored"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.database.url.expose(), "postgres://x@db:5432/y");
        assert_eq!(s.listen, "0.0.0.0:0");
        assert_eq!(s.topic_prefix, "t1");
        assert_eq!(s.rate_limit_per_minute, 0);
        assert_eq!(s.database.max_connections, 7);
        assert_eq!(s.max_group_members, 12);
    }

    #[test]
    fn a_numeric_topic_prefix_stays_a_string() {
        let s = Settings::load_from(None, env(&[("CHAT4ALL_TOPIC_PREFIX", "2026")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.topic_prefix, "2026");
    }

    #[test]
    fn bad_values_and_unknown_keys_are_refused() {
        assert!(
            Settings::load_from(None, env(&[("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "lots")])).is_err()
        );
        assert!(Settings::load_from(None, env(&[("CHAT4ALL_DATABASE__NOPE", "1")])).is_err());
        assert!(
            Settings::load_from(None, env(&[("CHAT4ALL_CONFIG", "/nonexistent.toml")])).is_err()
        );
    }

    #[test]
    fn a_config_file_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("c4a-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("chat4all.toml");
        std::fs::write(
            &file,
            "topic_prefix = \"from-file\"\nlisten = \"127.0.0.1:9\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = Settings::load_from(Some(&file), env(&[("CHAT4ALL_LISTEN", "127.0.0.1:0")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.topic_prefix, "from-file");
        assert_eq!(s.listen, "127.0.0.1:0");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::load_from(None, env(&[("DATABASE_URL", "postgres://u:hunter2@h/d")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
