//! WebSocket push of one gateway over the live pipeline: a read receipt reaches the other
//! members' sockets as `conversation.read` (and the senders' as `message.status_updated`), and a
//! socket may authenticate with `Authorization: Bearer` instead of `?token=`, a bad header being
//! an HTTP 401 before any upgrade.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::helpers::TestApp;
use crate::ws::{frames_until, next_frame};

#[track_caller]
fn accepted(answer: &crate::helpers::Answer) -> i64 {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    answer.body["position"].as_i64().unwrap()
}

fn keys(data: &Value) -> BTreeSet<String> {
    data.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn a_read_reaches_the_other_members_sockets_as_conversation_read() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let carol = app.token("acme", "carol").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let mut messages = Vec::new();
    let mut position = 0;
    for text in ["one", "two", "three"] {
        let answer = app.send(&alice, &group, text).await;
        position = accepted(&answer);
        messages.push(answer.body["message_id"].as_str().unwrap().to_owned());
    }
    app.until_applied(&alice, position).await;
    let mut alice_socket = app.connect(&alice).await;
    let mut carol_socket = app.connect(&carol).await;

    let read = app
        .post(
            &format!("/v1/conversations/{group}/read"),
            &bob,
            &json!({"up_to_seq": 2}),
        )
        .await;
    let read_position = accepted(&read);

    // Another member hears of it, with exactly the documented fields.
    let frames = frames_until(&mut carol_socket, |f| f["type"] == "conversation.read").await;
    let heard = &frames.last().unwrap()["data"];
    assert_eq!(
        keys(heard),
        ["conversation_id", "read_at", "up_to_seq", "user_id"]
            .map(str::to_owned)
            .into(),
        "{heard}"
    );
    assert_eq!(heard["conversation_id"], group.as_str());
    assert_eq!(heard["user_id"], "bob");
    assert_eq!(heard["up_to_seq"], 2);
    let read_at = heard["read_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(read_at).is_ok() && read_at.ends_with('Z'),
        "read_at {read_at}"
    );

    // The sender hears it too, and that her first two messages (not the third) are read.
    let mut read_frame = None;
    let mut statuses = Vec::new();
    while read_frame.is_none() || statuses.len() < 2 {
        let frame = next_frame(&mut alice_socket).await;
        match frame["type"].as_str() {
            Some("conversation.read") => read_frame = Some(frame),
            Some("message.status_updated") => statuses.push(frame["data"].clone()),
            _ => {}
        }
    }
    assert_eq!(read_frame.unwrap()["data"], *heard);
    statuses.sort_by_key(|s| s["seq"].as_i64());
    for (status, (seq, message)) in statuses.iter().zip([(1, &messages[0]), (2, &messages[1])]) {
        assert_eq!(status["seq"], seq, "{status}");
        assert_eq!(status["message_id"], message.as_str(), "{status}");
        assert_eq!(status["conversation_id"], group.as_str());
        assert_eq!(status["old_status"], "accepted");
        assert_eq!(status["new_status"], "read");
    }
    let third = app
        .get_as(
            &format!("/v1/messages/{}?min_position={read_position}", messages[2]),
            &alice,
        )
        .await;
    assert_eq!(third.status, StatusCode::OK, "{:?}", third.body);
    assert_eq!(third.body["status"], "accepted");
}

#[tokio::test]
async fn a_socket_authenticates_with_a_bearer_header_and_a_bad_one_is_401_before_the_upgrade() {
    let app = TestApp::spawn().await;
    let client = app
        .client(
            "acme",
            "bob",
            &[
                chat4all_gateway::auth::Scope::Read,
                chat4all_gateway::auth::Scope::Write,
            ],
        )
        .await;
    let bob = app.token_for(&client).await;

    // The scheme is case-insensitive (RFC 7235 §2.1).
    for scheme in ["Bearer", "bearer"] {
        let mut socket = app
            .handshake_with_header(&format!("{scheme} {bob}"))
            .await
            .unwrap_or_else(|e| panic!("{scheme}: {e:?}"));
        let established = next_frame(&mut socket).await;
        assert_eq!(established["type"], "connection.established");
        assert_eq!(established["data"]["user_id"], "bob");
        // A served socket: it answers a frame.
        futures::SinkExt::send(
            &mut socket,
            tokio_tungstenite::tungstenite::Message::text(
                r#"{"type": "resume", "data": {"positions": {}}}"#,
            ),
        )
        .await
        .unwrap();
        let completed = next_frame(&mut socket).await;
        assert_eq!(completed["type"], "resume.completed", "{completed}");
    }

    // Another first character of the signature (the last one carries padding bits).
    let (signed, signature) = bob.rsplit_once('.').unwrap();
    let other = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{signed}.{other}{}", &signature[1..]);
    let revoked = app.token_for(&client).await;
    let revocation = app
        .http
        .post(app.url("/auth/revoke"))
        .form(&[
            ("token", revoked.as_str()),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revocation.status(), StatusCode::OK);
    for header in [
        "Bearer garbage".to_owned(),
        format!("Bearer {tampered}"),
        format!("Bearer {revoked}"),
        "Bearer ".to_owned(),
        format!("Basic {bob}"),
        bob.clone(),
    ] {
        match app.handshake_with_header(&header).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), 401, "{header}");
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                assert!(
                    challenge.starts_with("Bearer error=\"invalid_token\""),
                    "{header}: {challenge:?}"
                );
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["code"], "invalid_token", "{header}: {body}");
            }
            Ok(_) => panic!("{header}: upgraded"),
            Err(other) => panic!("{header}: {other:?}"),
        }
    }
}
