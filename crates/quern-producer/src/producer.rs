//! [`Producer`]: validate, publish with confirms, reconnect on the next call after a lost connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quern_core::job::CONTRACT_VERSION;
use quern_core::trace::TRACEPARENT_HEADER;
use quern_core::{ContractError, ErrorClass, Job, Topology, TraceParent};
use quern_queue::lapin::types::FieldTable;
use quern_queue::lapin::{BasicProperties, Channel, Connection};
use quern_queue::{headers, QueueArguments, QueueError};
use tokio::sync::Mutex;
use uuid::Uuid;

/// Where and how to publish.
#[derive(Clone)]
pub struct ProducerConfig {
    amqp_url: String,
    /// Prefix of every exchange and queue name (default `quern`).
    pub topology: Topology,
    /// How long to wait for the broker's confirm of a publish (or a batch).
    pub confirm_timeout: Duration,
    /// Name shown for this connection in RabbitMQ's management UI.
    pub connection_name: String,
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("amqp_url", &quern_queue::redact_url(&self.amqp_url))
            .field("topology", &self.topology)
            .field("confirm_timeout", &self.confirm_timeout)
            .finish()
    }
}

impl ProducerConfig {
    /// Defaults: prefix `quern`, 30 s confirm timeout.
    pub fn new(amqp_url: impl Into<String>) -> ProducerConfig {
        ProducerConfig {
            amqp_url: amqp_url.into(),
            topology: Topology::default(),
            confirm_timeout: quern_queue::DEFAULT_CONFIRM_TIMEOUT,
            connection_name: "quern-producer".to_owned(),
        }
    }

    /// Uses another name prefix for the exchange and queues.
    pub fn with_topology(mut self, topology: Topology) -> ProducerConfig {
        self.topology = topology;
        self
    }
}

/// Why a job was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The job breaks the contract; nothing was published.
    #[error("job {job_id} is invalid: {source}")]
    InvalidJob {
        /// The job at fault.
        job_id: Uuid,
        /// What is wrong.
        source: ContractError,
    },
    /// The broker did not take the message (or the connection is gone); the next call reconnects.
    #[error("job not enqueued: {source}")]
    Broker {
        /// The first job the failure is known to concern (others of the batch may have been enqueued).
        job_id: Option<Uuid>,
        /// What went wrong.
        source: QueueError,
    },
}

impl ProducerError {
    /// True when the job itself is at fault (an HTTP handler would answer 4xx), false for broker trouble (5xx).
    pub fn is_invalid_job(&self) -> bool {
        matches!(self, ProducerError::InvalidJob { .. })
    }

    /// Whether calling again later can succeed.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProducerError::InvalidJob { .. } => ErrorClass::Permanent,
            ProducerError::Broker { source, .. } => source.class(),
        }
    }
}

/// A cheap-to-clone handle for enqueueing jobs; share one per process.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

struct Inner {
    config: ProducerConfig,
    /// The live session; replaced when the connection or channel is found closed.
    session: Mutex<Option<Session>>,
}

struct Session {
    connection: Connection,
    channel: Channel,
}

impl Producer {
    /// Connects, enables publisher confirms and declares the topology.
    pub async fn connect(config: ProducerConfig) -> Result<Producer, ProducerError> {
        let session = open_session(&config).await.map_err(|source| ProducerError::Broker { job_id: None, source })?;
        Ok(Producer { inner: Arc::new(Inner { config, session: Mutex::new(Some(session)) }) })
    }

    /// The topology this producer publishes to.
    pub fn topology(&self) -> &Topology {
        &self.inner.config.topology
    }

    /// Validates and publishes one job; returns its id once the broker has confirmed it.
    pub async fn enqueue(&self, job: &Job) -> Result<Uuid, ProducerError> {
        self.enqueue_many(std::slice::from_ref(job)).await.map(|ids| ids[0])
    }

    /// Validates every job first (publishing none if one is invalid), publishes them all, then awaits the
    /// confirms together: one round trip for the batch, not one per job.
    ///
    /// On a broker error some jobs of the batch may already be enqueued; they are safe to enqueue again
    /// with the same job ids (workers treat a job id they finished as done).
    pub async fn enqueue_many(&self, jobs: &[Job]) -> Result<Vec<Uuid>, ProducerError> {
        self.enqueue_batch(jobs, None).await
    }

