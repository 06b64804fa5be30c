//! Workers with DEFAULT settings against providers as self-hosted servers really are: one that computes one
//! request at a time, one that speaks floats only, one whose key is refused for a while, and one whose content
//! policy refuses a document. Only the services' URLs, the queue prefix and the dimension are set (and an ops
//! port of the worker's own).

use std::process::Stdio;
use std::time::Duration;

use quern_core::Outcome;
use quern_store::JobStatus;
use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::{free_port, http_get, wait_until};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::helpers::{document_of_bytes, document_text, upsert, Harness};

/// `documents` documents of 4 KB through a default worker, against a provider computing one request at a time
/// in `service`; returns once every job succeeded, with the embedding server's counters.
async fn through_a_provider_serving_one_request_at_a_time(
    label: &str,
    service: Duration,
    documents: u64,
    extra: &[&str],
) {
    let embedder = FakeEmbedderConfig { serial: true, latency_ms: service.as_millis() as u64, ..Default::default() };
    let harness = Harness::start(label, embedder).await;
    let jobs: Vec<_> = (0..documents).map(|i| upsert("c", &format!("doc-{i}"), &document_of_bytes(i, 4096))).collect();
    let ids = harness.producer().await.enqueue_many(&jobs).await.expect("enqueue");
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = harness.spawn_default_worker(extra, shutdown.clone());
    let store = harness.db.store();
    let all = wait_until(Duration::from_secs(600), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded + c.dead == documents).unwrap_or(false)
    })
    .await;
    let took = started.elapsed();
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    let counts = store.count_finished(&ids).await.expect("counts");
    let stats = harness.embedder.stats().snapshot();
    eprintln!(
        "{label}: {documents} documents, {} chunks, {} requests at {service:?} each, in {took:?}; timed out (abandoned) {}, \
         most at the provider at once {}",
        counts.chunks, stats.ok, stats.abandoned, stats.max_in_flight
    );
    assert!(all, "every job finished: {counts:?} {stats:?}");
    assert_eq!((counts.succeeded, counts.dead), (documents, 0), "{stats:?}");
    assert_eq!(harness.queues.ready_count(&harness.queues.topology.dead_queue()).await, 0, "nothing dead-lettered");
    assert!(stats.abandoned <= 2, "at most a couple of timed-out requests: {stats:?}");
    assert!(stats.max_in_flight <= 4, "about one at a time, never the 16 of old: {stats:?}");
    assert_eq!(harness.db.duplicate_chunk_rows().await, 0);
    harness.cleanup().await;
}

/// The measured failure, scaled down fivefold in time: a server computing one 32-chunk request at a time in
/// 0.5 s, with a 6 s timeout (the default 30 s in the same proportion). Sixteen requests at once waited 8 s
/// each there: every one timed out, and the jobs went to the dead-letter queue. Now the limit finds one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_serving_one_request_at_a_time_gets_every_job_through_scaled_down() {
    through_a_provider_serving_one_request_at_a_time(
        "serial_fast",
        Duration::from_millis(500),
        250,
        &["--embedding-timeout-secs", "6"],
    )
    .await;
}

/// The full case: 2.5 s a request, the default 30 s timeout, 250 documents of 4 KB. About 105 s (the provider
/// busy all along: 41 requests of 2.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 105 s: scripts/chaos.sh runs it alone, so CI does"]
async fn a_provider_serving_one_request_at_a_time_gets_every_job_through() {
    through_a_provider_serving_one_request_at_a_time("serial", Duration::from_millis(2500), 250, &[]).await;
}

/// Samples of a Prometheus exposition named `name`, summed over their labels.
fn metric(exposition: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = exposition
        .lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A server that refuses `base64`: the refused requests are resent as float, and the worker asks for floats from
/// then on, counted once. Runs the worker binary, so its metrics are its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_refusing_base64_gets_floats_and_every_job_succeeds() {
    let harness = Harness::start("floats", FakeEmbedderConfig { refuse_base64: true, ..Default::default() }).await;
    let jobs: Vec<_> = (0..40).map(|i| upsert("c", &format!("doc-{i}"), &document_text(i, 300))).collect();
    let ids = harness.producer().await.enqueue_many(&jobs).await.expect("enqueue");
    let port = free_port();
    let args = harness.default_worker_args(&["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern-worker"))
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start quern-worker");
    let store = harness.db.store();
    let done = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 40).unwrap_or(false)
    })
    .await;
    let exposition = http_get(port, "/metrics").await.map(|(_, body)| body).unwrap_or_default();
    let _ = worker.kill().await;
    let stats = harness.embedder.stats().snapshot();
    eprintln!("floats: {stats:?}");
    assert!(done, "every job succeeds: {stats:?}");
    assert_eq!(metric(&exposition, "quern_embedding_encoding_fallbacks_total"), Some(1.0), "{exposition}");
    assert_eq!(metric(&exposition, "quern_jobs_dead_lettered_total"), None, "{exposition}");
    // Only the requests in flight before the first refusal asked for base64 (the limit starts at 2).
    assert!((1..=2).contains(&stats.refused_base64), "{stats:?}");
    assert_eq!(harness.queues.ready_count(&harness.queues.topology.dead_queue()).await, 0);
    harness.cleanup().await;
}

