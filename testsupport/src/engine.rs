//! Roles of the engine started inside a test: a relay publishing a test database, and a gateway
//! on port 0 (for tests that drive the engine over HTTP only, such as the load tool's).

use std::time::Duration;

pub use chat4all_platform::Settings;
pub use chat4all_relay::{Relay, RelayStatus};

use chat4all_gateway::Application;
use chat4all_platform::KafkaSettings;
use chat4all_relay::RelayConfig;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// A relay of the deployment `prefix` over the test database, on `kafka`.
pub fn relay(
    pool: &PgPool,
    options: PgConnectOptions,
    prefix: &str,
    kafka: KafkaSettings,
    batch_size: i64,
) -> Relay {
    Relay::new(
        pool.clone(),
        options,
        RelayConfig {
            deployment: prefix.to_owned(),
            topic: KafkaSettings::events_topic(prefix),
            kafka,
            batch_size,
            idle_poll: Duration::from_millis(200),
            delivery_timeout: Duration::from_secs(10),
        },
    )
}

/// A running gateway: its base URL (`http://127.0.0.1:port`), stopped on drop.
pub struct Gateway {
    pub base: String,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Builds and runs the gateway `settings` describe (listening on port 0 if they say so).
    ///
    /// # Panics
    /// When it cannot start.
    pub async fn start(settings: &Settings) -> Self {
        let app = Application::build(settings).await.unwrap();
        let base = format!("http://{}", app.local_addr());
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(stop.clone()));
        Self {
            base,
            stop,
            task: Some(task),
        }
    }

    /// Stops the gateway and waits until it has.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
