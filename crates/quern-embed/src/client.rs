//! One embedding request per batch against an OpenAI-compatible API, with the answer checked.
//!
//! Vectors are asked for as `base64` unless configured otherwise. Several self-hosted servers speak floats only
//! and refuse it; the first such refusal (a 400 or 422 naming `encoding_format` or `base64`, or an answer that
//! cannot be read as asked) is resent as `float`, and if that works the client asks for floats from then on,
//! for every clone of it in the process, with one log line and one count. A server that merely ignores the
//! parameter answers with numbers, which are read as well, so it costs nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quern_core::metric_names;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

use crate::wire::{EmbeddingRequestRef, EmbeddingResponse, VectorEncoding};
use crate::{refusal, EmbedError};

/// How to reach the embedding API.
#[derive(Debug, Clone)]
pub struct EmbeddingClientConfig {
    /// Base URL: `http://host:port` (then `/v1/embeddings` is appended), a URL ending in `/v1`, or the full
    /// `.../embeddings` endpoint.
    pub url: String,
    /// Model name sent with every request.
    pub model: String,
    /// Bearer token, if the provider needs one. `SecretString` never prints it.
    pub api_key: Option<SecretString>,
    /// Expected vector dimension; any other is an error.
    pub dimension: usize,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How vectors are asked to come back.
    pub encoding: VectorEncoding,
}

/// The HTTP client for one embedding endpoint.
#[derive(Debug, Clone)]
pub struct EmbeddingClient {
    http: reqwest::Client,
    endpoint: String,
    /// The endpoint as messages show it: a password in it replaced by `***`.
    shown_endpoint: String,
    model: String,
    dimension: usize,
    request_timeout: Duration,
    encoding: VectorEncoding,
    /// Set once the provider refused `base64`: shared by every clone, so the whole process asks for floats.
    float_fallback: Arc<AtomicBool>,
}

/// Longest provider error message kept; some answer with whole HTML pages.
const MAX_ERROR_MESSAGE: usize = 500;

impl EmbeddingClient {
    /// Builds the client; the API key goes into a sensitive default header that is never logged.
    pub fn new(config: &EmbeddingClientConfig) -> Result<EmbeddingClient, EmbedError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .map_err(|_| EmbedError::Config("the API key contains characters not allowed in a header".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| EmbedError::Config(e.to_string()))?;
        let endpoint = endpoint_for(&config.url);
        let shown_endpoint = check_endpoint(&endpoint)?;
        Ok(EmbeddingClient {
            http,
            endpoint,
            shown_endpoint,
            model: config.model.clone(),
            dimension: config.dimension,
            request_timeout: config.request_timeout,
            encoding: config.encoding,
            float_fallback: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The per-request timeout configured.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How vectors are asked for now: the configured encoding, or `float` once the provider refused `base64`.
    pub fn encoding(&self) -> VectorEncoding {
        if self.float_fallback.load(Ordering::Relaxed) {
            VectorEncoding::Float
        } else {
            self.encoding
        }
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The endpoint as logs and messages may show it (a password in it replaced by `***`).
    pub fn shown_endpoint(&self) -> &str {
        &self.shown_endpoint
    }

    /// Checks that an HTTP server answers at the endpoint, without paying for an embedding: a `GET`, which
    /// embedding APIs answer with 404, 405 or 401 and no work. Any status means the server is there; a refused
    /// connection, a DNS failure or no answer within `timeout` is an error. Returns the status.
    pub async fn probe(&self, timeout: Duration) -> Result<u16, EmbedError> {
        let response = self
            .http
            .get(&self.endpoint)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(e, timeout))?;
        Ok(response.status().as_u16())
    }

    /// The model name sent with requests.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The dimension every vector must have.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Embeds `inputs` in one request; the vectors come back in input order.
    pub async fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_within(inputs, self.request_timeout).await
    }

    /// [`EmbeddingClient::embed_batch`] with a timeout of its own (the pool lengthens it for a resend).
    pub async fn embed_within(&self, inputs: &[&str], timeout: Duration) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encoding = self.encoding();
        let answer = self.send(inputs, encoding, timeout).await;
        match &answer {
            Err(refused) if encoding == VectorEncoding::Base64 && refuses_base64(refused) => {
                let floats = self.send(inputs, VectorEncoding::Float, timeout).await;
                if floats.is_ok() && !self.float_fallback.swap(true, Ordering::Relaxed) {
                    metrics::counter!(metric_names::EMBEDDING_ENCODING_FALLBACKS).increment(1);
                    tracing::warn!(
                        "the embedding API at {} refused base64 vectors ({refused}); asking for float vectors from \
                         now on (set --embedding-encoding float to skip this)",
                        self.shown_endpoint
                    );
                }
                floats
            }
            _ => answer,
        }
    }

    async fn send(
        &self,
        inputs: &[&str],
        encoding: VectorEncoding,
        timeout: Duration,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let request = EmbeddingRequestRef { model: &self.model, input: inputs, encoding_format: encoding.as_str() };
        let response = self
            .http
            .post(&self.endpoint)
            .timeout(timeout)
            .json(&request)
            .send()
            .await
            .map_err(|e| self.transport_error(e, timeout))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|secs| secs.is_finite() && *secs >= 0.0)
                .map(Duration::from_secs_f64);
            let body = response.text().await.unwrap_or_default();
            let mut error = EmbedError::from_answer(status.as_u16(), &body, retry_after);
            if let EmbedError::Status { message, .. } = &mut error {
                truncate_at_char_boundary(message, MAX_ERROR_MESSAGE);
            }
            return Err(error);
        }
        let body = response.bytes().await.map_err(|e| self.transport_error(e, timeout))?;
        let parsed: EmbeddingResponse = serde_json::from_slice(&body)
            .map_err(|e| EmbedError::InvalidResponse(format!("body is not an embeddings response: {e}")))?;
        order_and_check(parsed, inputs.len(), self.dimension)
    }

    fn transport_error(&self, error: reqwest::Error, timeout: Duration) -> EmbedError {
        if error.is_timeout() {
            EmbedError::Timeout(timeout)
        } else {
            EmbedError::Transport { endpoint: self.shown_endpoint.clone(), reason: transport_reason(&error) }
        }
    }
}

