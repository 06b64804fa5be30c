//! Start-up as an orchestrator sees it: the ops endpoint answers first, a missing database, embedding API or
//! broker is waited for (`/readyz` 503 naming it) instead of ending the process, jobs flow once it is there,
//! shutdown ends the wait at once, and settings no retry can fix still end start-up with an error.

use std::net::SocketAddr;
use std::time::Duration;

use quern_testkit::fake_embedder::{self, FakeEmbedderConfig};
use quern_testkit::{free_port, http_get, wait_until, TEST_DIM};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::{upsert, Harness};

/// `/readyz`'s status and body, once it answers.
async fn readiness(port: u16) -> Option<(u16, serde_json::Value)> {
    let (status, body) = http_get(port, "/readyz").await?;
    Some((status, serde_json::from_str(&body).ok()?))
}

/// Polls `/readyz` until `check` holds for its answer; the last answer seen either way.
async fn readiness_until(port: u16, check: impl Fn(u16, &serde_json::Value) -> bool) -> (bool, String) {
    let last = std::sync::Mutex::new(String::from("no answer"));
    let held = wait_until(Duration::from_secs(30), || async {
        match readiness(port).await {
            Some((status, body)) => {
                *last.lock().expect("lock") = format!("{status} {body}");
                check(status, &body)
            }
            None => false,
        }
    })
    .await;
    let last = last.into_inner().expect("lock");
    (held, last)
}

/// `host:port` of a `scheme://user@host:port/db` URL.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

/// `url` with its `host:port` replaced.
fn with_host_port(url: &str, host_port_now: &str) -> String {
    url.replacen(host_port(url), host_port_now, 1)
}

