//! The command line: subcommands and their flags (each also readable from a `QUERN_*` variable).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use quern_config::{BrokerArgs, DatabaseArgs, EmbeddingArgs};
use quern_store::VectorStorage;

/// Enqueue documents for Quern workers, follow their jobs, and search what they stored.
#[derive(Debug, Parser)]
#[command(name = "quern", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// TOML file of settings, the fleet's own (`quern-worker --config`): keyed by flag name (`database_url`,
    /// `queue_prefix`, `retry_tiers`, …). Flags and environment variables win over it; keys no command here
    /// takes (the worker's `prefetch`, say) are passed over.
    #[arg(long, env = "QUERN_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// Parses the command line, the environment and the config file (flags > environment > file > defaults);
    /// exits with clap's message and status 2 when something is wrong, naming the file when a value was its.
    pub fn load() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        use quern_config::file;
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let env = |name: &str| std::env::var(name).ok();
        let command = Cli::command();
        let matches = match file::config_path(&args, &env) {
            None => command.get_matches_from(args),
            Some(path) => {
                let (command, used) = file::read_table(&path)
                    .and_then(|table| file::with_file_defaults(command.clone(), &table, &path))
                    .unwrap_or_else(|message| {
                        command.clone().error(clap::error::ErrorKind::InvalidValue, message).exit()
                    });
                let typed: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
                command
                    .clone()
                    .try_get_matches_from(args)
                    .unwrap_or_else(|error| file::explain(error, &command, &used, &path, &typed, &env).exit())
            }
        };
        Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations (idempotent; safe to run from several places at once).
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Dimension of the `vector(D)` column; must match the embedding model.
        #[arg(long, env = "QUERN_EMBEDDING_DIM", default_value_t = 384)]
        embedding_dim: u32,
        /// How a new chunk table stores vectors: `vector` (4 bytes per dimension) or `halfvec` (2 bytes). An
        /// existing table keeps its storage.
        #[arg(long, env = "QUERN_VECTOR_STORAGE", default_value_t = VectorStorage::default())]
        vector_storage: VectorStorage,
    },
    /// Enqueue documents: files, directories (walked recursively) or `-` for stdin.
    Enqueue(EnqueueArgs),
    /// Enqueue the deletion of documents.
    Delete {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Collection holding the documents.
        #[arg(long, env = "QUERN_COLLECTION")]
        collection: String,
        /// Ids of the documents to delete.
        #[arg(required = true)]
        document_ids: Vec<String>,
    },
    /// Show what happened to a job; without a job id, an overview of one queue prefix (`--queue-prefix`): each
    /// queue's depth and the prefix's recent jobs by status.
    Status {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        database: DatabaseArgs,
        /// The job id printed by `quern enqueue` or returned by the producer; leave it out for the overview.
        job_id: Option<uuid::Uuid>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Overview: count the jobs last updated within this long (e.g. 15m, 1h, 2d).
        #[arg(long, default_value = "1h", value_name = "DURATION", conflicts_with = "job_id")]
        window: String,
        /// Overview: the workers' retry delay tiers (as given to quern-worker), which name the delay queues
        /// `<prefix>.retry.<delay>`.
        #[arg(long, env = "QUERN_RETRY_TIERS", default_value = "1s,10s,60s,5m", value_name = "DELAYS")]
        retry_tiers: String,
    },
    /// Find the chunks nearest to a query (the query is embedded with the configured embedding API).
    Search {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        embedding: EmbeddingArgs,
        /// What to look for.
        query: String,
        /// Collection to search.
        #[arg(long, env = "QUERN_COLLECTION")]
        collection: String,
        /// Number of chunks to return.
        #[arg(short = 'k', long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        k: u32,
        /// Candidates each indexed segment's HNSW scan keeps (hnsw.ef_search, 1..=1000): more means better recall
        /// and slower searches. Default: each segment its own, 2k (at least 40) shared out among the indexed
        /// segments, at least k, and one per 3,000 rows of that segment (`quern index status` shows each).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        ef_search: Option<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the dead-letter queue, and replay or purge what is in it.
    Dlq {
        #[command(subcommand)]
        command: crate::commands::dlq::DlqCommand,
    },
    /// The segments of the chunk table and their HNSW indexes: show them, or run their maintenance now.
    ///
    /// Writers insert into the hot segment, which has no vector index (a search scans it exactly), so ingestion
    /// never pays for index upkeep. A worker holding the maintenance lease seals the hot segment once it is full,
    /// builds each sealed segment's index in one bulk pass, and merges indexed segments in tiers. `create` does
    /// the same in the foreground (`--seal` to index every chunk written so far, e.g. after a backfill). Workers
    /// and searches carry on meanwhile (only a merge's final swap holds writers back, for a moment).
    Index {
        #[command(subcommand)]
        command: crate::commands::index::IndexCommand,
    },
    /// Prune finished jobs and the tombstones of deleted documents past their retention, as the workers do every
    /// --prune-every under their maintenance lease; `--dry-run` counts what would go.
    ///
    /// Finished jobs (succeeded or dead) go once unchanged for --job-retention; unfinished ones stay. A deleted
    /// document's tombstone goes once older than --tombstone-retention, derived from --max-attempts and
    /// --retry-tiers unless given: by then no job older than the delete can still arrive. Each batch of
    /// --prune-batch-rows rows is a short transaction of its own that skips rows a writer holds, so workers carry
    /// on meanwhile. The run is recorded for `quern status`.
    Prune(crate::commands::prune::PruneArgs),
    /// Serve the web console for on-call: the fleet at a glance, jobs, and dead letters to inspect, replay and
    /// purge.
    ///
    /// Listens on 127.0.0.1:8787 by default, where reading needs no token. Replays and purges need the token in
    /// QUERN_CONSOLE_TOKEN (at least 16 characters), typed into the confirmation form or given once at /login;
    /// on a non-loopback --listen the console refuses to start without it, and every page asks for it. The
    /// overview's embedding figures come from the workers' --metrics-addr endpoints given in --worker-metrics.
    /// Prints `quern console: listening on http://ADDR/` when ready; ctrl-c or SIGTERM stops it.
    Console(crate::commands::console::ConsoleArgs),
    /// Shadow runs beside a legacy worker (`quern-worker --shadow`): compare what each stored.
    Shadow {
        #[command(subcommand)]
        command: crate::commands::shadow::ShadowCommand,
    },
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Files or directories to enqueue (`-` reads one document from stdin and needs --document-id).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Collection the documents belong to.
    #[arg(long, env = "QUERN_COLLECTION")]
    pub collection: String,
    /// Document id for a document read from stdin (files use their path relative to the directory given).
    #[arg(long)]
    pub document_id: Option<String>,
    /// Only files with these extensions when walking directories (comma-separated; empty = every file).
    #[arg(long, value_delimiter = ',', default_value = "txt,md,markdown,text,rst,html,htm")]
    pub extensions: Vec<String>,
    /// Jobs published per confirmed batch.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub batch: u32,
    /// After enqueueing, show a progress bar until every job has succeeded or died (needs the database).
    #[arg(long)]
    pub wait: bool,
    /// How long to ride out RabbitMQ or Postgres being unavailable: publishing gives up this many seconds after
    /// it started (exit status 1), waiting this many seconds after it started (exit status 3).
    #[arg(long, default_value_t = 600)]
    pub wait_timeout_secs: u64,
    /// Print each job id with its document id.
    #[arg(long)]
    pub print_ids: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}
