//! The loop `replay` and `purge` share, each through its [`SweepAction`]: read the dead-letter queue to its end,
//! act on the selected messages, hold every other one, then keep the held ones in their order (returned, or
//! renewed: `quern_queue::dead_letters`).
//!
//! After `--limit` selections, or after a failed publish, the loop keeps reading without selecting: a message
//! given back goes to the tail of a RabbitMQ 3.x quorum queue, so stopping early would put the messages read
//! so far behind the unread ones (see `quern_queue::dead_letters`).

use quern_core::Topology;
use quern_queue::dead_letters::{DeadLetter, DeadLetterScan};
use quern_queue::lapin::Connection;

use super::args::ActArgs;
use super::report::{note_release, Summary};
use super::view::{now_ms, LetterView};

/// What a run does with each selected message. `replay` and `purge` implement it, so the loop here knows
/// neither of them.
pub trait SweepAction {
    /// The verb the summary, the audit line and the connection's close reason use (`replay`, `purge`).
    const VERB: &'static str;

    /// Acts on one selected message, counting into `summary`; `false` means stop selecting (a publish failed).
    async fn take(
        &mut self,
        seq: usize,
        letter: DeadLetter,
        view: &LetterView,
        scan: &mut DeadLetterScan,
        summary: &mut Summary,
    ) -> anyhow::Result<bool>;

    /// Settles whatever is still in flight, before the scan keeps the held messages in their place.
    async fn finish(&mut self, _scan: &mut DeadLetterScan, _summary: &mut Summary) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Sweeps with `action` and closes `connection`; returns what the run did (`options` describes the flags, for the
/// audit line) and whether it ran to its end. The console calls this too, so both act through the same loop.
pub async fn execute<A: SweepAction>(
    connection: Connection,
    topology: &Topology,
    args: &ActArgs,
    options: String,
    mut action: A,
) -> (Summary, anyhow::Result<()>) {
    let mut summary = Summary::new(A::VERB, args.dry_run, options);
    let result = sweep(&connection, topology, args, &mut action, &mut summary).await;
    let _ = connection.close(200, format!("{} done", A::VERB).as_str().into()).await;
    (summary, result)
}

/// Runs `action` over the dead-letter queue of `topology`, counting into `summary`. The held messages are given
/// back even when the run fails half way (if the channel is gone, the broker returns them itself).
async fn sweep<A: SweepAction>(
    connection: &Connection,
    topology: &Topology,
    args: &ActArgs,
    action: &mut A,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut scan = DeadLetterScan::open(connection, topology).await?;
    let walked = walk(&mut scan, args, action, summary).await;
    // Confirms still in flight decide whether their messages are removed or held, so settle before releasing.
    let settled = action.finish(&mut scan, summary).await;
    summary.read = scan.read();
    summary.left_unread = scan.left_unread();
    let released = scan.release(connection).await;
    walked?;
    settled?;
    note_release(&released?);
    Ok(())
}

async fn walk<A: SweepAction>(
    scan: &mut DeadLetterScan,
    args: &ActArgs,
    action: &mut A,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let now = now_ms();
    let limit = args.limit as usize;
    let mut selecting = true;
    while let Some(letter) = scan.next().await? {
        if !selecting {
            summary.unexamined += 1;
            continue;
        }
        let view = LetterView::new(&letter, now);
        if !args.filters.matches(&view) {
            summary.skipped += 1;
            continue;
        }
        let seq = summary.select(&view);
        let carry_on = action.take(seq, letter, &view, scan, summary).await?;
        selecting = carry_on && summary.selected < limit;
    }
    Ok(())
}
