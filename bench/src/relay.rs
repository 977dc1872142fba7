//! Relay: how fast a backlog drains to the broker, against raw production of the very same
//! records (same envelopes, keys, headers, producer settings) to the same broker in the same run;
//! and how long an event takes from its commit to the broker's acknowledgement at a steady
//! 1,000 events/s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chat4all_eventstore::{read_batch, Checkpoint, StoredEvent};
use chat4all_platform::{KafkaSettings, Secret, Settings};
use chat4all_relay::{Encoded, Publisher, Relay, RelayConfig};
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::report::Report;
use super::{drop_database, recreate_database, with_database};

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Events in the backlog.
    #[arg(long, default_value_t = 200_000)]
    backlog: i64,
    /// Events per second for the latency run.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// A short run (20,000 events, 5 s of latency) for smoke tests.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

const CONVERSATIONS: i64 = 1_000;

pub async fn run(settings: &Settings, args: RelayArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let (backlog, seconds) = if args.quick {
        (20_000, 5)
    } else {
        (args.backlog, args.seconds)
    };
    let base = settings.database.connect_options()?;
    let database = format!("chat4all_bench_relay_{}", std::process::id());
    recreate_database(&base, &database).await?;
    let mut settings = settings.clone();
    settings.database.url = Secret::new(with_database(settings.database.url.expose(), &database));
    chat4all_eventstore::migrate(&settings.database).await?;
    let pool = settings.database.connect().await?;
    let prefix = format!("bench{}", uuid::Uuid::new_v4().simple());

    // Latency first, on a quiet store and broker: a steady writer, the relay acknowledging,
    // commit-to-acknowledgement per event.
    println!("latency: {} events/s for {seconds} s", args.rate);
    let (p50, p99, measured) = latency(&settings, &pool, &prefix, args.rate, seconds).await?;
    println!("latency: commit to acknowledgement p50 {p50:.2} ms, p99 {p99:.2} ms over {measured} events");

    // The relay starts first and idles, so the measurement is of draining, not of starting up
    // (leader election, topic creation, the producer's first connection).
    let relay = relay_for(&settings, &prefix, &pool)?;
    let status = relay.status();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone()));
    settings
        .kafka
        .ensure_topic(&KafkaSettings::events_topic(&prefix))
        .await?;
    sqlx::query(include_str!("one_event.sql"))
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&pool)
        .await?;
    while status.published() < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    println!("relay: committing a backlog of {backlog} events in one transaction");
    sqlx::query(include_str!("backlog.sql"))
        .bind(backlog)
        .bind(CONVERSATIONS)
        .execute(&pool)
        .await?;
    let started = Instant::now();
    let total = u64::try_from(backlog)? + 1;
    let mut last = (Instant::now(), 0);
    while status.published() < total {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last.0.elapsed() >= Duration::from_secs(2) {
            let now = status.published();
            println!(
                "  {:>5.1} s  {:>8} of {total} published  {:>8.0} events/s",
                started.elapsed().as_secs_f64(),
                now,
                (now - last.1) as f64 / last.0.elapsed().as_secs_f64()
            );
            last = (Instant::now(), now);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the relay did not drain the backlog"
        );
    }
    let engine = (total - 1) as f64 / started.elapsed().as_secs_f64();
    println!("engine: {engine:.0} events/s");

    // Limit: the same records (envelopes, keys, headers), encoded beforehand and produced
    // straight from memory with the same producer settings.
    let mut records = Vec::with_capacity(usize::try_from(backlog)?);
    let mut after = Checkpoint::default();
    loop {
        let batch = read_batch(&pool, after, 20_000).await?;
        let Some(last) = batch.last() else { break };
        after = last.checkpoint();
        records.extend(batch.iter().map(Encoded::of));
    }
    let raw_topic = format!("{prefix}.raw.v1");
    settings.kafka.ensure_topic(&raw_topic).await?;
    let publisher = Publisher::new(&settings.kafka, raw_topic, Duration::from_secs(30))?;
    // Warmed up like the relay was: connected, topic metadata known, before the clock starts.
    let (warm_up, rest) = records.split_at(1.min(records.len()));
    publisher
        .enqueue(warm_up)
        .await?
        .acknowledged(Duration::from_secs(60))
        .await?;
    let started = Instant::now();
    let mut pending = Vec::new();
    for chunk in rest.chunks(20_000) {
        pending.push(publisher.enqueue(chunk).await?);
    }
    for batch in pending {
        batch.acknowledged(Duration::from_secs(60)).await?;
    }
    let limit = rest.len() as f64 / started.elapsed().as_secs_f64();
    println!("limit: {limit:.0} events/s (raw production of the same records)");
    drop(records);

    stop.cancel();
    task.await?;
    pool.close().await;
    drop_database(&base, &database).await?;

    let ratio = engine / limit;
    println!();
    println!("engine   {engine:>10.0} events/s");
    println!("limit    {limit:>10.0} events/s");
    println!("ratio    {ratio:>10.3}");
    println!(
        "latency  p50 {p50:.2} ms   p99 {p99:.2} ms   at {} events/s",
        args.rate
    );
    let mut report = Report::new("relay", started_at);
    report.engine_per_s = engine;
    report.limit_per_s = Some(limit);
    report.ratio = Some(ratio);
    report.p50_ms = Some(p50);
    report.p99_ms = Some(p99);
    report.details = serde_json::json!({
        "backlog": backlog, "latency_rate_per_s": args.rate,
        "limit": "raw rdkafka production of the same envelopes to the same broker",
    });
    report.write(&args.out)?;
    Ok(())
}

