//! What the API must refuse: other tenants' ids, oversized and malformed bodies, and any body
//! at all, random or mutated, without a 5xx.

use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Answer, TestApp};

const NOWHERE: &str = "01a22729-0000-7000-8000-000000000000";

/// Every id-taking request of the API with `conversation` and `message` in place.
fn probes(conversation: &str, message: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("GET", format!("/v1/conversations/{conversation}"), None),
        (
            "GET",
            format!("/v1/conversations/{conversation}/messages"),
            None,
        ),
        ("GET", format!("/v1/messages/{message}"), None),
        (
            "POST",
            format!("/v1/conversations/{conversation}/members"),
            Some(json!({"user_id": "dave"})),
        ),
        (
            "DELETE",
            format!("/v1/conversations/{conversation}/members/bob"),
            None,
        ),
        (
            "POST",
            format!("/v1/conversations/{conversation}/read"),
            Some(json!({})),
        ),
        (
            "POST",
            "/v1/messages".to_owned(),
            Some(json!({"conversation_id": conversation, "content": "hello"})),
        ),
        (
            "POST",
            format!("/v1/messages/{message}/status"),
            Some(json!({"status": "read"})),
        ),
    ]
}

async fn request(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Answer {
    let mut request = app
        .http
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    Answer::from(request.send().await.unwrap()).await
}

#[tokio::test]
async fn another_tenant_gets_exactly_what_a_missing_id_gets_on_every_endpoint() {
    let app = TestApp::spawn_with_pipeline().await;
    let alice = app.token("acme", "alice").await;
    // The same user id in another tenant: nothing of acme's may show through.
    let intruder = app.token("evil", "alice").await;
    let conversation = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let sent = app.send(&alice, &conversation, "secret").await;
    let message = sent.body["message_id"].as_str().unwrap().to_owned();
    let position = sent.body["position"].as_i64().unwrap();
    let visible = app
        .get_as(
            &format!("/v1/messages/{message}?min_position={position}"),
            &alice,
        )
        .await;
    assert_eq!(visible.status, StatusCode::OK, "{:?}", visible.body);
    let before = app.total_events().await;

    let missing = probes(NOWHERE, NOWHERE);
    for ((method, path, body), (_, missing_path, missing_body)) in
        probes(&conversation, &message).into_iter().zip(missing)
    {
        let probe = request(&app, &intruder, method, &path, body.as_ref()).await;
        let baseline = request(
            &app,
            &intruder,
            method,
            &missing_path,
            missing_body.as_ref(),
        )
        .await;
        assert_eq!(
            probe.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:?}",
            probe.body
        );
        assert_eq!(probe.body["code"], baseline.body["code"], "{method} {path}");
        assert_eq!(
            probe.body["detail"], baseline.body["detail"],
            "{method} {path}"
        );
        let text = probe.body.to_string();
        assert!(
            !text.contains("secret") && !text.contains("bob"),
            "{method} {path}: {text}"
        );
    }
    let list = app.get_as("/v1/conversations", &intruder).await;
    assert_eq!(list.body["items"], json!([]));
    assert_eq!(
        app.total_events().await,
        before,
        "a probe changed something"
    );
}

/// Every state-changing endpoint with a body, for a conversation and message of alice's.
fn bodied(conversation: &str, message: &str) -> Vec<String> {
    vec![
        "/v1/conversations".to_owned(),
        format!("/v1/conversations/{conversation}/members"),
        format!("/v1/conversations/{conversation}/read"),
        "/v1/messages".to_owned(),
        format!("/v1/messages/{message}/status"),
    ]
}

