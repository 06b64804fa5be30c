//! `quern index status | create`: the segments of `quern_chunks`, their HNSW indexes, and segment maintenance run in
//! the foreground.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use quern_config::DatabaseArgs;
use quern_store::{
    segments::segment_table, HnswParams, InvalidSetting, Maintainer, MaintenanceStep, Segment, SegmentBuild,
    SegmentPolicy, SegmentSearchWidth, SegmentState, SegmentsStatus, Store,
};
use serde_json::json;

use crate::output::outln;

/// Exit status of a setting out of range.
const USAGE: u8 = 2;
/// Exit status after ctrl-c (128 + SIGINT, as a shell reports it).
const INTERRUPTED: u8 = 130;

/// The segments of `quern_chunks` and their HNSW indexes (the help text is on `Command::Index`).
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Show every segment (state, rows, size, index), the index builds running, which worker holds the
    /// maintenance lease, and the chunks searchable.
    Status {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run segment maintenance in the foreground until nothing is due: seal a full hot segment, build sealed
    /// segments' indexes, merge a tier of indexed segments.
    ///
    /// Workers do this by themselves, one at a time under the maintenance lease; `create` is for a database no
    /// worker maintains (workers run with --segment-maintenance false, or none runs), or, with --seal, to index
    /// every chunk written so far after a backfill. If a worker holds the lease, `create` says which and does
    /// nothing. Steps run without a statement timeout, and workers and searches carry on meanwhile (only a
    /// merge's final swap holds writers back, for a moment).
    /// Interrupting it (ctrl-c) cancels the step in progress; the next maintainer clears what it left.
    /// Exit status: 0 done (or left to the worker holding the lease), 1 error, 2 a setting out of range,
    /// 130 interrupted.
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Seal the hot segment first, whatever its size, so that every chunk written so far is indexed (the hot
    /// segment is otherwise sealed only once it holds --segment-rows rows, and is searched exactly until then).
    #[arg(long)]
    pub seal: bool,
    /// HNSW links per node of the indexes built (2..=100): more means better recall, larger indexes and slower
    /// builds. Applies to the segments this run indexes; those already indexed keep theirs.
    #[arg(long, default_value_t = HnswParams::default().m)]
    pub m: u32,
    /// HNSW candidates kept while linking (4..=1000, at least 2 × --m): more means better recall and slower builds.
    #[arg(long, default_value_t = HnswParams::default().ef_construction)]
    pub ef_construction: u32,
    /// Memory of each build and merge (e.g. 1GB): a build is fastest when the whole graph fits. Default: what
    /// each build's graph needs, up to 1GB.
    #[arg(long, value_name = "SIZE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub maintenance_work_mem: Option<String>,
    /// Rows at which the hot segment is sealed: the most rows a search scans exactly (--seal seals it anyway).
    #[arg(long, value_name = "N", default_value_t = SegmentPolicy::default().seal_rows,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub segment_rows: u64,
    /// Indexed segments of one size tier merged into one: a search visits fewer than this many per tier, and a
    /// chunk is indexed again once per tier.
    #[arg(long, value_name = "N", default_value_t = SegmentPolicy::default().merge_factor as u64,
          value_parser = clap::value_parser!(u64).range(2..=64))]
    pub merge_factor: u64,
}

impl CreateArgs {
    /// The policy these flags describe, or what is wrong with them (the flag named).
    fn policy(&self) -> Result<SegmentPolicy, InvalidSetting> {
        let policy = SegmentPolicy {
            seal_rows: self.segment_rows,
            merge_factor: self.merge_factor as usize,
            hnsw: HnswParams { m: self.m, ef_construction: self.ef_construction },
            maintenance_work_mem: self.maintenance_work_mem.clone(),
            // Only the workers' sealer seals a quiet segment; `--seal` does it here.
            seal_when_quiet: None,
        };
        policy.validate()?;
        Ok(policy)
    }
}

/// Runs one `quern index` subcommand.
pub async fn run(command: IndexCommand) -> anyhow::Result<ExitCode> {
    match command {
        IndexCommand::Status { database, json } => show_status(&database, json).await,
        IndexCommand::Create(args) => create(args).await,
    }
}

