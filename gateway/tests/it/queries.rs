//! The query API over the live pipeline (gateway → store → relay → broker → projector).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

/// Sends `n` messages as `token` and returns the position of the last.
async fn send_n(app: &TestApp, token: &str, conversation: &str, n: usize) -> i64 {
    let mut position = 0;
    for i in 1..=n {
        let answer = app.send(token, conversation, &format!("message {i}")).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        position = answer.body["position"].as_i64().unwrap();
    }
    position
}

/// Waits until every one of `positions` is applied (each speaks only for its own conversation).
async fn until_applied(app: &TestApp, token: &str, positions: &[i64]) {
    for position in positions {
        page(
            app,
            token,
            &format!("/v1/conversations?min_position={position}"),
        )
        .await;
    }
}

fn seqs(answer: &Answer) -> Vec<i64> {
    answer.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

async fn page(app: &TestApp, token: &str, path: &str) -> Answer {
    let answer = app.get_as(path, token).await;
    assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
    assert!(
        answer.header("x-projection-position").is_some(),
        "every GET answers its position"
    );
    answer
}

#[tokio::test]
async fn a_client_reads_its_own_writes_in_seq_order() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let position = send_n(&app, &alice, &conversation, 3).await;

    let answer = page(
        &app,
        &bob,
        &format!("/v1/conversations/{conversation}/messages?min_position={position}"),
    )
    .await;
    assert_eq!(seqs(&answer), vec![1, 2, 3]);
    let first = &answer.body["items"][0];
    assert_eq!(first["sender_id"], "alice");
    assert_eq!(
        first["content"],
        json!({"type": "text", "text": "message 1"})
    );
    assert_eq!(first["status"], "accepted");
    assert!(answer.body["next_cursor"].is_null());
    let applied: i64 = answer
        .header("x-projection-position")
        .unwrap()
        .parse()
        .unwrap();
    assert!(applied >= position);

    // bob reads; alice sees it in the message's history and in the conversation detail.
    let message = first["message_id"].as_str().unwrap().to_owned();
    let read = app
        .post(
            &format!("/v1/messages/{message}/status"),
            &bob,
            &json!({"status": "read"}),
        )
        .await;
    let read_position = read.body["position"].as_i64().unwrap();
    let horizon = app
        .post(
            &format!("/v1/conversations/{conversation}/read"),
            &bob,
            &json!({"up_to_seq": 2}),
        )
        .await;
    let horizon_position = horizon.body["position"].as_i64().unwrap();
    let one = page(
        &app,
        &alice,
        &format!("/v1/messages/{message}?min_position={read_position}"),
    )
    .await;
    assert_eq!(one.body["status"], "read");
    let history: Vec<&str> = one.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, vec!["accepted", "read"]);
    let detail = page(
        &app,
        &alice,
        &format!("/v1/conversations/{conversation}?min_position={horizon_position}"),
    )
    .await;
    assert_eq!(detail.body["last_seq"], 3);
    let bob_member = detail.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob_member["last_read_seq"], 2);

    // The list shows unread counts per member.
    let list = page(
        &app,
        &bob,
        &format!("/v1/conversations?min_position={horizon_position}"),
    )
    .await;
    assert_eq!(list.body["items"][0]["unread_count"], 1);
    assert_eq!(list.body["items"][0]["member_count"], 2);
    assert_eq!(list.body["items"][0]["last_message"]["seq"], 3);
}

