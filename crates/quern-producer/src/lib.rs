//! The thin library a web tier uses to enqueue Quern ingestion jobs on RabbitMQ.
//!
//! It depends on Quern's core and queue crates only (no Postgres, no HTTP client). A [`Producer`] connects
//! once, declares the topology, and is `Clone + Send + Sync`: put it in your application state and call it
//! from every handler. A call returns only once the broker has confirmed it holds the message; a nack, an
//! unroutable message or a missing confirm is an error, never silence. It records nothing in any database:
//! the workers write each job's status to `quern_jobs`.
//!
//! ```no_run
//! use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
//! use quern_producer::{Job, Producer, ProducerConfig};
//!
//! #[derive(serde::Deserialize)]
//! struct Upload { id: String, text: String }
//!
//! async fn ingest(State(producer): State<Producer>, Json(upload): Json<Upload>) -> Result<String, StatusCode> {
//!     let job = Job::upsert("articles", upload.id, upload.text);
//!     match producer.enqueue(&job).await {
//!         Ok(job_id) => Ok(job_id.to_string()),
//!         Err(e) if e.is_invalid_job() => Err(StatusCode::UNPROCESSABLE_ENTITY),
//!         Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE),
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let producer = Producer::connect(ProducerConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")).await?;
//! let app: Router = Router::new().route("/ingest", post(ingest)).with_state(producer);
//! # let _ = app; Ok(()) }
//! ```

mod producer;

pub use producer::{Producer, ProducerConfig, ProducerError};
pub use quern_core::cutover::{cutover_bucket, goes_to_quern};
pub use quern_core::{ContractError, Job, JobOp, Topology, TraceParent};
pub use uuid::Uuid;
