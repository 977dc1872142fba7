//! Projector: how fast the read models follow a backlog on the events topic, against a raw
//! consumer reading the very same topic (same broker, same records) in the same run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chat4all_platform::{KafkaSettings, Secret, Settings};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use super::report::Report;
use super::{drop_database, recreate_database, with_database};

#[derive(Debug, clap::Args)]
pub struct ProjectorArgs {
    /// Message events on the topic (plus one conversation creation per 100 of them).
    #[arg(long, default_value_t = 200_000)]
    events: i64,
    /// A short run (30,000 events).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

pub async fn run(settings: &Settings, args: ProjectorArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let events = if args.quick { 30_000 } else { args.events };
    let base = settings.database.connect_options()?;
    let database = format!("chat4all_bench_projector_{}", std::process::id());
    recreate_database(&base, &database).await?;
    let mut settings = settings.clone();
    settings.database.url = Secret::new(with_database(settings.database.url.expose(), &database));
    chat4all_eventstore::migrate(&settings.database).await?;
    let pool = settings.database.connect().await?;
    let prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
    settings.topic_prefix.clone_from(&prefix);
    let topic = KafkaSettings::events_topic(&prefix);

    println!("projector: writing {events} message events and publishing them to {topic}");
    sqlx::query(include_str!("replay_store.sql"))
        .bind(events)
        .execute(&pool)
        .await?;
    sqlx::query("ANALYZE events").execute(&pool).await?;
    let total: u64 = u64::try_from(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?,
    )?;
    let relay = chat4all_relay::Relay::from_settings(&settings)?;
    let status = relay.status();
    let stop = CancellationToken::new();
    let relaying = tokio::spawn(relay.run(stop.clone()));
    let started = Instant::now();
    while status.published() < total {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the relay did not publish the backlog"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    relaying.await?;

    // Limit: a consumer of its own reading the whole topic, doing nothing with the records.
    let consumer: StreamConsumer = settings
        .kafka
        .consumer_config(&format!("{prefix}-raw"))
        .create()?;
    consumer.subscribe(&[&topic])?;
    let started = Instant::now();
    let mut consumed = 0u64;
    while consumed < total {
        tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
        consumed += 1;
    }
    let limit = consumed as f64 / started.elapsed().as_secs_f64();
    drop(consumer);
    println!("limit: {limit:.0} events/s (a raw consumer of the same topic)");

    // Announcing on Redis is part of projecting, so it is measured too.
    let projector = chat4all_projections::Projector::from_settings(&settings).await?;
    let projected = projector.status();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let projecting = tokio::spawn(projector.run(stop.clone()));
    let mut last = (Instant::now(), 0);
    let mut throughput = Vec::new();
    while projected.applied() < total {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the projector did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if last.0.elapsed() >= Duration::from_secs(2) {
            let now = projected.applied();
            let rate = (now - last.1) as f64 / last.0.elapsed().as_secs_f64();
            println!(
                "  {:>5.1} s  {now:>8} of {total} applied  {rate:>8.0} events/s",
                started.elapsed().as_secs_f64(),
            );
            throughput.push((started.elapsed().as_secs_f64(), rate));
            last = (Instant::now(), now);
        }
    }
    let engine = total as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    projecting.await?;
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_messages")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    drop_database(&base, &database).await?;

    let ratio = engine / limit;
    println!();
    println!("engine   {engine:>10.0} events/s   ({total} events, {messages} messages projected)");
    println!("limit    {limit:>10.0} events/s");
    println!("ratio    {ratio:>10.3}");
    let mut report = Report::new("projector", started_at);
    report.engine_per_s = engine;
    report.limit_per_s = Some(limit);
    report.ratio = Some(ratio);
    report.details = serde_json::json!({
        "events": total, "messages": messages,
        "limit": "a raw consumer of the same topic",
    });
    report.throughput = throughput;
    report.write(&args.out)?;
    Ok(())
}
