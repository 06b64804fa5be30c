//! `quern`: the operator's and producer's command line (migrate, enqueue, status, search, delete, dlq, index).

mod cli;
mod commands;
mod documents;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=off"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match commands::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("quern: {error:#}");
            ExitCode::FAILURE
        }
    }
}
