//! The operations endpoint ops and orchestrators talk to: `/metrics` (Prometheus), `/healthz` (alive) and
//! `/readyz` (ready for work: consuming from the broker, database and embedding API reachable, the embedding
//! provider taking requests, not draining), and the probes behind it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quern_core::backoff::pause_text;
use quern_core::metric_names;
use quern_embed::{Availability, EmbeddingClient};
use quern_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What `/readyz` answers from. Shared by the consumer (broker state, draining), the start-up waits and the
/// database and embedding API probes.
#[derive(Debug, Default)]
pub struct Health {
    consuming: AtomicBool,
    database: AtomicBool,
    embedding: AtomicBool,
    draining: AtomicBool,
    /// What the embedding provider answered while it refuses every request; `None` while it takes requests.
    embedding_refused: Mutex<Option<String>>,
}

impl Health {
    /// True when the worker can take work: consuming, database and embedding API reachable, the provider taking
    /// requests, not shutting down.
    pub fn is_ready(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
            && self.database.load(Ordering::Relaxed)
            && self.embedding.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.refusal().is_none()
    }

    /// What the embedding provider answered, while it refuses every request.
    pub fn refusal(&self) -> Option<String> {
        self.embedding_refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The embedding provider refuses every request (`Some`, with what it answered) or takes requests again.
    pub fn set_embedding_refused(&self, refusal: Option<String>) {
        *self.embedding_refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = refusal;
        self.publish();
    }

    /// Whether a broker session is consuming.
    pub fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
    }

    /// The broker session started (`true`) or ended (`false`, reconnecting).
    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
        self.publish();
    }

    /// The last database probe's answer.
    pub fn set_database(&self, reachable: bool) {
        self.database.store(reachable, Ordering::Relaxed);
        self.publish();
    }

    /// The last embedding API probe's answer.
    pub fn set_embedding(&self, reachable: bool) {
        self.embedding.store(reachable, Ordering::Relaxed);
        self.publish();
    }

    /// Shutdown began: not ready any more, whatever else holds.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.publish();
    }

    fn publish(&self) {
        metrics::gauge!(metric_names::READY).set(if self.is_ready() { 1.0 } else { 0.0 });
    }

    fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "ready": self.is_ready(),
            "consuming": self.consuming.load(Ordering::Relaxed),
            "database": self.database.load(Ordering::Relaxed),
            "embedding": self.embedding.load(Ordering::Relaxed),
            "draining": self.draining.load(Ordering::Relaxed),
            "embedding_refused": self.refusal(),
        })
    }
}

/// The process's Prometheus recorder, installed on first use (every in-process worker shares it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
        let inputs = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 2048.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(metric_names::EMBEDDING_REQUEST_INPUTS.into()), &inputs)
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed (an embedding application's): then ours stays unused.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe_metrics();
        handle
    })
}

/// Help texts, and a zero for every unlabelled counter, so each series is visible from the first scrape.
fn describe_metrics() {
    use metric_names::*;
    let counters = [
        (JOBS_RECEIVED, "Jobs delivered to this worker, redeliveries and retries included"),
        (JOBS_SUCCEEDED, "Jobs whose rows are committed"),
        (CHUNKS_EMBEDDED, "Chunks whose vectors came from the embedding API"),
        (CHUNKS_REUSED, "Chunks whose stored vectors were kept on re-ingest"),
        (BROKER_RECONNECTS, "Broker sessions rebuilt after a failure"),
        (DB_CONNECTIONS_OPENED, "Database connections opened by the pool"),
        (EMBEDDING_ENCODING_FALLBACKS, "Switches from base64 to float vectors after the provider refused base64"),
    ];
    for (name, help) in counters {
        metrics::describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    metrics::describe_counter!(JOBS_RETRIED, "Jobs sent to a delay queue after a transient failure, by reason");
    metrics::describe_counter!(JOBS_DEAD_LETTERED, "Jobs moved to the dead-letter queue, by reason class and reason");
    metrics::describe_counter!(
        JOBS_GIVEN_BACK,
        "Jobs given back without using up an attempt while the embedding provider refused every request, by reason"
    );
    metrics::describe_counter!(
        EMBEDDING_PROVIDER_OUTAGES,
        "Times the embedding provider started refusing every request, by reason"
    );
    metrics::describe_gauge!(EMBEDDING_PROVIDER_AVAILABLE, "1 while the embedding provider takes requests, else 0");
    metrics::describe_histogram!(
        JOB_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Job duration: enqueue_to_commit or processing"
    );
    metrics::describe_histogram!(
        EMBEDDING_REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Embedding request duration, by outcome"
    );
    metrics::describe_histogram!(EMBEDDING_REQUEST_INPUTS, "Inputs carried by each embedding request");
    metrics::describe_histogram!(DB_WRITE_SECONDS, metrics::Unit::Seconds, "Write transaction duration, by operation");
    metrics::describe_gauge!(JOBS_IN_FLIGHT, "Jobs being processed now");
    metrics::gauge!(JOBS_IN_FLIGHT).set(0.0);
    metrics::describe_gauge!(EMBEDDING_PERMITS_IN_USE, "Embedding requests in flight");
    metrics::gauge!(EMBEDDING_PERMITS_IN_USE).set(0.0);
    metrics::describe_gauge!(EMBEDDING_PERMITS, "Most embedding requests in flight at once (the pool size)");
    metrics::describe_gauge!(
        EMBEDDING_CONCURRENCY_LIMIT,
        "Embedding requests allowed in flight now (the adaptive limit, else the pool size)"
    );
    metrics::describe_gauge!(QUEUE_MESSAGES, "Messages ready in Quern's queues, polled from the broker");
    metrics::describe_gauge!(READY, "1 while the worker is ready for work, else 0");
    metrics::gauge!(READY).set(0.0);
}

#[derive(Clone)]
struct OpsState {
    health: Arc<Health>,
    prometheus: PrometheusHandle,
}

/// Binds the ops endpoint on `addr`; returns the bound address (port 0 picks one). A port already taken is
/// an error that says what to do: the default port is fixed on purpose (scrape configs and probes expect it),
/// so a second worker on one host needs its own.
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await.map_err(|error| {
        let cause = quern_core::error_text::io_error(&error);
        if error.kind() == std::io::ErrorKind::AddrInUse {
            let (host, next) = match addr.parse::<SocketAddr>() {
                Ok(taken) => (taken.ip().to_string(), taken.port().saturating_add(1).to_string()),
                Err(_) => ("127.0.0.1".to_owned(), "9091".to_owned()),
            };
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            anyhow::anyhow!(
                "cannot listen on --metrics-addr {addr}: {cause} (is another worker running on this host? give \
                 each worker its own --metrics-addr / QUERN_METRICS_ADDR, e.g. {host}:{next}, or {host}:0 for any \
                 free port)"
            )
        } else {
            anyhow::anyhow!("cannot listen on --metrics-addr {addr}: {cause}")
        }
    })?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves the ops endpoint until `stop` is cancelled.
pub async fn serve(listener: TcpListener, health: Arc<Health>, stop: CancellationToken) {
    let state = OpsState { health, prometheus: prometheus().clone() };
    let router = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(state);
    if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!(%error, "the ops endpoint stopped");
    }
}

