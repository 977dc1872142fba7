//! Connections: what an idle WebSocket costs a gateway instance. A gateway process of its own is
//! started, N sockets are opened to it (ten per user, the per-user limit), and its resident
//! memory and CPU are read from `/proc` before and after, while the sockets sit idle.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chat4all_gateway::auth::{KeyRing, Scope, TokenService};
use chat4all_platform::{Secret, Settings};
use futures::StreamExt;

use super::report::Report;
use super::{drop_database, recreate_database, with_database, RoleProcess};

#[derive(Debug, clap::Args)]
pub struct ConnectionsArgs {
    /// Idle sockets to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Seconds to watch the idle gateway's CPU.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// A short run (1,000 sockets, 3 s idle).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?
        .parse()?)
}

/// CPU time of `pid` in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Raises this process's open-file limit (inherited by the gateway it starts) to what the
/// sockets need; `prlimit` does it without any unsafe code here.
pub(super) fn raise_file_limit(needed: usize) {
    let limit = (needed + 1_000).max(65_536).to_string();
    let raised = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status();
    if !raised.is_ok_and(|s| s.success()) {
        println!("connections: could not raise the open-file limit; fewer sockets may open");
    }
}

pub async fn run(settings: &Settings, args: ConnectionsArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let (count, idle) = if args.quick {
        (1_000, 3)
    } else {
        (args.connections, args.idle_seconds)
    };
    raise_file_limit(count * 2);
    let base = settings.database.connect_options()?;
    let database = format!("chat4all_bench_connections_{}", std::process::id());
    recreate_database(&base, &database).await?;
    let mut settings = settings.clone();
    let url = with_database(settings.database.url.expose(), &database);
    settings.database.url = Secret::new(url.clone());
    chat4all_eventstore::migrate(&settings.database).await?;

    let prefix = format!("bench{}", std::process::id());
    let gateway = RoleProcess::start(
        "gateway",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CHAT4ALL_LISTEN", "127.0.0.1:0"),
            ("CHAT4ALL_TOPIC_PREFIX", prefix.as_str()),
        ],
    )
    .await?;
    let pid = gateway.pid()?;
    let address = gateway.address.clone().context("no address")?;

    let pool = settings.database.connect().await?;
    let tokens = TokenService::new(
        Arc::new(KeyRing::open(pool.clone()).await?),
        settings.auth.issuer.clone(),
        settings.auth.audience.clone(),
        3_600,
    );
    let users = count.div_ceil(10);
    let tokens: Vec<String> = (0..users)
        .map(|u| {
            tokens
                .issue("bench", &format!("user{u}"), "bench", &[Scope::Read])
                .map(|(token, _)| token)
        })
        .collect::<Result<_, _>>()?;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kib = rss_kib(pid)?;
    println!("connections: gateway (pid {pid}) at {before_kib} KiB; opening {count} sockets");
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(count);
    let mut last = Instant::now();
    // Sockets opened per second while opening them.
    let mut opening = Vec::new();
    let mut opened_since = 0;
    for i in 0..count {
        let url = format!("ws://{address}/ws?token={}", tokens[i / 10]);
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("socket {i}"))?;
        socket.next().await.context("no connection.established")??;
        sockets.push(socket);
        if last.elapsed() >= Duration::from_secs(2) {
            println!("  {:>6} open  {:>8} KiB", i + 1, rss_kib(pid)?);
            opening.push((
                started.elapsed().as_secs_f64(),
                (i + 1 - opened_since) as f64 / last.elapsed().as_secs_f64(),
            ));
            opened_since = i + 1;
            last = Instant::now();
        }
    }
    let opened_in = started.elapsed().as_secs_f64();
    println!("connections: {count} open in {opened_in:.1} s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks_before = cpu_ticks(pid)?;
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let ticks = cpu_ticks(pid)? - ticks_before;
    let idle_cpu = ticks as f64 / 100.0 / idle_started.elapsed().as_secs_f64() * 100.0;
    let after_kib = rss_kib(pid)?;
    let per_connection_kib = (after_kib.saturating_sub(before_kib)) as f64 / count as f64;
    drop(sockets);
    drop(gateway);
    pool.close().await;
    drop_database(&base, &database).await?;

    println!();
    println!("sockets           {count:>10}");
    println!("gateway memory    {before_kib:>10} KiB before, {after_kib} KiB after");
    println!("per connection    {per_connection_kib:>10.1} KiB   (target <= 16, goal 10)");
    println!("idle CPU          {idle_cpu:>10.2} % of one core over {idle} s");
    // Absolute targets (memory per socket), so no limit and no ratio.
    let mut report = Report::new("connections", started_at);
    report.engine_per_s = count as f64 / opened_in;
    report.details = serde_json::json!({
        "connections": count, "rss_before_kib": before_kib, "rss_after_kib": after_kib,
        "per_connection_kib": per_connection_kib, "idle_cpu_percent": idle_cpu,
        "target_per_connection_kib": 16, "goal_per_connection_kib": 10,
    });
    report.throughput = opening;
    report.write(&args.out)?;
    Ok(())
}
