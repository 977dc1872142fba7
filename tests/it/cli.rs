//! The operator interface as operators use it: migrate, create a client, run the gateway on a free
//! port, use it, stop it with a signal.

use std::process::Command;
use std::time::Duration;

use chat4all_testsupport::database::server_options;
use sqlx::ConnectOptions;

use crate::process::{message, Process, BIN};

fn chat4all(database_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

#[tokio::test]
async fn migrate_create_a_client_serve_and_stop_on_sigterm() {
    // A database that does not exist yet is created by `migrate` (named so the test database
    // sweep removes it later).
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = format!("c4a_test_{secs}_{}", uuid::Uuid::new_v4().simple());
    let url = server_options().database(&name).to_url_lossy().to_string();
    for _ in 0..2 {
        let out = chat4all(&url, &["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = chat4all(
        &url,
        &[
            "clients",
            "create",
            "--tenant",
            "acme",
            "--user",
            "alice",
            "--scopes",
            "read write",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(client["tenant_id"], "acme");
    assert_eq!(client["user_id"], "alice");
    assert_eq!(client["scopes"], serde_json::json!(["read", "write"]));
    let bad = chat4all(
        &url,
        &[
            "clients", "create", "--tenant", "acme", "--user", "bad user", "--json",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--user"));

    let mut gateway = Process::spawn(
        &["gateway"],
        &[("DATABASE_URL", &url), ("CHAT4ALL_LISTEN", "127.0.0.1:0")],
    );
    let address = gateway
        .wait_for_log(Duration::from_secs(30), |e| {
            e["fields"]["address"].is_string()
        })
        .expect("the gateway logs its address")["fields"]["address"]
        .as_str()
        .unwrap()
        .to_owned();

    let http = reqwest::Client::new();
    let base = format!("http://{address}");
    let token: serde_json::Value = http
        .post(format!("{base}/auth/token"))
        .json(&serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let created = http
        .post(format!("{base}/v1/conversations"))
        .bearer_auth(token)
        .json(&serde_json::json!({"type": "private", "members": ["alice", "bob"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);

    gateway.signal("-TERM");
    let status = gateway.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(gateway
        .wait_for_log(Duration::from_secs(5), |e| message(e) == "gateway stopped")
        .is_some());
}
