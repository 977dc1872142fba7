//! A relay per test (unique topic prefix), writers, and a consumer that reads the topic back.

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use chat4all_testsupport::kafka::{consume, Record};

use chat4all_platform::KafkaSettings;
use chat4all_relay::{Relay, RelayConfig, RelayStatus};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

pub const PARTITIONS: i32 = 4;

pub fn kafka(bootstrap: &str) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: bootstrap.to_owned(),
        partitions: PARTITIONS,
        replication_factor: 1,
        min_insync_replicas: 1,
        group_instance_id: None,
    }
}

pub use chat4all_testsupport::kafka::{bootstrap as default_bootstrap, unique_prefix};

pub struct RunningRelay {
    pub status: Arc<RelayStatus>,
    pub topic: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    pub fn start(
        pool: &PgPool,
        options: &PgConnectOptions,
        bootstrap: &str,
        batch_size: i64,
    ) -> Self {
        Self::start_as(pool, options, bootstrap, batch_size, &unique_prefix())
    }

    pub fn start_as(
        pool: &PgPool,
        options: &PgConnectOptions,
        bootstrap: &str,
        batch_size: i64,
        prefix: &str,
    ) -> Self {
        let prefix = prefix.to_owned();
        let topic = format!("{prefix}.events.v1");
        let relay = Relay::new(
            pool.clone(),
            options.clone(),
            RelayConfig {
                deployment: prefix,
                topic: topic.clone(),
                kafka: kafka(bootstrap),
                batch_size,
                idle_poll: Duration::from_millis(200),
                delivery_timeout: Duration::from_secs(5),
            },
        );
        let status = relay.status();
        let stop = CancellationToken::new();
        let task = tokio::spawn(relay.run(stop.clone()));
        Self {
            status,
            topic,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// Inserts a message-like event in an open transaction of `conn` (the caller commits).
pub async fn insert_event(
    conn: &mut PgConnection,
    stream: &str,
    sequence: i64,
    conversation: &str,
) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Message', $1, $2, 'MessageDelivered', '1.0', \
                 jsonb_build_object('MessageDelivered', jsonb_build_object('conversation_id', $3::text)), \
                 '{\"tenant_id\": \"acme\", \"trace_id\": \"0af7651916cd43dd8448eb211c80319c\"}')",
    )
    .bind(stream)
    .bind(sequence)
    .bind(conversation)
    .execute(conn)
    .await
    .unwrap();
}

/// Polls `condition` until it holds or the deadline passes.
pub async fn eventually(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
