//! `quern migrate`.

use std::process::ExitCode;

use anyhow::Context;
use quern_config::DatabaseArgs;
use quern_store::{Store, VectorStorage};

use crate::output::outln;

pub async fn run(database: &DatabaseArgs, dimension: usize, storage: VectorStorage) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&database.store_config()?)?;
    let report = store.migrate_with_storage(dimension, storage).await.context("migrating the database")?;
    if report.applied.is_empty() {
        outln!("database is up to date ({} migrations already applied)", report.already_applied.len())?;
    } else {
        let stored = store.vector_storage().await.context("reading the vector storage")?;
        outln!("applied migrations {:?} (vector dimension {dimension}, stored as {stored})", report.applied)?;
    }
    Ok(ExitCode::SUCCESS)
}
