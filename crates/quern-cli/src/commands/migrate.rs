//! `quern migrate`.

use std::process::ExitCode;

use anyhow::Context;
use quern_store::Store;
use quern_worker::config::DatabaseArgs;

use crate::output::outln;

pub async fn run(database: &DatabaseArgs, dimension: usize) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&database.store_config())?;
    let report = store.migrate(dimension).await.context("migrating the database")?;
    if report.applied.is_empty() {
        outln!("database is up to date ({} migrations already applied)", report.already_applied.len())?;
    } else {
        outln!("applied migrations {:?} (vector dimension {dimension})", report.applied)?;
    }
    Ok(ExitCode::SUCCESS)
}
