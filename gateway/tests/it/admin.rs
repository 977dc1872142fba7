//! The `admin` scope. Its one power (`CommandContext::is_admin`, read only by the conversation
//! aggregate's `RemoveMember`) is removing any member of the tenant's groups, even without
//! being a member or the creator. It comes from the token's scope, not from the client; it gives
//! nothing else (no adding, sending or reading where the caller is not a member, no change to a
//! private conversation, nothing of another tenant), and it needs `write` beside it like every
//! change.

use chat4all_gateway::auth::{NewClient, Scope};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

async fn remove(app: &TestApp, token: &str, conversation: &str, user: &str) -> Answer {
    app.delete(
        &format!("/v1/conversations/{conversation}/members/{user}"),
        token,
    )
    .await
}

/// A token of `client` limited to `scope`.
async fn token_with_scope(app: &TestApp, client: &NewClient, scope: &str) -> String {
    let answer = Answer::from(
        app.http
            .post(app.url("/auth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client.client_id.as_str()),
                ("client_secret", client.client_secret.as_str()),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["scope"], scope);
    answer.body["access_token"].as_str().unwrap().to_owned()
}

/// `(user_id, removed_by)` of every `MemberLeft`, in order.
async fn removals(app: &TestApp) -> Vec<Value> {
    app.payloads("MemberLeft")
        .await
        .iter()
        .map(|p| json!([p["user_id"], p["removed_by"]]))
        .collect()
}

#[tokio::test]
async fn an_admin_removes_any_member_of_a_group_member_or_not() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol", "dave", "erin"])
        .await;
    let everything = [Scope::Read, Scope::Write, Scope::Admin];
    let bob_client = app.client("acme", "bob", &everything).await;
    let ops_client = app.client("acme", "ops", &everything).await;

    // Bob, a member but not the creator: without admin in his token, the domain says no.
    let bob_plain = token_with_scope(&app, &bob_client, "read write").await;
    remove(&app, &bob_plain, &group, "carol")
        .await
        .problem(403, "not_allowed");
    // With it, he removes another member.
    let bob_admin = token_with_scope(&app, &bob_client, "read write admin").await;
    let removed = remove(&app, &bob_admin, &group, "carol").await;
    assert_eq!(removed.status, StatusCode::ACCEPTED, "{:?}", removed.body);
    assert!(removed.body["position"].as_i64().unwrap() > 0);

    // An administrator who is no member at all removes one too, and even the creator.
    let ops = app.token_for(&ops_client).await;
    for user in ["dave", "alice"] {
        let removed = remove(&app, &ops, &group, user).await;
        assert_eq!(
            removed.status,
            StatusCode::ACCEPTED,
            "{user}: {:?}",
            removed.body
        );
    }
    assert_eq!(
        removals(&app).await,
        [
            json!(["carol", "bob"]),
            json!(["dave", "ops"]),
            json!(["alice", "ops"])
        ]
    );
    // Someone who is not a member cannot be removed, admin or not.
    remove(&app, &ops, &group, "zoe")
        .await
        .problem(404, "member_not_found");
    remove(&app, &ops, &group, "carol")
        .await
        .problem(404, "member_not_found");
    // The creator removed is out like anyone else.
    app.send(&alice, &group, "still in?")
        .await
        .problem(404, "conversation_not_found");
}

#[tokio::test]
async fn admin_gives_nothing_else_and_needs_write_beside_it() {
    let app = TestApp::spawn().await;
    let alice = app.token("acme", "alice").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let private = app.conversation(&alice, "private", &["alice", "bob"]).await;
    let ops_client = app
        .client("acme", "ops", &[Scope::Read, Scope::Write, Scope::Admin])
        .await;
    let ops = app.token_for(&ops_client).await;
    let before = app.total_events().await;

    // Without write: 403 insufficient_scope, whatever else the token holds.
    let admin_only = token_with_scope(&app, &ops_client, "admin").await;
    let read_admin = token_with_scope(&app, &ops_client, "read admin").await;
    for token in [&admin_only, &read_admin] {
        remove(&app, token, &group, "bob")
            .await
            .problem(403, "insufficient_scope");
    }
    // A private conversation's members stay fixed.
    remove(&app, &ops, &private, "bob")
        .await
        .problem(400, "private_members_fixed");
    // Not a member: no adding, no sending, no reading.
    app.post(
        &format!("/v1/conversations/{group}/members"),
        &ops,
        &json!({"user_id": "ops"}),
    )
    .await
    .problem(404, "conversation_not_found");
    app.send(&ops, &group, "hello")
        .await
        .problem(404, "conversation_not_found");
    app.post(&format!("/v1/conversations/{group}/read"), &ops, &json!({}))
        .await
        .problem(404, "conversation_not_found");
    // Another tenant's administrator sees nothing of it.
    let evil = app
        .client("evil", "ops", &[Scope::Read, Scope::Write, Scope::Admin])
        .await;
    let evil = app.token_for(&evil).await;
    remove(&app, &evil, &group, "bob")
        .await
        .problem(404, "conversation_not_found");
    assert_eq!(app.total_events().await, before, "nothing was stored");
}

#[tokio::test]
async fn an_admin_reads_no_conversation_it_is_not_in() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    let group = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let sent = app.send(&alice, &group, "private matters").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    let position = sent.body["position"].as_i64().unwrap();
    let message = sent.body["message_id"].as_str().unwrap().to_owned();
    let ops_client = app
        .client("acme", "ops", &[Scope::Read, Scope::Write, Scope::Admin])
        .await;
    let ops = app.token_for(&ops_client).await;
    // Applied (alice sees it), so what ops is answered is the answer, not lag.
    let seen = app
        .get_as(
            &format!("/v1/messages/{message}?min_position={position}"),
            &alice,
        )
        .await;
    assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);

    app.get_as(&format!("/v1/conversations/{group}"), &ops)
        .await
        .problem(404, "conversation_not_found");
    app.get_as(&format!("/v1/conversations/{group}/messages"), &ops)
        .await
        .problem(404, "conversation_not_found");
    let message_answer = app.get_as(&format!("/v1/messages/{message}"), &ops).await;
    assert_eq!(
        message_answer.status,
        StatusCode::NOT_FOUND,
        "{:?}",
        message_answer.body
    );
    let list = app.get_as("/v1/conversations", &ops).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert_eq!(list.body["items"], json!([]));
}
