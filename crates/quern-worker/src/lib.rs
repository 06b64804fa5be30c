//! The Quern worker: consume ingestion jobs, chunk them, embed the chunks, commit the vectors, then ack.
//!
//! - [`config`]: every setting, as flags and `QUERN_*` environment variables (shared with the `quern` CLI);
//! - [`pipeline`]: [`Pipeline::process_delivery`], one message body in, one [`quern_core::Outcome`] out;
//! - [`consumer`]: [`run`], the broker session: consume, hand each delivery to the pipeline, map its outcome
//!   to ack / requeue / dead-letter, reconnect after broker trouble, drain on shutdown;
//! - [`dead_letter`]: moving a message to the dead-letter queue with its reason, confirmed before the ack;
//! - [`telemetry`]: tracing setup.

pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod pipeline;
pub mod signals;
pub mod telemetry;

pub use config::WorkerConfig;
pub use consumer::run;
pub use pipeline::Pipeline;
