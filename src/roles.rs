//! Each role of the engine built from settings, so `serve` and the single-role commands start
//! exactly the same things.

use anyhow::Context;
use chat4all_gateway::Application;
use chat4all_platform::Settings;
use tokio_util::sync::CancellationToken;

pub async fn gateway(settings: &Settings, stop: CancellationToken) -> anyhow::Result<()> {
    let app = Application::build(settings)
        .await
        .context("starting the gateway")?;
    app.run_until_stopped(stop).await;
    Ok(())
}
