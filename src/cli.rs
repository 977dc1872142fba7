//! The operator interface: subcommands, their arguments, and the wiring of each role.

use std::path::PathBuf;

use anyhow::Context;
use chat4all_domain::{TenantId, UserId};
use chat4all_gateway::auth::{create_client, Scope};

use crate::roles;
use chat4all_platform::health::Dependency;
use chat4all_platform::lifecycle::{self, RoleState};
use chat4all_platform::{shutdown_on_signals, Settings};
use chat4all_projections::Projector;
use chat4all_relay::Relay;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "chat4all",
    version,
    about = "Chat4All: an event-sourced messaging engine"
)]
pub struct Cli {
    /// A TOML settings file (also `CHAT4ALL_CONFIG`); the environment overrides it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    operation: Operation,
}

#[derive(Debug, Subcommand)]
enum Operation {
    /// Apply every database migration (idempotent; creates the database if it is missing).
    Migrate,
    /// Run every role of the engine in one process.
    Serve {
        /// Apply migrations before starting.
        #[arg(long)]
        migrate: bool,
    },
    /// Run the HTTP gateway only.
    Gateway,
    /// Run the relay only (event store to Kafka); one leads per deployment, others stand by.
    Relay {
        #[command(subcommand)]
        action: Option<RelayAction>,
    },
    /// Run a projector only (Kafka to read models); several share the topic's partitions.
    Project,
    /// Rebuild read models from the event store and swap them in, while the projector runs.
    Replay {
        /// The projection to rebuild: `read_models` (every query model) or `all`.
        #[arg(long)]
        projection: String,
    },
    /// Manage OAuth clients.
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Manage the keys that sign access tokens.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Measure the engine against this machine's raw limits.
    Bench {
        #[command(subcommand)]
        scenario: chat4all_bench::Scenario,
    },
}

#[derive(Debug, Subcommand)]
enum RelayAction {
    /// After restoring the store into a new cluster: move the checkpoint to just after the event
    /// at this position (0: publish everything again), as the new cluster's transaction ids differ.
    Rebase {
        #[arg(long)]
        after_position: i64,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Sign with a new Ed25519 key once every instance knows it; the replaced key keeps
    /// verifying until every token it signed has expired.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum ClientsCommand {
    /// Register a client acting as USER in TENANT; prints its secret once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        /// Space-separated: any of read, write, audit, admin.
        #[arg(long, default_value = "read write")]
        scopes: String,
        /// Print the credentials as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    match cli.operation {
        Operation::Migrate => migrate(&settings).await,
        Operation::Serve { migrate: first } => {
            if first {
                migrate(&settings).await?;
            }
            serve(&settings).await
        }
        Operation::Gateway => roles::gateway(&settings, Vec::new(), shutdown_on_signals()).await,
        Operation::Relay {
            action: Some(RelayAction::Rebase { after_position }),
        } => {
            let pool = settings.database.connect().await?;
            let checkpoint =
                chat4all_relay::rebase(&pool, &settings.topic_prefix, after_position).await?;
            println!(
                "relay checkpoint of {} is now transaction {}, position {}",
                settings.topic_prefix, checkpoint.tx_id, checkpoint.position
            );
            Ok(())
        }
        Operation::Relay { action: None } => {
            let stop = shutdown_on_signals();
            let relay = Relay::from_settings(&settings)?;
            let uses = &[Dependency::Postgres, Dependency::Kafka];
            let ops = serve_ops(&settings, uses, vec![relay.role()], &stop);
            relay.run(stop).await;
            ops.await??;
            Ok(())
        }
        Operation::Project => {
            let stop = shutdown_on_signals();
            let projector = Projector::from_settings(&settings).await?;
            // Redis too: without it the read models are built but nothing is pushed.
            let uses = &[Dependency::Postgres, Dependency::Kafka, Dependency::Redis];
            let ops = serve_ops(&settings, uses, vec![projector.role()], &stop);
            projector.run(stop).await;
            ops.await??;
            Ok(())
        }
        Operation::Clients {
            command:
                ClientsCommand::Create {
                    tenant,
                    user,
                    scopes,
                    json,
                },
        } => clients_create(&settings, &tenant, &user, &scopes, json).await,
        Operation::Keys {
            command: KeysCommand::Rotate,
        } => rotate_keys(&settings).await,
        Operation::Bench { scenario } => chat4all_bench::run(&settings, scenario).await,
        Operation::Replay { projection } => replay(&settings, &projection).await,
    }
}

