//! The engine's view of Kafka: topics made and checked by the settings, and readiness that tells a
//! broker that answers from one that only accepts connections.

use std::time::{Duration, Instant};

use chat4all_platform::health::{Dependency, Readiness};
use chat4all_platform::{KafkaSettings, Settings};
use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::kafka::bootstrap as test_broker;
use sqlx::ConnectOptions;

use crate::broker::Broker;
use crate::process::Process;

fn kafka(bootstrap: &str, partitions: i32, min_insync_replicas: i32) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: bootstrap.to_owned(),
        partitions,
        replication_factor: 1,
        min_insync_replicas,
        group_instance_id: None,
    }
}

#[tokio::test]
async fn topics_are_created_as_configured_and_an_existing_one_is_checked() {
    let topic = format!("t{}.events.v1", uuid::Uuid::new_v4().simple());
    let created = kafka(&test_broker(), 2, 1)
        .ensure_topic(&topic)
        .await
        .unwrap();
    assert!(created.created);
    assert!(created.mismatches.is_empty());

    let same = kafka(&test_broker(), 2, 1)
        .ensure_topic(&topic)
        .await
        .unwrap();
    assert!(!same.created);
    assert_eq!(same.mismatches, Vec::<String>::new());

    let other = kafka(&test_broker(), 3, 2)
        .ensure_topic(&topic)
        .await
        .unwrap();
    assert!(!other.created);
    assert_eq!(other.mismatches.len(), 2, "{:?}", other.mismatches);
    assert!(
        other.mismatches[0].contains("2 partitions"),
        "{:?}",
        other.mismatches
    );
    assert!(
        other.mismatches[1].contains("min.insync.replicas is 1"),
        "{:?}",
        other.mismatches
    );
}

async fn ready(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let answer = http.get(url).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap())
}

/// Polls `url` until it answers `status`, and returns the body.
async fn wait_ready(http: &reqwest::Client, url: &str, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (now, body) = ready(http, url).await;
        if now == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} still answers {now}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_relay_is_not_ready_while_its_broker_accepts_connections_but_does_not_answer() {
    let broker = Broker::start();
    let (options, _pool) = fresh_database().await;
    let url = options.to_url_lossy().to_string();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut relay = Process::spawn(
        &["relay"],
        &[
            ("DATABASE_URL", &url),
            ("KAFKA_BOOTSTRAP_SERVERS", &broker.address),
            ("CHAT4ALL_TOPIC_PREFIX", &prefix),
            ("CHAT4ALL_METRICS_LISTEN", "127.0.0.1:0"),
        ],
    );
    let address = relay
        .wait_for_log(Duration::from_secs(30), |e| {
            e["fields"]["message"] == "metrics listening"
        })
        .expect("the relay logs its metrics address")["fields"]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let ready_url = format!("http://{address}/ready");
    let http = reqwest::Client::new();

    let body = wait_ready(&http, &ready_url, 200).await;
    assert_eq!(
        body["checks"],
        serde_json::json!({"postgres": "ok", "kafka": "ok"}),
        "the relay uses Postgres and Kafka, not Redis"
    );

    // Stopped, the broker's port still accepts connections (the kernel completes them), but
    // nothing answers.
    broker.signal("-STOP");
    assert!(std::net::TcpStream::connect(&broker.address).is_ok());
    let body = wait_ready(&http, &ready_url, 503).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["kafka"], "unreachable");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert!(
        body["details"]["kafka"]
            .as_str()
            .is_some_and(|d| d.contains("metadata")),
        "{body}"
    );

    broker.signal("-CONT");
    let body = wait_ready(&http, &ready_url, 200).await;
    assert_eq!(body["checks"]["kafka"], "ok");
}

#[tokio::test]
async fn readiness_reports_a_topic_that_cannot_take_writes() {
    let (options, pool) = fresh_database().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let bootstrap = test_broker();
    // Two in-sync replicas required of a topic with one replica: the broker answers every
    // question, but refuses every produce.
    let settings = Settings::load_from(
        None,
        [
            ("DATABASE_URL", options.to_url_lossy().to_string()),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.clone()),
            ("CHAT4ALL_TOPIC_PREFIX", prefix.clone()),
            ("CHAT4ALL_KAFKA__MIN_INSYNC_REPLICAS", "2".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    )
    .unwrap();
    let readiness = Readiness::new(pool, &settings, &[Dependency::Kafka]);
    // Before the topic exists there is nothing to refuse writes.
    let report = readiness.check().await;
    assert!(report.ready, "{report:?}");

    settings
        .kafka
        .ensure_topic(&KafkaSettings::events_topic(&prefix))
        .await
        .unwrap();
    let report = readiness.check().await;
    assert!(!report.ready);
    assert_eq!(report.checks["kafka"], "degraded");
    assert!(
        report.details["kafka"].contains("fewer than min.insync.replicas 2"),
        "{report:?}"
    );
}
