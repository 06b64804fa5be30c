//! Quern's Postgres/pgvector adapter.
//!
//! - [`pool`]: the deadpool pool with every timeout set (deadpool leaves them unset) and a server-side statement timeout;
//! - [`migrate`]: the ordered SQL files of `migrations/`, applied once each under a lock, and the dimension check;
//! - [`documents`]: atomic document replacement and deletion, together with the job's success;
//! - [`jobs`]: each job's status in `quern_jobs`;
//! - [`overview`]: recent jobs by status and the commonest reasons jobs died, for operators;
//! - [`search`]: nearest chunks by cosine distance;
//! - [`error`]: [`StoreError`], which knows whether retrying can help.

pub mod documents;
pub mod error;
pub mod jobs;
pub mod migrate;
pub mod overview;
pub mod pool;
pub mod search;

pub use documents::{ChunkRow, DocumentWrite, JobVersion, StoredDocument, WriteResult};
pub use error::StoreError;
pub use jobs::{JobRecord, JobStart, JobStatus};
pub use overview::{DeadReason, JobOverview};
pub use pool::{Store, StoreConfig};
pub use search::SearchHit;
