//! Conversations: creation rules, idempotent creation, membership changes and read horizons.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

const CONVERSATION_ID: &str = "3d4c1a2b-5e6f-4a70-8b91-c2d3e4f5a6b7";

async fn create(app: &TestApp, token: &str, body: Value) -> Answer {
    app.post("/v1/conversations", token, &body).await
}

async fn add(app: &TestApp, token: &str, conversation: &str, user: &str) -> Answer {
    let path = format!("/v1/conversations/{conversation}/members");
    app.post(&path, token, &json!({"user_id": user})).await
}

async fn remove(app: &TestApp, token: &str, conversation: &str, user: &str) -> Answer {
    app.delete(
        &format!("/v1/conversations/{conversation}/members/{user}"),
        token,
    )
    .await
}

/// Marks read up to `up_to_seq`, or with no body at all.
async fn read(app: &TestApp, token: &str, conversation: &str, up_to_seq: Option<u64>) -> Answer {
    let path = format!("/v1/conversations/{conversation}/read");
    match up_to_seq {
        Some(seq) => app.post(&path, token, &json!({"up_to_seq": seq})).await,
        None => app.post_raw(&path, Some(token), "").await,
    }
}

#[track_caller]
fn accepted(answer: &Answer) -> i64 {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    answer.body["position"].as_i64().unwrap()
}

/// `alice` followed by `others` more users.
fn members(others: usize) -> Vec<String> {
    std::iter::once("alice".to_owned())
        .chain((1..=others).map(|i| format!("user{i}")))
        .collect()
}

#[tokio::test]
async fn a_private_conversation_is_created_with_its_details() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;

    let answer = create(
        &app,
        &alice,
        json!({"type": "private", "members": ["alice", "bob"], "name": "Lunch"}),
    )
    .await;

    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    let id = answer.body["conversation_id"].as_str().unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(id).unwrap().hyphenated().to_string(),
        id
    );
    assert_eq!(answer.body["type"], "private");
    assert_eq!(answer.body["members"], json!(["alice", "bob"]));
    assert_eq!(answer.body["name"], "Lunch");
    let created_at = answer.body["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "{created_at}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created_at).is_ok(),
        "{created_at}"
    );
    assert!(answer.body["position"].as_i64().unwrap() > 0);
    assert_eq!(app.count_events("ConversationCreated").await, 1);
}

#[tokio::test]
async fn membership_rules_of_creation_are_400_with_their_code() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let cases = [
        (
            "private",
            vec!["alice".to_owned()],
            "private_needs_two_members",
        ),
        ("private", members(2), "private_needs_two_members"),
        ("group", members(1), "group_size_out_of_range"),
        ("group", members(100), "group_size_out_of_range"),
        (
            "group",
            vec!["bob".into(), "carol".into(), "dave".into()],
            "caller_not_member",
        ),
        (
            "group",
            vec!["alice".into(), "bob".into(), "bob".into()],
            "duplicate_member",
        ),
    ];
    for (kind, members, code) in cases {
        create(&app, &alice, json!({"type": kind, "members": members}))
            .await
            .problem(400, code);
    }
    assert_eq!(app.total_events().await, 0);
}

#[tokio::test]
async fn invalid_creation_bodies_name_the_field() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let private = |extra: Value| {
        let mut body = json!({"type": "private", "members": ["alice", "bob"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (
            private(json!({"members": ["alice", "bad id"]})),
            "members[1]",
        ),
        (private(json!({"type": "channel"})), "type"),
        (private(json!({"colour": "red"})), "colour"),
        (private(json!({"metadata": [1, 2]})), "metadata"),
        (private(json!({"metadata": {"k": ["a\u{0}b"]}})), "metadata"),
        (
            private(json!({"description": "tab\tok but nul \u{0} not"})),
            "description",
        ),
        (private(json!({"name": "n".repeat(201)})), "name"),
    ];
    for (body, field) in cases {
        let answer = create(&app, &alice, body).await;
        answer.problem(400, "validation_failed");
        assert!(
            answer.error_fields().iter().any(|f| f == field),
            "expected an error on {field}, got {:?}",
            answer.body
        );
    }
    assert_eq!(app.total_events().await, 0);
    let longest = private(json!({"name": "n".repeat(200), "metadata": {"k": 1}}));
    assert_eq!(
        create(&app, &alice, longest).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_client_chosen_id_makes_creation_idempotent() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let body = |name: &str| {
        json!({"conversation_id": CONVERSATION_ID, "type": "group",
               "members": ["alice", "bob", "carol"], "name": name})
    };

    let first = create(&app, &alice, body("Team")).await;
    let second = create(&app, &alice, body("Team")).await;

    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);
    assert_eq!(first.body, second.body);
    assert_eq!(first.body["conversation_id"], CONVERSATION_ID);
    create(&app, &alice, body("Other team"))
        .await
        .problem(409, "conversation_id_conflict");
    assert_eq!(app.count_events("ConversationCreated").await, 1);
}

#[tokio::test]
async fn members_add_others_to_groups_only() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let erin = app.token("acme", "erin").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let private = app.conversation(&alice, "private", &["alice", "bob"]).await;

    assert!(accepted(&add(&app, &alice, &group, "dave").await) > 0);
    let joined = app.payloads("MemberJoined").await;
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["user_id"], "dave");
    assert_eq!(joined[0]["conversation_id"], group.as_str());

    add(&app, &erin, &group, "frank")
        .await
        .problem(404, "conversation_not_found");
    add(&app, &alice, &private, "carol")
        .await
        .problem(400, "private_members_fixed");
    accepted(&add(&app, &alice, &group, "bob").await);
    assert_eq!(app.count_events("MemberJoined").await, 1);
}

