//! The pool against providers that refuse: every request alike, or by not answering at all (no chunk fails for it;
//! the provider is probed until it answers), or in words that blame no one (decided by asking the provider with a
//! harmless input), and against one that is too slow for the timeout (resent once it caught up, with more time).

use std::time::Duration;

use quern_embed::provider::PROBE_EVERY;
use quern_embed::{Availability, EmbedError, EmbeddingClient, EmbeddingClientConfig, EmbeddingPool, PoolConfig};
use quern_embed::{RetryPolicy, VectorEncoding};
use quern_fake_embedder::{embed_text, FakeEmbedderConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DIM: usize = 8;

fn pool(url: &str, timeout: Duration, adaptive: bool) -> EmbeddingPool {
    let client = EmbeddingClient::new(&EmbeddingClientConfig {
        url: url.into(),
        model: "test".into(),
        api_key: None,
        dimension: DIM,
        request_timeout: timeout,
        connect_timeout: Duration::from_secs(5),
        encoding: VectorEncoding::Float,
    })
    .expect("client");
    let config = PoolConfig {
        batch_size: 4,
        max_in_flight: 4,
        adaptive_concurrency: adaptive,
        max_requests_per_minute: None,
        max_tokens_per_minute: None,
        linger: Duration::from_millis(20),
        max_batch_tokens: 1_000_000,
        chars_per_token: 4.0,
        retry: RetryPolicy { max_elapsed: Duration::from_secs(2), ..RetryPolicy::default() },
    };
    EmbeddingPool::new(client, config)
}

/// A revoked key: the chunks of the refused request get `Unavailable` (no job's fault), requests are held back
/// without being sent, and a probe finds the provider again once the key works.
#[tokio::test]
async fn a_provider_refusing_every_request_fails_no_chunk_for_it_and_is_probed_until_it_answers() {
    let fake = FakeEmbedderConfig { dim: DIM, unauthorized_for_secs: 2, ..Default::default() };
    let server = quern_fake_embedder::spawn(fake).await.expect("fake embedder");
    let pool = pool(&server.url(), Duration::from_secs(5), true);
    let mut availability = pool.availability();
    let refused = pool.embed_all(&["alpha", "beta"]).await.expect_err("the key is refused");
    assert!(matches!(refused, EmbedError::Unavailable(_)), "{refused:?}");
    assert_eq!(
        refused.to_string(),
        "embedding API answered 401: Incorrect API key provided (injected by --unauthorized-for-secs)."
    );
    assert!(matches!(
        &*availability.borrow_and_update(),
        Availability::Refusing(EmbedError::Status { status: 401, .. })
    ));
    let held = pool.embed_all(&["gamma"]).await.expect_err("held back");
    assert!(matches!(held, EmbedError::Unavailable(_)));
    assert_eq!(server.stats().snapshot().requests, 1, "a held-back chunk sends nothing");

    tokio::time::timeout(PROBE_EVERY * 2 + Duration::from_secs(2), availability.wait_for(Availability::is_available))
        .await
        .expect("the probe finds the provider again")
        .expect("pool alive");
    let vectors = pool.embed_all(&["alpha", "beta"]).await.expect("answered");
    assert_eq!(vectors[1], embed_text("beta", DIM));
    let stats = server.stats().snapshot();
    assert!(stats.requests <= 4, "one refused request, a probe or two, one answer: {stats:?}");
}

/// A provider nobody answers for (connection refused after every retry): no chunk fails for it, and the probe
/// finds it once a server listens on its port again.
#[tokio::test]
async fn a_provider_that_cannot_be_reached_fails_no_chunk_for_it_and_is_found_again() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let pool = pool(&format!("http://{addr}"), Duration::from_secs(5), true);
    let mut availability = pool.availability();
    let refused = pool.embed_all(&["alpha"]).await.expect_err("nothing listens");
    assert!(matches!(refused, EmbedError::Unavailable(_)), "{refused:?}");
    assert!(matches!(&*availability.borrow_and_update(), Availability::Refusing(EmbedError::Transport { .. })));
    assert!(matches!(pool.embed_all(&["beta"]).await, Err(EmbedError::Unavailable(_))), "held back meanwhile");

    let fake = FakeEmbedderConfig { dim: DIM, ..Default::default() };
    let _server = quern_fake_embedder::spawn_at(addr, fake).await.expect("fake embedder on the same port");
    tokio::time::timeout(PROBE_EVERY * 2 + Duration::from_secs(2), availability.wait_for(Availability::is_available))
        .await
        .expect("the probe finds the provider")
        .expect("pool alive");
    let vectors = pool.embed_all(&["alpha"]).await.expect("answered");
    assert_eq!(vectors[0], embed_text("alpha", DIM));
}