/// Forwards every connection accepted on `listener` to `target`: the database "coming up" on a port the worker
/// was already told about.
async fn forward(listener: TcpListener, target: SocketAddr) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_the_database_then_processes_jobs() {
    let harness = Harness::start("wait_db", FakeEmbedderConfig::default()).await;
    let producer = harness.producer().await;
    let job = upsert("c", "waited", "a document that waits for its database");
    let ids = producer.enqueue_many(std::slice::from_ref(&job)).await.expect("enqueue");

    // The database's port, with nothing listening on it yet: connections are refused.
    let db_port = free_port();
    let db_url = with_host_port(&harness.db.url, &format!("127.0.0.1:{db_port}"));
    let ops_port = free_port();
    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(
        &["--database-url", &db_url, "--metrics-addr", &format!("127.0.0.1:{ops_port}")],
        shutdown.clone(),
    );

    let (waiting, seen) =
        readiness_until(ops_port, |status, body| status == 503 && body["database"] == false && body["ready"] == false)
            .await;
    assert!(waiting, "the ops endpoint answers 503 with database: false while Postgres is away; last: {seen}");
    assert!(!worker.is_finished(), "the worker waits instead of exiting");
    let store = harness.db.store();
    assert_eq!(store.count_finished(&ids).await.expect("count").succeeded, 0, "nothing consumed meanwhile");

    // Postgres "comes up" on that port.
    let postgres: SocketAddr = tokio::net::lookup_host(host_port(&harness.db.url))
        .await
        .expect("resolve the test Postgres")
        .next()
        .expect("an address");
    let listener = TcpListener::bind(("127.0.0.1", db_port)).await.expect("the port is still free");
    let proxy = tokio::spawn(forward(listener, postgres));

    let done = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 1).unwrap_or(false)
    })
    .await;
    let (ready, seen) = readiness_until(ops_port, |status, body| status == 200 && body["database"] == true).await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    proxy.abort();
    assert!(done, "the job is processed once the database is there");
    assert!(ready, "ready once the database answers; last: {seen}");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_the_embedding_api_then_processes_jobs() {
    let harness = Harness::start("wait_embed", FakeEmbedderConfig::default()).await;
    let producer = harness.producer().await;
    let job = upsert("c", "waited", "a document that waits for its embedding API");
    let ids = producer.enqueue_many(std::slice::from_ref(&job)).await.expect("enqueue");

    let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let ops_port = free_port();
    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(
        &["--embedding-url", &format!("http://{api}"), "--metrics-addr", &format!("127.0.0.1:{ops_port}")],
        shutdown.clone(),
    );

    // The database is there; the embedding API is what holds the worker back.
    let (waiting, seen) = readiness_until(ops_port, |status, body| {
        status == 503 && body["database"] == true && body["embedding"] == false && body["consuming"] == false
    })
    .await;
    assert!(waiting, "503 with embedding: false while the embedding API is away; last: {seen}");
    assert!(!worker.is_finished(), "the worker waits instead of exiting");
    let store = harness.db.store();
    assert_eq!(store.count_finished(&ids).await.expect("count").succeeded, 0, "nothing consumed meanwhile");

    let embedder = fake_embedder::spawn_at(api, FakeEmbedderConfig { dim: TEST_DIM, ..FakeEmbedderConfig::default() })
        .await
        .expect("the embedding API comes up on its port");
    let done = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 1).unwrap_or(false)
    })
    .await;
    let (ready, seen) = readiness_until(ops_port, |status, body| status == 200 && body["embedding"] == true).await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(done, "the job is processed once the embedding API is there");
    assert!(ready, "ready once the embedding API answers; last: {seen}");
    assert_eq!(embedder.stats().snapshot().inputs, 1, "the probes embedded nothing: only the job's one chunk");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_the_broker_and_shutdown_ends_the_wait_at_once() {
    let harness = Harness::start("wait_broker", FakeEmbedderConfig::default()).await;
    let ops_port = free_port();
    let broker = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let shutdown = CancellationToken::new();
    let worker = harness
        .spawn_worker(&["--amqp-url", &broker, "--metrics-addr", &format!("127.0.0.1:{ops_port}")], shutdown.clone());
    let (waiting, seen) = readiness_until(ops_port, |status, body| {
        status == 503 && body["database"] == true && body["embedding"] == true && body["consuming"] == false
    })
    .await;
    assert!(waiting, "503 with consuming: false while the broker is away; last: {seen}");
    assert!(!worker.is_finished(), "the worker waits instead of exiting");

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), worker).await;
    assert!(stopped.expect("shutdown ends the wait at once").expect("task").is_ok(), "a clean exit");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_wait_for_a_database_at_once() {
    let harness = Harness::start("wait_stop", FakeEmbedderConfig::default()).await;
    let ops_port = free_port();
    let db_url = with_host_port(&harness.db.url, &format!("127.0.0.1:{}", free_port()));
    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(
        &["--database-url", &db_url, "--metrics-addr", &format!("127.0.0.1:{ops_port}")],
        shutdown.clone(),
    );
    let (waiting, seen) = readiness_until(ops_port, |status, body| status == 503 && body["database"] == false).await;
    assert!(waiting, "waiting for the database; last: {seen}");
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), worker).await;
    assert!(stopped.expect("shutdown ends the wait at once").expect("task").is_ok(), "a clean exit");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_no_retry_can_fix_end_start_up_with_a_clear_error() {
    let harness = Harness::start("no_retry", FakeEmbedderConfig::default()).await;
    let run = |extra: &[&str]| {
        let worker = harness.spawn_worker(extra, CancellationToken::new());
        async move {
            let ended = tokio::time::timeout(Duration::from_secs(30), worker).await.expect("ends, not waits");
            let error = ended.expect("task").expect_err("start-up fails");
            quern_worker::telemetry::error_chain(error.as_ref())
        }
    };
    // The database answers, with another vector dimension than configured: waiting would not change it.
    let mismatch = run(&["--embedding-dim", "32"]).await;
    assert_eq!(
        mismatch,
        format!(
            "checking --embedding-dim against the database: quern_chunks.embedding has dimension {TEST_DIM} but the \
             embedding dimension is configured as 32"
        )
    );
    let overlap = run(&["--chunk-size", "100", "--chunk-overlap", "150"]).await;
    assert!(overlap.starts_with("invalid --chunk-size / --chunk-overlap: "), "{overlap}");
    let url = run(&["--embedding-url", "localhost:8089"]).await;
    assert!(url.starts_with("check --embedding-url / QUERN_EMBEDDING_URL: "), "{url}");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_upgraded_before_its_migration_waits_for_it_instead_of_dead_lettering() {
    let harness = Harness::start("wait_schema", FakeEmbedderConfig::default()).await;
    // The database as the previous release left it: migration 3 not applied.
    let admin = harness.db.client().await;
    admin
        .batch_execute(
            "ALTER TABLE quern_jobs DROP COLUMN queue_prefix; DELETE FROM quern_schema_migrations WHERE version = 3",
        )
        .await
        .expect("roll the schema back to migration 2");
    let producer = harness.producer().await;
    let job = upsert("c", "upgraded", "a document sent while the schema is one migration behind");
    let ids = producer.enqueue_many(std::slice::from_ref(&job)).await.expect("enqueue");

    let ops_port = free_port();
    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(&["--metrics-addr", &format!("127.0.0.1:{ops_port}")], shutdown.clone());
    let (waiting, seen) = readiness_until(ops_port, |status, body| status == 503 && body["database"] == false).await;
    assert!(waiting, "not ready while a migration is missing; last: {seen}");
    let store = harness.db.store();
    let dead = admin.query_one("SELECT count(*) FROM quern_jobs", &[]).await.expect("count").get::<_, i64>(0);
    assert_eq!(dead, 0, "no job was taken, so none was dead-lettered for a missing column");

    store.migrate(TEST_DIM).await.expect("the operator runs quern migrate");
    let done = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 1).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    worker.await.expect("task").expect("clean exit");
    assert!(done, "the job succeeds once the migration is applied");
    harness.cleanup().await;
}