async fn render_metrics(State(state): State<OpsState>) -> String {
    // Histograms are drained into their buckets here: the exporter's own listener would do it on a timer.
    state.prometheus.run_upkeep();
    state.prometheus.render()
}

async fn readiness(State(state): State<OpsState>) -> (StatusCode, Json<serde_json::Value>) {
    let status = if state.health.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(state.health.report()))
}

/// Probes the database every `every` until `stop`, so `/readyz` turns false while Postgres is away.
pub async fn probe_database(store: Store, health: Arc<Health>, every: Duration, stop: CancellationToken) {
    loop {
        let answered = match tokio::time::timeout(every, store.ping()).await {
            Ok(answered) => answered.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {}", pause_text(every))),
        };
        report_change("PostgreSQL", &health.database, &answered);
        health.set_database(answered.is_ok());
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Probes the embedding API every `every` until `stop`, so `/readyz` turns false while it does not answer. A
/// probe is a `GET` that costs no embedding (see [`EmbeddingClient::probe`]); any HTTP status counts as up.
pub async fn probe_embedding(client: EmbeddingClient, health: Arc<Health>, every: Duration, stop: CancellationToken) {
    loop {
        let answered = client.probe(every.min(PROBE_TIMEOUT)).await.map(drop).map_err(|error| error.to_string());
        report_change("the embedding API", &health.embedding, &answered);
        health.set_embedding(answered.is_ok());
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Mirrors the embedding provider's availability into `/readyz` until `stop`: not ready, with what it answered,
/// while it refuses every request. (The pool logs the change, once; the consumer stops taking jobs meanwhile.)
pub async fn follow_provider(
    mut availability: watch::Receiver<Availability>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    loop {
        let refusal = match &*availability.borrow_and_update() {
            Availability::Available => None,
            Availability::Refusing(answer) => Some(answer.to_string()),
        };
        health.set_embedding_refused(refusal);
        tokio::select! {
            changed = availability.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

/// One log line when a dependency goes away or comes back, not one per probe.
fn report_change(what: &str, was_up: &AtomicBool, answered: &Result<(), String>) {
    match (was_up.load(Ordering::Relaxed), answered) {
        (true, Err(error)) => tracing::warn!("{what} stopped answering; not ready: {error}"),
        (false, Ok(())) => tracing::info!("{what} answers again"),
        _ => {}
    }
}

/// Longest wait for an embedding API probe's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls the depth of the work, delay and dead-letter queues every `every` into `quern_queue_messages`, on the
/// session's connection, until `stop` (the session's end).
pub async fn poll_queue_depths(
    connection: Arc<lapin::Connection>,
    topology: quern_core::Topology,
    tiers: Vec<Duration>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut names = vec![topology.ingest_queue(), topology.dead_queue()];
    names.extend(tiers.iter().map(|tier| topology.retry_queue(*tier)));
    let prefix = format!("{}.", topology.prefix());
    loop {
        match quern_queue::depth::queue_depths(&connection, &names).await {
            Ok(depths) => {
                for depth in depths {
                    let label = depth.name.strip_prefix(&prefix).unwrap_or(&depth.name).to_owned();
                    if let Some(messages) = depth.messages {
                        metrics::gauge!(metric_names::QUEUE_MESSAGES, "queue" => label).set(f64::from(messages));
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "polling queue depths failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_says_what_to_do() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let error = bind(&addr.to_string()).await.expect_err("taken").to_string();
        let next = addr.port() + 1;
        assert_eq!(
            error,
            format!(
                "cannot listen on --metrics-addr {addr}: address already in use (is another worker running on this \
                 host? give each worker its own --metrics-addr / QUERN_METRICS_ADDR, e.g. 127.0.0.1:{next}, or \
                 127.0.0.1:0 for any free port)"
            )
        );
        let (_listener, bound) = bind("127.0.0.1:0").await.expect("any free port");
        assert_ne!(bound.port(), 0, "the port actually bound is reported");
    }
}
