//! With the `otlp` feature, a job's span is exported over OTLP/HTTP as a child of the producer's `traceparent`.
//! Run by scripts/test.sh as `cargo test -p quern-worker --features otlp --test otlp`: its own process, because
//! it installs the global tracing subscriber.
#![cfg(feature = "otlp")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use clap::Parser;
use quern_core::{Job, Outcome, TraceParent};
use quern_testkit::fake_embedder::{self, FakeEmbedderConfig};
use quern_testkit::{wait_until, TestDatabase, TEST_DIM};
use quern_worker::config::LogFormat;
use quern_worker::{consumer, telemetry, WorkerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_span_is_exported_as_a_child_of_the_producers_trace() {
    // An OTLP collector: records the bodies posted to /v1/traces.
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("lock").push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let collector = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let endpoint = format!("http://{collector}/v1/traces");
    let guard = telemetry::init(LogFormat::Json, Some(&endpoint));
    let db = TestDatabase::create(TEST_DIM).await;
    let embedder =
        fake_embedder::spawn(FakeEmbedderConfig { dim: TEST_DIM, ..Default::default() }).await.expect("embedder");
    let config = WorkerConfig::try_parse_from([
        "quern-worker",
        "--database-url",
        &db.url,
        "--embedding-url",
        &embedder.url(),
        "--embedding-dim",
        &TEST_DIM.to_string(),
    ])
    .expect("flags");
    let pipeline = consumer::build_pipeline(&config).await.expect("pipeline");
    let producer_span = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").expect("valid");
    let job = Job::upsert("c", "traced", "a document whose journey is traced");
    assert_eq!(pipeline.process_traced(&job.encode(), &Default::default(), 0, Some(producer_span)).await, Outcome::Ack);

    // Shutting the provider down flushes the batch to the collector.
    tokio::task::spawn_blocking(move || drop(guard)).await.expect("flush");
    let exported = wait_until(Duration::from_secs(10), || {
        let received = received.clone();
        async move { !received.lock().expect("lock").is_empty() }
    })
    .await;
    assert!(exported, "no span reached the collector");
    let bodies = received.lock().expect("lock").concat();
    let contains = |needle: &[u8]| bodies.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&producer_span.trace_id), "the job span is in the producer's trace");
    assert!(contains(&producer_span.parent_id), "its parent is the producer's span");
    assert!(contains(job.job_id.to_string().as_bytes()), "the span carries the job id");
    db.drop_database().await;
}
