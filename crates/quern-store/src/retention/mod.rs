//! Retention: `quern_jobs` and the tombstones of `quern_document_heads` kept bounded, by pruning what no reader or
//! writer needs any more, in small batches that never make a writer wait for more than one short transaction.
//!
//! What goes:
//! - a job row once it is finished (`succeeded` or `dead`) and unchanged for [`RetentionPolicy::job_retention`].
//!   Unfinished rows (`queued`, `running`, `failed`) stay: their job can still come back. A redelivered job whose
//!   row is gone runs again, which the document's version makes harmless (it is superseded, or writes what is
//!   already there), so the retention only has to outlast redeliveries to spare the work, not for correctness;
//! - a tombstone (the head of a deleted document) once its version is older than
//!   [`RetentionPolicy::tombstone_retention`], by default `quern_core::retention::tombstone_horizon`: the longest a
//!   job's message can still arrive outside a dead-letter replay;
//! - prune runs recorded more than [`RUN_HISTORY`] ago.
//!
//! The stale-job rule. A tombstone is what stops a job older than the delete from bringing the document back. Once
//! it is pruned, the newest pruned version is kept in `quern_prune_state` (the watermark), and a write whose
//! document has no head and whose version is not newer than the watermark is refused as
//! [`crate::WriteResult::Stale`] (the worker dead-letters it): it might predate a delete that was forgotten. A
//! delete in that position writes nothing and succeeds (the document is absent, as it asks; a tombstone of its old
//! version could let an upsert between it and the forgotten delete back in). A document with a head is ordered by
//! it as before, and a job newer than every pruned tombstone cannot be older than any of them. A first write of a
//! new document by a job that old (a dead letter replayed days later) is refused too; enqueueing the document again
//! (a new job, a new version) writes it.
//!
//! Why writers are never held up: each batch is one statement, its own short transaction, of at most
//! [`RetentionPolicy::batch_rows`] rows, and it skips rows a writer has locked (`FOR UPDATE SKIP LOCKED`) rather than
//! waiting for them. A tombstone is taken only with its document's write lock (the advisory lock every writer takes,
//! tried, never waited for), and the watermark moves in the same transaction: a writer that finds the tombstone gone
//! finds the watermark moved.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quern_core::metric_names;

use crate::{Store, StoreError};

mod runs;

pub use runs::{PruneHistory, PruneRun, RUN_HISTORY};

/// Most tombstones per batch whatever [`RetentionPolicy::batch_rows`] says: each holds an advisory lock until the
/// batch commits, and the lock table is shared by every session (64 × max_connections slots by default).
pub const MAX_TOMBSTONE_BATCH: u32 = 1000;
/// A duration beyond this is taken as this (Postgres intervals end around 178 million years).
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What is kept, and how much goes per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// A finished job's row goes once unchanged this long.
    pub job_retention: Duration,
    /// A tombstone goes once its version is this old.
    pub tombstone_retention: Duration,
    /// Rows per batch (per transaction); at least 1.
    pub batch_rows: u32,
}

impl Default for RetentionPolicy {
    /// A week of finished jobs, tombstones for the default retry policy's horizon, batches of 1,000 rows.
    fn default() -> RetentionPolicy {
        RetentionPolicy {
            job_retention: Duration::from_secs(7 * 24 * 3600),
            tombstone_retention: quern_core::retention::tombstone_horizon(&quern_core::RetryPolicy::default(), 20),
            batch_rows: 1000,
        }
    }
}

/// What a prune run did, or (dry run) would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Only counted; nothing was deleted or recorded.
    pub dry_run: bool,
    /// Finished job rows deleted (or due).
    pub jobs: u64,
    /// Tombstones deleted (or due).
    pub tombstones: u64,
    /// Finished jobs last changed before this were due.
    pub job_cutoff: DateTime<Utc>,
    /// Tombstones of versions before this were due.
    pub tombstone_cutoff: DateTime<Utc>,
    /// The stale-job watermark after the run: the newest version among every tombstone pruned so far.
    pub tombstones_pruned_through: Option<DateTime<Utc>>,
    /// How long the run took.
    pub duration: Duration,
    /// The run stopped before it was done because it was asked to (shutdown, or the lease was lost).
    pub interrupted: bool,
}

impl PruneReport {
    /// Rows deleted (or due) in every table.
    pub fn rows(&self) -> u64 {
        self.jobs + self.tombstones
    }
}

