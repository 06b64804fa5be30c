//! The worker's life: start-up (settings checked, ops endpoint up, database and embedding API waited for), then
//! the broker session: consume, process each delivery in its own task, map its outcome to the broker, and drain
//! on shutdown. After broker trouble the session is rebuilt (connection, channel, topology, prefetch). While the
//! embedding provider refuses every request, the session takes no jobs (and `/readyz` says why).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicQosOptions, BasicRejectOptions};
use quern_core::backoff::pause_text;
use quern_core::trace::TRACEPARENT_HEADER;
use quern_core::{metric_names, Chunker, ErrorClass, Outcome, TraceParent};
use quern_embed::{EmbedError, EmbeddingClient, EmbeddingPool};
use quern_queue::{QueueArguments, QueueError};
use quern_store::{Store, StoreError};
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::celery::CeleryMessage;
use crate::intake::Intake;
use crate::maintenance;
use crate::ops::{self, Health};
use crate::republisher::{self, Republisher};
use crate::wait::{wait_for, NotYet, DEPENDENCY_BACKOFF};
use crate::{telemetry, Pipeline, WorkerConfig};

/// How often `/readyz`'s database probe runs once consuming.
const DATABASE_PROBE_EVERY: Duration = Duration::from_secs(2);
/// How often the embedding API is probed once consuming: a provider's server, so less often than our database.
const EMBEDDING_PROBE_EVERY: Duration = Duration::from_secs(5);

/// Where a bad embedding URL comes from.
const EMBEDDING_URL: &str = "check --embedding-url / QUERN_EMBEDDING_URL";

/// Builds the pipeline from the settings alone; nothing connects yet. Fails on settings no retry can fix: chunk
/// sizes, URLs that cannot be parsed, retry tiers.
pub fn assemble_pipeline(config: &WorkerConfig) -> anyhow::Result<Pipeline> {
    // The recorder first: the pool and the store record from the moment they exist.
    ops::prometheus();
    let chunker =
        Chunker::new(config.chunk_size, config.chunk_overlap).context("invalid --chunk-size / --chunk-overlap")?;
    let client = EmbeddingClient::new(&config.embedding.client_config()?).context(EMBEDDING_URL)?;
    let store =
        Store::connect(&config.database.store_config()?).context("check --database-url / QUERN_DATABASE_URL")?;
    let amqp_url = config.broker.url()?;
    quern_queue::connection::check_url(amqp_url.expose_secret()).context("check --amqp-url / QUERN_AMQP_URL")?;
    let retry = config.retry_policy().context("invalid --max-attempts / --retry-tiers")?;
    let celery = config.celery.tasks().map_err(anyhow::Error::msg).context("invalid Celery settings")?;
    let embedder = EmbeddingPool::new(client, config.pool_config());
    Ok(Pipeline::new(chunker, embedder, store, config.limits(), retry, config.group_commit_config())
        .with_queue_prefix(config.broker.topology.prefix())
        .with_celery_tasks(celery))
}

/// Builds the pipeline and checks, once, that the database answers (migrating it if asked) with the configured
/// vector dimension. For tests and tools that want a ready pipeline or an error; [`run`] waits instead.
pub async fn build_pipeline(config: &WorkerConfig) -> anyhow::Result<Pipeline> {
    let pipeline = assemble_pipeline(config)?;
    prepare_database(pipeline.store(), config)
        .await
        .map_err(|(step, error)| anyhow::Error::new(error).context(step))?;
    Ok(pipeline)
}

/// Applies migrations (with `--migrate`) or checks the database answers, then checks the vector dimension.
/// A failure comes with the step it happened in.
async fn prepare_database(store: &Store, config: &WorkerConfig) -> Result<(), (&'static str, StoreError)> {
    let dimension = config.embedding.embedding_dim as usize;
    if config.migrate {
        store
            .migrate_with_storage(dimension, config.segments.vector_storage)
            .await
            .map_err(|e| ("applying database migrations", e))?;
    } else {
        store.ping().await.map_err(|e| ("connecting to the database", e))?;
        store.check_schema().await.map_err(|e| ("checking the database's migrations", e))?;
    }
    store.check_dimension(dimension).await.map_err(|e| ("checking --embedding-dim against the database", e))
}

/// Runs the worker until `shutdown` is cancelled, then lets in-flight jobs finish within the grace period.
///
/// What an orchestrator expects: settings no retry can fix end it at once with an error; then the ops endpoint
/// comes up (`/readyz` answering 503); the database and the embedding API are waited for, as is the broker, with
/// growing, jittered pauses and a log line per attempt; jobs are consumed only once all three answer. Broker
/// failures later do not end it either: the session is rebuilt. Shutdown interrupts any wait at once.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = config.shadow_applied().map_err(anyhow::Error::msg).context("invalid --shadow settings")?;
    let pipeline = assemble_pipeline(&config)?;
    run_with_pipeline(&config, pipeline, shutdown).await
}

