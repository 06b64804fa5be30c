//! Worker settings, from flags or `QUERN_*` environment variables (flags win). `--help` shows each default.

use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use quern_config::RetentionArgs;
pub use quern_config::{parse_duration, BrokerArgs, DatabaseArgs, EmbeddingArgs, EmbeddingEncoding};
use quern_core::chunk::{DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS};
use quern_core::{Limits, RetryPolicy, Topology};
use quern_embed::PoolConfig;
use quern_store::{GroupCommitConfig, HnswParams, InvalidSetting, RetentionPolicy, SegmentPolicy, VectorStorage};

use crate::celery::{CeleryTasks, TaskMapping};

/// How this worker takes part in segment maintenance (see `quern_store::segments`).
#[derive(Debug, Clone, Args)]
pub struct SegmentArgs {
    /// Take part in segment maintenance: when no other worker holds the lease, seal the hot segment, build sealed
    /// segments' indexes and merge them. One worker at a time does it; `false` leaves it to the others.
    #[arg(long, env = "QUERN_SEGMENT_MAINTENANCE", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub segment_maintenance: bool,
    /// Rows after which the hot segment (searched exactly, written without index upkeep) is sealed and indexed.
    #[arg(long, env = "QUERN_SEGMENT_ROWS", default_value_t = SegmentPolicy::default().seal_rows,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub segment_rows: u64,
    /// Indexed segments of one size tier merged into one: a search visits fewer than this many per tier.
    #[arg(long, env = "QUERN_SEGMENT_MERGE_FACTOR", default_value_t = SegmentPolicy::default().merge_factor as u64,
          value_parser = clap::value_parser!(u64).range(2..=64))]
    pub segment_merge_factor: u64,
    /// Seconds without a new row after which a hot segment holding a tenth of --segment-rows or more is sealed
    /// and indexed early: after a burst, searches read its rows through an index instead of scanning them. 0 seals
    /// only full segments.
    #[arg(long, env = "QUERN_SEGMENT_QUIET_SECS", default_value_t = 30)]
    pub segment_quiet_secs: u64,
    /// HNSW links per node of every segment index (2..=100).
    #[arg(long, env = "QUERN_HNSW_M", default_value_t = HnswParams::default().m)]
    pub hnsw_m: u32,
    /// HNSW candidates kept while linking (4..=1000, at least 2 × --hnsw-m).
    #[arg(long, env = "QUERN_HNSW_EF_CONSTRUCTION", default_value_t = HnswParams::default().ef_construction)]
    pub hnsw_ef_construction: u32,
    /// How new databases store vectors: `vector` (4 bytes per dimension) or `halfvec` (2 bytes: half the table
    /// and index). Applied by --migrate when it creates the chunk table; an existing table keeps its storage.
    #[arg(long, env = "QUERN_VECTOR_STORAGE", default_value_t = VectorStorage::default())]
    pub vector_storage: VectorStorage,
    /// Memory of index builds and merges (e.g. 512MB). By default each build gets what its graph needs, up to 1GB.
    #[arg(long, env = "QUERN_MAINTENANCE_WORK_MEM", value_name = "SIZE",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub maintenance_work_mem: Option<String>,
}

impl SegmentArgs {
    /// The policy these flags describe, or what is wrong with them (the flag named).
    pub fn policy(&self) -> Result<SegmentPolicy, InvalidSetting> {
        let policy = SegmentPolicy {
            seal_rows: self.segment_rows,
            merge_factor: self.segment_merge_factor as usize,
            hnsw: HnswParams { m: self.hnsw_m, ef_construction: self.hnsw_ef_construction },
            maintenance_work_mem: self.maintenance_work_mem.clone(),
            seal_when_quiet: Some(Duration::from_secs(self.segment_quiet_secs)).filter(|quiet| !quiet.is_zero()),
        };
        // The store names `quern index create`'s flags; the worker's HNSW flags have a prefix.
        policy.validate().map_err(|error| InvalidSetting {
            flag: match error.flag {
                "--m" => "--hnsw-m",
                "--ef-construction" => "--hnsw-ef-construction",
                other => other,
            },
            problem: error.problem.replace("--m", "--hnsw-m"),
        })?;
        Ok(policy)
    }
}

