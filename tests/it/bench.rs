//! The benchmark harness, run on a tiny scenario: it must leave its result files, with every
//! field a reader compares runs by. Nothing here judges the figures themselves.

use std::process::Command;

use chat4all_testsupport::database::server_options;
use sqlx::ConnectOptions;

use crate::process::BIN;

#[test]
fn a_tiny_push_latency_run_leaves_json_markdown_summary_and_plots() {
    let out = std::env::temp_dir().join(format!("c4a-bench-{}", uuid::Uuid::new_v4().simple()));
    let url = server_options().to_url_lossy().to_string();
    let bootstrap =
        std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let run = Command::new(BIN)
        .args([
            "bench",
            "push-latency",
            "--rate",
            "20",
            "--subscribers",
            "8",
            "--group-size",
            "4",
            "--seconds",
            "5",
            "--out",
        ])
        .arg(&out)
        .env("DATABASE_URL", &url)
        .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Progress lines while it ran.
    assert!(
        stdout.contains(" sent ") && stdout.contains(" pushed "),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("push-latency.json")).unwrap()).unwrap();
    assert_eq!(report["scenario"], "push-latency");
    for field in ["engine_per_s", "ratio", "p50_ms", "p99_ms"] {
        assert!(
            report[field].as_f64().is_some_and(f64::is_finite),
            "{field}: {report}"
        );
    }
    assert!(report.get("limit_per_s").is_some());
    // Every message reached every member of its group.
    assert_eq!(report["details"]["pushed"], report["details"]["expected"]);
    assert_eq!(report["details"]["expected"], 5 * 20 * 4);
    let commit = report["commit"].as_str().unwrap();
    assert!(!commit.is_empty() && commit != "unknown", "{commit}");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(report["machine"]["memory_kib"].as_u64().unwrap() > 0);
    assert!(report["machine"]["os"].as_str().unwrap().contains("Linux"));
    chrono::DateTime::parse_from_rfc3339(report["started_at"].as_str().unwrap()).unwrap();

    let markdown = std::fs::read_to_string(out.join("push-latency.md")).unwrap();
    assert!(markdown.contains("| push-latency |"), "{markdown}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("| push-latency |"), "{summary}");
    for plot in ["push-latency-latency.svg", "push-latency-throughput.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<polyline"), "{plot}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}
