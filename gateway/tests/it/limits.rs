//! The per-user rate limit shared by every instance, and `Idempotency-Key`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};

#[tokio::test]
async fn the_61st_state_changing_request_in_a_minute_is_429_across_instances() {
    let app = TestApp::spawn_with(&[]).await;
    let other = app.another_instance().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;

    // The creation was the first; 59 more sends, alternating instances.
    for i in 2..=60 {
        let instance = if i % 2 == 0 { &other } else { &app };
        let answer = instance.send(&alice, &conversation, &format!("m{i}")).await;
        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "request {i}: {:?}",
            answer.body
        );
        assert_eq!(answer.header("x-ratelimit-limit"), Some("60"));
        assert_eq!(
            answer.header("x-ratelimit-remaining"),
            Some((60 - i).to_string().as_str()),
            "request {i}"
        );
        let reset: u64 = answer.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    let before = app.total_events().await;
    for instance in [&app, &other] {
        let refused = instance.send(&alice, &conversation, "one too many").await;
        refused.problem(429, "rate_limited");
        assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
        let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    assert_eq!(
        app.total_events().await,
        before,
        "a refused request changed something"
    );
    // Reads are not limited, and other users have their own allowance.
    let list = app.get_as("/v1/conversations", &alice).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.header("x-ratelimit-limit").is_none());
    let answer = other.send(&bob, &conversation, "hi").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.header("x-ratelimit-remaining"), Some("59"));
}

async fn post_with_key(
    app: &TestApp,
    token: &str,
    key: &str,
    path: &str,
    body: &serde_json::Value,
) -> Answer {
    Answer::from(
        app.http
            .post(app.url(path))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_other_bodies() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let send =
        json!({"conversation_id": conversation, "content": {"type": "text", "text": "once"}});

    let first = post_with_key(&app, &alice, "order-42", "/v1/messages", &send).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert!(first.header("idempotent-replayed").is_none());
    let again = post_with_key(&other, &alice, "order-42", "/v1/messages", &send).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.count_events("MessageSent").await, 1);

    // The same key with another body, or on another endpoint: 409, nothing done.
    let changed =
        json!({"conversation_id": conversation, "content": {"type": "text", "text": "twice"}});
    post_with_key(&app, &alice, "order-42", "/v1/messages", &changed)
        .await
        .problem(409, "idempotency_key_reused");
    post_with_key(
        &app,
        &alice,
        "order-42",
        "/v1/conversations",
        &json!({"type": "private", "members": ["alice", "carol"]}),
    )
    .await
    .problem(409, "idempotency_key_reused");
    assert_eq!(app.count_events("MessageSent").await, 1);

    // Keys belong to their principal: bob's "order-42" is his own.
    let bobs = post_with_key(&app, &bob, "order-42", "/v1/messages", &send).await;
    assert_eq!(bobs.status, StatusCode::ACCEPTED, "{:?}", bobs.body);
    assert_ne!(bobs.body["message_id"], first.body["message_id"]);

    // An error is an answer too, replayed as it was.
    let invalid = json!({"conversation_id": conversation, "content": {"type": "text", "text": ""}});
    let refused = post_with_key(&app, &alice, "bad-1", "/v1/messages", &invalid).await;
    refused.problem(400, "validation_failed");
    let replayed = post_with_key(&other, &alice, "bad-1", "/v1/messages", &invalid).await;
    replayed.problem(400, "validation_failed");
    assert_eq!(replayed.body, refused.body);
    assert_eq!(
        replayed.header("content-type"),
        Some("application/problem+json")
    );

    // Keys must be 1-200 printable characters.
    for key in ["", &"k".repeat(201), "tab\tkey"] {
        post_with_key(&app, &alice, key, "/v1/messages", &changed)
            .await
            .problem(400, "invalid_idempotency_key");
    }
    assert_eq!(app.count_events("MessageSent").await, 2);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_run_the_command_once() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let alice = app.token("acme", "alice").await;
    let create = json!({"type": "group", "name": "once", "members": ["alice", "bob", "carol"]});
    let answers = futures::future::join_all((0..10).map(|i| {
        let instance = if i % 2 == 0 { &app } else { &other };
        post_with_key(
            instance,
            &alice,
            "create-once",
            "/v1/conversations",
            &create,
        )
    }))
    .await;
    let created: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty());
    for answer in &answers {
        match answer.status.as_u16() {
            201 => assert_eq!(answer.body, created[0].body),
            409 => {
                answer.problem(409, "idempotency_key_in_use");
            }
            other => panic!("unexpected {other}: {:?}", answer.body),
        }
    }
    assert_eq!(app.count_events("ConversationCreated").await, 1);
}

#[tokio::test]
async fn without_redis_the_limit_fails_open_and_says_so_in_a_metric() {
    // Nothing listens on port 1: every Redis call fails at once.
    let app = TestApp::spawn_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let alice = app.token("acme", "alice").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    for i in 0..3 {
        let answer = app.send(&alice, &conversation, &format!("m{i}")).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        assert_eq!(answer.header("x-ratelimit-limit"), Some("60"));
    }
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unavailable = chat4all_testsupport::metrics::value(
        &metrics,
        "chat4all_rate_limit_unavailable_total",
        &[],
    )
    .unwrap_or(0.0);
    assert!(unavailable >= 4.0, "{unavailable}: {metrics}");
}
