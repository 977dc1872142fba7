//! Each role of the engine built from settings, so `serve` and the single-role commands start
//! exactly the same things.

use anyhow::Context;
use chat4all_gateway::Application;
use chat4all_platform::lifecycle::RoleState;
use chat4all_platform::Settings;
use tokio_util::sync::CancellationToken;

/// The gateway; `others` are the states of the other roles of this process, which its `/health`
/// and `/ready` report too.
pub async fn gateway(
    settings: &Settings,
    others: Vec<RoleState>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = Application::build_with_roles(settings, others)
        .await
        .context("starting the gateway")?;
    app.run_until_stopped(stop).await;
    Ok(())
}
