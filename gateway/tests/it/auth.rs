//! `POST /auth/token` (client credentials) and the bearer check in front of `/v1`.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chat4all_gateway::auth::{Claims, NewClient, Scope};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

/// PKCS#8 v1 wrapping of a raw Ed25519 seed (RFC 8410 §7).
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn token_request(app: &TestApp) -> RequestBuilder {
    app.http.post(app.url("/auth/token"))
}

async fn ask(request: RequestBuilder) -> Answer {
    Answer::from(request.send().await.unwrap()).await
}

fn credentials(client: &NewClient) -> [(&'static str, &str); 3] {
    [
        ("grant_type", "client_credentials"),
        ("client_id", &client.client_id),
        ("client_secret", &client.client_secret),
    ]
}

/// The JSON of one base64url segment of a JWT.
fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Asserts a successful token answer granting `scope`, and returns the JWT's header and claims.
#[track_caller]
fn issued(answer: &Answer, scope: &str) -> (Value, Value) {
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 900);
    assert_eq!(answer.body["scope"], scope);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let token = answer.body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "{token}");
    (segment(token, 0), segment(token, 1))
}

/// Asserts an OAuth 2.0 error answer (RFC 6749 §5.2).
#[track_caller]
fn oauth_error(answer: &Answer, status: u16, error: &str) {
    assert_eq!(answer.status.as_u16(), status, "{:?}", answer.body);
    assert_eq!(answer.body["error"], error, "{:?}", answer.body);
    assert!(
        answer.body["error_description"].is_string(),
        "{:?}",
        answer.body
    );
}

#[track_caller]
fn invalid_client(answer: &Answer) {
    oauth_error(answer, 401, "invalid_client");
    let challenge = answer.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic"), "challenge {challenge:?}");
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 Appendix B).
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// Registers a client whose id and secret need form-urlencoding.
async fn client_with(app: &TestApp, client_id: &str, secret: &str) {
    let salt = SaltString::encode_b64(b"a fixed test salt").unwrap();
    let hash = Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .unwrap()
        .to_string();
    sqlx::query(
        "INSERT INTO clients (client_id, secret_hash, tenant_id, user_id, scopes) \
         VALUES ($1, $2, 'acme', 'alice', ARRAY['read', 'write'])",
    )
    .bind(client_id)
    .bind(hash)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_form_request_gets_a_signed_token_with_every_claim() {
    let app = TestApp::spawn().await;
    let client = app
        .client("acme", "alice", &[Scope::Read, Scope::Write])
        .await;

    let answer = ask(token_request(&app).form(&credentials(&client))).await;

    let (header, claims) = issued(&answer, "read write");
    assert_eq!(header["alg"], "EdDSA");
    assert!(!header["kid"].as_str().unwrap().is_empty(), "{header}");
    assert_eq!(claims["iss"], "chat4all");
    assert_eq!(claims["aud"], "chat4all-api");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["tenant_id"], "acme");
    assert_eq!(claims["client_id"], client.client_id.as_str());
    assert_eq!(claims["scope"], "read write");
    let (iat, nbf, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["nbf"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(nbf <= iat && exp == iat + 900, "{claims}");
    assert!(
        uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok(),
        "{claims}"
    );
}

#[tokio::test]
async fn a_json_request_gets_a_token() {
    let app = TestApp::spawn().await;
    let client = app
        .client("acme", "alice", &[Scope::Read, Scope::Write])
        .await;
    let body: serde_json::Map<String, Value> = credentials(&client)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();

    let answer = ask(token_request(&app).json(&body)).await;

    let (_, claims) = issued(&answer, "read write");
    assert_eq!(claims["sub"], "alice");
}

#[tokio::test]
async fn http_basic_credentials_are_form_urlencoded() {
    let app = TestApp::spawn().await;
    let (id, secret) = ("partner:app+1 %", "pa:ss w+rd/%&=\u{e9}");
    client_with(&app, id, secret).await;
    let grant = [("grant_type", "client_credentials")];

    let answer = ask(token_request(&app)
        .header(
            "authorization",
            basic(&form_encode(id), &form_encode(secret)),
        )
        .form(&grant))
    .await;

    let (_, claims) = issued(&answer, "read write");
    assert_eq!(claims["client_id"], id);
    // Unencoded, the first ':' of the id ends it: another (unknown) client.
    invalid_client(
        &ask(token_request(&app)
            .header("authorization", basic(id, secret))
            .form(&grant))
        .await,
    );
    // The same credentials in the body are encoded by the form itself.
    let body = [
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
    ];
    issued(&ask(token_request(&app).form(&body)).await, "read write");
}

#[tokio::test]
async fn a_requested_scope_narrows_the_token_and_others_are_invalid_scope() {
    let app = TestApp::spawn().await;
    let client = app
        .client("acme", "alice", &[Scope::Read, Scope::Write])
        .await;
    let with_scope = |scope: &'static str| {
        let mut form = credentials(&client).to_vec();
        form.push(("scope", scope));
        token_request(&app).form(&form)
    };

    let (_, claims) = issued(&ask(with_scope("read")).await, "read");
    assert_eq!(claims["scope"], "read");
    oauth_error(&ask(with_scope("read admin")).await, 400, "invalid_scope");
    oauth_error(&ask(with_scope("superuser")).await, 400, "invalid_scope");
}

#[tokio::test]
async fn a_wrong_secret_or_an_unknown_client_is_invalid_client() {
    let app = TestApp::spawn().await;
    let client = app.client("acme", "alice", &[Scope::Read]).await;
    let attempt = |id: &str, secret: &str| {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ];
        ask(token_request(&app).form(&form))
    };

    invalid_client(&attempt(&client.client_id, "not-the-secret").await);
    invalid_client(&attempt("c4a_nobody", &client.client_secret).await);
    let basic_wrong = token_request(&app)
        .header("authorization", basic(&client.client_id, "not-the-secret"))
        .form(&[("grant_type", "client_credentials")]);
    invalid_client(&ask(basic_wrong).await);
    assert_eq!(app.total_events().await, 0);
}

