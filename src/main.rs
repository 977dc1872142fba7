//! `chat4all`: one binary, every role of the engine (see `chat4all --help`).
#![forbid(unsafe_code)]

mod cli;
mod roles;

use clap::Parser;

/// glibc's allocator keeps an arena per thread and returns little of it: a gateway holding
/// 10,000 sockets grew by 140 KiB per socket under it, against about 13 KiB with one arena.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
