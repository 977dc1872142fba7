//! `GET /ready` of a gateway one of whose dependencies is unreachable (a local port nothing
//! listens on): 503, naming that dependency (and only it) with the reason, while `/health`
//! still says the process is alive. The healthy 200 is `ops::health_and_readiness_report_every_dependency`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

/// A local port nothing listens on (bound once, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asserts a 503 readiness report with `checks`, and a reason for `failing` alone.
async fn not_ready(app: &TestApp, checks: serde_json::Value, failing: &str) {
    let ready = app.get("/ready").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.body
    );
    assert!(
        ready
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{:?}",
        ready.headers
    );
    assert_eq!(ready.body["ready"], false);
    assert_eq!(ready.body["checks"], checks);
    let details = ready.body["details"].as_object().unwrap();
    assert_eq!(
        details.keys().collect::<Vec<_>>(),
        [failing],
        "{:?}",
        ready.body
    );
    assert!(
        !details[failing].as_str().unwrap().is_empty(),
        "{:?}",
        ready.body
    );

    let health = app.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{:?}", health.body);
}

#[tokio::test]
async fn a_gateway_without_redis_is_not_ready_and_says_redis() {
    let redis = format!("redis://127.0.0.1:{}", closed_port());
    let app = TestApp::spawn_with(&[("REDIS_URL", redis.as_str())]).await;

    not_ready(
        &app,
        json!({"postgres": "ok", "redis": "unreachable", "kafka": "ok"}),
        "redis",
    )
    .await;
}

#[tokio::test]
async fn a_gateway_without_a_kafka_broker_is_not_ready_and_says_kafka() {
    let kafka = format!("127.0.0.1:{}", closed_port());
    let app = TestApp::spawn_with(&[("KAFKA_BOOTSTRAP_SERVERS", kafka.as_str())]).await;

    not_ready(
        &app,
        json!({"postgres": "ok", "redis": "ok", "kafka": "unreachable"}),
        "kafka",
    )
    .await;
}

#[tokio::test]
async fn a_gateway_with_neither_names_both() {
    let redis = format!("redis://127.0.0.1:{}", closed_port());
    let kafka = format!("127.0.0.1:{}", closed_port());
    let app = TestApp::spawn_with(&[
        ("REDIS_URL", redis.as_str()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.as_str()),
    ])
    .await;

    let ready = app.get("/ready").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.body
    );
    assert_eq!(
        ready.body["checks"],
        json!({"postgres": "ok", "redis": "unreachable", "kafka": "unreachable"})
    );
    assert!(ready.body["details"]["redis"].is_string());
    assert!(ready.body["details"]["kafka"].is_string());
}
