//! One shared request's life, from its permit to each chunk's answer: attempts with their retries, timeouts resent
//! only once the provider has worked off what it held, refusals split down to the refused input, and failures
//! that concern every request turned into the provider's unavailability rather than the jobs' failures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use quern_core::metric_names;
use tokio::time::Instant;

use crate::error::Blame;
use crate::limit::AttemptOutcome;
use crate::permits::{Permit, Permits};
use crate::pool::{Pending, PoolConfig};
use crate::provider::Provider;
use crate::retry::retry_transient;
use crate::{EmbedError, EmbeddingClient};

/// Times a timed-out request is resent before its chunks fail (each time with twice the time, up to
/// [`MAX_TIMEOUT_FACTOR`] times the configured timeout).
pub const TIMEOUT_RESENDS: u32 = 2;
/// The longest a resent request waits, as a multiple of `--embedding-timeout-secs`.
pub const MAX_TIMEOUT_FACTOR: u32 = 4;

/// What every request of the pool shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: EmbeddingClient,
    pub(crate) permits: Arc<Permits>,
    pub(crate) provider: Arc<Provider>,
    pub(crate) config: PoolConfig,
}

/// Sends one request (with its retries) and hands each vector, or its error, to its chunk's job.
pub(crate) async fn send(shared: Arc<Shared>, batch: Vec<Pending>, permit: Permit, tokens: usize) {
    let texts: Vec<&str> = batch.iter().map(|p| &*p.text).collect();
    let place = Place { permits: shared.permits.clone(), held: Mutex::new(Some(permit)), sent: Mutex::new(None) };
    let answers = embed_isolating(&shared, &texts, tokens, &place).await;
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
/// on a provider already full. A timed-out request gives its permit back in either case while it waits.
struct Place {
    permits: Arc<Permits>,
    held: Mutex<Option<Permit>>,
    /// When the latest attempt left, and the first (a refusal is judged against what the provider did since).
    sent: Mutex<Option<(Instant, Instant)>>,
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

    /// Gives the permit back, if one is held.
    fn release(&self) {
        drop(self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
    }

    fn note_sent(&self, at: Instant) {
        let mut sent = self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *sent = Some((sent.map_or(at, |(first, _)| first), at));
    }

    /// When the first and the latest attempt left.
    fn sent(&self) -> Option<(Instant, Instant)> {
        *self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One answer per text. A refusal of what the request carried ([`Blame::Inputs`]; [`Blame::Unclear`] once the
/// provider proved it takes other requests) sends the halves apart, down to single inputs: a chunk the provider
/// will never take then fails alone instead of failing every job whose chunks shared its request. A failure that
/// concerns every request (a provider-wide refusal, an unclear one the provider confirms, no answer after every
/// retry) makes the provider unavailable: its chunks get [`EmbedError::Unavailable`] and no job is at fault.
async fn embed_isolating(
    shared: &Arc<Shared>,
    texts: &[&str],
    tokens: usize,
    place: &Place,
) -> Vec<Result<Vec<f32>, EmbedError>> {
    let answers = split_on_refusal(shared, texts, tokens, place).await;
    answers
        .into_iter()
        .map(|answer| match answer {
            Err(error) if concerns_every_request(&error) => Err(shared.provider.refuses_everything(&error)),
            other => other,
        })
        .collect()
}

/// The provider's refusal or silence, not an input's: a provider-wide refusal, or no answer after every retry.
/// (A timeout is not: a request too big for the timeout even alone is that request's trouble.)
fn concerns_every_request(error: &EmbedError) -> bool {
    matches!(error, EmbedError::Transport { .. })
        || (error.blame() == Blame::Provider && !matches!(error, EmbedError::Unavailable(_)))
}

fn split_on_refusal<'a>(
    shared: &'a Arc<Shared>,
    texts: &'a [&'a str],
    tokens: usize,
    place: &'a Place,
) -> BoxFuture<'a, Vec<Result<Vec<f32>, EmbedError>>> {
    Box::pin(async move {
        let error = match request(shared, texts, tokens, place).await {
            Ok(vectors) => return vectors.into_iter().map(Ok).collect(),
            Err(error) => error,
        };
        let about_inputs = match error.blame() {
            Blame::Inputs => true,
            Blame::Unclear => {
                let first_sent = place.sent().map_or_else(Instant::now, |(first, _)| first);
                shared.provider.takes_requests_since(first_sent).await
            }
            Blame::Passing | Blame::Provider => false,
        };
        if !about_inputs && error.blame() == Blame::Unclear {
            // The provider refuses a harmless input too: the refusal is about its settings.
            return texts.iter().map(|_| Err(shared.provider.refuses_everything(&error))).collect();
        }
        if about_inputs && texts.len() > 1 {
            let (left, right) = texts.split_at(texts.len() / 2);
            // Halves share the estimate in proportion; it only picks the latency class.
            let share = |part: &[&str]| tokens * part.len() / texts.len();
            let mut answers = split_on_refusal(shared, left, share(left), place).await;
            answers.extend(split_on_refusal(shared, right, share(right), place).await);
            return answers;
        }
        texts.iter().map(|_| Err(error.clone())).collect()
    })
}

/// One request with its transient retries, and resends after a timeout, each recorded in the request metrics
/// and fed to the adaptive limit (throttled retries count as much as first tries).
///
/// A timed-out request is not resent at once: the provider still holds it (it cannot know we left) and computes
/// it, so a resend would add the same work to a queue it has not worked off. It waits, without a permit, until
/// the provider has answered a request sent after it, or nothing of ours is in flight, and then goes with twice
/// the time.
async fn request(shared: &Shared, texts: &[&str], tokens: usize, place: &Place) -> Result<Vec<Vec<f32>>, EmbedError> {
    let configured = shared.client.request_timeout();
    let mut timeout = configured;
    let mut resends = 0;
    loop {
        let answer = retry_transient(&shared.config.retry, || attempt(shared, texts, tokens, place, timeout)).await;
        match answer {
            Err(EmbedError::Timeout(waited)) if resends < TIMEOUT_RESENDS => {
                place.release();
                if let Some((_, sent)) = place.sent() {
                    shared.permits.worked_off(sent).await;
                }
                resends += 1;
                timeout = (timeout * 2).min(configured * MAX_TIMEOUT_FACTOR);
                tracing::warn!(
                    inputs = texts.len(),
                    "embedding request timed out after {}s; resent once the provider worked off what it held, \
                     with {}s",
                    waited.as_secs(),
                    timeout.as_secs()
                );
            }
            other => return other,
        }
    }
}

/// One attempt, unless the provider refuses every request (then none is sent).
async fn attempt(
    shared: &Shared,
    texts: &[&str],
    tokens: usize,
    place: &Place,
    timeout: Duration,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    if let Some(held_back) = shared.provider.held_back() {
        return Err(held_back);
    }
    let permit = place.take().await;
    // The provider may have been found refusing while this attempt waited for its permit.
    if let Some(held_back) = shared.provider.held_back() {
        place.keep(permit, true);
        return Err(held_back);
    }
    let departure = shared.permits.depart();
    let started = Instant::now();
    place.note_sent(started);
    let answer = shared.client.embed_within(texts, timeout).await;
    let alone = departure.alone();
    drop(departure);
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
    shared.permits.observe(started, load_signal(&answer), alone, tokens);
    place.keep(permit, answer.is_err());
    answer
}

/// What an answer says about the provider's load: 429, 503 and 504 mean it is past its capacity (504 is a
/// gateway's timeout), a timeout that it is far past it; other failures say nothing.
fn load_signal<T>(answer: &Result<T, EmbedError>) -> AttemptOutcome {
    match answer {
        Ok(_) => AttemptOutcome::Answered,
        Err(EmbedError::Status { status: 429 | 503 | 504, .. }) => AttemptOutcome::Overloaded,
        Err(EmbedError::Timeout(_)) => AttemptOutcome::TimedOut,
        Err(_) => AttemptOutcome::Other,
    }
}
