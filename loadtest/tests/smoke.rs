//! The load test, run for a few seconds against a real gateway: it signs its users in, drives
//! the reference mix, and leaves goose's HTML report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use chat4all_testsupport::auth::{client, Scope};
use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::engine::{Gateway, Settings};
use sqlx::ConnectOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_users_run_the_reference_mix_and_get_a_report() {
    let (options, pool) = fresh_database().await;
    let settings = Settings::load_from(
        None,
        [
            ("DATABASE_URL", options.to_url_lossy().to_string()),
            ("CHAT4ALL_LISTEN", "127.0.0.1:0".to_owned()),
            ("CHAT4ALL_TOPIC_PREFIX", format!("t{}", uuid_like(&options))),
            ("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "0".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    )
    .unwrap();
    let gateway = Gateway::start(&settings).await;
    let host = gateway.base.clone();

    let dir = std::env::temp_dir().join(format!("c4a-load-{}", uuid_like(&options)));
    std::fs::create_dir_all(&dir).unwrap();
    let clients = dir.join("clients.jsonl");
    let mut file = std::fs::File::create(&clients).unwrap();
    for user in ["ann", "ben", "cat"] {
        let client = client(&pool, "load", user, &[Scope::Read, Scope::Write]).await;
        writeln!(file, "{}", serde_json::to_string(&client).unwrap()).unwrap();
    }
    drop(file);

    let report = dir.join("report.html");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat4all-load"))
        .args([
            "--host",
            &host,
            "--users",
            "3",
            "--increase-rate",
            "3",
            "--run-time",
            "4s",
            "--no-reset-metrics",
        ])
        .arg("--report-file")
        .arg(&report)
        .env("CHAT4ALL_LOAD_CLIENTS", &clients)
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("create conversation"),
        "the report lacks the sign-in requests"
    );
    // Every user signed in and opened its group, through the real API.
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ConversationCreated'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(created, 3);

    // Without credentials it refuses to start, and says why.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat4all-load"))
        .args(["--host", &host, "--users", "1", "--run-time", "1s"])
        .env_remove("CHAT4ALL_LOAD_CLIENTS")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("CHAT4ALL_LOAD_CLIENTS"));

    gateway.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A name unique to this test's database.
fn uuid_like(options: &sqlx::postgres::PgConnectOptions) -> String {
    options
        .get_database()
        .unwrap_or("load")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}
