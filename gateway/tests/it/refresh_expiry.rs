//! The lifetime of refresh tokens: each is stored with `expires_at` = its issue + the configured
//! lifetime (`auth.refresh_token_ttl_secs`, 30 days by default), a rotation starts a fresh
//! lifetime, and one presented after it is refused with `invalid_grant` on both refresh
//! endpoints and is inactive to introspection. Tokens are aged by moving their stored times back
//! (the database is the test's own).

use chat4all_gateway::auth::{NewClient, Scope};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

const THIRTY_DAYS: i64 = 30 * 24 * 60 * 60;

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

async fn issue(app: &TestApp, client: &NewClient) -> String {
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
    answer.body["refresh_token"].as_str().unwrap().to_owned()
}

async fn refresh_grant(app: &TestApp, token: &str) -> Answer {
    form(
        app,
        "/auth/token",
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

async fn refresh_endpoint(app: &TestApp, token: &str) -> Answer {
    Answer::from(
        app.http
            .post(app.url("/auth/refresh"))
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn introspect(app: &TestApp, client: &NewClient, token: &str) -> Value {
    let answer = form(
        app,
        "/auth/introspect",
        &[
            ("token", token),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body
}

fn token_hash(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// Seconds between the stored token's issue and its expiry, and between now and its expiry.
async fn lifetime(app: &TestApp, token: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT extract(epoch FROM expires_at - created_at)::int8, \
                extract(epoch FROM expires_at - now())::int8 \
           FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Moves the stored token's issue and expiry `secs` seconds into the past.
async fn age(app: &TestApp, token: &str, secs: i64) {
    let aged = sqlx::query(
        "UPDATE refresh_tokens SET created_at = created_at - make_interval(secs => $2), \
                                   expires_at = expires_at - make_interval(secs => $2) \
          WHERE token_hash = $1",
    )
    .bind(token_hash(token))
    .bind(secs as f64)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(aged.rows_affected(), 1);
}

#[track_caller]
fn invalid_grant(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "invalid_grant", "{:?}", answer.body);
}

#[tokio::test]
async fn a_refresh_token_older_than_thirty_days_is_invalid_grant() {
    let app = TestApp::spawn().await;
    let client = app.client("acme", "alice", &[Scope::Read]).await;
    let refresh = issue(&app, &client).await;
    assert_eq!(lifetime(&app, &refresh).await.0, THIRTY_DAYS);

    age(&app, &refresh, THIRTY_DAYS + 1).await;

    invalid_grant(&refresh_grant(&app, &refresh).await);
    invalid_grant(&refresh_endpoint(&app, &refresh).await);
    assert_eq!(
        introspect(&app, &client, &refresh).await,
        json!({"active": false})
    );
    // Refused, not rotated: no new token was stored for it.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn a_refresh_token_just_inside_its_lifetime_rotates_into_a_fresh_thirty_days() {
    let app = TestApp::spawn().await;
    let client = app.client("acme", "alice", &[Scope::Read]).await;
    let refresh = issue(&app, &client).await;

    age(&app, &refresh, THIRTY_DAYS - 60).await;
    let introspected = introspect(&app, &client, &refresh).await;
    assert_eq!(introspected["active"], true, "{introspected}");

    let rotated = refresh_grant(&app, &refresh).await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let next = rotated.body["refresh_token"].as_str().unwrap();
    let (total, left) = lifetime(&app, next).await;
    assert_eq!(total, THIRTY_DAYS);
    assert!((THIRTY_DAYS - 60..=THIRTY_DAYS).contains(&left), "{left}");
    let introspected = introspect(&app, &client, next).await;
    let exp = introspected["exp"].as_i64().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now + THIRTY_DAYS - 60..=now + THIRTY_DAYS + 1).contains(&exp),
        "exp {exp}, now {now}"
    );
}

#[tokio::test]
async fn the_refresh_token_lifetime_is_a_setting() {
    let app = TestApp::spawn_with(&[
        ("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "0"),
        ("CHAT4ALL_AUTH__REFRESH_TOKEN_TTL_SECS", "60"),
    ])
    .await;
    let client = app.client("acme", "alice", &[Scope::Read]).await;
    let refresh = issue(&app, &client).await;
    assert_eq!(lifetime(&app, &refresh).await.0, 60);

    age(&app, &refresh, 61).await;

    invalid_grant(&refresh_endpoint(&app, &refresh).await);
}
