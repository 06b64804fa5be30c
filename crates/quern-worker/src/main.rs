//! `quern-worker`: parse the configuration, set up logging, run until SIGTERM or ctrl-c.

use std::process::ExitCode;

use clap::Parser;
use quern_worker::{signals, telemetry, WorkerConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = WorkerConfig::parse();
    telemetry::init(config.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(signals::cancel_on_signals(shutdown.clone()));
    match quern_worker::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("quern-worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}
