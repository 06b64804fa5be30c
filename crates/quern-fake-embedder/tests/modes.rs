//! The ways self-hosted servers differ, as the fake embedder plays them: one request computed at a time (and the
//! ones a client gave up on still computed), floats only, a key refused for a while.

use std::time::{Duration, Instant};

use quern_fake_embedder::{spawn, FakeEmbedderConfig, RunningFakeEmbedder};
use serde_json::{json, Value};

async fn post(server: &RunningFakeEmbedder, body: &Value, timeout: Duration) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new().post(format!("{}/v1/embeddings", server.url())).timeout(timeout).json(body).send().await
}

fn batch() -> Value {
    json!({"model": "m", "input": ["alpha beta", "gamma"]})
}

#[tokio::test]
async fn serial_computes_one_request_at_a_time_in_order() {
    let server = spawn(FakeEmbedderConfig { serial: true, latency_ms: 200, ..Default::default() }).await.unwrap();
    let started = Instant::now();
    let answers = futures::future::join_all((0..3).map(|_| async {
        let response = post(&server, &batch(), Duration::from_secs(5)).await.expect("answered");
        assert_eq!(response.status(), 200);
        started.elapsed()
    }))
    .await;
    let slowest = answers.iter().max().copied().unwrap_or_default();
    assert!(slowest >= Duration::from_millis(600), "three requests one at a time: {answers:?}");
    let stats = server.stats().snapshot();
    assert_eq!((stats.ok, stats.max_in_flight, stats.abandoned), (3, 3, 0), "{stats:?}");
}

/// A client that gives up does not free the server: its request is computed in its turn, and counted abandoned.
#[tokio::test]
async fn a_request_its_client_gave_up_on_is_still_computed_and_counted() {
    let server = spawn(FakeEmbedderConfig { serial: true, latency_ms: 400, ..Default::default() }).await.unwrap();
    let gave_up = post(&server, &batch(), Duration::from_millis(100)).await;
    assert!(gave_up.expect_err("timed out").is_timeout());
    let started = Instant::now();
    let next = post(&server, &batch(), Duration::from_secs(5)).await.expect("answered");
    assert_eq!(next.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(550), "waited for the abandoned one: {:?}", started.elapsed());
    let stats = server.stats().snapshot();
    assert_eq!((stats.abandoned, stats.ok), (1, 2), "{stats:?}");
}

#[tokio::test]
async fn refuse_base64_answers_400_naming_the_encoding_and_serves_floats() {
    let server = spawn(FakeEmbedderConfig { refuse_base64: true, ..Default::default() }).await.unwrap();
    let body = json!({"model": "m", "input": ["x"], "encoding_format": "base64"});
    let refused = post(&server, &body, Duration::from_secs(5)).await.unwrap();
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["message"], r#"encoding_format "base64" is not supported; use "float""#);
    let floats =
        post(&server, &json!({"model": "m", "input": ["x"], "encoding_format": "float"}), Duration::from_secs(5))
            .await
            .unwrap();
    assert_eq!(floats.status(), 200);
    let stats = server.stats().snapshot();
    assert_eq!((stats.refused_base64, stats.rejected_400, stats.ok), (1, 1, 1), "{stats:?}");
}

#[tokio::test]
async fn unauthorized_for_secs_answers_401_then_serves() {
    let server = spawn(FakeEmbedderConfig { unauthorized_for_secs: 1, ..Default::default() }).await.unwrap();
    let refused = post(&server, &batch(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(refused.status(), 401);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_api_key");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post(&server, &batch(), Duration::from_secs(5)).await.unwrap().status(), 200);
    let stats = server.stats().snapshot();
    assert_eq!((stats.unauthorized_401, stats.ok), (1, 1), "{stats:?}");
}
