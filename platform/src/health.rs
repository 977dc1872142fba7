//! Readiness: can this process do its work right now? Each role names the dependencies it
//! uses; each is asked a real question (a query, a `PING`, a metadata request), never assumed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::kafka::{KafkaHealth, KafkaProbe};
use crate::{KafkaSettings, Settings};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency a role may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dependency {
    Postgres,
    Redis,
    Kafka,
}

impl Dependency {
    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Kafka => "kafka",
        }
    }
}

/// The answer of `GET /ready`: `checks` has `ok`, `unreachable` or `degraded` for each
/// dependency the role uses, `details` says why for each that is not `ok`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ready: bool,
    pub checks: BTreeMap<&'static str, &'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<&'static str, String>,
}

pub struct Readiness {
    pool: sqlx::PgPool,
    redis: Option<redis::Client>,
    kafka: Arc<KafkaProbe>,
    uses: Vec<Dependency>,
}

impl Readiness {
    /// A readiness check of the dependencies in `uses`; Kafka is judged by the events topic.
    pub fn new(pool: sqlx::PgPool, settings: &Settings, uses: &[Dependency]) -> Self {
        let redis = settings
            .redis
            .client()
            .map_err(|e| tracing::warn!("REDIS_URL is not usable: {e}"))
            .ok();
        let topic = KafkaSettings::events_topic(&settings.topic_prefix);
        Self {
            pool,
            redis,
            kafka: Arc::new(KafkaProbe::new(&settings.kafka, topic)),
            uses: uses.to_vec(),
        }
    }

    pub async fn check(&self) -> Report {
        let uses = |d| self.uses.contains(&d);
        let (postgres, redis, kafka) = tokio::join!(
            async { uses(Dependency::Postgres).then_some(self.postgres().await) },
            async { uses(Dependency::Redis).then_some(self.redis().await) },
            async { uses(Dependency::Kafka).then_some(self.kafka.check(PROBE_TIMEOUT).await) },
        );
        let mut report = Report {
            ready: true,
            checks: BTreeMap::new(),
            details: BTreeMap::new(),
        };
        let mut record = |dependency: Dependency, verdict: &'static str, detail: Option<String>| {
            report.ready &= verdict == "ok";
            report.checks.insert(dependency.name(), verdict);
            if let Some(detail) = detail {
                report.details.insert(dependency.name(), detail);
            }
        };
        if let Some(ok) = postgres {
            let detail = (!ok).then(|| "no answer to SELECT 1 within 2 s".to_owned());
            record(Dependency::Postgres, verdict(ok), detail);
        }
        if let Some(ok) = redis {
            let detail = (!ok).then(|| "no answer to PING within 2 s".to_owned());
            record(Dependency::Redis, verdict(ok), detail);
        }
        match kafka {
            None => {}
            Some(KafkaHealth::Ok) => record(Dependency::Kafka, "ok", None),
            Some(KafkaHealth::Unreachable(why)) => {
                record(Dependency::Kafka, "unreachable", Some(why))
            }
            Some(KafkaHealth::Degraded(why)) => record(Dependency::Kafka, "degraded", Some(why)),
        }
        report
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

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "unreachable"
    }
}
