//! The loop `replay` and `purge` share: read the dead-letter queue to its end, act on the selected messages,
//! hold every other one, then keep the held ones in their order (returned, or renewed: `quern_queue::dead_letters`).
//!
//! After `--limit` selections, or after a failed publish, the loop keeps reading without selecting: a message
//! given back goes to the tail of a RabbitMQ 3.x quorum queue, so stopping early would put the messages read
//! so far behind the unread ones (see `quern_queue::dead_letters`).

use quern_core::Topology;
use quern_queue::dead_letters::{DeadLetter, DeadLetterScan};
use quern_queue::lapin::Connection;

use super::args::ActArgs;
use super::purge;
use super::replay::Replayer;
use super::report::{note_release, Summary};
use super::view::{now_ms, LetterView};

/// What the run does with each selected message.
#[derive(Debug)]
pub enum Act {
    Replay(Box<Replayer>),
    Purge { dry_run: bool },
}

impl Act {
    /// Acts on one selected message; `false` means stop selecting (a publish failed).
    async fn take(
        &mut self,
        seq: usize,
        letter: DeadLetter,
        view: &LetterView,
        scan: &mut DeadLetterScan,
        summary: &mut Summary,
    ) -> anyhow::Result<bool> {
        match self {
            Act::Replay(replayer) => replayer.take(seq, letter, view, scan, summary).await,
            Act::Purge { dry_run } => {
                purge::take(*dry_run, seq, letter.delivery_tag, view, scan, summary).await.map(|()| true)
            }
        }
    }

    /// Settles whatever is still in flight.
    async fn finish(&mut self, scan: &mut DeadLetterScan, summary: &mut Summary) -> anyhow::Result<()> {
        match self {
            Act::Replay(replayer) => replayer.settle_all(scan, summary).await,
            Act::Purge { .. } => Ok(()),
        }
    }
}

/// Runs `act` over the dead-letter queue of `topology`, counting into `summary`. The held messages are given
/// back even when the run fails half way (if the channel is gone, the broker returns them itself).
pub async fn sweep(
    connection: &Connection,
    topology: &Topology,
    args: &ActArgs,
    act: &mut Act,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut scan = DeadLetterScan::open(connection, topology).await?;
    let walked = walk(&mut scan, args, act, summary).await;
    // Confirms still in flight decide whether their messages are removed or held, so settle before releasing.
    let settled = act.finish(&mut scan, summary).await;
    summary.read = scan.read();
    summary.left_unread = scan.left_unread();
    let released = scan.release(connection).await;
    walked?;
    settled?;
    note_release(&released?);
    Ok(())
}

async fn walk(scan: &mut DeadLetterScan, args: &ActArgs, act: &mut Act, summary: &mut Summary) -> anyhow::Result<()> {
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
        let carry_on = act.take(seq, letter, &view, scan, summary).await?;
        selecting = carry_on && summary.selected < limit;
    }
    Ok(())
}
