//! `POST /v1/messages/{id}/status`: recipients report delivery and reading, forward only.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};

async fn report(app: &TestApp, token: &str, message: &str, status: &str) -> Answer {
    let path = format!("/v1/messages/{message}/status");
    app.post(&path, token, &json!({"status": status})).await
}

/// A group of alice, bob and dave with one message of alice; the message's id.
async fn message_from_alice(app: &TestApp, alice: &str) -> String {
    let conversation = app
        .conversation(alice, "group", &["alice", "bob", "dave"])
        .await;
    let sent = app.send(alice, &conversation, "hello").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    sent.body["message_id"].as_str().unwrap().to_owned()
}

#[track_caller]
fn reported(answer: &Answer, message: &str, status: &str) {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.body["message_id"], message);
    assert_eq!(answer.body["status"], status);
    assert!(
        answer.body["position"].as_i64().unwrap() > 0,
        "{:?}",
        answer.body
    );
}

#[tokio::test]
async fn a_recipients_status_only_moves_forward() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let message = message_from_alice(&app, &alice).await;

    reported(
        &report(&app, &bob, &message, "delivered").await,
        &message,
        "delivered",
    );
    reported(
        &report(&app, &bob, &message, "read").await,
        &message,
        "read",
    );
    let backwards = report(&app, &bob, &message, "delivered").await;
    reported(&backwards, &message, "read");

    assert_eq!(app.count_events("MessageDelivered").await, 1);
    let reads = app.payloads("MessageRead").await;
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0]["user_id"], "bob");
    assert_eq!(reads[0]["message_id"], message.as_str());
}

#[tokio::test]
async fn only_recipients_of_a_visible_message_may_report() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let carol = app.token("acme", "carol").await;
    let message = message_from_alice(&app, &alice).await;
    let before = app.total_events().await;

    report(&app, &alice, &message, "delivered")
        .await
        .problem(403, "not_a_recipient");
    report(&app, &carol, &message, "delivered")
        .await
        .problem(404, "message_not_found");
    let unknown = "9b2e4f60-1c3d-4e5f-8a7b-0c1d2e3f4a5b";
    report(&app, &alice, unknown, "read")
        .await
        .problem(404, "message_not_found");
    report(&app, &alice, "not-a-uuid", "read")
        .await
        .problem(404, "message_not_found");
    let invalid = report(&app, &alice, &message, "seen").await;
    invalid.problem(400, "validation_failed");
    assert_eq!(invalid.error_fields(), ["status"]);
    assert_eq!(app.total_events().await, before);
}

#[tokio::test]
async fn another_tenant_cannot_report_on_a_message() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let mallory = app.token("evil", "bob").await;
    let message = message_from_alice(&app, &alice).await;
    let before = app.total_events().await;

    report(&app, &mallory, &message, "read")
        .await
        .problem(404, "message_not_found");
    assert_eq!(app.total_events().await, before);
}
