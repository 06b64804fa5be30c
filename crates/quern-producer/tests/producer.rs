//! The producer against a real RabbitMQ: confirmed publishes, unroutable messages and invalid jobs are errors.

use quern_core::Job;
use quern_producer::{Producer, ProducerConfig, ProducerError};
use quern_queue::lapin::options::QueueDeleteOptions;
use quern_queue::QueueError;
use quern_testkit::TestQueues;

fn config(queues: &TestQueues) -> ProducerConfig {
    ProducerConfig::new(quern_testkit::amqp_url()).with_topology(queues.topology.clone())
}

#[test]
fn the_producer_is_cheap_to_share_across_handlers() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<Producer>();
}

#[tokio::test]
async fn confirmed_jobs_are_in_the_queue_as_persistent_json() {
    let queues = TestQueues::new("producer");
    let producer = Producer::connect(config(&queues)).await.expect("connect");
    let one = producer.enqueue(&Job::upsert("c", "d1", "text")).await.expect("enqueue");
    let many = producer
        .enqueue_many(&(0..50).map(|i| Job::upsert("c", format!("d{i}"), "text")).collect::<Vec<_>>())
        .await
        .expect("enqueue many");
    assert_eq!(many.len(), 50);
    assert!(!many.contains(&one));
    // Confirmed means held by the broker: all 51 are counted in the queue right away.
    assert_eq!(queues.ready_count(&queues.topology.ingest_queue()).await, 51);

    let connection = quern_queue::connect(&quern_testkit::amqp_url(), "test").await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let message = channel
        .basic_get(queues.topology.ingest_queue().as_str().into(), Default::default())
        .await
        .expect("get")
        .expect("a message");
    let properties = &message.delivery.properties;
    assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(properties.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert_eq!(properties.message_id().as_ref().map(|s| s.to_string()), Some(one.to_string()));
    let job = Job::decode(&message.delivery.data).expect("a valid v1 job");
    assert_eq!(job.job_id, one);
    queues.delete().await;
}

#[tokio::test]
async fn an_unroutable_job_is_an_error_not_silence() {
    let queues = TestQueues::new("unroutable");
    let producer = Producer::connect(config(&queues)).await.expect("connect");
    // Remove the queue behind the exchange: the broker confirms the publish but returns the message.
    let connection = quern_queue::connect(&quern_testkit::amqp_url(), "test").await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_delete(queues.topology.ingest_queue().as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete queue");
    let error = producer.enqueue(&Job::upsert("c", "d", "text")).await.expect_err("unroutable");
    assert!(matches!(error, ProducerError::Broker { source: QueueError::Unroutable { .. }, .. }), "{error:?}");
    assert!(!error.is_invalid_job());
    queues.delete().await;
}

#[tokio::test]
async fn an_invalid_job_in_a_batch_publishes_nothing() {
    let queues = TestQueues::new("invalid");
    let producer = Producer::connect(config(&queues)).await.expect("connect");
    let jobs = vec![Job::upsert("c", "fine", "text"), Job::upsert("", "no collection", "text")];
    let error = producer.enqueue_many(&jobs).await.expect_err("invalid");
    assert!(error.is_invalid_job());
    assert!(error.to_string().contains("collection"), "{error}");
    assert_eq!(queues.ready_count(&queues.topology.ingest_queue()).await, 0);
    queues.delete().await;
}

#[test]
fn the_producer_pulls_in_neither_postgres_nor_an_http_client() {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["tree", "-p", "quern-producer", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(tree.contains("lapin"), "the tree was read");
    for forbidden in ["tokio-postgres", "deadpool", "reqwest", "hyper", "pgvector", "quern-store", "quern-embed"] {
        assert!(!tree.lines().any(|line| line.starts_with(forbidden)), "quern-producer depends on {forbidden}");
    }
}

#[tokio::test]
async fn every_message_carries_a_traceparent_and_the_callers_trace_when_given() {
    use quern_core::trace::TRACEPARENT_HEADER;
    use quern_core::TraceParent;
    let queues = TestQueues::new("trace");
    let producer = Producer::connect(config(&queues)).await.expect("connect");
    let callers = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
    producer.enqueue(&Job::upsert("c", "own-trace", "text")).await.expect("enqueue");
    producer.enqueue_in_trace(&Job::upsert("c", "callers-trace", "text"), callers).await.expect("enqueue");

    let connection = quern_queue::connect(&quern_testkit::amqp_url(), "test").await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut traces = Vec::new();
    for _ in 0..2 {
        let message = channel
            .basic_get(queues.topology.ingest_queue().as_str().into(), Default::default())
            .await
            .expect("get")
            .expect("a message");
        let header = quern_queue::headers::get_str(message.delivery.properties.headers().as_ref(), TRACEPARENT_HEADER);
        traces.push(TraceParent::parse(&header.expect("a traceparent header")).expect("a valid traceparent"));
    }
    assert_ne!(traces[0].trace_id, callers.trace_id, "a job enqueued without a trace starts its own");
    assert_eq!(traces[1], callers, "the caller's span is the parent");
    queues.delete().await;
}
