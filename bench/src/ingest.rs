//! Ingest: messages accepted per second over N concurrent connections, with p50/p99 latency,
//! against the raw limit: pgbench committing single-row INSERTs of the same event row at the same
//! concurrency, on the same server, in the same run.
//!
//! The engine runs in this process (gateway on a free port, a fresh database); the load comes
//! from the same process over real HTTP connections, as an external load tool would send it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chat4all_gateway::auth::Scope;
use chat4all_gateway::Application;
use chat4all_platform::{Secret, Settings};
use hdrhistogram::Histogram;
use sqlx::Connection;

use super::report::Report;
use super::{drop_database, recreate_database, with_database};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Concurrent HTTP connections (and pgbench clients).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds (after a warm-up of a fifth of it).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// A short run (8 s) for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Conversations the load is spread over.
    #[arg(long, default_value_t = 16)]
    conversations: usize,
    /// Where to write `ingest.json`.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// A running gateway to load instead of one started here (its database is `DATABASE_URL`,
    /// where the benchmark's clients are registered; run it with the rate limit off). The limit
    /// is measured in a scratch database on the same Postgres server.
    #[arg(long)]
    url: Option<String>,
}

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const TEXT: &str = "Hello! This is a benchmark message of typical chat length.";

pub async fn run(settings: &Settings, args: IngestArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let seconds = if args.quick { 8 } else { args.seconds };
    let warmup = Duration::from_secs((seconds / 5).max(2));
    let base = settings.database.connect_options()?;
    // The database the benchmark may drop at the end: its own, or a scratch one for the limit.
    let database = format!("chat4all_bench_{}", std::process::id());
    recreate_database(&base, &database).await?;
    let url = with_database(settings.database.url.expose(), &database);
    let mut settings = settings.clone();
    let mut server = None;
    let base_url = if let Some(target) = &args.url {
        println!("ingest: loading the running gateway at {target}");
        target.trim_end_matches('/').to_owned()
    } else {
        settings.database.url = Secret::new(url.clone());
        settings.database.max_connections = settings
            .database
            .max_connections
            .max(args.connections as u32);
        settings.listen = "127.0.0.1:0".to_owned();
        settings.rate_limit_per_minute = 0;
        chat4all_eventstore::migrate(&settings.database).await?;
        let app = Application::build(&settings).await?;
        let base_url = format!("http://{}", app.local_addr());
        let stop = CancellationToken::new();
        server = Some((stop.clone(), tokio::spawn(app.run_until_stopped(stop))));
        base_url
    };

    let http = reqwest::Client::new();
    let pool = settings.database.connect().await?;
    let mut tokens = Vec::new();
    for user in USERS {
        let token =
            super::token(&http, &base_url, &pool, user, &[Scope::Read, Scope::Write]).await?;
        tokens.push(token);
    }
    let mut conversations = Vec::new();
    let members = USERS.map(str::to_owned);
    for _ in 0..args.conversations.max(1) {
        conversations.push(super::create_group(&http, &base_url, &tokens[0], &members).await?);
    }

    println!(
        "ingest: {} connections, {} conversations, warm-up {} s, measuring {} s",
        args.connections,
        conversations.len(),
        warmup.as_secs(),
        seconds
    );
    let engine = drive(
        &base_url,
        &tokens,
        &conversations,
        args.connections,
        warmup,
        Duration::from_secs(seconds),
    )
    .await?;
    if let Some((stop, server)) = server {
        stop.cancel();
        let _ = server.await;
    }

    let (payload, metadata): (serde_json::Value, serde_json::Value) = sqlx::query_as(
        "SELECT payload, metadata FROM events WHERE event_type = 'MessageSent' LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    println!(
        "limit: pgbench, {} clients, single-row INSERT of the same event row per transaction",
        args.connections
    );
    let limit = raw_limit(&url, &payload, &metadata, args.connections, seconds).await?;
    drop_database(&base, &database).await?;

    let ratio = engine.per_second / limit;
    println!();
    println!(
        "engine   {:>10.0} messages/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
        engine.per_second, engine.p50_ms, engine.p99_ms, engine.errors
    );
    println!("limit    {:>10.0} commits/s", limit);
    println!("ratio    {:>10.3}", ratio);
    let mut report = Report::new("ingest", started_at);
    report.engine_per_s = engine.per_second;
    report.limit_per_s = Some(limit);
    report.ratio = Some(ratio);
    report.p50_ms = Some(engine.p50_ms);
    report.p99_ms = Some(engine.p99_ms);
    report.details = serde_json::json!({
        "errors": engine.errors, "connections": args.connections, "seconds": seconds,
        "limit": "pgbench: single-row INSERT of the same event row per transaction, same clients",
    });
    report.throughput = engine.throughput;
    report.percentiles = engine.percentiles;
    report.write(&args.out)?;
    Ok(())
}

