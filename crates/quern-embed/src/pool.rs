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
//! Two optional controls: an adaptive limit on requests in flight (`limit.rs`, applied by `permits.rs`), fed
//! by every attempt's answer, retries included; and per-minute request and token budgets (`budget.rs`) that
//! the dispatcher waits on before a request leaves.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use quern_core::metric_names;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::budget::Budget;
use crate::limit::AttemptOutcome;
use crate::permits::{Permit, Permits};
use crate::retry::{retry_transient, RetryPolicy};
use crate::{EmbedError, EmbeddingClient};

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Most inputs per request.
    pub batch_size: usize,
    /// Requests in flight at once across every job of the process (the most, when `adaptive_concurrency`).
    pub max_in_flight: usize,
    /// Let the number of requests in flight adapt between 1 and `max_in_flight` to the provider's answers
    /// (see `limit.rs`); otherwise it is `max_in_flight`.
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
struct Pending {
    text: Box<str>,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

/// Embeds texts in shared batches through one semaphore for the whole process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddingPool {
    client: EmbeddingClient,
    queue: mpsc::UnboundedSender<Pending>,
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
        // Unbounded: what waits here is bounded by the jobs in flight (prefetch × chunks per job).
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(waiting, client.clone(), permits, budget, config));
        EmbeddingPool { client, queue }
    }

    /// The underlying client (model name, dimension).
    pub fn client(&self) -> &EmbeddingClient {
        &self.client
    }

    /// Embeds every text; vectors come back in text order. The texts share requests with other jobs' chunks.
    pub async fn embed_all(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut answers = Vec::with_capacity(texts.len());
        for text in texts {
            let (reply, answer) = oneshot::channel();
            self.queue
                .send(Pending { text: (*text).into(), reply })
                .map_err(|_| EmbedError::Config("the embedding dispatcher has stopped".into()))?;
            answers.push(answer);
        }
        let mut vectors = Vec::with_capacity(texts.len());
        for answer in answers {
            let vector =
                answer.await.map_err(|_| EmbedError::Config("the embedding dispatcher dropped a chunk".into()))??;
            vectors.push(vector);
        }
        Ok(vectors)
    }
}

/// Packs waiting chunks into requests, one permit per request, each sent once the budget allows.
async fn dispatch(
    mut waiting: mpsc::UnboundedReceiver<Pending>,
    client: EmbeddingClient,
    permits: Arc<Permits>,
    mut budget: Option<Budget>,
    config: PoolConfig,
) {
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
        // Waiting for a permit is what fills batches under load: chunks queue up meanwhile.
        let Ok(permit) = permits.acquire().await else { return };
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
        tokio::spawn(send(client.clone(), batch, permit, permits.clone(), config));
    }
}

/// Tokens a text is estimated to cost: its characters divided by `chars_per_token`, rounded up.
fn estimated_tokens(text: &str, chars_per_token: f64) -> usize {
    (text.chars().count() as f64 / chars_per_token.max(0.1)).ceil() as usize
}

/// Sends one request (with its retries) and hands each vector, or its error, to its chunk's job.
async fn send(client: EmbeddingClient, batch: Vec<Pending>, permit: Permit, permits: Arc<Permits>, config: PoolConfig) {
    let texts: Vec<&str> = batch.iter().map(|p| &*p.text).collect();
    let place = Place { permits, held: Mutex::new(Some(permit)) };
    let answers = embed_isolating(&client, &texts, &config.retry, &place).await;
    drop(texts);
    drop(place);
    for (pending, answer) in batch.into_iter().zip(answers) {
        // A job that gave up (its task ended) no longer listens: nothing to do.
        let _ = pending.reply.send(answer);
    }
}

/// A request's place in the pool. With a fixed pool the request keeps its permit from dispatch to its last
/// answer, retries included. With the adaptive limit it holds one per attempt: a request waiting to retry (a
/// 429's `Retry-After`) is not at the provider, and if it kept its permit the limit would count it in flight,
/// so after a cut the waiting retries would crowd out live requests and, once the limit had grown back, land
/// on a provider already full.
struct Place {
    permits: Arc<Permits>,
    held: Mutex<Option<Permit>>,
}

impl Place {
    /// The permit for the next attempt: the one already held, or a new one.
    async fn take(&self) -> Option<Permit> {
        let held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        match held {
            Some(permit) => Some(permit),
            None => self.permits.acquire().await.ok(),
        }
    }

    /// Keeps the permit after an attempt, unless the attempt failed and the limit adapts.
    fn keep(&self, permit: Option<Permit>, failed: bool) {
        if !(failed && self.permits.is_adaptive()) {
            *self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = permit;
        }
    }
}

/// One answer per text. When the provider refuses a request for what it carries (400, 413, 422) and it carries
/// more than one input, the halves are sent apart, down to single inputs: a chunk the provider will never take
/// then fails alone instead of failing every job whose chunks shared its request. Errors that concern every
/// input alike (401, 403, 404, throttling, 5xx after retries) are not split.
fn embed_isolating<'a>(
    client: &'a EmbeddingClient,
    texts: &'a [&'a str],
    retry: &'a RetryPolicy,
    place: &'a Place,
) -> BoxFuture<'a, Vec<Result<Vec<f32>, EmbedError>>> {
    Box::pin(async move {
        match request(client, texts, retry, place).await {
            Ok(vectors) => vectors.into_iter().map(Ok).collect(),
            Err(EmbedError::Status { status: 400 | 413 | 422, .. }) if texts.len() > 1 => {
                let (left, right) = texts.split_at(texts.len() / 2);
                let mut answers = embed_isolating(client, left, retry, place).await;
                answers.extend(embed_isolating(client, right, retry, place).await);
                answers
            }
            Err(error) => texts.iter().map(|_| Err(error.clone())).collect(),
        }
    })
}

/// One request with its transient retries, recorded in the request metrics; every attempt's answer also goes
/// to the adaptive limit, so throttled retries count as much as first tries.
async fn request(
    client: &EmbeddingClient,
    texts: &[&str],
    retry: &RetryPolicy,
    place: &Place,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    retry_transient(retry, || async {
        let permit = place.take().await;
        let started = Instant::now();
        let answer = client.embed_batch(texts).await;
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
        metrics::histogram!(metric_names::EMBEDDING_REQUEST_INPUTS).record(texts.len() as f64);
        place.permits.observe(started, load_signal(&answer));
        place.keep(permit, answer.is_err());
        answer
    })
    .await
}

/// What an answer says about the provider's load: 429, 503, 504 and timeouts mean it is past its capacity
/// (504 is a gateway's timeout); other failures do not.
fn load_signal<T>(answer: &Result<T, EmbedError>) -> AttemptOutcome {
    match answer {
        Ok(_) => AttemptOutcome::Answered,
        Err(EmbedError::Status { status: 429 | 503 | 504, .. } | EmbedError::Timeout(_)) => AttemptOutcome::Overloaded,
        Err(_) => AttemptOutcome::Other,
    }
}