/// Starts the ops endpoint unless `--metrics-addr off`; it stops when `stop` is cancelled, after the drain, so
/// probes see "not ready" rather than a refused connection.
async fn start_ops(config: &WorkerConfig, health: &Arc<Health>, stop: &CancellationToken) -> anyhow::Result<()> {
    ops::prometheus();
    if config.metrics_addr.eq_ignore_ascii_case("off") {
        return Ok(());
    }
    let (listener, addr) = ops::bind(&config.metrics_addr).await?;
    // With port 0 this is the only place the port shows.
    tracing::info!(%addr, "ops endpoint listening on http://{addr}: /metrics /healthz /readyz");
    tokio::spawn(ops::serve(listener, health.clone(), stop.clone()));
    Ok(())
}

/// Waits until the database answers (migrated if asked, with the configured dimension) and the embedding API
/// answers, both at once, each reported in `/readyz`. `Ok(false)` if shutdown came first.
async fn wait_for_dependencies(
    config: &WorkerConfig,
    store: &Store,
    client: &EmbeddingClient,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let (postgres, api) = (format!("PostgreSQL at {}", store.target()), client.shown_endpoint());
    let database = wait_for(&postgres, DEPENDENCY_BACKOFF, shutdown, || async move {
        let prepared = prepare_database(store, config).await;
        health.set_database(prepared.is_ok());
        prepared.map_err(|(step, error)| match (error.class(), error) {
            (_, StoreError::Connect { reason, .. }) => NotYet::Retry(reason),
            (ErrorClass::Transient, error) => NotYet::Retry(format!("{step}: {error}")),
            (ErrorClass::Permanent, error) => NotYet::Fatal(anyhow::Error::new(error).context(step)),
        })
    });
    let api = format!("the embedding API at {api}");
    let embedding = wait_for(&api, DEPENDENCY_BACKOFF, shutdown, || async move {
        let answered = client.probe(ops::PROBE_TIMEOUT).await;
        health.set_embedding(answered.is_ok());
        // Every failure of a probe is worth a retry: any answer at all would have been a success.
        answered.map(drop).map_err(|error| match error {
            EmbedError::Transport { reason, .. } => NotYet::Retry(reason),
            EmbedError::Timeout(limit) => NotYet::Retry(format!("no answer within {limit:?}")),
            other => NotYet::Retry(other.to_string()),
        })
    });
    let (database, embedding) = tokio::try_join!(database, embedding)?;
    Ok(database.is_some() && embedding.is_some())
}