/// Taking over an existing Celery ingestion task: its messages are consumed from its queue and run as jobs.
#[derive(Debug, Clone, Args)]
pub struct CeleryArgs {
    /// Also consume Celery task messages (protocol 2 or 1, JSON serializer) from this queue. Declared as Celery
    /// declares it (durable, bound to the direct exchange --celery-exchange with --celery-routing-key) when it
    /// does not exist yet; an existing queue is used as it is.
    #[arg(long, env = "QUERN_CELERY_QUEUE", value_name = "QUEUE")]
    pub celery_queue: Option<String>,
    /// A Celery task taken as a job, repeatable: `TASK=FIELD,...` names the job field (collection,
    /// document_id, text, metadata, op) of each positional argument, in order; `TASK=job` takes a first
    /// argument that is an object with the job contract's fields. Keyword arguments map by name. Messages of
    /// other tasks, or whose arguments do not map, go to the dead-letter queue with the reason.
    #[arg(long = "celery-task", env = "QUERN_CELERY_TASK", value_name = "TASK=FIELDS", value_delimiter = ';')]
    pub celery_tasks: Vec<TaskMapping>,
    /// The collection of Celery tasks whose arguments give none.
    #[arg(long, env = "QUERN_CELERY_COLLECTION", value_name = "COLLECTION")]
    pub celery_collection: Option<String>,
    /// The exchange Celery publishes the queue's tasks to (default: the queue's name, Celery's default for a
    /// routed queue).
    #[arg(long, env = "QUERN_CELERY_EXCHANGE", value_name = "EXCHANGE")]
    pub celery_exchange: Option<String>,
    /// The routing key of those tasks (default: the queue's name).
    #[arg(long, env = "QUERN_CELERY_ROUTING_KEY", value_name = "KEY")]
    pub celery_routing_key: Option<String>,
}

/// Where Celery's task messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeleryIntake {
    /// The queue consumed.
    pub queue: String,
    /// The exchange Celery publishes to.
    pub exchange: String,
    /// The routing key it publishes with.
    pub routing_key: String,
}

impl CeleryArgs {
    /// The tasks taken, or what is wrong with the flags (named).
    pub fn tasks(&self) -> Result<CeleryTasks, String> {
        let tasks = CeleryTasks::new(self.celery_tasks.clone(), self.celery_collection.clone())?;
        match (&self.celery_queue, tasks.is_empty()) {
            (Some(queue), true) => {
                Err(format!("--celery-queue {queue} needs at least one --celery-task naming the task to take"))
            }
            (None, false) if self.celery_exchange.is_some() || self.celery_routing_key.is_some() => {
                Err("--celery-exchange and --celery-routing-key need --celery-queue".into())
            }
            _ => Ok(tasks),
        }
    }

