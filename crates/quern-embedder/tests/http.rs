//! The server over loopback HTTP: the OpenAI answer in both encodings, refusals in OpenAI's format, the model
//! list, and admission: a full queue answered `503` at once, a request whose client left never computed.

mod common;

use std::time::{Duration, Instant};

use common::{embedder, max_diff, one_token_words};
use quern_embed::wire::EmbeddingResponse;
use quern_embedder::{spawn_with, EmbedderConfig, RunningEmbedder};
use serde_json::{json, Value};

async fn start(config: EmbedderConfig) -> RunningEmbedder {
    spawn_with(config, embedder()).await.expect("embedder starts")
}

async fn post(server: &RunningEmbedder, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/embeddings", server.url()))
        .json(body)
        .send()
        .await
        .expect("request reaches the server")
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error body is JSON");
    assert!(body["error"]["message"].is_string(), "OpenAI-style error: {body}");
    (status, body["error"].clone())
}

/// Polls the server's counters until `ready` holds (at most 30 s).
async fn wait_for(server: &RunningEmbedder, what: &str, ready: impl Fn(&quern_embedder::StatsSnapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&server.stats().snapshot()) {
        assert!(Instant::now() < deadline, "gave up waiting for {what}: {:?}", server.stats().snapshot());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn answers_floats_and_base64_that_decode_to_the_models_vectors() {
    let server = start(EmbedderConfig::default()).await;
    let texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."];
    let expected = embedder().embed(&texts).unwrap();

    let raw: Value = post(&server, &json!({"model": "all-MiniLM-L6-v2", "input": texts})).await.json().await.unwrap();
    assert_eq!(raw["object"], "list");
    assert_eq!(raw["data"][0]["object"], "embedding");
    assert!(raw["data"][0]["embedding"].is_array(), "float is the default");
    let tokens: usize = texts.iter().map(|t| embedder().tokenize(t).unwrap().len()).sum();
    assert_eq!(raw["usage"]["prompt_tokens"], tokens);
    assert_eq!(raw["usage"]["total_tokens"], tokens);
    let floats: EmbeddingResponse = serde_json::from_value(raw).unwrap();

    let body = json!({"model": "all-MiniLM-L6-v2", "input": texts, "encoding_format": "base64"});
    let raw: Value = post(&server, &body).await.json().await.unwrap();
    assert!(raw["data"][0]["embedding"].is_string(), "{raw}");
    let base64: EmbeddingResponse = serde_json::from_value(raw).unwrap();

    for parsed in [&floats, &base64] {
        assert_eq!(parsed.model, "all-MiniLM-L6-v2");
        assert_eq!(parsed.data.len(), 3);
        for (i, (data, vector)) in parsed.data.iter().zip(&expected).enumerate() {
            assert_eq!(data.index, i);
            assert_eq!(data.embedding.len(), 384);
            assert!(max_diff(&data.embedding, vector) < 1e-6, "vector {i}");
        }
    }
    for (f, b) in floats.data.iter().zip(&base64.data) {
        assert_eq!(f.embedding, b.embedding, "the same f32s either way");
    }

    // One string is accepted too, and the Hugging Face name of the model.
    let one = json!({"model": "sentence-transformers/all-MiniLM-L6-v2", "input": texts[1]});
    let parsed: EmbeddingResponse = post(&server, &one).await.json().await.unwrap();
    assert_eq!(parsed.data.len(), 1);
    assert!(max_diff(&parsed.data[0].embedding, &expected[1]) < 1e-6);
    assert_eq!(parsed.model, "sentence-transformers/all-MiniLM-L6-v2", "the model named is echoed");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn refuses_bad_requests_in_openais_format() {
    let server = start(EmbedderConfig { max_batch: 2, max_queued_inputs: 4, ..Default::default() }).await;
    let m = "all-MiniLM-L6-v2";
    let bad = [
        json!({"model": m, "input": []}),
        json!({"model": m, "input": ""}),
        json!({"model": m, "input": ["fine", ""]}),
        json!({"model": m, "input": 5}),
        json!({"model": m, "input": [1, 2, 3]}),
        json!({"model": m, "input": [["nested"]]}),
        json!({"model": m}),
        json!({"input": ["no model"]}),
        json!({"model": m, "input": ["a", "b", "c"]}),
        json!({"model": m, "input": ["a"], "encoding_format": "hex"}),
    ];
    for body in &bad {
        let (status, error) = error_of(post(&server, body).await).await;
        assert_eq!((status, error["type"].as_str()), (400, Some("invalid_request_error")), "{body}: {error}");
    }
    let malformed = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", server.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(malformed).await.0, 400);

    let (status, error) =
        error_of(post(&server, &json!({"model": "text-embedding-3-small", "input": "x"})).await).await;
    assert_eq!((status, error["code"].as_str()), (404, Some("model_not_found")), "{error}");

    let stats = server.stats().snapshot();
    assert_eq!((stats.rejected_4xx, stats.ok, stats.inputs), (bad.len() as u64 + 2, 0, 0));
}

#[tokio::test]
async fn lists_its_model_and_answers_health_checks() {
    let server = start(EmbedderConfig { model_id: "minilm".into(), ..Default::default() }).await;
    let models: Value = reqwest::get(format!("{}/v1/models", server.url())).await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "minilm");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(reqwest::get(format!("{}/v1/models/minilm", server.url())).await.unwrap().status(), 200);
    let unknown = reqwest::get(format!("{}/v1/models/all-MiniLM-L6-v2", server.url())).await.unwrap();
    assert_eq!(error_of(unknown).await.1["code"], "model_not_found");
    for path in ["/healthz", "/health"] {
        let health = reqwest::get(format!("{}{path}", server.url())).await.unwrap();
        assert_eq!(health.text().await.unwrap(), "ok");
    }
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_at_once() {
    let config = EmbedderConfig { workers: 1, max_batch: 4, max_queued_inputs: 4, ..Default::default() };
    let server = start(config).await;
    let long = one_token_words(250);
    let busy_body = json!({"model": "all-MiniLM-L6-v2", "input": [long, long, long, long]});
    let first = {
        let (url, body) = (server.url(), busy_body.clone());
        tokio::spawn(
            async move { reqwest::Client::new().post(format!("{url}/v1/embeddings")).json(&body).send().await },
        )
    };
    wait_for(&server, "the first request to be admitted", |s| s.queued_inputs == 4).await;

    let started = Instant::now();
    let refused = post(&server, &json!({"model": "all-MiniLM-L6-v2", "input": "one more"})).await;
    let waited = started.elapsed();
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
    let (status, error) = error_of(refused).await;
    assert_eq!((status, error["type"].as_str()), (503, Some("server_error")), "{error}");
    assert!(waited < Duration::from_secs(1), "refused at once, not after {waited:?}");

    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 200, "the admitted request is answered");
    let stats = server.stats().snapshot();
    assert_eq!((stats.ok, stats.inputs, stats.busy_503, stats.queued_inputs), (1, 4, 1, 0));
    // Room again once the first is answered.
    assert_eq!(post(&server, &json!({"model": "all-MiniLM-L6-v2", "input": "one more"})).await.status(), 200);
}

#[tokio::test]
async fn a_request_whose_client_went_away_is_not_computed() {
    let config = EmbedderConfig { workers: 1, max_batch: 4, max_queued_inputs: 8, ..Default::default() };
    let server = start(config).await;
    let long = one_token_words(250);
    let busy_body = json!({"model": "all-MiniLM-L6-v2", "input": [long, long]});
    let url = server.url();
    let first = tokio::spawn({
        let url = url.clone();
        async move { reqwest::Client::new().post(format!("{url}/v1/embeddings")).json(&busy_body).send().await }
    });
    wait_for(&server, "the first request to be running", |s| s.running_batches == 1).await;

    // A second request queues behind the first, then its client gives up (as a timeout would).
    let abandoned = tokio::spawn({
        let url = url.clone();
        let body = json!({"model": "all-MiniLM-L6-v2", "input": "never computed"});
        async move { reqwest::Client::new().post(format!("{url}/v1/embeddings")).json(&body).send().await }
    });
    wait_for(&server, "the second request to be admitted", |s| s.queued_inputs == 3).await;
    // Tokenizing one short text and queueing it takes well under this; the first pass takes seconds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.stats().snapshot().running_batches, 1, "the first pass is still running");
    abandoned.abort();

    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    wait_for(&server, "the abandoned input to be skipped", |s| s.skipped_inputs == 1).await;
    let stats = server.stats().snapshot();
    assert_eq!((stats.ok, stats.inputs, stats.queued_inputs), (1, 2, 0), "{stats:?}");
}