/// [`run`] with a pipeline built by the caller (tests inject their own); `--migrate` applies migrations to its
/// store.
pub async fn run_with_pipeline(
    config: &WorkerConfig,
    pipeline: Pipeline,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let worker_id = config.worker_id();
    let policy = config.segments.policy().context("invalid segment settings")?;
    let retention = config.retention_policy().context("invalid --max-attempts / --retry-tiers")?;
    let tracker = TaskTracker::new();
    let health = Arc::new(Health::default());
    let ops_stop = CancellationToken::new();
    let _stop_ops = ops_stop.clone().drop_guard();
    // The probe's own client: the pipeline's is inside its embedding pool.
    let client = EmbeddingClient::new(&config.embedding.client_config()?).context(EMBEDDING_URL)?;
    start_ops(config, &health, &ops_stop).await?;
    if !wait_for_dependencies(config, pipeline.store(), &client, &health, &shutdown).await? {
        tracing::info!("shutdown requested while waiting for the database or the embedding API; worker stopped");
        return Ok(());
    }
    let store = pipeline.store().clone();
    tokio::spawn(ops::probe_database(store, health.clone(), DATABASE_PROBE_EVERY, ops_stop.clone()));
    tokio::spawn(ops::probe_embedding(client, health.clone(), EMBEDDING_PROBE_EVERY, ops_stop.clone()));
    let availability = pipeline.embedder().availability();
    tokio::spawn(ops::follow_provider(availability, health.clone(), ops_stop.clone()));
    if config.segments.segment_maintenance {
        let store = pipeline.store().clone();
        let pruning = maintenance::Pruning {
            policy: retention,
            every: config.prune_every,
            pruned_by: format!("worker {worker_id}"),
        };
        let every = maintenance::MAINTENANCE_EVERY;
        tokio::spawn(maintenance::maintain_segments(store, policy, Some(pruning), every, ops_stop.clone()));
    }

    let broker = quern_queue::redact_url(config.broker.amqp_url.expose_secret());
    let mut pauses = DEPENDENCY_BACKOFF.pauses();
    let mut drained = false;
    while !shutdown.is_cancelled() {
        match consume_session(config, &pipeline, &tracker, &shutdown, &worker_id, &health).await {
            Ok(()) => {
                drained = true;
                break;
            }
            Err(error) => {
                // A session that got to consuming was healthy: the next one starts with short pauses again.
                if health.is_consuming() {
                    pauses.reset();
                }
                health.set_consuming(false);
                metrics::counter!(metric_names::BROKER_RECONNECTS).increment(1);
                let pause = pauses.next_pause();
                let retry_in_ms = pause.as_millis() as u64;
                match error.downcast_ref::<QueueError>() {
                    Some(QueueError::Connect { reason, .. }) => {
                        tracing::warn!(
                            retry_in_ms,
                            "waiting for RabbitMQ at {broker}: {reason}; next try in {}",
                            pause_text(pause)
                        )
                    }
                    _ => tracing::warn!(
                        retry_in_ms,
                        "broker session ended: {}; reconnecting in {}",
                        telemetry::error_chain(error.as_ref()),
                        pause_text(pause)
                    ),
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }
    // A session that ended with shutdown has already drained within the grace period; after a broker failure,
    // jobs of the dead session may still be finishing (their acks fail and the broker redelivers them).
    tracker.close();
    let grace = if drained { Duration::ZERO } else { config.shutdown_grace() };
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            in_flight = tracker.len(),
            "grace period over with jobs still running; the broker will redeliver them"
        );
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// One connection's life. `Ok` means shutdown was requested and in-flight jobs were drained.
async fn consume_session(
    config: &WorkerConfig,
    pipeline: &Pipeline,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    worker_id: &str,
    health: &Health,
) -> anyhow::Result<()> {
    let topology = &config.broker.topology;
    let connection = Arc::new(
        quern_queue::connect(config.broker.url()?.expose_secret(), &format!("quern-worker {worker_id}")).await?,
    );
    let channel = connection.create_channel().await.context("opening a channel")?;
    quern_queue::declare_topology(&channel, topology, QueueArguments::default()).await?;
    quern_queue::declare_retry_queues(&channel, topology, &config.retry_tiers).await?;
    // Re-applied on every session: a recovered channel would otherwise consume with unbounded prefetch.
    channel.basic_qos(config.prefetch, BasicQosOptions::default()).await.context("setting prefetch")?;
    let mut republisher = Republisher::open(&connection, topology, worker_id).await?;
    let mut queues = vec![topology.ingest_queue()];
    match (config.celery.intake(), config.shadow_copy_queue()) {
        (Some(celery), Some(copy)) => {
            // The legacy worker keeps the Celery queue; the shadow reads a copy, and its dead letters replay to
            // that copy alone, never to the legacy worker again.
            let arguments = quern_queue::ingest_queue_arguments(topology, QueueArguments::default());
            quern_queue::declare_copy_queue(&channel, &copy, arguments, &celery.exchange, &celery.routing_key).await?;
            republisher = republisher.replaying_to("", &copy);
            queues.push(copy);
        }
        (Some(celery), None) => {
            quern_queue::declare_celery_queue(&connection, &celery.queue, &celery.exchange, &celery.routing_key)
                .await?;
            queues.push(celery.queue);
        }
        (None, _) => {}
    }
    let mut availability = pipeline.embedder().availability();
    let mut intake = Intake::new(&channel, queues, worker_id);
    if availability.borrow_and_update().is_available() {
        intake.start().await?;
        health.set_consuming(true);
    } else {
        tracing::info!("connected; taking no jobs until the embedding provider answers");
    }
    let session_over = CancellationToken::new();
    let _end_polling = session_over.clone().drop_guard();
    tokio::spawn(ops::poll_queue_depths(
        connection.clone(),
        topology.clone(),
        config.retry_tiers.clone(),
        Duration::from_secs(5),
        session_over.clone(),
    ));

    let ended = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            changed = availability.changed() => {
                if changed.is_err() {
                    break Err(anyhow::anyhow!("the embedding pool stopped"));
                }
                let available = availability.borrow_and_update().is_available();
                if let Err(error) = intake.follow(available, health).await {
                    break Err(error);
                }
            }
            next = intake.next() => match next {
                Some(Ok(delivery)) => {
                    tracker.spawn(handle_delivery(pipeline.clone(), republisher.clone(), delivery));
                }
                Some(Err(error)) => break Err(anyhow::Error::new(error).context("consumer failed")),
                // Our own cancel, once the deliveries already received were handed out (they are given back).
                None if intake.is_cancelling() => {
                    intake.cancelled();
                    let available = availability.borrow().is_available();
                    if let Err(error) = intake.follow(available, health).await {
                        break Err(error);
                    }
                }
                None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
            },
        }
    };
    if ended.is_ok() {
        health.set_draining();
        tracing::info!(in_flight = tracker.len(), "shutdown requested: no new jobs; finishing in-flight ones");
        intake.cancel().await;
        // Drain while the channel is open, or the acks would be lost. Prefetched deliveries not yet started
        // stay unacked and return to the queue when the channel closes.
        tracker.close();
        if tokio::time::timeout(config.shutdown_grace(), tracker.wait()).await.is_err() {
            tracing::warn!(in_flight = tracker.len(), "grace period over; unfinished jobs go back to the broker");
        }
        let _ = channel.close(200, "worker shutting down".into()).await;
        let _ = connection.close(200, "worker shutting down".into()).await;
    }
    ended
}

/// Processes one delivery and settles it with the broker. The only place an outcome becomes an ack, a
/// delayed retry (a retry, or a job given back with its attempts unchanged) or a dead letter. Retries and dead
/// letters are published (and confirmed) before the ack.
async fn handle_delivery(pipeline: Pipeline, republisher: Republisher, delivery: Delivery) {
    metrics::counter!(metric_names::JOBS_RECEIVED).increment(1);
    metrics::gauge!(metric_names::JOBS_IN_FLIGHT).increment(1.0);
    let started = Instant::now();
    let failed_attempts = republisher::failed_attempts(&delivery);
    let headers = delivery.properties.headers().as_ref();
    let trace = quern_queue::headers::get_str(headers, TRACEPARENT_HEADER).and_then(|value| TraceParent::parse(&value));
    let properties = CeleryMessage {
        task: quern_queue::headers::get_str(headers, "task"),
        id: quern_queue::headers::get_str(headers, "id"),
        expires: quern_queue::headers::get_str(headers, "expires"),
        compression: quern_queue::headers::get_str(headers, "compression"),
        content_type: delivery.properties.content_type().as_ref().map(|t| t.to_string()),
    };
    // A panic in one job must not take the worker down: the pipeline makes it that job's dead letter.
    let processing = pipeline.process_traced(&delivery.data, &properties, failed_attempts, trace);
    let outcome = match AssertUnwindSafe(processing).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            pipeline.outcome_of_panic(&delivery.data, &properties, failed_attempts, &message).await
        }
    };
    let moved = match &outcome {
        Outcome::Ack => Ok(()),
        Outcome::Retry { after, failed_attempts, failure } | Outcome::GiveBack { after, failed_attempts, failure } => {
            republisher.retry_later(&delivery, *after, *failed_attempts, failure).await
        }
        Outcome::DeadLetter { failed_attempts, failure } => {
            republisher.dead_letter(&delivery, *failed_attempts, failure).await
        }
    };
    metrics::histogram!(metric_names::JOB_DURATION_SECONDS, "span" => "processing")
        .record(started.elapsed().as_secs_f64());
    if moved.is_ok() {
        match &outcome {
            Outcome::Ack => {}
            Outcome::Retry { failure, .. } => {
                metrics::counter!(metric_names::JOBS_RETRIED, "reason" => failure.reason.clone()).increment(1);
            }
            Outcome::GiveBack { failure, .. } => {
                metrics::counter!(metric_names::JOBS_GIVEN_BACK, "reason" => failure.reason.clone()).increment(1);
            }
            Outcome::DeadLetter { failure, .. } => {
                let labels = [("reason_class", failure.class.as_str().to_owned()), ("reason", failure.reason.clone())];
                metrics::counter!(metric_names::JOBS_DEAD_LETTERED, &labels).increment(1);
            }
        }
    }
    let settled = match moved {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
        Err(error) => {
            // Not moved, so not acked: hand it back. Redelivery counts against the queue's delivery limit,
            // which bounds this loop if the broker keeps refusing.
            tracing::error!(%error, "could not move the message to its retry or dead-letter queue; returning it");
            tokio::time::sleep(Duration::from_secs(1)).await;
            // `reject`, not `nack`: RabbitMQ 4.3 stops counting a nack's return against the delivery limit, a
            // reject counts on every version (docs/brokers.md).
            delivery.reject(BasicRejectOptions { requeue: true }).await
        }
    };
    match settled {
        Ok(true) => {}
        Ok(false) => tracing::warn!("the channel is gone; the broker will redeliver this job"),
        Err(error) => tracing::warn!(%error, "settling the delivery failed; the broker will redeliver this job"),
    }
    metrics::gauge!(metric_names::JOBS_IN_FLIGHT).decrement(1.0);
}
