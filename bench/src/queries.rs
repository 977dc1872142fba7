//! Queries: latency of the two hot read paths through the whole HTTP API, on read models of the
//! size the users' reference names: a user in 1,000 conversations (the list, first page), and a
//! conversation of 100,000 messages (a page of 50, newest and deep).

use std::path::PathBuf;
use std::time::Instant;

use chat4all_gateway::auth::Scope;
use chat4all_gateway::Application;
use chat4all_platform::{Secret, Settings};
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::report::Report;
use super::{drop_database, recreate_database, with_database};

#[derive(Debug, clap::Args)]
pub struct QueriesArgs {
    /// Requests per query kind.
    #[arg(long, default_value_t = 3_000)]
    requests: u64,
    /// A short run (500 requests each).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

pub async fn run(settings: &Settings, args: QueriesArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let requests = if args.quick { 500 } else { args.requests };
    let base = settings.database.connect_options()?;
    let database = format!("chat4all_bench_queries_{}", std::process::id());
    recreate_database(&base, &database).await?;
    let mut settings = settings.clone();
    settings.database.url = Secret::new(with_database(settings.database.url.expose(), &database));
    settings.listen = "127.0.0.1:0".to_owned();
    settings.rate_limit_per_minute = 0;
    chat4all_eventstore::migrate(&settings.database).await?;
    let pool = settings.database.connect().await?;
    println!("queries: building read models (1,000 conversations, one of 100,000 messages)");
    for statement in include_str!("read_models.sql")
        .split(";\n")
        .filter(|s| !s.trim().is_empty())
    {
        sqlx::query(statement).execute(&pool).await?;
    }
    let big: String = sqlx::query_scalar(
        "SELECT conversation_id::text FROM rm_conversations ORDER BY last_seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;

    let app = Application::build(&settings).await?;
    let base_url = format!("http://{}", app.local_addr());
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let http = reqwest::Client::new();
    let token = super::token(&http, &base_url, &pool, "alice", &[Scope::Read]).await?;

    let mut results = Vec::new();
    let measured = Instant::now();
    let mut total_requests = 0u64;
    for (name, path) in [
        (
            "list of 1,000 conversations, first page",
            "/v1/conversations?limit=50".to_owned(),
        ),
        (
            "newest 50 of 100,000 messages",
            format!("/v1/conversations/{big}/messages?limit=50"),
        ),
        (
            "50 messages deep in 100,000",
            format!("/v1/conversations/{big}/messages?limit=50&before_seq=50000"),
        ),
    ] {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let url = format!("{base_url}{path}");
        for i in 0..requests + 100 {
            let sent = Instant::now();
            let answer = http.get(&url).bearer_auth(&token).send().await?;
            anyhow::ensure!(answer.status().is_success(), "{path}: {}", answer.status());
            answer.bytes().await?;
            // The first hundred warm the caches and connections.
            if i >= 100 {
                histogram.record(
                    u64::try_from(sent.elapsed().as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1),
                )?;
            }
        }
        let (p50, p99) = (
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
        );
        println!("  {name:<42} p50 {p50:>6.2} ms   p99 {p99:>6.2} ms");
        total_requests += requests + 100;
        results.push(
            serde_json::json!({"query": name, "p50_ms": p50, "p99_ms": p99, "requests": requests}),
        );
    }
    stop.cancel();
    let _ = server.await;
    pool.close().await;
    drop_database(&base, &database).await?;
    // The headline is the first query (the conversation list); every query is in the details.
    let mut report = Report::new("queries", started_at);
    report.p50_ms = results.first().and_then(|r| r["p50_ms"].as_f64());
    report.p99_ms = results.first().and_then(|r| r["p99_ms"].as_f64());
    report.engine_per_s = total_requests as f64 / measured.elapsed().as_secs_f64();
    report.details = serde_json::json!({"results": results});
    report.write(&args.out)?;
    Ok(())
}
