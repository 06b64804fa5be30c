//! Prune runs recorded in `quern_prune_runs`, and what `quern status` reads of them.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{seconds, PruneReport};
use crate::{Store, StoreError};

/// How long prune runs stay recorded in `quern_prune_runs`: a worker prunes about once a minute, so a week is ten
/// thousand short rows, and `quern status` sums the last day.
pub const RUN_HISTORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// One recorded prune run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneRun {
    /// `worker <id>` or `quern prune`.
    pub pruned_by: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Finished job rows it deleted.
    pub jobs: u64,
    /// Tombstones it deleted.
    pub tombstones: u64,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// What `quern status` shows of retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneHistory {
    /// The latest run, if any was recorded.
    pub last: Option<PruneRun>,
    /// Runs that finished within the last day.
    pub runs_last_day: u64,
    /// Job rows they deleted.
    pub jobs_last_day: u64,
    /// Tombstones they deleted.
    pub tombstones_last_day: u64,
    /// The stale-job watermark, once a tombstone has been pruned.
    pub tombstones_pruned_through: Option<DateTime<Utc>>,
}

impl Store {
    /// The latest prune run and the last day's totals; `None` for a database without migration 6.
    pub async fn prune_history(&self) -> Result<Option<PruneHistory>, StoreError> {
        self.timed("read prune runs", async {
            let client = self.client().await?;
            let present: bool = client
                .query_one("SELECT to_regclass('quern_prune_runs') IS NOT NULL", &[])
                .await
                .map_err(StoreError::db("look for quern_prune_runs"))?
                .get(0);
            if !present {
                return Ok(None);
            }
            let last = client
                .query_opt(
                    "SELECT pruned_by, started_at, finished_at, jobs_pruned, tombstones_pruned, error
                     FROM quern_prune_runs ORDER BY run_id DESC LIMIT 1",
                    &[],
                )
                .await
                .map_err(StoreError::db("read the last prune run"))?
                .map(|row| PruneRun {
                    pruned_by: row.get(0),
                    started_at: row.get(1),
                    finished_at: row.get(2),
                    jobs: row.get::<_, i64>(3).max(0) as u64,
                    tombstones: row.get::<_, i64>(4).max(0) as u64,
                    error: row.get(5),
                });
            let day = client
                .query_one(
                    "SELECT count(*), coalesce(sum(jobs_pruned), 0)::int8, coalesce(sum(tombstones_pruned), 0)::int8,
                            (SELECT nullif(tombstones_pruned_through, '-infinity') FROM quern_prune_state)
                     FROM quern_prune_runs WHERE finished_at >= now() - interval '1 day'",
                    &[],
                )
                .await
                .map_err(StoreError::db("sum the last day's prune runs"))?;
            Ok(Some(PruneHistory {
                last,
                runs_last_day: day.get::<_, i64>(0).max(0) as u64,
                jobs_last_day: day.get::<_, i64>(1).max(0) as u64,
                tombstones_last_day: day.get::<_, i64>(2).max(0) as u64,
                tombstones_pruned_through: day.get(3),
            }))
        })
        .await
    }

    /// Records a run and forgets runs older than [`RUN_HISTORY`]; returns the watermark.
    pub(super) async fn record_run(
        &self,
        pruned_by: &str,
        started_at: DateTime<Utc>,
        report: &PruneReport,
        error: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.timed("record the prune run", async {
            let client = self.client().await?;
            let (jobs, tombstones) = (report.jobs as i64, report.tombstones as i64);
            let row = client
                .query_one(
                    "WITH recorded AS (
                         INSERT INTO quern_prune_runs
                             (pruned_by, started_at, job_cutoff, tombstone_cutoff, jobs_pruned, tombstones_pruned,
                              error)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ), forgotten AS (
                         DELETE FROM quern_prune_runs WHERE finished_at < now() - make_interval(secs => $8)
                     )
                     SELECT (SELECT nullif(tombstones_pruned_through, '-infinity') FROM quern_prune_state)",
                    &[
                        &pruned_by,
                        &started_at,
                        &report.job_cutoff,
                        &report.tombstone_cutoff,
                        &jobs,
                        &tombstones,
                        &error,
                        &seconds(RUN_HISTORY),
                    ],
                )
                .await
                .map_err(StoreError::db("record the prune run"))?;
            Ok(row.get(0))
        })
        .await
    }
}
