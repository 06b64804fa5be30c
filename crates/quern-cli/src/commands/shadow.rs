//! `quern shadow report`: how close a shadow run (`quern-worker --shadow`) comes to the legacy worker it runs
//! beside, per document, read from the legacy worker's table and the shadow's schema in the same database.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use quern_config::DatabaseArgs;
use quern_store::shadow::{compare, LegacyColumns, LegacyTable, ParityReport};
use quern_store::Store;

use crate::output::{closed_is_fine, outln};

/// Exit status when parity is below `--min-parity`.
const BELOW_PARITY: u8 = 4;

/// Shadow runs (the help text is on `Command::Shadow`).
#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// Compare what the legacy worker stored (its table) with what the shadow run stored (its schema), per
    /// document: documents missing on either side, chunk counts, chunk texts, and the embeddings' cosine where both
    /// sides have vectors of one dimension (the same model). Prints the parity (documents that agree in every
    /// respect, out of those compared) and the worst differences.
    /// Exit status: 0, 1 error, 4 parity below --min-parity.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The legacy worker's chunk table (`table` or `schema.table`), in the database of --database-url.
    #[arg(long, value_name = "TABLE")]
    pub legacy_table: String,
    /// Its collection column.
    #[arg(long, default_value = "collection", value_name = "COLUMN")]
    pub legacy_collection_column: String,
    /// Its document id column.
    #[arg(long, default_value = "document_id", value_name = "COLUMN")]
    pub legacy_document_id_column: String,
    /// Its column ordering a document's chunks.
    #[arg(long, default_value = "chunk_index", value_name = "COLUMN")]
    pub legacy_chunk_index_column: String,
    /// Its chunk text column.
    #[arg(long, default_value = "content", value_name = "COLUMN")]
    pub legacy_content_column: String,
    /// Its vector column (vector, halfvec, real[] or float8[]); `none` compares no embeddings.
    #[arg(long, default_value = "embedding", value_name = "COLUMN")]
    pub legacy_embedding_column: String,
    /// The shadow run's schema (quern-worker --shadow writes to `quern_shadow` unless --database-schema says
    /// otherwise).
    #[arg(long, env = "QUERN_SHADOW_SCHEMA", default_value = quern_store::shadow::SHADOW_SCHEMA, value_name = "SCHEMA")]
    pub shadow_schema: String,
    /// Compare the documents of this collection only.
    #[arg(long, value_name = "COLLECTION")]
    pub collection: Option<String>,
    /// Compare a sample of this many documents, chosen by a hash of their ids (the same on every run).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// The lowest cosine between two chunks' vectors that counts as agreeing.
    #[arg(long, default_value_t = 0.99, value_name = "COSINE")]
    pub min_cosine: f64,
    /// How many of the worst documents to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub worst: usize,
    /// Exit with status 4 when the parity is below this percentage (0-100).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub min_parity: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_percent(value: &str) -> Result<f64, String> {
    match value.trim().trim_end_matches('%').parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok(percent),
        _ => Err(format!("`{value}` is not a percentage from 0 to 100")),
    }
}

/// Runs a `quern shadow` command.
pub async fn run(command: ShadowCommand) -> anyhow::Result<ExitCode> {
    let ShadowCommand::Report(args) = command;
    let embedding = Some(args.legacy_embedding_column.clone()).filter(|c| !c.eq_ignore_ascii_case("none"));
    let columns = LegacyColumns {
        collection: args.legacy_collection_column.clone(),
        document_id: args.legacy_document_id_column.clone(),
        chunk_index: args.legacy_chunk_index_column.clone(),
        content: args.legacy_content_column.clone(),
        embedding,
    };
    let legacy = LegacyTable::new(&args.legacy_table, &columns)?;
    let store = Store::connect(&args.database.store_config()?).context("check --database-url / QUERN_DATABASE_URL")?;
    let sample = args.sample.map(|n| n as usize);
    let documents = store
        .shadow_documents(&legacy, &args.shadow_schema, args.collection.as_deref(), sample)
        .await
        .with_context(|| format!("comparing {} with the schema {}", args.legacy_table, args.shadow_schema))?;
    let report = compare(&documents, args.min_cosine, args.worst);
    let printed = if args.json { print_json(&report, &args) } else { print_text(&report, &args) };
    closed_is_fine(printed)?;
    match args.min_parity {
        Some(min) if report.parity_percent < min => {
            eprintln!("quern: parity {:.1}% is below --min-parity {min}%", report.parity_percent);
            Ok(ExitCode::from(BELOW_PARITY))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn print_json(report: &ParityReport, args: &ReportArgs) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(report)?;
    value["legacy_table"] = args.legacy_table.clone().into();
    value["shadow_schema"] = args.shadow_schema.clone().into();
    outln!("{value}")
}

fn print_text(report: &ParityReport, args: &ReportArgs) -> anyhow::Result<()> {
    let sample = match args.sample {
        Some(n) => format!(" (a sample of at most {n})"),
        None => String::new(),
    };
    outln!("shadow report: legacy table {} against schema {}", args.legacy_table, args.shadow_schema)?;
    outln!("documents compared:  {}{sample}", report.documents_compared)?;
    outln!("at parity:           {} ({:.1}%)", report.documents_at_parity, report.parity_percent)?;
    outln!("missing in shadow:   {}", report.missing_in_shadow)?;
    outln!("missing in legacy:   {}", report.missing_in_legacy)?;
    outln!("chunk counts differ: {}", report.chunk_count_differs)?;
    outln!("chunk texts differ:  {}", report.text_differs)?;
    outln!("embeddings differ:   {} (cosine under {})", report.embedding_differs, args.min_cosine)?;
    match (report.mean_cosine, report.lowest_cosine) {
        (Some(mean), Some(lowest)) => outln!(
            "embeddings:          {} chunk pairs compared, mean cosine {mean:.4}, lowest {lowest:.4}",
            report.embeddings_compared
        )?,
        _ => outln!("embeddings:          not compared: {}", report.embeddings_skipped.as_deref().unwrap_or("-"))?,
    }
    if !report.worst.is_empty() {
        outln!("worst differences:")?;
        for document in &report.worst {
            let what: Vec<String> = document.differences.iter().map(|d| d.describe()).collect();
            outln!("  {} / {}: {}", document.collection, document.document_id, what.join("; "))?;
        }
    }
    Ok(())
}
