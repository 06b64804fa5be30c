//! `quern dlq`: inspect the dead-letter queue `<prefix>.dead`, and replay or purge what is in it.
//!
//! - [`args`]: the flags; [`filter`]: which messages; [`view`]: a message as an operator reads it;
//! - [`list`] and [`show`] read only: every message read goes back to its place;
//! - [`sweep`] is the loop [`replay`] and [`purge`] share: each implements its `SweepAction`, so the loop imports
//!   neither; [`report`] prints the summary and the audit line.
//!
//! `quern console` acts through the same functions (`replay::execute`, `purge::execute`, `list::read_all`,
//! `show::find`), so the page and the command line give the same guarantees.
//!
//! The broker side (reading with one consumer, keeping what stays in its order, renewing messages before a
//! broker's delivery limit could drop them, replay headers) is `quern_queue::dead_letters`; why it is built that
//! way for RabbitMQ 3.x and 4.x is docs/brokers.md.

pub(crate) mod args;
pub(crate) mod filter;
pub(crate) mod list;
pub(crate) mod purge;
pub(crate) mod replay;
pub(crate) mod report;
pub(crate) mod show;
mod sweep;
pub(crate) mod view;

use std::process::ExitCode;

use quern_config::BrokerArgs;
use quern_queue::lapin::Connection;
use secrecy::ExposeSecret;

pub use args::DlqCommand;

/// Runs one `quern dlq` subcommand.
pub async fn run(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List(args) => list::run(args).await,
        DlqCommand::Show(args) => show::run(args).await,
        DlqCommand::Replay(args) => replay::run(args).await,
        DlqCommand::Purge(args) => purge::run(args).await,
    }
}

pub(crate) async fn connect(broker: &BrokerArgs) -> anyhow::Result<Connection> {
    Ok(quern_queue::connect(broker.url()?.expose_secret(), "quern dlq").await?)
}
