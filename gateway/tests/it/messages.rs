//! `POST /v1/messages`: idempotency, visibility, validation, limits and concurrency.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

const MESSAGE_ID: &str = "6a1f0b7e-3f3c-4a52-8d0e-2b1b9c7f4e11";

#[tokio::test]
async fn the_same_message_id_twice_is_one_message_with_identical_answers() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let body =
        json!({"message_id": MESSAGE_ID, "conversation_id": conversation, "content": "hello"});

    let first = app.post("/v1/messages", &alice, &body).await;
    let second = app.post("/v1/messages", &alice, &body).await;

    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(first.body, second.body);
    assert_eq!(first.body["message_id"], MESSAGE_ID);
    assert_eq!(first.body["conversation_id"], conversation.as_str());
    assert_eq!(first.body["status"], "accepted");
    assert!(first.body["position"].as_i64().unwrap() > 0);
    assert_eq!(app.count_events("MessageSent").await, 1);
}

#[tokio::test]
async fn a_message_id_reused_for_other_content_is_a_conflict() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let send = |text: &str| json!({"message_id": MESSAGE_ID, "conversation_id": conversation, "content": {"type": "text", "text": text}});
    assert_eq!(
        app.post("/v1/messages", &alice, &send("one")).await.status,
        StatusCode::ACCEPTED
    );

    app.post("/v1/messages", &alice, &send("two"))
        .await
        .problem(409, "message_id_conflict");
    // Shorthand and object forms of the same text are the same content.
    let shorthand =
        json!({"message_id": MESSAGE_ID, "conversation_id": conversation, "content": "one"});
    assert_eq!(
        app.post("/v1/messages", &alice, &shorthand).await.status,
        StatusCode::ACCEPTED
    );
    // Another sender reusing the id is other content too.
    let bob = app.token("acme", "bob").await;
    app.post("/v1/messages", &bob, &send("one"))
        .await
        .problem(409, "message_id_conflict");
    assert_eq!(app.count_events("MessageSent").await, 1);
}

#[tokio::test]
async fn unknown_conversations_and_non_members_get_404() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let carol = app.token("acme", "carol").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;

    app.send(&alice, "0b0e7e1c-5a3a-4d4f-9a53-3c2f1d0e9b11", "hi")
        .await
        .problem(404, "conversation_not_found");
    app.send(&carol, &conversation, "let me in")
        .await
        .problem(404, "conversation_not_found");
    // The same conversation id in another tenant is another (missing) conversation.
    let mallory = app.token("evil", "alice").await;
    app.send(&mallory, &conversation, "hi")
        .await
        .problem(404, "conversation_not_found");
    assert_eq!(app.count_events("MessageSent").await, 0);
}