/// Applies the migrations, first creating the database itself when the server lacks it.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    chat4all_eventstore::migrate(&settings.database)
        .await
        .context("applying migrations")?;
    Ok(())
}

/// The role's own `/health`, `/ready` and `/metrics`, beside the role, until `stop`.
fn serve_ops(
    settings: &Settings,
    uses: &'static [Dependency],
    roles: Vec<RoleState>,
    stop: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let (settings, stop) = (settings.clone(), stop.clone());
    tokio::spawn(async move {
        lifecycle::serve_ops(&settings, uses, roles, stop).await?;
        Ok(())
    })
}

/// Every role in one process; when one fails, the others are stopped too.
async fn serve(settings: &Settings) -> anyhow::Result<()> {
    let stop = shutdown_on_signals();
    let relay = Relay::from_settings(settings)?;
    let projector = Projector::from_settings(settings).await?;
    let others = vec![relay.role(), projector.role()];
    let relay = tokio::spawn(relay.run(stop.clone()));
    let projector = tokio::spawn(projector.run(stop.clone()));
    let result = roles::gateway(settings, others, stop.clone()).await;
    stop.cancel();
    relay.await?;
    projector.await?;
    result
}

async fn replay(settings: &Settings, projection: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(projection, "all" | "read_models"),
        "--projection: unknown projection {projection:?} (known: read_models, all)"
    );
    let pool = settings.database.connect().await?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} events  {per_sec}  ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    let applied = chat4all_projections::replay::rebuild(&pool, |p| {
        bar.set_length(p.total.max(p.applied));
        bar.set_position(p.applied);
    })
    .await?;
    bar.finish();
    println!("rebuilt the read models from {applied} events and swapped them in");
    Ok(())
}

async fn rotate_keys(settings: &Settings) -> anyhow::Result<()> {
    let pool = settings.database.connect().await?;
    // Instances sign with the old key until their next refresh, and its tokens live a full TTL.
    let verify_for = settings.auth.access_token_ttl_secs
        + chat4all_gateway::KEY_REFRESH.as_secs()
        + chat4all_gateway::auth::LEEWAY_SECS;
    // Every instance reloads the new key before it signs anything.
    let activate_in = chat4all_gateway::KEY_REFRESH.as_secs() + 10;
    let (kid, retired) = chat4all_gateway::auth::rotate_key(&pool, activate_in, verify_for).await?;
    println!("new key:       {kid} (signs in {activate_in} s)");
    for old in retired {
        println!("retiring:      {old} (signs {activate_in} s more, then verifies {verify_for} s)");
    }
    Ok(())
}

async fn clients_create(
    settings: &Settings,
    tenant: &str,
    user: &str,
    scopes: &str,
    json: bool,
) -> anyhow::Result<()> {
    let tenant = TenantId::parse(tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let user = UserId::parse(user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    let scopes =
        Scope::parse_list(scopes).map_err(|s| anyhow::anyhow!("--scopes: unknown scope {s:?}"))?;
    anyhow::ensure!(
        !scopes.is_empty(),
        "--scopes: at least one scope is required"
    );
    let pool = settings.database.connect().await?;
    let client = create_client(&pool, &tenant, &user, &scopes).await?;
    if json {
        println!("{}", serde_json::to_string(&client)?);
    } else {
        println!("client_id:     {}", client.client_id);
        println!("client_secret: {}   (shown only now)", client.client_secret);
        println!("tenant_id:     {}", client.tenant_id);
        println!("user_id:       {}", client.user_id);
        println!("scopes:        {}", client.scopes.join(" "));
    }
    Ok(())
}
