//! HTTP routes: `POST /v1/embeddings` with injected latency and faults, `GET /healthz`, `GET /stats`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quern_embed::wire::{encode_base64, EmbeddingRequest, EmbeddingUsage};
use rand::Rng;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::config::FakeEmbedderConfig;
use crate::embedding::embed_into;
use crate::stats::Stats;

/// Largest request body read. axum's 2 MiB default is below a full 2048-input batch of
/// ~1000-character chunks; this leaves room for that with long texts too.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Batches with more text than this are embedded on the blocking pool, so one huge request
/// cannot stall `/healthz`, `/stats` and the fast `429`s for milliseconds. Smaller ones take
/// microseconds, where a thread hand-off would cost more than it saves.
const INLINE_TEXT_BYTES: usize = 256 * 1024;

/// Shared by all handlers.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) config: FakeEmbedderConfig,
    pub(crate) stats: Arc<Stats>,
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/healthz", get(healthz))
        .route("/stats", get(stats))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    Json(state.stats.snapshot()).into_response()
}

/// The order of checks mirrors a real provider: concurrency admission first (instant `429`),
/// then request validation (instant `400`), then the simulated work time, then the random
/// fault draw (`429` or `500`, after the delay, like an overloaded backend), then the answer.
async fn embeddings(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let config = &state.config;
    let stats = &state.stats;
    stats.request();
    let (_in_flight, now) = stats.enter();
    if config.max_concurrency > 0 && now > config.max_concurrency as u64 {
        stats.throttled_429();
        tracing::debug!(in_flight = now, "over --max-concurrency, answering 429");
        return throttled("Too many concurrent requests; retry after 1 second.");
    }

    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            stats.rejected_400();
            return openai_error(rejection.status(), "invalid_request_error", None, &rejection.body_text());
        }
    };
    let request: EmbeddingRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            stats.rejected_400();
            return invalid_request(&format!("Could not parse the JSON body: {err}"));
        }
    };
    // The raw bytes are no longer needed; free them before the (possibly long) delay.
    drop(body);
    let model = request.model;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            stats.rejected_400();
            return invalid_request(&format!("'encoding_format' must be 'float' or 'base64', not '{other}'."));
        }
    };
    let texts = request.input.into_vec();
    if texts.is_empty() {
        stats.rejected_400();
        return invalid_request("'input' must not be an empty array.");
    }
    if let Some(marker) = config.reject_marker.as_deref() {
        if let Some(index) = texts.iter().position(|t| t.contains(marker)) {
            stats.rejected_400();
            return invalid_request(&format!("input {index} was refused by the content policy."));
        }
    }
    let request_chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    if config.max_request_chars > 0 && request_chars > config.max_request_chars {
        stats.rejected_400();
        return too_large(&format!(
            "the request carries {request_chars} characters, more than the maximum of {} per request.",
            config.max_request_chars
        ));
    }
    if texts.len() > config.max_batch {
        stats.rejected_400();
        return invalid_request(&format!(
            "'input' has {} items, more than the maximum of {} per request.",
            texts.len(),
            config.max_batch
        ));
    }

    // ThreadRng is not Send, so draw everything before the first await.
    let (delay_ms, fault_draw) = {
        let mut rng = rand::rng();
        let jitter = if config.jitter_ms > 0 { rng.random_range(0..=config.jitter_ms) } else { 0 };
        let draw = if config.throttle_rate > 0.0 || config.error_rate > 0.0 {
            // In 0..1, so a rate of 1.0 always fires and 0.0 never does.
            rng.random::<f64>()
        } else {
            1.0
        };
        (config.latency_ms.saturating_add(jitter), draw)
    };
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    if fault_draw < config.throttle_rate {
        stats.throttled_429();
        return throttled("Rate limit reached (injected by --throttle-rate); retry after 1 second.");
    }
    if fault_draw < config.throttle_rate + config.error_rate {
        stats.error_500();
        return openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "The server had an error while processing your request (injected by --error-rate).",
        );
    }

    let count = texts.len();
    let dim = config.dim;
    let text_bytes: usize = texts.iter().map(String::len).sum();
    let rendered = if text_bytes <= INLINE_TEXT_BYTES {
        render(&texts, dim, &model, base64)
    } else {
        match tokio::task::spawn_blocking(move || render(&texts, dim, &model, base64)).await {
            Ok(rendered) => rendered,
            Err(err) => Err(format!("embedding task failed: {err}")),
        }
    };
    match rendered {
        Ok(body) => {
            stats.ok(count);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(message) => {
            tracing::error!(%message, "could not build an embedding response");
            stats.error_500();
            openai_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, &message)
        }
    }
}

/// Embeds the batch into one flat buffer and serialises the OpenAI response body from it,
/// so a batch costs two allocations (vectors, output bytes) beyond the parsed request.
fn render(texts: &[String], dim: usize, model: &str, base64: bool) -> Result<Vec<u8>, String> {
    let mut vectors = vec![0.0f32; texts.len() * dim];
    let mut tokens = 0u64;
    for (text, out) in texts.iter().zip(vectors.chunks_exact_mut(dim)) {
        tokens += embed_into(text, out) as u64;
    }
    let response = ResponseBody {
        object: "list",
        data: DataList { vectors: &vectors, dim, base64 },
        model,
        usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens },
    };
    // A unit-vector component prints in at most ~13 bytes ("-0.012345678,").
    let mut body = Vec::with_capacity(vectors.len() * 13 + texts.len() * 48 + model.len() + 128);
    serde_json::to_writer(&mut body, &response).map_err(|err| err.to_string())?;
    Ok(body)
}

/// OpenAI's response shape; a superset of `quern_embed::wire::EmbeddingResponse` (adds the
/// `object` fields) that borrows the vectors instead of copying them into per-input `Vec`s.
#[derive(Serialize)]
struct ResponseBody<'a> {
    object: &'static str,
    data: DataList<'a>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// The `data` array, one entry per `dim`-sized slice of the flat buffer.
struct DataList<'a> {
    vectors: &'a [f32],
    dim: usize,
    /// `encoding_format: "base64"`: each vector as base64 of its little-endian bytes, as OpenAI sends it.
    base64: bool,
}

#[derive(Serialize)]
struct DataEntry<'a> {
    object: &'static str,
    index: usize,
    embedding: Embedding<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding<'a> {
    Numbers(&'a [f32]),
    Base64(String),
}

impl Serialize for DataList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.vectors.len() / self.dim))?;
        for (index, embedding) in self.vectors.chunks_exact(self.dim).enumerate() {
            let embedding =
                if self.base64 { Embedding::Base64(encode_base64(embedding)) } else { Embedding::Numbers(embedding) };
            seq.serialize_element(&DataEntry { object: "embedding", index, embedding })?;
        }
        seq.end()
    }
}

fn invalid_request(message: &str) -> Response {
    openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
}

fn too_large(message: &str) -> Response {
    openai_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", None, message)
}

fn throttled(message: &str) -> Response {
    let mut response =
        openai_error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded"), message);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An error in OpenAI's format, so clients parse it as they would the real thing.
fn openai_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    });
    (status, Json(body)).into_response()
}
