//! Operations endpoints, the JWK set, and answers for routes that do not exist.

use std::collections::BTreeSet;

use chat4all_gateway::problem::{ErrorCode, OAuthCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

#[tokio::test]
async fn health_and_readiness_report_every_dependency() {
    let app = TestApp::spawn().await;

    let health = app.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{:?}", health.body);
    assert_eq!(health.body["status"], "ok");
    assert_eq!(
        health.body["roles"],
        json!([{"role": "gateway", "phase": "ready"}])
    );

    let ready = app.get("/ready").await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);
    assert_eq!(ready.body["roles"], health.body["roles"]);
    assert_eq!(
        ready.body["checks"],
        json!({"postgres": "ok", "redis": "ok", "kafka": "ok"})
    );
}

#[tokio::test]
async fn metrics_count_answered_requests() {
    let app = TestApp::spawn().await;
    app.token("acme", "alice").await;

    let metrics = app.get("/metrics").await;

    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));
    let text = metrics.body.as_str().unwrap();
    let tokens = chat4all_testsupport::metrics::value(
        text,
        "chat4all_http_requests_total",
        &[("route", "auth_token"), ("status", "200")],
    );
    assert!(tokens.is_some_and(|n| n >= 1.0), "{text}");
}

#[tokio::test]
async fn the_jwks_verifies_issued_tokens() {
    let app = TestApp::spawn().await;
    let token = app.token("acme", "alice").await;
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();

    let jwks = app.get("/.well-known/jwks.json").await;

    assert_eq!(jwks.status, StatusCode::OK, "{:?}", jwks.body);
    let keys = jwks.body["keys"].as_array().unwrap();
    let key = keys.iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    let decoding = DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["chat4all"]);
    validation.set_audience(&["chat4all-api"]);
    let claims = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["tenant_id"], "acme");
}

#[track_caller]
fn client_error_problem(answer: &Answer) {
    assert!(answer.status.is_client_error(), "{:?}", answer.status);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answer.body["status"], answer.status.as_u16());
    assert!(answer.body["code"].is_string(), "{:?}", answer.body);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let app = TestApp::spawn().await;

    app.get("/no/such/route").await.problem(404, "not_found");
    let wrong_method = app.get("/v1/messages").await;
    client_error_problem(&wrong_method);
    assert!(
        [StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&wrong_method.status),
        "{:?}",
        wrong_method.status
    );
}

/// Holds the OpenAPI document against the router's own route table, both ways: a route served
/// but not documented fails, as does one documented but not served. Each documented operation
/// is also requested, with placeholder ids and no credentials: it must be answered by its
/// route, never by the router's own 404/405.
#[tokio::test]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let app = TestApp::spawn().await;
    let document = app.get("/openapi.json").await;
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(document.body["openapi"], "3.1.0");
    let paths = document.body["paths"].as_object().unwrap();
    let mut documented = BTreeSet::new();
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
            let concrete = path
                .replace("{conversation_id}", "01a22729-9c33-74a5-a327-f4f1b3121518")
                .replace("{message_id}", "01a22729-9c42-7216-817c-e135bbef21a8")
                .replace("{user_id}", "bob");
            let request = app
                .http
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete));
            let answer = Answer::from(request.send().await.unwrap()).await;
            assert_ne!(
                answer.body["code"], "not_found",
                "{method} {path} is documented but not served"
            );
            assert_ne!(
                answer.body["code"], "method_not_allowed",
                "{method} {path} is documented but not served"
            );
        }
    }
    let served: BTreeSet<String> = app.routes.iter().map(ToString::to_string).collect();
    assert_eq!(served.len(), app.routes.len(), "a route is declared twice");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served, not documented: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(unserved.is_empty(), "documented, not served: {unserved:?}");
    // Everything a schema points at exists.
    let text = document.body.to_string();
    for reference in text.split("\"$ref\":\"#/components/").skip(1) {
        let target = reference.split('"').next().unwrap();
        let (kind, name) = target.split_once('/').unwrap();
        assert!(
            document.body["components"][kind][name].is_object(),
            "dangling reference {target}"
        );
    }
}

/// The error codes a client may meet are listed in the document, exactly those the gateway has.
#[tokio::test]
async fn the_openapi_document_lists_every_error_code() {
    let app = TestApp::spawn().await;
    let document = app.get("/openapi.json").await;
    let schemas = &document.body["components"]["schemas"];

    let problem_codes = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>();
    assert_eq!(
        schemas["Problem"]["properties"]["code"]["enum"],
        json!(problem_codes)
    );
    let oauth_codes = OAuthCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>();
    assert_eq!(
        schemas["OAuthError"]["properties"]["error"]["enum"],
        json!(oauth_codes)
    );
}
