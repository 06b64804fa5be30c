//! How long finished jobs and tombstones are kept, shared by `quern-worker` (which prunes under the maintenance
//! lease) and `quern prune` (a run in the foreground).

use std::time::Duration;

use clap::Args;
use quern_core::RetryPolicy;
use quern_store::RetentionPolicy;

use crate::parse_duration;

/// Retention of `quern_jobs` and of the tombstones in `quern_document_heads` (see `quern_store::retention`).
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// How long a finished job's row (succeeded or dead) is kept after its last change; unfinished jobs are never
    /// pruned. A week: `quern status <job id>` still answers after a long weekend, and it is more than twice the
    /// default tombstone horizon, so a finished job redelivered late is recognised and skipped rather than run
    /// again (which would be harmless, only wasted work).
    #[arg(long, env = "QUERN_JOB_RETENTION", default_value = "7d", value_name = "DURATION", value_parser = parse_duration)]
    pub job_retention: Duration,
    /// How long a deleted document's tombstone (its last version) is kept, so that a late job older than the
    /// delete cannot bring the document back. Default: the longest a job's message can still arrive, from
    /// --max-attempts and --retry-tiers: attempts × (delivery limit 20 + 1) deliveries × RabbitMQ's 30 min
    /// consumer timeout, plus the retry delays, plus a day of queue wait (76h36m11s with the defaults). A job
    /// older than the tombstones pruned, for a document with no version, is dead-lettered as stale.
    #[arg(long, env = "QUERN_TOMBSTONE_RETENTION", value_name = "DURATION", value_parser = parse_duration)]
    pub tombstone_retention: Option<Duration>,
    /// Rows deleted per transaction when pruning (tombstones: 1,000 at most); each batch is its own short
    /// transaction that skips rows a writer holds.
    #[arg(long, env = "QUERN_PRUNE_BATCH_ROWS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub prune_batch_rows: u32,
}

impl RetentionArgs {
    /// The policy these flags describe for jobs retried by `retry` from a queue that dead-letters past
    /// `delivery_limit` deliveries (the tombstone default is derived from both).
    pub fn policy(&self, retry: &RetryPolicy, delivery_limit: u32) -> RetentionPolicy {
        RetentionPolicy {
            job_retention: self.job_retention,
            tombstone_retention: self
                .tombstone_retention
                .unwrap_or_else(|| quern_core::retention::tombstone_horizon(retry, delivery_limit)),
            batch_rows: self.prune_batch_rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        retention: RetentionArgs,
    }

    fn policy(args: &[&str], retry: &RetryPolicy) -> RetentionPolicy {
        let argv = std::iter::once("quern").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("valid flags").retention.policy(retry, 20)
    }

    #[test]
    fn the_defaults_are_a_week_and_the_retry_policys_horizon() {
        let policy = policy(&[], &RetryPolicy::default());
        assert_eq!(policy.job_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(policy.tombstone_retention, Duration::from_secs(76 * 3600 + 36 * 60 + 11));
        assert_eq!(policy.batch_rows, 1000);
        assert_eq!(policy, RetentionPolicy::default());
    }

    #[test]
    fn the_horizon_follows_the_retry_flags_unless_given() {
        let longer = RetryPolicy::new(10, vec![Duration::from_secs(3600)]).expect("valid");
        let derived = policy(&[], &longer).tombstone_retention;
        assert_eq!(derived, quern_core::retention::tombstone_horizon(&longer, 20));
        assert!(derived > RetentionPolicy::default().tombstone_retention);
        let given = policy(&["--tombstone-retention", "2d", "--job-retention", "36h"], &longer);
        assert_eq!(given.tombstone_retention, Duration::from_secs(2 * 86_400));
        assert_eq!(given.job_retention, Duration::from_secs(36 * 3600));
    }

    #[test]
    fn a_bare_number_or_an_empty_batch_is_refused() {
        for bad in [&["--job-retention", "7"][..], &["--prune-batch-rows", "0"]] {
            let argv = std::iter::once("quern").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
