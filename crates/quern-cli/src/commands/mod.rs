//! One module per subcommand; [`run`] dispatches.

pub mod console;
mod delete;
pub mod dlq;
mod enqueue;
pub mod index;
mod migrate;
pub mod prune;
mod search;
pub mod shadow;
pub mod status;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand; the exit code says how it went.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Migrate { database, embedding_dim, vector_storage } => {
            migrate::run(&database, embedding_dim as usize, vector_storage).await
        }
        Command::Enqueue(args) => enqueue::run(args).await,
        Command::Delete { broker, collection, document_ids } => delete::run(&broker, &collection, &document_ids).await,
        Command::Status { broker, database, job_id, json, window, retry_tiers } => {
            status::run(&broker, &database, job_id, json, &window, &retry_tiers).await
        }
        Command::Search { database, embedding, query, collection, k, ef_search, json } => {
            search::run(&database, &embedding, &query, &collection, k as usize, ef_search, json).await
        }
        Command::Dlq { command } => dlq::run(command).await,
        Command::Index { command } => index::run(command).await,
        Command::Prune(args) => prune::run(&args).await,
        Command::Shadow { command } => shadow::run(command).await,
        Command::Console(args) => console::run(args).await,
    }
}
