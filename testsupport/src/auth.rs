//! Clients and access tokens, made the way an application makes them: a registered client
//! asking the running gateway's `/auth/token`.

use chat4all_domain::{TenantId, UserId};
pub use chat4all_gateway::auth::{NewClient, Scope};

use chat4all_gateway::auth::create_client;
use sqlx::PgPool;

/// Registers a client of `user` in `tenant` with `scopes`.
///
/// # Panics
/// When the ids are invalid or the store refuses (a test helper).
pub async fn client(pool: &PgPool, tenant: &str, user: &str, scopes: &[Scope]) -> NewClient {
    create_client(
        pool,
        &TenantId::parse(tenant).unwrap(),
        &UserId::parse(user).unwrap(),
        scopes,
    )
    .await
    .unwrap()
}

/// An access token for `client` from the gateway at `base` (`http://host:port`).
///
/// # Panics
/// When the gateway does not issue one.
pub async fn token_for(http: &reqwest::Client, base: &str, client: &NewClient) -> String {
    let response = http
        .post(format!("{base}/auth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(status.is_success(), "no token: {status} {answer}");
    answer["access_token"].as_str().unwrap().to_owned()
}

/// A new client of `user` in tenant `acme` with scopes `read write`, and its access token.
pub async fn client_and_token(
    http: &reqwest::Client,
    base: &str,
    pool: &PgPool,
    user: &str,
) -> (NewClient, String) {
    let client = client(pool, "acme", user, &[Scope::Read, Scope::Write]).await;
    let token = token_for(http, base, &client).await;
    (client, token)
}

/// An access token (scopes `read write`) of a new client of `user` in tenant `acme`.
pub async fn token(http: &reqwest::Client, base: &str, pool: &PgPool, user: &str) -> String {
    client_and_token(http, base, pool, user).await.1
}
