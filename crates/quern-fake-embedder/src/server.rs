//! HTTP routes: `POST /v1/embeddings` with injected latency and faults, `GET /healthz`, `GET /stats`.
//!
//! With `serial`, the work of a request (its latency, fault draw and vectors) runs in a task of its own that
//! waits its turn for the one "CPU": requests queue in order, and one whose client gave up is still computed, as
//! a real server computes what it already accepted.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quern_embed::wire::{render_response, EmbeddingRequest, EmbeddingUsage};
use rand::Rng;

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
    /// When the server was bound: `unauthorized_for_secs` counts from here.
    pub(crate) started: std::time::Instant,
    /// The one "CPU" of `serial` mode; tokio's mutex is fair, so requests get it in order.
    pub(crate) serial: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    pub(crate) fn new(config: FakeEmbedderConfig) -> AppState {
        AppState {
            config,
            stats: Arc::new(Stats::default()),
            started: std::time::Instant::now(),
            serial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
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

/// The order of checks mirrors a real provider: concurrency admission first (instant `429`), then the API
/// key (instant `401`), then request validation (instant `400`), then the simulated work time (after its turn,
/// when serial), then the random fault draw (`429` or `500`, after the delay, like an overloaded backend), then
/// the answer.
async fn embeddings(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let stats = state.stats.clone();
    stats.request();
    let (_in_flight, now) = stats.enter();
    let answering = stats.answering();
    let response = answer(state, body, now).await;
    answering.answered();
    response
}

async fn answer(state: Arc<AppState>, body: Result<Bytes, BytesRejection>, now: u64) -> Response {
    let config = &state.config;
    let stats = &state.stats;
    if config.max_concurrency > 0 && now > config.max_concurrency as u64 {
        stats.throttled_429();
        tracing::debug!(in_flight = now, "over --max-concurrency, answering 429");
        return throttled("Too many concurrent requests; retry after 1 second.");
    }
    if state.started.elapsed().as_secs() < config.unauthorized_for_secs {
        stats.unauthorized_401();
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided (injected by --unauthorized-for-secs).",
        );
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
        Some("base64") if config.refuse_base64 => {
            stats.refused_base64();
            return invalid_request(r#"encoding_format "base64" is not supported; use "float""#);
        }
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

    if config.serial {
        let turn = state.serial.clone().lock_owned();
        let work = tokio::spawn(async move {
            let _turn = turn.await;
            work(&state, texts, model, base64).await
        });
        return work.await.unwrap_or_else(|err| {
            openai_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, &format!("work failed: {err}"))
        });
    }
    work(&state, texts, model, base64).await
}

/// The simulated work time, the fault draw and the vectors.
async fn work(state: &AppState, texts: Vec<String>, model: String, base64: bool) -> Response {
    let (config, stats) = (&state.config, &state.stats);
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
    let usage = EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens };
    render_response(&vectors, dim, model, base64, usage).map_err(|err| err.to_string())
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
