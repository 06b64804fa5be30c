//! End-to-end checks over loopback HTTP: answers, limits, injected faults and counters.

use std::time::Duration;

use quern_embed::wire::EmbeddingResponse;
use quern_fake_embedder::{embed_text, spawn, FakeEmbedderConfig, RunningFakeEmbedder, StatsSnapshot};
use serde_json::{json, Value};

async fn start(config: FakeEmbedderConfig) -> (RunningFakeEmbedder, reqwest::Client) {
    let server = spawn(config).await.expect("fake embedder starts");
    (server, reqwest::Client::new())
}

async fn post(client: &reqwest::Client, server: &RunningFakeEmbedder, body: &Value) -> reqwest::Response {
    client.post(format!("{}/v1/embeddings", server.url())).json(body).send().await.expect("request reaches the server")
}

async fn error_type(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("error body is JSON");
    body["error"]["type"].as_str().expect("OpenAI-style error").to_owned()
}

#[tokio::test]
async fn answers_a_batch_in_order() {
    let config = FakeEmbedderConfig { dim: 64, ..Default::default() };
    let (server, client) = start(config).await;
    let texts = ["alpha beta", "", "gamma delta epsilon"];
    let response = post(&client, &server, &json!({"model": "m-1", "input": texts})).await;
    assert_eq!(response.status(), 200);
    let raw: Value = response.json().await.unwrap();
    assert_eq!(raw["object"], "list");
    assert_eq!(raw["data"][0]["object"], "embedding");
    assert_eq!(raw["usage"]["prompt_tokens"], 5);

    // The body also parses as the wire type the real client uses.
    let parsed: EmbeddingResponse = serde_json::from_value(raw).unwrap();
    assert_eq!(parsed.model, "m-1");
    assert_eq!(parsed.data.len(), texts.len());
    for (i, (data, text)) in parsed.data.iter().zip(texts).enumerate() {
        assert_eq!(data.index, i);
        assert_eq!(data.embedding, embed_text(text, 64), "vector {i} survives JSON exactly");
    }
    assert_eq!(parsed.usage.unwrap().total_tokens, 5);

    // A single string is accepted too.
    let response = post(&client, &server, &json!({"model": "m-1", "input": "solo"})).await;
    let parsed: EmbeddingResponse = response.json().await.unwrap();
    assert_eq!(parsed.data.len(), 1);
    assert_eq!(parsed.data[0].embedding.len(), 64);

    let stats = server.stats().snapshot();
    assert_eq!((stats.requests, stats.ok, stats.inputs), (2, 2, 4));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn answers_base64_when_asked_and_refuses_an_unknown_encoding() {
    let (server, client) = start(FakeEmbedderConfig { dim: 16, ..Default::default() }).await;
    let texts = ["alpha beta", "gamma"];
    let body = json!({"model": "m", "input": texts, "encoding_format": "base64"});
    let raw: Value = post(&client, &server, &body).await.json().await.unwrap();
    assert!(raw["data"][0]["embedding"].is_string(), "{raw}");
    let parsed: EmbeddingResponse = serde_json::from_value(raw).unwrap();
    for (data, text) in parsed.data.iter().zip(texts) {
        assert_eq!(data.embedding, embed_text(text, 16), "vector of {text:?} survives base64 exactly");
    }
    let floats: Value = post(&client, &server, &json!({"model": "m", "input": texts, "encoding_format": "float"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(floats["data"][0]["embedding"].is_array(), "{floats}");
    let unknown = post(&client, &server, &json!({"model": "m", "input": texts, "encoding_format": "hex"})).await;
    assert_eq!(unknown.status(), 400);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rejects_invalid_requests_with_400() {
    let config = FakeEmbedderConfig { max_batch: 2, ..Default::default() };
    let (server, client) = start(config).await;

    let too_many = post(&client, &server, &json!({"model": "m", "input": ["a", "b", "c"]})).await;
    assert_eq!(too_many.status(), 400);
    assert_eq!(error_type(too_many).await, "invalid_request_error");

    let empty = post(&client, &server, &json!({"model": "m", "input": []})).await;
    assert_eq!(empty.status(), 400);
    assert_eq!(error_type(empty).await, "invalid_request_error");

    let malformed = client
        .post(format!("{}/v1/embeddings", server.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(error_type(malformed).await, "invalid_request_error");

    let at_limit = post(&client, &server, &json!({"model": "m", "input": ["a", "b"]})).await;
    assert_eq!(at_limit.status(), 200);

    let stats = server.stats().snapshot();
    assert_eq!((stats.requests, stats.rejected_400, stats.ok), (4, 3, 1));
}

#[tokio::test]
async fn error_rate_one_answers_500() {
    let config = FakeEmbedderConfig { error_rate: 1.0, ..Default::default() };
    let (server, client) = start(config).await;
    for _ in 0..3 {
        let response = post(&client, &server, &json!({"model": "m", "input": ["x"]})).await;
        assert_eq!(response.status(), 500);
        assert_eq!(error_type(response).await, "server_error");
    }
    let stats = server.stats().snapshot();
    assert_eq!((stats.errors_500, stats.ok, stats.inputs), (3, 0, 0));
}

#[tokio::test]
async fn throttle_rate_one_answers_429_with_retry_after() {
    let config = FakeEmbedderConfig { throttle_rate: 1.0, error_rate: 1.0, ..Default::default() };
    let (server, client) = start(config).await;
    let response = post(&client, &server, &json!({"model": "m", "input": ["x"]})).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let stats = server.stats().snapshot();
    assert_eq!((stats.throttled_429, stats.errors_500), (1, 0));
}

#[tokio::test]
async fn max_concurrency_turns_away_the_extra_request() {
    let config = FakeEmbedderConfig { max_concurrency: 1, latency_ms: 300, ..Default::default() };
    let (server, client) = start(config).await;
    let body = json!({"model": "m", "input": ["slow"]});
    let first = tokio::spawn({
        let (client, url, body) = (client.clone(), server.url(), body.clone());
        async move { client.post(format!("{url}/v1/embeddings")).json(&body).send().await.unwrap().status() }
    });
    // Wait until the first request is inside the server, then send the second.
    wait_for(&server, |s| s.in_flight == 1).await;
    let second = post(&client, &server, &body).await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    assert_eq!(first.await.unwrap(), 200);

    let stats = server.stats().snapshot();
    assert_eq!((stats.ok, stats.throttled_429, stats.max_in_flight, stats.in_flight), (1, 1, 2, 0));
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let config = FakeEmbedderConfig { latency_ms: 150, jitter_ms: 50, ..Default::default() };
    let (server, client) = start(config).await;
    let started = std::time::Instant::now();
    let response = post(&client, &server, &json!({"model": "m", "input": ["x"]})).await;
    assert_eq!(response.status(), 200);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(150), "answered after {elapsed:?}");
}

#[tokio::test]
async fn healthz_and_stats_endpoints() {
    let (server, client) = start(FakeEmbedderConfig::default()).await;
    let health = client.get(format!("{}/healthz", server.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    post(&client, &server, &json!({"model": "m", "input": ["a b", "c"]})).await;
    let stats: StatsSnapshot =
        client.get(format!("{}/stats", server.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.inputs, 2);
    assert_eq!(stats.ok, 1);
    assert_eq!(stats.max_in_flight, 1);
    // The JSON carries exactly the documented field names.
    let raw: Value = client.get(format!("{}/stats", server.url())).send().await.unwrap().json().await.unwrap();
    for field in ["requests", "inputs", "ok", "errors_500", "throttled_429", "rejected_400", "max_in_flight"] {
        assert!(raw[field].is_u64(), "missing {field} in {raw}");
    }
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let (server, client) = start(FakeEmbedderConfig::default()).await;
    let url = server.url();
    server.shutdown().await.unwrap();
    assert!(client.get(format!("{url}/healthz")).send().await.is_err());
}

#[tokio::test]
async fn invalid_config_is_refused() {
    let config = FakeEmbedderConfig { error_rate: 2.0, ..Default::default() };
    let err = quern_fake_embedder::bind("127.0.0.1:0", config).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("error_rate"), "{err}");
}

/// Polls the in-process counters until `done` holds (or fails after two seconds).
async fn wait_for(server: &RunningFakeEmbedder, done: impl Fn(&StatsSnapshot) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !done(&server.stats().snapshot()) {
        assert!(std::time::Instant::now() < deadline, "condition not reached: {:?}", server.stats().snapshot());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
