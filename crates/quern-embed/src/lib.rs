//! Quern's embedding adapter: an OpenAI-compatible `/v1/embeddings` client and the one pool every job shares.
//!
//! - [`client`]: one HTTP request per batch, with its answer checked (count, index order, dimension);
//! - [`pool`]: splits a document's chunks into batches and runs them concurrently through ONE semaphore
//!   per process, so neither a huge document nor a flood of small ones exceeds the in-flight bound;
//!   `request` is one shared request's life (retries, timeouts resent once the provider caught up, refusals
//!   split down to the refused input);
//! - [`provider`]: whether the provider takes requests at all; while it refuses every one, requests are held
//!   back and it is probed until it answers;
//! - [`limit`]: the adaptive concurrency limit (AIMD that also backs off when latency shows queueing), pure
//!   arithmetic, with [`latency`] keeping the baselines; `permits` makes the semaphore follow it;
//! - [`budget`]: per-minute request and token budgets, as token buckets;
//! - [`retry`]: exponential backoff for transient failures, the only place the `backoff` crate is named;
//! - [`wire`]: the request and response bodies, shared with the fake embedder;
//! - [`error`]: [`EmbedError`], which knows whether retrying can help and whose fault it is ([`error::Blame`]),
//!   reading providers' refusals with [`refusal`].

pub mod budget;
pub mod client;
pub mod error;
pub mod latency;
pub mod limit;
mod permits;
pub mod pool;
pub mod provider;
pub mod refusal;
mod request;
pub mod retry;
#[cfg(test)]
mod simulation;
pub mod wire;

pub use client::{EmbeddingClient, EmbeddingClientConfig};
pub use error::{Blame, EmbedError};
pub use pool::{EmbeddingPool, PoolConfig};
pub use provider::Availability;
pub use retry::RetryPolicy;
pub use wire::VectorEncoding;
