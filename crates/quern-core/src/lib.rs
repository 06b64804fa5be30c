//! Quern's core: everything that decides what a job is and what happens to it, with no network or database I/O.
//!
//! - [`job`]: the v1 job contract (types, decoding with reasons that name the field, validation);
//! - [`chunk`]: splitting a document into overlapping chunks by characters;
//! - [`topology`]: the exchange, queue and routing-key names every component derives from one prefix;
//! - [`outcome`]: a message's fate and the error classes that decide it;
//! - [`digest`]: content hashes used to recognise unchanged documents.

pub mod chunk;
pub mod digest;
pub mod job;
pub mod outcome;
pub mod topology;

pub use chunk::{Chunker, ChunkerError};
pub use job::{ContractError, Job, JobOp, RejectedBody};
pub use outcome::{ErrorClass, Outcome};
pub use topology::{Topology, TopologyError};
