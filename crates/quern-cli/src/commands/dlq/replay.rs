//! `quern dlq replay`: publish selected dead letters back to work, removing each only after its confirm.
//!
//! Publishes are pipelined (up to [`WINDOW`] awaiting their confirm) because one confirm round trip per message
//! is slow on a quorum queue; each dead letter is still acked only once its own publish is confirmed, and a
//! failed one is held so it goes back to its place in the dead-letter queue.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Duration;

use quern_core::Topology;
use quern_queue::dead_letters::{DeadLetter, DeadLetterScan};
use quern_queue::lapin::{Channel, Connection};
use quern_queue::{PendingConfirm, DEFAULT_CONFIRM_TIMEOUT};
use tokio::time::{Interval, MissedTickBehavior};

use super::args::ReplayArgs;
use super::filter::FILTER_FLAGS;
use super::report::{Outcome, Summary, USAGE};
use super::sweep::{self, SweepAction};
use super::view::{now_ms, LetterView};

/// Publishes awaiting their confirm at once.
const WINDOW: usize = 64;

pub async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if !args.act.filters.chosen() {
        eprintln!("quern dlq replay: say which messages to replay: {FILTER_FLAGS} (see --help)");
        return Ok(ExitCode::from(USAGE));
    }
    let (summary, result) = execute(&args).await?;
    super::report::finish(summary, result, args.act.json)
}

/// Connects and replays what `args` selects through the sweep loop, without printing: what the run did, and
/// whether it ran to its end (an error before the sweep started is the outer one). `quern console` calls this.
pub async fn execute(args: &ReplayArgs) -> anyhow::Result<(Summary, anyhow::Result<()>)> {
    let connection = super::connect(&args.broker).await?;
    let replayer = Replayer::open(&connection, args).await?;
    let mut options =
        format!("{} --limit {} --max-replays {}", args.act.filters.describe(), args.act.limit, args.max_replays);
    if let Some(queue) = &args.to_queue {
        options.push_str(&format!(" --to-queue {queue}"));
    }
    if let Some(rate) = args.rate {
        options.push_str(&format!(" --rate {rate}"));
    }
    if args.force {
        options.push_str(" --force");
    }
    Ok(sweep::execute(connection, &args.broker.topology, &args.act, options, replayer).await)
}

#[derive(Debug)]
struct InFlight {
    seq: usize,
    tag: u64,
    view: LetterView,
    pending: PendingConfirm,
}

/// The publishing side of a replay: its own channel in confirm mode, pacing, and the confirms in flight.
#[derive(Debug)]
struct Replayer {
    /// `None` in a dry run: nothing is published.
    channel: Option<Channel>,
    topology: Topology,
    to_queue: Option<String>,
    max_replays: i64,
    force: bool,
    pace: Option<Interval>,
    in_flight: VecDeque<InFlight>,
}

impl Replayer {
    async fn open(connection: &Connection, args: &ReplayArgs) -> anyhow::Result<Replayer> {
        let channel = if args.act.dry_run {
            None
        } else {
            let channel = connection.create_channel().await?;
            quern_queue::enable_confirms(&channel).await?;
            Some(channel)
        };
        let pace = args.rate.map(|rate| {
            let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            // After a slow confirm, do not burst to catch up.
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        Ok(Replayer {
            channel,
            topology: args.broker.topology.clone(),
            to_queue: args.to_queue.clone(),
            max_replays: i64::from(args.max_replays),
            force: args.force,
            pace,
            in_flight: VecDeque::new(),
        })
    }

    /// Removes the oldest in-flight message from the dead-letter queue if its publish was confirmed, else holds
    /// it; `false` when it failed. An ack that fails is an error: the message may then be replayed twice.
    async fn settle_oldest(&mut self, scan: &mut DeadLetterScan, summary: &mut Summary) -> anyhow::Result<bool> {
        let Some(InFlight { seq, tag, view, pending }) = self.in_flight.pop_front() else { return Ok(true) };
        match pending.wait(DEFAULT_CONFIRM_TIMEOUT).await {
            Ok(()) => {
                scan.remove(tag).await?;
                summary.record(seq, &view, Outcome::Done, None);
                Ok(true)
            }
            Err(error) => {
                summary.record(seq, &view, Outcome::Failed, Some(error.to_string()));
                Ok(false)
            }
        }
    }
}

impl SweepAction for Replayer {
    const VERB: &'static str = "replay";

    /// Replays (or refuses, or describes) one selected message; `false` once a publish failed.
    async fn take(
        &mut self,
        seq: usize,
        letter: DeadLetter,
        view: &LetterView,
        scan: &mut DeadLetterScan,
        summary: &mut Summary,
    ) -> anyhow::Result<bool> {
        let tag = letter.delivery_tag;
        let replays = letter.replay_count();
        if replays >= self.max_replays && !self.force {
            let why = format!("already replayed {replays} times (cap {}; --force replays anyway)", self.max_replays);
            summary.record(seq, view, Outcome::Refused, Some(why));
            return Ok(true);
        }
        let target = letter.replay_target(&self.topology, self.to_queue.as_deref());
        let Some(channel) = &self.channel else {
            summary.record(
                seq,
                view,
                Outcome::Would,
                Some(format!("to exchange `{}` key `{}`", target.exchange, target.routing_key)),
            );
            return Ok(true);
        };
        if let Some(pace) = &mut self.pace {
            pace.tick().await;
        }
        let properties = letter.replay_properties(now_ms());
        match quern_queue::publish(channel, &target.exchange, &target.routing_key, &letter.body, properties).await {
            Ok(pending) => self.in_flight.push_back(InFlight { seq, tag, view: view.clone(), pending }),
            Err(error) => {
                summary.record(seq, view, Outcome::Failed, Some(error.to_string()));
                return Ok(false);
            }
        }
        let mut healthy = true;
        while self.in_flight.len() >= WINDOW {
            healthy &= self.settle_oldest(scan, summary).await?;
        }
        Ok(healthy)
    }

    /// Awaits every confirm still in flight.
    async fn finish(&mut self, scan: &mut DeadLetterScan, summary: &mut Summary) -> anyhow::Result<()> {
        while !self.in_flight.is_empty() {
            self.settle_oldest(scan, summary).await?;
        }
        Ok(())
    }
}