/// Alice's token, a group of hers and a message in it.
async fn alice_with_a_message(app: &TestApp) -> (String, String, String) {
    let alice = app.token("acme", "alice").await;
    let conversation = app
        .conversation(&alice, "group", &["alice", "bob", "carol"])
        .await;
    let message = app.send(&alice, &conversation, "hi").await.body["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (alice, conversation, message)
}

#[tokio::test]
async fn oversized_nested_non_utf8_and_huge_number_bodies_are_clear_4xx() {
    let app = TestApp::spawn().await;
    let (alice, conversation, message) = alice_with_a_message(&app).await;
    let before = app.total_events().await;
    let oversized = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 1));
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    for path in bodied(&conversation, &message) {
        let answer = app.post_raw(&path, Some(&alice), oversized.clone()).await;
        answer.problem(413, "payload_too_large");
        for (what, body) in [
            ("nested arrays", nested.clone().into_bytes()),
            ("nested objects", deep_object.clone().into_bytes()),
            ("invalid UTF-8", b"{\"text\": \"\xff\xfe\"}".to_vec()),
            ("a huge number", br#"{"up_to_seq": 1e400}"#.to_vec()),
            (
                "an integer beyond 64 bits",
                br#"{"up_to_seq": 123456789012345678901234567890}"#.to_vec(),
            ),
            ("a negative count", br#"{"up_to_seq": -1}"#.to_vec()),
        ] {
            let answer = app.post_raw(&path, Some(&alice), body).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{path}, {what}: {:?}",
                answer.body
            );
            assert!(
                answer.body["code"] == "malformed_json"
                    || answer.body["code"] == "validation_failed",
                "{path}, {what}: {:?}",
                answer.body
            );
            assert_eq!(
                answer.header("content-type"),
                Some("application/problem+json")
            );
        }
    }
    // A body far beyond the limit with no Content-Length (chunked) is cut off too.
    let chunks = futures::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 64 * 1024]))),
    );
    let answer = app
        .post_raw(
            "/v1/messages",
            Some(&alice),
            reqwest::Body::wrap_stream(chunks),
        )
        .await;
    answer.problem(413, "payload_too_large");
    assert_eq!(app.total_events().await, before);
    // The gateway is still well.
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
}

/// A valid body of each endpoint, to mutate.
fn valid_bodies(conversation: &str) -> Vec<Value> {
    vec![
        json!({"type": "group", "name": "g", "members": ["alice", "bob", "carol"], "metadata": {"k": [1, 2.5, null, true]}}),
        json!({"user_id": "dave"}),
        json!({"up_to_seq": 1}),
        json!({"conversation_id": conversation, "content": {"type": "text", "text": "hi"}, "channels": ["whatsapp"]}),
        json!({"status": "delivered"}),
    ]
}

/// `value` with the change `choice` picks applied somewhere inside it.
fn mutate(value: &mut Value, choice: &[u8], replacement: &Value) {
    let Some((&step, rest)) = choice.split_first() else {
        *value = replacement.clone();
        return;
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[usize::from(step) % keys.len()];
            if step % 7 == 0 {
                map.remove(key);
            } else if step % 11 == 0 {
                map.insert(format!("{key}_extra"), replacement.clone());
            } else {
                mutate(map.get_mut(key).unwrap(), rest, replacement);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let index = usize::from(step) % items.len();
            mutate(&mut items[index], rest, replacement);
        }
        _ => *value = replacement.clone(),
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("x".repeat(70_000))),
        Just(json!("\u{0}")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn no_body_random_or_mutated_gets_a_5xx() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, alice, paths, valid) = runtime.block_on(async {
        let app = TestApp::spawn().await;
        let (alice, conversation, message) = alice_with_a_message(&app).await;
        let paths = bodied(&conversation, &message);
        let valid = valid_bodies(&conversation);
        (app, alice, paths, valid)
    });
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        endpoint in 0usize..5,
        raw in prop::collection::vec(any::<u8>(), 0..200),
        choice in prop::collection::vec(any::<u8>(), 0..4),
        replacement in any_json(),
        use_raw in any::<bool>(),
    )| {
        let body = if use_raw {
            raw
        } else {
            let mut body = valid[endpoint].clone();
            mutate(&mut body, &choice, &replacement);
            serde_json::to_vec(&body).unwrap()
        };
        let answer = runtime.block_on(app.post_raw(&paths[endpoint], Some(&alice), body.clone()));
        prop_assert!(
            !answer.status.is_server_error(),
            "{} answered {} to {:?}: {:?}",
            paths[endpoint],
            answer.status,
            String::from_utf8_lossy(&body),
            answer.body
        );
    });
}