struct EngineResult {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    throughput: Vec<(f64, f64)>,
    percentiles: Vec<(f64, f64)>,
}

async fn drive(
    base_url: &str,
    tokens: &[String],
    conversations: &[String],
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<EngineResult> {
    let started = Instant::now();
    let measure_from = started + warmup;
    let until = measure_from + measure;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut workers = Vec::new();
    for worker in 0..connections {
        // One client per worker: one keep-alive connection each, like independent API clients.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let url = format!("{base_url}/v1/messages");
        let token = tokens[worker % tokens.len()].clone();
        let conversation = conversations[worker % conversations.len()].clone();
        let (done, errors, histogram) = (done.clone(), errors.clone(), histogram.clone());
        workers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("static bounds"));
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let body = serde_json::json!({
                    "message_id": uuid::Uuid::new_v4(),
                    "conversation_id": conversation,
                    "content": {"type": "text", "text": TEXT},
                });
                let ok = matches!(
                    http.post(&url).bearer_auth(&token).json(&body).send().await,
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED
                );
                if sent >= measure_from {
                    if ok {
                        let _ =
                            local.record(sent.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = histogram.lock().await.add(&local);
        }));
    }
    let mut last = 0;
    let mut throughput = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    ticker.tick().await;
    while Instant::now() < until {
        ticker.tick().await;
        let now = done.load(Ordering::Relaxed);
        let phase = if Instant::now() < measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        println!(
            "  {:>5.1} s  {phase:<9}  {:>7.0} messages/s  errors {}",
            started.elapsed().as_secs_f64(),
            (now - last) as f64 / 2.0,
            errors.load(Ordering::Relaxed)
        );
        if Instant::now() >= measure_from {
            throughput.push((started.elapsed().as_secs_f64(), (now - last) as f64 / 2.0));
        }
        last = now;
    }
    for w in workers {
        w.await?;
    }
    let h = histogram.lock().await;
    Ok(EngineResult {
        per_second: done.load(Ordering::Relaxed) as f64 / measure.as_secs_f64(),
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        errors: errors.load(Ordering::Relaxed),
        throughput,
        percentiles: super::report::hdr_percentiles(&h, 1000.0),
    })
}

async fn raw_limit(
    url: &str,
    payload: &serde_json::Value,
    metadata: &serde_json::Value,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // Same columns, defaults and primary key as `events`, without the engine's triggers and
    // secondary indexes: the cost of durably committing the row itself.
    sqlx::query(
        "CREATE TABLE raw_limit (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
         sequence bigint NOT NULL, event_type text NOT NULL, event_version text NOT NULL, \
         payload jsonb NOT NULL, metadata jsonb NOT NULL, \
         global_position bigint GENERATED ALWAYS AS IDENTITY, \
         tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(), \
         recorded_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    )
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    let quote = |v: &serde_json::Value| v.to_string().replace('\'', "''");
    let script = format!(
        "INSERT INTO raw_limit (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Message', 'bench:' || gen_random_uuid(), 1, 'MessageSent', '1.0', '{}', '{}');\n",
        quote(payload),
        quote(metadata)
    );
    let dir = std::env::temp_dir().join(format!("chat4all-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("insert.sql");
    std::fs::write(&file, script)?;
    let output = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-P",
            "5",
            "-f",
        ])
        .arg(&file)
        .arg(url)
        .output()
        .await
        .context("running pgbench (Debian package postgresql-client or postgresql-contrib)")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines().filter(|l| l.starts_with("progress")) {
        println!("  {line}");
    }
    if !output.status.success() {
        bail!("pgbench failed: {stderr}");
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output: {stdout}"))
}