#[tokio::test]
async fn message_pages_cover_empty_exact_and_partial_pages() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let created = app
        .post(
            "/v1/conversations",
            &alice,
            &json!({"type": "private", "members": ["alice", "bob"]}),
        )
        .await;
    let empty = created.body["conversation_id"].as_str().unwrap().to_owned();
    let conversation = app
        .conversation(&alice, "private", &["alice", "carol"])
        .await;
    let position = send_n(&app, &alice, &conversation, 6).await;
    // min_position speaks for the conversation of the event at that position only.
    until_applied(&app, &alice, &[created.body["position"].as_i64().unwrap()]).await;
    let base = format!("/v1/conversations/{conversation}/messages");

    let none = page(
        &app,
        &alice,
        &format!("/v1/conversations/{empty}/messages?min_position={position}"),
    )
    .await;
    assert_eq!(seqs(&none), Vec::<i64>::new());
    assert!(none.body["next_cursor"].is_null());

    // Backwards from the newest, an exact multiple of the page size.
    let newest = page(
        &app,
        &alice,
        &format!("{base}?limit=3&min_position={position}"),
    )
    .await;
    assert_eq!(seqs(&newest), vec![4, 5, 6]);
    let cursor = newest.body["next_cursor"].as_str().unwrap().to_owned();
    let older = page(&app, &alice, &format!("{base}?limit=3&cursor={cursor}")).await;
    assert_eq!(seqs(&older), vec![1, 2, 3]);
    assert!(older.body["next_cursor"].is_null(), "the last page says so");

    // Forwards, with a partial last page.
    let first = page(&app, &alice, &format!("{base}?limit=4&after_seq=0")).await;
    assert_eq!(seqs(&first), vec![1, 2, 3, 4]);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let rest = page(&app, &alice, &format!("{base}?limit=4&cursor={cursor}")).await;
    assert_eq!(seqs(&rest), vec![5, 6]);
    assert!(rest.body["next_cursor"].is_null());
    assert_eq!(
        seqs(&page(&app, &alice, &format!("{base}?before_seq=3")).await),
        vec![1, 2]
    );
}

#[tokio::test]
async fn the_conversation_list_pages_by_latest_activity() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let mut conversations = Vec::new();
    let mut positions = Vec::new();
    for friend in ["bob", "carol", "dave"] {
        let id = app
            .conversation(&alice, "private", &["alice", friend])
            .await;
        positions.push(send_n(&app, &alice, &id, 1).await);
        conversations.push(id);
    }
    until_applied(&app, &alice, &positions).await;
    let first = page(&app, &alice, "/v1/conversations?limit=2").await;
    let ids = |a: &Answer| -> Vec<String> {
        a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["conversation_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&first),
        vec![conversations[2].clone(), conversations[1].clone()]
    );
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = page(
        &app,
        &alice,
        &format!("/v1/conversations?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(ids(&second), vec![conversations[0].clone()]);
    assert!(second.body["next_cursor"].is_null());
}

#[tokio::test]
async fn queries_refuse_bad_parameters_and_hide_what_the_caller_cannot_see() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let carol = app.token("acme", "carol").await;
    let mallory = app.token("evil", "alice").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let position = send_n(&app, &alice, &conversation, 1).await;
    let message = page(
        &app,
        &alice,
        &format!("/v1/conversations/{conversation}/messages?min_position={position}"),
    )
    .await
    .body["items"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();

    for (path, code) in [
        (
            "/v1/conversations?cursor=nonsense".to_owned(),
            "invalid_cursor",
        ),
        (
            format!("/v1/conversations/{conversation}/messages?cursor=c1.1.2"),
            "invalid_cursor",
        ),
        ("/v1/conversations?limit=0".to_owned(), "validation_failed"),
        (
            "/v1/conversations?limit=101".to_owned(),
            "validation_failed",
        ),
        (
            format!("/v1/conversations/{conversation}/messages?before_seq=2&after_seq=1"),
            "validation_failed",
        ),
        (
            "/v1/conversations?min_position=-3".to_owned(),
            "validation_failed",
        ),
    ] {
        app.get_as(&path, &alice).await.problem(400, code);
    }
    for token in [&carol, &mallory] {
        app.get_as(&format!("/v1/conversations/{conversation}"), token)
            .await
            .problem(404, "conversation_not_found");
        app.get_as(&format!("/v1/conversations/{conversation}/messages"), token)
            .await
            .problem(404, "conversation_not_found");
        app.get_as(&format!("/v1/messages/{message}"), token)
            .await
            .problem(404, "message_not_found");
    }
    let theirs = page(&app, &mallory, "/v1/conversations").await;
    assert_eq!(theirs.body["items"], json!([]));
}

#[tokio::test]
async fn a_position_not_reached_in_time_is_503_with_retry_after() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let started = Instant::now();
    let answer = app
        .get_as("/v1/conversations?min_position=999999999", &alice)
        .await;
    answer.problem(503, "projection_lagging");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "it waited for the position first"
    );
    let _: Value = answer.body;
}
