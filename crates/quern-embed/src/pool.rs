//! The one embedding pool of a process: cross-job batching, a shared in-flight bound, answers routed back.
//!
//! Providers charge latency per request, not per input, so chunks of every job go into shared requests: one
//! dispatcher task takes a permit of the process-wide semaphore, then packs the chunks waiting (up to the batch
//! size, lingering a few milliseconds for more, like Kafka's `linger.ms`), and sends the request in a task of
//! its own. A request leaves full when work is plentiful and at once when it is not; while every permit is in
//! use, chunks pile up and the next request leaves full. Each vector goes back to the job that sent its chunk;
//! a failed request (after its retries) fails only the chunks it carried, and a request refused for its content
//! is split until the refused chunk stands alone, so no job fails for a neighbour's chunk.
//!
//! Requests in flight follow an adaptive limit by default (`limit.rs`, applied by `permits.rs`), fed by every
//! attempt's answer, retries included; optional per-minute request and token budgets (`budget.rs`) make the
//! dispatcher wait before a request leaves. What happens to one request is in `request.rs`; while the provider
//! refuses every request (`provider.rs`), chunks fail at once without a request.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::budget::Budget;
use crate::permits::Permits;
use crate::provider::{Availability, Provider};
use crate::request::{self, Shared};
use crate::retry::RetryPolicy;
use crate::{EmbedError, EmbeddingClient};

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Most inputs per request.
    pub batch_size: usize,
    /// Requests in flight at once across every job of the process (the most, when `adaptive_concurrency`).
    pub max_in_flight: usize,
    /// Let the number of requests in flight adapt between 1 and `max_in_flight` to the provider's answers and
    /// latency (see `limit.rs`); otherwise it is `max_in_flight`. The worker's default.
    pub adaptive_concurrency: bool,
    /// Most requests a minute this process sends (`None`: unlimited); retries are not charged.
    pub max_requests_per_minute: Option<u64>,
    /// Most estimated tokens a minute this process sends (`None`: unlimited); retries are not charged.
    pub max_tokens_per_minute: Option<u64>,
    /// How long a request that is not full waits for more chunks before it leaves.
    pub linger: Duration,
    /// Most estimated tokens per request (a chunk larger than this still goes, alone).
    pub max_batch_tokens: usize,
    /// Characters per token, for the estimate (about 4 for English with OpenAI's tokenizers).
    pub chars_per_token: f64,
    /// Retries of each request.
    pub retry: RetryPolicy,
}

/// One chunk waiting for its vector.
pub(crate) struct Pending {
    pub(crate) text: Box<str>,
    pub(crate) reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

/// Embeds texts in shared batches through one semaphore for the whole process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddingPool {
    client: EmbeddingClient,
    queue: mpsc::UnboundedSender<Pending>,
    provider: Arc<Provider>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("chars", &self.text.len()).finish()
    }
}

impl EmbeddingPool {
    /// A pool with `config.max_in_flight` permits (or an adaptive limit up to it). Starts the dispatcher task, so
    /// call it inside a Tokio runtime; the task ends when the last clone of the pool is dropped.
    pub fn new(client: EmbeddingClient, config: PoolConfig) -> EmbeddingPool {
        let config =
            PoolConfig { batch_size: config.batch_size.max(1), max_in_flight: config.max_in_flight.max(1), ..config };
        let permits = Permits::new(config.max_in_flight, config.adaptive_concurrency);
        let budget = Budget::new(config.max_requests_per_minute, config.max_tokens_per_minute);
        let provider = Provider::new(client.clone(), permits.clone());
        let shared = Arc::new(Shared { client: client.clone(), permits, provider: provider.clone(), config });
        // Unbounded: what waits here is bounded by the jobs in flight (prefetch × chunks per job).
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(waiting, shared, budget));
        EmbeddingPool { client, queue, provider }
    }

    /// The underlying client (model name, dimension).
    pub fn client(&self) -> &EmbeddingClient {
        &self.client
    }

    /// Whether the provider takes requests, now and as it changes: a worker stops taking jobs while it refuses
    /// every request (see `provider.rs`).
    pub fn availability(&self) -> watch::Receiver<Availability> {
        self.provider.subscribe()
    }

    /// Embeds every text; vectors come back in text order. The texts share requests with other jobs' chunks.
    pub async fn embed_all(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut answers = Vec::with_capacity(texts.len());
        for text in texts {
            let (reply, answer) = oneshot::channel();
            self.queue
                .send(Pending { text: (*text).into(), reply })
                .map_err(|_| EmbedError::Internal("the embedding dispatcher has stopped".into()))?;
            answers.push(answer);
        }
        let mut vectors = Vec::with_capacity(texts.len());
        for answer in answers {
            let vector =
                answer.await.map_err(|_| EmbedError::Internal("the embedding dispatcher dropped a chunk".into()))??;
            vectors.push(vector);
        }
        Ok(vectors)
    }
}

/// Packs waiting chunks into requests, one permit per request, each sent once the budget allows. While the
/// provider refuses every request, chunks fail at once instead.
async fn dispatch(mut waiting: mpsc::UnboundedReceiver<Pending>, shared: Arc<Shared>, mut budget: Option<Budget>) {
    let config = shared.config;
    let tokens = |pending: &Pending| estimated_tokens(&pending.text, config.chars_per_token);
    // A chunk that did not fit the last request opens the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match waiting.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        if let Some(held_back) = shared.provider.held_back() {
            let _ = first.reply.send(Err(held_back));
            continue;
        }
        // Waiting for a permit is what fills batches under load: chunks queue up meanwhile.
        let Ok(permit) = shared.permits.acquire().await else { return };
        let mut batch_tokens = tokens(&first);
        let mut batch = vec![first];
        let deadline = Instant::now() + config.linger;
        while batch.len() < config.batch_size {
            let next = match waiting.try_recv() {
                Ok(next) => next,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) if config.linger.is_zero() => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, waiting.recv()).await {
                        Ok(Some(next)) => next,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            if batch_tokens + tokens(&next) > config.max_batch_tokens {
                carried = Some(next);
                break;
            }
            batch_tokens += tokens(&next);
            batch.push(next);
        }
        // Waiting here holds the dispatcher, so the budget paces every request; chunks keep queueing meanwhile.
        if let Some(budget) = &mut budget {
            budget.admit(batch_tokens).await;
        }
        tokio::spawn(request::send(shared.clone(), batch, permit, batch_tokens));
    }
}

/// Tokens a text is estimated to cost: its characters divided by `chars_per_token`, rounded up.
fn estimated_tokens(text: &str, chars_per_token: f64) -> usize {
    (text.chars().count() as f64 / chars_per_token.max(0.1)).ceil() as usize
}
