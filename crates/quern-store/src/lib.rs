//! Quern's Postgres/pgvector adapter.
//!
//! - [`pool`]: the deadpool pool with every timeout set (deadpool leaves them unset) and a server-side statement timeout;
//! - [`migrate`]: the ordered SQL files of `migrations/`, applied once each under a lock, and the dimension check;
//! - [`documents`]: atomic document replacement and deletion, together with the job's success;
//! - [`group_commit`]: the writes of concurrent jobs share transactions, each job answered after its commit;
//! - [`jobs`]: each job's status in `quern_jobs`;
//! - [`segments`]: `quern_chunks` in segments: a hot one without vector index, sealed ones indexed in bulk;
//! - [`maintenance`]: sealing, index builds and tiered merges, by one worker at a time under a lease;
//! - [`retention`]: pruning finished jobs and old tombstones in small batches, and the stale-job rule;
//! - [`index`]: the segments' HNSW parameters;
//! - [`overview`]: recent jobs by status and the commonest reasons jobs died, for operators;
//! - [`search`]: nearest chunks by cosine distance;
//! - `tls`: TLS to Postgres as libpq does it (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), on rustls;
//! - [`shadow`]: a shadow run's parity with the legacy worker's table, per document;
//! - [`error`]: [`StoreError`], which knows whether retrying can help.

pub mod documents;
pub mod error;
pub mod group_commit;
pub mod index;
pub mod jobs;
pub mod maintenance;
pub mod migrate;
pub mod overview;
pub mod pool;
pub mod retention;
pub mod search;
pub mod segments;
pub mod shadow;
mod tls;

pub use documents::{ChunkRow, DocumentChange, DocumentCommit, DocumentState, JobVersion, StoredDocument, WriteResult};
pub use error::StoreError;
pub use group_commit::{GroupCommitConfig, GroupCommitter};
pub use index::{HnswParams, InvalidSetting, VectorStorage};
pub use jobs::{JobRecord, JobStart, JobStatus};
pub use maintenance::{Maintainer, MaintenanceStep, Sealer};
pub use overview::{DeadReason, JobOverview, ThroughputMinute};
pub use pool::{Store, StoreConfig};
pub use retention::{PruneHistory, PruneReport, PruneRun, Pruner, RetentionPolicy};
pub use search::{default_ef_search, SearchHit, SegmentSearchWidth, ROWS_PER_CANDIDATE};
pub use segments::{Segment, SegmentBuild, SegmentIndex, SegmentPolicy, SegmentState, SegmentsStatus};
