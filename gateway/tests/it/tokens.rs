//! The token lifecycle: refresh with rotation and replay detection, revocation honoured by every
//! instance, introspection, and the throttle on guessing client secrets.

use chat4all_gateway::auth::{NewClient, Scope};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

async fn form(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> Answer {
    Answer::from(
        app.http
            .post(app.url(path))
            .form(fields)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn issue(app: &TestApp, client: &NewClient) -> Value {
    let answer = form(
        app,
        "/auth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
}

#[track_caller]
fn oauth_error(answer: &Answer, status: u16, error: &str) {
    assert_eq!(answer.status.as_u16(), status, "{:?}", answer.body);
    assert_eq!(answer.body["error"], error, "{:?}", answer.body);
}

async fn can_create(app: &TestApp, access: &str) -> StatusCode {
    app.post(
        "/v1/conversations",
        access,
        &json!({"type": "private", "members": ["alice", "bob"]}),
    )
    .await
    .status
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_replayed_one_revokes_its_whole_family() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let client = app
        .client("acme", "alice", &[Scope::Read, Scope::Write])
        .await;
    let first = issue(&app, &client).await;
    let refresh = text(&first, "refresh_token").to_owned();
    assert!(refresh.starts_with("c4r_"));

    // The refresh grant, at the token endpoint (with the client's credentials)...
    let second = form(
        &app,
        "/auth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ],
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    assert_eq!(second.body["token_type"], "Bearer");
    assert_eq!(second.body["scope"], "read write");
    assert_eq!(second.header("cache-control"), Some("no-store"));
    let second_refresh = text(&second.body, "refresh_token").to_owned();
    assert_ne!(second_refresh, refresh);
    // ...and at /auth/refresh, on another instance.
    let third = Answer::from(
        other
            .http
            .post(other.url("/auth/refresh"))
            .json(&json!({"refresh_token": second_refresh}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(third.status, StatusCode::OK, "{:?}", third.body);
    let live_access = text(&third.body, "access_token").to_owned();
    let live_refresh = text(&third.body, "refresh_token").to_owned();
    assert_eq!(can_create(&app, &live_access).await, StatusCode::CREATED);

    // The first token comes back: it leaked. Refused, and the family dies with it: the newest
    // refresh token and the access token it bought stop working, on every instance.
    let replay = form(
        &other,
        "/auth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    oauth_error(&replay, 400, "invalid_grant");
    let after = form(
        &app,
        "/auth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &live_refresh),
        ],
    )
    .await;
    oauth_error(&after, 400, "invalid_grant");
    for instance in [&app, &other] {
        let answer = instance
            .post(
                "/v1/conversations",
                &live_access,
                &json!({"type": "private", "members": ["alice", "bob"]}),
            )
            .await;
        answer.problem(401, "invalid_token");
    }
    // A fresh client credentials grant starts a new family.
    let fresh = issue(&app, &client).await;
    assert_eq!(
        can_create(&app, text(&fresh, "access_token")).await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn refresh_requests_that_are_not_valid_are_invalid_grant_or_invalid_request() {
    let app = TestApp::spawn().await;
    let client = app.client("acme", "alice", &[Scope::Read]).await;
    let someone_else = app.client("acme", "bob", &[Scope::Read]).await;
    let refresh = text(&issue(&app, &client).await, "refresh_token").to_owned();

    for token in ["c4r_unknown", "not-even-ours", ""] {
        let answer = form(
            &app,
            "/auth/token",
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
        )
        .await;
        oauth_error(&answer, 400, "invalid_grant");
    }
    let missing = form(&app, "/auth/token", &[("grant_type", "refresh_token")]).await;
    oauth_error(&missing, 400, "invalid_request");
    // Another client may not use it.
    let stolen = form(
        &app,
        "/auth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &someone_else.client_id),
            ("client_secret", &someone_else.client_secret),
        ],
    )
    .await;
    oauth_error(&stolen, 400, "invalid_grant");
    let bad_body = Answer::from(
        app.http
            .post(app.url("/auth/refresh"))
            .json(&json!({"token": refresh}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    oauth_error(&bad_body, 400, "invalid_request");
    // After all of that, the owner's token still works: nothing above used it up.
    let answer = Answer::from(
        app.http
            .post(app.url("/auth/refresh"))
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
}

#[tokio::test]
async fn a_revoked_access_token_is_refused_by_every_instance_at_once() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let client = app
        .client("acme", "alice", &[Scope::Read, Scope::Write])
        .await;
    let issued = issue(&app, &client).await;
    let access = text(&issued, "access_token").to_owned();
    assert_eq!(can_create(&other, &access).await, StatusCode::CREATED);

    let revoked = form(
        &app,
        "/auth/revoke",
        &[
            ("token", &access),
            ("token_type_hint", "access_token"),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ],
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    assert_eq!(revoked.body, json!({}));
    for instance in [&other, &app] {
        instance
            .get_as("/v1/conversations", &access)
            .await
            .problem(401, "invalid_token");
    }
    // Introspection agrees.
    let introspected = form(
        &other,
        "/auth/introspect",
        &[
            ("token", &access),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ],
    )
    .await;
    assert_eq!(introspected.body, json!({"active": false}));
    // Unknown tokens are fine to revoke (RFC 7009 §2.2); an unknown hint is not.
    let unknown = form(
        &app,
        "/auth/revoke",
        &[
            ("token", "whatever"),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::OK);
    let hint = form(
        &app,
        "/auth/revoke",
        &[
            ("token", "whatever"),
            ("token_type_hint", "id_token"),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ],
    )
    .await;
    oauth_error(&hint, 400, "unsupported_token_type");
    // Without client authentication nothing is revoked.
    let anonymous = form(&app, "/auth/revoke", &[("token", "whatever")]).await;
    oauth_error(&anonymous, 401, "invalid_client");
}

#[tokio::test]
async fn a_client_revokes_only_its_own_tokens_and_a_revoked_refresh_token_is_dead() {
    let app = TestApp::spawn().await;
    let alice = app
        .client("acme", "alice", &[Scope::Read, Scope::Write])
        .await;
    let mallory = app.client("acme", "mallory", &[Scope::Read]).await;
    let issued = issue(&app, &alice).await;
    let (access, refresh) = (
        text(&issued, "access_token").to_owned(),
        text(&issued, "refresh_token").to_owned(),
    );
    for token in [&access, &refresh] {
        let answer = form(
            &app,
            "/auth/revoke",
            &[
                ("token", token),
                ("client_id", &mallory.client_id),
                ("client_secret", &mallory.client_secret),
            ],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(can_create(&app, &access).await, StatusCode::CREATED);

    let answer = form(
        &app,
        "/auth/revoke",
        &[
            ("token", &refresh),
            ("token_type_hint", "refresh_token"),
            ("client_id", &alice.client_id),
            ("client_secret", &alice.client_secret),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let refreshed = form(
        &app,
        "/auth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    oauth_error(&refreshed, 400, "invalid_grant");
    // The access token bought with it went with the family.
    app.get_as("/v1/conversations", &access)
        .await
        .problem(401, "invalid_token");
}

#[tokio::test]
async fn introspection_describes_live_tokens_of_the_callers_tenant_only() {
    let app = TestApp::spawn().await;
    let alice = app
        .client("acme", "alice", &[Scope::Read, Scope::Write])
        .await;
    let auditor = app.client("acme", "audit-bot", &[Scope::Audit]).await;
    let stranger = app.client("globex", "eve", &[Scope::Read]).await;
    let issued = issue(&app, &alice).await;
    let access = text(&issued, "access_token");
    let refresh = text(&issued, "refresh_token");

    let introspect = |client: NewClient, token: String| {
        let app = &app;
        async move {
            form(
                app,
                "/auth/introspect",
                &[
                    ("token", &token),
                    ("client_id", &client.client_id),
                    ("client_secret", &client.client_secret),
                ],
            )
            .await
        }
    };
    let answer = introspect(auditor.clone(), access.to_owned()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["active"], true);
    assert_eq!(answer.body["sub"], "alice");
    assert_eq!(answer.body["tenant_id"], "acme");
    assert_eq!(answer.body["scope"], "read write");
    assert_eq!(answer.body["client_id"], json!(alice.client_id));
    assert!(answer.body["exp"].as_u64().unwrap() > 0);
    let answer = introspect(auditor.clone(), refresh.to_owned()).await;
    assert_eq!(answer.body["active"], true);
    assert_eq!(answer.body["token_type"], "refresh_token");
    // Another tenant learns nothing; neither does anyone from garbage.
    let answer = introspect(stranger.clone(), access.to_owned()).await;
    assert_eq!(answer.body, json!({"active": false}));
    let answer = introspect(auditor.clone(), "garbage".to_owned()).await;
    assert_eq!(answer.body, json!({"active": false}));
    let missing = form(
        &app,
        "/auth/introspect",
        &[
            ("client_id", &auditor.client_id),
            ("client_secret", &auditor.client_secret),
        ],
    )
    .await;
    oauth_error(&missing, 400, "invalid_request");
    let anonymous = form(&app, "/auth/introspect", &[("token", access)]).await;
    oauth_error(&anonymous, 401, "invalid_client");
}

#[tokio::test]
async fn guessing_a_client_secret_is_throttled_even_for_the_right_one() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let client = app.client("acme", "alice", &[Scope::Read]).await;
    let attempt = |instance: &TestApp, secret: String| {
        let request = instance.http.post(instance.url("/auth/token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", secret.as_str()),
        ]);
        async move { Answer::from(request.send().await.unwrap()).await }
    };
    for i in 0..10 {
        let instance = if i % 2 == 0 { &app } else { &other };
        oauth_error(
            &attempt(instance, format!("guess-{i}")).await,
            401,
            "invalid_client",
        );
    }
    let throttled = attempt(&other, client.client_secret.clone()).await;
    oauth_error(&throttled, 429, "slow_down");
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry), "Retry-After {retry}");
    // Other clients are not held back by it.
    let bob = app.client("acme", "bob", &[Scope::Read]).await;
    issue(&app, &bob).await;
}
