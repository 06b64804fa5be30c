//! One embedding request per batch against an OpenAI-compatible API, with the answer checked.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

use crate::wire::{EmbeddingRequestRef, EmbeddingResponse, VectorEncoding};
use crate::EmbedError;

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
    model: String,
    dimension: usize,
    request_timeout: Duration,
    encoding: VectorEncoding,
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
        Ok(EmbeddingClient {
            http,
            endpoint: endpoint_for(&config.url),
            model: config.model.clone(),
            dimension: config.dimension,
            request_timeout: config.request_timeout,
            encoding: config.encoding,
        })
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
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
        let request =
            EmbeddingRequestRef { model: &self.model, input: inputs, encoding_format: self.encoding.as_str() };
        let response =
            self.http.post(&self.endpoint).json(&request).send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|secs| secs.is_finite() && *secs >= 0.0)
                .map(Duration::from_secs_f64);
            let mut message = response.text().await.unwrap_or_default();
            truncate_at_char_boundary(&mut message, MAX_ERROR_MESSAGE);
            return Err(EmbedError::Status { status: status.as_u16(), message, retry_after });
        }
        let body = response.bytes().await.map_err(|e| self.transport_error(e))?;
        let parsed: EmbeddingResponse = serde_json::from_slice(&body)
            .map_err(|e| EmbedError::InvalidResponse(format!("body is not an embeddings response: {e}")))?;
        order_and_check(parsed, inputs.len(), self.dimension)
    }

    fn transport_error(&self, error: reqwest::Error) -> EmbedError {
        if error.is_timeout() {
            EmbedError::Timeout(self.request_timeout)
        } else {
            // `without_url` keeps credentials that may sit in a URL out of the message.
            EmbedError::Transport(error.without_url().to_string())
        }
    }
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

    #[test]
    fn statuses_are_classified_like_providers_behave() {
        use quern_core::ErrorClass::*;
        let status = |status| EmbedError::Status { status, message: String::new(), retry_after: None };
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(status(code).class(), Transient, "{code}");
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert_eq!(status(code).class(), Permanent, "{code}");
        }
    }
}