#[tokio::test]
async fn malformed_token_requests_are_refused_with_the_oauth_error() {
    let app = TestApp::spawn().await;
    let client = app.client("acme", "alice", &[Scope::Read]).await;
    let [_, id, secret] = credentials(&client);

    oauth_error(
        &ask(token_request(&app).form(&[id, secret])).await,
        400,
        "invalid_request",
    );
    let password = [("grant_type", "password"), id, secret];
    oauth_error(
        &ask(token_request(&app).form(&password)).await,
        400,
        "unsupported_grant_type",
    );
    let both = token_request(&app)
        .header(
            "authorization",
            basic(&client.client_id, &client.client_secret),
        )
        .form(&credentials(&client));
    oauth_error(&ask(both).await, 400, "invalid_request");
    let text = token_request(&app)
        .header("content-type", "text/plain")
        .body("grant_type=client_credentials");
    oauth_error(&ask(text).await, 400, "invalid_request");
    assert_eq!(app.total_events().await, 0);
}

// Bearer tokens on /v1.

async fn create_conversation(app: &TestApp, authorization: Option<&str>) -> Answer {
    let body = json!({"type": "private", "members": ["alice", "bob"]});
    app.post_authorized("/v1/conversations", authorization, &body)
        .await
}

#[track_caller]
fn invalid_token(answer: &Answer) {
    answer.problem(401, "invalid_token");
    let challenge = answer.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "challenge {challenge:?}"
    );
}