/// Prunes while a [`crate::Maintainer`] holds the maintenance lease, beside it on pool connections (so a long index
/// build does not hold pruning back). See [`crate::Maintainer::pruner`].
#[derive(Debug, Clone)]
pub struct Pruner {
    pub(crate) store: Store,
    pub(crate) policy: RetentionPolicy,
    pub(crate) pruned_by: String,
    pub(crate) lease: Arc<AtomicBool>,
}

impl Pruner {
    /// Runs [`Store::prune`] if the maintainer holds the lease, stopping between batches once it does not or once
    /// `stop` says so; `Ok(None)` without the lease.
    pub async fn prune_if_holding(&self, stop: &(dyn Fn() -> bool + Sync)) -> Result<Option<PruneReport>, StoreError> {
        if !self.lease.load(Ordering::Acquire) {
            return Ok(None);
        }
        let lease = &self.lease;
        let keep_going = || lease.load(Ordering::Acquire) && !stop();
        self.store.prune(&self.policy, &self.pruned_by, &keep_going).await.map(Some)
    }
}

/// Seconds of `duration` as Postgres takes them in `make_interval(secs => …)`.
pub(crate) fn seconds(duration: Duration) -> f64 {
    duration.min(LONGEST).as_secs_f64()
}

impl Store {
    /// Deletes, batch after batch, the finished jobs and tombstones `policy` lets go, until none is left that no
    /// writer holds or `keep_going` says stop; then records the run (as `pruned_by`) and deletes runs recorded more
    /// than [`RUN_HISTORY`] ago. A batch that fails ends the run with its error, recorded too. Safe beside writers
    /// and beside another prune.
    pub async fn prune(
        &self,
        policy: &RetentionPolicy,
        pruned_by: &str,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<PruneReport, StoreError> {
        let started = Instant::now();
        let (started_at, job_cutoff, tombstone_cutoff) = self.cutoffs(policy).await.inspect_err(|error| {
            tracing::warn!(%error, "prune run failed before it started");
        })?;
        let mut report = PruneReport {
            dry_run: false,
            jobs: 0,
            tombstones: 0,
            job_cutoff,
            tombstone_cutoff,
            tombstones_pruned_through: None,
            duration: Duration::ZERO,
            interrupted: false,
        };
        let batch = i64::from(policy.batch_rows.max(1));
        let pruned = async {
            loop {
                if !keep_going() {
                    report.interrupted = true;
                    return Ok(());
                }
                let deleted = self.prune_jobs(job_cutoff, batch).await?;
                report.jobs += deleted;
                if deleted < batch as u64 {
                    break;
                }
            }
            let batch = batch.min(i64::from(MAX_TOMBSTONE_BATCH));
            loop {
                if !keep_going() {
                    report.interrupted = true;
                    return Ok(());
                }
                let (candidates, deleted) = self.prune_tombstones(tombstone_cutoff, batch).await?;
                report.tombstones += deleted;
                // Candidates a writer held are left for the next run; the others were deleted.
                if candidates < batch as u64 || deleted == 0 {
                    return Ok(());
                }
            }
        }
        .await;
        report.duration = started.elapsed();
        metrics::counter!(metric_names::PRUNED_ROWS, "table" => "quern_jobs").increment(report.jobs);
        metrics::counter!(metric_names::PRUNED_ROWS, "table" => "quern_document_heads").increment(report.tombstones);
        let error = pruned.as_ref().err().map(ToString::to_string);
        let recorded = self.record_run(pruned_by, started_at, &report, error.as_deref()).await;
        match (&pruned, &recorded) {
            (Err(error), _) => {
                tracing::warn!(jobs = report.jobs, tombstones = report.tombstones, %error, "prune run failed")
            }
            (Ok(()), Err(error)) => tracing::warn!(%error, "could not record the prune run"),
            (Ok(()), Ok(_)) if report.rows() > 0 => tracing::info!(
                jobs = report.jobs,
                tombstones = report.tombstones,
                duration_ms = report.duration.as_millis() as u64,
                "pruned finished jobs and tombstones past their retention"
            ),
            (Ok(()), Ok(_)) => tracing::debug!("nothing to prune"),
        }
        pruned?;
        report.tombstones_pruned_through = recorded?;
        Ok(report)
    }

    /// What [`Store::prune`] would delete now, counted; nothing is deleted or recorded.
    pub async fn prune_preview(&self, policy: &RetentionPolicy) -> Result<PruneReport, StoreError> {
        let started = Instant::now();
        let (_, job_cutoff, tombstone_cutoff) = self.cutoffs(policy).await?;
        self.timed("count prunable rows", async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM quern_jobs
                             WHERE status IN ('succeeded', 'dead') AND updated_at < $1),
                            (SELECT count(*) FROM quern_document_heads WHERE deleted AND version_at < $2),
                            (SELECT nullif(tombstones_pruned_through, '-infinity') FROM quern_prune_state)",
                    &[&job_cutoff, &tombstone_cutoff],
                )
                .await
                .map_err(StoreError::db("count prunable rows"))?;
            Ok(PruneReport {
                dry_run: true,
                jobs: row.get::<_, i64>(0).max(0) as u64,
                tombstones: row.get::<_, i64>(1).max(0) as u64,
                job_cutoff,
                tombstone_cutoff,
                tombstones_pruned_through: row.get(2),
                duration: started.elapsed(),
                interrupted: false,
            })
        })
        .await
    }

    /// The database's now, and the two cutoffs of `policy` from it: one clock for every worker and the CLI.
    async fn cutoffs(
        &self,
        policy: &RetentionPolicy,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>), StoreError> {
        self.timed("read the prune cutoffs", async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT now(), now() - make_interval(secs => $1), now() - make_interval(secs => $2)",
                    &[&seconds(policy.job_retention), &seconds(policy.tombstone_retention)],
                )
                .await
                .map_err(StoreError::db("read the prune cutoffs"))?;
            Ok((row.get(0), row.get(1), row.get(2)))
        })
        .await
    }

    /// Deletes up to `limit` finished jobs last changed before `cutoff`, skipping rows a writer holds.
    async fn prune_jobs(&self, cutoff: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
        self.timed("prune finished jobs", async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "WITH doomed AS (
                         SELECT job_id FROM quern_jobs
                         WHERE status IN ('succeeded', 'dead') AND updated_at < $1
                         LIMIT $2
                         FOR UPDATE SKIP LOCKED
                     )
                     DELETE FROM quern_jobs AS job USING doomed WHERE job.job_id = doomed.job_id",
                )
                .await
                .map_err(StoreError::db("prepare the job prune"))?;
            client.execute(&statement, &[&cutoff, &limit]).await.map_err(StoreError::db("prune finished jobs"))
        })
        .await
    }

    /// Deletes up to `limit` tombstones of versions before `cutoff`, oldest first, each under its document's write
    /// lock (tried: a document being written is left for the next run), and moves the watermark in the same
    /// transaction. Returns the candidates (the oldest `limit` due) and how many of them were deleted. The lock is tried only on the `limit` candidates, materialised first: a lock function in a
    /// plain filter could be run on every row the planner scans, and each lock holds a slot until commit.
    async fn prune_tombstones(&self, cutoff: DateTime<Utc>, limit: i64) -> Result<(u64, u64), StoreError> {
        self.timed("prune tombstones", async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "WITH candidates AS MATERIALIZED (
                         SELECT collection, document_id FROM quern_document_heads
                         WHERE deleted AND version_at < $1
                         ORDER BY version_at
                         LIMIT $2
                     ), unlocked AS MATERIALIZED (
                         SELECT collection, document_id FROM candidates
                         WHERE pg_try_advisory_xact_lock(hashtextextended(collection || chr(31) || document_id, 0))
                     ), doomed AS (
                         SELECT head.collection, head.document_id FROM quern_document_heads AS head
                         JOIN unlocked USING (collection, document_id)
                         WHERE head.deleted AND head.version_at < $1
                         FOR UPDATE OF head SKIP LOCKED
                     ), gone AS (
                         DELETE FROM quern_document_heads AS head USING doomed
                         WHERE head.collection = doomed.collection AND head.document_id = doomed.document_id
                         RETURNING head.version_at
                     ), moved AS (
                         UPDATE quern_prune_state
                         SET tombstones_pruned_through = greatest(tombstones_pruned_through, batch.newest)
                         FROM (SELECT max(version_at) AS newest FROM gone) AS batch
                         WHERE batch.newest IS NOT NULL
                         RETURNING 1
                     )
                     SELECT (SELECT count(*) FROM candidates), (SELECT count(*) FROM gone)",
                )
                .await
                .map_err(StoreError::db("prepare the tombstone prune"))?;
            let row =
                client.query_one(&statement, &[&cutoff, &limit]).await.map_err(StoreError::db("prune tombstones"))?;
            Ok((row.get::<_, i64>(0).max(0) as u64, row.get::<_, i64>(1).max(0) as u64))
        })
        .await
    }
}
