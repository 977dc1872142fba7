//! The per-address throttle of client authentication (`limits::AuthThrottle`): 30 failed
//! attempts from one source address within 5 minutes, whatever client ids they name (each kept
//! under its own limit of 10), make every further client authentication from that address —
//! a correct one, for a client that never failed, on any instance — answer 429 `slow_down`
//! with `Retry-After`, until the window passes. The per-client limit is
//! `tokens::guessing_a_client_secret_is_throttled_even_for_the_right_one`.

use chat4all_gateway::auth::{NewClient, Scope};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};

/// Failed attempts allowed per address (`limits::FAILURES_PER_ADDRESS`).
const PER_ADDRESS: usize = 30;
/// Failed attempts allowed per client id (`limits::FAILURES_PER_CLIENT`).
const PER_CLIENT: usize = 10;

async fn attempt(app: &TestApp, client_id: &str, secret: &str) -> Answer {
    Answer::from(
        app.http
            .post(app.url("/auth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[track_caller]
fn oauth_error(answer: &Answer, status: u16, error: &str) {
    assert_eq!(answer.status.as_u16(), status, "{:?}", answer.body);
    assert_eq!(answer.body["error"], error, "{:?}", answer.body);
}

#[track_caller]
fn slow_down(answer: &Answer) {
    oauth_error(answer, 429, "slow_down");
    let retry: u64 = answer
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "Retry-After {retry}");
}

#[tokio::test]
async fn thirty_failures_from_one_address_throttle_every_client_from_it() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let mut clients: Vec<NewClient> = Vec::new();
    for i in 0..4 {
        clients.push(
            app.client("acme", &format!("user{i}"), &[Scope::Read])
                .await,
        );
    }
    let innocent = app.client("acme", "innocent", &[Scope::Read]).await;
    // Failures spread over known clients (wrong secrets) and unknown ids, at most 8 per id,
    // through both instances.
    let ids: Vec<String> = clients
        .iter()
        .map(|c| c.client_id.clone())
        .chain((0..4).map(|i| format!("c4a_unknown{i}")))
        .collect();
    for i in 0..PER_ADDRESS - 1 {
        let instance = if i % 2 == 0 { &app } else { &other };
        let id = &ids[i % ids.len()];
        assert!(i / ids.len() < PER_CLIENT - 1);
        oauth_error(
            &attempt(instance, id, &format!("wrong-{i}")).await,
            401,
            "invalid_client",
        );
    }
    // One short of the limit: a correct authentication still goes through.
    let answer = attempt(&app, &innocent.client_id, &innocent.client_secret).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let refresh = answer.body["refresh_token"].as_str().unwrap().to_owned();

    oauth_error(
        &attempt(&other, &ids[0], "the thirtieth").await,
        401,
        "invalid_client",
    );

    // Now every client authentication from this address waits, on either instance and at
    // every endpoint that authenticates a client, the right secret included.
    slow_down(&attempt(&app, &innocent.client_id, &innocent.client_secret).await);
    slow_down(&attempt(&other, &clients[3].client_id, &clients[3].client_secret).await);
    slow_down(&attempt(&app, "c4a_never_seen", "whatever").await);
    let introspection = Answer::from(
        app.http
            .post(app.url("/auth/introspect"))
            .basic_auth(&innocent.client_id, Some(&innocent.client_secret))
            .form(&[("token", refresh.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    slow_down(&introspection);
    // The refresh grant needs no client authentication, so it is not held back.
    let refreshed = Answer::from(
        app.http
            .post(app.url("/auth/refresh"))
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);
}
