//! The worker with TLS at both ends: it consumes from a RabbitMQ TLS listener (`amqps://`, its password from
//! --amqp-password-file) and writes to a TLS-only PgBouncer in front of the test Postgres (`sslmode=verify-full`),
//! both serving the certificate `scripts/rabbitmq-tls.sh` made for localhost, checked against its CA. The worker
//! is told of no other broker or database, so a job's rows in the database prove both connections carried it.

use std::path::Path;
use std::time::Duration;

use quern_producer::{Producer, ProducerConfig};
use quern_store::{Store, StoreConfig};
use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::tls::{TempDir, TlsBroker, TlsPostgres};
use quern_testkit::{wait_until, TEST_DIM};
use tokio_util::sync::CancellationToken;

use crate::helpers::{document_text, test_chunker, upsert, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_published_over_amqps_is_written_through_verify_full() {
    let harness = Harness::start("tls", FakeEmbedderConfig::default()).await;
    // Starting the node takes seconds of a blocking script.
    let broker = tokio::task::spawn_blocking(TlsBroker::get).await.expect("TLS broker");
    let ca = broker.file("ca.pem");
    let dir = TempDir::new();
    let postgres =
        TlsPostgres::start(&dir, Path::new(&broker.file("server.pem")), Path::new(&broker.file("server.key")), None)
            .await;
    let database_url = postgres.url("localhost", harness.db.name(), &format!("sslmode=verify-full&sslrootcert={ca}"));
    // The user in the URL, the password in the file.
    let amqp_url = format!("amqps://guest@localhost:{}/%2f?cacertfile={ca}", broker.port);
    let password_file = dir.write("amqp-password", "guest\n");

    let producer = Producer::connect(
        ProducerConfig::new(broker.url_with_ca("localhost", "ca.pem")).with_topology(harness.queues.topology.clone()),
    )
    .await
    .expect("producer over amqps");
    let jobs: Vec<_> = (0..3).map(|i| upsert("tls", &format!("doc-{i}"), &document_text(i, 120))).collect();
    let job_ids = producer.enqueue_many(&jobs).await.expect("enqueue over amqps");

    let shutdown = CancellationToken::new();
    let worker = harness.spawn_worker(
        &[
            "--amqp-url",
            &amqp_url,
            "--amqp-password-file",
            &password_file.display().to_string(),
            "--database-url",
            &database_url,
        ],
        shutdown.clone(),
    );
    let store = Store::connect(&StoreConfig::new(database_url.clone())).expect("valid settings");
    let finished = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&job_ids).await.map(|c| c.succeeded == jobs.len() as u64).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    worker.await.expect("worker task").expect("worker exits cleanly");
    assert!(finished, "the jobs did not succeed in time");

    let client = harness.db.client().await;
    for job in &jobs {
        let row = client
            .query_one(
                "SELECT count(*), min(vector_dims(embedding)), max(vector_dims(embedding)) FROM quern_chunks
                 WHERE collection = 'tls' AND document_id = $1",
                &[&job.document_id],
            )
            .await
            .expect("query chunks");
        let expected = test_chunker().split(&job.text).len();
        assert!(expected > 1, "{} fits in one chunk", job.document_id);
        assert_eq!(row.get::<_, i64>(0) as usize, expected, "{}", job.document_id);
        assert_eq!(row.get::<_, i32>(1) as usize, TEST_DIM);
        assert_eq!(row.get::<_, i32>(2) as usize, TEST_DIM);
    }
    drop(store);
    drop(postgres);
    harness.cleanup().await;
}
