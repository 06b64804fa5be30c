//! The one embedding pool of a process: batching, a shared in-flight bound, concurrent batches per document.

use std::sync::Arc;

use futures::future::try_join_all;
use quern_core::metric_names;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::retry::{retry_transient, RetryPolicy};
use crate::{EmbedError, EmbeddingClient};

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Inputs per request.
    pub batch_size: usize,
    /// Requests in flight at once across every job of the process.
    pub max_in_flight: usize,
    /// Retries of each request.
    pub retry: RetryPolicy,
}

/// Embeds texts in batches through one semaphore shared by every job in the process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddingPool {
    client: EmbeddingClient,
    permits: Arc<Semaphore>,
    config: PoolConfig,
}

impl EmbeddingPool {
    /// A pool with `config.max_in_flight` permits.
    pub fn new(client: EmbeddingClient, config: PoolConfig) -> EmbeddingPool {
        let config =
            PoolConfig { batch_size: config.batch_size.max(1), max_in_flight: config.max_in_flight.max(1), ..config };
        metrics::gauge!(metric_names::EMBEDDING_PERMITS).set(config.max_in_flight as f64);
        EmbeddingPool { client, permits: Arc::new(Semaphore::new(config.max_in_flight)), config }
    }

    /// The underlying client (model name, dimension).
    pub fn client(&self) -> &EmbeddingClient {
        &self.client
    }

    /// Requests that may run at once.
    pub fn max_in_flight(&self) -> usize {
        self.config.max_in_flight
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.config.max_in_flight - self.permits.available_permits()
    }

    /// Embeds every text; vectors come back in text order. The batches run concurrently, each holding one
    /// permit only while its request is on the wire (not while it backs off), so one document cannot hold
    /// more than the pool and a waiting retry blocks nobody.
    pub async fn embed_all(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let batches = texts.chunks(self.config.batch_size).map(|batch| self.embed_one_batch(batch));
        let answers = try_join_all(batches).await?;
        Ok(answers.into_iter().flatten().collect())
    }

    async fn embed_one_batch(&self, batch: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        retry_transient(&self.config.retry, || async {
            let permit = self.permits.acquire().await.expect("the pool never closes its semaphore");
            metrics::gauge!(metric_names::EMBEDDING_PERMITS_IN_USE).set(self.in_flight() as f64);
            let started = Instant::now();
            let answer = self.client.embed_batch(batch).await;
            let outcome = match &answer {
                Ok(_) => "ok",
                Err(EmbedError::Status { status: 429, .. }) => "429",
                Err(EmbedError::Status { status: 500..=599, .. }) => "5xx",
                Err(EmbedError::Status { .. }) => "4xx",
                Err(EmbedError::Timeout(_)) => "timeout",
                Err(_) => "error",
            };
            metrics::histogram!(metric_names::EMBEDDING_REQUEST_SECONDS, "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!(metric_names::EMBEDDING_REQUEST_INPUTS).record(batch.len() as f64);
            drop(permit);
            metrics::gauge!(metric_names::EMBEDDING_PERMITS_IN_USE).set(self.in_flight() as f64);
            answer
        })
        .await
    }
}
