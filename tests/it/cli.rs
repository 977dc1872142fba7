//! The operator interface as operators use it: migrate, create a client, run the gateway on a free
//! port, use it, stop it with a signal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chat4all_commands::testing::server_options;
use sqlx::ConnectOptions;

const BIN: &str = env!("CARGO_BIN_EXE_chat4all");

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

    let mut gateway = Command::new(BIN)
        .arg("gateway")
        .env("DATABASE_URL", &url)
        .env("CHAT4ALL_LISTEN", "127.0.0.1:0")
        .env("CHAT4ALL_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = gateway.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let address = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway logs its address");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(address) = entry["fields"]["address"].as_str() {
            break address.to_owned();
        }
    };

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

    let pid = gateway.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = gateway.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(
        logs.iter().any(|l| l.contains("gateway stopped")),
        "{logs:?}"
    );
}
