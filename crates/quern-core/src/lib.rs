//! Quern's core: everything that decides what a job is and what happens to it, with no network or database I/O.
//!
//! - [`job`]: the v1 job contract (types, decoding with reasons that name the field, validation);
//! - [`chunk`]: splitting a document into overlapping chunks by characters;
//! - [`cutover`]: which documents a producer sends to Quern at a cut-over percentage (the same in every producer);
//! - [`topology`]: the exchange, queue and routing-key names every component derives from one prefix;
//! - [`outcome`]: a message's fate and the error classes that decide it;
//! - [`retry`]: the job-level retry policy (attempts, delay tiers) as a value;
//! - [`retention`]: how long a job's message can still arrive, and so how long tombstones are kept;
//! - [`backoff`]: growing, jittered pauses between attempts, for every retry loop;
//! - [`error_text`]: errors in an operator's words;
//! - [`limits`]: the largest job a worker accepts;
//! - [`metric_names`]: the name of every exported Prometheus series;
//! - [`trace`]: W3C `traceparent` values carried from producer to worker;
//! - [`digest`]: content hashes used to recognise unchanged documents.

pub mod backoff;
pub mod chunk;
pub mod cutover;
pub mod digest;
pub mod error_text;
pub mod job;
pub mod limits;
pub mod metric_names;
pub mod outcome;
pub mod retention;
pub mod retry;
pub mod topology;
pub mod trace;

pub use backoff::{Backoff, Jitter, Pauses};
pub use chunk::{Chunker, ChunkerError};
pub use job::{ContractError, Job, JobOp, RejectedBody};
pub use limits::{LimitExceeded, Limits};
pub use outcome::{ErrorClass, Failure, Outcome};
pub use retry::{RetryDecision, RetryPolicy};
pub use topology::{Topology, TopologyError};
pub use trace::TraceParent;