async fn show_status(database: &DatabaseArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&database.store_config()?)?;
    let status = store.segments_status().await.context("reading the segments")?;
    let widths = store.search_widths(SHOWN_K).await.context("reading the segments")?;
    if as_json {
        outln!("{}", status_json(&status, &widths))?;
    } else {
        print_status(&status, &widths)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `k` of the search whose `hnsw.ef_search` the status shows: recall@10 is what the README measures.
const SHOWN_K: usize = 10;

/// The `hnsw.ef_search` of `segment`'s scan in a search for [`SHOWN_K`] chunks, if it is read through its index.
fn ef_search_of(widths: &[SegmentSearchWidth], segment: i64) -> Option<u32> {
    widths.iter().find(|width| width.segment == segment).map(|width| width.ef_search)
}

/// The widest scan's `hnsw.ef_search`: what one statement over the whole table needs for the same recall.
fn widest(widths: &[SegmentSearchWidth]) -> u32 {
    widths.iter().map(|width| width.ef_search).max().unwrap_or(0)
}

fn status_json(status: &SegmentsStatus, widths: &[SegmentSearchWidth]) -> serde_json::Value {
    let segments: Vec<_> = status
        .segments
        .iter()
        .map(|segment| {
            json!({
                "id": segment.id,
                "state": segment.state.as_str(),
                "rows": segment.rows,
                "size_bytes": segment.size_bytes,
                "index": segment.index.as_ref().map(|index| json!({
                    "name": index.name,
                    "valid": index.valid,
                    "size_bytes": index.size_bytes,
                    "definition": index.definition,
                })),
                "merged_from": segment.merged_from,
                "search_ef_search": ef_search_of(widths, segment.id),
                "created_at": segment.created_at.to_rfc3339(),
                "sealed_at": segment.sealed_at.map(|at| at.to_rfc3339()),
                "indexed_at": segment.indexed_at.map(|at| at.to_rfc3339()),
            })
        })
        .collect();
    let builds: Vec<_> = status
        .builds
        .iter()
        .map(|build| {
            json!({"table": build.table, "pid": build.pid, "phase": build.phase, "tuples_done": build.tuples_done})
        })
        .collect();
    json!({
        "segments": segments,
        "builds": builds,
        "maintainer_pid": status.maintainer_pid,
        "chunk_rows": status.chunk_rows,
        "storage": status.storage.type_name(),
        "search_ef_search": {"k": SHOWN_K, "ef_search": widest(widths)},
    })
}

fn print_status(status: &SegmentsStatus, widths: &[SegmentSearchWidth]) -> anyhow::Result<()> {
    let header = ["segment", "state", "rows", "size", "since", "index"].map(String::from);
    let mut table = vec![header];
    table.extend(status.segments.iter().map(|segment| segment_row(segment, &status.builds, widths)));
    let column_widths: Vec<usize> =
        (0..6).map(|column| table.iter().map(|row| row[column].chars().count()).max().unwrap_or(0)).collect();
    for row in &table {
        // Numbers right-aligned, words left-aligned; the last column unpadded.
        let line = format!(
            "{:>w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:<w4$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            w0 = column_widths[0],
            w1 = column_widths[1],
            w2 = column_widths[2],
            w3 = column_widths[3],
            w4 = column_widths[4],
        );
        outln!("{}", line.trim_end())?;
    }
    for build in &status.builds {
        outln!(
            "building an index on {}: backend {}, {}, {} rows so far",
            build.table,
            build.pid,
            build.phase,
            build.tuples_done
        )?;
    }
    match status.maintainer_pid {
        Some(pid) => outln!("maintenance lease: held by backend pid {pid}")?,
        None => outln!("no worker holds the maintenance lease: nothing seals, indexes or merges segments")?,
    }
    outln!("chunks: {} (stored as {})", status.chunk_rows, status.storage)?;
    outln!(
        "quern search -k {SHOWN_K} keeps the candidates shown in each indexed segment (hnsw.ef_search, up to {}; \
         --ef-search sets one value for all)",
        widest(widths)
    )
}

/// One line of the status table: segment, state, rows, size, since, index.
fn segment_row(segment: &Segment, builds: &[SegmentBuild], widths: &[SegmentSearchWidth]) -> [String; 6] {
    let building = builds.iter().any(|build| build.table == segment_table(segment.id));
    // When it entered its current state.
    let since = match segment.state {
        SegmentState::Hot | SegmentState::Merging => Some(segment.created_at),
        SegmentState::Sealed => segment.sealed_at,
        SegmentState::Indexed => segment.indexed_at.or(segment.sealed_at),
    };
    let mut index = match (&segment.index, segment.state) {
        (Some(index), _) if index.valid => match ef_search_of(widths, segment.id) {
            Some(ef_search) => {
                format!("{} ({}), {ef_search} candidates", index.name, HumanBytes(index.size_bytes))
            }
            None => format!("{} ({})", index.name, HumanBytes(index.size_bytes)),
        },
        (Some(index), _) if building => format!("{}: being built", index.name),
        (Some(index), _) => format!("{}: INVALID, left by an interrupted build (the next one replaces it)", index.name),
        (None, SegmentState::Hot) => "none: searched exactly".to_string(),
        (None, SegmentState::Sealed) => "none yet: searched exactly until it is built".to_string(),
        (None, SegmentState::Merging) => "none yet".to_string(),
        (None, SegmentState::Indexed) => "MISSING (the next maintainer rebuilds it)".to_string(),
    };
    if !segment.merged_from.is_empty() {
        let verb = if segment.state == SegmentState::Merging { "merging" } else { "merged from" };
        index.push_str(&format!("; {verb} {}", id_list(&segment.merged_from)));
    }
    [
        segment.id.to_string(),
        segment.state.as_str().to_string(),
        segment.rows.to_string(),
        HumanBytes(segment.size_bytes).to_string(),
        since.map(format_time).unwrap_or_else(|| "-".to_string()),
        index,
    ]
}

fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let policy = match args.policy() {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("quern: {error}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    let store = Store::connect(&args.database.store_config()?)?;
    let mut maintainer = Maintainer::new(store.clone(), policy);
    if !maintainer.acquire().await.context("taking the maintenance lease")? {
        let holder = store.segments_status().await.context("reading who holds the maintenance lease")?.maintainer_pid;
        let holder = holder.map(|pid| format!("backend pid {pid}")).unwrap_or_else(|| "it was just released".into());
        outln!("a worker holds the maintenance lease ({holder}): it seals, builds and merges by itself")?;
        return Ok(ExitCode::SUCCESS);
    }
    // Listening from here on: ctrl-c cancels the statement running (a build), rather than leaving Postgres to
    // notice the closed connection.
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    if args.seal {
        let sealed = tokio::select! {
            sealed = with_spinner("sealing the hot segment", maintainer.seal_now()) => sealed,
            _ = &mut interrupted => return abandon(maintainer).await,
        };
        match sealed.context("sealing the hot segment")? {
            Some(step) => outln!("{}", describe(&step))?,
            None => outln!("the hot segment holds no rows: nothing to seal")?,
        }
    }
    let mut steps = 0;
    loop {
        let step = tokio::select! {
            step = with_spinner("maintaining segments", maintainer.step()) => step,
            _ = &mut interrupted => return abandon(maintainer).await,
        };
        let Some(step) = step.context("maintaining segments")? else { break };
        steps += 1;
        outln!("{}", describe(&step))?;
    }
    maintainer.release().await;
    if steps == 0 && !args.seal {
        outln!("nothing left to do: the hot segment is not full, every sealed segment is indexed, no tier is due")?;
    } else {
        outln!("nothing left to do")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// After ctrl-c: cancels the step in progress and gives the lease up.
async fn abandon(mut maintainer: Maintainer) -> anyhow::Result<ExitCode> {
    maintainer.release().await;
    eprintln!("quern: interrupted; abandoned the step in progress (the next maintainer clears what it left)");
    Ok(ExitCode::from(INTERRUPTED))
}

/// One line per step, as `create` prints it.
fn describe(step: &MaintenanceStep) -> String {
    match step {
        MaintenanceStep::Recovered { dropped_tables, unindexed } => {
            let mut parts = Vec::new();
            if !dropped_tables.is_empty() {
                parts.push(format!("dropped {}", dropped_tables.join(", ")));
            }
            if !unindexed.is_empty() {
                parts.push(format!("segments {} to be indexed again", id_list(unindexed)));
            }
            format!("cleared what an interrupted maintainer left: {}", parts.join("; "))
        }
        MaintenanceStep::Sealed { segment, rows, next } => {
            format!("sealed segment {segment} ({rows} rows); segment {next} is hot")
        }
        MaintenanceStep::Built { segment, duration, replaced_invalid } => {
            let replaced = if *replaced_invalid { " (replacing an invalid one an interrupted build left)" } else { "" };
            format!("built the index of segment {segment} in {:.1} s{replaced}", duration.as_secs_f64())
        }
        MaintenanceStep::Dropped { segment } => format!("dropped segment {segment}, left without rows"),
        MaintenanceStep::Merged { from, into, rows, duration } => {
            format!("merged segments {} into {into} ({rows} rows) in {:.1} s", id_list(from), duration.as_secs_f64())
        }
    }
}

/// `1, 2, 3`.
fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// Awaits `work` with a spinner and the time elapsed on stderr (drawn only on a terminal), cleared at the end.
async fn with_spinner<T>(message: &'static str, work: impl std::future::Future<Output = T>) -> T {
    let spinner = ProgressBar::new_spinner().with_message(message);
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
    spinner.enable_steady_tick(Duration::from_millis(200));
    let outcome = work.await;
    spinner.finish_and_clear();
    outcome
}
