//! A broker outage does not touch the API, and the relay catches up without losing anything.
//!
//! This test runs its own broker, so that stopping it disturbs no other test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat4all_gateway::Application;
use chat4all_platform::{KafkaSettings, Settings};
use chat4all_relay::{Relay, RelayConfig};
use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::kafka::{consume, Record};
use sqlx::ConnectOptions;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::model::token;

const OUTAGE: Duration = Duration::from_secs(30);

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort_unstable();
    let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies[index]
}

#[tokio::test]
async fn the_api_does_not_notice_a_broker_outage_and_the_relay_catches_up() {
    let broker = Broker::start();
    let (options, pool) = fresh_database().await;
    let url = options.to_url_lossy().to_string();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let settings = Settings::load_from(
        None,
        [
            ("DATABASE_URL", url.as_str()),
            ("KAFKA_BOOTSTRAP_SERVERS", broker.address.as_str()),
            ("CHAT4ALL_LISTEN", "127.0.0.1:0"),
            ("CHAT4ALL_TOPIC_PREFIX", prefix.as_str()),
            // Many sends by one user: the rate limit is not what this test is about.
            ("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "0"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let app = Application::build(&settings).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(stop.clone()));
    let topic = KafkaSettings::events_topic(&prefix);
    let relay = Relay::new(
        pool.clone(),
        options.clone(),
        RelayConfig {
            deployment: prefix.clone(),
            topic: topic.clone(),
            kafka: settings.kafka.clone(),
            batch_size: 500,
            idle_poll: Duration::from_millis(200),
            delivery_timeout: Duration::from_secs(3),
        },
    );
    let status = relay.status();
    let relay = tokio::spawn(relay.run(stop.clone()));

    let http = reqwest::Client::new();
    let token = Arc::new(token(&http, &base, &pool, "alice").await);
    let created: serde_json::Value = http
        .post(format!("{base}/v1/conversations"))
        .bearer_auth(&*token)
        .json(&serde_json::json!({"type": "private", "members": ["alice", "bob"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = created["conversation_id"].as_str().unwrap().to_owned();

    // Sends at a steady 20 per second for `how_long`, answering the latency of each.
    let send_for = |how_long: Duration| {
        let (http, base, token, conversation) = (
            http.clone(),
            base.clone(),
            token.clone(),
            conversation.clone(),
        );
        async move {
            let mut latencies = Vec::new();
            let until = Instant::now() + how_long;
            let mut ticker = tokio::time::interval(Duration::from_millis(50));
            while Instant::now() < until {
                ticker.tick().await;
                let sent = Instant::now();
                let answer = http
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(&*token)
                    .json(&serde_json::json!({"conversation_id": conversation, "content": "hello"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
                latencies.push(sent.elapsed());
            }
            latencies
        }
    };

    let mut before = send_for(Duration::from_secs(3)).await;
    broker.signal("-STOP");
    let errors_before = status.errors();
    let mut during = send_for(OUTAGE).await;
    assert!(
        status.errors() > errors_before,
        "the relay noticed the outage and backs off"
    );
    broker.signal("-CONT");

    let (p50_before, p50_during) = (percentile(&mut before, 0.5), percentile(&mut during, 0.5));
    let (p99_before, p99_during) = (percentile(&mut before, 0.99), percentile(&mut during, 0.99));
    println!("send latency p50 {p50_before:?} -> {p50_during:?} during the outage, p99 {p99_before:?} -> {p99_during:?}");
    // Commands never wait for the broker. Were they to, each would take up to the delivery
    // timeout; the bound is generous so that only waiting on the broker can break it.
    let bound = (p99_before * 20).max(Duration::from_millis(300));
    assert!(
        p99_during < bound,
        "sends waited on the broker: p99 {p99_before:?} -> {p99_during:?}"
    );

    let expected: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while status.published() < u64::try_from(expected).unwrap() {
        assert!(
            Instant::now() < deadline,
            "the relay did not catch up: {} of {expected}",
            status.published()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records = consume(
        &broker.address,
        &topic,
        usize::try_from(expected).unwrap(),
        Duration::from_secs(30),
    )
    .await;
    let distinct: std::collections::HashSet<_> = records.iter().map(Record::identity).collect();
    assert_eq!(
        distinct.len(),
        usize::try_from(expected).unwrap(),
        "nothing was lost"
    );
    // One conversation, one partition: its events appear in the order they were stored (re-sent
    // ones only after a prefix of that same order).
    let mut seen = std::collections::HashSet::new();
    let mut by_offset: Vec<(i64, i64)> = records
        .iter()
        .map(|r| (r.offset, r.envelope["position"].as_i64().unwrap()))
        .collect();
    by_offset.sort_unstable();
    let firsts: Vec<i64> = by_offset
        .into_iter()
        .map(|(_, position)| position)
        .filter(|position| seen.insert(*position))
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "the conversation's events are out of order"
    );
    stop.cancel();
    relay.await.unwrap();
}
