//! The flags of `quern dlq list | show | replay | purge`.

use clap::{Args, Subcommand};
use quern_config::BrokerArgs;
use quern_queue::dead_letters::SCAN_CAP;

use super::filter::FilterArgs;

/// Inspect and re-drive the dead-letter queue `<prefix>.dead`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters in queue order (at most 10,000 are read per run) as a table or JSON.
    List(ListArgs),
    /// Show one dead letter: every property and header, and the body.
    Show(ShowArgs),
    /// Publish selected dead letters back to work, then remove them from the dead-letter queue.
    ///
    /// Each message goes to its original exchange and routing key (or `--to-queue`) with its body and properties
    /// unchanged, the headers of its dead-letter trip removed and its replay count raised. It is removed from the
    /// dead-letter queue only after the broker confirmed the publish: a crash can duplicate, never lose.
    ///
    /// Messages not selected stay in the queue in their order. One run reads at most 10,000 messages: run it
    /// again for a longer queue (the messages read and kept then sit behind the unread ones).
    ///
    /// Exit status: 0 done (also when nothing matched), 1 error (a message that failed stays in the queue),
    /// 2 usage error, 5 some messages refused by the replay cap.
    Replay(ReplayArgs),
    /// Delete selected dead letters for good (needs --yes).
    ///
    /// At most 10,000 messages are read per run; messages not selected stay in their order.
    /// Exit status: 0 done, 1 error, 2 usage error (also without --yes).
    Purge(PurgeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Print one JSON array with every field instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The message id (Quern jobs: the job id) or, failing that, the `job_id` in the body.
    pub id: String,
    /// Print JSON: headers as an object, the body as a string or base64.
    #[arg(long)]
    pub json: bool,
}

/// What every acting subcommand shares: which messages, how many, and whether to act at all.
#[derive(Debug, Args)]
pub struct ActArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Act on at most this many selected messages (one run reads at most 10,000 messages anyway).
    #[arg(long, default_value_t = SCAN_CAP as u32, value_parser = clap::value_parser!(u32).range(1..=SCAN_CAP as i64))]
    pub limit: u32,
    /// Print what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary (and each selected message) as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub act: ActArgs,
    /// Publish at most this many messages per second (`50` or `50/s`).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Publish to this queue through the default exchange instead of the original exchange and routing key.
    #[arg(long, value_name = "QUEUE")]
    pub to_queue: Option<String>,
    /// Refuse messages already replayed this many times (they stay in the dead-letter queue; exit status 5).
    #[arg(long, default_value_t = 3)]
    pub max_replays: u32,
    /// Replay even messages at the --max-replays cap.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub act: ActArgs,
    /// Confirm the deletion (without it, purge refuses and exits with status 2).
    #[arg(long)]
    pub yes: bool,
}

/// Parses a rate in messages per second: `50`, `50/s` or `2.5`.
fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().strip_suffix("/s").unwrap_or(text.trim());
    match number.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("`{text}`: expected messages per second, a positive number such as 50 or 50/s")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_are_per_second() {
        assert_eq!(parse_rate("50"), Ok(50.0));
        assert_eq!(parse_rate("50/s"), Ok(50.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "fast", "50/m", "inf", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
