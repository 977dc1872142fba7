//! Every role answers `/health` and `/ready` on its own port with what it depends on and what it
//! is waiting for: a leading relay, a standby, a projector, and a relay that waits for a broker.

use std::time::{Duration, Instant};

use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::kafka::{bootstrap, unique_prefix};
use serde_json::Value;
use sqlx::ConnectOptions;

use crate::process::Process;

/// A role process with its own operations port; returns it with that port's address.
fn start(role: &str, database_url: &str, bootstrap: &str, prefix: &str) -> (Process, String) {
    let mut process = Process::spawn(
        &[role],
        &[
            ("DATABASE_URL", database_url),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap),
            ("CHAT4ALL_TOPIC_PREFIX", prefix),
            ("CHAT4ALL_METRICS_LISTEN", "127.0.0.1:0"),
        ],
    );
    let address = process
        .wait_for_log(Duration::from_secs(30), |e| {
            e["fields"]["message"] == "metrics listening"
        })
        .expect("the role logs its metrics address")["fields"]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    (process, address)
}

async fn get(http: &reqwest::Client, address: &str, path: &str) -> (u16, Value) {
    let answer = http
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap())
}

/// Polls `/ready` until `done` holds for its answer.
async fn ready_until(
    http: &reqwest::Client,
    address: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(http, address, "/ready").await;
        if done(status, &body) {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "{address}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_leader_a_standby_and_a_projector_each_say_what_they_do() {
    let (options, _pool) = fresh_database().await;
    let url = options.to_url_lossy().to_string();
    let prefix = unique_prefix();
    let http = reqwest::Client::new();

    let (_leader, leader) = start("relay", &url, &bootstrap(), &prefix);
    let (status, body) = ready_until(&http, &leader, |s, _| s == 200).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["roles"],
        serde_json::json!([{"role": "relay", "phase": "ready"}])
    );
    assert_eq!(
        body["checks"],
        serde_json::json!({"postgres": "ok", "kafka": "ok"})
    );

    // A second relay of the same deployment stands by: ready, and saying for what it waits.
    let (_standby, standby) = start("relay", &url, &bootstrap(), &prefix);
    let (status, body) = ready_until(&http, &standby, |_, b| {
        b["roles"][0]["waiting_for"]
            .as_str()
            .is_some_and(|w| w.contains("relay lead"))
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["roles"][0]["phase"], "ready");

    let (_projector, projector) = start("project", &url, &bootstrap(), &prefix);
    let (status, body) = ready_until(&http, &projector, |s, _| s == 200).await;
    assert_eq!(status, 200);
    assert_eq!(body["roles"][0]["role"], "projector");
    assert_eq!(
        body["checks"],
        serde_json::json!({"postgres": "ok", "kafka": "ok", "redis": "ok"})
    );
    let (status, health) = get(&http, &projector, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["roles"][0]["role"], "projector");
}

#[tokio::test]
async fn a_relay_without_a_broker_is_live_but_not_ready_and_says_it_waits_for_the_topic() {
    let (options, _pool) = fresh_database().await;
    let url = options.to_url_lossy().to_string();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    let http = reqwest::Client::new();
    let (_relay, address) = start("relay", &url, &nowhere, &unique_prefix());
    let (status, body) = ready_until(&http, &address, |_, b| {
        b["roles"][0]["waiting_for"]
            .as_str()
            .is_some_and(|w| w.contains("topic"))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["roles"][0]["phase"], "starting");
    assert_eq!(body["checks"]["kafka"], "unreachable");
    let (status, health) = get(&http, &address, "/health").await;
    assert_eq!(status, 200, "alive while it waits: {health}");
}

#[tokio::test]
async fn serve_reports_every_role_it_runs_on_the_gateways_ready() {
    let (options, _pool) = fresh_database().await;
    let url = options.to_url_lossy().to_string();
    let prefix = unique_prefix();
    let mut serve = Process::spawn(
        &["serve"],
        &[
            ("DATABASE_URL", &url),
            ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap()),
            ("CHAT4ALL_TOPIC_PREFIX", &prefix),
            ("CHAT4ALL_LISTEN", "127.0.0.1:0"),
        ],
    );
    let address = serve
        .wait_for_log(Duration::from_secs(30), |e| {
            e["fields"]["message"] == "gateway listening"
        })
        .expect("the gateway logs its address")["fields"]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    let (status, body) = ready_until(&http, &address, |s, _| s == 200).await;
    assert_eq!(status, 200);
    let roles: Vec<&str> = body["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["gateway", "relay", "projector"], "{body}");
    assert!(body["roles"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["phase"] == "ready"));
    let (status, health) = get(&http, &address, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["roles"], body["roles"]);
}
