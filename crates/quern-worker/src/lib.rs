//! The Quern worker: consume ingestion jobs, chunk them, embed the chunks, commit the vectors, then ack.
//!
//! - [`config`]: every setting, as flags and `QUERN_*` environment variables (shared with the `quern` CLI);
//! - [`config_file`]: flags > environment > TOML file > defaults, and `--print-config`;
//! - [`pipeline`]: [`Pipeline::process_delivery`], one message body in, one [`quern_core::Outcome`] out;
//! - [`celery`]: Celery task messages (`--celery-task`) mapped to jobs, or refused with the reason;
//! - [`consumer`]: [`run`], the broker session: consume, hand each delivery to the pipeline, map its outcome
//!   to ack / requeue / dead-letter, reconnect after broker trouble, drain on shutdown;
//! - `intake`: the consumer of the ingest queue, paused while the embedding provider refuses every request;
//! - [`republisher`]: moving a message to a delay queue (retry later) or the dead-letter queue, confirmed before the ack;
//! - [`maintenance`]: segment maintenance (seal, build, merge) while this worker holds the lease;
//! - [`ops`]: `/metrics`, `/healthz` and `/readyz`, and the readiness state behind them;
//! - [`wait`]: waiting for a dependency at start-up (and for the broker), with growing, jittered pauses;
//! - [`telemetry`]: tracing setup.

pub mod celery;
pub mod config;
pub mod config_file;
pub mod consumer;
mod intake;
pub mod maintenance;
pub mod ops;
pub mod pipeline;
pub mod republisher;
pub mod signals;
pub mod telemetry;
pub mod wait;

pub use config::WorkerConfig;
pub use consumer::run;
pub use pipeline::Pipeline;
