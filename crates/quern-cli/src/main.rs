//! `quern`: the operator's and producer's command line (migrate, enqueue, status, search, delete, dlq, index, prune, shadow, console).

mod cli;
mod commands;
mod documents;
mod output;
mod retry;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::load();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=off"));
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org): not in a redirected log.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    match commands::run(cli).await {
        Ok(code) => code,
        // The reader of stdout went away (`quern status | head`): it has what it wanted, so no message.
        Err(error) if output::is_closed(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quern: {error:#}");
            ExitCode::FAILURE
        }
    }
}
