//! A real OpenAI-compatible embedding server with deterministic lexical vectors, for demos, tests and benchmarks.
//!
//! Map of the crate:
//! - [`embedding`]: the hashing embedder ([`embed_text`]) that tests elsewhere can call directly.
//! - [`config`]: [`FakeEmbedderConfig`], the latency, fault and limit knobs, and the ways self-hosted servers
//!   differ (one request computed at a time, floats only, a key refused for a while).
//! - [`stats`]: [`Stats`] counters, also served as `GET /stats`.
//! - `server`: the axum routes and fault injection.
//! - this file: [`bind`] / [`FakeEmbedder::serve`] for callers that manage the server's life,
//!   and [`spawn`] for tests that just want a running server.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = quern_fake_embedder::spawn(Default::default()).await?;
//! let base_url = server.url(); // "http://127.0.0.1:PORT"; POST {base_url}/v1/embeddings
//! # let _ = base_url;
//! assert_eq!(server.stats().snapshot().requests, 0);
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod embedding;
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

pub use config::{FakeEmbedderConfig, InvalidConfig};
pub use embedding::{embed_into, embed_text};
pub use stats::{Stats, StatsSnapshot};

use server::AppState;

/// A bound, not yet serving, fake embedder: the port is known, requests wait in the backlog.
#[derive(Debug)]
pub struct FakeEmbedder {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
}

/// Validates `config` and binds `addr` (`"127.0.0.1:0"` for an ephemeral port, or a
/// `(host, port)` tuple). Serve with [`FakeEmbedder::serve`].
///
/// An invalid config is an [`io::ErrorKind::InvalidInput`] error wrapping [`InvalidConfig`].
pub async fn bind(addr: impl ToSocketAddrs, config: FakeEmbedderConfig) -> io::Result<FakeEmbedder> {
    config.validate().map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    Ok(FakeEmbedder { listener, local_addr, state: Arc::new(AppState::new(config)) })
}

impl FakeEmbedder {
    /// The bound address, with the real port when bound to port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL, without `/v1`: `"http://127.0.0.1:PORT"`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The configuration in force.
    pub fn config(&self) -> &FakeEmbedderConfig {
        &self.state.config
    }

    /// Live counters; keep the `Arc` to read them while and after the server runs.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.state.stats)
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        // Responses are written in one go and then the client waits; without NODELAY a
        // response's tail could sit in Nagle's buffer until the client's delayed ACK.
        let listener = self.listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, server::router(self.state)).with_graceful_shutdown(shutdown).await
    }
}

/// A fake embedder serving on a background task, for tests. Dropping it stops the server
/// (without waiting); [`RunningFakeEmbedder::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct RunningFakeEmbedder {
    local_addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

/// Binds `127.0.0.1:0` and serves on a spawned task. Must be called inside a Tokio runtime.
pub async fn spawn(config: FakeEmbedderConfig) -> io::Result<RunningFakeEmbedder> {
    spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
}

/// [`spawn`] on a chosen address, e.g. to replace a stopped embedder on the same port with other settings.
pub async fn spawn_at(addr: SocketAddr, config: FakeEmbedderConfig) -> io::Result<RunningFakeEmbedder> {
    let server = bind(addr, config).await?;
    let local_addr = server.local_addr();
    let stats = server.stats();
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone().cancelled_owned();
    let task = tokio::spawn(server.serve(signal));
    Ok(RunningFakeEmbedder { local_addr, stats, shutdown, task: Some(task) })
}

impl RunningFakeEmbedder {
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

impl Drop for RunningFakeEmbedder {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
