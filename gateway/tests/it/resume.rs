//! `resume` on the WebSocket, against settled read models so every count is exact: what was
//! missed is replayed in order and `resume.completed` says `recovered: true` with how many; a
//! conversation the user is not (or no longer) in, or more missed messages than one resume may
//! replay (1,000 per conversation), answers `recovered: false`, revealing nothing of the former.

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::TestApp;
use crate::ws::{created_seqs, frames_until, Socket};

/// Messages one resume replays per conversation before it tells the client to refetch.
const REPLAY_LIMIT: usize = 1_000;

/// Sends `count` texts to `conversation` (`in_flight` at a time) and returns the highest
/// position, once every one of them was accepted.
async fn send_many(
    app: &TestApp,
    token: &str,
    conversation: &str,
    count: usize,
    in_flight: usize,
) -> i64 {
    let positions: Vec<i64> = futures::stream::iter(0..count)
        .map(|i| async move {
            let answer = app.send(token, conversation, &format!("m{i}")).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
            answer.body["position"].as_i64().unwrap()
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    positions.into_iter().max().unwrap()
}

/// Sends a `resume` with `positions` and returns every frame up to and including
/// `resume.completed`.
async fn resume(socket: &mut Socket, positions: Value) -> Vec<Value> {
    let frame = json!({"type": "resume", "data": {"positions": positions}});
    socket.send(Message::text(frame.to_string())).await.unwrap();
    frames_until(socket, |f| f["type"] == "resume.completed").await
}

fn completed(frames: &[Value]) -> &Value {
    &frames.last().unwrap()["data"]
}

#[tokio::test]
async fn a_resume_replays_exactly_what_was_missed_and_counts_it() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let private = app.conversation(&alice, "private", &["alice", "bob"]).await;
    for (conversation, count) in [(&group, 5), (&private, 2)] {
        let position = send_many(&app, &alice, conversation, count, 1).await;
        app.until_applied(&alice, position).await;
    }
    let mut socket = app.connect(&bob).await;

    let frames = resume(&mut socket, json!({group.clone(): 2, private.clone(): 2})).await;

    assert_eq!(created_seqs(&frames, &group), [3, 4, 5]);
    assert!(created_seqs(&frames, &private).is_empty(), "{frames:?}");
    assert_eq!(frames.len(), 4, "only the missed messages and the answer");
    assert_eq!(
        *completed(&frames),
        json!({"recovered": true, "replayed": 3})
    );
}

#[tokio::test]
async fn a_resume_of_a_conversation_the_user_is_not_in_is_not_recovered_and_reveals_nothing() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let mine = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let theirs = app
        .conversation(&alice, "private", &["alice", "carol"])
        .await;
    let left = app
        .conversation(&alice, "group", &["alice", "bob", "dave"])
        .await;
    for (conversation, count) in [(&mine, 2), (&theirs, 3), (&left, 3)] {
        let position = send_many(&app, &alice, conversation, count, 1).await;
        app.until_applied(&alice, position).await;
    }
    let removal = app
        .delete(&format!("/v1/conversations/{left}/members/bob"), &alice)
        .await;
    assert_eq!(removal.status, StatusCode::ACCEPTED, "{:?}", removal.body);
    let position = removal.body["position"].as_i64().unwrap();
    app.until_applied(&alice, position).await;
    let mut socket = app.connect(&bob).await;

    // Each of the three a user has no business in, alone: nothing replayed, not recovered.
    let unknown = uuid::Uuid::new_v4().to_string();
    for conversation in [&theirs, &left, &unknown] {
        let frames = resume(&mut socket, json!({conversation.clone(): 0})).await;
        assert_eq!(frames.len(), 1, "{conversation}: {frames:?}");
        assert_eq!(
            *completed(&frames),
            json!({"recovered": false, "replayed": 0}),
            "{conversation}"
        );
    }
    // With one of the user's own: that one is replayed and counted, and the answer still says
    // the whole gap could not be filled.
    let frames = resume(&mut socket, json!({mine.clone(): 0, theirs.clone(): 0})).await;
    assert_eq!(created_seqs(&frames, &mine), [1, 2]);
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(
        *completed(&frames),
        json!({"recovered": false, "replayed": 2})
    );
}

#[tokio::test]
async fn more_missed_messages_than_one_resume_may_replay_is_not_recovered() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;

    // Exactly as many as a resume may replay: all of them, and the gap is filled.
    let position = send_many(&app, &alice, &group, REPLAY_LIMIT, 8).await;
    app.until_applied(&alice, position).await;
    let mut socket = app.connect(&bob).await;
    let frames = resume(&mut socket, json!({group.clone(): 0})).await;
    let limit = i64::try_from(REPLAY_LIMIT).unwrap();
    assert_eq!(
        created_seqs(&frames, &group),
        (1..=limit).collect::<Vec<_>>()
    );
    assert_eq!(
        *completed(&frames),
        json!({"recovered": true, "replayed": REPLAY_LIMIT})
    );
    drop(socket);

    // One more: the first 1,000 in order, then the client is told to refetch; `replayed`
    // counts what it was sent.
    let position = send_many(&app, &alice, &group, 1, 1).await;
    app.until_applied(&alice, position).await;
    let mut socket = app.connect(&bob).await;
    let frames = resume(&mut socket, json!({group.clone(): 0})).await;
    assert_eq!(
        created_seqs(&frames, &group),
        (1..=limit).collect::<Vec<_>>()
    );
    assert_eq!(
        *completed(&frames),
        json!({"recovered": false, "replayed": REPLAY_LIMIT})
    );
}
