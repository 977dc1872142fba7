//! Push latency: from the moment a client sends a message to the moment subscribers on another
//! gateway instance receive it, through the whole pipeline (gateway, event store, relay, Kafka,
//! projector, Redis, gateway), at a steady rate with many subscribers. Relay, projector and two
//! gateways run as processes of their own; messages go in through one gateway and come out of
//! the other.
//!
//! The limit is the transport no push can avoid: a Redis PUBLISH to a SUBSCRIBE round trip at
//! the same message rate, measured in the same run. The ratio is the limit's p99 over the
//! engine's (1.0 would mean the pipeline added nothing to the Redis hop).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chat4all_gateway::auth::{KeyRing, Scope, TokenService};
use chat4all_platform::{Secret, Settings};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::report::Report;
use super::{drop_database, recreate_database, with_database, RoleProcess};

#[derive(Debug, clap::Args)]
pub struct PushLatencyArgs {
    /// Messages sent per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Subscribed sockets, one user each, in groups of `group_size`.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    #[arg(long, default_value_t = 10)]
    group_size: usize,
    /// Seconds of sending (the first two are a warm-up, not counted).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// A short run (10 s).
    #[arg(long)]
    quick: bool,
    /// A running deployment's gateway (`http://host:port`) to send through and subscribe on,
    /// instead of the processes started here; its database is `DATABASE_URL` (the benchmark's
    /// tokens are signed with its keys). Run it with the rate limit off.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

const WARM_UP: Duration = Duration::from_secs(2);

/// The send instant a `message.created` frame carries in its text (`t=<ns>`).
fn sent_at(frame: &str) -> Option<u64> {
    if !frame.contains("\"type\":\"message.created\"") {
        return None;
    }
    let start = frame.find("\"text\":\"t=")? + "\"text\":\"t=".len();
    let digits = &frame[start..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

/// The `p`th percentile in ms of latencies in microseconds, sorted.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    super::report::at(sorted, p).map_or(f64::NAN, |us| us as f64 / 1000.0)
}

pub async fn run(settings: &Settings, args: PushLatencyArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let seconds = if args.quick { 10 } else { args.seconds };
    let group_size = args.group_size.max(2);
    let groups = args.subscribers.div_ceil(group_size);
    let subscribers = groups * group_size;
    super::connections::raise_file_limit(subscribers * 2);

    let base = settings.database.connect_options()?;
    let database = format!("chat4all_bench_push_{}", std::process::id());
    let mut settings = settings.clone();
    let mut processes = Vec::new();
    let (send_at, push_at) = if let Some(target) = &args.url {
        println!("push-latency: sending to and subscribing on the running gateway at {target}");
        let host = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        (host.clone(), host)
    } else {
        recreate_database(&base, &database).await?;
        let url = with_database(settings.database.url.expose(), &database);
        settings.database.url = Secret::new(url.clone());
        chat4all_eventstore::migrate(&settings.database).await?;
        let prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
        let env = [
            ("DATABASE_URL", url.as_str()),
            ("CHAT4ALL_LISTEN", "127.0.0.1:0"),
            ("CHAT4ALL_METRICS_LISTEN", "127.0.0.1:0"),
            ("CHAT4ALL_TOPIC_PREFIX", prefix.as_str()),
            ("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "0"),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                settings.kafka.bootstrap_servers.as_str(),
            ),
            ("REDIS_URL", settings.redis.url.expose()),
        ];
        for role in ["relay", "project", "gateway", "gateway"] {
            processes.push(RoleProcess::start(role, &env).await?);
        }
        (
            processes[2].address.clone().context("no address")?,
            processes[3].address.clone().context("no address")?,
        )
    };

    let pool = settings.database.connect().await?;
    let issuer = TokenService::new(
        Arc::new(KeyRing::open(pool.clone()).await?),
        settings.auth.issuer.clone(),
        settings.auth.audience.clone(),
        3_600,
    );
    let tokens: Vec<String> = (0..subscribers)
        .map(|u| {
            issuer
                .issue(
                    "bench",
                    &format!("user{u}"),
                    "bench",
                    &[Scope::Read, Scope::Write],
                )
                .map(|(token, _)| token)
        })
        .collect::<Result<_, _>>()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    println!("push-latency: creating {groups} groups of {group_size}");
    let mut conversations = Vec::with_capacity(groups);
    for g in 0..groups {
        let members: Vec<String> = (0..group_size)
            .map(|m| format!("user{}", g * group_size + m))
            .collect();
        conversations.push(
            super::create_group(
                &http,
                &format!("http://{send_at}"),
                &tokens[g * group_size],
                &members,
            )
            .await?,
        );
    }

    // Every subscriber on the other instance; each socket reports the latency of every
    // message it receives (the send instant travels in the text, as nanoseconds since `epoch`).
    println!("push-latency: opening {subscribers} sockets on the second gateway");
    let epoch = Instant::now();
    let (latencies, mut received) = mpsc::unbounded_channel::<(u64, u64)>();
    let mut readers = Vec::with_capacity(subscribers);
    for token in &tokens {
        let (mut socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{push_at}/ws?token={token}")).await?;
        socket.next().await.context("no connection.established")??;
        let latencies = latencies.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                // Found by text rather than parsed: the load generator shares the machine with
                // the engine, and parsing 10,000 frames a second would take from the engine.
                let Some(sent) = sent_at(text.as_str()) else {
                    continue;
                };
                let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let _ = latencies.send((sent, now.saturating_sub(sent)));
            }
        }));
    }
    drop(latencies);

    // The limit: Redis PUBLISH to SUBSCRIBE at the same rate, on a connection pair of its own.
    let redis_limit = redis_round_trip(&settings, args.rate, seconds.min(5)).await?;
    println!(
        "limit: Redis publish/subscribe round trip p50 {:.2} ms, p99 {:.2} ms",
        redis_limit.0, redis_limit.1
    );

    println!(
        "push-latency: sending {} messages/s for {seconds} s through the first gateway",
        args.rate
    );
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = u64::from(args.rate) * seconds;
    let started = Instant::now();
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut last = (Instant::now(), 0usize);
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut throughput = Vec::new();
    for i in 0..total {
        tick.tick().await;
        let g = (i as usize) % groups;
        let sender = g * group_size + (i as usize / groups) % group_size;
        let permit = in_flight.clone().acquire_owned().await?;
        let (http, token, conversation, send_at, failures) = (
            http.clone(),
            tokens[sender].clone(),
            conversations[g].clone(),
            send_at.clone(),
            failures.clone(),
        );
        let sent = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        tokio::spawn(async move {
            let answer = http
                .post(format!("http://{send_at}/v1/messages"))
                .bearer_auth(token)
                .json(&serde_json::json!({
                    "conversation_id": conversation,
                    "content": {"type": "text", "text": format!("t={sent}")},
                }))
                .send()
                .await;
            if !answer.is_ok_and(|a| a.status().is_success()) {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            drop(permit);
        });
        while let Ok(sample) = received.try_recv() {
            samples.push(sample);
        }
        if last.0.elapsed() >= Duration::from_secs(2) {
            let recent: Vec<u64> = {
                let mut recent: Vec<u64> = samples[last.1..].iter().map(|s| s.1 / 1000).collect();
                recent.sort_unstable();
                recent
            };
            println!(
                "  {:>5.1} s  {:>7} sent  {:>8} pushed  p50 {:>7.2} ms  p99 {:>7.2} ms",
                started.elapsed().as_secs_f64(),
                i + 1,
                samples.len(),
                percentile(&recent, 50.0),
                percentile(&recent, 99.0),
            );
            throughput.push((
                started.elapsed().as_secs_f64(),
                (samples.len() - last.1) as f64 / last.0.elapsed().as_secs_f64(),
            ));
            last = (Instant::now(), samples.len());
        }
    }
    let sending_took = started.elapsed();
    // Everything sent is awaited: each message reaches every member of its group.
    let expected = total as usize * group_size;
    let deadline = Instant::now() + Duration::from_secs(60);
    while samples.len() < expected && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), received.recv()).await {
            Ok(Some(sample)) => samples.push(sample),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    let warm_up = u64::try_from((started.duration_since(epoch) + WARM_UP).as_nanos())?;
    let mut counted: Vec<u64> = samples
        .iter()
        .filter(|(sent, _)| *sent >= warm_up)
        .map(|(_, latency)| latency / 1000)
        .collect();
    counted.sort_unstable();
    let delivered = samples.len();
    for reader in readers {
        reader.abort();
    }
    drop(processes);
    pool.close().await;
    if args.url.is_none() {
        drop_database(&base, &database).await?;
    }

    let (p50, p99) = (percentile(&counted, 50.0), percentile(&counted, 99.0));
    let max = percentile(&counted, 100.0);
    let sent_per_s = total as f64 / sending_took.as_secs_f64();
    let ratio = redis_limit.1 / p99;
    println!();
    println!("sent              {total:>10} messages at {sent_per_s:.0}/s ({failed} failed)");
    println!("pushed            {delivered:>10} of {expected} frames to {subscribers} sockets");
    println!("engine latency    p50 {p50:>8.2} ms   p99 {p99:>8.2} ms   max {max:.2} ms   (target p99 < 100, goal < 50)");
    println!(
        "limit latency     p50 {:>8.2} ms   p99 {:>8.2} ms   (Redis publish/subscribe round trip)",
        redis_limit.0, redis_limit.1
    );
    println!("ratio             {ratio:>10.3}   (limit p99 / engine p99)");
    let mut report = Report::new("push-latency", started_at);
    report.engine_per_s = delivered as f64 / sending_took.as_secs_f64();
    report.ratio = Some(ratio);
    report.p50_ms = Some(p50);
    report.p99_ms = Some(p99);
    report.details = serde_json::json!({
        "rate": args.rate, "seconds": seconds, "subscribers": subscribers,
        "group_size": group_size, "sent": total, "failed": failed, "pushed": delivered,
        "expected": expected, "max_ms": max,
        "limit_p50_ms": redis_limit.0, "limit_p99_ms": redis_limit.1,
        "limit": "Redis PUBLISH to SUBSCRIBE round trip at the same rate; ratio = limit p99 / engine p99",
    });
    report.throughput = throughput;
    let counted_ms: Vec<f64> = counted.iter().map(|&us| us as f64 / 1000.0).collect();
    report.percentiles = super::report::percentile_curve(&counted_ms);
    report.write(&args.out)?;
    anyhow::ensure!(
        delivered == expected,
        "{} pushes never arrived",
        expected - delivered
    );
    Ok(())
}

/// p50 and p99 in ms of a PUBLISH reaching a subscriber, at `rate` per second for `seconds`.
async fn redis_round_trip(
    settings: &Settings,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let client = settings.redis.client()?;
    let channel = format!("bench-rtt-{}", uuid::Uuid::new_v4().simple());
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&channel).await?;
    let mut publisher = client.get_multiplexed_async_connection().await?;
    let epoch = Instant::now();
    let total = u64::from(rate) * seconds;
    let listening = tokio::spawn(async move {
        let mut stream = pubsub.on_message();
        let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        while (latencies.len() as u64) < total {
            let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_secs(5), stream.next()).await
            else {
                break;
            };
            let sent: u64 = message.get_payload().unwrap_or_default();
            let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            latencies.push(now.saturating_sub(sent) / 1000);
        }
        latencies
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        tick.tick().await;
        let sent = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(sent)
            .query_async::<i64>(&mut publisher)
            .await?;
    }
    let mut latencies = listening.await?;
    latencies.sort_unstable();
    Ok((percentile(&latencies, 50.0), percentile(&latencies, 99.0)))
}