    /// [`Producer::enqueue`] as part of the caller's trace: the message carries a W3C `traceparent` whose parent
    /// is `trace` (e.g. the HTTP request's span), and the worker continues it. Without it each job starts a trace.
    pub async fn enqueue_in_trace(&self, job: &Job, trace: TraceParent) -> Result<Uuid, ProducerError> {
        self.enqueue_batch(std::slice::from_ref(job), Some(trace)).await.map(|ids| ids[0])
    }

    /// [`Producer::enqueue_many`] as part of the caller's trace.
    pub async fn enqueue_many_in_trace(&self, jobs: &[Job], trace: TraceParent) -> Result<Vec<Uuid>, ProducerError> {
        self.enqueue_batch(jobs, Some(trace)).await
    }

    async fn enqueue_batch(&self, jobs: &[Job], trace: Option<TraceParent>) -> Result<Vec<Uuid>, ProducerError> {
        for job in jobs {
            job.validate().map_err(|source| ProducerError::InvalidJob { job_id: job.job_id, source })?;
        }
        let channel = self
            .channel()
            .await
            .map_err(|source| ProducerError::Broker { job_id: jobs.first().map(|j| j.job_id), source })?;
        let result = self.publish_batch(&channel, jobs, trace).await;
        if result.is_err() && !channel.status().connected() {
            // Forget the dead session so the next call reconnects instead of failing forever.
            self.inner.session.lock().await.take();
        }
        result
    }

    async fn publish_batch(
        &self,
        channel: &Channel,
        jobs: &[Job],
        trace: Option<TraceParent>,
    ) -> Result<Vec<Uuid>, ProducerError> {
        let config = &self.inner.config;
        let exchange = config.topology.work_exchange();
        let routing_key = config.topology.ingest_routing_key();
        let mut pending = Vec::with_capacity(jobs.len());
        for job in jobs {
            let confirm = quern_queue::publish(
                channel,
                &exchange,
                routing_key,
                &job.encode(),
                message_properties(job, trace.unwrap_or_else(TraceParent::new_root)),
            )
            .await
            .map_err(|source| ProducerError::Broker { job_id: Some(job.job_id), source })?;
            pending.push((job.job_id, confirm));
        }
        // Every publish is already on the wire: awaiting in order costs one round trip for the batch.
        let mut ids = Vec::with_capacity(pending.len());
        for (job_id, confirm) in pending {
            confirm
                .wait(config.confirm_timeout)
                .await
                .map_err(|source| ProducerError::Broker { job_id: Some(job_id), source })?;
            ids.push(job_id);
        }
        Ok(ids)
    }

    /// The open channel, reconnecting when the last one died.
    async fn channel(&self) -> Result<Channel, QueueError> {
        let mut session = self.inner.session.lock().await;
        if let Some(live) = session.as_ref() {
            if live.connection.status().connected() && live.channel.status().connected() {
                return Ok(live.channel.clone());
            }
        }
        tracing::info!("producer reconnecting to RabbitMQ");
        let fresh = open_session(&self.inner.config).await?;
        let channel = fresh.channel.clone();
        *session = Some(fresh);
        Ok(channel)
    }
}

async fn open_session(config: &ProducerConfig) -> Result<Session, QueueError> {
    let connection = quern_queue::connect(&config.amqp_url, &config.connection_name).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|cause| QueueError::Broker { operation: "channel.open".into(), cause })?;
    quern_queue::declare_topology(&channel, &config.topology, QueueArguments::default()).await?;
    quern_queue::enable_confirms(&channel).await?;
    Ok(Session { connection, channel })
}

fn message_properties(job: &Job, trace: TraceParent) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers::set_i64(&mut headers, headers::CONTRACT, i64::from(CONTRACT_VERSION));
    headers::set_str(&mut headers, TRACEPARENT_HEADER, &trace.to_string());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(job.job_id.to_string().into())
        .with_timestamp(now)
        .with_app_id("quern-producer".into())
        .with_headers(headers)
}
