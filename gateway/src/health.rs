//! Readiness: can this instance reach Postgres, Redis and Kafka right now?

use std::sync::Arc;
use std::time::Duration;

use chat4all_platform::Settings;
use rdkafka_check::KafkaProbe;
use serde::Serialize;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct Report {
    pub ready: bool,
    pub checks: Checks,
}

#[derive(Debug, Serialize)]
pub struct Checks {
    pub postgres: &'static str,
    pub redis: &'static str,
    pub kafka: &'static str,
}

pub struct Readiness {
    pool: sqlx::PgPool,
    redis: Option<redis::Client>,
    kafka: Arc<KafkaProbe>,
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "unreachable"
    }
}

impl Readiness {
    pub fn new(pool: sqlx::PgPool, settings: &Settings) -> Self {
        let redis = settings
            .redis
            .client()
            .map_err(|e| tracing::warn!("REDIS_URL is not usable: {e}"))
            .ok();
        Self {
            pool,
            redis,
            kafka: Arc::new(KafkaProbe::new(&settings.kafka)),
        }
    }

    pub async fn check(&self) -> Report {
        let (postgres, redis, kafka) = tokio::join!(
            self.postgres(),
            self.redis(),
            self.kafka.reachable(PROBE_TIMEOUT)
        );
        Report {
            ready: postgres && redis && kafka,
            checks: Checks {
                postgres: verdict(postgres),
                redis: verdict(redis),
                kafka: verdict(kafka),
            },
        }
    }

    async fn postgres(&self) -> bool {
        let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.pool);
        matches!(tokio::time::timeout(PROBE_TIMEOUT, probe).await, Ok(Ok(1)))
    }

    async fn redis(&self) -> bool {
        let Some(client) = &self.redis else {
            return false;
        };
        let probe = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        matches!(tokio::time::timeout(PROBE_TIMEOUT, probe).await, Ok(Ok(_)))
    }
}

mod rdkafka_check {
    //! A metadata request to the brokers: the cheapest question that proves a broker answers.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use chat4all_platform::KafkaSettings;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    pub struct KafkaProbe {
        config: rdkafka::ClientConfig,
        client: Mutex<Option<Arc<BaseConsumer>>>,
    }

    impl KafkaProbe {
        pub fn new(settings: &KafkaSettings) -> Self {
            let mut config = settings.client_config();
            config.set("log_level", "3");
            Self {
                config,
                client: Mutex::new(None),
            }
        }

        fn client(&self) -> Option<Arc<BaseConsumer>> {
            let mut slot = self
                .client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.is_none() {
                *slot = self
                    .config
                    .create::<BaseConsumer>()
                    .map_err(|e| tracing::warn!("cannot create a Kafka client: {e}"))
                    .ok()
                    .map(Arc::new);
            }
            slot.clone()
        }

        pub async fn reachable(self: &Arc<Self>, timeout: Duration) -> bool {
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                this.client()
                    .is_some_and(|c| c.fetch_metadata(None, timeout).is_ok())
            })
            .await
            .unwrap_or(false)
        }
    }
}
