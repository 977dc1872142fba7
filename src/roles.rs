//! Each role of the engine built from settings, so `serve` and the single-role commands start
//! exactly the same things.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use chat4all_gateway::Application;
use chat4all_platform::health::{Dependency, Readiness};
use chat4all_platform::Settings;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::{Filter, Reply};

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
