//! `chat4all bench`: each scenario measures the engine and, in the same run, the raw limit of the
//! machine it runs on, and reports their ratio, so figures compare across machines.
#![forbid(unsafe_code)]

mod connections;
mod ingest;
mod plots;
mod projector;
mod push_latency;
mod queries;
mod relay;
mod replay;
pub mod report;

use chat4all_platform::Settings;
use clap::Subcommand;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// `POST /v1/messages` throughput and latency against raw single-row INSERT commits.
    Ingest(ingest::IngestArgs),
    /// Relay throughput on a backlog against raw production of the same records, and
    /// commit-to-acknowledgement latency at a steady rate.
    Relay(relay::RelayArgs),
    /// Memory and idle CPU of a gateway holding many WebSockets.
    Connections(connections::ConnectionsArgs),
    /// Send-to-push latency through the whole pipeline at a steady rate with many subscribers.
    PushLatency(push_latency::PushLatencyArgs),
    /// Projector throughput on a backlog against a raw consumer of the same topic.
    Projector(projector::ProjectorArgs),
    /// Query latency through the HTTP API on large read models.
    Queries(queries::QueriesArgs),
    /// Rebuilding the read models from the store against a sequential read of the same events.
    Replay(replay::ReplayArgs),
    /// Every scenario in turn, then `summary.md` over all of them.
    All(AllArgs),
}

#[derive(Debug, clap::Args)]
pub struct AllArgs {
    /// Each scenario's short run (under a minute each).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value = "bench-results")]
    out: std::path::PathBuf,
}

/// A scenario's arguments as if given on the command line (`--quick`, `--out`).
fn scenario_args<A: clap::Args + clap::FromArgMatches>(
    quick: bool,
    out: &std::path::Path,
) -> anyhow::Result<A> {
    let mut argv = vec![
        "bench".to_owned(),
        "--out".to_owned(),
        out.display().to_string(),
    ];
    if quick {
        argv.push("--quick".to_owned());
    }
    let matches = A::augment_args(clap::Command::new("bench")).try_get_matches_from(argv)?;
    Ok(A::from_arg_matches(&matches)?)
}

async fn all(settings: &Settings, args: AllArgs) -> anyhow::Result<()> {
    let (quick, out) = (args.quick, args.out.as_path());
    let mut failed = Vec::new();
    let scenarios = [
        "ingest",
        "relay",
        "push-latency",
        "connections",
        "queries",
        "projector",
        "replay",
    ];
    for (i, name) in scenarios.iter().enumerate() {
        println!("\n=== bench {name} ({} of {})", i + 1, scenarios.len());
        let result = match *name {
            "ingest" => ingest::run(settings, scenario_args(quick, out)?).await,
            "relay" => relay::run(settings, scenario_args(quick, out)?).await,
            "push-latency" => push_latency::run(settings, scenario_args(quick, out)?).await,
            "connections" => connections::run(settings, scenario_args(quick, out)?).await,
            "queries" => queries::run(settings, scenario_args(quick, out)?).await,
            "projector" => projector::run(settings, scenario_args(quick, out)?).await,
            _ => replay::run(settings, scenario_args(quick, out)?).await,
        };
        if let Err(e) = result {
            println!("bench {name} failed: {e:#}");
            failed.push(*name);
        }
    }
    println!(
        "\n{}",
        std::fs::read_to_string(out.join("summary.md")).unwrap_or_default()
    );
    anyhow::ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}

pub async fn run(settings: &Settings, scenario: Scenario) -> anyhow::Result<()> {
    match scenario {
        Scenario::Ingest(args) => ingest::run(settings, args).await,
        Scenario::Relay(args) => relay::run(settings, args).await,
        Scenario::Connections(args) => connections::run(settings, args).await,
        Scenario::Projector(args) => projector::run(settings, args).await,
        Scenario::PushLatency(args) => push_latency::run(settings, args).await,
        Scenario::Queries(args) => queries::run(settings, args).await,
        Scenario::Replay(args) => replay::run(settings, args).await,
        Scenario::All(args) => all(settings, args).await,
    }
}

/// `url` with its database name replaced; plain libpq syntax, so pgbench can use it too.
pub fn with_database(url: &str, database: &str) -> String {
    let (head, query) = url
        .split_once('?')
        .map_or((url, None), |(h, q)| (h, Some(q)));
    let authority_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority_end..].find('/') {
        Some(slash) => &head[..authority_end + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

async fn admin(base: &PgConnectOptions) -> anyhow::Result<sqlx::PgConnection> {
    Ok(base.clone().database("postgres").connect().await?)
}

pub async fn recreate_database(base: &PgConnectOptions, name: &str) -> anyhow::Result<()> {
    let mut conn = admin(base).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub async fn drop_database(base: &PgConnectOptions, name: &str) -> anyhow::Result<()> {
    let mut conn = admin(base).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Registers a client for `user` of tenant `bench` and returns an access token from the running
/// gateway at `base_url`, as a load generator's user would obtain one.
pub async fn token(
    http: &reqwest::Client,
    base_url: &str,
    pool: &sqlx::PgPool,
    user: &str,
    scopes: &[chat4all_gateway::auth::Scope],
) -> anyhow::Result<String> {
    use anyhow::Context;
    let client = chat4all_gateway::auth::create_client(
        pool,
        &chat4all_domain::TenantId::parse("bench")?,
        &chat4all_domain::UserId::parse(user)?,
        scopes,
    )
    .await?;
    let answer: serde_json::Value = http
        .post(format!("{base_url}/auth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.as_str()),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(answer["access_token"]
        .as_str()
        .context("the token endpoint answered without an access_token")?
        .to_owned())
}

/// Creates a group of `members` through the API at `base_url`; returns its id.
pub async fn create_group(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    members: &[String],
) -> anyhow::Result<String> {
    use anyhow::Context;
    let created: serde_json::Value = http
        .post(format!("{base_url}/v1/conversations"))
        .bearer_auth(token)
        .json(&serde_json::json!({"type": "group", "name": "bench", "members": members}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(created["conversation_id"]
        .as_str()
        .context("the answer has no conversation_id")?
        .to_owned())
}

/// A role of this binary running as a process of its own, killed when dropped.
pub struct RoleProcess {
    pub child: tokio::process::Child,
    /// Where a gateway listens.
    pub address: Option<String>,
}

impl RoleProcess {
    /// Starts `chat4all <role>` with `env` on top of this process's environment; a gateway is
    /// waited for until it logs its address. Its log is drained so it never blocks on the pipe.
    pub async fn start(role: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        use anyhow::Context;
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg(role)
            .envs(env.iter().copied())
            .env("CHAT4ALL_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,chat4all_gateway=info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut logs = tokio::io::BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let mut address = None;
        if role == "gateway" {
            address = Some(loop {
                let line =
                    tokio::time::timeout(std::time::Duration::from_secs(30), logs.next_line())
                        .await
                        .context("the gateway did not start")??
                        .context("the gateway exited")?;
                let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if let Some(address) = entry["fields"]["address"].as_str() {
                    break address.to_owned();
                }
            });
        }
        tokio::spawn(async move { while let Ok(Some(_)) = logs.next_line().await {} });
        Ok(Self { child, address })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        use anyhow::Context;
        self.child.id().context("the process has exited")
    }
}
