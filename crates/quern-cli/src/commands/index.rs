//! `quern index status | drop | create`: the HNSW vector index, dropped before a large backfill and built after it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use quern_store::{
    HnswParams, IndexBuildProgress, IndexBuildSettings, IndexCreation, IndexError, Store, VectorIndexStatus,
};
use quern_worker::config::DatabaseArgs;
use serde_json::json;

use crate::output::outln;

/// Exit status of a setting out of range.
const USAGE: u8 = 2;

/// The HNSW index on `quern_chunks.embedding` (the help text is on `Command::Index`).
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Show the index: valid or not, its definition and size, a build in progress, and the chunks it covers.
    Status {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Drop the index before a large backfill, so ingestion skips its upkeep (search scans exactly until it is
    /// created again).
    ///
    /// Waits for transactions using the chunk table to finish; refused while a build of the index runs.
    Drop {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Build the index after a backfill: one pass over the rows, far cheaper than row-by-row upkeep.
    ///
    /// Does nothing (exit 0) if a valid index exists; replaces an invalid one left by a failed build. Runs without
    /// a statement timeout; interrupting it (ctrl-c) abandons the build, and the next `create` replaces what it
    /// left. Exit status: 0 built or already there, 1 error, 2 a setting out of range.
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Links per node (2..=100): more means better recall, a larger index and a slower build.
    #[arg(long, default_value_t = HnswParams::default().m)]
    pub m: u32,
    /// Candidates kept while linking (4..=1000, at least 2 × --m): more means better recall and a slower build.
    #[arg(long, default_value_t = HnswParams::default().ef_construction)]
    pub ef_construction: u32,
    /// Memory for the build (e.g. 1GB); the build is fastest when the whole graph fits. Default: the server's.
    #[arg(long, value_name = "SIZE")]
    pub maintenance_work_mem: Option<String>,
    /// Parallel workers helping the build (max_parallel_maintenance_workers). Default: the server's.
    #[arg(long, value_name = "N")]
    pub parallel_workers: Option<u32>,
}

/// Runs one `quern index` subcommand.
pub async fn run(command: IndexCommand) -> anyhow::Result<ExitCode> {
    match command {
        IndexCommand::Status { database, json } => show_status(&database, json).await,
        IndexCommand::Drop { database } => drop_index(&database).await,
        IndexCommand::Create(args) => create_index(args).await,
    }
}

async fn show_status(database: &DatabaseArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&database.store_config())?;
    let status = store.vector_index_status().await.context("reading the vector index")?;
    if as_json {
        outln!("{}", status_json(&status))?;
    } else {
        print_status(&status)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn status_json(status: &VectorIndexStatus) -> serde_json::Value {
    json!({
        "index": status.index.as_ref().map(|index| json!({
            "name": index.name,
            "definition": index.definition,
            "valid": index.valid,
            "size_bytes": index.size_bytes,
        })),
        "running_build": status.running_build.as_ref().map(|build| json!({"pid": build.pid, "phase": build.phase})),
        "chunk_rows": status.chunk_rows,
    })
}

fn print_status(status: &VectorIndexStatus) -> anyhow::Result<()> {
    match (&status.index, &status.running_build) {
        (None, _) => outln!(
            "no vector index: search scans every chunk exactly (slower on large tables); `quern index create` builds it"
        )?,
        (Some(index), _) if index.valid => outln!("{}: valid, {}", index.name, HumanBytes(index.size_bytes))?,
        (Some(index), Some(build)) => {
            outln!("{}: being built by backend {} ({})", index.name, build.pid, build.phase)?;
        }
        (Some(index), None) => outln!(
            "{}: INVALID, left by a failed build: search ignores it but writes still update it; \
             `quern index create` replaces it, `quern index drop` removes it",
            index.name
        )?,
    }
    if let Some(index) = &status.index {
        outln!("  {}", index.definition)?;
    }
    outln!("chunks: {}", status.chunk_rows)
}

async fn drop_index(database: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&database.store_config())?;
    if store.drop_vector_index().await.context("dropping the vector index")? {
        outln!("dropped the vector index; search scans exactly until `quern index create` builds it again")?;
    } else {
        outln!("no vector index to drop")?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn create_index(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let settings = IndexBuildSettings {
        hnsw: HnswParams { m: args.m, ef_construction: args.ef_construction },
        maintenance_work_mem: args.maintenance_work_mem,
        parallel_workers: args.parallel_workers,
    };
    let store = Store::connect(&args.database.store_config())?;
    let bar = progress_bar();
    let mut rows = 0;
    let outcome = store
        .create_vector_index(&settings, |report: &IndexBuildProgress| {
            rows = report.tuples_total;
            bar.set_length(report.tuples_total.max(report.tuples_done));
            bar.set_position(report.tuples_done);
            bar.set_message(report.phase.clone());
        })
        .await;
    bar.finish_and_clear();
    match outcome {
        Ok(IndexCreation::Created { index, duration, replaced_invalid }) => {
            if replaced_invalid {
                outln!("dropped an invalid index left by a failed build")?;
            }
            outln!(
                "built {} (m = {}, ef_construction = {}) over {rows} chunks in {:.1}s; size {}",
                index.name,
                args.m,
                args.ef_construction,
                duration.as_secs_f64(),
                HumanBytes(index.size_bytes)
            )?;
        }
        Ok(IndexCreation::AlreadyExists(index)) => {
            outln!(
                "{} already exists and is valid; nothing to do (`quern index drop` first to rebuild it)",
                index.name
            )?;
            outln!("  {}", index.definition)?;
        }
        Err(error @ IndexError::InvalidSetting { .. }) => {
            eprintln!("quern: {error}");
            return Ok(ExitCode::from(USAGE));
        }
        Err(error) => return Err(error).context("creating the vector index"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The build's phase and rows indexed; drawn on stderr, and only on a terminal.
fn progress_bar() -> ProgressBar {
    // No length until Postgres reports one: a bar of 0/0 would show as full.
    let bar = ProgressBar::no_length().with_message("starting");
    let template = "{spinner} {msg:32} [{bar:40}] {pos}/{len} chunks {elapsed}";
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
