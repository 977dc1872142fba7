//! `chat4all bench`: each scenario measures the engine and, in the same run, the raw limit of the
//! machine it runs on, and reports their ratio, so figures compare across machines.

mod ingest;

use chat4all_platform::Settings;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// `POST /v1/messages` throughput and latency against raw single-row INSERT commits.
    Ingest(ingest::IngestArgs),
}

pub async fn run(settings: &Settings, scenario: Scenario) -> anyhow::Result<()> {
    match scenario {
        Scenario::Ingest(args) => ingest::run(settings, args).await,
    }
}
