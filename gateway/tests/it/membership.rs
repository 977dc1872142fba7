//! Membership answers stay right across gateway instances, although each caches them.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::TestApp;

/// Sends as `token` through `app` until the answer has `status`, or fails after a deadline.
async fn until_send_answers(app: &TestApp, token: &str, conversation: &str, status: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = app.send(token, conversation, "probe").await;
        if answer.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {} instead of {status}: {:?}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_member_who_left_is_refused_on_every_instance() {
    let one = TestApp::spawn().await;
    let two = one.another_instance().await;
    let alice = one.token("acme", "alice").await;
    let bob = one.token("acme", "bob").await;
    let conversation = one
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    // Both instances have answered for bob, so both know the membership.
    assert_eq!(
        one.send(&bob, &conversation, "hi").await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        two.send(&bob, &conversation, "hi").await.status,
        StatusCode::ACCEPTED
    );

    let left = one
        .delete(
            &format!("/v1/conversations/{conversation}/members/bob"),
            &bob,
        )
        .await;
    assert_eq!(left.status, StatusCode::ACCEPTED, "{:?}", left.body);

    // The instance that made the change knows at once; the other one is told by the store.
    one.send(&bob, &conversation, "still here?")
        .await
        .problem(404, "conversation_not_found");
    until_send_answers(&two, &bob, &conversation, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_member_who_joined_is_accepted_on_every_instance() {
    let one = TestApp::spawn().await;
    let two = one.another_instance().await;
    let alice = one.token("acme", "alice").await;
    let dave = one.token("acme", "dave").await;
    let conversation = one
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    two.send(&dave, &conversation, "let me in")
        .await
        .problem(404, "conversation_not_found");
    assert_eq!(
        two.send(&alice, &conversation, "warm").await.status,
        StatusCode::ACCEPTED
    );

    let joined = one
        .post(
            &format!("/v1/conversations/{conversation}/members"),
            &alice,
            &serde_json::json!({"user_id": "dave"}),
        )
        .await;
    assert_eq!(joined.status, StatusCode::ACCEPTED, "{:?}", joined.body);

    assert_eq!(
        one.send(&dave, &conversation, "hello").await.status,
        StatusCode::ACCEPTED
    );
    until_send_answers(&two, &dave, &conversation, StatusCode::ACCEPTED).await;
}

#[tokio::test]
async fn a_retried_send_answers_as_the_original_even_after_the_sender_left() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let conversation = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let body = serde_json::json!({
        "message_id": "0f1e2d3c-4b5a-4697-8877-665544332211",
        "conversation_id": conversation,
        "content": "goodbye",
    });
    let original = app.post("/v1/messages", &alice, &body).await;
    assert_eq!(original.status, StatusCode::ACCEPTED);
    let left = app
        .delete(
            &format!("/v1/conversations/{conversation}/members/alice"),
            &alice,
        )
        .await;
    assert_eq!(left.status, StatusCode::ACCEPTED);

    let retry = app.post("/v1/messages", &alice, &body).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{:?}", retry.body);
    assert_eq!(retry.body, original.body);
    // A new message from her is refused, though.
    app.send(&alice, &conversation, "one more")
        .await
        .problem(404, "conversation_not_found");
}

#[tokio::test]
async fn member_ids_in_paths_may_be_percent_encoded() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let conversation = app
        .conversation(&alice, "group", &["alice", "bob", "dave@x.io:1"])
        .await;
    let removed = app
        .delete(
            &format!("/v1/conversations/{conversation}/members/dave%40x.io%3A1"),
            &alice,
        )
        .await;
    assert_eq!(removed.status, StatusCode::ACCEPTED, "{:?}", removed.body);
    assert_eq!(removed.body["user_id"], "dave@x.io:1");
}

#[tokio::test]
async fn authentication_schemes_are_case_insensitive_and_odd_headers_are_401() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let body = serde_json::json!({"conversation_id": conversation, "content": "hi"});
    let lower = app
        .post_authorized("/v1/messages", Some(&format!("bearer {alice}")), &body)
        .await;
    assert_eq!(lower.status, StatusCode::ACCEPTED);
    let odd = app
        .http
        .post(app.url("/v1/messages"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xe9t\xe9").unwrap(),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), StatusCode::UNAUTHORIZED);
    assert!(odd.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_token\""));
}