async fn signing_key(app: &TestApp) -> (String, Vec<u8>) {
    sqlx::query_as("SELECT kid, private_der FROM signing_keys WHERE retired_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Claims for alice of acme expiring `expires_in` seconds from now (negative: in the past).
fn claims(expires_in: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    let at = |offset: i64| u64::try_from(now + offset).unwrap();
    Claims {
        iss: "chat4all".to_owned(),
        aud: "chat4all-api".to_owned(),
        sub: "alice".to_owned(),
        tenant_id: "acme".to_owned(),
        client_id: "c4a_forged".to_owned(),
        scope: "read write".to_owned(),
        iat: at(-900),
        nbf: at(-900),
        exp: at(expires_in),
        jti: uuid::Uuid::new_v4().to_string(),
    }
}

fn sign(kid: &str, private_der: &[u8], claims: &Claims) -> String {
    let header = Header {
        alg: Algorithm::EdDSA,
        kid: Some(kid.to_owned()),
        ..Default::default()
    };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(private_der)).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `token` with one character of its payload segment replaced.
fn flip_payload_char(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let middle = parts[1].len() / 2;
    let replacement = if &parts[1][middle..=middle] == "A" {
        "B"
    } else {
        "A"
    };
    parts[1].replace_range(middle..=middle, replacement);
    parts.join(".")
}

/// `token` with its claims rewritten (another user) and the original signature kept.
fn swap_subject(token: &str) -> String {
    let mut claims = segment(token, 1);
    claims["sub"] = json!("bob");
    let parts: Vec<&str> = token.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

#[tokio::test]
async fn missing_malformed_and_tampered_bearer_tokens_are_invalid_token() {
    let app = TestApp::spawn().await;
    let token = app.token("acme", "alice").await;
    let (kid, _) = signing_key(&app).await;
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_string(&claims(900)).unwrap())
    );

    invalid_token(&create_conversation(&app, None).await);
    for authorization in [
        "Token x".to_owned(),
        bearer("garbage"),
        bearer(&flip_payload_char(&token)),
        bearer(&swap_subject(&token)),
        bearer(&unsigned),
    ] {
        invalid_token(&create_conversation(&app, Some(&authorization)).await);
    }
    assert_eq!(app.total_events().await, 0);
    assert_eq!(
        create_conversation(&app, Some(&bearer(&token)))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn expired_tokens_and_foreign_keys_are_refused_within_the_leeway_accepted() {
    let app = TestApp::spawn().await;
    let (kid, der) = signing_key(&app).await;
    let mut foreign = PKCS8_ED25519_PREFIX.to_vec();
    foreign.extend_from_slice(&[7; 32]);

    for token in [
        sign(&kid, &der, &claims(-120)),
        sign(&kid, &foreign, &claims(900)),
        sign("unknown-kid", &foreign, &claims(900)),
    ] {
        invalid_token(&create_conversation(&app, Some(&bearer(&token))).await);
    }
    assert_eq!(app.total_events().await, 0);
    let recently_expired = sign(&kid, &der, &claims(-10));
    let answer = create_conversation(&app, Some(&bearer(&recently_expired))).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
}

#[tokio::test]
async fn a_read_only_token_cannot_change_anything() {
    let app = TestApp::spawn().await;
    let writer = app.token("acme", "alice").await;
    let conversation = app
        .conversation(&writer, "private", &["alice", "bob"])
        .await;
    let reader = app
        .token_for(&app.client("acme", "alice", &[Scope::Read]).await)
        .await;
    let before = app.total_events().await;

    app.send(&reader, &conversation, "hello")
        .await
        .problem(403, "insufficient_scope");
    create_conversation(&app, Some(&bearer(&reader)))
        .await
        .problem(403, "insufficient_scope");
    assert_eq!(app.total_events().await, before);
}

#[tokio::test]
async fn forged_algorithms_and_claims_are_refused() {
    let app = TestApp::spawn().await;
    let (kid, der) = signing_key(&app).await;
    let public: Vec<u8> = sqlx::query_scalar("SELECT public_raw FROM signing_keys WHERE kid = $1")
        .bind(&kid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let jwk_x = URL_SAFE_NO_PAD.encode(&public);
    // HS256 keyed with what is public: the raw key, and its JWK text.
    let hs256 = |secret: &[u8]| {
        let header = Header {
            alg: Algorithm::HS256,
            kid: Some(kid.clone()),
            ..Default::default()
        };
        jsonwebtoken::encode(
            &header,
            &claims(900),
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    };
    let with = |change: &dyn Fn(&mut Claims)| {
        let mut forged = claims(900);
        change(&mut forged);
        sign(&kid, &der, &forged)
    };
    let later = u64::try_from(chrono::Utc::now().timestamp() + 120).unwrap();
    for (what, token) in [
        ("HS256 with the public key", hs256(&public)),
        ("HS256 with the JWK", hs256(jwk_x.as_bytes())),
        ("another issuer", with(&|c| c.iss = "evil".to_owned())),
        (
            "another audience",
            with(&|c| c.aud = "other-api".to_owned()),
        ),
        ("not valid for two minutes", with(&|c| c.nbf = later)),
        (
            "an unknown scope",
            with(&|c| c.scope = "read root".to_owned()),
        ),
    ] {
        let answer = create_conversation(&app, Some(&bearer(&token))).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {:?}",
            answer.body
        );
        invalid_token(&answer);
    }
    assert_eq!(app.total_events().await, 0);
    // The same construction with nothing changed is accepted, so each refusal above is for
    // the one thing that was changed.
    let genuine = with(&|_| {});
    assert_eq!(
        create_conversation(&app, Some(&bearer(&genuine)))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn hs256_signs_only_when_configured_and_then_refuses_eddsa() {
    let secret = "a shared secret of at least thirty-two bytes";
    let app = TestApp::spawn_with(&[
        ("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "0"),
        ("CHAT4ALL_AUTH__ALGORITHM", "HS256"),
        ("CHAT4ALL_AUTH__HS256_SECRET", secret),
    ])
    .await;
    let token = app.token("acme", "alice").await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_audience(&["chat4all-api"]);
    let decoded = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(decoded.claims["sub"], "alice");
    assert_eq!(
        create_conversation(&app, Some(&bearer(&token)))
            .await
            .status,
        StatusCode::CREATED
    );
    // The Ed25519 keys still in the table sign nothing that is accepted now.
    let (kid, der) = signing_key(&app).await;
    invalid_token(&create_conversation(&app, Some(&bearer(&sign(&kid, &der, &claims(900))))).await);
    assert_eq!(
        app.get("/.well-known/jwks.json").await.body["keys"],
        json!([])
    );
}

#[tokio::test]
async fn a_rotated_key_keeps_verifying_its_tokens_until_its_window_closes() {
    let app = TestApp::spawn().await;
    let old_token = app.token("acme", "alice").await;
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .unwrap()
        .kid
        .unwrap();
    let (new_kid, retired) = chat4all_gateway::auth::rotate_key(&app.pool, 1, 3_600)
        .await
        .unwrap();
    assert_eq!(retired, vec![old_kid.clone()]);

    // An instance started now knows both keys: it signs with the old one until the new one's
    // activation, then with the new one, without reloading.
    let other = app.another_instance().await;
    let client = other.client("acme", "alice", &[Scope::Read]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let new_token = loop {
        let token = other.token_for(&client).await;
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        if kid == new_kid {
            break token;
        }
        assert_eq!(kid, old_kid, "signed with neither key");
        assert!(
            std::time::Instant::now() < deadline,
            "the new key never took over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let other = app.another_instance().await;
    for instance in [&other] {
        for token in [&old_token, &new_token] {
            assert_eq!(
                instance.get_as("/v1/conversations", token).await.status,
                StatusCode::OK
            );
        }
    }
    let jwks = other.get("/.well-known/jwks.json").await;
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()));

    // Once the old key's window has closed, its tokens are refused.
    sqlx::query(
        "UPDATE signing_keys SET verify_until = now() - interval '1 second' WHERE kid = $1",
    )
    .bind(&old_kid)
    .execute(&app.pool)
    .await
    .unwrap();
    let later = app.another_instance().await;
    later
        .get_as("/v1/conversations", &old_token)
        .await
        .problem(401, "invalid_token");
    assert_eq!(
        later.get_as("/v1/conversations", &new_token).await.status,
        StatusCode::OK
    );
}
