//! `quern-worker`: load the configuration (flags > env > file > defaults), set up logging, run until SIGTERM or
//! ctrl-c.

use std::process::ExitCode;

use quern_worker::{config_file, signals, telemetry};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let loaded = match config_file::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(error) => error.exit(),
    };
    if loaded.config.print_config {
        print!("{}", loaded.render());
        return ExitCode::SUCCESS;
    }
    let config = loaded.config;
    let _telemetry = telemetry::init(config.log_format, config.otlp_endpoint.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("quern-worker: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals::cancel_on_signals(shutdown.clone()));
        match quern_worker::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                let message = telemetry::error_chain(error.as_ref());
                tracing::error!("{message}");
                eprintln!("quern-worker: {message}");
                ExitCode::FAILURE
            }
        }
    })
}
