//! `chat4all`: one binary, every role of the engine (see `chat4all --help`).
#![forbid(unsafe_code)]

mod bench;
mod cli;
mod roles;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    chat4all_platform::init_telemetry();
    let cli = cli::Cli::parse();
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
