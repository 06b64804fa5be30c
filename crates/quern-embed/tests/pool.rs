//! The embedding pool against a real HTTP server (the fake embedder): the adaptive limit spares a provider that
//! takes only a few requests at once, and a per-minute request budget spaces requests out.

use std::time::Duration;

use quern_embed::{EmbeddingClient, EmbeddingClientConfig, EmbeddingPool, PoolConfig, RetryPolicy};
use quern_fake_embedder::{embed_text, FakeEmbedderConfig, RunningFakeEmbedder, StatsSnapshot};
use tokio::time::Instant;

const DIM: usize = 8;

fn client(server: &RunningFakeEmbedder) -> EmbeddingClient {
    EmbeddingClient::new(&EmbeddingClientConfig {
        url: server.url(),
        model: "test".into(),
        api_key: None,
        dimension: DIM,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        encoding: quern_embed::VectorEncoding::Base64,
    })
    .expect("client")
}

fn pool_config(max_in_flight: usize, batch_size: usize) -> PoolConfig {
    PoolConfig {
        batch_size,
        max_in_flight,
        adaptive_concurrency: false,
        max_requests_per_minute: None,
        max_tokens_per_minute: None,
        linger: Duration::ZERO,
        max_batch_tokens: 1_000_000,
        chars_per_token: 4.0,
        retry: RetryPolicy { max_elapsed: Duration::from_secs(60), ..RetryPolicy::default() },
    }
}

fn texts(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("chunk number {i} of the ledger")).collect()
}

/// Embeds `count` chunks, as several jobs would, through a pool of `config` against a provider that takes four
/// requests at once and answers in 50 ms; checks every vector and returns the provider's counters.
async fn embed_against_a_provider_taking_four(config: PoolConfig, count: usize) -> StatsSnapshot {
    let server = quern_fake_embedder::spawn(FakeEmbedderConfig {
        dim: DIM,
        latency_ms: 50,
        max_concurrency: 4,
        ..Default::default()
    })
    .await
    .expect("fake embedder");
    let pool = EmbeddingPool::new(client(&server), config);
    let texts = texts(count);
    let jobs = texts.chunks(10).map(|job| {
        let pool = pool.clone();
        let job: Vec<String> = job.to_vec();
        tokio::spawn(async move {
            let refs: Vec<&str> = job.iter().map(String::as_str).collect();
            let vectors = pool.embed_all(&refs).await.expect("every chunk gets its vector");
            (job, vectors)
        })
    });
    for job in futures::future::join_all(jobs).await {
        let (job, vectors) = job.expect("job task");
        assert_eq!(vectors.len(), job.len());
        for (text, vector) in job.iter().zip(vectors) {
            assert_eq!(vector, embed_text(text, DIM), "the vector of {text:?}");
        }
    }
    server.stats().snapshot()
}

#[tokio::test]
async fn the_adaptive_limit_spares_a_provider_with_a_low_concurrency_cap() {
    // 280 chunks in requests of 4: 70 requests, about 0.9 s at four in flight. Fixed at 16, twelve requests are
    // throttled at once and retried together each second (`Retry-After: 1`) while four slots stay busy: about
    // 24 429s. Adaptive starts at 4, overshoots once in slow start, then probes 5 every ~8 round trips: a handful.
    let chunks = 280;
    let fixed = embed_against_a_provider_taking_four(pool_config(16, 4), chunks).await;
    let adaptive =
        embed_against_a_provider_taking_four(PoolConfig { adaptive_concurrency: true, ..pool_config(16, 4) }, chunks)
            .await;
    eprintln!("fixed: {fixed:?}\nadaptive: {adaptive:?}");
    assert_eq!(fixed.inputs, chunks as u64);
    assert_eq!(adaptive.inputs, chunks as u64);
    assert!(fixed.throttled_429 >= 12, "16 at once against 4 are throttled: {fixed:?}");
    assert!(
        adaptive.throttled_429 * 3 <= fixed.throttled_429,
        "adaptive: {} 429s, fixed: {}",
        adaptive.throttled_429,
        fixed.throttled_429
    );
}

#[tokio::test]
async fn a_requests_per_minute_budget_spaces_requests() {
    let server =
        quern_fake_embedder::spawn(FakeEmbedderConfig { dim: DIM, ..Default::default() }).await.expect("fake embedder");
    let stats = server.stats();
    // 600 a minute: ten at once (a second's worth), then one every 100 ms.
    let config = PoolConfig { max_requests_per_minute: Some(600), ..pool_config(16, 1) };
    let pool = EmbeddingPool::new(client(&server), config);
    let texts = texts(25);
    let started = Instant::now();
    let all = {
        let pool = pool.clone();
        let texts = texts.clone();
        tokio::spawn(async move {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            pool.embed_all(&refs).await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = stats.snapshot().requests;
    // At most the burst plus what the budget refilled by the time of the count (whatever the machine's speed).
    let allowed = 10 + (started.elapsed().as_secs_f64() * 10.0).floor() as u64;
    assert!((10..=allowed).contains(&sent), "{sent} requests after {:?}, {allowed} allowed", started.elapsed());
    let vectors = all.await.expect("task").expect("every chunk gets its vector");
    assert_eq!(vectors.len(), texts.len());
    assert_eq!(stats.snapshot().requests, 25);
    assert!(started.elapsed() >= Duration::from_millis(1500), "15 requests beyond the burst take 1.5 s");
}

#[tokio::test]
async fn with_the_adaptive_limit_a_refused_chunk_still_fails_alone() {
    // Each split re-sends part of the request: with per-attempt permits it must take a place again each time.
    let server = quern_fake_embedder::spawn(FakeEmbedderConfig {
        dim: DIM,
        reject_marker: Some("FORBIDDEN".into()),
        ..Default::default()
    })
    .await
    .expect("fake embedder");
    let config = PoolConfig { adaptive_concurrency: true, linger: Duration::from_millis(50), ..pool_config(1, 8) };
    let pool = EmbeddingPool::new(client(&server), config);
    let mut texts = texts(8);
    texts[5] = "a FORBIDDEN chunk".into();
    let answers = futures::future::join_all(texts.iter().map(|text| {
        let pool = pool.clone();
        async move { pool.embed_all(&[text.as_str()]).await }
    }))
    .await;
    for (text, answer) in texts.iter().zip(answers) {
        match answer {
            Ok(vectors) => assert_eq!(vectors, vec![embed_text(text, DIM)]),
            Err(error) => assert!(text.contains("FORBIDDEN"), "{text:?} failed: {error}"),
        }
    }
    assert_eq!(server.stats().snapshot().inputs, 7);
}