    /// The Celery queue to consume, if any.
    pub fn intake(&self) -> Option<CeleryIntake> {
        let queue = self.celery_queue.clone().filter(|q| !q.trim().is_empty())?;
        Some(CeleryIntake {
            exchange: self.celery_exchange.clone().unwrap_or_else(|| queue.clone()),
            routing_key: self.celery_routing_key.clone().unwrap_or_else(|| queue.clone()),
            queue,
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Everything `quern-worker` needs.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "quern-worker",
    version,
    about = "Consume Quern ingestion jobs: chunk, embed, store in Postgres/pgvector."
)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub embedding: EmbeddingArgs,
    #[command(flatten)]
    pub segments: SegmentArgs,
    #[command(flatten)]
    pub celery: CeleryArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// How often the worker holding the maintenance lease (see --segment-maintenance) prunes finished jobs and
    /// tombstones past --job-retention and --tombstone-retention, in batches of --prune-batch-rows until none is
    /// due; `0s` never (`quern prune` then does it by hand).
    #[arg(long, env = "QUERN_PRUNE_EVERY", default_value = "1m", value_name = "DURATION", value_parser = parse_duration)]
    pub prune_every: Duration,
    /// Embedding requests in flight at once, shared by every job of this process (the most, with
    /// --embedding-adaptive-concurrency, the default).
    #[arg(long, env = "QUERN_EMBEDDING_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub embedding_concurrency: u32,
    /// Adapt the embedding requests in flight to the provider (on by default; `false` keeps
    /// --embedding-concurrency in flight): start at 2, grow by one per round trip of timely answers (doubling
    /// until the first overload), cut to 0.7× on a 429, 503 or 504, to 1 on a timeout, and to
    /// limit ÷ latency-ratio when a round trip's answers take over 1.5× as long as requests sent alone (the
    /// provider queues them), never past --embedding-concurrency. A server computing one request at a time ends
    /// with about one in flight.
    #[arg(long, env = "QUERN_EMBEDDING_ADAPTIVE_CONCURRENCY", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub embedding_adaptive_concurrency: bool,
    /// Most embedding requests a minute from this process (0 = unlimited); requests wait for the budget, which
    /// lets a second's worth go at once. Retries are not charged.
    #[arg(long, env = "QUERN_EMBEDDING_MAX_REQUESTS_PER_MINUTE", default_value_t = 0)]
    pub embedding_max_requests_per_minute: u64,
    /// Most estimated tokens a minute sent by this process (0 = unlimited), estimated as characters ÷
    /// --chars-per-token; a request larger than the budget still goes, and the next ones wait longer.
    #[arg(long, env = "QUERN_EMBEDDING_MAX_TOKENS_PER_MINUTE", default_value_t = 0)]
    pub embedding_max_tokens_per_minute: u64,
    /// Milliseconds a request that is not full waits for more chunks (from any job) before it leaves.
    #[arg(long, env = "QUERN_EMBEDDING_LINGER_MS", default_value_t = 2)]
    pub embedding_linger_ms: u64,
    /// Most estimated tokens per embedding request, so shared requests stay within a provider's per-request
    /// limit (text-embeddings-inference's default `--max-batch-tokens` is 16384).
    #[arg(long, env = "QUERN_BATCH_MAX_TOKENS", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_max_tokens: u32,
    /// Characters per token for that estimate (about 4 for English text with OpenAI's tokenizers).
    #[arg(long, env = "QUERN_CHARS_PER_TOKEN", default_value_t = 4.0)]
    pub chars_per_token: f64,
    /// Most chunks per embedding request; chunks of several jobs share a request.
    #[arg(long, env = "QUERN_BATCH_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch_size: u32,
    /// Unacknowledged jobs the broker hands this worker at once (AMQP prefetch). Jobs in flight bound the
    /// throughput (jobs/s ≈ prefetch ÷ seconds per job), so size it to keep the embedding pool fed: at least
    /// 2 × concurrency × batch size ÷ chunks per document (≈ 100 for 8 KB documents, 1024 for one-chunk
    /// ones). Memory grows with it: every job in flight holds its text, chunks and vectors.
    #[arg(long, env = "QUERN_PREFETCH", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Document write transactions in flight at once. Jobs that finish together share a transaction (group
    /// commit); several transactions keep several Postgres backends busy, which HNSW index upkeep needs.
    /// Keep it below --db-max-connections, which also serves each job's reads.
    #[arg(long, env = "QUERN_WRITE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub write_concurrency: u32,
    /// Most jobs whose writes share one transaction.
    #[arg(long, env = "QUERN_WRITE_GROUP_JOBS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub write_group_jobs: u32,
    /// Most chunk rows in one write transaction (a larger document still goes, alone): bounds the size of its
    /// statements, and so the buffers each connection keeps.
    #[arg(long, env = "QUERN_WRITE_GROUP_ROWS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub write_group_rows: u32,
    /// Largest chunk, in characters.
    #[arg(long, env = "QUERN_CHUNK_SIZE", default_value_t = DEFAULT_MAX_CHARS)]
    pub chunk_size: usize,
    /// Characters shared by neighbouring chunks; must be smaller than the chunk size.
    #[arg(long, env = "QUERN_CHUNK_OVERLAP", default_value_t = DEFAULT_OVERLAP_CHARS)]
    pub chunk_overlap: usize,
    /// Run in shadow beside the legacy Celery worker: consume a copy of the Celery queue's messages (a queue
    /// `<prefix>.shadow.copy.<celery queue>` bound where the legacy queue is bound, so the legacy worker still
    /// gets every message), under the queue prefix `<prefix>.shadow` and in the database schema `quern_shadow`
    /// (unless --database-schema says otherwise): never the legacy worker's data or the production collections.
    /// Needs --celery-queue and --celery-task; `quern shadow report` compares the outcome with the legacy table.
    #[arg(long, env = "QUERN_SHADOW", default_value_t = false)]
    pub shadow: bool,
    /// Apply pending database migrations at start.
    #[arg(long, env = "QUERN_MIGRATE", default_value_t = false)]
    pub migrate: bool,
    /// Seconds to finish in-flight jobs after SIGTERM before giving them back to the broker.
    #[arg(long, env = "QUERN_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Failed attempts after which a job goes to the dead-letter queue (throttling by the provider does not count).
    #[arg(long, env = "QUERN_MAX_ATTEMPTS", default_value_t = quern_core::retry::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Delay tiers of job retries, comma-separated: retry n waits tier n (the last repeats). One delay queue
    /// `<prefix>.retry.<delay>` per tier.
    #[arg(long, env = "QUERN_RETRY_TIERS", value_delimiter = ',', default_value = "1s,10s,60s,5m", value_parser = parse_duration)]
    pub retry_tiers: Vec<Duration>,
    /// Longest time one embedding request is retried (with backoff and full jitter) before the job is retried.
    /// Timeouts are resent apart (see --embedding-timeout-secs); a provider that refuses every request (401,
    /// 403, 404, a 400 about a setting) or still cannot be reached after this time fails no job: jobs go back to
    /// the queue without using up an attempt, the worker takes none until a probe embeds again.
    #[arg(long, env = "QUERN_EMBEDDING_RETRY_MAX_SECS", default_value_t = 30)]
    pub embedding_retry_max_secs: u64,
    /// Largest message body accepted, in bytes; larger jobs are dead-lettered with the limit named.
    #[arg(long, env = "QUERN_MAX_MESSAGE_BYTES", default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// Largest document accepted, in characters.
    #[arg(long, env = "QUERN_MAX_DOCUMENT_CHARS", default_value_t = Limits::default().max_document_chars)]
    pub max_document_chars: usize,
    /// Most chunks one document may make.
    #[arg(long, env = "QUERN_MAX_CHUNKS", default_value_t = Limits::default().max_chunks)]
    pub max_chunks: usize,
    /// This worker's name in logs, dead-letter headers and the broker's consumer list (default: host-pid).
    #[arg(long, env = "QUERN_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Address of the ops endpoint: `/metrics` (Prometheus), `/healthz`, `/readyz`. Port 0 picks a free port
    /// (logged); `off` disables it. Give each worker on one host its own port.
    #[arg(long, env = "QUERN_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    pub metrics_addr: String,
    /// Log format.
    #[arg(long, env = "QUERN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint to export job spans to (e.g. `http://otel-collector:4318/v1/traces`); each job's span
    /// is a child of the producer's `traceparent`. Needs a build with the `otlp` cargo feature.
    #[arg(long, env = "QUERN_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// TOML file of settings, keyed by flag name (`prefetch = 64`, `retry_tiers = ["1s", "10s"]`). Flags win
    /// over environment variables, which win over the file, which wins over the defaults.
    #[arg(long, env = "QUERN_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective configuration as a config file (each value's source noted; secrets left out, each
    /// named with the environment variable to set) and exit. `--config` on the output gives the same settings.
    #[arg(long)]
    pub print_config: bool,
}

pub use quern_store::shadow::SHADOW_SCHEMA;

impl WorkerConfig {
    /// The settings a run uses: with `--shadow`, the shadow's queue prefix and database schema. Fails when
    /// `--shadow` is given without the Celery queue it copies.
    pub fn shadow_applied(mut self) -> Result<WorkerConfig, String> {
        if !self.shadow {
            return Ok(self);
        }
        if self.celery.intake().is_none() {
            return Err("--shadow runs beside a legacy Celery worker: give --celery-queue and --celery-task".into());
        }
        let prefix = format!("{}.shadow", self.broker.topology.prefix());
        self.broker.topology = Topology::new(&prefix).map_err(|error| error.to_string())?;
        if self.database.database_schema.as_deref().is_none_or(str::is_empty) {
            self.database.database_schema = Some(SHADOW_SCHEMA.to_owned());
        }
        Ok(self)
    }

    /// The queue a shadow run consumes its copy of the Celery messages from, when this is a shadow run.
    pub fn shadow_copy_queue(&self) -> Option<String> {
        let celery = self.celery.intake().filter(|_| self.shadow)?;
        Some(format!("{}.copy.{}", self.broker.topology.prefix(), celery.queue))
    }

    /// How document writes share transactions.
    pub fn group_commit_config(&self) -> GroupCommitConfig {
        GroupCommitConfig {
            concurrency: self.write_concurrency as usize,
            max_jobs: self.write_group_jobs as usize,
            max_rows: self.write_group_rows as usize,
        }
    }

    /// The embedding pool settings.
    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            batch_size: self.batch_size as usize,
            max_in_flight: self.embedding_concurrency as usize,
            adaptive_concurrency: self.embedding_adaptive_concurrency,
            max_requests_per_minute: Some(self.embedding_max_requests_per_minute).filter(|&n| n > 0),
            max_tokens_per_minute: Some(self.embedding_max_tokens_per_minute).filter(|&n| n > 0),
            linger: Duration::from_millis(self.embedding_linger_ms),
            max_batch_tokens: self.batch_max_tokens as usize,
            chars_per_token: if self.chars_per_token > 0.0 { self.chars_per_token } else { 4.0 },
            retry: quern_embed::RetryPolicy {
                max_elapsed: Duration::from_secs(self.embedding_retry_max_secs),
                ..quern_embed::RetryPolicy::default()
            },
        }
    }

    /// The job-level retry policy, or what is wrong with the flags.
    pub fn retry_policy(&self) -> Result<RetryPolicy, quern_core::retry::RetryPolicyError> {
        RetryPolicy::new(self.max_attempts, self.retry_tiers.clone())
    }

    /// What the lease holder prunes: the tombstone horizon, unless given, follows the retry policy and the ingest
    /// queue's delivery limit.
    pub fn retention_policy(&self) -> Result<RetentionPolicy, quern_core::retry::RetryPolicyError> {
        Ok(self.retention.policy(&self.retry_policy()?, quern_queue::QueueArguments::default().delivery_limit))
    }

    /// The per-job limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_document_chars: self.max_document_chars,
            max_chunks: self.max_chunks,
        }
    }

    /// The configured worker id, or `host-pid`.
    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
            let host = if host.is_empty() { "worker".to_owned() } else { host };
            format!("{host}-{}", std::process::id())
        })
    }

    /// Grace period for in-flight jobs at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
