//! `quern prune`: one retention run in the foreground, or with `--dry-run` a count of what would go. The workers do
//! the same under their maintenance lease every `--prune-every`; a run here is safe beside them (each batch skips
//! rows someone else holds), and is recorded for `quern status` as theirs are.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use quern_config::{parse_duration, DatabaseArgs, RetentionArgs};
use quern_core::RetryPolicy;
use quern_store::{PruneReport, RetentionPolicy, Store};
use serde_json::json;

use crate::output::outln;

/// Who `quern_prune_runs` records runs of this command as.
const PRUNED_BY: &str = "quern prune";

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// The workers' --max-attempts: with --retry-tiers, it sets the default --tombstone-retention.
    #[arg(long, env = "QUERN_MAX_ATTEMPTS", default_value_t = quern_core::retry::DEFAULT_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// The workers' --retry-tiers (comma-separated delays): with --max-attempts, it sets the default
    /// --tombstone-retention.
    #[arg(long, env = "QUERN_RETRY_TIERS", value_delimiter = ',', default_value = "1s,10s,60s,5m",
          value_name = "DELAYS", value_parser = parse_duration)]
    pub retry_tiers: Vec<Duration>,
    /// Count what would be pruned; delete nothing, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let retry =
        RetryPolicy::new(args.max_attempts, args.retry_tiers.clone()).context("--max-attempts / --retry-tiers")?;
    let policy = args.retention.policy(&retry, quern_queue::QueueArguments::default().delivery_limit);
    let store = Store::connect(&args.database.store_config()?)?;
    let report = if args.dry_run {
        store.prune_preview(&policy).await.context("counting what retention lets go")?
    } else {
        store.prune(&policy, PRUNED_BY, &|| true).await.context("pruning")?
    };
    if args.json {
        outln!("{}", report_json(&report, &policy))?;
    } else {
        print_report(&report, &policy)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report_json(report: &PruneReport, policy: &RetentionPolicy) -> serde_json::Value {
    json!({
        "dry_run": report.dry_run,
        "jobs": report.jobs,
        "tombstones": report.tombstones,
        "job_retention_secs": policy.job_retention.as_secs(),
        "tombstone_retention_secs": policy.tombstone_retention.as_secs(),
        "job_cutoff": report.job_cutoff.to_rfc3339(),
        "tombstone_cutoff": report.tombstone_cutoff.to_rfc3339(),
        "tombstones_pruned_through": report.tombstones_pruned_through.map(|at| at.to_rfc3339()),
        "duration_ms": report.duration.as_millis() as u64,
    })
}

fn print_report(report: &PruneReport, policy: &RetentionPolicy) -> anyhow::Result<()> {
    let verb = if report.dry_run { "would prune" } else { "pruned" };
    outln!(
        "{verb:<11} {:>9} finished jobs  (succeeded or dead, unchanged since before {}: --job-retention {})",
        report.jobs,
        report.job_cutoff.to_rfc3339(),
        humantime::format_duration(policy.job_retention)
    )?;
    outln!(
        "{verb:<11} {:>9} tombstones     (deleted documents, versions before {}: --tombstone-retention {})",
        report.tombstones,
        report.tombstone_cutoff.to_rfc3339(),
        humantime::format_duration(policy.tombstone_retention)
    )?;
    if let Some(through) = report.tombstones_pruned_through {
        outln!(
            "jobs created before {} whose document has no version are refused as stale (dead-lettered)",
            through.to_rfc3339()
        )?;
    }
    if !report.dry_run {
        outln!("in {:.1} s, recorded for `quern status`", report.duration.as_secs_f64())?;
    }
    Ok(())
}
