//! `quern-fake-embedder`: parse flags, bind, announce the address on stdout, serve until SIGTERM or ctrl-c.

use anyhow::Context;
use clap::Parser;
use quern_fake_embedder::config::{DEFAULT_DIM, DEFAULT_MAX_BATCH, DEFAULT_PORT};
use quern_fake_embedder::FakeEmbedderConfig;

/// OpenAI-compatible embedding server (POST /v1/embeddings) with deterministic lexical vectors,
/// plus GET /healthz and GET /stats (counters, JSON).
///
/// Behaving like a 2-core CPU server that computes one 32-chunk request at a time in 2.5 s, speaks floats only,
/// and whose key is refused for its first 20 s:
/// `quern-fake-embedder --serial --latency-ms 2500 --refuse-base64 --unauthorized-for-secs 20`
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Dimension of every vector, at least 1.
    #[arg(long, default_value_t = DEFAULT_DIM,
          value_parser = parse_positive)]
    dim: usize,
    /// Delay added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Extra random delay per request, uniform in 0..=N milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Fraction (0..=1) of requests answered 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, allow_negative_numbers = true)]
    error_rate: f64,
    /// Fraction (0..=1) of requests answered 429 with Retry-After: 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, allow_negative_numbers = true)]
    throttle_rate: f64,
    /// Most inputs per request, at least 1; more gets 400.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH,
          value_parser = parse_positive)]
    max_batch: usize,
    /// Most requests in flight; extra ones get 429 with Retry-After: 1 at once. 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    max_concurrency: usize,
    /// Most characters of input per request (0 = unlimited); more gets 413, like a per-request token limit.
    #[arg(long, default_value_t = 0)]
    max_request_chars: usize,
    /// Answer 400 to any request with an input containing this text (a content policy). Default: none.
    #[arg(long)]
    reject_marker: Option<String>,
    /// Compute one request at a time, like a CPU server: the others wait in order, and a request whose client
    /// gave up is still computed in its turn (counted as `abandoned` in /stats). With --latency-ms, each takes
    /// that long once its turn comes.
    #[arg(long)]
    serial: bool,
    /// Refuse `encoding_format: "base64"` with 400 `encoding_format "base64" is not supported; use "float"`, like
    /// servers that speak floats only.
    #[arg(long)]
    refuse_base64: bool,
    /// Answer 401 (OpenAI's `invalid_api_key` error) to every embedding request for this many seconds after
    /// start, then serve normally: a key revoked, then restored. 0 = never.
    #[arg(long, default_value_t = 0)]
    unauthorized_for_secs: u64,
}

fn parse_positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("must be a whole number of at least 1, got {value}")),
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("must be a fraction within 0..=1, got {value}"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = FakeEmbedderConfig {
        dim: args.dim,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        error_rate: args.error_rate,
        throttle_rate: args.throttle_rate,
        max_batch: args.max_batch,
        max_concurrency: args.max_concurrency,
        max_request_chars: args.max_request_chars,
        reject_marker: args.reject_marker,
        serial: args.serial,
        refuse_base64: args.refuse_base64,
        unauthorized_for_secs: args.unauthorized_for_secs,
    };
    tracing::info!(?config, "starting");
    let server = quern_fake_embedder::bind((args.host.as_str(), args.port), config)
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    // Scripts wait for this exact line; stdout is line-buffered, so it is flushed at once.
    println!("quern-fake-embedder listening on {} (dim {})", server.url(), args.dim);
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
