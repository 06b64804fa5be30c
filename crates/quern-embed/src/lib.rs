//! Quern's embedding adapter: an OpenAI-compatible `/v1/embeddings` client and the one pool every job shares.
//!
//! - [`client`]: one HTTP request per batch, with its answer checked (count, index order, dimension);
//! - [`pool`]: splits a document's chunks into batches and runs them concurrently through ONE semaphore
//!   per process, so neither a huge document nor a flood of small ones exceeds the in-flight bound;
//! - [`limit`]: the adaptive concurrency limit (AIMD), pure arithmetic; `permits` makes the semaphore follow it;
//! - [`budget`]: per-minute request and token budgets, as token buckets;
//! - [`retry`]: exponential backoff for transient failures, the only place the `backoff` crate is named;
//! - [`wire`]: the request and response bodies, shared with the fake embedder;
//! - [`error`]: [`EmbedError`], which knows whether retrying can help.

pub mod budget;
pub mod client;
pub mod error;
pub mod limit;
mod permits;
pub mod pool;
pub mod retry;
pub mod wire;

pub use client::{EmbeddingClient, EmbeddingClientConfig};
pub use error::EmbedError;
pub use pool::{EmbeddingPool, PoolConfig};
pub use retry::RetryPolicy;
pub use wire::VectorEncoding;
