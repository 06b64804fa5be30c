//! A local embedding model behind the OpenAI-compatible `/v1/embeddings` API: sentence-transformers'
//! all-MiniLM-L6-v2 (384 dimensions) on the CPU, in Rust (candle, Hugging Face's tokenizer), no Python.
//!
//! Map of the crate:
//! - [`model`]: [`Embedder`], the model loaded from its directory (`scripts/fetch-model.sh` puts it in
//!   [`default_model_dir`]); callable directly, without the server.
//! - `bert`: the BERT encoder on candle, with two steps of its own in `kernels`; [`batching`]: texts grouped by
//!   length into forward passes.
//! - `pool`: admission (a bound on queued inputs, `503` beyond it) and the inference threads.
//! - `server`: the routes (the response body is `quern_embed::wire::render_response`); [`stats`]: counters, also
//!   `GET /stats`.
//! - [`config`]: [`EmbedderConfig`]; [`error`]: [`ModelError`], [`EmbedError`].
//! - this file: [`bind`] / [`EmbedderServer::serve`] for callers that manage the server's life, and [`spawn`] /
//!   [`spawn_at`] / [`spawn_with`] for tests that just want a running server (as `quern-fake-embedder` has them).
//!
//! **Threads, not bigger batches.** A forward pass is a chain of matrix products and element-wise steps. candle can
//! split each step over the cores (its default), but the steps are small (a few hundred tokens × 384), so the
//! threads spend much of their time meeting at barriers, spinning while they wait. One thread per pass and one pass
//! per core does no meeting: on the 2-core development machine two single-threaded workers gave clearly more
//! embeddings per second than one pass on two threads (the README has the figures, from
//! `cargo run --release -p quern-embedder --example model_speed`). So the binary calls [`set_threads_per_pass`]
//! with 1 and starts one worker per core; a request's groups spread over the workers, so a big request still uses
//! every core. Batches are kept small for the same reason: past a few texts of ~200 tokens, a bigger pass is slower
//! per text (its attention scores no longer fit the caches).
//!
//! ```no_run
//! # async fn demo() -> Result<(), quern_embedder::StartError> {
//! let server = quern_embedder::spawn(Default::default()).await?; // loads the model from the default directory
//! let base_url = server.url(); // "http://127.0.0.1:PORT"; POST {base_url}/v1/embeddings
//! # let _ = base_url;
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod batching;
mod bert;
pub mod config;
pub mod error;
mod kernels;
pub mod model;
mod pool;
mod server;
pub mod stats;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{default_model_dir, EmbedderConfig, InvalidConfig};
pub use error::{EmbedError, ModelError};
pub use model::Embedder;
pub use stats::{Stats, StatsSnapshot};

use pool::Pool;
use server::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is out of range.
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    /// The model directory cannot be served (missing: run `bash scripts/fetch-model.sh`).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The address cannot be bound, or the worker threads cannot be started.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How many threads candle uses for each step of a forward pass (its `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS`,
/// which it reads at every matrix product and when it builds its thread pool).
///
/// Call it first in `main`, before any other thread exists: changing the environment while another thread reads it
/// is undefined behaviour in glibc. Tests and other libraries leave it alone; the pool works either way, its workers
/// then sharing candle's threads.
pub fn set_threads_per_pass(threads: usize) {
    let threads = threads.max(1).to_string();
    std::env::set_var("RAYON_NUM_THREADS", &threads);
    std::env::set_var("CANDLE_NUM_THREADS", &threads);
}

/// A bound, not yet serving, embedder with its model loaded: the port is known, requests wait in the backlog.
#[derive(Debug)]
pub struct EmbedderServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
}

/// Validates `config`, loads the model from `config.model_dir` and binds `addr` (`"127.0.0.1:0"` for an ephemeral
/// port, or a `(host, port)` tuple). Serve with [`EmbedderServer::serve`].
pub async fn bind(addr: impl ToSocketAddrs, config: EmbedderConfig) -> Result<EmbedderServer, StartError> {
    config.validate()?;
    let dir = config.model_dir.clone();
    let embedder = tokio::task::spawn_blocking(move || Embedder::load(&dir)).await.map_err(io::Error::other)??;
    bind_with(addr, config, Arc::new(embedder)).await
}

/// [`bind`] with a model already loaded (`config.model_dir` is then ignored), e.g. one shared by many test servers.
pub async fn bind_with(
    addr: impl ToSocketAddrs,
    config: EmbedderConfig,
    embedder: Arc<Embedder>,
) -> Result<EmbedderServer, StartError> {
    config.validate()?;
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let pool = Pool::start(
        Arc::clone(&embedder),
        config.workers,
        config.max_queued_inputs,
        config.tokens_per_batch,
        Arc::clone(&stats),
    )?;
    let state = AppState { model_id: config.model_id, max_batch: config.max_batch, embedder, pool, stats };
    Ok(EmbedderServer { listener, local_addr, state: Arc::new(state) })
}

impl EmbedderServer {
    /// The bound address, with the real port when bound to port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL, without `/v1`: `"http://127.0.0.1:PORT"`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The model served.
    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.state.embedder
    }

    /// Live counters; keep the `Arc` to read them while and after the server runs.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.state.stats)
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish and returns. The
    /// worker threads end after their current pass once the last request is answered.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        // An answer is written in one go and then the client waits: no Nagle delay on its tail.
        let listener = self.listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, server::router(self.state)).with_graceful_shutdown(shutdown).await
    }
}

/// An embedder serving on a background task, for tests. Dropping it stops the server (without waiting);
/// [`RunningEmbedder::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct RunningEmbedder {
    local_addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

/// Loads the model, binds `127.0.0.1:0` and serves on a spawned task. Must be called inside a Tokio runtime.
pub async fn spawn(config: EmbedderConfig) -> Result<RunningEmbedder, StartError> {
    spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
}

/// [`spawn`] on a chosen address.
pub async fn spawn_at(addr: SocketAddr, config: EmbedderConfig) -> Result<RunningEmbedder, StartError> {
    Ok(start(bind(addr, config).await?))
}

/// [`spawn`] with a model already loaded, on `127.0.0.1:0`: tests share one copy instead of loading 90 MB each.
pub async fn spawn_with(config: EmbedderConfig, embedder: Arc<Embedder>) -> Result<RunningEmbedder, StartError> {
    Ok(start(bind_with(SocketAddr::from(([127, 0, 0, 1], 0)), config, embedder).await?))
}

fn start(server: EmbedderServer) -> RunningEmbedder {
    let local_addr = server.local_addr();
    let stats = server.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(shutdown.clone().cancelled_owned()));
    RunningEmbedder { local_addr, stats, shutdown, task: Some(task) }
}

impl RunningEmbedder {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL, without `/v1`: `"http://127.0.0.1:PORT"`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Live counters; keep the `Arc` to read them after the server stops.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// A token that stops the server when cancelled, e.g. to tie it to a wider test shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, waits for in-flight requests to finish, and returns the serve result.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningEmbedder {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
