//! Each role of the engine built from settings, so `serve` and the single-role commands start
//! exactly the same things.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chat4all_gateway::Application;
use chat4all_platform::health::{Dependency, Readiness};
use chat4all_platform::{KafkaSettings, Settings};
use chat4all_projections::{Projector, ProjectorConfig};
use chat4all_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::{Filter, Reply};

/// The relay of this deployment (it leads or stands by on its own).
pub fn relay(settings: &Settings) -> anyhow::Result<Relay> {
    let options = settings.database.connect_options()?;
    let pool = settings.database.pool()?;
    Ok(Relay::new(
        pool,
        options,
        RelayConfig {
            deployment: settings.topic_prefix.clone(),
            topic: KafkaSettings::events_topic(&settings.topic_prefix),
            kafka: settings.kafka.clone(),
            batch_size: settings.relay.batch_size,
            idle_poll: Duration::from_millis(settings.relay.idle_poll_ms),
            delivery_timeout: Duration::from_millis(settings.relay.delivery_timeout_ms),
        },
    ))
}

/// The projector of this deployment (one consumer of the group; start several to share partitions).
pub async fn projector(settings: &Settings) -> anyhow::Result<Projector> {
    let pool = settings.database.pool()?;
    // Without Redis the read models are still built; only live announcements are lost, and
    // subscribers recover those from the read models.
    let redis = match settings.redis.client() {
        Ok(client) => match redis::aio::ConnectionManager::new(client).await {
            Ok(manager) => Some(manager),
            Err(e) => {
                tracing::warn!("Redis unavailable, projecting without announcements: {e}");
                None
            }
        },
        Err(e) => {
            tracing::warn!("REDIS_URL is not usable: {e}");
            None
        }
    };
    Ok(Projector::new(
        pool,
        ProjectorConfig {
            topic: KafkaSettings::events_topic(&settings.topic_prefix),
            group_id: format!("{}-projections", settings.topic_prefix),
            channel_prefix: settings.topic_prefix.clone(),
            kafka: settings.kafka.clone(),
        },
        redis,
    ))
}

pub async fn gateway(settings: &Settings, stop: CancellationToken) -> anyhow::Result<()> {
    let app = Application::build(settings)
        .await
        .context("starting the gateway")?;
    app.run_until_stopped(stop).await;
    Ok(())
}

/// `/metrics`, `/health` and `/ready` for processes that run no gateway; `/ready` asks the
/// dependencies in `uses`.
pub async fn metrics_listener(
    settings: &Settings,
    uses: &[Dependency],
    stop: CancellationToken,
) -> anyhow::Result<()> {
    chat4all_platform::metrics::install();
    let listen = &settings.metrics_listen;
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("metrics_listen {listen:?} is not an address"))?;
    let readiness = Arc::new(Readiness::new(settings.database.pool()?, settings, uses));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {listen} for metrics"))?;
    tracing::info!(address = %listener.local_addr()?, "metrics listening");
    let metrics =
        warp::path!("metrics").map(|| chat4all_platform::metrics::render().into_response());
    let health = warp::path!("health").map(|| String::from("ok").into_response());
    let ready = warp::path!("ready").then(move || {
        let readiness = readiness.clone();
        async move {
            let report = readiness.check().await;
            let status = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&report), status).into_response()
        }
    });
    let upkeep = tokio::spawn(chat4all_platform::metrics::upkeep(stop.clone()));
    let routes = metrics.or(health).unify().or(ready).unify();
    warp::serve(warp::get().and(routes))
        .incoming(listener)
        .graceful(async move { stop.cancelled().await })
        .run()
        .await;
    let _ = upkeep.await;
    Ok(())
}