/// Whether a failed `base64` request is worth resending as `float`: a 400 or 422 that names the encoding, or an
/// answer that could not be read as asked (a float answer is read either way, so this is a server that encodes
/// differently). Other refusals are left to the caller, which judges them.
fn refuses_base64(error: &EmbedError) -> bool {
    match error {
        EmbedError::Status { status: 400 | 422, message, param, code, .. } => {
            let body = refusal::ErrorBody { message: message.clone(), param: param.clone(), code: code.clone() };
            refusal::refuses_base64(&body)
        }
        EmbedError::InvalidResponse(_) => true,
        _ => false,
    }
}

/// The innermost cause of a failed request in plain words (`connection refused`): reqwest's own message is
/// only "error sending request", and the layers below it repeat each other.
fn transport_reason(error: &reqwest::Error) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    match cause.downcast_ref::<std::io::Error>() {
        Some(io) => quern_core::error_text::io_error(io),
        // `without_url` keeps credentials that may sit in a URL out of the message.
        // reqwest appends the URL, which may hold credentials: keep it out of the message.
        None if std::ptr::addr_eq(cause, error as &dyn std::error::Error) => {
            let text = error.to_string();
            text.find(" for url (").map_or(text.clone(), |at| text[..at].to_owned())
        }
        None => cause.to_string(),
    }
}

/// Refuses an endpoint that is not an http(s) URL (no retry could fix it); returns it as messages show it,
/// a password in it replaced by `***`.
fn check_endpoint(endpoint: &str) -> Result<String, EmbedError> {
    let invalid = |reason: String| EmbedError::Config(format!("not an http:// or https:// URL: {reason}"));
    let mut url = reqwest::Url::parse(endpoint).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!("scheme `{}`", url.scheme())));
    }
    if url.password().is_some() {
        // Cannot fail: the URL has a host.
        let _ = url.set_password(Some("***"));
    }
    Ok(url.to_string())
}

