//! A connected socket follows its user's joins and leaves without reconnecting: added to a
//! group, it starts receiving that conversation's messages; removed, it stops, which is shown by
//! a later marker message of another conversation arriving while the one sent after the removal
//! does not (no fixed wait). Where a test needs two events announced together (one projector
//! batch, as on a busy deployment), the relay is paused while both are stored.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};
use crate::ws::{created_seqs, frames_until, is_message};

#[track_caller]
fn accepted(answer: &Answer) -> i64 {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    answer.body["position"].as_i64().unwrap()
}

async fn add(app: &TestApp, token: &str, conversation: &str, user: &str) -> i64 {
    let path = format!("/v1/conversations/{conversation}/members");
    accepted(&app.post(&path, token, &json!({"user_id": user})).await)
}

async fn remove(app: &TestApp, token: &str, conversation: &str, user: &str) -> i64 {
    let path = format!("/v1/conversations/{conversation}/members/{user}");
    accepted(&app.delete(&path, token).await)
}

fn is_membership(frame: &Value, kind: &str, conversation: &str, user: &str) -> bool {
    frame["type"] == kind
        && frame["data"]["conversation_id"] == conversation
        && frame["data"]["user_id"] == user
}

#[tokio::test]
async fn a_member_added_while_connected_receives_the_conversation_from_then_on() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let dave = app.token("acme", "dave").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let before = accepted(&app.send(&alice, &group, "before").await);
    app.until_applied(&alice, before).await;
    let mut socket = app.connect(&dave).await;

    add(&app, &alice, &group, "dave").await;
    let joined = frames_until(&mut socket, |f| {
        is_membership(f, "conversation.member_joined", &group, "dave")
    })
    .await;
    assert_eq!(joined.last().unwrap()["data"]["added_by"], "alice");
    accepted(&app.send(&alice, &group, "welcome").await);

    let frames = frames_until(&mut socket, |f| is_message(f, &group, "welcome")).await;
    assert_eq!(created_seqs(&frames, &group), [2]);
    // And the conversation is dave's now: he may type in it, and the others hear him.
    let mut alice_socket = app.connect(&alice).await;
    let typing = json!({"type": "typing", "data": {"conversation_id": group}});
    futures::SinkExt::send(
        &mut socket,
        tokio_tungstenite::tungstenite::Message::text(typing.to_string()),
    )
    .await
    .unwrap();
    let heard = frames_until(&mut alice_socket, |f| f["type"] == "typing").await;
    assert_eq!(
        heard.last().unwrap()["data"],
        json!({"conversation_id": group, "user_id": "dave"})
    );
}

#[tokio::test]
async fn a_member_removed_while_connected_stops_receiving_the_conversation() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let private = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let hello = accepted(&app.send(&alice, &group, "hello").await);
    app.until_applied(&alice, hello).await;
    let mut socket = app.connect(&bob).await;
    // Subscribed: a live message arrives.
    accepted(&app.send(&alice, &group, "live").await);
    frames_until(&mut socket, |f| is_message(f, &group, "live")).await;

    remove(&app, &alice, &group, "bob").await;
    let mut frames = frames_until(&mut socket, |f| {
        is_membership(f, "conversation.member_left", &group, "bob")
    })
    .await;
    assert_eq!(frames.last().unwrap()["data"]["removed_by"], "alice");
    let secret = accepted(&app.send(&alice, &group, "after bob left").await);
    // Announced after the message above: a frame that was coming would come first.
    app.until_applied(&alice, secret).await;
    accepted(&app.send(&alice, &private, "marker").await);
    frames.extend(frames_until(&mut socket, |f| is_message(f, &private, "marker")).await);

    assert!(
        !frames
            .iter()
            .any(|f| is_message(f, &group, "after bob left")),
        "a removed member received a later message: {frames:?}"
    );
}

#[tokio::test]
async fn a_message_sent_right_after_a_removal_never_reaches_the_removed_member() {
    let mut app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let private = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let hello = accepted(&app.send(&alice, &private, "hello").await);
    app.until_applied(&alice, hello).await;
    let mut socket = app.connect(&bob).await;
    accepted(&app.send(&alice, &group, "live").await);
    frames_until(&mut socket, |f| is_message(f, &group, "live")).await;

    // The removal and the next message are projected and announced together.
    app.stop_relay().await;
    remove(&app, &alice, &group, "bob").await;
    let secret = accepted(&app.send(&alice, &group, "after bob left").await);
    app.start_relay();

    let mut frames = frames_until(&mut socket, |f| {
        is_membership(f, "conversation.member_left", &group, "bob")
    })
    .await;
    app.until_applied(&alice, secret).await;
    accepted(&app.send(&alice, &private, "marker").await);
    frames.extend(frames_until(&mut socket, |f| is_message(f, &private, "marker")).await);

    assert!(
        !frames
            .iter()
            .any(|f| is_message(f, &group, "after bob left")),
        "a removed member received a later message: {frames:?}"
    );
}

#[tokio::test]
async fn a_message_sent_right_after_a_join_reaches_the_new_member() {
    let mut app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let dave = app.token("acme", "dave").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let before = accepted(&app.send(&alice, &group, "before").await);
    app.until_applied(&alice, before).await;
    let mut socket = app.connect(&dave).await;

    // The join and the first message after it are projected and announced together.
    app.stop_relay().await;
    add(&app, &alice, &group, "dave").await;
    accepted(&app.send(&alice, &group, "welcome").await);
    app.start_relay();

    let mut frames = frames_until(&mut socket, |f| {
        is_membership(f, "conversation.member_joined", &group, "dave")
    })
    .await;
    accepted(&app.send(&alice, &group, "next").await);
    frames.extend(frames_until(&mut socket, |f| is_message(f, &group, "next")).await);

    assert_eq!(created_seqs(&frames, &group), [2, 3], "{frames:?}");
}
