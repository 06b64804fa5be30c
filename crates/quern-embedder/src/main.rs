//! `quern-embedder`: parse flags, pin candle to one thread per pass, load the model, announce the address, serve
//! until SIGTERM or ctrl-c.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use quern_embedder::config::{
    default_workers, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUED_INPUTS, DEFAULT_MODEL_ID, DEFAULT_PORT,
    DEFAULT_TOKENS_PER_BATCH,
};
use quern_embedder::{EmbedderConfig, StartError};

/// OpenAI-compatible embedding server (POST /v1/embeddings) running all-MiniLM-L6-v2 on the CPU,
/// plus GET /v1/models, GET /healthz and GET /stats.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The model directory [default: ${XDG_CACHE_HOME:-$HOME/.cache}/quern/models/all-MiniLM-L6-v2, where
    /// `bash scripts/fetch-model.sh` puts it].
    #[arg(long, env = "QUERN_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// The model id served; requests naming another get 404 model_not_found.
    #[arg(long, default_value = DEFAULT_MODEL_ID)]
    model_id: String,
    /// Forward passes run at once, one per worker thread [default: the number of cores].
    #[arg(long, value_parser = parse_positive)]
    workers: Option<usize>,
    /// Threads candle uses inside one forward pass; 1 with one worker per core gives the most embeddings per second.
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    threads_per_pass: usize,
    /// Most inputs per request; more gets 400. At most --max-queued-inputs.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH, value_parser = parse_positive)]
    max_batch: usize,
    /// Most inputs admitted at once, queued or being embedded; a request beyond gets 503 with Retry-After at once.
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUED_INPUTS, value_parser = parse_positive)]
    max_queued_inputs: usize,
    /// Padded tokens per forward pass (texts are grouped by length up to it).
    #[arg(long, default_value_t = DEFAULT_TOKENS_PER_BATCH, value_parser = parse_positive)]
    tokens_per_batch: usize,
}

fn parse_positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("must be a whole number of at least 1, got {value}")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Before the runtime starts any thread: candle reads this from the environment (see the function's docs).
    quern_embedder::set_threads_per_pass(args.threads_per_pass);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, with its causes: the missing-model message says what to run.
            eprintln!("quern-embedder: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = EmbedderConfig {
        model_dir: args.model_dir.unwrap_or_else(quern_embedder::default_model_dir),
        model_id: args.model_id,
        workers: args.workers.unwrap_or_else(default_workers),
        max_batch: args.max_batch,
        max_queued_inputs: args.max_queued_inputs,
        tokens_per_batch: args.tokens_per_batch,
    };
    tracing::info!(?config, threads_per_pass = args.threads_per_pass, "starting");
    let (model_id, workers) = (config.model_id.clone(), config.workers);
    let server = match quern_embedder::bind((args.host.as_str(), args.port), config).await {
        Ok(server) => server,
        Err(err @ StartError::Io(_)) => {
            return Err(anyhow::Error::new(err).context(format!("cannot serve on {}:{}", args.host, args.port)))
        }
        // The model's and the config's messages say all, the missing model's what to run.
        Err(err) => return Err(err.into()),
    };
    // Scripts wait for this exact line; stdout is line-buffered, so it is flushed at once.
    println!(
        "quern-embedder listening on {} (model {model_id}, dim {}, {workers} workers)",
        server.url(),
        server.embedder().dim()
    );
    server.serve(shutdown_signal()).await.context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM (what `docker stop` and `kill` send).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            },
            Err(err) => {
                tracing::warn!(%err, "cannot watch SIGTERM; only ctrl-c stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received, finishing in-flight requests");
}