/// A server that answers `400 Bad Request` with no word of why, to inputs containing `VAGUE`, or to all.
async fn vague_server(refuse_all: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Reads the head and the body (Content-Length), enough for these small requests.
                loop {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&request).into_owned();
                let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
                let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                let inputs: Vec<String> = serde_json::from_value(parsed["input"].clone()).unwrap_or_default();
                let response = if refuse_all || inputs.iter().any(|i| i.contains("VAGUE")) {
                    "HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\nconnection: close\r\n\r\nBad Request".to_owned()
                } else {
                    let data: Vec<_> = inputs
                        .iter()
                        .enumerate()
                        .map(|(index, text)| serde_json::json!({"index": index, "embedding": embed_text(text, DIM)}))
                        .collect();
                    let body = serde_json::json!({"data": data, "model": "test"}).to_string();
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                };
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

/// A refusal that names nothing, while the provider embeds a harmless input: the input's fault, found alone.
#[tokio::test]
async fn an_unclear_refusal_blames_the_input_when_the_provider_embeds_a_harmless_one() {
    let pool = pool(&vague_server(false).await, Duration::from_secs(5), true);
    let texts = ["one", "two VAGUE", "three", "four"];
    let answers = futures::future::join_all(texts.iter().map(|text| {
        let pool = pool.clone();
        async move { pool.embed_all(&[*text]).await }
    }))
    .await;
    for (text, answer) in texts.iter().zip(answers) {
        match answer {
            Ok(vectors) => assert_eq!(vectors, vec![embed_text(text, DIM)]),
            Err(error) => {
                assert!(text.contains("VAGUE"), "{text:?} failed: {error}");
                assert!(matches!(error, EmbedError::Status { status: 400, .. }), "{error:?}");
            }
        }
    }
    assert!(pool.availability().borrow().is_available());
}

/// The same words for every request, the probe's harmless input included: the provider's settings, no job's.
#[tokio::test]
async fn an_unclear_refusal_of_a_harmless_input_too_is_the_providers() {
    let pool = pool(&vague_server(true).await, Duration::from_secs(5), true);
    let refused = pool.embed_all(&["one", "two"]).await.expect_err("refused");
    assert!(matches!(refused, EmbedError::Unavailable(_)), "{refused:?}");
    assert!(!pool.availability().borrow().is_available());
}

/// A server computing one request at a time, slower than the timeout for the last of four sent at once: the
/// timed-out requests are resent once it caught up, with twice the time, and every chunk gets its vector.
#[tokio::test]
async fn timed_out_requests_are_resent_with_more_time_once_the_provider_caught_up() {
    let fake = FakeEmbedderConfig { dim: DIM, serial: true, latency_ms: 400, ..Default::default() };
    let server = quern_fake_embedder::spawn(fake).await.expect("fake embedder");
    // A fixed pool of 4: all four leave at once; the third and fourth wait past 1 s.
    let pool = pool(&server.url(), Duration::from_secs(1), false);
    let texts: Vec<String> = (0..16).map(|i| format!("chunk {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = pool.embed_all(&refs).await.expect("every chunk, after resends");
    assert_eq!(vectors[15], embed_text("chunk 15", DIM));
    let stats = server.stats().snapshot();
    assert!(stats.abandoned >= 1, "a request timed out: {stats:?}");
    assert_eq!(
        stats.inputs as usize,
        16 + 4 * stats.abandoned as usize,
        "abandoned ones were still computed: {stats:?}"
    );
}
