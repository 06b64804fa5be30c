//! The one embedding pool of a process: cross-job batching, a shared in-flight bound, answers routed back.
//!
//! Providers charge latency per request, not per input, so chunks of every job go into shared requests: one
//! dispatcher task takes a permit of the process-wide semaphore, then packs the chunks waiting (up to the batch
//! size, lingering a few milliseconds for more, like Kafka's `linger.ms`), and sends the request in a task of
//! its own. A request leaves full when work is plentiful and at once when it is not; while every permit is in
//! use, chunks pile up and the next request leaves full. Each vector goes back to the job that sent its chunk;
//! a failed request (after its retries) fails only the chunks it carried, and a request refused for its content
//! is split until the refused chunk stands alone, so no job fails for a neighbour's chunk.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use quern_core::metric_names;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::retry::{retry_transient, RetryPolicy};
use crate::{EmbedError, EmbeddingClient};

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Most inputs per request.
    pub batch_size: usize,
    /// Requests in flight at once across every job of the process.
    pub max_in_flight: usize,
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
    /// A pool with `config.max_in_flight` permits. Starts the dispatcher task, so call it inside a Tokio runtime;
    /// the task ends when the last clone of the pool is dropped.
    pub fn new(client: EmbeddingClient, config: PoolConfig) -> EmbeddingPool {
        let config =
            PoolConfig { batch_size: config.batch_size.max(1), max_in_flight: config.max_in_flight.max(1), ..config };
        let permits = Arc::new(Semaphore::new(config.max_in_flight));
        // Unbounded: what waits here is bounded by the jobs in flight (prefetch × chunks per job).
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(waiting, client.clone(), permits, config));
        metrics::gauge!(metric_names::EMBEDDING_PERMITS).set(config.max_in_flight as f64);
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

/// Packs waiting chunks into requests, one permit per request.
async fn dispatch(
    mut waiting: mpsc::UnboundedReceiver<Pending>,
    client: EmbeddingClient,
    permits: Arc<Semaphore>,
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
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
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
        tokio::spawn(send(client.clone(), batch, permit, permits.clone(), config));
    }
}

/// Tokens a text is estimated to cost: its characters divided by `chars_per_token`, rounded up.
fn estimated_tokens(text: &str, chars_per_token: f64) -> usize {
    (text.chars().count() as f64 / chars_per_token.max(0.1)).ceil() as usize
}

/// Sends one request (with its retries) and hands each vector, or its error, to its chunk's job.
async fn send(
    client: EmbeddingClient,
    batch: Vec<Pending>,
    permit: OwnedSemaphorePermit,
    permits: Arc<Semaphore>,
    config: PoolConfig,
) {
    let in_use = |permits: &Semaphore| (config.max_in_flight - permits.available_permits()) as f64;
    metrics::gauge!(metric_names::EMBEDDING_PERMITS_IN_USE).set(in_use(&permits));
    let texts: Vec<&str> = batch.iter().map(|p| &*p.text).collect();
    let answers = embed_isolating(&client, &texts, &config.retry).await;
    drop(texts);
    drop(permit);
    metrics::gauge!(metric_names::EMBEDDING_PERMITS_IN_USE).set(in_use(&permits));
    for (pending, answer) in batch.into_iter().zip(answers) {
        // A job that gave up (its task ended) no longer listens: nothing to do.
        let _ = pending.reply.send(answer);
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
) -> BoxFuture<'a, Vec<Result<Vec<f32>, EmbedError>>> {
    Box::pin(async move {
        match request(client, texts, retry).await {
            Ok(vectors) => vectors.into_iter().map(Ok).collect(),
            Err(EmbedError::Status { status: 400 | 413 | 422, .. }) if texts.len() > 1 => {
                let (left, right) = texts.split_at(texts.len() / 2);
                let mut answers = embed_isolating(client, left, retry).await;
                answers.extend(embed_isolating(client, right, retry).await);
                answers
            }
            Err(error) => texts.iter().map(|_| Err(error.clone())).collect(),
        }
    })
}

/// One request with its transient retries, recorded in the request metrics.
async fn request(client: &EmbeddingClient, texts: &[&str], retry: &RetryPolicy) -> Result<Vec<Vec<f32>>, EmbedError> {
    retry_transient(retry, || async {
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
        answer
    })
    .await
}
