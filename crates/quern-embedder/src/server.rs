//! HTTP routes: `POST /v1/embeddings`, `GET /v1/models`, `GET /healthz` (and `/health`), `GET /stats`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quern_embed::wire::{render_response, EmbeddingRequest, EmbeddingUsage};
use serde_json::json;

use crate::model::Embedder;
use crate::pool::{Busy, Pool, PoolError};
use crate::stats::Stats;

/// Largest request body read: a full batch of 64 texts of 200 KB each. A text counts only up to 256 tokens, so
/// bigger bodies would be tokenizing work for nothing.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Shared by all handlers.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) model_id: String,
    pub(crate) max_batch: usize,
    pub(crate) embedder: Arc<Embedder>,
    pub(crate) pool: Pool,
    pub(crate) stats: Arc<Stats>,
}

impl AppState {
    /// The id itself, or the Hugging Face name (`sentence-transformers/all-MiniLM-L6-v2`) that TEI and vLLM use.
    fn serves(&self, model: &str) -> bool {
        model == self.model_id || model.strip_prefix("sentence-transformers/") == Some(self.model_id.as_str())
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/healthz", get(health))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    Json(state.stats.snapshot()).into_response()
}

fn model_object(id: &str) -> serde_json::Value {
    json!({ "id": id, "object": "model", "created": 0, "owned_by": "quern" })
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({ "object": "list", "data": [model_object(&state.model_id)] })).into_response()
}

async fn model(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if state.serves(&id) {
        Json(model_object(&state.model_id)).into_response()
    } else {
        model_not_found(&id)
    }
}

/// Checks in the order a provider does: the body, the model, the inputs (instant `4xx`), then admission (instant
/// `503`), then the work.
async fn embeddings(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    state.stats.request();
    let response = answer(&state, body).await.unwrap_or_else(|refusal| refusal);
    match response.status() {
        StatusCode::OK => {}
        StatusCode::SERVICE_UNAVAILABLE => state.stats.busy(),
        status if status.is_client_error() => state.stats.rejected(),
        _ => state.stats.error(),
    }
    response
}

async fn answer(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, Response> {
    let body = body
        .map_err(|rejection| openai_error(rejection.status(), "invalid_request_error", None, &rejection.body_text()))?;
    let request: EmbeddingRequest = serde_json::from_slice(&body).map_err(|err| {
        invalid_request(&format!(
            "Could not parse the JSON body: {err}. 'input' must be a string or an array of strings."
        ))
    })?;
    drop(body);
    if !state.serves(&request.model) {
        return Err(model_not_found(&request.model));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid_request(&format!("'encoding_format' must be 'float' or 'base64', not '{other}'.")))
        }
    };
    let texts = request.input.into_vec();
    if texts.is_empty() {
        return Err(invalid_request("'input' must not be an empty array."));
    }
    if let Some(index) = texts.iter().position(String::is_empty) {
        return Err(invalid_request(&format!("'input[{index}]' must not be an empty string.")));
    }
    if texts.len() > state.max_batch {
        return Err(invalid_request(&format!(
            "'input' has {} items, more than the maximum of {} per request.",
            texts.len(),
            state.max_batch
        )));
    }
    let admission = state.pool.try_admit(texts.len()).map_err(busy)?;

    // Tokenizing 64 long texts takes milliseconds: off the async threads.
    let embedder = Arc::clone(&state.embedder);
    let ids = tokio::task::spawn_blocking(move || {
        texts.iter().map(|text| embedder.tokenize(text)).collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|err| server_error(&format!("tokenizing task failed: {err}")))?
    .map_err(|err| server_error(&err.to_string()))?;
    let tokens: u64 = ids.iter().map(|ids| ids.len() as u64).sum();
    let count = ids.len();
    let vectors = state.pool.embed(&admission, ids).await.map_err(|err| {
        tracing::error!(%err, "embedding failed");
        match err {
            PoolError::Stopped => unavailable("The server is shutting down."),
            PoolError::Embed(err) => server_error(&err.to_string()),
        }
    })?;
    let usage = EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens };
    let body = render_response(&vectors, state.embedder.dim(), &request.model, base64, usage)
        .map_err(|err| server_error(&err.to_string()))?;
    drop(admission);
    state.stats.ok(count);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn invalid_request(message: &str) -> Response {
    openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
}

fn model_not_found(model: &str) -> Response {
    let message = format!("The model '{model}' does not exist or you do not have access to it.");
    openai_error(StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found"), &message)
}

fn server_error(message: &str) -> Response {
    openai_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, message)
}

fn unavailable(message: &str) -> Response {
    openai_error(StatusCode::SERVICE_UNAVAILABLE, "server_error", None, message)
}

/// `503` with `Retry-After` in whole seconds, as a provider's overload answer.
fn busy(busy: Busy) -> Response {
    let seconds = busy.retry_after.as_secs().max(1);
    let mut response = unavailable(&format!("The server is busy: its queue is full. Retry after {seconds} s."));
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// An error in OpenAI's format, so clients parse it as they would the real thing.
fn openai_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let body = json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    (status, Json(body)).into_response()
}
