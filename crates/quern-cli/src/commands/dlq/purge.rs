//! `quern dlq purge`: delete selected dead letters for good, only with `--yes`.

use std::process::ExitCode;

use quern_queue::dead_letters::{DeadLetter, DeadLetterScan};

use super::args::PurgeArgs;
use super::filter::FILTER_FLAGS;
use super::report::{Outcome, Summary, USAGE};
use super::sweep::{self, SweepAction};
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
    let (summary, result) = execute(&args).await?;
    super::report::finish(summary, result, args.act.json)
}

/// Connects and deletes what `args` selects (it does not ask for `--yes`: callers confirm first) through the sweep
/// loop, without printing. `quern console` calls this after its own confirmation.
pub async fn execute(args: &PurgeArgs) -> anyhow::Result<(Summary, anyhow::Result<()>)> {
    let connection = super::connect(&args.broker).await?;
    let options = format!("{} --limit {}", args.act.filters.describe(), args.act.limit);
    let purge = Purge { dry_run: args.act.dry_run };
    Ok(sweep::execute(connection, &args.broker.topology, &args.act, options, purge).await)
}

/// Deletes each selected message, or in a dry run holds it and says it would.
#[derive(Debug)]
struct Purge {
    dry_run: bool,
}

impl SweepAction for Purge {
    const VERB: &'static str = "purge";

    /// Deletes (acks) one selected message, or in a dry run holds it and says it would.
    async fn take(
        &mut self,
        seq: usize,
        letter: DeadLetter,
        view: &LetterView,
        scan: &mut DeadLetterScan,
        summary: &mut Summary,
    ) -> anyhow::Result<bool> {
        if self.dry_run {
            summary.record(seq, view, Outcome::Would, None);
        } else {
            scan.remove(letter.delivery_tag).await?;
            summary.record(seq, view, Outcome::Done, None);
        }
        Ok(true)
    }
}