#[tokio::test]
async fn a_full_group_takes_no_one_else() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let full = members(99);
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let group = app.conversation(&alice, "group", &full).await;

    add(&app, &alice, &group, "one-too-many")
        .await
        .problem(409, "group_full");
    assert_eq!(app.count_events("MemberJoined").await, 0);
}

#[tokio::test]
async fn members_leave_and_the_creator_removes_others() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol", "dave"])
        .await;

    remove(&app, &bob, &group, "carol")
        .await
        .problem(403, "not_allowed");
    remove(&app, &alice, &group, "erin")
        .await
        .problem(404, "member_not_found");
    assert_eq!(app.count_events("MemberLeft").await, 0);

    accepted(&remove(&app, &bob, &group, "bob").await);
    accepted(&remove(&app, &alice, &group, "carol").await);
    let left: Vec<Value> = app
        .payloads("MemberLeft")
        .await
        .iter()
        .map(|p| p["user_id"].clone())
        .collect();
    assert_eq!(left, [json!("bob"), json!("carol")]);

    app.send(&bob, &group, "still here?")
        .await
        .problem(404, "conversation_not_found");
    assert_eq!(app.count_events("MessageSent").await, 0);
}

#[tokio::test]
async fn another_tenant_cannot_see_the_conversation() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let mallory = app.token("evil", "alice").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let before = app.total_events().await;

    add(&app, &mallory, &group, "dave")
        .await
        .problem(404, "conversation_not_found");
    remove(&app, &mallory, &group, "bob")
        .await
        .problem(404, "conversation_not_found");
    read(&app, &mallory, &group, None)
        .await
        .problem(404, "conversation_not_found");
    assert_eq!(app.total_events().await, before);
}

#[tokio::test]
async fn read_horizons_only_move_forward() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let bob = app.token("acme", "bob").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    for text in ["one", "two", "three"] {
        accepted(&app.send(&alice, &conversation, text).await);
    }

    let answer = read(&app, &bob, &conversation, Some(2)).await;
    accepted(&answer);
    assert_eq!(answer.body["conversation_id"], conversation.as_str());
    assert_eq!(answer.body["up_to_seq"], 2);

    let lower = read(&app, &bob, &conversation, Some(1)).await;
    accepted(&lower);
    assert_eq!(lower.body["up_to_seq"], 2);
    assert_eq!(app.count_events("ReadHorizonAdvanced").await, 1);

    let latest = read(&app, &bob, &conversation, None).await;
    accepted(&latest);
    assert_eq!(latest.body["up_to_seq"], 3);
    let horizons: Vec<Value> = app
        .payloads("ReadHorizonAdvanced")
        .await
        .iter()
        .map(|p| json!([p["user_id"], p["up_to_seq"]]))
        .collect();
    assert_eq!(horizons, [json!(["bob", 2]), json!(["bob", 3])]);
}

#[tokio::test]
async fn reads_beyond_the_last_message_or_by_outsiders_are_refused() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let carol = app.token("acme", "carol").await;
    let conversation = app.conversation(&alice, "private", &["alice", "bob"]).await;
    for text in ["one", "two", "three"] {
        accepted(&app.send(&alice, &conversation, text).await);
    }
    let before = app.total_events().await;

    read(&app, &alice, &conversation, Some(99))
        .await
        .problem(400, "seq_out_of_range");
    read(&app, &carol, &conversation, Some(1))
        .await
        .problem(404, "conversation_not_found");
    read(&app, &alice, "not-a-uuid", Some(1))
        .await
        .problem(404, "conversation_not_found");
    assert_eq!(app.total_events().await, before);
}
