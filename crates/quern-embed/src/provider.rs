//! Whether the provider takes requests at all. A revoked key (401, 403), an unknown model (404, or a 400 about a
//! parameter), or a provider that nobody answers for for longer than a request's retries refuses every request
//! alike: that is no job's fault, so no job may fail for it. The pool then holds every request back (chunks fail
//! at once with [`EmbedError::Unavailable`], which a worker gives back without using up an attempt), says so in
//! one log line with a count, and probes the provider every [`PROBE_EVERY`] with a one-input embedding request
//! until it answers (a `GET` cannot tell a revoked key from a good one: only an authenticated embedding request
//! can). Subscribers (the worker, to stop taking jobs and turn `/readyz` false) follow [`Availability`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use quern_core::metric_names;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Blame;
use crate::permits::Permits;
use crate::{EmbedError, EmbeddingClient};

/// How often a provider that refuses every request is asked again.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// The one input of a probe: a few tokens, refused by no content policy.
pub const PROBE_TEXT: &str = "quern provider probe";

/// Whether the provider takes requests.
#[derive(Debug, Clone)]
pub enum Availability {
    /// Requests go out.
    Available,
    /// The provider refuses every request: this is what it answered. Only probes go out.
    Refusing(EmbedError),
}

impl Availability {
    /// Whether requests go out.
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available)
    }
}

/// The provider's state, shared by every request of the pool.
#[derive(Debug)]
pub(crate) struct Provider {
    client: EmbeddingClient,
    permits: Arc<Permits>,
    state: watch::Sender<Availability>,
    /// One probe at a time decides unclear refusals.
    confirming: tokio::sync::Mutex<()>,
}

impl Provider {
    pub(crate) fn new(client: EmbeddingClient, permits: Arc<Permits>) -> Arc<Provider> {
        metrics::gauge!(metric_names::EMBEDDING_PROVIDER_AVAILABLE).set(1.0);
        let (state, _) = watch::channel(Availability::Available);
        Arc::new(Provider { client, permits, state, confirming: tokio::sync::Mutex::new(()) })
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Availability> {
        self.state.subscribe()
    }

    /// The error a request gets instead of being sent, while the provider refuses every request.
    pub(crate) fn held_back(&self) -> Option<EmbedError> {
        match &*self.state.borrow() {
            Availability::Available => None,
            Availability::Refusing(answer) => Some(EmbedError::Unavailable(Box::new(answer.clone()))),
        }
    }

    /// The provider refuses every request (`answer` is what it said): holds requests back, says so once, and
    /// probes it until it answers. Returns the error the request's chunks get.
    pub(crate) fn refuses_everything(self: &Arc<Self>, answer: &EmbedError) -> EmbedError {
        let answer = answer.answer().clone();
        let flipped = self.state.send_if_modified(|state| {
            if state.is_available() {
                *state = Availability::Refusing(answer.clone());
                true
            } else {
                false
            }
        });
        if flipped {
            metrics::gauge!(metric_names::EMBEDDING_PROVIDER_AVAILABLE).set(0.0);
            metrics::counter!(metric_names::EMBEDDING_PROVIDER_OUTAGES, "reason" => answer.reason()).increment(1);
            tracing::error!(
                reason = answer.reason(),
                "the embedding provider refuses every request: {answer}; no job is failed for it: requests are \
                 held back and the provider asked again every {}s until it answers",
                PROBE_EVERY.as_secs()
            );
            tokio::spawn(probe_until_answered(Arc::downgrade(self), Instant::now()));
        }
        EmbedError::Unavailable(Box::new(answer))
    }

    /// Whether a refusal whose words blame no one ([`Blame::Unclear`]) of a request first sent at `sent` is about
    /// its inputs: yes if the provider embedded a request sent since, or embeds a harmless input now.
    pub(crate) async fn takes_requests_since(&self, sent: Instant) -> bool {
        if self.permits.answered_since(sent) {
            return true;
        }
        let _turn = self.confirming.lock().await;
        if self.permits.answered_since(sent) {
            return true;
        }
        let probe_sent = Instant::now();
        let answered = self.client.embed_batch(&[PROBE_TEXT]).await.is_ok();
        if answered {
            self.permits.note_answered(probe_sent);
        }
        answered
    }
}

/// Asks the provider every [`PROBE_EVERY`] until it answers, then lets requests go again. Ends early when the
/// pool is gone.
async fn probe_until_answered(provider: Weak<Provider>, since: Instant) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(provider) = provider.upgrade() else { return };
        let probe = provider.client.embed_batch(&[PROBE_TEXT]).await;
        if !answers(&probe) {
            if let Err(error) = probe {
                tracing::debug!(%error, "the embedding provider still refuses");
            }
            continue;
        }
        provider.state.send_replace(Availability::Available);
        metrics::gauge!(metric_names::EMBEDDING_PROVIDER_AVAILABLE).set(1.0);
        tracing::info!(
            down_secs = since.elapsed().as_secs(),
            "the embedding provider answers again after {}s; requests go out again",
            since.elapsed().as_secs()
        );
        return;
    }
}

/// A probe shows the provider takes requests again when it embeds the input, or answers with passing trouble
/// (a 429 or 5xx means it is there and takes our settings; the retries deal with the rest). No answer at all, or
/// another refusal, means it is still away.
fn answers<T>(probe: &Result<T, EmbedError>) -> bool {
    match probe {
        Ok(_) => true,
        Err(error @ EmbedError::Status { .. }) => error.blame() == Blame::Passing,
        Err(_) => false,
    }
}