fn relay_for(settings: &Settings, prefix: &str, pool: &sqlx::PgPool) -> anyhow::Result<Relay> {
    Ok(Relay::new(
        pool.clone(),
        settings.database.connect_options()?,
        RelayConfig {
            deployment: prefix.to_owned(),
            topic: KafkaSettings::events_topic(prefix),
            kafka: settings.kafka.clone(),
            batch_size: settings.relay.batch_size,
            idle_poll: Duration::from_millis(settings.relay.idle_poll_ms),
            delivery_timeout: Duration::from_millis(settings.relay.delivery_timeout_ms),
        },
    ))
}

async fn latency(
    settings: &Settings,
    pool: &sqlx::PgPool,
    prefix: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(f64, f64, u64)> {
    // Commit and acknowledgement instants per position, joined at the end: either may be
    // recorded first (an acknowledgement can beat the writer's own bookkeeping).
    let committed: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let acknowledged: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let observer = {
        let acknowledged = acknowledged.clone();
        Arc::new(move |events: &[StoredEvent]| {
            let now = Instant::now();
            let mut acknowledged = acknowledged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for event in events {
                acknowledged.insert(event.global_position, now);
            }
        })
    };
    let deployment = format!("{prefix}l");
    let relay = relay_for(settings, &deployment, pool)?.with_observer(observer);
    // Start after the backlog, so only events written from now on are measured.
    sqlx::query(
        "INSERT INTO relay_checkpoints (deployment, tx_id, position) \
         SELECT $1, tx_id, global_position FROM events ORDER BY tx_id DESC, global_position DESC LIMIT 1",
    )
    .bind(&deployment)
    .execute(pool)
    .await?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone()));
    // Warmed up like the raw producer: the clock starts once one event has gone all the way
    // (leadership, the producer's first connection and id, the broker's first append).
    let first: i64 = sqlx::query_scalar(include_str!("one_event.sql"))
        .bind(uuid::Uuid::new_v4().to_string())
        .fetch_one(pool)
        .await
        .context("writing the warm-up event")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains_key(&first)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the relay did not publish a first event within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut writers = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    let mut last_report = Instant::now();
    while Instant::now() < until {
        ticker.tick().await;
        let (pool, committed) = (pool.clone(), committed.clone());
        sent += 1;
        writers.spawn(async move {
            let position: i64 = sqlx::query_scalar(include_str!("one_event.sql"))
                .bind(uuid::Uuid::new_v4().to_string())
                .fetch_one(&pool)
                .await
                .context("writing an event")?;
            committed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(position, Instant::now());
            Ok::<_, anyhow::Error>(())
        });
        while let Some(done) = writers.try_join_next() {
            done??;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            let acked = acknowledged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len();
            println!("  {sent:>8} written  {acked:>8} acknowledged");
            last_report = Instant::now();
        }
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let all_acknowledged = || {
        let committed = committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let acknowledged = acknowledged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        committed.keys().all(|p| acknowledged.contains_key(p))
    };
    while !all_acknowledged() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let committed = committed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let acknowledged = acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (position, at) in committed.iter() {
        if let Some(acked) = acknowledged.get(position) {
            let micros = acked.saturating_duration_since(*at).as_micros();
            h.record(u64::try_from(micros).unwrap_or(u64::MAX).max(1))?;
        }
    }
    Ok((
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.len(),
    ))
}