/// A revoked key, restored after 20 s: nothing is dead-lettered, `/readyz` answers 503 with the provider's answer
/// meanwhile, the worker takes no jobs and asks the provider every few seconds, and every job succeeds once the
/// key works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_refusing_the_key_for_a_while_dead_letters_nothing_and_every_job_succeeds() {
    let refusing = FakeEmbedderConfig { unauthorized_for_secs: 20, ..Default::default() };
    let harness = Harness::start("revoked", refusing).await;
    let jobs: Vec<_> = (0..30).map(|i| upsert("c", &format!("doc-{i}"), &document_text(i, 300))).collect();
    let ids = harness.producer().await.enqueue_many(&jobs).await.expect("enqueue");
    let port = free_port();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = harness.spawn_default_worker(&["--metrics-addr", &format!("127.0.0.1:{port}")], shutdown.clone());

    let refused = wait_until(Duration::from_secs(15), || async {
        http_get(port, "/readyz").await.is_some_and(|(status, body)| status == 503 && body.contains("401"))
    })
    .await;
    let (_, readiness) = http_get(port, "/readyz").await.unwrap_or_default();
    let during = harness.embedder.stats().snapshot();
    let store = harness.db.store();
    let all = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 30).unwrap_or(false)
    })
    .await;
    let ready_again = http_get(port, "/readyz").await.is_some_and(|(status, _)| status == 200);
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    let stats = harness.embedder.stats().snapshot();
    eprintln!("revoked: all done {:?} after start; {stats:?}", started.elapsed());
    assert!(refused, "/readyz answered 503 naming the 401");
    let readiness: serde_json::Value = serde_json::from_str(&readiness).expect("json");
    assert_eq!(readiness["ready"], false);
    assert_eq!(
        readiness["embedding_refused"],
        "embedding API answered 401: Incorrect API key provided (injected by --unauthorized-for-secs)."
    );
    assert!(all, "every job succeeds once the key works: {stats:?}");
    assert!(ready_again);
    assert_eq!(harness.queues.ready_count(&harness.queues.topology.dead_queue()).await, 0, "nothing dead-lettered");
    let counts = store.count_finished(&ids).await.expect("counts");
    assert_eq!(counts.dead, 0);
    // The requests in flight when the key was first refused, then one probe every 5 s: no backlog hammered it.
    assert!(stats.unauthorized_401 <= 2 + 6, "{stats:?} (at the time /readyz said so: {during:?})");
    harness.cleanup().await;
}

/// The decision itself: a job whose chunks meet a provider refusing every request is given back with its failed
/// attempts unchanged, whatever they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_meeting_a_refused_key_is_given_back_with_its_attempts_unchanged() {
    let harness =
        Harness::start("give_back", FakeEmbedderConfig { unauthorized_for_secs: 600, ..Default::default() }).await;
    let pipeline = harness.pipeline(&[]).await;
    let job = upsert("c", "doc", "a short document");
    match pipeline.process_delivery(&job.encode(), 3).await {
        Outcome::GiveBack { after, failed_attempts, failure } => {
            assert_eq!((after, failed_attempts), (Duration::from_secs(1), 3));
            assert_eq!(failure.reason, "embedding_unauthorized");
        }
        other => panic!("expected the job given back, got {other:?}"),
    }
    let record = harness.db.store().job(job.job_id).await.expect("read").expect("recorded");
    assert_eq!(record.status, JobStatus::Failed, "to be retried, not dead");
    assert!(!pipeline.embedder().availability().borrow().is_available());
    harness.cleanup().await;
}

/// A content policy refusing one document is about that document: it alone is dead-lettered (its chunks shared
/// requests with other jobs' and were split apart), the worker stays ready and the others succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_the_provider_refuses_dead_letters_only_its_job() {
    let refusing = FakeEmbedderConfig { reject_marker: Some("FORBIDDEN".into()), ..Default::default() };
    let harness = Harness::start("input_refused", refusing).await;
    let mut jobs: Vec<_> = (0..30).map(|i| upsert("c", &format!("doc-{i}"), &document_of_bytes(i, 4096))).collect();
    let refused = upsert("c", "refused", &format!("{} FORBIDDEN", document_of_bytes(99, 3000)));
    jobs.insert(15, refused.clone());
    let ids = harness.producer().await.enqueue_many(&jobs).await.expect("enqueue");
    let port = free_port();
    let shutdown = CancellationToken::new();
    let worker = harness.spawn_default_worker(&["--metrics-addr", &format!("127.0.0.1:{port}")], shutdown.clone());
    let store = harness.db.store();
    let settled = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 30 && c.dead == 1).unwrap_or(false)
    })
    .await;
    let ready = http_get(port, "/readyz").await.is_some_and(|(status, _)| status == 200);
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    let stats = harness.embedder.stats().snapshot();
    assert!(settled, "30 succeed, the refused one is dead: {stats:?}");
    assert!(ready, "an input's refusal is not the provider's");
    let record = store.job(refused.job_id).await.expect("read").expect("recorded");
    assert_eq!(record.status, JobStatus::Dead);
    assert!(record.last_error.unwrap_or_default().contains("content policy"));
    assert_eq!(harness.queues.ready_count(&harness.queues.topology.dead_queue()).await, 1);
    harness.cleanup().await;
}
