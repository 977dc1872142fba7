//! `kill -9` of `chat4all serve` while clients send as fast as they can: after a restart, every
//! acknowledged message reaches the read models exactly once, numbered without a gap, within
//! 30 s (the restarted projector must get its partitions back, not wait for a dead member).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat4all_testsupport::database::fresh_database;
use sqlx::ConnectOptions;

use crate::model::{
    assert_projected_once_without_gaps, missing_from_read_models, projected_messages,
    stored_messages, token,
};
use crate::process::{Process, BIN};

const SENDERS: usize = 16;
const CONVERSATIONS: usize = 4;
const CAUGHT_UP_WITHIN: Duration = Duration::from_secs(30);

fn serve(env: &[(String, String)]) -> (Process, String) {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut process = Process::spawn(&["serve"], &pairs);
    let address = process
        .wait_for_log(Duration::from_secs(60), |e| {
            e["fields"]["message"] == "gateway listening"
        })
        .unwrap_or_else(|| panic!("{BIN} serve did not start: {:?}", process.drain()))["fields"]
        ["address"]
        .as_str()
        .unwrap()
        .to_owned();
    (process, format!("http://{address}"))
}

#[tokio::test]
async fn a_crashed_engine_restarts_and_every_acknowledged_message_is_projected_once() {
    let (options, pool) = fresh_database().await;
    let bootstrap =
        std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", options.to_url_lossy().to_string()),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap),
        (
            "CHAT4ALL_TOPIC_PREFIX",
            format!("t{}", uuid::Uuid::new_v4().simple()),
        ),
        ("CHAT4ALL_LISTEN", "127.0.0.1:0".to_owned()),
        ("CHAT4ALL_KAFKA__PARTITIONS", "4".to_owned()),
        ("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "0".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec();
    let (mut engine, base) = serve(&env);
    let http = reqwest::Client::new();
    let alice = token(&http, &base, &pool, "alice").await;
    let mut conversations = Vec::new();
    for _ in 0..CONVERSATIONS {
        let created: serde_json::Value = http
            .post(format!("{base}/v1/conversations"))
            .bearer_auth(&alice)
            .json(&serde_json::json!({"type": "group", "name": "crash", "members": ["alice", "bob", "carol"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        conversations.push(created["conversation_id"].as_str().unwrap().to_owned());
    }

    // Senders go as fast as the engine answers, until it stops answering.
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let (http, base, alice) = (http.clone(), base.clone(), alice.clone());
        let conversation = conversations[i % CONVERSATIONS].clone();
        let acknowledged = acknowledged.clone();
        senders.push(tokio::spawn(async move {
            loop {
                let id = uuid::Uuid::new_v4();
                let answer = http
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(&alice)
                    .json(&serde_json::json!({
                        "message_id": id, "conversation_id": conversation, "content": "crash"
                    }))
                    .send()
                    .await;
                match answer {
                    Ok(a) if a.status() == reqwest::StatusCode::ACCEPTED => {
                        acknowledged.lock().unwrap().insert(id);
                    }
                    Ok(a) => panic!("a send answered {}", a.status()),
                    // The engine is gone.
                    Err(_) => return,
                }
            }
        }));
    }
    // Crash once a good number were acknowledged, some of them surely not yet projected.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 1_500 {
        assert!(Instant::now() < deadline, "the senders made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.crash();
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged: Vec<uuid::Uuid> = acknowledged.lock().unwrap().iter().copied().collect();
    let projected_before = projected_messages(&pool).await;

    let restarted = Instant::now();
    let (_engine, _) = serve(&env);
    loop {
        let missing = missing_from_read_models(&pool, &acknowledged).await;
        if missing == 0 {
            break;
        }
        assert!(
            restarted.elapsed() < CAUGHT_UP_WITHIN,
            "{missing} of {} acknowledged messages were not projected {CAUGHT_UP_WITHIN:?} after the restart",
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{} acknowledged, {projected_before} projected at the crash; all projected {:?} after the restart",
        acknowledged.len(),
        restarted.elapsed()
    );

    // Sends accepted but not yet answered at the crash are stored too; they are projected like
    // the rest, and then everything exactly once.
    let stored = stored_messages(&pool).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = projected_messages(&pool).await;
        if rows == stored {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{rows} projected of {stored} stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_projected_once_without_gaps(&pool).await;
}
