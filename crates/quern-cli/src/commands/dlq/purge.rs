//! `quern dlq purge`: delete selected dead letters for good, only with `--yes`.

use std::process::ExitCode;

use quern_queue::dead_letters::DeadLetterScan;

use super::args::PurgeArgs;
use super::filter::FILTER_FLAGS;
use super::report::{self, Outcome, Summary, USAGE};
use super::sweep::{sweep, Act};
use super::view::LetterView;

pub async fn run(args: PurgeArgs) -> anyhow::Result<ExitCode> {
    if !args.act.filters.chosen() {
        eprintln!("quern dlq purge: say which messages to delete: {FILTER_FLAGS} (see --help)");
        return Ok(ExitCode::from(USAGE));
    }
    if !args.yes && !args.act.dry_run {
        eprintln!("quern dlq purge: deleting dead letters cannot be undone; add --yes to confirm (or --dry-run to look first)");
        return Ok(ExitCode::from(USAGE));
    }
    let connection = super::connect(&args.broker).await?;
    let options = format!("{} --limit {}", args.act.filters.describe(), args.act.limit);
    let mut summary = Summary::new("purge", args.act.dry_run, options);
    let mut act = Act::Purge { dry_run: args.act.dry_run };
    let result = sweep(&connection, &args.broker.topology, &args.act, &mut act, &mut summary).await;
    let _ = connection.close(200, "purge done".into()).await;
    report::finish(summary, result, args.act.json)
}

/// Deletes (acks) one selected message, or in a dry run holds it and says it would.
pub async fn take(
    dry_run: bool,
    seq: usize,
    tag: u64,
    view: &LetterView,
    scan: &mut DeadLetterScan,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    if dry_run {
        summary.record(seq, view, Outcome::Would, None);
    } else {
        scan.remove(tag).await?;
        summary.record(seq, view, Outcome::Done, None);
    }
    Ok(())
}