#[tokio::test]
async fn invalid_sends_are_400_with_the_field_named() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let cases = [
        (
            json!({"conversation_id": conversation, "content": ""}),
            "content.text",
        ),
        (
            json!({"conversation_id": conversation, "content": "x".repeat(65_537)}),
            "content.text",
        ),
        (
            json!({"conversation_id": conversation, "content": "nul \u{0} inside"}),
            "content.text",
        ),
        (
            json!({"message_id": "not-a-uuid", "conversation_id": conversation, "content": "hi"}),
            "message_id",
        ),
        (
            json!({"conversation_id": "nope", "content": "hi"}),
            "conversation_id",
        ),
        (
            json!({"conversation_id": conversation, "content": "hi", "channels": ["pigeon"]}),
            "channels[0]",
        ),
        (
            json!({"conversation_id": conversation, "content": "hi", "urgent": true}),
            "urgent",
        ),
        (
            json!({"conversation_id": conversation, "content": {"type": "text", "text": "hi", "bold": true}}),
            "content.bold",
        ),
        (
            json!({"conversation_id": conversation, "content": {"type": "video"}}),
            "content.type",
        ),
        (
            json!({"conversation_id": conversation, "content": {"type": "text"}}),
            "content.text",
        ),
        (
            json!({"conversation_id": conversation, "content": 42}),
            "content",
        ),
        (json!({"conversation_id": conversation}), "body"),
    ];
    for (body, field) in cases {
        let answer = app.post("/v1/messages", &alice, &body).await;
        answer.problem(400, "validation_failed");
        assert!(
            answer.error_fields().iter().any(|f| f == field),
            "expected an error on {field}, got {:?}",
            answer.body
        );
    }
    // Exactly 64 KiB is accepted; files cannot be sent before uploads exist.
    assert_eq!(
        app.send(&alice, &conversation, &"x".repeat(65_536))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let file =
        json!({"conversation_id": conversation, "content": {"type": "file", "file_id": "f1"}});
    app.post("/v1/messages", &alice, &file)
        .await
        .problem(400, "file_not_ready");
    assert_eq!(app.count_events("MessageSent").await, 1);
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_ones_413() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    for body in [&b"{"[..], b"not json", b"{\"content\": \"\xff\"}", b""] {
        app.post_raw("/v1/messages", Some(&alice), body.to_vec())
            .await
            .problem(400, "malformed_json");
    }
    // Nesting deeper than the parser's limit, where any JSON value is allowed.
    let deep = format!(
        "{{\"conversation_id\": \"x\", \"content\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    app.post_raw("/v1/messages", Some(&alice), deep)
        .await
        .problem(400, "malformed_json");

    let two_mib = format!("{{\"content\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    app.post_raw("/v1/messages", Some(&alice), two_mib.clone())
        .await
        .problem(413, "payload_too_large");
    // Without a Content-Length (chunked), the limit still holds.
    let chunks = futures::stream::iter(
        two_mib
            .into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    app.post_raw(
        "/v1/messages",
        Some(&alice),
        reqwest::Body::wrap_stream(chunks),
    )
    .await
    .problem(413, "payload_too_large");
}

#[tokio::test]
async fn two_hundred_concurrent_sends_by_three_members_are_all_accepted() {
    let app = TestApp::spawn().await;
    let tokens = [
        app.token("acme", "alice").await,
        app.token("acme", "bob").await,
        app.token("acme", "carol").await,
    ];
    let conversation = app
        .conversation(&tokens[0], "group", &["alice", "bob", "carol"])
        .await;
    let sends = (0..200).map(|i| {
        let token = tokens[i % 3].clone();
        let conversation = conversation.clone();
        let app = &app;
        async move {
            app.send(&token, &conversation, &format!("message {i}"))
                .await
        }
    });
    let answers = futures::future::join_all(sends).await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    }
    let positions: std::collections::HashSet<i64> = answers
        .iter()
        .map(|a| a.body["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions.len(), 200, "every send has its own position");
    assert_eq!(app.count_events("MessageSent").await, 200);
}

#[tokio::test]
async fn every_event_carries_its_order_and_metadata() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let answer = app
        .http
        .post(app.url("/v1/messages"))
        .bearer_auth(&alice)
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&json!({"conversation_id": conversation, "content": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);

    let rows: Vec<(i64, String, serde_json::Value, String)> = sqlx::query_as(
        "SELECT global_position, tx_id::text, metadata, aggregate_id FROM events ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for (position, tx_id, metadata, aggregate_id) in &rows {
        assert!(*position > 0);
        assert!(tx_id.parse::<u64>().unwrap() > 0);
        assert_eq!(metadata["tenant_id"], "acme");
        assert_eq!(metadata["actor"], "alice");
        assert_eq!(metadata["trace_id"].as_str().unwrap().len(), 32);
        for key in ["occurred_at", "correlation_id", "causation_id"] {
            assert!(metadata[key].is_string(), "{key} missing in {metadata}");
        }
        assert!(
            aggregate_id.starts_with("acme:"),
            "stream ids are namespaced by tenant"
        );
    }
    assert_eq!(rows[1].2["trace_id"], "0af7651916cd43dd8448eb211c80319c");
}
