//! `chat4all bench`: each scenario measures the engine and, in the same run, the raw limit of the
//! machine it runs on, and reports their ratio, so figures compare across machines.

mod connections;
mod ingest;
mod projector;
mod queries;
mod relay;
mod replay;

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
    /// Projector throughput on a backlog against a raw consumer of the same topic.
    Projector(projector::ProjectorArgs),
    /// Query latency through the HTTP API on large read models.
    Queries(queries::QueriesArgs),
    /// Rebuilding the read models from the store against a sequential read of the same events.
    Replay(replay::ReplayArgs),
}

pub async fn run(settings: &Settings, scenario: Scenario) -> anyhow::Result<()> {
    match scenario {
        Scenario::Ingest(args) => ingest::run(settings, args).await,
        Scenario::Relay(args) => relay::run(settings, args).await,
        Scenario::Connections(args) => connections::run(settings, args).await,
        Scenario::Projector(args) => projector::run(settings, args).await,
        Scenario::Queries(args) => queries::run(settings, args).await,
        Scenario::Replay(args) => replay::run(settings, args).await,
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