/// Places each vector at its input's position, refusing answers that do not match the request.
fn order_and_check(
    response: EmbeddingResponse,
    expected: usize,
    dimension: usize,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    if response.data.len() != expected {
        return Err(EmbedError::InvalidResponse(format!("{} embeddings for {expected} inputs", response.data.len())));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
    for item in response.data {
        if item.embedding.len() != dimension {
            return Err(EmbedError::InvalidResponse(format!(
                "embedding {} has dimension {}, expected {dimension}",
                item.index,
                item.embedding.len()
            )));
        }
        let slot = slots.get_mut(item.index).ok_or_else(|| {
            EmbedError::InvalidResponse(format!("index {} out of range for {expected} inputs", item.index))
        })?;
        if slot.replace(item.embedding).is_some() {
            return Err(EmbedError::InvalidResponse(format!("index {} answered twice", item.index)));
        }
    }
    // Count matched and no index repeated, so every slot is filled.
    Ok(slots.into_iter().flatten().collect())
}

fn endpoint_for(url: &str) -> String {
    let base = url.trim_end_matches('/');
    if base.ends_with("/embeddings") {
        base.to_owned()
    } else if base.ends_with("/v1") {
        format!("{base}/embeddings")
    } else {
        format!("{base}/v1/embeddings")
    }
}

fn truncate_at_char_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EmbeddingData;

    fn response(indices: &[usize], dim: usize) -> EmbeddingResponse {
        EmbeddingResponse {
            data: indices.iter().map(|&index| EmbeddingData { index, embedding: vec![index as f32; dim] }).collect(),
            model: "m".into(),
            usage: None,
        }
    }

    #[test]
    fn vectors_are_put_back_in_input_order() {
        let ordered = order_and_check(response(&[2, 0, 1], 3), 3, 3).expect("valid");
        assert_eq!(ordered.iter().map(|v| v[0]).collect::<Vec<_>>(), vec![0.0, 1.0, 2.0]);
    }

    #[test]
    fn mismatched_answers_are_refused() {
        assert!(order_and_check(response(&[0, 1], 3), 3, 3).is_err());
        assert!(order_and_check(response(&[0, 0, 1], 3), 3, 3).is_err());
        assert!(order_and_check(response(&[0, 1, 3], 3), 3, 3).is_err());
        assert!(order_and_check(response(&[0, 1, 2], 4), 3, 3).is_err());
    }

    #[test]
    fn endpoint_accepts_the_usual_spellings() {
        assert_eq!(endpoint_for("http://h:1"), "http://h:1/v1/embeddings");
        assert_eq!(endpoint_for("https://api.openai.com/v1/"), "https://api.openai.com/v1/embeddings");
        assert_eq!(endpoint_for("http://h/v1/embeddings"), "http://h/v1/embeddings");
    }

    fn config(url: &str) -> EmbeddingClientConfig {
        EmbeddingClientConfig {
            url: url.into(),
            model: "m".into(),
            api_key: None,
            dimension: 8,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            encoding: VectorEncoding::Float,
        }
    }

    #[test]
    fn an_endpoint_that_is_not_http_is_refused_at_once() {
        for url in ["127.0.0.1:8089", "ftp://h/v1", "not a url"] {
            let error = EmbeddingClient::new(&config(url)).expect_err(url);
            assert!(matches!(error, EmbedError::Config(_)), "{url}: {error}");
            assert_eq!(error.class(), quern_core::ErrorClass::Permanent);
        }
        let client = EmbeddingClient::new(&config("https://u:s3cret@h/v1")).expect("valid");
        assert_eq!(client.shown_endpoint(), "https://u:***@h/v1/embeddings");
    }

    /// A server that answers counts as reachable whatever its status, and the probe is no embedding request.
    #[tokio::test]
    async fn a_probe_costs_no_embedding_request() {
        let server = quern_fake_embedder::spawn(Default::default()).await.expect("fake embedder");
        let client = EmbeddingClient::new(&config(&server.url())).expect("valid");
        assert_eq!(client.probe(Duration::from_secs(5)).await.expect("answers"), 405);
        assert_eq!(server.stats().snapshot().requests, 0, "nothing embedded, nothing billed");
    }

    /// A server that is not there: one line naming the endpoint and the cause in plain words.
    #[tokio::test]
    async fn a_refused_probe_names_the_endpoint_and_the_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let client = EmbeddingClient::new(&config(&format!("http://127.0.0.1:{port}"))).expect("valid");
        let error = client.probe(Duration::from_secs(5)).await.expect_err("nothing listens there");
        assert_eq!(
            error.to_string(),
            format!("no answer from the embedding API at http://127.0.0.1:{port}/v1/embeddings: connection refused")
        );
        assert_eq!(error.class(), quern_core::ErrorClass::Transient);
        assert_eq!(error.reason(), "embedding_unreachable");
    }

    /// A server that speaks floats only: the refused request is resent as float, and the client asks for floats
    /// from then on, in every clone.
    #[tokio::test]
    async fn a_refused_base64_request_is_resent_as_float_and_floats_are_kept() {
        let fake = quern_fake_embedder::FakeEmbedderConfig { dim: 8, refuse_base64: true, ..Default::default() };
        let server = quern_fake_embedder::spawn(fake).await.expect("fake embedder");
        let client =
            EmbeddingClient::new(&EmbeddingClientConfig { encoding: VectorEncoding::Base64, ..config(&server.url()) })
                .expect("valid");
        let clone = client.clone();
        let vectors = client.embed_batch(&["alpha beta", "gamma"]).await.expect("answered as float");
        assert_eq!(vectors[1], quern_fake_embedder::embed_text("gamma", 8));
        assert_eq!(clone.encoding(), VectorEncoding::Float, "remembered by every clone");
        clone.embed_batch(&["delta"]).await.expect("float at once");
        let stats = server.stats().snapshot();
        assert_eq!((stats.refused_base64, stats.ok, stats.requests), (1, 2, 3), "{stats:?}");
    }

    /// Other refusals are not mistaken for the encoding's: no float resend, base64 kept.
    #[tokio::test]
    async fn a_refusal_of_an_input_does_not_change_the_encoding() {
        let fake = quern_fake_embedder::FakeEmbedderConfig {
            dim: 8,
            reject_marker: Some("FORBIDDEN".into()),
            ..Default::default()
        };
        let server = quern_fake_embedder::spawn(fake).await.expect("fake embedder");
        let client =
            EmbeddingClient::new(&EmbeddingClientConfig { encoding: VectorEncoding::Base64, ..config(&server.url()) })
                .expect("valid");
        let refused = client.embed_batch(&["a FORBIDDEN word"]).await.expect_err("refused");
        assert_eq!(refused.to_string(), "embedding API answered 400: input 0 was refused by the content policy.");
        assert_eq!(client.encoding(), VectorEncoding::Base64);
        assert_eq!(server.stats().snapshot().requests, 1);
    }
}
