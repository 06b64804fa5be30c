//! Every Prometheus series Quern exports, named in one place (`quern_` prefix, `_total` counters, `_seconds` base
//! units). Labels are bounded: reason codes, outcome classes, queue names; never job or document ids.
//! The README's metrics table lists the same series with their types and labels.

/// Counter: jobs delivered to a worker (every delivery, including redeliveries and retries).
pub const JOBS_RECEIVED: &str = "quern_jobs_received_total";
/// Counter: jobs whose rows are committed (including superseded and unchanged ones).
pub const JOBS_SUCCEEDED: &str = "quern_jobs_succeeded_total";
/// Counter, label `reason`: jobs sent to a delay queue after a transient failure.
pub const JOBS_RETRIED: &str = "quern_jobs_retried_total";
/// Counter, labels `reason_class` (`transient`/`permanent`) and `reason`: jobs moved to the dead-letter queue.
pub const JOBS_DEAD_LETTERED: &str = "quern_jobs_dead_lettered_total";
/// Counter, label `reason`: jobs given back to a delay queue without using up an attempt, because the embedding
/// provider refused every request (not the job's fault).
pub const JOBS_GIVEN_BACK: &str = "quern_jobs_given_back_total";
/// Histogram, label `span`: `enqueue_to_commit` (from the time in the job id) or `processing` (one attempt).
pub const JOB_DURATION_SECONDS: &str = "quern_job_duration_seconds";
/// Gauge: jobs being processed by this worker now.
pub const JOBS_IN_FLIGHT: &str = "quern_jobs_in_flight";
/// Counter: chunks whose vectors were fetched from the embedding API.
pub const CHUNKS_EMBEDDED: &str = "quern_chunks_embedded_total";
/// Counter: chunks whose stored vectors were kept on re-ingest (embedding calls saved).
pub const CHUNKS_REUSED: &str = "quern_chunks_reused_total";
/// Histogram, label `outcome` (`ok`, `429`, `5xx`, `4xx`, `timeout`, `error`): embedding request durations.
pub const EMBEDDING_REQUEST_SECONDS: &str = "quern_embedding_request_duration_seconds";
/// Histogram: inputs carried by each embedding request.
pub const EMBEDDING_REQUEST_INPUTS: &str = "quern_embedding_request_inputs";
/// Gauge: embedding requests in flight (permits of the shared semaphore in use).
pub const EMBEDDING_PERMITS_IN_USE: &str = "quern_embedding_permits_in_use";
/// Gauge: size of the embedding pool (the most requests in flight at once).
pub const EMBEDDING_PERMITS: &str = "quern_embedding_permits";
/// Gauge: embedding requests allowed in flight now: the adaptive limit, or the pool size when it is fixed.
pub const EMBEDDING_CONCURRENCY_LIMIT: &str = "quern_embedding_concurrency_limit";
/// Counter: times this process switched from `base64` to `float` vectors because the provider refused `base64`
/// (at most once per process).
pub const EMBEDDING_ENCODING_FALLBACKS: &str = "quern_embedding_encoding_fallbacks_total";
/// Gauge: 1 while the embedding provider takes requests, 0 while it refuses every one (a revoked key, an unknown
/// model, nobody listening) and is only probed.
pub const EMBEDDING_PROVIDER_AVAILABLE: &str = "quern_embedding_provider_available";
/// Counter, label `reason` (`embedding_unauthorized`, `embedding_misconfigured`, `embedding_unreachable`, ...):
/// times the embedding provider started refusing every request.
pub const EMBEDDING_PROVIDER_OUTAGES: &str = "quern_embedding_provider_outages_total";
/// Histogram, label `op` (`upsert`, `unchanged`, `delete`): duration of the write transaction.
pub const DB_WRITE_SECONDS: &str = "quern_db_write_duration_seconds";
/// Histogram: jobs whose writes shared one transaction (group commit).
pub const DB_WRITE_GROUP_JOBS: &str = "quern_db_write_group_jobs";
/// Counter, label `step` (`recovered`, `sealed`, `built`, `dropped`, `merged`): segment maintenance steps done by this worker
/// while it held the lease.
pub const SEGMENT_STEPS: &str = "quern_segment_maintenance_steps_total";
/// Histogram, label `step` (`built`, `merged`): duration of an index build or a merge (copy, build and swap).
pub const SEGMENT_STEP_SECONDS: &str = "quern_segment_maintenance_duration_seconds";
/// Counter, label `table` (`quern_jobs`, `quern_document_heads`): rows pruned by retention (finished jobs past
/// --job-retention, tombstones past --tombstone-retention), by this process.
pub const PRUNED_ROWS: &str = "quern_pruned_rows_total";
/// Gauge, label `queue` (`ingest`, `dead`, `retry.<delay>`): messages ready, polled from the broker.
pub const QUEUE_MESSAGES: &str = "quern_queue_messages";
/// Counter: broker sessions rebuilt after a failure.
pub const BROKER_RECONNECTS: &str = "quern_broker_reconnects_total";
/// Counter: database connections opened by the pool (rises when dead connections are replaced).
pub const DB_CONNECTIONS_OPENED: &str = "quern_db_connections_opened_total";
/// Gauge: 1 while the worker is ready (broker consuming, database reachable, not draining), else 0.
pub const READY: &str = "quern_ready";
