//! Recent jobs of one queue prefix at a glance, for operators: how many are in each status, and why the dead ones
//! died. Scoped like the queues `quern status` shows beside them, since several prefixes may share a database.

use std::time::Duration;

use crate::{Store, StoreError};

/// Dead-job reasons listed by [`Store::job_overview`].
pub const TOP_DEAD_REASONS: i64 = 5;
/// Characters of `last_error` kept: reasons that differ only further on are counted together.
pub const REASON_CHARS: i32 = 100;

/// Jobs of one queue prefix last updated within a window, by status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOverview {
    /// The queue prefix counted: jobs whose worker consumed from `<prefix>.ingest`.
    pub queue_prefix: String,
    /// The window counted: jobs whose `updated_at` is at most this old.
    pub window: Duration,
    /// Enqueued, not yet picked up (only tools that choose to write this status).
    pub queued: u64,
    /// A worker is on them.
    pub running: u64,
    /// Their rows are committed.
    pub succeeded: u64,
    /// Their last attempt failed; they will be retried.
    pub failed: u64,
    /// They cannot succeed; their messages are in the dead-letter queue.
    pub dead: u64,
    /// The commonest reasons among the dead jobs, most frequent first (ties: most recent first).
    pub dead_reasons: Vec<DeadReason>,
    /// Jobs in the window recorded without a prefix (by workers older than migration 3), counted in no status
    /// above: they could belong to any prefix.
    pub without_prefix: u64,
}

/// Jobs of one queue prefix that succeeded in one minute, and the chunks they wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThroughputMinute {
    /// The minute's start.
    pub minute: chrono::DateTime<chrono::Utc>,
    /// Jobs that succeeded in it.
    pub jobs: u64,
    /// Chunks those jobs wrote.
    pub chunks: u64,
}

/// One reason jobs died, and how many died of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadReason {
    /// The first [`REASON_CHARS`] characters of `last_error`; `None` for jobs recorded without one.
    pub error: Option<String>,
    /// Dead jobs with this reason in the window.
    pub count: u64,
}

impl Store {
    /// Counts of jobs of `queue_prefix` by status among those updated within `window`, with the top reasons of
    /// the dead ones.
    pub async fn job_overview(&self, window: Duration, queue_prefix: &str) -> Result<JobOverview, StoreError> {
        self.timed("job overview", async {
            let client = self.client().await?;
            let window_secs = window.as_secs_f64();
            let counts = client
                .query(
                    "SELECT status, count(*) FILTER (WHERE queue_prefix = $2),
                            count(*) FILTER (WHERE queue_prefix IS NULL)
                     FROM quern_jobs
                     WHERE updated_at >= now() - make_interval(secs => $1)
                       AND (queue_prefix = $2 OR queue_prefix IS NULL)
                     GROUP BY status",
                    &[&window_secs, &queue_prefix],
                )
                .await
                .map_err(StoreError::db("count jobs by status"))?;
            let mut overview = JobOverview { queue_prefix: queue_prefix.to_owned(), window, ..JobOverview::default() };
            for row in counts {
                let count = row.get::<_, i64>(1) as u64;
                overview.without_prefix += row.get::<_, i64>(2) as u64;
                match row.get::<_, &str>(0) {
                    "queued" => overview.queued = count,
                    "running" => overview.running = count,
                    "succeeded" => overview.succeeded = count,
                    "failed" => overview.failed = count,
                    "dead" => overview.dead = count,
                    _ => {}
                }
            }
            let reasons = client
                .query(
                    "SELECT left(last_error, $2), count(*) FROM quern_jobs
                     WHERE status = 'dead' AND updated_at >= now() - make_interval(secs => $1) AND queue_prefix = $4
                     GROUP BY 1
                     ORDER BY count(*) DESC, max(updated_at) DESC
                     LIMIT $3",
                    &[&window_secs, &REASON_CHARS, &TOP_DEAD_REASONS, &queue_prefix],
                )
                .await
                .map_err(StoreError::db("top dead-job reasons"))?;
            overview.dead_reasons = reasons
                .into_iter()
                .map(|row| DeadReason { error: row.get(0), count: row.get::<_, i64>(1) as u64 })
                .collect();
            Ok(overview)
        })
        .await
    }

    /// Succeeded jobs of `queue_prefix` per minute over the last `window` (minutes with none are left out), for
    /// the console's throughput chart: the whole fleet's, whichever replica did the work. A job's `updated_at` is
    /// the time it succeeded; reading it goes through the (status, updated_at) index.
    pub async fn throughput(&self, window: Duration, queue_prefix: &str) -> Result<Vec<ThroughputMinute>, StoreError> {
        self.timed("throughput", async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT date_trunc('minute', updated_at), count(*), coalesce(sum(chunk_count), 0)::int8
                     FROM quern_jobs
                     WHERE status = 'succeeded' AND updated_at >= now() - make_interval(secs => $1)
                       AND queue_prefix = $2
                     GROUP BY 1 ORDER BY 1",
                    &[&window.as_secs_f64(), &queue_prefix],
                )
                .await
                .map_err(StoreError::db("throughput per minute"))?;
            Ok(rows
                .iter()
                .map(|row| ThroughputMinute {
                    minute: row.get(0),
                    jobs: row.get::<_, i64>(1) as u64,
                    chunks: row.get::<_, i64>(2) as u64,
                })
                .collect())
        })
        .await
    }
}
